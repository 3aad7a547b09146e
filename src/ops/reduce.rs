//! Reductions along any axes with keepdims: sum, mean, max, min, prod, and
//! argmax / argmin along one axis (kernel: shaders/reduce.wgsl).
//!
//! The GPU views the input as [rows, r, inner] when the reduced axes are one
//! contiguous block, and otherwise first moves them last with a copy. Empty
//! reductions give TF's values: sum 0, prod 1, mean NaN, max -inf, min +inf
//! (the int32 extremes for int32); argmax over an empty axis is an error.

use super::{Op, Tol, exec, layout};
use crate::device::cpu::CpuData;
use crate::device::gpu::{GpuDevice, KType, Kernel, Launch, grid};
use crate::device::memory::GpuBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{self, numel, strides};
use crate::tensor::Tensor;

pub static REDUCE: Kernel = Kernel {
    name: "reduce",
    sources: &[
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/reduce.wgsl"),
    ],
    types: &[KType::F32, KType::F16, KType::I32],
};

/// The discriminant is the shader's op code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Mean => "reduce_mean",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
            ReduceOp::Prod => "reduce_prod",
        }
    }
    fn empty_value(self, dtype: DType) -> f64 {
        let int = dtype == DType::I32;
        match self {
            ReduceOp::Sum => 0.0,
            ReduceOp::Prod => 1.0,
            ReduceOp::Mean => {
                if int {
                    0.0
                } else {
                    f64::NAN
                }
            }
            ReduceOp::Max => {
                if int {
                    i32::MIN as f64
                } else {
                    f64::NEG_INFINITY
                }
            }
            ReduceOp::Min => {
                if int {
                    i32::MAX as f64
                } else {
                    f64::INFINITY
                }
            }
        }
    }
}

fn reduced_len(op: &Op, x: &Tensor) -> usize {
    match op {
        Op::Reduce { axes, .. } => axes.iter().map(|&a| x.shape()[a]).product(),
        Op::ArgReduce { axis, .. } => x.shape()[*axis],
        _ => unreachable!(),
    }
}

pub(crate) fn tolerance(op: &Op, x: &[&Tensor]) -> Tol {
    let r = reduced_len(op, x[0]) as f64;
    match op {
        Op::Reduce {
            op: ReduceOp::Sum | ReduceOp::Mean,
            ..
        } => Tol::new(2e-6 * r.sqrt().max(1.0), 1e-5),
        Op::Reduce { op: ReduceOp::Prod, .. } => Tol::new(1e-6, 2e-6 * r.max(1.0)),
        _ => Tol::EXACT,
    }
}

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let a = x[0];
    let sh = a.shape();
    if a.dtype() == DType::Bool {
        return Err(Error::dtype(op.name(), &[a.dtype()], "cast bool to int32 first"));
    }
    match op {
        Op::Reduce { axes, keepdims, .. } => {
            let out = (0..sh.len())
                .filter_map(|d| {
                    if !axes.contains(&d) {
                        Some(sh[d])
                    } else if *keepdims {
                        Some(1)
                    } else {
                        None
                    }
                })
                .collect();
            Ok((out, a.dtype()))
        }
        Op::ArgReduce { axis, .. } => {
            if sh[*axis] == 0 {
                return Err(Error::arg(op.name(), format!("axis {axis} of shape {sh:?} is empty")));
            }
            let mut out = sh.to_vec();
            out.remove(*axis);
            Ok((out, DType::I32))
        }
        _ => unreachable!(),
    }
}

/// The reduced axes of the op (one for arg ops).
fn axes_of(op: &Op) -> Vec<usize> {
    match op {
        Op::Reduce { axes, .. } => axes.clone(),
        Op::ArgReduce { axis, .. } => vec![*axis],
        _ => unreachable!(),
    }
}

/// (kept-axes size, reduced size) after moving the reduced axes last, and the permutation.
fn plan(sh: &[usize], axes: &[usize]) -> (usize, usize, Vec<usize>) {
    let kept: Vec<usize> = (0..sh.len()).filter(|d| !axes.contains(d)).collect();
    let rows = kept.iter().map(|&d| sh[d]).product();
    let r = axes.iter().map(|&d| sh[d]).product();
    let mut perm = kept;
    perm.extend_from_slice(axes);
    (rows, r, perm)
}

fn rows_f64(v: &[f64], rows: usize, r: usize, op: &Op) -> Vec<f64> {
    (0..rows)
        .map(|i| {
            let row = &v[i * r..(i + 1) * r];
            match op {
                Op::Reduce { op, .. } => match op {
                    ReduceOp::Sum => row.iter().sum(),
                    ReduceOp::Mean => row.iter().sum::<f64>() / r as f64,
                    ReduceOp::Max => row.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    ReduceOp::Min => row.iter().copied().fold(f64::INFINITY, f64::min),
                    ReduceOp::Prod => row.iter().product(),
                },
                Op::ArgReduce { max, .. } => {
                    let mut best = 0;
                    for (k, &e) in row.iter().enumerate() {
                        if (*max && e > row[best]) || (!*max && e < row[best]) {
                            best = k;
                        }
                    }
                    best as f64
                }
                _ => unreachable!(),
            }
        })
        .collect()
}

