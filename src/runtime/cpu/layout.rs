//! CPU reference kernels of the layout family: cast, transpose,
//! broadcast_to, slice, concat, gather, one_hot, pad and gather's gradient.
//! Results are contiguous copies read through the strided views of
//! [`crate::core::op::layout`]; reshape never reaches here (it shares storage).

use super::CpuData;
use super::arena::{from_f64, output, with_scratch};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::layout::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

/// `[rows, cols]` f32 from int8 weights (words `[rows, ceil(cols / 4)]`,
/// low byte first) and scales `[rows]`: `Op::DequantizeInt8`, and the
/// weights of the fused int8 ops' reference kernels.
pub(crate) fn dequantize(words: &Operand, scales: &Operand, cols: usize) -> Vec<f32> {
    let (CpuData::I32(words), CpuData::F32(scales)) = (words.cpu_data(), scales.cpu_data()) else {
        unreachable!()
    };
    let per = cols.div_ceil(4);
    let mut v = Vec::with_capacity(scales.len() * cols);
    for (r, &s) in scales.iter().enumerate() {
        for j in 0..cols {
            let byte = (words[r * per + j / 4] >> (8 * (j % 4))) as i8;
            v.push(f32::from(byte) * s);
        }
    }
    v
}

/// Copies `src` viewed with `strides` from `off` into a new contiguous vector.
fn gather_strided<T: Copy + Default + 'static>(src: &[T], shape: &[usize], strides: &[usize], off: usize) -> Vec<T> {
    let mut o = output::<T>(numel(shape));
    for (o, i) in o
        .iter_mut()
        .zip(crate::core::shape::StridedIter::new(shape, strides, off))
    {
        *o = src[i];
    }
    o
}

pub(crate) fn cpu(op: &Op, x: &[Operand], out: &[usize], dtype: DType) -> Result<CpuData> {
    let a = x[0];
    match op {
        Op::Cast(to) => Ok(super::arena::cast(a.cpu_data(), *to)),
        Op::Permute(_) | Op::BroadcastTo(_) | Op::Slice { .. } => {
            let (st, off) = view(op, a.shape(), out);
            Ok(super::map_data!(a.cpu_data(), v => gather_strided(v, out, &st, off)))
        }
        Op::Concat { axis } => {
            let outer: usize = out[..*axis].iter().product();
            let inner: usize = out[axis + 1..].iter().product();
            // Each operand's rows of `w` values in turn, for every outer index.
            fn join<T: Copy + Default + 'static>(parts: &[(&[T], usize)], outer: usize, n: usize) -> Vec<T> {
                let mut o = output::<T>(n);
                let mut at = 0;
                for r in 0..outer {
                    for &(v, w) in parts {
                        o[at..at + w].copy_from_slice(&v[r * w..(r + 1) * w]);
                        at += w;
                    }
                }
                o
            }
            let n = numel(out);
            let w = |t: &Operand| t.shape()[*axis] * inner;
            macro_rules! joined {
                ($variant:ident) => {{
                    let parts: Vec<(&[_], usize)> = x
                        .iter()
                        .map(|t| match t.cpu_data() {
                            CpuData::$variant(v) => (v.as_slice(), w(t)),
                            _ => unreachable!("dtypes checked in infer"),
                        })
                        .collect();
                    CpuData::$variant(join(&parts, outer, n))
                }};
            }
            Ok(match dtype {
                DType::F32 => joined!(F32),
                DType::F16 => joined!(F16),
                DType::F64 => joined!(F64),
                DType::BF16 => joined!(BF16),
                DType::I32 => joined!(I32),
                DType::Bool => joined!(Bool),
            })
        }
        Op::Gather { axis } => {
            let sh = a.shape();
            let d = sh[*axis];
            let outer: usize = sh[..*axis].iter().product();
            let inner: usize = sh[axis + 1..].iter().product();
            let CpuData::I32(idx) = x[1].cpu_data() else {
                unreachable!()
            };
            if let Some(&bad) = idx.iter().find(|&&k| k < 0 || k as usize >= d) {
                return Err(index_error(bad, d as u32));
            }
            Ok(super::map_data!(a.cpu_data(), v => {
                let mut o = output(outer * idx.len() * inner);
                let mut at = 0;
                for r in 0..outer {
                    for &k in idx {
                        let base = (r * d + k as usize) * inner;
                        o[at..at + inner].copy_from_slice(&v[base..base + inner]);
                        at += inner;
                    }
                }
                o
            }))
        }
        Op::DequantizeInt8 { cols } => Ok(CpuData::F32(dequantize(&a, &x[1], *cols))),
        Op::OneHot { depth, on, off, .. } => {
            let CpuData::I32(idx) = a.cpu_data() else {
                unreachable!()
            };
            Ok(with_scratch(idx.len() * depth, |v: &mut [f64]| {
                for (row, &k) in v.chunks_mut((*depth).max(1)).zip(idx) {
                    for (j, e) in row.iter_mut().enumerate() {
                        *e = if k >= 0 && k as usize == j { *on } else { *off };
                    }
                }
                from_f64(dtype, v)
            }))
        }
        Op::Pad { before, shape } => {
            let st = strides(shape);
            let off: usize = before.iter().zip(&st).map(|(b, s)| b * s).sum();
            let src = a.cpu_data().to_f64();
            Ok(with_scratch(numel(shape), |v: &mut [f64]| {
                for (k, i) in crate::core::shape::StridedIter::new(a.shape(), &st, off).enumerate() {
                    v[i] = src[k];
                }
                from_f64(dtype, v)
            }))
        }
        Op::GatherGrad { axis, dim } => {
            let CpuData::I32(idx) = a.cpu_data() else {
                unreachable!()
            };
            let dy = x[1].cpu_data().to_f64();
            let outer: usize = out[..*axis].iter().product();
            let inner: usize = out[axis + 1..].iter().product();
            let j = idx.len();
            Ok(with_scratch(numel(out), |v: &mut [f64]| {
                for o in 0..outer {
                    for (jj, &k) in idx.iter().enumerate() {
                        if k >= 0 && (k as usize) < *dim {
                            for b in 0..inner {
                                v[(o * dim + k as usize) * inner + b] += dy[(o * j + jj) * inner + b];
                            }
                        }
                    }
                }
                from_f64(dtype, v)
            }))
        }
        _ => unreachable!(),
    }
}
