//! Batched matmul with broadcast batch dimensions and transpose flags
//! (kernels: shaders/gemm.wgsl, the tiled core, with shaders/matmul.wgsl):
//! `tf.linalg.matmul`.
//!
//! a: `[..., M, K]` (or `[..., K, M]` with `transpose_a`), b: `[..., K, N]`
//! (or `[..., N, K]` with `transpose_b`); the batch dimensions broadcast and
//! the result is `[batch..., M, N]`. Both operands are float of one dtype
//! and of rank 2 or more; anything else is [`Error::DType`] or
//! [`Error::Shape`]. The transpose flags cost no copy on either device.
//!
//! The dimension arithmetic shared with the kernels is in
//! [`crate::core::op::matmul`].

use crate::core::op::matmul::*;

use super::{Op, Tol, exec};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::broadcast;
use crate::tensor::Tensor;

/// f32 sums of k products: rounding grows like sqrt(k) per partial sum of
/// size ~sqrt(k), so up to ~k ulps of the operands' scale in a long sum.
pub(crate) fn tolerance(op: &Op, x: &[&Tensor]) -> Tol {
    let k = match *op {
        Op::MatMul { ta, tb } => dims(ta, tb, x[0].shape(), x[1].shape()).2,
        _ => x[0].shape().last().copied().unwrap_or(0),
    };
    Tol::new(2e-6 * (k as f64).sqrt().max(1.0) + 2e-7 * k as f64, 1e-5)
}

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let Op::MatMul { ta, tb } = *op else {
        return infer_int8(x);
    };
    let (a, b) = (x[0], x[1]);
    if a.dtype() != b.dtype() || !a.dtype().is_float() {
        return Err(Error::dtype(
            "matmul",
            &[a.dtype(), b.dtype()],
            "needs two float tensors of one dtype",
        ));
    }
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::shape(
            "matmul",
            &[a.shape(), b.shape()],
            "both operands need rank >= 2",
        ));
    }
    let (m, n, ka, kb) = dims(ta, tb, a.shape(), b.shape());
    if ka != kb {
        return Err(Error::shape(
            "matmul",
            &[a.shape(), b.shape()],
            format!("inner dimensions differ: {ka} vs {kb} (transpose_a={ta}, transpose_b={tb})"),
        ));
    }
    let mut out = broadcast("matmul", &a.shape()[..a.rank() - 2], &b.shape()[..b.rank() - 2])?;
    out.push(m);
    out.push(n);
    Ok((out, a.dtype()))
}

/// `a [..., M, K]` f32 with int8 weights `[N, ceil(K / 4)]` and scales `[N]`.
fn infer_int8(x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let a = x[0];
    if a.dtype() != DType::F32 || a.rank() < 2 {
        return Err(Error::shape(
            "matmul_int8",
            &[a.shape(), x[1].shape(), x[2].shape()],
            "needs an f32 operand of rank >= 2",
        ));
    }
    let k = a.shape()[a.rank() - 1];
    let n = super::layout::check_int8("matmul_int8", x[1], x[2], None, k)?;
    let mut out = a.shape().to_vec();
    *out.last_mut().unwrap_or(&mut 0) = n;
    Ok((out, DType::F32))
}

/// TensorFlow's MatMulGrad for the four transpose cases, summed back over
/// broadcast batch dimensions. The int8 weights of `matmul_int8` are
/// constants: only its input gets a gradient.
pub(crate) fn grad(op: &Op, x: &[&Tensor], _y: &Tensor, dy: &Tensor, need: &[bool]) -> Result<Vec<Option<Tensor>>> {
    let wants = |i: usize| need.get(i).copied().unwrap_or(true);
    let Op::MatMul { ta, tb } = *op else {
        if !wants(0) {
            return Ok(vec![None, None, None]);
        }
        let k = x[0].shape().last().copied().unwrap_or(0);
        let w = super::layout::dequantize_int8(x[1], x[2], k)?;
        return Ok(vec![Some(matmul(dy, &w)?), None, None]);
    };
    let (a, b) = (x[0], x[1]);
    let da = || match (ta, tb) {
        (false, false) => matmul_t(dy, b, false, true),
        (false, true) => matmul_t(dy, b, false, false),
        (true, false) => matmul_t(b, dy, false, true),
        (true, true) => matmul_t(b, dy, true, true),
    };
    let db = || match (ta, tb) {
        (false, false) => matmul_t(a, dy, true, false),
        (false, true) => matmul_t(dy, a, true, false),
        (true, false) => matmul_t(a, dy, false, false),
        (true, true) => matmul_t(dy, a, true, true),
    };
    Ok(vec![
        if wants(0) {
            Some(super::sum_to(&da()?, a.shape())?)
        } else {
            None
        },
        if wants(1) {
            Some(super::sum_to(&db()?, b.shape())?)
        } else {
            None
        },
    ])
}

/// `tf.linalg.matmul(a, b, transpose_a, transpose_b)`.
pub fn matmul_t(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
    exec(
        Op::MatMul {
            ta: transpose_a,
            tb: transpose_b,
        },
        &[a, b],
    )
}

/// `tf.linalg.matmul(a, b)`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(a, b, false, false)
}

impl Tensor {
    /// [`matmul`]: `self @ other`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        matmul(self, other)
    }
    /// [`matmul_t`]: `self @ other` with either operand's last two axes
    /// transposed.
    pub fn matmul_t(&self, other: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
        matmul_t(self, other, transpose_a, transpose_b)
    }
}
