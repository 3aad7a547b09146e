// dtype conversion. Buffers are raw 32-bit words so that f16 and bf16 data
// can be read and written as packed pairs (WGSL has no bf16, and f16 only
// with SHADER_F16); each invocation converts elements 2i and 2i+1. Codes
// (SRC, DST): 0 f32, 1 f16, 2 i32, 3 bool, 4 bf16. They are override
// constants, so each conversion is its own pipeline of straight-line code
// (llvmpipe runs a switch on a uniform through every case).

override SRC: u32 = 0u;
override DST: u32 = 0u;

struct Params {
    n: u32,
    // SRC and DST again, not read here.
    src: u32,
    dst: u32,
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn load(j: u32) -> f32 {
    switch SRC {
        case 1u: {
            return unpack2x16float(src[j >> 1u])[j & 1u];
        }
        case 2u: {
            return f32(bitcast<i32>(src[j]));
        }
        case 3u: {
            return select(0.0, 1.0, src[j] != 0u);
        }
        case 4u: {
            // A bf16 is the upper half of the f32 with the same bits.
            return bitcast<f32>(((src[j >> 1u] >> ((j & 1u) * 16u)) & 0xffffu) << 16u);
        }
        default: {
            return bitcast<f32>(src[j]);
        }
    }
}

// x rounded to f16, as bits: pack2x16float leaves values outside f16's
// finite range (infinities included) and NaN indeterminate.
fn f16_bits(x: f32) -> u32 {
    let s = (bitcast<u32>(x) >> 16u) & 0x8000u;
    if (f32_is_nan(x)) {
        return s | 0x7e00u;
    }
    if (abs(x) >= 65520.0) {
        return s | 0x7c00u;
    }
    return pack2x16float(vec2<f32>(x, 0.0)) & 0xffffu;
}

// x rounded to bf16 (to nearest, ties to even), as bits; NaN stays NaN
// (quieted, sign kept), as Rust's half::bf16, the CPU reference's.
fn bf16_bits(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    if (f32_is_nan(x)) {
        return ((u >> 16u) | 0x40u) & 0xffffu;
    }
    return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}

fn store(j: u32, x: f32) {
    switch DST {
        case 2u: {
            // Truncate toward zero; NaN, infinities and out-of-range
            // values give i32's minimum, as TensorFlow's x86 kernel (the
            // hardware's conversion) does.
            var v = -2147483647 - 1;
            if (!f32_is_nan(x) && x >= -2147483648.0 && x < 2147483648.0) {
                v = i32(trunc(x));
            }
            dst[j] = bitcast<u32>(v);
        }
        case 3u: {
            // Nonzero is true, NaN included (NaN != 0); -0 is false.
            dst[j] = select(0u, 1u, (bitcast<u32>(x) & 0x7fffffffu) != 0u);
        }
        default: {
            dst[j] = bitcast<u32>(x);
        }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    let j = 2u * i;
    if (j >= p.n) {
        return;
    }
    let has2 = j + 1u < p.n;
    let a = load(j);
    var b = 0.0;
    if (has2) {
        b = load(j + 1u);
    }
    if (DST == 1u) {
        dst[i] = f16_bits(a) | (f16_bits(b) << 16u);
    } else if (DST == 4u) {
        dst[i] = bf16_bits(a) | (bf16_bits(b) << 16u);
    } else {
        store(j, a);
        if (has2) {
            store(j + 1u, b);
        }
    }
}
