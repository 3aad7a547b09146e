//! Launch code of the pooling family: 2-D max and average pooling over NHWC
//! (`Op::Pool`) and their gradients (`Op::PoolGrad`).
//!
//! One kernel, `pool` (shaders/common.wgsl and pool.wgsl, built for f32 and
//! f16). Entry `forward` computes one output element per invocation;
//! `backward` one input-gradient element per invocation, gathering from the
//! output windows that cover it (no atomics, so the result does not depend
//! on scheduling); where max pooling's windows do not overlap,
//! `backward_windows` takes one window per invocation instead and writes
//! each of its positions, reading x once. Where the channels come in
//! fours, `forward4`, `backward4` and `backward_windows4` take four at a
//! time through vec4 views. Max pooling's gradient goes to
//! the first maximum of each window, as TensorFlow's. Output size and padding come from
//! `Pool2d::geom`; the grid is 256 invocations per workgroup on every
//! adapter.
//!
//! Shape and gradient rules are in `ops::pool`, the `Pool2d`
//! attribute in [`crate::core::op::pool`], the reference kernels in
//! [`crate::runtime::cpu`] (`cpu/pool.rs`).

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, ParamBlock, ParamsLayout, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub static POOL: Kernel = Kernel::new(
    "pool",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/pool.wgsl"),
    ],
    &[KType::F32, KType::F16],
    &[ParamsLayout::of::<PoolParams>()],
);

params! {
    /// shaders/pool.wgsl's `Params`.
    pub struct PoolParams = "Params" {
        n: u32,
        h: u32,
        w: u32,
        c: u32,
        oh: u32,
        ow: u32,
        kh: u32,
        kw: u32,
        sh: u32,
        sw: u32,
        pt: u32,
        pl: u32,
        total: u32,
        max: u32,
        _p1: u32,
        _p2: u32,
    }
}

impl PoolParams {
    /// Pooling `p` over input `x` (NHWC) into `total` outputs.
    fn of(p: &Pool2d, x: &[usize], total: usize) -> Result<PoolParams> {
        let [oh, ow, pt, pl] = p.geom(x)?;
        let u = |v: usize| v as u32;
        Ok(PoolParams {
            n: u(x[0]),
            h: u(x[1]),
            w: u(x[2]),
            c: u(x[3]),
            oh: u(oh),
            ow: u(ow),
            kh: u(p.ksize[0]),
            kw: u(p.ksize[1]),
            sh: u(p.strides[0]),
            sw: u(p.strides[1]),
            pt: u(pt),
            pl: u(pl),
            total: u(total),
            max: p.max as u32,
            ..PoolParams::default()
        })
    }
}

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let (Op::Pool(p) | Op::PoolGrad(p)) = op else {
        unreachable!()
    };
    let n = numel(out);
    let s = x[0].shape();
    // Max pooling's gradient over windows that do not overlap: one
    // invocation per window (`backward_windows`), on zeros where some
    // input positions are in no window.
    if matches!(op, Op::PoolGrad(_)) && p.max && p.disjoint() {
        let y = if p.tiles(s, p.geom(s)?) {
            g.alloc(op.name(), (n * dtype.size()) as u64)?
        } else {
            super::creation::fill_gpu(g, n, 0.0, dtype)?
        };
        let windows = x[1].numel();
        if windows == 0 {
            return Ok(y);
        }
        let bufs = [x[0].gpu_buf(), &y, x[1].gpu_buf()];
        let (entry, total) = if quads(s, dtype, &bufs) {
            ("backward_windows4", windows / 4)
        } else {
            ("backward_windows", windows)
        };
        g.launch(&Launch {
            kernel: &POOL,
            entry,
            ty: ktype(dtype),
            consts: &[],
            params: ParamBlock::of(&PoolParams::of(p, s, total)?),
            bufs: &bufs,
            groups: grid(total, 256),
        })?;
        return Ok(y);
    }
    let y = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    let (entry, bufs, total): (&'static str, Vec<&GpuBuf>, usize) = match op {
        Op::Pool(_) if quads(s, dtype, &[x[0].gpu_buf(), &y]) => ("forward4", vec![x[0].gpu_buf(), &y], n / 4),
        Op::Pool(_) => ("forward", vec![x[0].gpu_buf(), &y], n),
        _ if quads(s, dtype, &[x[0].gpu_buf(), &y, x[1].gpu_buf()]) => {
            ("backward4", vec![x[0].gpu_buf(), &y, x[1].gpu_buf()], n / 4)
        }
        _ => ("backward", vec![x[0].gpu_buf(), &y, x[1].gpu_buf()], n),
    };
    g.launch(&Launch {
        kernel: &POOL,
        entry,
        ty: ktype(dtype),
        consts: &[],
        params: ParamBlock::of(&PoolParams::of(p, s, total)?),
        bufs: &bufs,
        groups: grid(total, 256),
    })?;
    Ok(y)
}

/// Whether a pooling over input shape `s` can take its vec4 entries:
/// channels in fours and every binding on a vec4 boundary.
fn quads(s: &[usize], dtype: DType, bufs: &[&GpuBuf]) -> bool {
    let quad = (4 * dtype.size()) as u64;
    s[3] % 4 == 0 && bufs.iter().all(|b| b.offset % quad == 0)
}
