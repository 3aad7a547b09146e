// Variant prelude: element type f32.
alias T = f32;
// Accumulator type of reductions and dot products.
alias Acc = f32;

fn t_div(a: T, b: T) -> T {
    return f32_div(a, b);
}

fn t_pow(a: T, b: T) -> T {
    return f32_pow(a, b);
}

// Fill values arrive as f32 bits for float types, i32 bits otherwise.
fn t_from_bits(bits: u32) -> T {
    return bitcast<f32>(bits);
}

fn t_is_nan(v: T) -> bool {
    return f32_is_nan(v);
}
fn acc_is_nan(v: Acc) -> bool {
    return f32_is_nan(v);
}

// The most extreme finite values of the element type, as the accumulator
// (`NumTraits<T>::lowest()` and `highest()`: TensorFlow's argmax and
// argmin start from them).
fn acc_lowest() -> Acc {
    return -3.4028234663852886e38;
}
fn acc_highest() -> Acc {
    return 3.4028234663852886e38;
}
