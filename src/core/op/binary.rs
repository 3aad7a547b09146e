//! Elementwise binary ops with NumPy broadcasting, comparisons and `where`
//! (kernel: shaders/binary.wgsl): the [`BinaryOp`] and [`CmpOp`] attributes
//! and their per-element reference semantics.
//!
//! Operands must share a dtype, as in TensorFlow (no implicit promotion).
//! Integer arithmetic wraps on overflow and integer division truncates
//! toward zero; as in TensorFlow, an integer division by zero and a
//! negative integer power are errors (`int_error`), on every device.
//!
//! Part of [`crate::core::op`]; the public functions (`add`, `equal`, …) and
//! the gradient rules are in `ops::binary`.

use crate::core::float::Float;

/// Arithmetic and logical ops; the discriminant is the shader's op code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`: IEEE for floats; for integers, truncating, and a zero
    /// divisor is an error.
    Div,
    /// `a^b`; for int32, a negative exponent is an error.
    Pow,
    /// The larger element.
    Maximum,
    /// The smaller element.
    Minimum,
    /// `(a - b)^2`.
    SquaredDifference,
    /// `a && b` (bool operands only).
    LogicalAnd,
    /// `a || b` (bool operands only).
    LogicalOr,
    /// `a != b` (bool operands only).
    LogicalXor,
}

/// A shape without its leading 1s: an operand whose shape ends the output's
/// shape this way repeats along the output with its own length.
pub(crate) fn without_leading_ones(s: &[usize]) -> &[usize] {
    let lead = s.iter().take_while(|&&d| d == 1).count();
    &s[lead..]
}

/// Whether an operand of shape `sh` broadcast to `out` is a column: `out`'s
/// leading dimensions, then 1s, so each of its values repeats over a run of
/// the output (a single value is one).
pub(crate) fn is_column(sh: &[usize], out: &[usize]) -> bool {
    let Some(pad) = out.len().checked_sub(sh.len()) else {
        return false;
    };
    // Padded with leading 1s, it must equal `out` up to its last non-1.
    let k = sh.iter().rposition(|&d| d != 1).map_or(0, |i| pad + i + 1);
    (0..k).all(|d| out[d] == if d < pad { 1 } else { sh[d - pad] })
}

#[cfg(test)]
mod column_tests {
    use super::is_column;

    #[test]
    fn columns() {
        assert!(is_column(&[3, 1], &[3, 4]));
        assert!(is_column(&[2, 1, 1], &[2, 3, 5]));
        assert!(is_column(&[1], &[2, 3]));
        assert!(is_column(&[], &[2, 3]));
        assert!(is_column(&[2, 3], &[2, 3]));
        assert!(is_column(&[3, 1], &[1, 3, 4]));
        assert!(!is_column(&[1, 3, 1], &[2, 3, 4]));
        assert!(!is_column(&[1, 4], &[3, 4]));
        assert!(!is_column(&[3, 1], &[2, 3, 4]));
        assert!(!is_column(&[2, 3, 4], &[3, 4]));
    }
}

impl BinaryOp {
    /// The TensorFlow-style name (`"add"`, `"squared_difference"`).
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
    pub(crate) fn logical(self) -> bool {
        matches!(self, BinaryOp::LogicalAnd | BinaryOp::LogicalOr | BinaryOp::LogicalXor)
    }
    /// The CPU reference of a float op (the fused kernels' CPU path uses it too).
    #[inline]
    pub(crate) fn float_op<F: Float>(self, x: F, y: F) -> F {
        self.float(x, y)
    }
    #[inline]
    pub(crate) fn float<F: Float>(self, x: F, y: F) -> F {
        match self {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Pow => x.powf(y),
            BinaryOp::Maximum => crate::core::float::max_nan(x, y),
            BinaryOp::Minimum => crate::core::float::min_nan(x, y),
            BinaryOp::SquaredDifference => (x - y) * (x - y),
            _ => unreachable!(),
        }
    }
    pub(crate) fn int(self, x: i32, y: i32) -> i32 {
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
    pub(crate) fn bool(self, x: bool, y: bool) -> bool {
        match self {
            BinaryOp::LogicalAnd => x && y,
            BinaryOp::LogicalOr => x || y,
            BinaryOp::LogicalXor => x != y,
            _ => unreachable!(),
        }
    }
}

/// TensorFlow's refusals of integer arithmetic: status code 3 (a zero
/// divisor) and 4 (a negative exponent), as the GPU's `int_check` reports
/// them (shaders/layout.wgsl) and the CPU finds them.
pub(crate) fn int_error(code: u32) -> crate::core::error::Error {
    match code {
        3 => crate::core::error::Error::arg("div", "Integer division by zero"),
        _ => crate::core::error::Error::arg("pow", "Integers to negative integer powers are not allowed"),
    }
}

/// The status code of `op` on integer operands whose divisor or exponent
/// holds `bad`, where TensorFlow refuses it.
pub(crate) fn int_check(op: BinaryOp) -> Option<(u32, fn(i32) -> bool)> {
    match op {
        BinaryOp::Div => Some((3, |v| v == 0)),
        BinaryOp::Pow => Some((4, |v| v < 0)),
        _ => None,
    }
}

/// Integer power as the i32 shader prelude computes it (a negative
/// exponent never reaches it: see [`int_check`]).
pub(crate) fn ipow(a: i32, b: i32) -> i32 {
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

/// Elementwise comparisons; the result is bool. Any comparison with a NaN is
/// false except `NotEqual`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `a == b`.
    Equal,
    /// `a != b`.
    NotEqual,
    /// `a < b`.
    Less,
    /// `a <= b`.
    LessEqual,
    /// `a > b`.
    Greater,
    /// `a >= b`.
    GreaterEqual,
}

impl CmpOp {
    /// The TensorFlow-style name (`"equal"`, `"less_equal"`).
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
    #[inline(always)]
    pub(crate) fn apply<T: PartialOrd>(self, x: T, y: T) -> bool {
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

/// [`with_const!`](crate::core::op::with_const) for every comparison, so
/// that [`CmpOp::apply`]'s `match` folds away.
macro_rules! with_cmp {
    ($c:expr, |$k:ident| $body:expr) => {
        $crate::core::op::with_const!(
            CmpOp,
            $c,
            |$k| $body,
            [Equal, NotEqual, Less, LessEqual, Greater, GreaterEqual]
        )
    };
}
pub(crate) use with_cmp;

/// [`with_const!`](crate::core::op::with_const) for the arithmetic ops, so
/// that [`BinaryOp::float`]'s `match` folds away for them.
macro_rules! with_binary {
    ($b:expr, |$k:ident| $body:expr) => {
        $crate::core::op::with_const!(BinaryOp, $b, |$k| $body, [Add, Sub, Mul, Div, Maximum, Minimum])
    };
}
pub(crate) use with_binary;
