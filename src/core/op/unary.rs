//! Elementwise unary math on float tensors (kernel: shaders/unary.wgsl):
//! the [`UnaryOp`] attribute and its per-element reference semantics
//! ([`UnaryOp::apply`], [`UnaryOp::derivative`]).
//!
//! Part of [`crate::core::op`]. The public functions (`exp`, `relu`, …) and
//! the shape and gradient rules are in `ops::unary`; the CPU
//! kernels in `runtime::cpu` call `apply` element by element.

use crate::core::float::Float;

/// The op; its position in this list is the shader's op code.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `-x` (`tf.math.negative`).
    Neg,
    /// `|x|`.
    Abs,
    /// -1, 0 or 1; NaN stays NaN and -0 stays -0.
    Sign,
    /// `e^x`.
    Exp,
    /// `e^x - 1`, accurate near 0.
    Expm1,
    /// Natural log; `-inf` at 0, NaN below 0.
    Log,
    /// `ln(1 + x)`, accurate near 0.
    Log1p,
    /// Square root; NaN below 0.
    Sqrt,
    /// `1 / sqrt(x)`; `inf` at 0.
    Rsqrt,
    /// `x * x`.
    Square,
    /// `1 / x`; `±inf` at ±0.
    Reciprocal,
    /// Sine (radians).
    Sin,
    /// Cosine (radians).
    Cos,
    /// Hyperbolic tangent.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x > 0`, else `e^x - 1`.
    Elu,
    /// `scale * elu(x, alpha)` with Klambauer et al.'s fixed constants.
    Selu,
    /// `ln(1 + e^x)`, computed without overflow.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (Keras' default).
    Gelu,
    /// GELU's tanh approximation (`approximate=True`).
    GeluTanh,
    /// `x * sigmoid(x)`, also called swish.
    Silu,
    /// Round toward -inf.
    Floor,
    /// Round toward +inf.
    Ceil,
    /// Half to even, as `tf.round`.
    Round,
    /// The Gauss error function.
    Erf,
    /// `x` for `x > 0`, else `alpha * x` (`tf.nn.leaky_relu`).
    LeakyRelu(f32),
}

