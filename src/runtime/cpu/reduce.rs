//! CPU reference kernels of the reductions (sum, mean, max, min, prod over
//! any axes) and argmax / argmin, accumulating in f64. A contiguous block of
//! reduced axes of f32 or f64 data is read in place; otherwise the reduced
//! axes are first moved last. Empty
//! reductions give the identities of [`crate::core::op::reduce`].

use super::CpuData;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::{max_nan, min_nan};
use crate::core::op::reduce::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

fn rows_f64(v: &[f64], rows: usize, r: usize, op: &Op) -> Vec<f64> {
    (0..rows)
        .map(|i| {
            let row = &v[i * r..(i + 1) * r];
            match op {
                Op::Reduce { op, .. } => match op {
                    ReduceOp::Sum => row.iter().sum(),
                    ReduceOp::Mean => row.iter().sum::<f64>() / r as f64,
                    ReduceOp::Max => row.iter().copied().fold(f64::NEG_INFINITY, max_nan),
                    ReduceOp::Min => row.iter().copied().fold(f64::INFINITY, min_nan),
                    ReduceOp::Prod => row.iter().product(),
                },
                // The first NaN wins, for argmax and argmin alike (as NumPy's).
                Op::ArgReduce { max, .. } => {
                    let mut best = 0;
                    for (k, &e) in row.iter().enumerate() {
                        let b = row[best];
                        if !b.is_nan() && (e.is_nan() || (*max && e > b) || (!*max && e < b)) {
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
fn contiguous_block<F: crate::runtime::cpu::Float>(
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
                    ReduceOp::Max => max_nan(*a, e),
                    ReduceOp::Min => min_nan(*a, e),
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

pub(crate) fn cpu(op: &Op, x: &[Operand], _out: &[usize], dtype: DType) -> Result<CpuData> {
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
    let v: Vec<f64> = crate::core::shape::StridedIter::new(&pshape, &pst, 0)
        .map(|i| all[i])
        .collect();
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
