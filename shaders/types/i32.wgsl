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
    return bitcast<i32>(0x80000000u);
}
fn acc_highest() -> Acc {
    return 2147483647;
}
