//! Elementwise unary math on float tensors (kernel: shaders/unary.wgsl).

pub use crate::core::op::unary::*;

use super::{Op, Tol, exec};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let a = x[0];
    if !a.dtype().is_float() {
        return Err(Error::dtype(op.name(), &[a.dtype()], "needs a float tensor"));
    }
    if let Op::UnaryGrad(_) = op {
        if x.iter().any(|t| t.shape() != a.shape() || t.dtype() != a.dtype()) {
            let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape()).collect();
            return Err(Error::shape(
                op.name(),
                &shapes,
                "x, f(x) and dy must have one shape and dtype",
            ));
        }
    }
    Ok((a.shape().to_vec(), a.dtype()))
}

/// dx = dy * f'(x), one fused kernel.
pub(crate) fn grad(op: &Op, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
    match op {
        Op::Unary(u) => Ok(vec![Some(exec(Op::UnaryGrad(*u), &[x[0], y, dy])?)]),
        // The rule's own gradient would need f''; it is not provided.
        _ => Err(Error::arg(
            op.name(),
            "second derivatives of elementwise ops are not implemented",
        )),
    }
}

pub(crate) fn tolerance(op: &Op) -> Tol {
    match op {
        // The GPU's erf is a 1.5e-7 approximation; exp-based ops carry a few ulps.
        Op::Unary(UnaryOp::Gelu | UnaryOp::Erf) => Tol::new(1e-6, 1e-5),
        _ => Tol::new(1e-6, 2e-6 * 8.0),
    }
}

/// Applies `op` elementwise.
pub fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    exec(Op::Unary(op), &[x])
}

macro_rules! unary_fns {
    ($($f:ident => $v:ident),* $(,)?) => {
        $(
            #[doc = concat!("`tf.math.", stringify!($f), "`, elementwise.")]
            pub fn $f(x: &Tensor) -> Result<Tensor> {
                unary(x, UnaryOp::$v)
            }
        )*
        impl Tensor {
            $(
                #[doc = concat!("`tf.math.", stringify!($f), "`, elementwise.")]
                pub fn $f(&self) -> Result<Tensor> {
                    $f(self)
                }
            )*
        }
    };
}

unary_fns! {
    exp => Exp, expm1 => Expm1, log => Log, log1p => Log1p, sqrt => Sqrt, rsqrt => Rsqrt,
    reciprocal => Reciprocal, sin => Sin, cos => Cos, tanh => Tanh, sigmoid => Sigmoid, relu => Relu,
    relu6 => Relu6, elu => Elu, selu => Selu, softplus => Softplus, softsign => Softsign, gelu => Gelu,
    gelu_tanh => GeluTanh, silu => Silu, floor => Floor, ceil => Ceil, round => Round, erf => Erf,
}

/// `tf.nn.leaky_relu(x, alpha)`.
pub fn leaky_relu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(x, UnaryOp::LeakyRelu(alpha))
}

/// Integer tensors take neg, abs, sign and square through binary ops.
fn int_or(x: &Tensor, op: UnaryOp, int: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if x.dtype() == DType::I32 { int(x) } else { unary(x, op) }
}

/// `tf.negative` (float or int32).
pub fn neg(x: &Tensor) -> Result<Tensor> {
    int_or(x, UnaryOp::Neg, |x| super::binary::sub(&x.zeros_like()?, x))
}

/// `tf.abs` (float or int32).
pub fn abs(x: &Tensor) -> Result<Tensor> {
    int_or(x, UnaryOp::Abs, |x| super::binary::maximum(x, &neg(x)?))
}

/// `tf.square` (float or int32).
pub fn square(x: &Tensor) -> Result<Tensor> {
    int_or(x, UnaryOp::Square, |x| super::binary::mul(x, x))
}

/// `tf.sign` (float or int32).
pub fn sign(x: &Tensor) -> Result<Tensor> {
    int_or(x, UnaryOp::Sign, |x| {
        let z = x.zeros_like()?;
        let pos = super::binary::greater(x, &z)?.cast(DType::I32)?;
        let negv = super::binary::less(x, &z)?.cast(DType::I32)?;
        super::binary::sub(&pos, &negv)
    })
}

impl Tensor {
    pub fn neg(&self) -> Result<Tensor> {
        neg(self)
    }
    pub fn abs(&self) -> Result<Tensor> {
        abs(self)
    }
    pub fn square(&self) -> Result<Tensor> {
        square(self)
    }
    pub fn sign(&self) -> Result<Tensor> {
        sign(self)
    }
    pub fn leaky_relu(&self, alpha: f32) -> Result<Tensor> {
        leaky_relu(self, alpha)
    }
}
