// int8 weights, four to a 32-bit word (low byte first), times a scale per
// row: dst[r, j] = f32(int8 j of row r) * scales[r], rows of `words` words
// and `cols` values (the last word of a row may be partly padding).
//
// Bindings: 1 packed words, 2 dst (f32), 3 scales (f32).

struct Dequant {
    n: u32,
    cols: u32,
    words: u32,
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Dequant;
@group(0) @binding(1) var<storage, read> packed: array<i32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;

@compute @workgroup_size(256)
fn dequantize_int8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let r = i / p.cols;
    let j = i % p.cols;
    dst[i] = int8_at(packed[r * p.words + j / 4u], j) * scales[r];
}
