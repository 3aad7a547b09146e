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

fn t_is_nan(v: T) -> bool {
    return false;
}
fn acc_is_nan(v: Acc) -> bool {
    return false;
}

// The most extreme finite values of the element type, as the accumulator
// (`NumTraits<T>::lowest()` and `highest()`: TensorFlow's argmax and
// argmin start from them).
fn acc_lowest() -> Acc {
    return 0u;
}
fn acc_highest() -> Acc {
    return 0xffffffffu;
}
