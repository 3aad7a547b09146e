//! CPU reference kernels of the binary family: broadcast arithmetic,
//! comparisons and `where`, with the element semantics of
//! [`crate::core::op::binary`] (int32 arithmetic wraps; `x / 0` gives `x`, as
//! WGSL defines). Large arrays are split across cores.

use super::CpuData;
use super::arena::{give_back, output, output_filled};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::binary::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Arrays above this size are processed on all cores.
const PAR: usize = 1 << 16;

/// How [`repeat`]'s small operand repeats over the full one.
#[derive(Clone, Copy)]
enum Repeat {
    /// The whole operand, again and again (a bias).
    Row,
    /// Each value over a run of `full.len() / small.len()` (a column).
    Column,
}

/// `g(full[i], small[..])` for every i of `full`, laid out like the output,
/// with `small` repeating as `how` says (non-empty, dividing `full`).
/// Written in place, in tasks of fixed size (a scalar or a short row must
/// not make a task per repetition); within a task, segments over which
/// the small operand's index moves with the output's, or stays put.
fn repeat<A: Copy + Default + Send + Sync + 'static, O: Copy + Default + Send + Sync + 'static>(
    full: &[A],
    small: &[A],
    how: Repeat,
    g: impl Fn(A, A) -> O + Send + Sync,
) -> Vec<O> {
    const TASK: usize = 1 << 15;
    let n = full.len();
    // A single value is a column of one: one segment per task.
    let how = if small.len() == 1 { Repeat::Column } else { how };
    let k = match how {
        Repeat::Row => small.len(),
        Repeat::Column => n / small.len(),
    };
    // A short row is tiled to over 1024 values (whole rows), so that a
    // segment is a long loop however short the row; a long one repeats as
    // it is.
    let tiled: Vec<A> = match how {
        Repeat::Row if k < 1024 => {
            let mut t = output::<A>(k * (1024 / k + 1));
            for (t, &e) in t.iter_mut().zip(small.iter().cycle()) {
                *t = e;
            }
            t
        }
        _ => Vec::new(),
    };
    let rep: &[A] = if tiled.is_empty() { small } else { &tiled };
    let run = |(t, (o, c)): (usize, (&mut [MaybeUninit<O>], &[A]))| {
        let start = t * TASK;
        let mut i = 0;
        while i < o.len() {
            let at = start + i;
            match how {
                Repeat::Row => {
                    let off = at % k;
                    let end = (i + rep.len() - off).min(o.len());
                    let (o, c) = (&mut o[i..end], &c[i..end]);
                    for ((o, &p), &q) in o.iter_mut().zip(c).zip(&rep[off..]) {
                        o.write(g(p, q));
                    }
                    i = end;
                }
                Repeat::Column => {
                    let end = ((at / k + 1) * k - start).min(o.len());
                    let (o, c) = (&mut o[i..end], &c[i..end]);
                    let q = small[at / k];
                    for (o, &p) in o.iter_mut().zip(c) {
                        o.write(g(p, q));
                    }
                    i = end;
                }
            }
        }
    };
    // SAFETY: each task's segments run from its first element to its last
    // (`end` > `i`: `rep` is longer than `off`, and a column's run ends
    // past `at`), writing every one.
    let out = unsafe {
        output_filled(n, |out| {
            if n > PAR {
                out.par_chunks_mut(TASK)
                    .zip(full.par_chunks(TASK))
                    .enumerate()
                    .for_each(run);
            } else {
                out.chunks_mut(TASK).zip(full.chunks(TASK)).enumerate().for_each(run);
            }
        })
    };
    give_back(tiled);
    out
}

fn zip<A: Copy + Default + Send + Sync + 'static, O: Copy + Default + Send + Sync + 'static>(
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
        // SAFETY: a and b have n elements each, so the zips write all n.
        return unsafe {
            output_filled::<O>(n, |out| {
                if n > PAR {
                    out.par_iter_mut().zip(a.par_iter().zip(b)).for_each(|(o, (&p, &q))| {
                        o.write(f(p, q));
                    });
                } else {
                    out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&p, &q))| {
                        o.write(f(p, q));
                    });
                }
            })
        };
    }
    // The other operand repeats: as a row (its shape ends the output's) or
    // as a column (each value over a run; a single value is a column of one).
    let row = |sh: &[usize], t: &[A]| !t.is_empty() && shape.ends_with(without_leading_ones(sh));
    let column = |sh: &[usize], t: &[A]| n > 0 && !t.is_empty() && is_column(sh, shape);
    if fa && row(bsh, b) {
        return repeat(a, b, Repeat::Row, &f);
    }
    if fb && row(ash, a) {
        return repeat(b, a, Repeat::Row, |q, p| f(p, q));
    }
    if fa && column(bsh, b) {
        return repeat(a, b, Repeat::Column, &f);
    }
    if fb && column(ash, a) {
        return repeat(b, a, Repeat::Column, |q, p| f(p, q));
    }
    let mut out = output::<O>(n);
    let at = StridedIter::new(shape, sa, 0).zip(StridedIter::new(shape, sb, 0));
    for (o, (i, j)) in out.iter_mut().zip(at) {
        *o = f(a[i], b[j]);
    }
    out
}

