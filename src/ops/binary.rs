//! Elementwise binary ops with NumPy broadcasting, comparisons and `where`
//! (kernel: shaders/binary.wgsl): `tf.math.add`, `tf.math.equal`,
//! `tf.where`… as functions and as [`Tensor`] methods, with `+ - * /`
//! operators that panic on error.
//!
//! Operands must share a dtype, as in TensorFlow (no implicit promotion):
//! arithmetic takes float or int32, logical ops bool, comparisons any
//! dtype and return bool. Integer arithmetic wraps on overflow and
//! `x / 0` gives `x`, which is what WGSL defines; integer division truncates
//! toward zero. Gradients are summed back over broadcast dimensions; int32
//! and bool operands get none.
//!
//! The op attributes and their element semantics are in
//! [`crate::core::op::binary`] (re-exported here).

pub use crate::core::op::binary::*;

use super::{Op, Tol, exec};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::shape::broadcast;
use crate::tensor::Tensor;

pub(crate) const TOL: Tol = Tol::new(1e-6, 1e-5);

pub(crate) fn infer(op: &Op, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = op.name();
    let dtypes: Vec<DType> = x.iter().map(|t| t.dtype()).collect();
    let (a, b) = match op {
        Op::Where => {
            if x[0].dtype() != DType::Bool {
                return Err(Error::dtype(name, &dtypes, "the condition must be bool"));
            }
            (x[1], x[2])
        }
        _ => (x[0], x[1]),
    };
    if a.dtype() != b.dtype() {
        return Err(Error::dtype(
            name,
            &dtypes,
            "operands must have the same dtype; cast one of them",
        ));
    }
    let dt = a.dtype();
    match op {
        Op::Binary(b) if b.logical() && dt != DType::Bool => {
            return Err(Error::dtype(name, &dtypes, "logical ops need bool operands"));
        }
        Op::Binary(b) if !b.logical() && dt == DType::Bool => {
            return Err(Error::dtype(
                name,
                &dtypes,
                "arithmetic needs numeric operands; use logical_* on bool",
            ));
        }
        _ => {}
    }
    let mut shape = broadcast(name, a.shape(), b.shape())?;
    if let Op::Where = op {
        shape = broadcast(name, x[0].shape(), &shape)?;
    }
    let out = match op {
        Op::Compare(_) => DType::Bool,
        _ => dt,
    };
    Ok((shape, out))
}

/// Gradients of a, b (and the condition for `where`), reduced back over
/// broadcast dimensions. Integer and boolean operands get none.
pub(crate) fn grad(op: &Op, x: &[&Tensor], y: &Tensor, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
    use super::sum_to;
    let to = |g: Tensor, t: &Tensor| sum_to(&g, t.shape()).map(Some);
    match op {
        Op::Compare(_) => Ok(vec![None, None]),
        Op::Where => {
            let z = dy.zeros_like()?;
            Ok(vec![
                None,
                to(where_(x[0], dy, &z)?, x[1])?,
                to(where_(x[0], &z, dy)?, x[2])?,
            ])
        }
        Op::Binary(b) => {
            let (a, c) = (x[0], x[1]);
            if !a.dtype().is_float() {
                return Ok(vec![None, None]);
            }
            let (ga, gc) = match b {
                BinaryOp::Add => (dy.clone(), dy.clone()),
                BinaryOp::Sub => (dy.clone(), super::unary::neg(dy)?),
                BinaryOp::Mul => (mul(dy, c)?, mul(dy, a)?),
                BinaryOp::Div => (div(dy, c)?, super::unary::neg(&div(&mul(dy, y)?, c)?)?),
                BinaryOp::Pow => {
                    // d/da = b a^(b-1) = b y / a; d/db = y log a, taken as 0 where a <= 0.
                    let ga = mul(dy, &mul(c, &pow(a, &c.sub_scalar(1.0)?)?)?)?;
                    let pos = greater(a, &a.zeros_like()?)?;
                    let safe = where_(&pos, a, &a.ones_like()?)?;
                    let gc = mul(dy, &mul(y, &where_(&pos, &safe.log()?, &a.zeros_like()?)?)?)?;
                    (ga, gc)
                }
                BinaryOp::Maximum | BinaryOp::Minimum => {
                    // Ties go to the first operand, as in TensorFlow.
                    let m = if *b == BinaryOp::Maximum {
                        greater_equal(a, c)?
                    } else {
                        less_equal(a, c)?
                    };
                    let z = dy.zeros_like()?;
                    (where_(&m, dy, &z)?, where_(&m, &z, dy)?)
                }
                BinaryOp::SquaredDifference => {
                    let d = mul(&sub(a, c)?, dy)?.mul_scalar(2.0)?;
                    (d.clone(), super::unary::neg(&d)?)
                }
                _ => return Ok(vec![None, None]),
            };
            Ok(vec![to(ga, a)?, to(gc, c)?])
        }
        _ => unreachable!(),
    }
}

// ---- public API ----------------------------------------------------------

/// Applies `op` elementwise with broadcasting; the named functions (`add`,
/// `pow`, …) call this. [`Error::DType`] when the dtypes differ or do not
/// suit the op, [`Error::Shape`] when the shapes do not broadcast.
pub fn binary(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    exec(Op::Binary(op), &[a, b])
}

