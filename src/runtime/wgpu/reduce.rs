//! Launch code of the reduction family: sum, mean, max, min, prod over any
//! axes (`Op::Reduce`) and argmax / argmin along one axis
//! (`Op::ArgReduce`); also the helpers other families reuse, `sum_slices`
//! (adding the partial products of split GEMMs) and the REDUCE kernel's
//! `gather_grad` entry, launched by `layout.rs`.
//!
//! One kernel, `reduce` (shaders/common.wgsl and reduce.wgsl, built for
//! f32, f16 and i32; f16 accumulates in f32). The input is viewed as
//! `[rows, r, inner]` without a copy when the reduced axes are one
//! contiguous block; otherwise they are first moved last with the layout
//! family's strided copy. An empty reduction is a fill with the op's
//! identity.
//!
//! Two plans, chosen per launch:
//! * rows (`inner == 1` on a GPU): a workgroup of 256 per row, combined
//!   with a workgroup tree (`rows_main`);
//! * columns (reduced axes followed by kept ones, `inner > 1`, and every
//!   reduction on CPU adapters such as llvmpipe, where barriers are dear):
//!   one invocation per output (`cols_main`).
//!
//! When the outputs alone would leave the device idle (fewer than 1024
//! rows, or 65536 outputs on a GPU, 2048 on a CPU adapter), the reduced
//! axis is split into chunks: `*_part` writes one partial value and index
//! per chunk, `*_final` combines them. `force_cpu_style_kernels` overrides
//! the adapter's choice for tests.
//!
//! Axis rules and gradients are in `ops::reduce`, the `ReduceOp`
//! codes and identities in [`crate::core::op::reduce`], the reference
//! kernels in [`crate::runtime::cpu`] (`cpu/reduce.rs`).

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, ParamBlock, ParamsLayout, fold, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::reduce::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub static REDUCE: Kernel = Kernel::new(
    "reduce",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/reduce.wgsl"),
    ],
    &[KType::F32, KType::F16, KType::I32],
    &[ParamsLayout::of::<ReduceParams>()],
);

params! {
    /// shaders/reduce.wgsl's `Params`.
    pub struct ReduceParams = "Params" {
        rows: u32,
        r: u32,
        inner: u32,
        n_out: u32,
        op: u32,
        dim: u32,
        chunk: u32,
        parts: u32,
    }
}

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let a = x[0];
    let sh = a.shape();
    let axes = axes_of(op);
    let n_out = numel(out);
    let (rows, r, perm) = plan(sh, &axes);
    if r == 0 {
        let Op::Reduce { op: o, .. } = op else { unreachable!() };
        return super::creation::fill_gpu(g, n_out, o.empty_value(dtype), dtype);
    }
    let y = g.alloc(op.name(), (n_out * dtype.size()) as u64)?;
    if n_out == 0 {
        return Ok(y);
    }
    // Contiguous block [lo, hi] of reduced axes: no copy needed.
    let contiguous = axes.windows(2).all(|w| w[1] == w[0] + 1);
    let moved;
    let (src, rows, inner) = if contiguous && !axes.is_empty() {
        let lo = axes[0];
        let hi = *axes.last().unwrap();
        let outer: usize = sh[..lo].iter().product();
        let inner: usize = sh[hi + 1..].iter().product();
        (a.gpu_buf(), outer, inner)
    } else {
        let pshape: Vec<usize> = perm.iter().map(|&d| sh[d]).collect();
        let st = strides(sh);
        let pst: Vec<usize> = perm.iter().map(|&d| st[d]).collect();
        moved = g.alloc(op.name(), (a.numel() * a.dtype().size()) as u64)?;
        super::layout::copy(
            g,
            a.gpu_buf(),
            &moved,
            a.dtype(),
            &pshape,
            &pst,
            0,
            &strides(&pshape),
            0,
        )?;
        (&moved, rows, 1)
    };
    let code = match op {
        Op::Reduce { op, .. } => *op as u32,
        Op::ArgReduce { max, .. } => {
            if *max {
                5
            } else {
                6
            }
        }
        _ => unreachable!(),
    };
    let ty = ktype(a.dtype());
    let launch = |entry, params: &ReduceParams, bufs: &[&GpuBuf], groups| {
        g.launch(&Launch {
            kernel: &REDUCE,
            entry,
            ty,
            consts: &[("OP", code as f64)],
            params: ParamBlock::of(params),
            bufs,
            groups,
        })
    };
    // A workgroup per row needs barriers, which CPU adapters pay dearly for.
    let by_rows = inner == 1 && !g.cpu_style();
    let split = if by_rows {
        split(rows, r, 1024, 2048)
    } else if g.cpu_style() {
        split(n_out, r, 2048, 256)
    } else {
        split(n_out, r, 65536, 32)
    };
    let params = ReduceParams {
        rows: rows as u32,
        r: r as u32,
        inner: inner as u32,
        n_out: n_out as u32,
        op: code,
        ..ReduceParams::default()
    };
    let Some((chunk, parts)) = split else {
        // `store` names both outputs, so both bindings exist; y serves as either.
        if by_rows {
            launch("rows_main", &params, &[src, &y, &y], fold(rows))?;
        } else {
            launch("cols_main", &params, &[src, &y, &y], grid(n_out, 256))?;
        }
        return Ok(y);
    };
    let params = ReduceParams {
        chunk: chunk as u32,
        parts: parts as u32,
        ..params
    };
    let n_part = n_out * parts;
    let pv = g.alloc(op.name(), (n_part * 4) as u64)?;
    let pi = g.alloc(op.name(), (n_part * 4) as u64)?;
    if by_rows {
        launch("rows_part", &params, &[src, &pv, &pi], fold(n_part))?;
        launch("rows_final", &params, &[&y, &y, &pv, &pi], fold(rows))?;
    } else {
        launch("cols_part", &params, &[src, &pv, &pi], grid(n_part, 256))?;
        launch("cols_final", &params, &[&y, &y, &pv, &pi], grid(n_out, 256))?;
    }
    Ok(y)
}

/// How to split a reduction of length `r` into chunks when its `n` outputs
/// alone would give the device fewer than `want` workgroups or invocations:
/// `Some((chunk, parts))`, with chunks of at least `min_chunk` elements and
/// none empty; `None` when one pass is enough.
fn split(n: usize, r: usize, want: usize, min_chunk: usize) -> Option<(usize, usize)> {
    if n >= want || r < 2 * min_chunk {
        return None;
    }
    let parts = want.div_ceil(n).min(r / min_chunk);
    let chunk = r.div_ceil(parts);
    let parts = r.div_ceil(chunk);
    (parts > 1).then_some((chunk, parts))
}

/// `dst[i] = sum_s src[s * n + i]` for `s < slices` (partial sums of split
/// GEMMs).
pub(crate) fn sum_slices(g: &Gpu, src: &GpuBuf, dst: &GpuBuf, slices: usize, n: usize, dtype: DType) -> Result<()> {
    g.launch(&Launch {
        kernel: &REDUCE,
        entry: "cols_main",
        ty: ktype(dtype),
        consts: &[],
        params: ParamBlock::of(&ReduceParams {
            rows: 1,
            r: slices as u32,
            inner: n as u32,
            n_out: n as u32,
            op: ReduceOp::Sum as u32,
            ..ReduceParams::default()
        }),
        bufs: &[src, dst, dst],
        groups: grid(n, 256),
    })
}
