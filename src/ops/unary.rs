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
        // The rule dy * f'(v) as a function of its inputs [v, y, dy]: linear
        // in dy; through v it needs f'' (v may be the output y, which then
        // carries the gradient on to x).
        Op::UnaryGrad(u) => {
            let (v, fy, dy_in) = (x[0], x[1], x[2]);
            let d_dy = exec(Op::UnaryGrad(*u), &[v, fy, dy])?;
            let d_v = match second(*u, v)? {
                Some(s) => Some(s.mul(dy_in)?.mul(dy)?),
                None => None,
            };
            Ok(vec![d_v, None, Some(d_dy)])
        }
        _ => Err(Error::arg(op.name(), "not an elementwise op")),
    }
}

/// The derivative, with respect to `v`, of the gradient rule's f'(v) (v is
/// the output where [`UnaryOp::grad_from_output`]: then of f' written in
/// the output); `None` where it is 0.
fn second(u: UnaryOp, v: &Tensor) -> Result<Option<Tensor>> {
    let sigmoid_slope = |s: &Tensor| -> Result<Tensor> { s.mul(&s.neg()?.add_scalar(1.0)?) };
    // φ(v), the standard normal density.
    let pdf =
        |v: &Tensor| -> Result<Tensor> { v.square()?.mul_scalar(-0.5)?.exp()?.mul_scalar(0.398_942_280_401_432_7) };
    Ok(Some(match u {
        UnaryOp::Neg
        | UnaryOp::Abs
        | UnaryOp::Sign
        | UnaryOp::Floor
        | UnaryOp::Ceil
        | UnaryOp::Round
        | UnaryOp::Relu
        | UnaryOp::Relu6
        | UnaryOp::LeakyRelu(_) => return Ok(None),
        // f' = y and y + 1.
        UnaryOp::Exp | UnaryOp::Expm1 => v.ones_like()?,
        // f' = 1/x and 1/(1 + x).
        UnaryOp::Log => v.square()?.reciprocal()?.neg()?,
        UnaryOp::Log1p => v.add_scalar(1.0)?.square()?.reciprocal()?.neg()?,
        // f' = 0.5 / y, -0.5 y^3, -y^2 (y the output).
        UnaryOp::Sqrt => v.square()?.reciprocal()?.mul_scalar(-0.5)?,
        UnaryOp::Rsqrt => v.square()?.mul_scalar(-1.5)?,
        UnaryOp::Reciprocal => v.mul_scalar(-2.0)?,
        UnaryOp::Square => v.ones_like()?.mul_scalar(2.0)?,
        UnaryOp::Sin => v.sin()?.neg()?,
        UnaryOp::Cos => v.cos()?.neg()?,
        // f' = 1 - y^2 and y (1 - y).
        UnaryOp::Tanh => v.mul_scalar(-2.0)?,
        UnaryOp::Sigmoid => v.mul_scalar(-2.0)?.add_scalar(1.0)?,
        // f' = y + const below 0 (on the output), a constant above.
        UnaryOp::Elu | UnaryOp::Selu => v.less(&v.zeros_like()?)?.cast(v.dtype())?,
        UnaryOp::Softplus => sigmoid_slope(&v.sigmoid()?)?,
        // f' = (1 + |x|)^-2.
        UnaryOp::Softsign => v
            .sign()?
            .mul_scalar(-2.0)?
            .div(&v.abs()?.add_scalar(1.0)?.pow_scalar(3.0)?)?,
        // f' = Φ + x φ, f'' = φ (2 - x^2).
        UnaryOp::Gelu => pdf(v)?.mul(&v.square()?.neg()?.add_scalar(2.0)?)?,
        UnaryOp::GeluTanh => {
            // t = tanh(c (x + a x^3)); f' = (1 + t) / 2 + x t' / 2 with
            // t' = (1 - t^2) u', u' = c (1 + 3 a x^2); f'' = t' + x t'' / 2.
            let (c, a) = (0.797_884_560_802_865_4, 0.044715);
            let x2 = v.square()?;
            let t = v.add(&v.mul(&x2)?.mul_scalar(a)?)?.mul_scalar(c)?.tanh()?;
            let sech2 = t.square()?.neg()?.add_scalar(1.0)?;
            let du = x2.mul_scalar(3.0 * a)?.add_scalar(1.0)?.mul_scalar(c)?;
            let dt = sech2.mul(&du)?;
            let ddu = v.mul_scalar(6.0 * a * c)?;
            let ddt = t.mul(&dt)?.mul(&du)?.mul_scalar(-2.0)?.add(&sech2.mul(&ddu)?)?;
            dt.add(&v.mul(&ddt)?.mul_scalar(0.5)?)?
        }
        // f' = σ (1 + x (1 - σ)), f'' = σ (1 - σ) (2 + x (1 - 2σ)).
        UnaryOp::Silu => {
            let s = v.sigmoid()?;
            let k = s.mul_scalar(-2.0)?.add_scalar(1.0)?.mul(v)?.add_scalar(2.0)?;
            sigmoid_slope(&s)?.mul(&k)?
        }
        // f' = 2/√π e^(-x^2), f'' = -2 x f'.
        UnaryOp::Erf => v
            .square()?
            .neg()?
            .exp()?
            .mul(v)?
            .mul_scalar(-4.0 / std::f64::consts::PI.sqrt())?,
    }))
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