/// Compares elementwise with broadcasting; a bool tensor. Errors as
/// [`binary`].
pub fn compare(a: &Tensor, b: &Tensor, op: CmpOp) -> Result<Tensor> {
    exec(Op::Compare(op), &[a, b])
}

/// `tf.where(cond, a, b)`: elements of `a` where `cond` is true, else of `b`.
pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    exec(Op::Where, &[cond, a, b])
}

/// Defines `fn $f(a, b)` and `Tensor::$f(&self, other)` for each op,
/// documented with its TensorFlow name and meaning.
macro_rules! binary_fns {
    ($kind:ident, $fn:ident: $($f:ident => $v:ident: $doc:literal),* $(,)?) => {
        $(
            #[doc = concat!($doc, " Broadcasts; both operands share a dtype.")]
            pub fn $f(a: &Tensor, b: &Tensor) -> Result<Tensor> {
                $fn(a, b, $kind::$v)
            }
        )*
        impl Tensor {
            $(
                #[doc = concat!($doc, " Broadcasts; both operands share a dtype.")]
                pub fn $f(&self, other: &Tensor) -> Result<Tensor> {
                    $fn(self, other, $kind::$v)
                }
            )*
        }
    };
}

binary_fns!(BinaryOp, binary:
    add => Add: "`tf.math.add`: `a + b`.",
    sub => Sub: "`tf.math.subtract`: `a - b`.",
    mul => Mul: "`tf.math.multiply`: `a * b`.",
    div => Div: "`tf.math.divide`: `a / b`; int32 truncates toward zero (TensorFlow's `Div`), and a zero divisor is an `InvalidArgument` error (on a GPU, at the next readback).",
    pow => Pow: "`tf.math.pow`: `a^b`; an int32 negative exponent is an `InvalidArgument` error (on a GPU, at the next readback).",
    maximum => Maximum: "`tf.math.maximum`; its gradient goes to `a` on ties.",
    minimum => Minimum: "`tf.math.minimum`; its gradient goes to `a` on ties.",
    squared_difference => SquaredDifference: "`tf.math.squared_difference`: `(a - b)^2`.",
    logical_and => LogicalAnd: "`tf.math.logical_and` of bool tensors.",
    logical_or => LogicalOr: "`tf.math.logical_or` of bool tensors.",
    logical_xor => LogicalXor: "`tf.math.logical_xor` of bool tensors.");

binary_fns!(CmpOp, compare:
    equal => Equal: "`tf.math.equal`: a bool tensor.",
    not_equal => NotEqual: "`tf.math.not_equal`: a bool tensor.",
    less => Less: "`tf.math.less`: a bool tensor.",
    less_equal => LessEqual: "`tf.math.less_equal`: a bool tensor.",
    greater => Greater: "`tf.math.greater`: a bool tensor.",
    greater_equal => GreaterEqual: "`tf.math.greater_equal`: a bool tensor.");

/// `tf.logical_not`.
pub fn logical_not(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::Bool {
        return Err(Error::dtype("logical_not", &[x.dtype()], "needs a bool tensor"));
    }
    equal(x, &x.zeros_like()?)
}

impl Tensor {
    /// A scalar of this tensor's dtype on its device.
    pub fn scalar_like(&self, v: f64) -> Result<Tensor> {
        crate::ops::creation::full(&[], v, self.dtype(), self.device())
    }
    /// `self + v`, with `v` converted to this tensor's dtype.
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        add(self, &self.scalar_like(v)?)
    }
    /// `self - v`, with `v` converted to this tensor's dtype.
    pub fn sub_scalar(&self, v: f64) -> Result<Tensor> {
        sub(self, &self.scalar_like(v)?)
    }
    /// `self * v`, with `v` converted to this tensor's dtype.
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        mul(self, &self.scalar_like(v)?)
    }
    /// `self / v`, with `v` converted to this tensor's dtype.
    pub fn div_scalar(&self, v: f64) -> Result<Tensor> {
        div(self, &self.scalar_like(v)?)
    }
    /// `self ^ v`, with `v` converted to this tensor's dtype.
    pub fn pow_scalar(&self, v: f64) -> Result<Tensor> {
        pow(self, &self.scalar_like(v)?)
    }
    /// `tf.where(self, a, b)`: `self` is the bool condition.
    pub fn where_(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        where_(self, a, b)
    }
    /// `tf.logical_not`; bool tensors only.
    pub fn logical_not(&self) -> Result<Tensor> {
        logical_not(self)
    }
}

macro_rules! operator {
    ($tr:ident, $m:ident, $f:ident) => {
        impl std::ops::$tr<&Tensor> for &Tensor {
            type Output = Tensor;
            /// Panics with the same message the fallible function returns.
            fn $m(self, rhs: &Tensor) -> Tensor {
                $f(self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<Tensor> for Tensor {
            type Output = Tensor;
            fn $m(self, rhs: Tensor) -> Tensor {
                $f(&self, &rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$tr<f64> for &Tensor {
            type Output = Tensor;
            fn $m(self, rhs: f64) -> Tensor {
                self.scalar_like(rhs)
                    .and_then(|s| $f(self, &s))
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        }
    };
}

operator!(Add, add, add);

operator!(Sub, sub, sub);

operator!(Mul, mul, mul);

operator!(Div, div, div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        super::unary::neg(self).unwrap_or_else(|e| panic!("{e}"))
    }
}
