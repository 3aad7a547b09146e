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
    /// The error function, `2/√π ∫₀ˣ e^(-t²) dt`.
    fn erf(self) -> Self;
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
    ($t:ty, $bits:ty, $exp:path, $expm1:path, $ln:path, $ln1p:path, $tanh:path, $erf:path) => {
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
            #[inline(always)]
            fn exp_m1(self) -> Self {
                $expm1(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                $ln1p(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
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
float_impl!(f32, u32, exp_f32, expm1_f32, ln_f32, ln1p_f32, tanh_f32, erf_f32);
float_impl!(f64, u64, f64::exp, f64::exp_m1, f64::ln, f64::ln_1p, f64::tanh, erf_f64);

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

/// ln x in f32 without a library call, so that loops over it vectorize:
/// Cephes' `logf` (as in Eigen's `plog`, behind TensorFlow's CPU kernels):
/// x = 2^e m with m in [sqrt(1/2), sqrt(2)), a polynomial in m - 1, and e
/// ln 2 in two parts. Within 1 ulp (tested against f64 `ln`), denormals
/// included; -inf at ±0, NaN below 0, +inf at +inf.
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    // A denormal's exponent is read after scaling it by 2^23.
    let tiny = x < f32::MIN_POSITIVE;
    let bits = (if tiny { x * 8_388_608.0 } else { x }).to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - if tiny { 149 } else { 126 };
    // m in [0.5, 1), folded to [sqrt(1/2), sqrt(2)) as 2m with e - 1.
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let low = m < std::f32::consts::FRAC_1_SQRT_2;
    let e = e as f32 - if low { 1.0 } else { 0.0 };
    let t = if low { m + m - 1.0 } else { m - 1.0 };
    let z = t * t;
    let mut y = 7.037_683_629_2e-2f32;
    y = y * t - 1.151_461_031_0e-1;
    y = y * t + 1.167_699_874_0e-1;
    y = y * t - 1.242_014_084_6e-1;
    y = y * t + 1.424_932_278_7e-1;
    y = y * t - 1.666_805_766_5e-1;
    y = y * t + 2.000_071_476_5e-1;
    y = y * t - 2.499_999_399_3e-1;
    y = y * t + 3.333_333_117_4e-1;
    y = y * t * z + e * -2.121_944_4e-4 - 0.5 * z;
    let r = t + y + e * 0.693_359_375;
    if x == 0.0 {
        f32::NEG_INFINITY
    } else if x < 0.0 || x.is_nan() {
        f32::NAN
    } else if x == f32::INFINITY {
        x
    } else {
        r
    }
}

/// eˣ - 1 in f32 without a library call, so that loops over it vectorize:
/// below 1/2 in magnitude its Taylor series to x⁹ (whose first neglected
/// term is under 2^-27 of the result there), elsewhere [`exp_f32`]`(x) -
/// 1, which cancels at most 1.4 bits there. Within 2 ulp (tested against
/// f64 `exp_m1`); -0 stays -0, -1 at -inf, +inf past 88.72.
#[inline(always)]
pub fn expm1_f32(x: f32) -> f32 {
    let mut p = 1.0f32 / 362_880.0;
    p = p * x + 1.0 / 40_320.0;
    p = p * x + 1.0 / 5_040.0;
    p = p * x + 1.0 / 720.0;
    p = p * x + 1.0 / 120.0;
    p = p * x + 1.0 / 24.0;
    p = p * x + 1.0 / 6.0;
    p = p * x + 0.5;
    // ±0 itself (the sum would turn -0 into +0).
    let near = if x == 0.0 { x } else { x + x * (x * p) };
    let far = exp_f32(x) - 1.0;
    if x.abs() < 0.5 { near } else { far }
}

/// ln(1 + x) in f32 without a library call: Kahan's `ln(u) x / (u - 1)`
/// with u = 1 + x (Eigen's `plog1p`); x itself where u rounds to 1. Within
/// 2 ulp (tested against f64 `ln_1p`); -inf at -1, NaN below.
#[inline(always)]
pub fn ln1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    let r = ln_f32(u) * (x / (u - 1.0));
    let r = if u == f32::INFINITY { u } else { r };
    if u == 1.0 { x } else { r }
}

/// tanh in f32 without a library call, so that loops over it vectorize:
/// its odd Taylor series below 0.3, Eigen's 13/6-degree rational
/// interpolant (its `ptanh` for floats) up to 0.625, and
/// `1 - 2 / (e^2|x| + 1)` beyond, which keeps 1 - tanh² (the gradient)
/// accurate toward ±1.
/// Within 3 ulp (tested against f64 `tanh`); ±0 and NaN stay, ±1 from ±10.
#[allow(clippy::excessive_precision, clippy::manual_clamp)]
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    // Comparisons, not `clamp`: NaN passes through them. tanh(±10)
    // rounds to ±1.
    let c = if x > 10.0 {
        10.0
    } else if x < -10.0 {
        -10.0
    } else {
        x
    };
    let x2 = c * c;
    let mut p = -2.760_768_477_423_55e-16f32;
    p = p * x2 + 2.000_187_904_824_77e-13;
    p = p * x2 - 8.604_671_522_137_35e-11;
    p = p * x2 + 5.122_297_090_371_14e-8;
    p = p * x2 + 1.485_722_357_179_79e-5;
    p = p * x2 + 6.372_619_288_754_36e-4;
    p = p * x2 + 4.893_524_558_917_86e-3;
    let mut q = 1.198_258_394_667_02e-6f32;
    q = q * x2 + 1.185_347_056_866_54e-4;
    q = q * x2 + 2.268_434_632_439_00e-3;
    q = q * x2 + 4.893_525_185_543_85e-3;
    let r = c * p / q;
    // Toward ±1 the interpolant's absolute error (up to 6 ulp of 1) would
    // dominate 1 - tanh², which gradients use: 1 - 2 / (e^2|x| + 1) there
    // is within an ulp, and its error shrinks with 1 - |tanh|.
    let big = 1.0 - 2.0 / (exp_f32(2.0 * c.abs()) + 1.0);
    // Near 0 the interpolant's relative error grows to 4 ulp: the odd
    // Taylor series to x¹¹ is within an ulp below 0.3.
    let mut t = -1382.0f32 / 155_925.0;
    t = t * x2 + 62.0 / 2835.0;
    t = t * x2 - 17.0 / 315.0;
    t = t * x2 + 2.0 / 15.0;
    t = t * x2 - 1.0 / 3.0;
    let small = c * (1.0 + x2 * t);
    if c.abs() < 0.3 {
        small
    } else if c.abs() < 0.625 {
        r
    } else {
        big.copysign(x)
    }
}

/// erf to about 1e-15: Taylor series near 0, Lentz's continued fraction for erfc beyond.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x.is_infinite() {
        return x.signum();
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
    if x.is_sign_negative() { -r } else { r }
}