/// Float reductions over one contiguous block of axes, [outer, r, inner],
/// straight from the data (no transposed copy); accumulates in f64.
fn contiguous_block<F: crate::device::cpu::Float>(
    v: &[F],
    op: ReduceOp,
    outer: usize,
    r: usize,
    inner: usize,
) -> Vec<f64> {
    let mut out = vec![0.0f64; outer * inner];
    for o in 0..outer {
        let acc = &mut out[o * inner..(o + 1) * inner];
        for k in 0..r {
            let row = &v[(o * r + k) * inner..(o * r + k + 1) * inner];
            for (a, &e) in acc.iter_mut().zip(row) {
                let e = e.f64();
                *a = match op {
                    _ if k == 0 => e,
                    ReduceOp::Sum | ReduceOp::Mean => *a + e,
                    ReduceOp::Max => a.max(e),
                    ReduceOp::Min => a.min(e),
                    ReduceOp::Prod => *a * e,
                };
            }
        }
        if op == ReduceOp::Mean {
            acc.iter_mut().for_each(|a| *a /= r as f64);
        }
    }
    out
}

pub(crate) fn cpu(op: &Op, x: &[&Tensor], _out: &[usize], dtype: DType) -> Result<CpuData> {
    let a = x[0];
    if let Op::Reduce { op: o, axes, .. } = op {
        let sh = a.shape();
        let block = !axes.is_empty() && axes.windows(2).all(|w| w[1] == w[0] + 1);
        let r: usize = axes.iter().map(|&d| sh[d]).product();
        if block && r > 0 {
            let (lo, hi) = (axes[0], *axes.last().unwrap());
            let outer: usize = sh[..lo].iter().product();
            let inner: usize = sh[hi + 1..].iter().product();
            match a.cpu_data() {
                CpuData::F32(v) => return Ok(CpuData::from_f64(dtype, &contiguous_block(v, *o, outer, r, inner))),
                CpuData::F64(v) => return Ok(CpuData::from_f64(dtype, &contiguous_block(v, *o, outer, r, inner))),
                _ => {}
            }
        }
    }
    let (rows, r, perm) = plan(a.shape(), &axes_of(op));
    let st = strides(a.shape());
    let pshape: Vec<usize> = perm.iter().map(|&d| a.shape()[d]).collect();
    let pst: Vec<usize> = perm.iter().map(|&d| st[d]).collect();
    let all = a.cpu_data().to_f64();
    let v: Vec<f64> = shape::StridedIter::new(&pshape, &pst, 0).map(|i| all[i]).collect();
    if r == 0 {
        if let Op::Reduce { op: o, .. } = op {
            return Ok(CpuData::from_f64(dtype, &vec![o.empty_value(dtype); rows]));
        }
    }
    // Integer sums and products wrap in i32 as the kernel's do.
    if a.dtype() == DType::I32 {
        if let Op::Reduce {
            op: o @ (ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Prod),
            ..
        } = op
        {
            let iv: Vec<i32> = v.iter().map(|&e| e as i32).collect();
            let res = (0..rows)
                .map(|i| {
                    let row = &iv[i * r..(i + 1) * r];
                    match o {
                        ReduceOp::Prod => row.iter().fold(1i32, |p, &e| p.wrapping_mul(e)),
                        ReduceOp::Sum => row.iter().fold(0i32, |p, &e| p.wrapping_add(e)),
                        _ => row.iter().fold(0i32, |p, &e| p.wrapping_add(e)).wrapping_div(r as i32),
                    }
                })
                .collect();
            return Ok(CpuData::I32(res));
        }
    }
    Ok(CpuData::from_f64(dtype, &rows_f64(&v, rows, r, op)))
}

