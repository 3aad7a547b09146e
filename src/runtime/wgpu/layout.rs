//! Launch code of the layout family: data movement and dtype conversion
//! (`Op::Cast`, `Permute`, `BroadcastTo`, `Slice`, `Concat`, `Pad`,
//! `Gather`, `GatherGrad`, `OneHot`), and the strided `copy` every other
//! family uses to move operands into place. `Reshape` and `StopGradient`
//! share storage and never reach a kernel.
//!
//! Two kernels:
//! * `layout` (shaders/common.wgsl, status.wgsl and layout.wgsl), built
//!   only for u32 and f16: f32, i32 and bool move as 32-bit words, f16 as
//!   halves, so one pipeline serves three dtypes. Entry `copy` does
//!   transpose, broadcast, slice, each part of a concat and the body of a
//!   pad (after a zero fill); `fill` and `one_hot` write values; `gather`
//!   reports an index out of range to the device's status words (this
//!   thread's slot), which the next readback turns into the
//!   `InvalidArgument` the CPU reference gives at once.
//! * `cast` (common.wgsl and cast.wgsl), u32 only: buffers are read as raw
//!   words so that f16 and bf16 are converted as packed pairs (bf16 has no
//!   WGSL type, f16 none without `SHADER_F16`); one invocation per two
//!   elements. Every other op on bf16 runs on f32 casts (see `ops::run`).
//!
//! `GatherGrad` runs the `reduce` kernel's `gather_grad` entry. Strides are
//! collapsed before launch; more than 8 non-contiguous dimensions is a
//! shape error. Every launch is one invocation per output element (two for
//! `cast`), 256 per workgroup, the same on every adapter.
//!
//! Shape and gradient rules are in `ops::layout`, the strided
//! views in [`crate::core::op::layout`], the reference kernels in
//! [`crate::runtime::cpu`] (`cpu/layout.rs`).

use super::memory::GpuBuf;
use super::reduce::ReduceParams;
use super::{Gpu, KType, Kernel, Launch, ParamBlock, ParamsLayout, dims8, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::layout::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub static LAYOUT: Kernel = Kernel::new(
    "layout",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/status.wgsl"),
        include_str!("../../../shaders/layout.wgsl"),
    ],
    &[KType::U32, KType::F16],
    &[
        ParamsLayout::of::<CopyParams>(),
        ParamsLayout::of::<SmallParams>(),
        ParamsLayout::of::<GatherParams>(),
    ],
);

pub static DEQUANT: Kernel = Kernel::new(
    "dequantize",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/int8.wgsl"),
        include_str!("../../../shaders/dequantize.wgsl"),
    ],
    &[KType::F32],
    &[ParamsLayout::of::<DequantParams>()],
);

params! {
    /// shaders/dequantize.wgsl's `Dequant`.
    pub struct DequantParams = "Dequant" {
        n: u32,
        cols: u32,
        words: u32,
        _p: u32,
    }
}

pub static CAST: Kernel = Kernel::new(
    "cast",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/cast.wgsl"),
    ],
    &[KType::U32],
    &[ParamsLayout::of::<CastParams>()],
);

params! {
    /// shaders/layout.wgsl's `Copy` (strided copy); shape and strides as
    /// WGSL's `array<vec4<u32>, 2>`.
    pub struct CopyParams = "Copy" {
        n: u32,
        rank: u32,
        src_off: u32,
        dst_off: u32,
        shape: [u32; MAX_RANK],
        src_strides: [u32; MAX_RANK],
        dst_strides: [u32; MAX_RANK],
    }
}

params! {
    /// shaders/layout.wgsl's `Small` (fill, one_hot).
    pub struct SmallParams = "Small" {
        a: u32,
        b: u32,
        c: u32,
        d: u32,
    }
}

