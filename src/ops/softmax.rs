//! Softmax, log-softmax and sparse softmax cross-entropy from logits
//! (kernel: shaders/softmax.wgsl).

use super::{Op, Tol, exec};
use crate::device::cpu::CpuData;
use crate::device::gpu::{GpuDevice, KType, Kernel, Launch, grid, status_slot};
use crate::device::memory::GpuBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{self, numel};
use crate::tensor::Tensor;
use rayon::prelude::*;

pub static SOFTMAX: Kernel = Kernel {
    name: "softmax",
    sources: &[
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/softmax.wgsl"),
    ],
    types: &[KType::F32, KType::F16],
};

pub(crate) const TOL: Tol = Tol::new(2e-6, 2e-5);

/// The error an out-of-range label gives on either device.
pub(crate) fn label_error(value: i32, classes: u32) -> Error {
    Error::arg(
        "sparse_softmax_cross_entropy_with_logits",
        format!("label {value} is out of range [0, {classes})"),
    )
}

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = op.name();
    let a = x[0];
    if !a.dtype().is_float() {
        return Err(Error::dtype(name, &[a.dtype()], "logits must be float"));
    }
    match op {
        Op::Softmax { .. } => Ok((a.shape().to_vec(), a.dtype())),
        _ => {
            let l = x[1];
            if l.dtype() != DType::I32 {
                return Err(Error::dtype(name, &[a.dtype(), l.dtype()], "labels must be int32"));
            }
            if a.rank() != 2 || l.rank() != 1 || l.shape()[0] != a.shape()[0] {
                return Err(Error::shape(
                    name,
                    &[a.shape(), l.shape()],
                    "needs logits [n, classes] and labels [n]",
                ));
            }
            if a.shape()[1] == 0 && a.shape()[0] > 0 {
                return Err(Error::shape(name, &[a.shape(), l.shape()], "needs at least one class"));
            }
            let out = if let Op::SparseXent = op {
                vec![a.shape()[0]]
            } else {
                a.shape().to_vec()
            };
            Ok((out, a.dtype()))
        }
    }
}

/// [rows, r, inner] view of a softmax along `axis`.
fn view(sh: &[usize], axis: usize) -> (usize, usize, usize) {
    (sh[..axis].iter().product(), sh[axis], sh[axis + 1..].iter().product())
}

pub(crate) fn cpu(op: &Op, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<CpuData> {
    let v = x[0].cpu_data().to_f64();
    let (rows, r, inner) = match op {
        Op::Softmax { axis, .. } => view(x[0].shape(), *axis),
        _ => (x[0].shape()[0], x[0].shape()[1], 1),
    };
    let stats = |base: usize| {
        let m = (0..r).map(|k| v[base + k * inner]).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = (0..r).map(|k| (v[base + k * inner] - m).exp()).sum();
        (m, s)
    };
    let mut y = vec![0.0; numel(out)];
    match op {
        Op::Softmax { log, .. } => {
            if y.is_empty() {
                return Ok(CpuData::from_f64(dtype, &y));
            }
            // Rows in parallel: each owns a block of r * inner outputs.
            y.par_chunks_mut(r * inner).enumerate().for_each(|(row, yr)| {
                for b in 0..inner {
                    let base = row * r * inner + b;
                    let (m, s) = stats(base);
                    for k in 0..r {
                        let z = v[base + k * inner] - m;
                        yr[b + k * inner] = if *log { z - s.ln() } else { z.exp() / s };
                    }
                }
            });
        }
        _ => {
            let CpuData::I32(labels) = x[1].cpu_data() else {
                unreachable!()
            };
            if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= r) {
                return Err(label_error(bad, r as u32));
            }
            for row in 0..rows {
                let (m, s) = stats(row * r);
                let l = labels[row] as usize;
                if let Op::SparseXent = op {
                    y[row] = s.ln() + m - v[row * r + l];
                } else {
                    for k in 0..r {
                        y[row * r + k] = (v[row * r + k] - m).exp() / s - (k == l) as u8 as f64;
                    }
                }
            }
        }
    }
    Ok(CpuData::from_f64(dtype, &y))
}

