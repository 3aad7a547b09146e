// Variant prelude: element type f16 (adapters with SHADER_F16).
enable f16;
alias T = f16;
// Accumulator type of reductions and dot products.
alias Acc = f32;

fn t_div(a: T, b: T) -> T {
    return select(a / b, T(f32_div(f32(a), f32(b))), b == T(0));
}

// In f32, rounded once.
fn t_pow(a: T, b: T) -> T {
    return T(f32_pow(f32(a), f32(b)));
}

fn t_from_bits(bits: u32) -> T {
    return T(bitcast<f32>(bits));
}

fn t_is_nan(v: T) -> bool {
    return f32_is_nan(f32(v));
}
fn acc_is_nan(v: Acc) -> bool {
    return f32_is_nan(v);
}

// The most extreme finite values of the element type, as the accumulator
// (`NumTraits<T>::lowest()` and `highest()`: TensorFlow's argmax and
// argmin start from them).
fn acc_lowest() -> Acc {
    return -65504.0;
}
fn acc_highest() -> Acc {
    return 65504.0;
}
