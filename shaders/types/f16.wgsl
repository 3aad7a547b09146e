// Variant prelude: element type f16 (adapters with SHADER_F16).
enable f16;
alias T = f16;
// Accumulator type of reductions and dot products.
alias Acc = f32;

fn t_div(a: T, b: T) -> T {
    return a / b;
}

fn t_pow(a: T, b: T) -> T {
    return pow(a, b);
}

fn t_from_bits(bits: u32) -> T {
    return T(bitcast<f32>(bits));
}
