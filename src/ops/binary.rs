//! Elementwise binary ops with NumPy broadcasting, comparisons and `where`
//! (kernel: shaders/binary.wgsl).
//!
//! Operands must share a dtype, as in TensorFlow (no implicit promotion).
//! Integer arithmetic wraps on overflow and `x / 0` gives `x`, which is what
//! WGSL defines; integer division truncates toward zero.

use super::{Op, Tol, exec};
use crate::device::cpu::{CpuData, Float};
use crate::device::gpu::{GpuDevice, KType, Kernel, Launch, grid};
use crate::device::memory::GpuBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{StridedIter, broadcast, broadcast_strides, collapse, numel, strides};
use crate::tensor::Tensor;
use rayon::prelude::*;

pub static BINARY: Kernel = Kernel {
    name: "binary",
    sources: &[
        include_str!("../../shaders/common.wgsl"),
        include_str!("../../shaders/elementwise.wgsl"),
        include_str!("../../shaders/binary.wgsl"),
    ],
    types: &[KType::F32, KType::F16, KType::I32, KType::U32],
};

/// Arithmetic and logical ops; the discriminant is the shader's op code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    SquaredDifference,
    LogicalAnd,
    LogicalOr,
    LogicalXor,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::SquaredDifference => "squared_difference",
            BinaryOp::LogicalAnd => "logical_and",
            BinaryOp::LogicalOr => "logical_or",
            BinaryOp::LogicalXor => "logical_xor",
        }
    }
    fn logical(self) -> bool {
        matches!(self, BinaryOp::LogicalAnd | BinaryOp::LogicalOr | BinaryOp::LogicalXor)
    }
    /// The CPU reference of a float op (the fused kernels' CPU path uses it too).
    pub(crate) fn float_op<F: Float>(self, x: F, y: F) -> F {
        self.float(x, y)
    }
    fn float<F: Float>(self, x: F, y: F) -> F {
        match self {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Pow => x.powf(y),
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
            BinaryOp::SquaredDifference => (x - y) * (x - y),
            _ => unreachable!(),
        }
    }
    fn int(self, x: i32, y: i32) -> i32 {
        match self {
            BinaryOp::Add => x.wrapping_add(y),
            BinaryOp::Sub => x.wrapping_sub(y),
            BinaryOp::Mul => x.wrapping_mul(y),
            BinaryOp::Div => {
                if y == 0 {
                    x
                } else {
                    x.wrapping_div(y)
                }
            }
            BinaryOp::Pow => ipow(x, y),
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
            BinaryOp::SquaredDifference => x.wrapping_sub(y).wrapping_mul(x.wrapping_sub(y)),
            _ => unreachable!(),
        }
    }
    fn bool(self, x: bool, y: bool) -> bool {
        match self {
            BinaryOp::LogicalAnd => x && y,
            BinaryOp::LogicalOr => x || y,
            BinaryOp::LogicalXor => x != y,
            _ => unreachable!(),
        }
    }
}

