// Variant prelude: 32-bit words (booleans, and bit-exact copies of f32/i32).
alias T = u32;
// Accumulator type of reductions and dot products.
alias Acc = u32;

fn t_div(a: T, b: T) -> T {
    return select(a / max(b, 1u), a, b == 0u);
}

fn t_pow(a: T, b: T) -> T {
    var r = 1u;
    var base = a;
    var e = b;
    while (e > 0u) {
        if ((e & 1u) != 0u) { r = r * base; }
        base = base * base;
        e = e >> 1u;
    }
    return r;
}

fn t_from_bits(bits: u32) -> T {
    return bits;
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
