//! The float trait the reference kernels are written against (f32 and f64;
//! f16 computes through f32).
//!
//! Part of [`crate::core`]: the per-element semantics in [`crate::core::op`]
//! (`UnaryOp::apply`, `UnaryOp::derivative`) and the CPU kernels of
//! `runtime::cpu` are generic over [`Float`], so one definition
//! serves both precisions.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// The float operations the CPU kernels need, for f32 and f64.
pub trait Float:
    Copy
    + PartialOrd
    + Default
    + Debug
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    /// 0.0
    const ZERO: Self;
    /// 1.0
    const ONE: Self;
    /// +∞: the identity of `min` reductions.
    const INFINITY: Self;
    /// -∞: the identity of `max` reductions.
    const NEG_INFINITY: Self;
    /// Converts a constant from f64, rounding to nearest.
    fn of(x: f64) -> Self;
    /// Widens to f64 (exact).
    fn f64(self) -> f64;
    /// eˣ
    fn exp(self) -> Self;
    /// eˣ - 1, accurate near 0.
    fn exp_m1(self) -> Self;
    /// Natural logarithm; `-inf` at 0, NaN below.
    fn ln(self) -> Self;
    /// ln(1 + x), accurate near 0.
    fn ln_1p(self) -> Self;
    /// Square root; NaN below 0.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Sine (radians).
    fn sin(self) -> Self;
    /// Cosine (radians).
    fn cos(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Largest integer not above `self`.
    fn floor(self) -> Self;
    /// Smallest integer not below `self`.
    fn ceil(self) -> Self;
    /// Rounds half to even, as `tf.round` (2.5 → 2, 3.5 → 4).
    fn round_even(self) -> Self;
    /// `self` raised to `e`; NaN for a negative base and non-integer `e`.
    fn powf(self, e: Self) -> Self;
    /// Whether `self` is NaN.
    fn is_nan(self) -> bool;
    /// The larger value; a NaN operand yields the other one (IEEE `maxNum`).
    fn max(self, o: Self) -> Self;
    /// The smaller value; a NaN operand yields the other one (IEEE `minNum`).
    fn min(self, o: Self) -> Self;
    /// `self * a + b` rounded once: one instruction only inside a function
    /// compiled with the `fma` target feature (elsewhere a library call).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `if c { a } else { b }` through bit masks: where the data decides
    /// `c`, a branch mispredicts about every other element, which costs far
    /// more than the masking.
    fn select(c: bool, a: Self, b: Self) -> Self;
}

macro_rules! float_impl {
    ($t:ty, $bits:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline]
            fn of(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn exp_m1(self) -> Self {
                <$t>::exp_m1(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            #[inline]
            fn ceil(self) -> Self {
                <$t>::ceil(self)
            }
            #[inline]
            fn round_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline]
            fn select(c: bool, a: Self, b: Self) -> Self {
                let m = (c as $bits).wrapping_neg();
                <$t>::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline]
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
        }
    };
}
float_impl!(f32, u32);
float_impl!(f64, u64);

/// The larger of `a` and `b`, NaN if either is (TensorFlow's `maximum`,
/// `reduce_max` and `max_pool`; `f32::max` drops a NaN instead).
pub fn max_nan<F: Float>(a: F, b: F) -> F {
    if a.is_nan() {
        a
    } else if b.is_nan() {
        b
    } else {
        a.max(b)
    }
}

/// The smaller of `a` and `b`, NaN if either is.
pub fn min_nan<F: Float>(a: F, b: F) -> F {
    if a.is_nan() {
        a
    } else if b.is_nan() {
        b
    } else {
        a.min(b)
    }
}