impl UnaryOp {
    /// Every op once, in shader op-code order (`LeakyRelu` with a
    /// placeholder alpha): what the conformance suite iterates.
    pub const ALL: [UnaryOp; 29] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Exp,
        UnaryOp::Expm1,
        UnaryOp::Log,
        UnaryOp::Log1p,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Square,
        UnaryOp::Reciprocal,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Relu6,
        UnaryOp::Elu,
        UnaryOp::Selu,
        UnaryOp::Softplus,
        UnaryOp::Softsign,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Erf,
        UnaryOp::LeakyRelu(0.2),
    ];

    pub(crate) fn code(self) -> u32 {
        UnaryOp::ALL
            .iter()
            .position(|o| std::mem::discriminant(o) == std::mem::discriminant(&self))
            .unwrap() as u32
    }

    /// Whether the derivative is 0 wherever it is defined (sign, floor,
    /// ceil, round): the gradient is then dy * 0, NaN for a NaN or
    /// infinite dy.
    pub(crate) fn zero_derivative(self) -> bool {
        matches!(self, UnaryOp::Sign | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round)
    }

    /// The TensorFlow-style name (`"exp"`, `"leaky_relu"`), used in errors.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Exp => "exp",
            UnaryOp::Expm1 => "expm1",
            UnaryOp::Log => "log",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Square => "square",
            UnaryOp::Reciprocal => "reciprocal",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Relu6 => "relu6",
            UnaryOp::Elu => "elu",
            UnaryOp::Selu => "selu",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Softsign => "softsign",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Silu => "silu",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
            UnaryOp::Erf => "erf",
            UnaryOp::LeakyRelu(_) => "leaky_relu",
        }
    }

    /// The name of the op's gradient kernel ([`Op::UnaryGrad`](super::Op::UnaryGrad)): `name` + `"_grad"`.
    pub fn grad_name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg_grad",
            UnaryOp::Abs => "abs_grad",
            UnaryOp::Sign => "sign_grad",
            UnaryOp::Exp => "exp_grad",
            UnaryOp::Expm1 => "expm1_grad",
            UnaryOp::Log => "log_grad",
            UnaryOp::Log1p => "log1p_grad",
            UnaryOp::Sqrt => "sqrt_grad",
            UnaryOp::Rsqrt => "rsqrt_grad",
            UnaryOp::Square => "square_grad",
            UnaryOp::Reciprocal => "reciprocal_grad",
            UnaryOp::Sin => "sin_grad",
            UnaryOp::Cos => "cos_grad",
            UnaryOp::Tanh => "tanh_grad",
            UnaryOp::Sigmoid => "sigmoid_grad",
            UnaryOp::Relu => "relu_grad",
            UnaryOp::Relu6 => "relu6_grad",
            UnaryOp::Elu => "elu_grad",
            UnaryOp::Selu => "selu_grad",
            UnaryOp::Softplus => "softplus_grad",
            UnaryOp::Softsign => "softsign_grad",
            UnaryOp::Gelu => "gelu_grad",
            UnaryOp::GeluTanh => "gelu_tanh_grad",
            UnaryOp::Silu => "silu_grad",
            UnaryOp::Floor => "floor_grad",
            UnaryOp::Ceil => "ceil_grad",
            UnaryOp::Round => "round_grad",
            UnaryOp::Erf => "erf_grad",
            UnaryOp::LeakyRelu(_) => "leaky_relu_grad",
        }
    }

    /// Whether f'(v) is unchanged when the output stands in for the input
    /// (`derivative(r, r) == derivative(v, r)` for every v): the gradient
    /// then reads f(x) only, as TensorFlow's `ReluGrad`, `TanhGrad` and
    /// `SigmoidGrad` do. A traced step then neither keeps nor recomputes
    /// the pre-activation (a convolution's bias add) for the backward pass.
    pub fn grad_from_output(self) -> bool {
        // relu and relu6 test v > 0 (and v < 6), which their outputs pass
        // exactly when their inputs do; NaN fails both.
        matches!(
            self,
            UnaryOp::Exp
                | UnaryOp::Expm1
                | UnaryOp::Sqrt
                | UnaryOp::Rsqrt
                | UnaryOp::Reciprocal
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid
                | UnaryOp::Relu
                | UnaryOp::Relu6
                | UnaryOp::Elu
                | UnaryOp::Selu
        )
    }

    /// f'(v) given r = f(v): the CPU reference of the gradient rule.
    // Always inlined: with a constant op (`with_unary!`) the match folds
    // and the CPU kernels' loops vectorize.
    #[inline(always)]
    pub fn derivative<F: Float>(self, v: F, r: F) -> F {
        let one = F::ONE;
        let zero = F::ZERO;
        let sigmoid = |v: F| one / (one + (-v).exp());
        let step = |c: bool| if c { one } else { zero };
        match self {
            UnaryOp::Neg => -one,
            UnaryOp::Abs => UnaryOp::Sign.apply(v),
            UnaryOp::Sign | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => zero,
            UnaryOp::Exp => r,
            UnaryOp::Expm1 => r + one,
            UnaryOp::Log => one / v,
            UnaryOp::Log1p => one / (one + v),
            UnaryOp::Sqrt => F::of(0.5) / r,
            UnaryOp::Rsqrt => F::of(-0.5) * r * r * r,
            UnaryOp::Square => F::of(2.0) * v,
            UnaryOp::Reciprocal => -r * r,
            UnaryOp::Sin => v.cos(),
            UnaryOp::Cos => -v.sin(),
            UnaryOp::Tanh => one - r * r,
            UnaryOp::Sigmoid => r * (one - r),
            UnaryOp::Relu => step(v > zero),
            UnaryOp::Relu6 => step(v > zero && v < F::of(6.0)),
            // TensorFlow's EluGrad and SeluGrad branch on the output, so
            // 0 and NaN take the linear side.
            UnaryOp::Elu => {
                if r < zero {
                    r + one
                } else {
                    one
                }
            }
            UnaryOp::Selu => {
                let s = F::of(1.0507009873554805);
                if r < zero { r + s * F::of(1.6732632423543772) } else { s }
            }
            UnaryOp::Softplus => sigmoid(v),
            UnaryOp::Softsign => one / ((one + v.abs()) * (one + v.abs())),
            UnaryOp::Gelu => {
                let cdf = F::of(0.5) * (one + (v * F::of(std::f64::consts::FRAC_1_SQRT_2)).erf());
                // x φ(x); for |x| past ~13, e^(-x²/2) is 0 and NaN stays NaN.
                let pdf = (F::of(-0.5) * v * v).exp() * F::of(0.398_942_280_401_432_7);
                cdf + v * pdf
            }
            UnaryOp::GeluTanh => {
                let c = F::of(0.7978845608028654);
                let t = (c * (v + F::of(0.044715) * v * v * v)).tanh();
                F::of(0.5) * (one + t) + F::of(0.5) * v * (one - t * t) * c * (one + F::of(0.134145) * v * v)
            }
            UnaryOp::Silu => {
                let s = sigmoid(v);
                s + v * s * (one - s)
            }
            UnaryOp::Erf => F::of(2.0 / std::f64::consts::PI.sqrt()) * (-v * v).exp(),
            UnaryOp::LeakyRelu(a) => {
                if v > zero {
                    one
                } else {
                    F::of(a as f64)
                }
            }
        }
    }

    /// The CPU reference of one element: TensorFlow's values, special
    /// ones included. NaN gives NaN for every op (relu and sign too);
    /// x f(x) forms at -inf (gelu, gelu_tanh, silu) give -inf * 0 = NaN,
    /// as TensorFlow's own formulas do.
    #[inline(always)]
    pub fn apply<F: Float>(self, v: F) -> F {
        let one = F::ONE;
        let zero = F::ZERO;
        let sigmoid = |v: F| one / (one + (-v).exp());
        if v.is_nan() {
            return v;
        }
        match self {
            UnaryOp::Neg => -v,
            UnaryOp::Abs => v.abs(),
            UnaryOp::Sign => {
                if v > zero {
                    one
                } else if v < zero {
                    -one
                } else {
                    v
                }
            }
            UnaryOp::Exp => v.exp(),
            UnaryOp::Expm1 => v.exp_m1(),
            UnaryOp::Log => v.ln(),
            UnaryOp::Log1p => v.ln_1p(),
            UnaryOp::Sqrt => v.sqrt(),
            UnaryOp::Rsqrt => one / v.sqrt(),
            UnaryOp::Square => v * v,
            UnaryOp::Reciprocal => one / v,
            UnaryOp::Sin => v.sin(),
            UnaryOp::Cos => v.cos(),
            UnaryOp::Tanh => v.tanh(),
            UnaryOp::Sigmoid => sigmoid(v),
            UnaryOp::Relu => v.max(zero),
            UnaryOp::Relu6 => v.max(zero).min(F::of(6.0)),
            UnaryOp::Elu => {
                if v > zero {
                    v
                } else {
                    v.exp_m1()
                }
            }
            UnaryOp::Selu => {
                let s = F::of(1.0507009873554805);
                if v > zero {
                    s * v
                } else {
                    s * F::of(1.6732632423543772) * v.exp_m1()
                }
            }
            UnaryOp::Softplus => v.max(zero) + (-v.abs()).exp().ln_1p(),
            UnaryOp::Softsign => {
                if v == F::INFINITY {
                    one
                } else if v == F::NEG_INFINITY {
                    -one
                } else {
                    v / (one + v.abs())
                }
            }
            UnaryOp::Gelu => F::of(0.5) * v * (one + (v * F::of(std::f64::consts::FRAC_1_SQRT_2)).erf()),
            UnaryOp::GeluTanh => {
                let c = F::of(0.7978845608028654);
                F::of(0.5) * v * (one + (c * (v + F::of(0.044715) * v * v * v)).tanh())
            }
            UnaryOp::Silu => v * sigmoid(v),
            UnaryOp::Floor => v.floor(),
            UnaryOp::Ceil => v.ceil(),
            UnaryOp::Round => v.round_even(),
            UnaryOp::Erf => v.erf(),
            UnaryOp::LeakyRelu(a) => {
                if v > zero {
                    v
                } else {
                    F::of(a as f64) * v
                }
            }
        }
    }
}

