// IEEE 754 helpers on f32 shared by every kernel (appended to each type
// prelude by `Kernel::source`).

// IEEE special values, tested by their bits: WGSL leaves NaN and infinity
// handling to the implementation (comparisons, min, max and clamp with NaN,
// and a compiler may assume NaN never occurs), and rejects infinite or NaN
// constants, so the kernels build them at run time from an operand's bits.
fn f32_is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}
fn f32_is_inf(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) == 0x7f800000u;
}
// The sign bit (true for -0 and -inf).
fn f32_is_neg(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x80000000u) != 0u;
}
// Infinity with the sign of s.
fn f32_inf(s: f32) -> f32 {
    return bitcast<f32>((bitcast<u32>(s) & 0x80000000u) | 0x7f800000u);
}
// A quiet NaN (whatever v is).
fn f32_nan(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) | 0x7fc00000u);
}
// max and min that propagate NaN, as TensorFlow's maximum, minimum,
// reduce_max and max_pool do.
fn f32_max_nan(a: f32, b: f32) -> f32 {
    return select(select(max(a, b), b, f32_is_nan(b)), a, f32_is_nan(a));
}
fn f32_min_nan(a: f32, b: f32) -> f32 {
    return select(select(min(a, b), b, f32_is_nan(b)), a, f32_is_nan(a));
}

// C's pow (TensorFlow's): x^0 = 1 and 1^y = 1 even for NaN; a negative
// base with an integer exponent keeps the sign of (-1)^y; a finite
// negative base with a non-integer exponent is NaN; zeros and infinities
// as IEEE 754 says. WGSL's pow is exp2(y * log2(x)), NaN for x < 0.
fn f32_pow(x: f32, y: f32) -> f32 {
    let ax = abs(x);
    let ay = abs(y);
    let y_int = floor(y) == y;
    let y_odd = y_int && ay < 16777216.0 && fract(y * 0.5) != 0.0;
    var m = select(pow(ax, y), ax * ax, y == 2.0);
    if (ax == 0.0) {
        m = select(f32_inf(1.0), 0.0, y > 0.0);
    }
    if (f32_is_inf(x)) {
        m = select(0.0, ax, y > 0.0);
    }
    if (f32_is_inf(y)) {
        m = select(select(0.0, f32_inf(1.0), (ax > 1.0) == (y > 0.0)), 1.0, ax == 1.0);
    }
    var r = select(m, -m, f32_is_neg(x) && y_odd);
    r = select(r, f32_nan(x), (x < 0.0 && !y_int && !f32_is_inf(x)) || f32_is_nan(x) || f32_is_nan(y));
    return select(r, 1.0, y == 0.0 || x == 1.0);
}

// IEEE division by zero: +-inf, or NaN for 0 / 0 and NaN / 0.
fn f32_div(a: f32, b: f32) -> f32 {
    let q = a / b;
    let inf = bitcast<f32>(((bitcast<u32>(a) ^ bitcast<u32>(b)) & 0x80000000u) | 0x7f800000u);
    return select(q, select(inf, f32_nan(a), a == 0.0 || f32_is_nan(a)), b == 0.0);
}
