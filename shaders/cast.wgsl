// dtype conversion. Buffers are raw 32-bit words so that f16 data can be
// read and written as packed pairs on adapters without SHADER_F16; each
// invocation converts elements 2i and 2i+1. Codes (p.src, p.dst): 0 f32,
// 1 f16, 2 i32, 3 bool.

struct Params {
    n: u32,
    src: u32,
    dst: u32,
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn load(j: u32) -> f32 {
    switch p.src {
        case 1u: {
            return unpack2x16float(src[j >> 1u])[j & 1u];
        }
        case 2u: {
            return f32(bitcast<i32>(src[j]));
        }
        case 3u: {
            return select(0.0, 1.0, src[j] != 0u);
        }
        default: {
            return bitcast<f32>(src[j]);
        }
    }
}

fn store(j: u32, x: f32) {
    switch p.dst {
        case 2u: {
            // Truncate toward zero, NaN to 0, out-of-range values saturate (as Rust's `as`).
            var v = 0;
            if (x == x) {
                v = i32(clamp(trunc(x), -2147483648.0, 2147483520.0));
            }
            dst[j] = bitcast<u32>(v);
        }
        case 3u: {
            dst[j] = select(0u, 1u, x != 0.0);
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
    if (p.dst == 1u) {
        dst[i] = pack2x16float(vec2<f32>(a, b));
    } else {
        store(j, a);
        if (has2) {
            store(j + 1u, b);
        }
    }
}
