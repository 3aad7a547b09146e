//! Fused optimizer steps (kernel: shaders/optimizer.wgsl): one kernel per
//! variable reads the variable, gradient and slots and writes their new
//! values, as new tensors (the optimizer assigns them).
//! `nn::optimizers` builds the [`Update`]s and runs them as
//! multi-output ops; this file holds their shape rule, and
//! [`crate::core::op::optim`] (re-exported here) their math.

pub use crate::core::op::optim::*;

use super::{Op, Tol};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;

pub(crate) const TOL: Tol = Tol::new(1e-6, 1e-5);

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let Op::Optimizer(u) = op else { unreachable!() };
    let want = 3 + u.slots() + u.clip.is_some() as usize;
    let var = x[0];
    if x.len() != want {
        return Err(Error::arg(u.name(), format!("takes {want} inputs, got {}", x.len())));
    }
    if !var.dtype().is_float() {
        return Err(Error::dtype(u.name(), &[var.dtype()], "variables must be float"));
    }
    for t in &x[1..2 + u.slots()] {
        if t.shape() != var.shape() || t.dtype() != var.dtype() {
            return Err(Error::shape(
                u.name(),
                &[var.shape(), t.shape()],
                format!(
                    "the gradient and slots must match the variable ({} {:?})",
                    var.dtype(),
                    var.shape()
                ),
            ));
        }
    }
    let h = x[2 + u.slots()];
    if h.numel() != 2 || h.dtype() != DType::F32 {
        return Err(Error::shape(
            u.name(),
            &[h.shape()],
            "the hyper-parameters must be two float32 (learning rate, Adam's rate)",
        ));
    }
    if u.clip.is_some() {
        let n = x[want - 1];
        if n.numel() != 1 || n.dtype() != DType::F32 {
            return Err(Error::shape(
                u.name(),
                &[n.shape()],
                "the gradient norm must be one float32",
            ));
        }
    }
    Ok((var.shape().to_vec(), var.dtype()))
}
