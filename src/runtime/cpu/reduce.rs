//! CPU reference kernels of the reductions (sum, mean, max, min, prod over
//! any axes) and argmax / argmin, accumulating in f64. A contiguous block of
//! reduced axes of f32 or f64 data is read in place; otherwise the reduced
//! axes are first moved last. Empty
//! reductions give the identities of [`crate::core::op::reduce`].

use super::CpuData;
use super::arena::{from_f64, with_scratch, with_scratch_unzeroed};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::float::{max_nan, min_nan};
use crate::core::op::reduce::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

/// The most extreme finite value of `dtype` (`NumTraits<T>::highest()`):
/// TensorFlow's argmax starts from its negation at index 0, argmin from it.
fn highest(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 65504.0,
        DType::BF16 => 3.3895313892515355e38,
        DType::F32 => f32::MAX as f64,
        DType::I32 => i32::MAX as f64,
        _ => f64::MAX,
    }
}

fn rows_f64(v: &[f64], rows: usize, r: usize, op: &Op, from: DType) -> Vec<f64> {
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
                // TensorFlow's (Eigen's) scan: from (the lowest value, index
                // 0) for argmax, each strictly larger element replaces the
                // best, so NaN never wins, ties go to the first, and a row
                // of NaN or -inf gives 0 (argmin alike, mirrored).
                Op::ArgReduce { max, .. } => {
                    let h = highest(from);
                    let (mut best, mut at) = (if *max { -h } else { h }, 0);
                    for (k, &e) in row.iter().enumerate() {
                        if (*max && e > best) || (!*max && e < best) {
                            (best, at) = (e, k);
                        }
                    }
                    at as f64
                }
                _ => unreachable!(),
            }
        })
        .collect()
}

/// Float reductions over one contiguous block of axes, [outer, r, inner],
/// straight from the data (no transposed copy); accumulates in f64. Large
/// blocks split across cores: over `outer` where it is wide enough, else
/// over runs of the reduced rows, whose partial results are combined in
/// order (the result does not depend on scheduling).
fn contiguous_block<F: crate::runtime::cpu::Float>(
    v: &[F],
    op: ReduceOp,
    (outer, r, inner): (usize, usize, usize),
    out: &mut [f64],
) {
    use rayon::prelude::*;
    // Rows k0..k1 of slab o folded into acc (which holds row k0's values
    // already when `first` is false).
    #[inline(always)]
    fn fold<F: crate::runtime::cpu::Float>(
        v: &[F],
        acc: &mut [f64],
        (o, r, inner): (usize, usize, usize),
        (k0, k1): (usize, usize),
        f: impl Fn(f64, f64) -> f64,
    ) {
        let row = |k: usize| &v[(o * r + k) * inner..(o * r + k + 1) * inner];
        for (a, &e) in acc.iter_mut().zip(row(k0)) {
            *a = e.f64();
        }
        for k in k0 + 1..k1 {
            for (a, &e) in acc.iter_mut().zip(row(k)) {
                *a = f(*a, e.f64());
            }
        }
    }
    let combine = |a: f64, e: f64| match op {
        ReduceOp::Sum | ReduceOp::Mean => a + e,
        ReduceOp::Max => max_nan(a, e),
        ReduceOp::Min => min_nan(a, e),
        ReduceOp::Prod => a * e,
    };
    // Each arm names its combine rule, so the inner loops see a constant op.
    let run = |acc: &mut [f64], o: usize, ks: (usize, usize)| match op {
        ReduceOp::Sum | ReduceOp::Mean => fold(v, acc, (o, r, inner), ks, |a, e| a + e),
        ReduceOp::Max => fold(v, acc, (o, r, inner), ks, max_nan),
        ReduceOp::Min => fold(v, acc, (o, r, inner), ks, min_nan),
        ReduceOp::Prod => fold(v, acc, (o, r, inner), ks, |a, e| a * e),
    };
    let threads = rayon::current_num_threads();
    let big = outer * r * inner > 1 << 16 && inner > 0;
    if big && outer >= threads {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(o, acc)| run(acc, o, (0, r)));
    } else if big {
        let per = r.div_ceil(threads * 4);
        for (o, acc) in out.chunks_mut(inner.max(1)).enumerate() {
            let parts: Vec<Vec<f64>> = (0..r.div_ceil(per))
                .into_par_iter()
                .map(|p| {
                    let mut part = vec![0.0; inner];
                    run(&mut part, o, (p * per, ((p + 1) * per).min(r)));
                    part
                })
                .collect();
            acc.copy_from_slice(&parts[0]);
            for part in &parts[1..] {
                for (a, &e) in acc.iter_mut().zip(part) {
                    *a = combine(*a, e);
                }
            }
        }
    } else if inner > 0 {
        for (o, acc) in out.chunks_mut(inner).enumerate() {
            run(acc, o, (0, r));
        }
    }
    if op == ReduceOp::Mean {
        out.iter_mut().for_each(|a| *a /= r as f64);
    }
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
            // Accumulated in this thread's f64 scratch, then rounded once.
            let done = match a.cpu_data() {
                CpuData::F32(v) => Some(with_scratch(outer * inner, |out: &mut [f64]| {
                    contiguous_block(v, *o, (outer, r, inner), out);
                    from_f64(dtype, out)
                })),
                CpuData::F64(v) => Some(with_scratch(outer * inner, |out: &mut [f64]| {
                    contiguous_block(v, *o, (outer, r, inner), out);
                    from_f64(dtype, out)
                })),
                _ => None,
            };
            if let Some(d) = done {
                return Ok(d);
            }
        }
    }
    let (rows, r, perm) = plan(a.shape(), &axes_of(op));
    let st = strides(a.shape());
    let pshape: Vec<usize> = perm.iter().map(|&d| a.shape()[d]).collect();
    let pst: Vec<usize> = perm.iter().map(|&d| st[d]).collect();
    // The reduced axes moved last, widened to f64, in this thread's scratch.
    let n = a.numel();
    Ok(with_scratch_unzeroed(n, |all: &mut [f64]| {
        a.cpu_data().write_f64(all);
        with_scratch_unzeroed(n, |v: &mut [f64]| {
            for (o, i) in v.iter_mut().zip(crate::core::shape::StridedIter::new(&pshape, &pst, 0)) {
                *o = all[i];
            }
            rows_of(op, a.dtype(), dtype, v, (rows, r))
        })
    }))
}

/// `op` over each run of `r` values of `v` (the reduced axes last).
fn rows_of(op: &Op, from: DType, dtype: DType, v: &[f64], (rows, r): (usize, usize)) -> CpuData {
    if r == 0 {
        if let Op::Reduce { op: o, .. } = op {
            return CpuData::from_f64(dtype, &vec![o.empty_value(dtype); rows]);
        }
    }
    // Integer sums and products wrap in i32 as the kernel's do.
    if from == DType::I32 {
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
            return CpuData::I32(res);
        }
    }
    CpuData::from_f64(dtype, &rows_f64(v, rows, r, op, from))
}
