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
    ($t:ty, $bits:ty, $exp:path) => {
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
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
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
float_impl!(f32, u32, exp_f32);
float_impl!(f64, u64, f64::exp);

/// e^x in f32 without a library call, so that loops over it vectorize:
/// Cephes' range reduction and polynomial (as in Eigen's `pexp`, behind
/// TensorFlow's CPU kernels), within 1 ulp of the correctly rounded value
/// (tested against f64 `exp`), with
/// IEEE results at the edges: +inf past 88.72, 0 (through denormals)
/// below -103.97, NaN for NaN.
// The constants as Cephes publishes them (some round to shorter f32s).
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // exp(x) = 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2. The
    // clamp keeps n in [-150, 128], where 2^(n/2) and the rest are normal
    // floats: their product rounds once, into a denormal if it must.
    let c = x.clamp(-104.0, 89.0);
    // Round to nearest by adding and subtracting 1.5 * 2^23 (no libm
    // call); the sum's low mantissa bits hold n as an integer (no
    // float-to-int conversion, which would not vectorize).
    const SHIFT: f32 = 12_582_912.0;
    let t = c * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    // ln 2 in two parts, so that n * C1 is exact.
    let r = (c - n * 0.693_359_375) - n * -2.121_944_4e-4;
    let z = r * r;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * z + r + 1.0;
    let half = ni >> 1;
    let pow2 = |k: i32| f32::from_bits((k.wrapping_add(127) as u32) << 23);
    let y = e * pow2(half) * pow2(ni.wrapping_sub(half));
    // NaN stays NaN (the clamp passes it through, but its bits made ni
    // anything).
    if x.is_nan() { x } else { y }
}

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

#[cfg(test)]
mod tests {
    use super::exp_f32;

    /// Distance in units in the last place between f32 values of one sign
    /// (denormals count in steps of the smallest one).
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    /// `exp_f32` against f64's `exp` rounded to f32: within 1 ulp over the
    /// whole range where the result is finite and nonzero, denormals
    /// included: a sweep in steps of 1/1024 and every 97th bit pattern.
    #[test]
    fn exp_f32_is_within_one_ulp() {
        let mut worst = (0u32, 0.0f32);
        let mut check = |x: f32| {
            let want = (x as f64).exp() as f32;
            let got = exp_f32(x);
            let e = ulps(got, want);
            assert!(e <= 1, "exp({x:e}) = {got:e}, want {want:e} ({e} ulp)");
            if e > worst.0 {
                worst = (e, x);
            }
        };
        let mut x = -104.0f32;
        while x < 89.0 {
            check(x);
            x += 1.0 / 1024.0;
        }
        // Every 97th f32 bit pattern of either sign up to |x| = 104.
        for bits in (0..0x42D0_0000u32).step_by(97) {
            check(f32::from_bits(bits));
            check(-f32::from_bits(bits));
        }
        eprintln!("worst: {} ulp at {:e}", worst.0, worst.1);
    }

    /// The edges follow IEEE (and TensorFlow): overflow to +inf, underflow
    /// through denormals to +0, infinities and NaN.
    #[test]
    fn exp_f32_edges() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY).to_bits(), 0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(88.8), f32::INFINITY);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert!(exp_f32(88.72).is_finite());
        assert_eq!(exp_f32(-104.0).to_bits(), 0);
        assert_eq!(exp_f32(-1e30).to_bits(), 0);
        let d = exp_f32(-100.0);
        assert!(d > 0.0 && !d.is_normal(), "{d:e}");
        assert_eq!(exp_f32(f32::MIN_POSITIVE), 1.0);
    }
}