/// Integer power as the i32 shader prelude computes it.
fn ipow(a: i32, b: i32) -> i32 {
    if b < 0 {
        return match a {
            1 => 1,
            -1 => {
                if b & 1 != 0 {
                    -1
                } else {
                    1
                }
            }
            _ => 0,
        };
    }
    let (mut r, mut base, mut e) = (1i32, a, b);
    while e > 0 {
        if e & 1 != 0 {
            r = r.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    r
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

impl CmpOp {
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Equal => "equal",
            CmpOp::NotEqual => "not_equal",
            CmpOp::Less => "less",
            CmpOp::LessEqual => "less_equal",
            CmpOp::Greater => "greater",
            CmpOp::GreaterEqual => "greater_equal",
        }
    }
    fn apply<T: PartialOrd>(self, x: T, y: T) -> bool {
        match self {
            CmpOp::Equal => x == y,
            CmpOp::NotEqual => x != y,
            CmpOp::Less => x < y,
            CmpOp::LessEqual => x <= y,
            CmpOp::Greater => x > y,
            CmpOp::GreaterEqual => x >= y,
        }
    }
}

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

/// The shape without its leading 1s.
fn core(s: &[usize]) -> &[usize] {
    let lead = s.iter().take_while(|&&d| d == 1).count();
    &s[lead..]
}

/// Arrays above this size are processed on all cores.
const PAR: usize = 1 << 16;

fn zip<A: Copy + Send + Sync, O: Send>(
    a: &[A],
    b: &[A],
    (ash, bsh): (&[usize], &[usize]),
    (sa, sb): (&[usize], &[usize]),
    shape: &[usize],
    f: impl Fn(A, A) -> O + Send + Sync,
) -> Vec<O> {
    // An operand with as many elements as the output cannot be broadcast, so
    // it is laid out like the output; one whose shape ends the output's
    // repeats with its own length. Those common cases need no index math.
    let n = numel(shape);
    let (fa, fb) = (a.len() == n, b.len() == n);
    if fa && fb {
        return if n > PAR {
            a.par_iter().zip(b.par_iter()).map(|(&p, &q)| f(p, q)).collect()
        } else {
            a.iter().zip(b).map(|(&p, &q)| f(p, q)).collect()
        };
    }
    if fa && !b.is_empty() && shape.ends_with(core(bsh)) {
        let k = b.len();
        return if n > PAR {
            a.par_chunks(k)
                .flat_map_iter(|c| c.iter().zip(b).map(|(&p, &q)| f(p, q)))
                .collect()
        } else {
            a.chunks(k)
                .flat_map(|c| c.iter().zip(b).map(|(&p, &q)| f(p, q)))
                .collect()
        };
    }
    if fb && !a.is_empty() && shape.ends_with(core(ash)) {
        let k = a.len();
        return b
            .chunks(k)
            .flat_map(|c| a.iter().zip(c).map(|(&p, &q)| f(p, q)))
            .collect();
    }
    StridedIter::new(shape, sa, 0)
        .zip(StridedIter::new(shape, sb, 0))
        .map(|(i, j)| f(a[i], b[j]))
        .collect()
}

pub(crate) fn cpu(op: &Op, x: &[&Tensor], out: &[usize], _dtype: DType) -> Result<CpuData> {
    let st: Vec<Vec<usize>> = x.iter().map(|t| broadcast_strides(t.shape(), out)).collect();
    let data: Vec<&CpuData> = x.iter().map(|t| t.cpu_data()).collect();
    Ok(match op {
        Op::Binary(o) => {
            let o = *o;
            match (data[0], data[1]) {
                (CpuData::F32(a), CpuData::F32(b)) => CpuData::F32(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.float(p, q),
                )),
                (CpuData::F64(a), CpuData::F64(b)) => CpuData::F64(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.float(p, q),
                )),
                (CpuData::I32(a), CpuData::I32(b)) => CpuData::I32(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.int(p, q),
                )),
                (CpuData::Bool(a), CpuData::Bool(b)) => CpuData::Bool(zip(
                    a,
                    b,
                    (x[0].shape(), x[1].shape()),
                    (&st[0], &st[1]),
                    out,
                    |p, q| o.bool(p, q),
                )),
                _ => unreachable!(),
            }
        }
        Op::Compare(c) => {
            let c = *c;
            CpuData::Bool(match (data[0], data[1]) {
                (CpuData::F32(a), CpuData::F32(b)) => {
                    zip(a, b, (x[0].shape(), x[1].shape()), (&st[0], &st[1]), out, |p, q| {
                        c.apply(p, q)
                    })
                }
                (CpuData::F64(a), CpuData::F64(b)) => {
                    zip(a, b, (x[0].shape(), x[1].shape()), (&st[0], &st[1]), out, |p, q| {
                        c.apply(p, q)
                    })
                }
                (CpuData::I32(a), CpuData::I32(b)) => {
                    zip(a, b, (x[0].shape(), x[1].shape()), (&st[0], &st[1]), out, |p, q| {
                        c.apply(p, q)
                    })
                }
                (CpuData::Bool(a), CpuData::Bool(b)) => {
                    zip(a, b, (x[0].shape(), x[1].shape()), (&st[0], &st[1]), out, |p, q| {
                        c.apply(p, q)
                    })
                }
                _ => unreachable!(),
            })
        }
        Op::Where => {
            let CpuData::Bool(m) = data[0] else { unreachable!() };
            let ci: Vec<bool> = StridedIter::new(out, &st[0], 0).map(|i| m[i]).collect();
            match (data[1], data[2]) {
                (CpuData::F32(a), CpuData::F32(b)) => CpuData::F32(sel_vec(&ci, a, b, &st[1], &st[2], out)),
                (CpuData::F64(a), CpuData::F64(b)) => CpuData::F64(sel_vec(&ci, a, b, &st[1], &st[2], out)),
                (CpuData::I32(a), CpuData::I32(b)) => CpuData::I32(sel_vec(&ci, a, b, &st[1], &st[2], out)),
                (CpuData::Bool(a), CpuData::Bool(b)) => CpuData::Bool(sel_vec(&ci, a, b, &st[1], &st[2], out)),
                _ => unreachable!(),
            }
        }
        _ => unreachable!(),
    })
}

fn sel_vec<T: Copy>(c: &[bool], a: &[T], b: &[T], sa: &[usize], sb: &[usize], out: &[usize]) -> Vec<T> {
    StridedIter::new(out, sa, 0)
        .zip(StridedIter::new(out, sb, 0))
        .zip(c)
        .map(|((i, j), &k)| if k { a[i] } else { b[j] })
        .collect()
}

