//! CPU reference kernels of the layout family: cast, transpose,
//! broadcast_to, slice, concat, gather, one_hot, pad and gather's gradient.
//! Results are contiguous copies read through the strided views of
//! [`crate::core::op::layout`]; reshape never reaches here (it shares storage).

use super::CpuData;
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
fn gather_strided<T: Copy>(src: &[T], shape: &[usize], strides: &[usize], off: usize) -> Vec<T> {
    crate::core::shape::StridedIter::new(shape, strides, off)
        .map(|i| src[i])
        .collect()
}

pub(crate) fn cpu(op: &Op, x: &[Operand], out: &[usize], dtype: DType) -> Result<CpuData> {
    let a = x[0];
    match op {
        Op::Cast(to) => Ok(a.cpu_data().cast(*to)),
        Op::Permute(_) | Op::BroadcastTo(_) | Op::Slice { .. } => {
            let (st, off) = view(op, a.shape(), out);
            Ok(super::map_data!(a.cpu_data(), v => gather_strided(v, out, &st, off)))
        }
        Op::Concat { axis } => {
            let outer: usize = out[..*axis].iter().product();
            let inner: usize = out[axis + 1..].iter().product();
            let mut parts: Vec<CpuData> = Vec::new();
            for o in 0..outer {
                for t in x {
                    let w = t.shape()[*axis] * inner;
                    parts.push(super::map_data!(t.cpu_data(), v => v[o * w..(o + 1) * w].to_vec()));
                }
            }
            let mut acc = CpuData::zeros(dtype, 0);
            for p in parts {
                acc = match (acc, p) {
                    (CpuData::F32(mut a), CpuData::F32(b)) => {
                        a.extend(b);
                        CpuData::F32(a)
                    }
                    (CpuData::F16(mut a), CpuData::F16(b)) => {
                        a.extend(b);
                        CpuData::F16(a)
                    }
                    (CpuData::F64(mut a), CpuData::F64(b)) => {
                        a.extend(b);
                        CpuData::F64(a)
                    }
                    (CpuData::I32(mut a), CpuData::I32(b)) => {
                        a.extend(b);
                        CpuData::I32(a)
                    }
                    (CpuData::Bool(mut a), CpuData::Bool(b)) => {
                        a.extend(b);
                        CpuData::Bool(a)
                    }
                    _ => unreachable!("dtypes checked in infer"),
                };
            }
            Ok(acc)
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
                let mut o = Vec::with_capacity(outer * idx.len() * inner);
                for r in 0..outer {
                    for &k in idx {
                        let base = (r * d + k as usize) * inner;
                        o.extend_from_slice(&v[base..base + inner]);
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
            let mut v = Vec::with_capacity(idx.len() * depth);
            for &k in idx {
                for j in 0..*depth {
                    v.push(if k >= 0 && k as usize == j { *on } else { *off });
                }
            }
            Ok(CpuData::from_f64(dtype, &v))
        }
        Op::Pad { before, shape } => {
            let mut v = vec![0.0; numel(shape)];
            let st = strides(shape);
            let off: usize = before.iter().zip(&st).map(|(b, s)| b * s).sum();
            let src = a.cpu_data().to_f64();
            for (k, i) in crate::core::shape::StridedIter::new(a.shape(), &st, off).enumerate() {
                v[i] = src[k];
            }
            Ok(CpuData::from_f64(dtype, &v))
        }
        Op::GatherGrad { axis, dim } => {
            let CpuData::I32(idx) = a.cpu_data() else {
                unreachable!()
            };
            let dy = x[1].cpu_data().to_f64();
            let outer: usize = out[..*axis].iter().product();
            let inner: usize = out[axis + 1..].iter().product();
            let j = idx.len();
            let mut v = vec![0.0; numel(out)];
            for o in 0..outer {
                for (jj, &k) in idx.iter().enumerate() {
                    if k >= 0 && (k as usize) < *dim {
                        for b in 0..inner {
                            v[(o * dim + k as usize) * inner + b] += dy[(o * j + jj) * inner + b];
                        }
                    }
                }
            }
            Ok(CpuData::from_f64(dtype, &v))
        }
        _ => unreachable!(),
    }
}
