// Scalar loaders for the GEMM core (gemm.wgsl) from the including file's
// `a_at` and `b_at`: for operands with no vec4 layout to exploit (gathered
// patches, int8 weights).

fn b4_at(b: u32, k: u32, n: u32) -> vec4<f32> {
    return vec4<f32>(b_at(b, k, n), b_at(b, k, n + 1u), b_at(b, k, n + 2u), b_at(b, k, n + 3u));
}

fn load_tiles(b: u32, m0: u32, n0: u32, k0: u32, t: u32) {
    let m = t / 4u;
    let kq = (t % 4u) * 4u;
    for (var j = 0u; j < 4u; j++) {
        ta[(kq + j) * 16u + m / 4u][m % 4u] = a_at(b, m0 + m, k0 + kq + j);
    }
    let k = t / 16u;
    let nq = (t % 16u) * 4u;
    for (var j = 0u; j < 4u; j++) {
        tb[k * 16u + (nq + j) / 4u][j] = b_at(b, k0 + k, n0 + nq + j);
    }
}
