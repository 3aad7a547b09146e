//! Data movement and dtype conversion: cast, reshape, transpose, broadcast_to,
//! slice, concat, gather, one_hot (kernels: shaders/layout.wgsl, shaders/cast.wgsl).
//!
//! Results are always contiguous: transpose, slice and broadcast copy, as
//! TensorFlow's kernels do; reshape shares storage.

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, grid, ktype, status_slot};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::layout::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub static LAYOUT: Kernel = Kernel {
    name: "layout",
    sources: &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/layout.wgsl"),
    ],
    types: &[KType::U32, KType::F16],
};

pub static CAST: Kernel = Kernel {
    name: "cast",
    sources: &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/cast.wgsl"),
    ],
    types: &[KType::U32],
};

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
    let mut params = vec![n as u32, sh.len() as u32, src_off as u32, dst_off as u32];
    for v in [&sh, &st[0], &st[1]] {
        let mut w = [0u32; MAX_RANK];
        for (i, &d) in v.iter().enumerate() {
            w[i] = d as u32;
        }
        params.extend_from_slice(&w);
    }
    g.launch(&Launch {
        kernel: &LAYOUT,
        entry: "copy",
        ty: wtype(dtype),
        consts: &[],
        params: &params,
        bufs: &[src, dst],
        groups: grid(n, 256),
    })
}

fn fill_bits(v: f64, dtype: DType) -> u32 {
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
    let dst = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    match op {
        Op::Cast(to) => {
            g.launch(&Launch {
                kernel: &CAST,
                entry: "main",
                ty: KType::U32,
                consts: &[],
                params: &[n as u32, cast_code(a.dtype()), cast_code(*to), 0],
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
        Op::Gather { axis } => {
            let sh = a.shape();
            let inner: usize = sh[axis + 1..].iter().product();
            let params = [
                n as u32,
                sh[*axis] as u32,
                x[1].numel() as u32,
                inner as u32,
                status_slot(),
                0,
                0,
                0,
            ];
            g.launch(&Launch {
                kernel: &LAYOUT,
                entry: "gather",
                ty: wtype(dtype),
                consts: &[],
                params: &params,
                bufs: &[a.gpu_buf(), &dst, x[1].gpu_buf(), g.status()],
                groups: grid(n, 256),
            })?;
        }
        Op::GatherGrad { axis, dim } => {
            let inner: usize = out[axis + 1..].iter().product();
            let outer: usize = out[..*axis].iter().product();
            let params = [
                outer as u32,
                a.numel() as u32,
                inner as u32,
                n as u32,
                0,
                *dim as u32,
                0,
                0,
            ];
            g.launch(&Launch {
                kernel: &super::reduce::REDUCE,
                entry: "gather_grad",
                ty: ktype(dtype),
                consts: &[],
                params: &params,
                bufs: &[x[1].gpu_buf(), &dst, a.gpu_buf()],
                groups: grid(n, 256),
            })?;
        }
        Op::OneHot { depth, on, off, .. } => {
            let params = [n as u32, *depth as u32, fill_bits(*on, dtype), fill_bits(*off, dtype)];
            g.launch(&Launch {
                kernel: &LAYOUT,
                entry: "one_hot",
                ty: wtype(dtype),
                consts: &[],
                params: &params,
                bufs: &[&dst, a.gpu_buf()],
                groups: grid(n, 256),
            })?;
        }
        _ => unreachable!(),
    }
    Ok(dst)
}
