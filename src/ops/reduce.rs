//! Reductions along any axes with keepdims: sum, mean, max, min, prod, and
//! argmax / argmin along one axis (kernel: shaders/reduce.wgsl), as
//! functions (`tf.reduce_sum`, `tf.argmax`…) and [`Tensor`] methods.
//!
//! Axes are `isize` and may be negative; `None` reduces every axis; a
//! repeated or out-of-range axis is [`Error::InvalidArgument`]. Float and
//! int32 inputs keep their dtype (bool is [`Error::DType`]: cast it first).
//! Empty reductions give the identity, as TensorFlow: 0 for sum, 1 for prod,
//! `-inf` / `+inf` for max / min (the int32 extremes for int32), NaN for a
//! float mean.
//!
//! The attribute and the row planning shared with the kernels are in
//! [`crate::core::op::reduce`] (re-exported here).

pub use crate::core::op::reduce::*;

use super::{Op, Tol, exec};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::{self};
use crate::tensor::Tensor;

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

/// Gradient rules. Sum and mean spread dy back over the reduced axes; max
/// and min share it equally among the elements equal to the result (as TF);
/// prod gives each element the product of the others, zeros included.
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
        ReduceOp::Prod => {
            // y / x is 0 / 0 at a zero. With p the product of the nonzero
            // elements: no zero in the slice, p / x; one zero, p at it and
            // 0 elsewhere; more, 0 everywhere.
            let axes: Vec<isize> = axes.iter().map(|&d| d as isize).collect();
            let zero = super::binary::equal(a, &a.scalar_like(0.0)?)?;
            let safe = zero.where_(&a.scalar_like(1.0)?, a)?;
            let p = up(&safe.prod(Some(&axes), true)?)?;
            let zeros = up(&zero.cast(a.dtype())?.sum(Some(&axes), true)?)?;
            let none = super::binary::equal(&zeros, &a.scalar_like(0.0)?)?;
            let one = super::binary::equal(&zeros, &a.scalar_like(1.0)?)?;
            let at_zero = zero.where_(&p, &a.scalar_like(0.0)?)?;
            let others = none.where_(&p.div(&safe)?, &one.where_(&at_zero, &a.scalar_like(0.0)?)?)?;
            g.mul(&others)?
        }
    };
    Ok(vec![Some(dx)])
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

/// `tf.reduce_mean(x, axis, keepdims)`; `None` reduces every axis. An int32
/// mean truncates toward zero.
pub fn reduce_mean(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Mean, axes, keepdims)
}

/// `tf.reduce_max(x, axis, keepdims)`; `None` reduces every axis. NaN if
/// the slice holds one, as in TensorFlow. The gradient is shared equally
/// among tied maxima, as TensorFlow.
pub fn reduce_max(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Max, axes, keepdims)
}

/// `tf.reduce_min(x, axis, keepdims)`; `None` reduces every axis. NaN if
/// the slice holds one, as in TensorFlow. The gradient is shared equally
/// among tied minima, as TensorFlow.
pub fn reduce_min(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Min, axes, keepdims)
}

/// `tf.reduce_prod(x, axis, keepdims)`; `None` reduces every axis. The
/// gradient is `y / x`, so it is not finite where an input is 0.
pub fn reduce_prod(x: &Tensor, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
    reduce(x, ReduceOp::Prod, axes, keepdims)
}

/// `tf.argmax(x, axis)` as int32, with TensorFlow's rule on every device:
/// ties give the first index, NaN is skipped, and a slice with nothing
/// above the dtype's lowest value (all NaN or -inf) gives 0.
/// [`Error::InvalidArgument`] when the axis is empty.
pub fn argmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    let axis = shape::axis("argmax", axis, x.rank())?;
    exec(Op::ArgReduce { max: true, axis }, &[x])
}

/// `tf.argmin(x, axis)` as int32; NaN is skipped as [`argmax`] does, and a
/// slice with nothing below the dtype's highest value gives 0.
/// [`Error::InvalidArgument`] when the axis is empty.
pub fn argmin(x: &Tensor, axis: isize) -> Result<Tensor> {
    let axis = shape::axis("argmin", axis, x.rank())?;
    exec(Op::ArgReduce { max: false, axis }, &[x])
}

impl Tensor {
    /// [`reduce_sum`] of this tensor.
    pub fn sum(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_sum(self, axes, keepdims)
    }
    /// [`reduce_mean`] of this tensor.
    pub fn mean(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_mean(self, axes, keepdims)
    }
    /// [`reduce_max`] of this tensor.
    pub fn max(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_max(self, axes, keepdims)
    }
    /// [`reduce_min`] of this tensor.
    pub fn min(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_min(self, axes, keepdims)
    }
    /// [`reduce_prod`] of this tensor.
    pub fn prod(&self, axes: Option<&[isize]>, keepdims: bool) -> Result<Tensor> {
        reduce_prod(self, axes, keepdims)
    }
    /// [`argmax`] of this tensor (int32 indices).
    pub fn argmax(&self, axis: isize) -> Result<Tensor> {
        argmax(self, axis)
    }
    /// [`argmin`] of this tensor (int32 indices).
    pub fn argmin(&self, axis: isize) -> Result<Tensor> {
        argmin(self, axis)
    }
}