pub(crate) fn gpu(op: &Op, g: &GpuDevice, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let a = x[0];
    let sh = a.shape();
    let axes = axes_of(op);
    let n_out = numel(out);
    let (rows, r, perm) = plan(sh, &axes);
    if r == 0 {
        let Op::Reduce { op: o, .. } = op else { unreachable!() };
        return crate::ops::creation::fill_gpu(g, n_out, o.empty_value(dtype), dtype);
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
        layout::copy(
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
    let ty = super::ktype(a.dtype());
    let launch = |entry, params: &[u32], bufs: &[&GpuBuf], groups| {
        g.launch(&Launch {
            kernel: &REDUCE,
            entry,
            ty,
            consts: &[],
            params,
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
    let Some((chunk, parts)) = split else {
        let params = [rows as u32, r as u32, inner as u32, n_out as u32, code, 0, 0, 0];
        // `store` names both outputs, so both bindings exist; y serves as either.
        if by_rows {
            launch("rows_main", &params, &[src, &y, &y], fold(rows))?;
        } else {
            launch("cols_main", &params, &[src, &y, &y], grid(n_out, 256))?;
        }
        return Ok(y);
    };
    let params = [
        rows as u32,
        r as u32,
        inner as u32,
        n_out as u32,
        code,
        0,
        chunk as u32,
        parts as u32,
    ];
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

/// Gradient rules. Sum and mean spread dy back over the reduced axes; max
/// and min share it equally among the elements equal to the result (as TF);
/// prod uses y / x, so it is undefined where an input is zero.
pub(crate) fn grad(op: &Op, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let a = x[0];
    let Op::Reduce { op: r, axes, .. } = op else {
        return Ok(vec![None]);
    };
    if !a.dtype().is_float() {
        return Ok(vec![None]);
    }
    // Shape of the result with the reduced axes kept as 1.
    let kept: Vec<isize> = (0..a.rank())
        .map(|d| if axes.contains(&d) { 1 } else { a.shape()[d] as isize })
        .collect();
    let up = |t: &Tensor| -> Result<Tensor> { t.reshape(&kept)?.broadcast_to(a.shape()) };
    let g = up(dy)?;
    let dx = match r {
        ReduceOp::Sum => g,
        ReduceOp::Mean => g.div_scalar(reduced_len(op, a).max(1) as f64)?,
        ReduceOp::Max | ReduceOp::Min => {
            let mask = super::binary::equal(a, &up(y)?)?.cast(a.dtype())?;
            let count = mask.sum(Some(&axes.iter().map(|&d| d as isize).collect::<Vec<_>>()), true)?;
            g.mul(&mask)?.div(&count.broadcast_to(a.shape())?)?
        }
        ReduceOp::Prod => g.mul(&up(y)?)?.div(a)?,
    };
    Ok(vec![Some(dx)])
}

/// One workgroup per item, folded into y past 65535.
pub(crate) fn fold(n: usize) -> [u32; 3] {
    if n <= 65535 {
        [n as u32, 1, 1]
    } else {
        let y = n.div_ceil(65535);
        [n.div_ceil(y) as u32, y as u32, 1]
    }
}

// ---- public API ----------------------------------------------------------

fn reduce(x: &Tensor, op: ReduceOp, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    let axes = shape::axes(op.name(), axes, x.rank())?;
    exec(Op::Reduce { op, axes, keepdims }, &[x])
}

/// `tf.reduce_sum(x, axis, keepdims)`; `None` reduces every axis.
pub fn reduce_sum(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Sum, axes, keepdims)
}
pub fn reduce_mean(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Mean, axes, keepdims)
}
pub fn reduce_max(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Max, axes, keepdims)
}
pub fn reduce_min(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Min, axes, keepdims)
}
pub fn reduce_prod(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Prod, axes, keepdims)
}

/// `tf.argmax(x, axis)` as int32.
pub fn argmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    let axis = shape::axis("argmax", axis, x.rank())?;
    exec(Op::ArgReduce { max: true, axis }, &[x])
}

/// `tf.argmin(x, axis)` as int32.
pub fn argmin(x: &Tensor, axis: isize) -> Result<Tensor> {
    let axis = shape::axis("argmin", axis, x.rank())?;
    exec(Op::ArgReduce { max: false, axis }, &[x])
}

impl Tensor {
    pub fn sum(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_sum(self, axes, keepdims)
    }
    pub fn mean(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_mean(self, axes, keepdims)
    }
    pub fn max(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_max(self, axes, keepdims)
    }
    pub fn min(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_min(self, axes, keepdims)
    }
    pub fn prod(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_prod(self, axes, keepdims)
    }
    pub fn argmax(&self, axis: isize) -> Result<Tensor> {
        argmax(self, axis)
    }
    pub fn argmin(&self, axis: isize) -> Result<Tensor> {
        argmin(self, axis)
    }
}

/// dst[i] = sum_s src[s * n + i] for s < slices (partial sums of split GEMMs).
pub(crate) fn sum_slices(
    g: &GpuDevice,
    src: &GpuBuf,
    dst: &GpuBuf,
    slices: usize,
    n: usize,
    dtype: DType,
) -> Result<()> {
    g.launch(&Launch {
        kernel: &REDUCE,
        entry: "cols_main",
        ty: super::ktype(dtype),
        consts: &[],
        params: &[1, slices as u32, n as u32, n as u32, ReduceOp::Sum as u32, 0, 0, 0],
        bufs: &[src, dst, dst],
        groups: grid(n, 256),
    })
}