pub(crate) fn gpu(op: &Op, g: &GpuDevice, x: &[&Tensor], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let n = numel(out);
    let contiguous = strides(out);
    // Operand strides over the output in the kernel's order: a, b, condition.
    let ops: Vec<&Tensor> = match op {
        Op::Where => vec![x[1], x[2], x[0]],
        _ => vec![x[0], x[1]],
    };
    let mut st: Vec<Vec<usize>> = ops.iter().map(|t| broadcast_strides(t.shape(), out)).collect();
    // A full operand is laid out like the output; one whose shape ends the
    // output's repeats with its own length (see the shader's fast modes).
    let suffix = |t: &Tensor| !t.shape().is_empty() && out.ends_with(core(t.shape()));
    let full = |t: &Tensor| t.numel() == n;
    let mode = if st.iter().all(|s| {
        out.iter()
            .zip(s.iter().zip(&contiguous))
            .all(|(&d, (a, b))| d == 1 || a == b)
    }) {
        0
    } else if ops.len() == 2 && full(ops[0]) && suffix(ops[1]) {
        2
    } else if ops.len() == 2 && full(ops[1]) && suffix(ops[0]) {
        3
    } else {
        1
    };
    let period = match mode {
        2 => ops[1].numel(),
        3 => ops[0].numel(),
        _ => 0,
    };
    while st.len() < 3 {
        st.push(vec![0; out.len()]);
    }
    let (sh, st) = collapse(out, &st);
    if sh.len() > 8 {
        return Err(Error::shape(
            op.name(),
            &[out],
            "broadcasting over more than 8 non-contiguous dimensions",
        ));
    }
    let code = match op {
        Op::Binary(b) => *b as u32,
        Op::Compare(c) => *c as u32,
        _ => 0,
    };
    let mut params = vec![n as u32, sh.len() as u32, mode, code, period as u32, 0, 0, 0];
    for v in [&sh, &st[0], &st[1], &st[2]] {
        let mut w = [0u32; 8];
        for (i, &d) in v.iter().enumerate() {
            w[i] = d as u32;
        }
        params.extend_from_slice(&w);
    }
    let y = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    let (entry, ty, bufs): (&'static str, KType, Vec<&GpuBuf>) = match op {
        Op::Binary(_) => ("binary", super::ktype(dtype), vec![x[0].gpu_buf(), x[1].gpu_buf(), &y]),
        Op::Compare(_) => (
            "cmp",
            super::ktype(x[0].dtype()),
            vec![x[0].gpu_buf(), x[1].gpu_buf(), &y],
        ),
        Op::Where => (
            "where_",
            super::ktype(dtype),
            vec![x[1].gpu_buf(), x[2].gpu_buf(), &y, x[0].gpu_buf()],
        ),
        _ => unreachable!(),
    };
    g.launch(&Launch {
        kernel: &BINARY,
        entry,
        ty,
        consts: &[],
        params: &params,
        bufs: &bufs,
        groups: grid(n, 256),
    })?;
    Ok(y)
}

// ---- public API ----------------------------------------------------------

pub fn binary(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    exec(Op::Binary(op), &[a, b])
}

pub fn compare(a: &Tensor, b: &Tensor, op: CmpOp) -> Result<Tensor> {
    exec(Op::Compare(op), &[a, b])
}

/// `tf.where(cond, a, b)`: elements of `a` where `cond` is true, else of `b`.
pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    exec(Op::Where, &[cond, a, b])
}

macro_rules! binary_fns {
    ($kind:ident, $fn:ident: $($f:ident => $v:ident),* $(,)?) => {
        $(
            #[doc = concat!("`tf.math.", stringify!($f), "` with broadcasting.")]
            pub fn $f(a: &Tensor, b: &Tensor) -> Result<Tensor> {
                $fn(a, b, $kind::$v)
            }
        )*
        impl Tensor {
            $(
                #[doc = concat!("`tf.math.", stringify!($f), "` with broadcasting.")]
                pub fn $f(&self, other: &Tensor) -> Result<Tensor> {
                    $fn(self, other, $kind::$v)
                }
            )*
        }
    };
}

binary_fns!(BinaryOp, binary: add => Add, sub => Sub, mul => Mul, div => Div, pow => Pow,
    maximum => Maximum, minimum => Minimum, squared_difference => SquaredDifference,
    logical_and => LogicalAnd, logical_or => LogicalOr, logical_xor => LogicalXor);
binary_fns!(CmpOp, compare: equal => Equal, not_equal => NotEqual, less => Less,
    less_equal => LessEqual, greater => Greater, greater_equal => GreaterEqual);

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
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        add(self, &self.scalar_like(v)?)
    }
    pub fn sub_scalar(&self, v: f64) -> Result<Tensor> {
        sub(self, &self.scalar_like(v)?)
    }
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        mul(self, &self.scalar_like(v)?)
    }
    pub fn div_scalar(&self, v: f64) -> Result<Tensor> {
        div(self, &self.scalar_like(v)?)
    }
    pub fn pow_scalar(&self, v: f64) -> Result<Tensor> {
        pow(self, &self.scalar_like(v)?)
    }
    pub fn where_(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        where_(self, a, b)
    }
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