/// [`with_const!`](crate::core::op::with_const) for the ops training runs
/// most, so that [`UnaryOp::apply`]'s and [`UnaryOp::derivative`]'s
/// `match` folds away for them.
macro_rules! with_unary {
    ($u:expr, |$k:ident| $body:expr) => {
        $crate::core::op::with_const!(
            UnaryOp,
            $u,
            |$k| $body,
            [
                Relu, Neg, Square, Exp, Sigmoid, Sqrt, Abs, Tanh, Log, Log1p, Expm1, Gelu, GeluTanh, Erf, Silu,
                Softplus, Elu
            ]
        )
    };
}
pub(crate) use with_unary;

#[cfg(test)]
mod tests {
    use super::UnaryOp;

    /// `grad_from_output` holds: the rule gives the same value when the
    /// output stands in for the input, special values included.
    #[test]
    fn output_stands_in_for_input() {
        let mut vals = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            6.0,
            -6.0,
            1e-30,
            -1e-30,
            88.0,
        ];
        vals.extend((0..2000).map(|i| (i as f32 - 1000.0) * 0.0137));
        for op in UnaryOp::ALL.into_iter().filter(|u| u.grad_from_output()) {
            for &v in &vals {
                let r = op.apply(v);
                let (a, b) = (op.derivative(v, r), op.derivative(r, r));
                assert!(
                    a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan(),
                    "{op:?} at {v}: {a} vs {b}"
                );
            }
        }
    }
}
