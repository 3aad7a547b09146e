// The elementwise math every kernel that applies ops by code shares: the
// unary, binary and comparison kernels (code from a uniform) and the fused
// kernels a compiled graph generates (codes as literals, which the compiler
// folds). Codes are the op enums' positions in ops/unary.rs and
// ops/binary.rs. Unary math runs in f32; binary ops in T.

// Abramowitz & Stegun 7.1.26: |error| < 1.5e-7; the series near 0 (which
// keeps erf(-0) = -0 and the relative error small).
fn erf_approx(v: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(v));
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    let e = sign(v) * (1.0 - poly * f32_exp(-v * v));
    return select(e, 1.1283791670955126 * v * (1.0 - v * v / 3.0), abs(v) < 1e-3);
}

// Special values spelled out (TensorFlow's, which are C's): exp(+-inf) is
// inf and 0, log(0) = -inf, log(x < 0) = NaN.
fn f32_exp(v: f32) -> f32 {
    return select(exp(v), select(0.0, v, v > 0.0), f32_is_inf(v));
}

fn f32_log(v: f32) -> f32 {
    var r = select(log(v), v, f32_is_inf(v));
    r = select(r, f32_inf(-1.0), v == 0.0);
    return select(r, f32_nan(v), v < 0.0);
}

// expm1 and log1p: exp(v) - 1 and log(1 + v) lose digits near 0 (1 + v
// rounds: softplus(-20) came out 0 instead of 2.06e-9), so their series
// there, in Horner form so that -0 stays -0. The terms kept leave under
// 2e-8 relative error at the switch points.
fn f32_expm1(v: f32) -> f32 {
    let s = v * (1.0 + v * (1.0 / 2.0 + v * (1.0 / 6.0 + v * (1.0 / 24.0 + v * (1.0 / 120.0
        + v * (1.0 / 720.0 + v * (1.0 / 5040.0 + v * (1.0 / 40320.0 + v / 362880.0))))))));
    return select(f32_exp(v) - 1.0, s, abs(v) < 0.5);
}

fn f32_log1p(v: f32) -> f32 {
    let s = v * (1.0 - v * (1.0 / 2.0 - v * (1.0 / 3.0 - v * (1.0 / 4.0 - v * (1.0 / 5.0 - v * (1.0 / 6.0
        - v * (1.0 / 7.0 - v * (1.0 / 8.0 - v * (1.0 / 9.0 - v * (1.0 / 10.0 - v / 11.0))))))))));
    return select(f32_log(1.0 + v), s, abs(v) < 0.25);
}

// Some drivers compute tanh through exp and return NaN for large |v|
// (and lose the digits and the sign of zero near 0: the series there).
fn tanh_safe(v: f32) -> f32 {
    let t = select(tanh(v), sign(v), abs(v) > 10.0);
    return select(t, v * (1.0 - v * v / 3.0), abs(v) < 1e-3);
}

// sin and cos of v reduced to [-pi, pi] first: NVIDIA's Vulkan sin and
// cos are accurate only near 0 (sin(60) came out 7e-6 off), C's
// everywhere. 2 pi is split Cody-Waite style into 6.28125 (8 significant
// bits) and 4059 / 2^21 (12 bits), whose products with k are exact for
// |v| below about 25,000 (k < 2^12) whether or not a driver fuses them,
// and a small f32 rest; the reduced argument stays within 1e-6 of the
// exact one up to |v| of about 1e5, and drifts beyond. Small |v| goes in
// as it is, which keeps sin(-0) = -0.
fn reduce_2pi(v: f32) -> f32 {
    let k = round(v * 0.15915493667125702);
    var r = v - k * 6.28125;
    r -= k * 0.0019354820251464844;
    r -= k * -1.7484555314695172e-7;
    return select(r, v, abs(v) < 3.14159);
}

fn f32_sin(v: f32) -> f32 {
    return select(sin(reduce_2pi(v)), f32_nan(v), f32_is_inf(v));
}

fn f32_cos(v: f32) -> f32 {
    return select(cos(reduce_2pi(v)), f32_nan(v), f32_is_inf(v));
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + f32_exp(-v));
}

// Generated kernels pass every operand of an op through `opaque`, with a
// zero the compiler cannot know (the grid's z count less one: 1 in every
// launch, see gpu::grid) times a salt unique to the use. Each op then
// computes what its own kernel computes from operands read from memory:
// compilers' algebra that assumes finite values (x - x = 0, x * 0 = 0,
// x / x = 1) does not fold away TensorFlow's NaN, and no FMA contracts
// two ops into one rounding.
fn opaque(v: f32, zero: u32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ zero);
}

// NaN in gives NaN out for every op (relu and sign included, as in
// TensorFlow); the other special values are handled per op.
fn unary_apply(op: u32, v: f32, alpha: f32) -> f32 {
    return select(unary_finite(op, v, alpha), v, f32_is_nan(v));
}

