//! CPU reference kernels of the binary family: broadcast arithmetic,
//! comparisons and `where`, with the element semantics of
//! [`crate::core::op::binary`] (int32 arithmetic wraps; `x / 0` gives `x`, as
//! WGSL defines). Large arrays are split across cores.

use super::CpuData;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::binary::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;
use rayon::prelude::*;

/// The shape without its leading 1s.

/// Arrays above this size are processed on all cores.
const PAR: usize = 1 << 16;

fn zip<A: Copy + Send + Sync, O: Send>(
    a: &[A],
    b: &[A],
    (ash, bsh): (&[usize], &[usize]),
    (sa, sb): (&[usize], &[usize]),
    shape: &[usize],
    f: impl Fn(A, A) -> O + Send + Sync,
) -> Vec<O> {
    // An operand with as many elements as the output cannot be broadcast, so
    // it is laid out like the output; one whose shape ends the output's
    // repeats with its own length. Those common cases need no index math.
    let n = numel(shape);
    let (fa, fb) = (a.len() == n, b.len() == n);
    if fa && fb {
        return if n > PAR {
            a.par_iter().zip(b.par_iter()).map(|(&p, &q)| f(p, q)).collect()
        } else {
            a.iter().zip(b).map(|(&p, &q)| f(p, q)).collect()
        };
    }
    if fa && !b.is_empty() && shape.ends_with(without_leading_ones(bsh)) {
        let k = b.len();
        return if n > PAR {
            a.par_chunks(k)
                .flat_map_iter(|c| c.iter().zip(b).map(|(&p, &q)| f(p, q)))
                .collect()
        } else {
            a.chunks(k)
                .flat_map(|c| c.iter().zip(b).map(|(&p, &q)| f(p, q)))
                .collect()
        };
    }
    if fb && !a.is_empty() && shape.ends_with(without_leading_ones(ash)) {
        let k = a.len();
        return b
            .chunks(k)
            .flat_map(|c| a.iter().zip(c).map(|(&p, &q)| f(p, q)))
            .collect();
    }
    StridedIter::new(shape, sa, 0)
        .zip(StridedIter::new(shape, sb, 0))
        .map(|(i, j)| f(a[i], b[j]))
        .collect()
}

pub(crate) fn cpu(op: &Op, x: &[Operand], out: &[usize], _dtype: DType) -> Result<CpuData> {
    let st: Vec<Vec<usize>> = x.iter().map(|t| broadcast_strides(t.shape(), out)).collect();
    let data: Vec<&CpuData> = x.iter().map(|t| t.cpu_data()).collect();
    Ok(match op {
        Op::Binary(o) => {
            let o = *o;
            match (data[0], data[1]) {
                (CpuData::F32(a), CpuData::F32(b)) => CpuData::F32(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.float(p, q),
                )),
                (CpuData::F64(a), CpuData::F64(b)) => CpuData::F64(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.float(p, q),
                )),
                (CpuData::I32(a), CpuData::I32(b)) => CpuData::I32(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.int(p, q),
                )),
                (CpuData::Bool(a), CpuData::Bool(b)) => CpuData::Bool(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.bool(p, q),
                )),
                _ => unreachable!(),
            }
        }
        Op::Compare(c) => {
            let c = *c;
            CpuData::Bool(match (data[0], data[1]) {
                (CpuData::F32(a), CpuData::F32(b)) => {
                    zip(a, b, (x[0].shape(), x[1].shape()), (&st[0], &st[1]), out, |p, q| {
                        c.apply(p, q)
                    })
                }
                (CpuData::F64(a), CpuData::F64(b)) => {
                    zip(a, b, (x[0].shape(), x[1].shape()), (&st[0], &st[1]), out, |p, q| {
                        c.apply(p, q)
                    })
                }
                (CpuData::I32(a), CpuData::I32(b)) => {
                    zip(a, b, (x[0].shape(), x[1].shape()), (&st[0], &st[1]), out, |p, q| {
                        c.apply(p, q)
                    })
                }
                (CpuData::Bool(a), CpuData::Bool(b)) => {
                    zip(a, b, (x[0].shape(), x[1].shape()), (&st[0], &st[1]), out, |p, q| {
                        c.apply(p, q)
                    })
                }
                _ => unreachable!(),
            })
        }
        Op::Where => {
            let CpuData::Bool(m) = data[0] else { unreachable!() };
            let ci: Vec<bool> = StridedIter::new(out, &st[0], 0).map(|i| m[i]).collect();
            match (data[1], data[2]) {
                (CpuData::F32(a), CpuData::F32(b)) => CpuData::F32(sel_vec(&ci, a, b, &st[1], &st[2], out)),
                (CpuData::F64(a), CpuData::F64(b)) => CpuData::F64(sel_vec(&ci, a, b, &st[1], &st[2], out)),
                (CpuData::I32(a), CpuData::I32(b)) => CpuData::I32(sel_vec(&ci, a, b, &st[1], &st[2], out)),
                (CpuData::Bool(a), CpuData::Bool(b)) => CpuData::Bool(sel_vec(&ci, a, b, &st[1], &st[2], out)),
                _ => unreachable!(),
            }
        }
        _ => unreachable!(),
    })
}

fn sel_vec<T: Copy>(c: &[bool], a: &[T], b: &[T], sa: &[usize], sb: &[usize], out: &[usize]) -> Vec<T> {
    StridedIter::new(out, sa, 0)
        .zip(StridedIter::new(out, sb, 0))
        .zip(c)
        .map(|((i, j), &k)| if k { a[i] } else { b[j] })
        .collect()
}