/// erf in f32 without a library call, so that loops over it vectorize
/// (exact GELU, Keras' default, is built on it): an odd polynomial in x
/// up to |x| = 0.927734375, and 1 - e^(-|x| p(|x|)) beyond (Norbert
/// Juffa's minimax fits). Within an ulp (tested against [`erf_f64`]);
/// ±0 and NaN stay, ±1 from about ±3.9.
#[allow(clippy::excessive_precision, clippy::manual_clamp)]
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let t = x.abs();
    let s = x * x;
    let mut small = -5.967_617_03e-4f32;
    small = small * s + 4.991_194_23e-3;
    small = small * s - 2.676_813_49e-2;
    small = small * s + 1.128_199_25e-1;
    small = small * s - 3.761_253_36e-1;
    small = small * s + 1.283_791_66e-1;
    let small = small * x + x;
    // Comparison, not `min`: NaN passes through it; erf(4) rounds to 1.
    let c = if t > 4.0 { 4.0 } else { t };
    let mut r = -1.728_534_70e-5f32 * c + 3.831_971_26e-4;
    let u = -3.883_964_38e-3 * c + 2.425_462_19e-2;
    r = r * (c * c) + u;
    r = r * c - 1.067_778_77e-1;
    r = r * c - 6.348_466_87e-1;
    r = r * c - 1.287_175_12e-1;
    r = r * c - c;
    let big = (1.0 - exp_f32(r)).copysign(x);
    if t > 0.927_734_375 { big } else { small }
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
    use super::{erf_f32, erf_f64, exp_f32, expm1_f32, ln_f32, ln1p_f32, tanh_f32};

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

    /// The worst error in ulp of `f` against `want` (f64, rounded to f32)
    /// over every 97th f32 bit pattern of either sign and a sweep of
    /// [-20, 20] in steps of 1/1024, where `want` is finite; asserts it is
    /// at most `bound`.
    fn sweep(name: &str, f: fn(f32) -> f32, want: fn(f64) -> f64, bound: u32) {
        let mut worst = (0u32, 0.0f32);
        let mut check = |x: f32| {
            let w = want(x as f64) as f32;
            if !w.is_finite() {
                return;
            }
            let got = f(x);
            let e = if got == w {
                0
            } else if got.is_sign_negative() != w.is_sign_negative() {
                u32::MAX
            } else {
                ulps(got, w)
            };
            assert!(e <= bound, "{name}({x:e}) = {got:e}, want {w:e} ({e} ulp)");
            if e > worst.0 {
                worst = (e, x);
            }
        };
        for bits in (0..0x7f80_0000u32).step_by(97) {
            check(f32::from_bits(bits));
            check(-f32::from_bits(bits));
        }
        let mut x = -20.0f32;
        while x < 20.0 {
            check(x);
            x += 1.0 / 1024.0;
        }
        eprintln!("{name}: worst {} ulp at {:e}", worst.0, worst.1);
    }

    #[test]
    fn ln_f32_is_within_one_ulp() {
        sweep("ln", ln_f32, f64::ln, 1);
        for x in [f32::MIN_POSITIVE, 1e-45, 3e-40, f32::MAX, 1.0, 2.0, 0.5] {
            let want = (x as f64).ln() as f32;
            assert!(ulps(ln_f32(x), want) <= 1, "ln({x:e})");
        }
    }

    #[test]
    fn expm1_and_ln1p_are_within_two_ulp() {
        sweep("expm1", expm1_f32, f64::exp_m1, 2);
        sweep("ln1p", ln1p_f32, f64::ln_1p, 2);
    }

    #[test]
    fn erf_f32_is_within_one_ulp() {
        sweep("erf", erf_f32, erf_f64, 1);
    }

    #[test]
    fn tanh_f32_is_within_three_ulp() {
        sweep("tanh", tanh_f32, f64::tanh, 3);
    }

    /// Special values as IEEE and TensorFlow give them.
    #[test]
    fn transcendental_edges() {
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        let cases: [(fn(f32) -> f32, f32, f32); 32] = [
            (ln_f32, 0.0, f32::NEG_INFINITY),
            (ln_f32, -0.0, f32::NEG_INFINITY),
            (ln_f32, -1.0, f32::NAN),
            (ln_f32, f32::NEG_INFINITY, f32::NAN),
            (ln_f32, f32::INFINITY, f32::INFINITY),
            (ln_f32, f32::NAN, f32::NAN),
            (ln_f32, 1.0, 0.0),
            (expm1_f32, 0.0, 0.0),
            (expm1_f32, -0.0, -0.0),
            (expm1_f32, f32::NEG_INFINITY, -1.0),
            (expm1_f32, f32::INFINITY, f32::INFINITY),
            (expm1_f32, 100.0, f32::INFINITY),
            (expm1_f32, -100.0, -1.0),
            (expm1_f32, f32::NAN, f32::NAN),
            (ln1p_f32, -0.0, -0.0),
            (ln1p_f32, -1.0, f32::NEG_INFINITY),
            (ln1p_f32, -2.0, f32::NAN),
            (ln1p_f32, f32::INFINITY, f32::INFINITY),
            (ln1p_f32, f32::NAN, f32::NAN),
            (tanh_f32, 0.0, 0.0),
            (tanh_f32, -0.0, -0.0),
            (tanh_f32, f32::INFINITY, 1.0),
            (tanh_f32, f32::NEG_INFINITY, -1.0),
            (tanh_f32, 20.0, 1.0),
            (tanh_f32, 1e-30, 1e-30),
            (tanh_f32, f32::NAN, f32::NAN),
            (erf_f32, 0.0, 0.0),
            (erf_f32, -0.0, -0.0),
            (erf_f32, f32::INFINITY, 1.0),
            (erf_f32, f32::NEG_INFINITY, -1.0),
            (erf_f32, 5.0, 1.0),
            (erf_f32, f32::NAN, f32::NAN),
        ];
        for (i, (f, x, want)) in cases.into_iter().enumerate() {
            assert!(same(f(x), want), "case {i}: f({x:e}) = {:e}, want {want:e}", f(x));
        }
    }
}
