//! Elementwise unary math on float tensors (kernel: shaders/unary.wgsl):
//! `tf.math.exp`, `tf.nn.relu`, `tf.nn.gelu`… as functions and as [`Tensor`]
//! methods. They take f32, f16 or f64 and keep the dtype; an int32 or bool
//! input is [`Error::DType`], except for `neg`, `abs`, `square` and `sign`,
//! which also take int32. Each gradient is one fused `dy * f'(x)` kernel.
//!
//! The op codes and element semantics are in [`crate::core::op::unary`]
//! (re-exported here).

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
        Op::Unary(u) => {
            let v = if u.grad_from_output() { y } else { x[0] };
            Ok(vec![Some(exec(Op::UnaryGrad(*u), &[v, y, dy])?)])
        }
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

/// Defines `fn $f(x)` and `Tensor::$f(&self)` for each unary op, documented
/// with its TensorFlow name and meaning.
macro_rules! unary_fns {
    ($($f:ident => $v:ident: $doc:literal),* $(,)?) => {
        $(
            #[doc = $doc]
            pub fn $f(x: &Tensor) -> Result<Tensor> {
                unary(x, UnaryOp::$v)
            }
        )*
        impl Tensor {
            $(
                #[doc = $doc]
                pub fn $f(&self) -> Result<Tensor> {
                    $f(self)
                }
            )*
        }
    };
}

unary_fns! {
    exp => Exp: "`tf.math.exp`: `e^x` elementwise.",
    expm1 => Expm1: "`tf.math.expm1`: `e^x - 1`, accurate near 0.",
    log => Log: "`tf.math.log`: natural log; `-inf` at 0, NaN below 0.",
    log1p => Log1p: "`tf.math.log1p`: `ln(1 + x)`, accurate near 0.",
    sqrt => Sqrt: "`tf.math.sqrt`; NaN below 0.",
    rsqrt => Rsqrt: "`tf.math.rsqrt`: `1 / sqrt(x)`; `inf` at 0.",
    reciprocal => Reciprocal: "`tf.math.reciprocal`: `1 / x`; `±inf` at ±0.",
    sin => Sin: "`tf.math.sin` (radians).",
    cos => Cos: "`tf.math.cos` (radians).",
    tanh => Tanh: "`tf.math.tanh`.",
    sigmoid => Sigmoid: "`tf.math.sigmoid`: `1 / (1 + e^-x)`.",
    relu => Relu: "`tf.nn.relu`: `max(x, 0)`.",
    relu6 => Relu6: "`tf.nn.relu6`: `min(max(x, 0), 6)`.",
    elu => Elu: "`tf.nn.elu`: `x` above 0, `e^x - 1` below.",
    selu => Selu: "`tf.nn.selu`: scaled ELU with the self-normalizing constants.",
    softplus => Softplus: "`tf.math.softplus`: `ln(1 + e^x)`, without overflow.",
    softsign => Softsign: "`tf.nn.softsign`: `x / (1 + |x|)`.",
    gelu => Gelu: "`tf.nn.gelu` (exact, `approximate=False`): `0.5 x (1 + erf(x / sqrt 2))`.",
    gelu_tanh => GeluTanh: "`tf.nn.gelu(x, approximate=True)`: GELU's tanh approximation.",
    silu => Silu: "`tf.nn.silu` (swish): `x * sigmoid(x)`.",
    floor => Floor: "`tf.math.floor`; its gradient is 0.",
    ceil => Ceil: "`tf.math.ceil`; its gradient is 0.",
    round => Round: "`tf.math.round`: half to even (2.5 → 2); its gradient is 0.",
    erf => Erf: "`tf.math.erf`: the Gauss error function.",
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
    /// `tf.negative` (float or int32); also the `-` operator.
    pub fn neg(&self) -> Result<Tensor> {
        neg(self)
    }
    /// `tf.abs` (float or int32).
    pub fn abs(&self) -> Result<Tensor> {
        abs(self)
    }
    /// `tf.square` (float or int32).
    pub fn square(&self) -> Result<Tensor> {
        square(self)
    }
    /// `tf.sign` (float or int32): -1, 0 or 1.
    pub fn sign(&self) -> Result<Tensor> {
        sign(self)
    }
    /// `tf.nn.leaky_relu(x, alpha)`: `x` above 0, `alpha * x` below.
    pub fn leaky_relu(&self, alpha: f32) -> Result<Tensor> {
        leaky_relu(self, alpha)
    }
}