params! {
    /// shaders/layout.wgsl's `Gather`.
    pub struct GatherParams = "Gather" {
        n: u32,
        d: u32,
        j: u32,
        inner: u32,
        slot: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

params! {
    /// shaders/cast.wgsl's `Params`.
    pub struct CastParams = "Params" {
        n: u32,
        src: u32,
        dst: u32,
        _p: u32,
    }
}

/// Layout kernels move f32, i32 and bool as 32-bit words, f16 as halves.
pub(crate) fn wtype(dtype: DType) -> KType {
    if dtype == DType::F16 { KType::F16 } else { KType::U32 }
}

/// Strided copy on the GPU: dst[dst_off + c·dst_st] = src[src_off + c·src_st]
/// for every coordinate c of `shape`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy(
    g: &Gpu,
    src: &GpuBuf,
    dst: &GpuBuf,
    dtype: DType,
    shape: &[usize],
    src_st: &[usize],
    src_off: usize,
    dst_st: &[usize],
    dst_off: usize,
) -> Result<()> {
    let n = numel(shape);
    if n == 0 {
        return Ok(());
    }
    let (sh, st) = collapse(shape, &[src_st.to_vec(), dst_st.to_vec()]);
    if sh.len() > MAX_RANK {
        return Err(Error::shape(
            "copy",
            &[shape],
            format!("GPU kernels index at most {MAX_RANK} non-contiguous dimensions"),
        ));
    }
    let params = CopyParams {
        n: n as u32,
        rank: sh.len() as u32,
        src_off: src_off as u32,
        dst_off: dst_off as u32,
        shape: dims8(&sh),
        src_strides: dims8(&st[0]),
        dst_strides: dims8(&st[1]),
    };
    g.launch(&Launch {
        kernel: &LAYOUT,
        entry: "copy",
        ty: wtype(dtype),
        consts: &[],
        params: ParamBlock::of(&params),
        bufs: &[src, dst],
        groups: grid(n, 256),
    })
}

/// A fill value's bits as the layout kernels store it.
pub(crate) fn fill_bits(v: f64, dtype: DType) -> u32 {
    match dtype {
        DType::I32 => v as i32 as u32,
        DType::Bool => (v != 0.0) as u32,
        _ => (v as f32).to_bits(),
    }
}

fn cast_code(d: DType) -> u32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::I32 => 2,
        DType::Bool => 3,
        DType::BF16 => 4,
        DType::F64 => unreachable!("float64 never reaches a GPU kernel"),
    }
}

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let a = x[0];
    let n = numel(out);
    if let Op::Pad { before, shape } = op {
        let z = super::creation::fill_gpu(g, n, 0.0, dtype)?;
        let st = strides(shape);
        let off: usize = before.iter().zip(&st).map(|(b, s)| b * s).sum();
        copy(g, a.gpu_buf(), &z, dtype, a.shape(), &strides(a.shape()), 0, &st, off)?;
        return Ok(z);
    }
    let mut dst = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    match op {
        Op::Cast(to) => {
            g.launch(&Launch {
                kernel: &CAST,
                entry: "main",
                ty: KType::U32,
                consts: &[("SRC", cast_code(a.dtype()) as f64), ("DST", cast_code(*to) as f64)],
                params: ParamBlock::of(&CastParams {
                    n: n as u32,
                    src: cast_code(a.dtype()),
                    dst: cast_code(*to),
                    _p: 0,
                }),
                bufs: &[a.gpu_buf(), &dst],
                groups: grid(n.div_ceil(2), 256),
            })?;
        }
        Op::Permute(_) | Op::BroadcastTo(_) | Op::Slice { .. } => {
            let (st, off) = view(op, a.shape(), out);
            copy(g, a.gpu_buf(), &dst, dtype, out, &st, off, &strides(out), 0)?;
        }
        Op::Concat { axis } => {
            let ost = strides(out);
            let mut at = 0;
            for t in x {
                let s = t.shape();
                copy(g, t.gpu_buf(), &dst, dtype, s, &strides(s), 0, &ost, at * ost[*axis])?;
                at += s[*axis];
            }
        }
        Op::Gather { axis } if n == 0 && x[1].numel() > 0 => {
            // No element is gathered, so no kernel reads the indices to check
            // them; the CPU reference (and TensorFlow) still reject a bad one.
            let d = a.shape()[*axis];
            let bytes = g.read(x[1].gpu_buf())?;
            for c in bytes.chunks_exact(4) {
                let i = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if i < 0 || i as usize >= d {
                    return Err(index_error(i, d as u32));
                }
            }
        }
        Op::Gather { axis } => {
            let rec = g.status_record()?;
            let sh = a.shape();
            let inner: usize = sh[axis + 1..].iter().product();
            let params = GatherParams {
                n: n as u32,
                d: sh[*axis] as u32,
                j: x[1].numel() as u32,
                inner: inner as u32,
                slot: rec.index,
                ..GatherParams::default()
            };
            g.launch(&Launch {
                kernel: &LAYOUT,
                entry: "gather",
                ty: wtype(dtype),
                consts: &[],
                params: ParamBlock::of(&params),
                bufs: &[a.gpu_buf(), &dst, x[1].gpu_buf(), &rec.buf],
                groups: grid(n, 256),
            })?;
            dst.depend_on(&rec);
        }
        Op::GatherGrad { axis, dim } => {
            let inner: usize = out[axis + 1..].iter().product();
            let outer: usize = out[..*axis].iter().product();
            let params = ReduceParams {
                rows: outer as u32,
                r: a.numel() as u32,
                inner: inner as u32,
                n_out: n as u32,
                dim: *dim as u32,
                ..ReduceParams::default()
            };
            g.launch(&Launch {
                kernel: &super::reduce::REDUCE,
                entry: "gather_grad",
                ty: ktype(dtype),
                consts: &[],
                params: ParamBlock::of(&params),
                bufs: &[x[1].gpu_buf(), &dst, a.gpu_buf()],
                groups: grid(n, 256),
            })?;
        }
        Op::DequantizeInt8 { cols } => {
            let params = DequantParams {
                n: n as u32,
                cols: (*cols).max(1) as u32,
                words: cols.div_ceil(4) as u32,
                _p: 0,
            };
            g.launch(&Launch {
                kernel: &DEQUANT,
                entry: "dequantize_int8",
                ty: KType::F32,
                consts: &[],
                params: ParamBlock::of(&params),
                bufs: &[a.gpu_buf(), &dst, x[1].gpu_buf()],
                groups: grid(n, 256),
            })?;
        }
        Op::OneHot { depth, on, off, .. } => {
            let params = SmallParams {
                a: n as u32,
                b: *depth as u32,
                c: fill_bits(*on, dtype),
                d: fill_bits(*off, dtype),
            };
            g.launch(&Launch {
                kernel: &LAYOUT,
                entry: "one_hot",
                ty: wtype(dtype),
                consts: &[],
                params: ParamBlock::of(&params),
                bufs: &[&dst, a.gpu_buf()],
                groups: grid(n, 256),
            })?;
        }
        _ => unreachable!(),
    }
    Ok(dst)
}
