// Matrix products with int8 weights for the GEMM core (gemm.wgsl):
//   C[b](m, n) = sum_k A[b](m, k) * W(b * rows + n, k)
// A row-major (a[b * sa + m * lda + k]); W row r is wq's words
// [r * words, (r + 1) * words) read as int8 values times scales[r], each
// expanded where a tile is loaded, so the f32 weights never exist in
// memory; C at c[b * sc + m * ldc + n]. Batch entries are the groups of a
// grouped convolution's patch matrices (one for a plain matmul).
//
// Bindings: 1 a, 2 wq, 3 c, 4 scales.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    b0: u32,
    lda: u32,
    ldc: u32,
    sa: u32,
    sc: u32,
    // W rows per batch entry.
    rows: u32,
    words: u32,
    tx0: u32,
    ty0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> wq: array<i32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;

fn gemm_dims() -> vec4<u32> {
    return vec4<u32>(p.m, p.n, p.k, p.b0);
}

fn gemm_tile0() -> vec2<u32> {
    return vec2<u32>(p.tx0, p.ty0);
}

fn a_at(b: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    return a[b * p.sa + m * p.lda + k];
}

fn b_at(b: u32, k: u32, n: u32) -> f32 {
    if (n >= p.n || k >= p.k) {
        return 0.0;
    }
    let r = b * p.rows + n;
    return int8_at(wq[r * p.words + k / 4u], k) * scales[r];
}

fn store_c(b: u32, m: u32, n: u32, v: f32) {
    c[b * p.sc + m * p.ldc + n] = v;
}

// The register path (CPU adapters, grid like gemm_reg's: x = ceil(N / 64),
// y = ceil(M / 4), z = batches): each lane holds a 4x4 block of C as in
// gemm_reg, but reads its four columns' weights a word, four values of k,
// at a time, with their scales loaded once, instead of one bounds-checked
// word per value.
@compute @workgroup_size(16, 1)
fn gemm_reg_int8(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.z + p.b0;
    let m = (wid.y + p.ty0) * 4u;
    let n = ((wid.x + p.tx0) * 16u + lid.x) * 4u;
    // Columns past N read row 0 with a zero scale; they are never stored.
    var rows = vec4<u32>(0u);
    var s = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.n) {
            rows[j] = (b * p.rows + n + j) * p.words;
            s[j] = scales[b * p.rows + n + j];
        }
    }
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var kw = 0u; kw < p.words; kw++) {
        let w = vec4<i32>(wq[rows.x + kw], wq[rows.y + kw], wq[rows.z + kw], wq[rows.w + kw]);
        // The last word's padding past K is never read.
        let kn = min(4u, p.k - kw * 4u);
        for (var j = 0u; j < kn; j++) {
            let k = kw * 4u + j;
            let v = vec4<f32>(int8_at(w.x, j), int8_at(w.y, j), int8_at(w.z, j), int8_at(w.w, j)) * s;
            c0 += a_at(b, m, k) * v;
            c1 += a_at(b, m + 1u, k) * v;
            c2 += a_at(b, m + 2u, k) * v;
            c3 += a_at(b, m + 3u, k) * v;
        }
    }
    store_block(b, m, n, array<vec4<f32>, 4>(c0, c1, c2, c3));
}