pub(crate) fn gpu(op: &Op, g: &GpuDevice, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let n = numel(out);
    let y = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    if n == 0 {
        return Ok(y);
    }
    let ty = super::ktype(dtype);
    match op {
        Op::Softmax { axis, log } => {
            let (rows, r, inner) = view(x[0].shape(), *axis);
            let (entry, groups) = if inner == 1 && !g.cpu_adapter() {
                ("softmax_rows", super::reduce::fold(rows))
            } else {
                ("softmax_cols", grid(rows * inner, 256))
            };
            g.launch(&Launch {
                kernel: &SOFTMAX,
                entry,
                ty,
                consts: &[],
                params: &[
                    rows as u32,
                    r as u32,
                    inner as u32,
                    (rows * inner) as u32,
                    0,
                    *log as u32,
                    0,
                    0,
                ],
                bufs: &[x[0].gpu_buf(), &y],
                groups,
            })?;
        }
        _ => {
            let (rows, r) = (x[0].shape()[0], x[0].shape()[1]);
            g.launch(&Launch {
                kernel: &SOFTMAX,
                entry: if let Op::SparseXent = op {
                    "xent_rows"
                } else {
                    "xent_grad_rows"
                },
                ty,
                consts: &[],
                params: &[rows as u32, r as u32, 1, rows as u32, status_slot(), 0, 0, 0],
                bufs: &[x[0].gpu_buf(), &y, x[1].gpu_buf(), g.status()],
                groups: super::reduce::fold(rows),
            })?;
        }
    }
    Ok(y)
}

/// Gradient rules: softmax dx = y (dy - sum(dy y)), log-softmax
/// dx = dy - exp(y) sum(dy), cross-entropy d logits = (softmax - onehot) dy.
pub(crate) fn grad(op: &Op, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
    match op {
        Op::Softmax { axis, log } => {
            let ax = [*axis as isize];
            let dx = if *log {
                dy.sub(&y.exp()?.mul(&dy.sum(Some(&ax), true)?)?)?
            } else {
                y.mul(&dy.sub(&dy.mul(y)?.sum(Some(&ax), true)?)?)?
            };
            Ok(vec![Some(dx)])
        }
        Op::SparseXent => {
            let g = exec(Op::SparseXentGrad, &[x[0], x[1]])?;
            Ok(vec![Some(g.mul(&dy.expand_dims(-1)?)?), None])
        }
        _ => Err(Error::arg(
            op.name(),
            "the second derivative of the cross-entropy is not implemented",
        )),
    }
}

// ---- public API ----------------------------------------------------------

/// `tf.nn.softmax(logits, axis)`.
pub fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    let axis = shape::axis("softmax", axis, x.rank())?;
    exec(Op::Softmax { axis, log: false }, &[x])
}

/// `tf.nn.log_softmax(logits, axis)`.
pub fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    let axis = shape::axis("log_softmax", axis, x.rank())?;
    exec(Op::Softmax { axis, log: true }, &[x])
}

/// `tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)`: the loss
/// of each example. Labels outside [0, classes) are an error on every device
/// (on a GPU, reported by the next readback).
pub fn sparse_softmax_cross_entropy_with_logits(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    exec(Op::SparseXent, &[logits, labels])
}

/// d loss / d logits of the sparse cross-entropy: softmax(logits) - one_hot(labels).
pub fn sparse_softmax_cross_entropy_grad(labels: &Tensor, logits: &Tensor) -> Result<Tensor> {
    exec(Op::SparseXentGrad, &[logits, labels])
}

impl Tensor {
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        softmax(self, axis)
    }
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        log_softmax(self, axis)
    }
}
