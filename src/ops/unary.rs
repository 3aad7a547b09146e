//! Elementwise unary math on float tensors (kernel: shaders/unary.wgsl).

use super::{Op, Tol, exec};
use crate::device::cpu::{CpuData, Float};
use crate::device::gpu::{GpuDevice, KType, Kernel, Launch, grid};
use crate::device::memory::GpuBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

pub static UNARY: Kernel = Kernel {
    name: "unary",
    sources: &[
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/elementwise.wgsl"),
        include_str!("../../shaders/unary.wgsl"),
    ],
    types: &[KType::F32, KType::F16],
};

/// The op; its position in this list is the shader's op code.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sign,
    Exp,
    Expm1,
    Log,
    Log1p,
    Sqrt,
    Rsqrt,
    Square,
    Reciprocal,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
    Relu,
    Relu6,
    Elu,
    Selu,
    Softplus,
    Softsign,
    /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (Keras' default).
    Gelu,
    /// GELU's tanh approximation (`approximate=True`).
    GeluTanh,
    /// `x * sigmoid(x)`, also called swish.
    Silu,
    Floor,
    Ceil,
    /// Half to even, as `tf.round`.
    Round,
    Erf,
    LeakyRelu(f32),
}

impl UnaryOp {
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

    fn code(self) -> u32 {
        UnaryOp::ALL
            .iter()
            .position(|o| std::mem::discriminant(o) == std::mem::discriminant(&self))
            .unwrap() as u32
    }

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

    /// f'(v) given r = f(v): the CPU reference of the gradient rule.
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
            UnaryOp::Elu => {
                if v > zero {
                    one
                } else {
                    r + one
                }
            }
            UnaryOp::Selu => {
                let s = F::of(1.0507009873554805);
                if v > zero { s } else { r + s * F::of(1.6732632423543772) }
            }
            UnaryOp::Softplus => sigmoid(v),
            UnaryOp::Softsign => one / ((one + v.abs()) * (one + v.abs())),
            UnaryOp::Gelu => {
                let x = v.f64();
                F::of(
                    0.5 * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))
                        + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt(),
                )
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

    /// The CPU reference of one element.
    pub fn apply<F: Float>(self, v: F) -> F {
        let one = F::ONE;
        let zero = F::ZERO;
        let sigmoid = |v: F| one / (one + (-v).exp());
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
            UnaryOp::Softsign => v / (one + v.abs()),
            UnaryOp::Gelu => F::of(0.5) * v * (one + F::of(erf_f64(v.f64() * std::f64::consts::FRAC_1_SQRT_2))),
            UnaryOp::GeluTanh => {
                let c = F::of(0.7978845608028654);
                F::of(0.5) * v * (one + (c * (v + F::of(0.044715) * v * v * v)).tanh())
            }
            UnaryOp::Silu => v * sigmoid(v),
            UnaryOp::Floor => v.floor(),
            UnaryOp::Ceil => v.ceil(),
            UnaryOp::Round => v.round_even(),
            UnaryOp::Erf => F::of(erf_f64(v.f64())),
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

/// erf to about 1e-15: Taylor series near 0, Lentz's continued fraction for erfc beyond.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.5 {
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + ...))))
        let mut f = a;
        let tiny = 1e-300;
        let mut c = a;
        let mut d = 0.0;
        for k in 1..200 {
            let ak = k as f64 / 2.0;
            d = a + ak * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = a + ak / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    if x < 0.0 { -r } else { r }
}

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

pub(crate) fn cpu(op: &Op, x: &[&Tensor], _out: &[usize], _dtype: DType) -> Result<CpuData> {
    fn grad<F: Float>(u: UnaryOp, x: &[F], y: &[F], dy: &[F]) -> Vec<F> {
        if x.len() > 1 << 16 {
            return x
                .par_iter()
                .zip(y)
                .zip(dy)
                .map(|((&v, &r), &g)| g * u.derivative(v, r))
                .collect();
        }
        x.iter()
            .zip(y)
            .zip(dy)
            .map(|((&v, &r), &g)| g * u.derivative(v, r))
            .collect()
    }
    /// Large arrays use every core.
    fn map<F: Float>(v: &[F], f: impl Fn(F) -> F + Sync + Send) -> Vec<F> {
        if v.len() > 1 << 16 {
            v.par_iter().map(|&e| f(e)).collect()
        } else {
            v.iter().map(|&e| f(e)).collect()
        }
    }
    Ok(match (op, x[0].cpu_data()) {
        (Op::Unary(u), CpuData::F32(v)) => CpuData::F32(map(v, |e| u.apply(e))),
        (Op::Unary(u), CpuData::F64(v)) => CpuData::F64(map(v, |e| u.apply(e))),
        (Op::UnaryGrad(u), d) => match (d, x[1].cpu_data(), x[2].cpu_data()) {
            (CpuData::F32(a), CpuData::F32(b), CpuData::F32(c)) => CpuData::F32(grad(*u, a, b, c)),
            (CpuData::F64(a), CpuData::F64(b), CpuData::F64(c)) => CpuData::F64(grad(*u, a, b, c)),
            _ => unreachable!(),
        },
        _ => unreachable!("f16 runs through f32; ints are rejected by infer"),
    })
}

pub(crate) fn gpu(op: &Op, g: &GpuDevice, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let (Op::Unary(u) | Op::UnaryGrad(u)) = *op else {
        unreachable!()
    };
    let n = crate::shape::numel(out);
    let y = g.alloc(u.name(), (n * dtype.size()) as u64)?;
    let alpha = if let UnaryOp::LeakyRelu(a) = u { a } else { 0.0 };
    let (entry, bufs): (&'static str, Vec<&GpuBuf>) = match op {
        Op::Unary(_) => ("main", vec![x[0].gpu_buf(), &y]),
        _ => ("grad", vec![x[0].gpu_buf(), &y, x[1].gpu_buf(), x[2].gpu_buf()]),
    };
    g.launch(&Launch {
        kernel: &UNARY,
        entry,
        ty: super::ktype(dtype),
        consts: &[],
        params: &[n as u32, alpha.to_bits(), u.code(), 0],
        bufs: &bufs,
        groups: grid(n, 256),
    })?;
    Ok(y)
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