pub(crate) fn cpu(op: &Op, x: &[Operand], out: &[usize], _dtype: DType) -> Result<CpuData> {
    let st: Vec<Vec<usize>> = x.iter().map(|t| broadcast_strides(t.shape(), out)).collect();
    let data: Vec<&CpuData> = x.iter().map(|t| t.cpu_data()).collect();
    Ok(match op {
        Op::Binary(o) => {
            let o = *o;
            match (data[0], data[1]) {
                (CpuData::F32(a), CpuData::F32(b)) => crate::core::op::binary::with_binary!(o, |k| {
                    CpuData::F32(zip(
                        a,
                        b,
                        (x[0].shape(), x[1].shape()),
                        (&st[0], &st[1]),
                        out,
                        |p, q| k.float(p, q),
                    ))
                }),
                (CpuData::F64(a), CpuData::F64(b)) => CpuData::F64(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.float(p, q),
                )),
                (CpuData::I32(a), CpuData::I32(b)) => {
                    if let Some((code, bad)) = crate::core::op::binary::int_check(o)
                        && numel(out) > 0
                        && b.iter().any(|&v| bad(v))
                    {
                        return Err(crate::core::op::binary::int_error(code));
                    }
                    CpuData::I32(zip(
                        a,
                        b,
                        (x[0].shape(), x[1].shape()),
                        (&st[0], &st[1]),
                        out,
                        |p, q| o.int(p, q),
                    ))
                }
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
            let shapes = (x[0].shape(), x[1].shape());
            let st = (&st[0][..], &st[1][..]);
            // One loop per comparison and type: a runtime match per element
            // kept it scalar (3x `mul`'s time).
            CpuData::Bool(crate::core::op::binary::with_cmp!(*c, |k| match (data[0], data[1]) {
                (CpuData::F32(a), CpuData::F32(b)) => zip(a, b, shapes, st, out, |p, q| k.apply(p, q)),
                (CpuData::F64(a), CpuData::F64(b)) => zip(a, b, shapes, st, out, |p, q| k.apply(p, q)),
                (CpuData::I32(a), CpuData::I32(b)) => zip(a, b, shapes, st, out, |p, q| k.apply(p, q)),
                (CpuData::Bool(a), CpuData::Bool(b)) => zip(a, b, shapes, st, out, |p, q| k.apply(p, q)),
                _ => unreachable!(),
            }))
        }
        Op::Where => {
            let CpuData::Bool(m) = data[0] else { unreachable!() };
            let st = (&st[0][..], &st[1][..], &st[2][..]);
            match (data[1], data[2]) {
                (CpuData::F32(a), CpuData::F32(b)) => CpuData::F32(sel_vec(m, a, b, st, out)),
                (CpuData::F64(a), CpuData::F64(b)) => CpuData::F64(sel_vec(m, a, b, st, out)),
                (CpuData::I32(a), CpuData::I32(b)) => CpuData::I32(sel_vec(m, a, b, st, out)),
                (CpuData::Bool(a), CpuData::Bool(b)) => CpuData::Bool(sel_vec(m, a, b, st, out)),
                _ => unreachable!(),
            }
        }
        _ => unreachable!(),
    })
}

/// `where(c, a, b)` with each operand broadcast by its strides.
fn sel_vec<T: Copy + Default + 'static>(
    c: &[bool],
    a: &[T],
    b: &[T],
    (sc, sa, sb): (&[usize], &[usize], &[usize]),
    out: &[usize],
) -> Vec<T> {
    let mut o = output::<T>(numel(out));
    let at = StridedIter::new(out, sc, 0)
        .zip(StridedIter::new(out, sa, 0))
        .zip(StridedIter::new(out, sb, 0));
    for (o, ((k, i), j)) in o.iter_mut().zip(at) {
        *o = if c[k] { a[i] } else { b[j] };
    }
    o
}