fn unary_finite(op: u32, v: f32, alpha: f32) -> f32 {
    switch op {
        case 0u: { return -v; }
        case 1u: { return abs(v); }
        case 2u: { return select(select(v, -1.0, v < 0.0), 1.0, v > 0.0); }
        case 3u: { return f32_exp(v); }
        case 4u: { return f32_expm1(v); }
        case 5u: { return f32_log(v); }
        case 6u: { return f32_log1p(v); }
        case 7u: { return select(select(sqrt(v), f32_nan(v), v < 0.0), v, v == 0.0 || (f32_is_inf(v) && v > 0.0)); }
        case 8u: {
            let r = select(select(inverseSqrt(v), f32_nan(v), v < 0.0), 0.0, f32_is_inf(v) && v > 0.0);
            return select(r, f32_inf(v), v == 0.0);
        }
        case 9u: { return v * v; }
        case 10u: { return select(1.0 / v, f32_inf(v), v == 0.0); }
        case 11u: { return f32_sin(v); }
        case 12u: { return f32_cos(v); }
        case 13u: { return tanh_safe(v); }
        case 14u: { return sigmoid(v); }
        case 15u: { return max(v, 0.0); }
        case 16u: { return clamp(v, 0.0, 6.0); }
        case 17u: { return select(f32_exp(v) - 1.0, v, v > 0.0); }
        case 18u: { return 1.0507009873554805 * select(1.6732632423543772 * (f32_exp(v) - 1.0), v, v > 0.0); }
        case 19u: { return max(v, 0.0) + f32_log1p(f32_exp(-abs(v))); }
        case 20u: { return select(v / (1.0 + abs(v)), sign(v), f32_is_inf(v)); }
        case 21u: { return 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476)); }
        case 22u: {
            return 0.5 * v * (1.0 + tanh_safe(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        }
        case 23u: { return v * sigmoid(v); }
        case 24u: { return floor(v); }
        case 25u: { return ceil(v); }
        case 26u: { return round(v); }
        case 27u: { return erf_approx(v); }
        case 28u: { return select(alpha * v, v, v > 0.0); }
        default: { return v; }
    }
}

fn unary_deriv(op: u32, v: f32, r: f32, alpha: f32) -> f32 {
    switch op {
        case 0u: { return -1.0; }
        case 1u: { return sign(v); }
        case 3u: { return r; }
        case 4u: { return r + 1.0; }
        case 5u: { return 1.0 / v; }
        case 6u: { return 1.0 / (1.0 + v); }
        case 7u: { return 0.5 / r; }
        case 8u: { return -0.5 * r * r * r; }
        case 9u: { return 2.0 * v; }
        case 10u: { return -r * r; }
        case 11u: { return f32_cos(v); }
        case 12u: { return -f32_sin(v); }
        case 13u: { return 1.0 - r * r; }
        case 14u: { return r * (1.0 - r); }
        case 15u: { return select(0.0, 1.0, v > 0.0); }
        case 16u: { return select(0.0, 1.0, v > 0.0 && v < 6.0); }
        case 17u: { return select(1.0, r + 1.0, r < 0.0); }
        case 18u: { return select(1.0507009873554805, r + 1.0507009873554805 * 1.6732632423543772, r < 0.0); }
        case 19u: { return sigmoid(v); }
        case 20u: { return 1.0 / ((1.0 + abs(v)) * (1.0 + abs(v))); }
        case 21u: {
            return 0.5 * (1.0 + erf_approx(v * 0.7071067811865476)) + v * 0.3989422804014327 * exp(-0.5 * v * v);
        }
        case 22u: {
            let c = 0.7978845608028654;
            let t = tanh_safe(c * (v + 0.044715 * v * v * v));
            return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * c * (1.0 + 0.134145 * v * v);
        }
        case 23u: {
            let s = sigmoid(v);
            return s + v * s * (1.0 - s);
        }
        case 27u: { return 1.1283791670955126 * exp(-v * v); }
        case 28u: { return select(alpha, 1.0, v > 0.0); }
        // sign, floor, ceil, round: zero almost everywhere
        default: { return 0.0; }
    }
}

fn binary_apply(op: u32, x: T, y: T) -> T {
    switch op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return t_div(x, y); }
        case 4u: { return t_pow(x, y); }
        case 5u: { return t_max(x, y); }
        case 6u: { return t_min(x, y); }
        case 7u: { return (x - y) * (x - y); }
        case 8u: { return select(T(0), T(1), x != T(0) && y != T(0)); }
        case 9u: { return select(T(0), T(1), x != T(0) || y != T(0)); }
        case 10u: { return select(T(0), T(1), (x != T(0)) != (y != T(0))); }
        default: { return x; }
    }
}

// maximum and minimum propagate NaN, as in TensorFlow.
fn t_max(x: T, y: T) -> T {
    return select(select(max(x, y), y, t_is_nan(y)), x, t_is_nan(x));
}

fn t_min(x: T, y: T) -> T {
    return select(select(min(x, y), y, t_is_nan(y)), x, t_is_nan(x));
}

// IEEE comparisons: with a NaN operand only not_equal is true.
fn compare_apply(op: u32, x: T, y: T) -> bool {
    let nan = t_is_nan(x) || t_is_nan(y);
    switch op {
        case 0u: { return x == y && !nan; }
        case 1u: { return !(x == y) || nan; }
        case 2u: { return x < y && !nan; }
        case 3u: { return x <= y && !nan; }
        case 4u: { return x > y && !nan; }
        default: { return x >= y && !nan; }
    }
}
