//! Reductions along any axes with keepdims: sum, mean, max, min, prod, and
//! argmax / argmin along one axis (kernel: shaders/reduce.wgsl): the
//! [`ReduceOp`] attribute and the row planning the kernels share.
//!
//! The GPU views the input as `[rows, r, inner]` when the reduced axes are
//! one contiguous block, and otherwise first moves them last with a copy.
//! Empty reductions give the identity, as TensorFlow: 0 for sum, 1 for
//! prod, `-inf` / `+inf` for max / min (`i32::MIN` / `i32::MAX` for int32),
//! NaN for a float mean and 0 for an int32 mean.
//!
//! Part of [`crate::core::op`]; the public functions (`reduce_sum`,
//! `argmax`, …) and gradient rules are in `ops::reduce`.

use super::Op;
use crate::core::dtype::DType;

/// The discriminant is the shader's op code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// `tf.reduce_sum`.
    Sum,
    /// `tf.reduce_mean`; int32 means truncate.
    Mean,
    /// `tf.reduce_max`.
    Max,
    /// `tf.reduce_min`.
    Min,
    /// `tf.reduce_prod`.
    Prod,
}

impl ReduceOp {
    /// `"reduce_sum"`, `"reduce_mean"`, …: the TensorFlow op name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Mean => "reduce_mean",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
            ReduceOp::Prod => "reduce_prod",
        }
    }
    pub(crate) fn empty_value(self, dtype: DType) -> f64 {
        let int = dtype == DType::I32;
        match self {
            ReduceOp::Sum => 0.0,
            ReduceOp::Prod => 1.0,
            ReduceOp::Mean => {
                if int {
                    0.0
                } else {
                    f64::NAN
                }
            }
            ReduceOp::Max => {
                if int {
                    i32::MIN as f64
                } else {
                    f64::NEG_INFINITY
                }
            }
            ReduceOp::Min => {
                if int {
                    i32::MAX as f64
                } else {
                    f64::INFINITY
                }
            }
        }
    }
}

/// The reduced axes of the op (one for arg ops).
pub(crate) fn axes_of(op: &Op) -> Vec<usize> {
    match op {
        Op::Reduce { axes, .. } => axes.clone(),
        Op::ArgReduce { axis, .. } => vec![*axis],
        _ => unreachable!(),
    }
}

/// (kept-axes size, reduced size) after moving the reduced axes last, and the permutation.
pub(crate) fn plan(sh: &[usize], axes: &[usize]) -> (usize, usize, Vec<usize>) {
    let kept: Vec<usize> = (0..sh.len()).filter(|d| !axes.contains(d)).collect();
    let rows = kept.iter().map(|&d| sh[d]).product();
    let r = axes.iter().map(|&d| sh[d]).product();
    let mut perm = kept;
    perm.extend_from_slice(axes);
    (rows, r, perm)
}
