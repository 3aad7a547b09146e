//! Softmax, log-softmax and sparse softmax cross-entropy from logits
//! (kernel: shaders/softmax.wgsl): `tf.nn.softmax`, `tf.nn.log_softmax`,
//! `tf.nn.sparse_softmax_cross_entropy_with_logits`. Logits are float; rows
//! are shifted by their maximum first, so large logits do not overflow.
//!
//! The row view and label error shared with the kernels are in
//! [`crate::core::op::softmax`]; Keras' losses in `nn::losses`
//! build on these.

use super::{Op, Tol, exec};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::{self};
use crate::tensor::Tensor;

pub(crate) const TOL: Tol = Tol::new(2e-6, 2e-5);

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

/// Gradient rules: softmax dx = y (dy - sum(dy y)), log-softmax
/// dx = dy - exp(y) sum(dy), cross-entropy d logits = (softmax - onehot) dy,
/// and that rule's own (second derivatives) through the softmax's.
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
        // softmax(z) - onehot(labels): the one-hot is constant, so the
        // softmax's rule; none for the labels.
        Op::SparseXentGrad => {
            let p = softmax(x[0], -1)?;
            let dz = p.mul(&dy.sub(&dy.mul(&p)?.sum(Some(&[-1]), true)?)?)?;
            Ok(vec![Some(dz), None])
        }
        _ => Err(Error::arg(op.name(), "not a softmax op")),
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
    /// [`softmax`] along `axis` (negative counts from the end).
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        softmax(self, axis)
    }
    /// [`log_softmax`] along `axis` (negative counts from the end).
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        log_softmax(self, axis)
    }
}
