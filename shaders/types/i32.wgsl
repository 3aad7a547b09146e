// Variant prelude: element type i32.
alias T = i32;
// Accumulator type of reductions and dot products.
alias Acc = i32;

// WGSL defines x / 0 = x and MIN / -1 = MIN, but not every backend
// implements that (GLSL leaves it undefined), so spell it out.
fn t_div(a: T, b: T) -> T {
    if (b == 0) {
        return a;
    }
    if (b == -1) {
        return 0 - a;
    }
    return a / b;
}

// Integer power by squaring; negative exponents give 0 except for bases 1 and -1.
fn t_pow(a: T, b: T) -> T {
    if (b < 0) {
        if (a == 1) { return 1; }
        if (a == -1) { return select(1, -1, (b & 1) != 0); }
        return 0;
    }
    var r = 1;
    var base = a;
    var e = b;
    while (e > 0) {
        if ((e & 1) != 0) { r = r * base; }
        base = base * base;
        e = e >> 1u;
    }
    return r;
}

fn t_from_bits(bits: u32) -> T {
    return bitcast<i32>(bits);
}

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

fn t_is_nan(v: T) -> bool {
    return false;
}
fn acc_is_nan(v: Acc) -> bool {
    return false;
}
