// 2-D convolution with an int8 filter (the geometry and the patches are in
// conv_patch.wgsl), forward only (mode 0): output channel o's filter is row
// o of `wq`, the taps (kh, kw, ci) as the values of its words, times
// scales[o]. Each value is expanded where a tile is loaded, so the f32
// filter never exists in memory; the product is the same as the float
// convolution with the dequantized filter.
//
// Bindings: 1 x, 2 wq (int8 rows of p.words words), 3 y, 4 scales.

@group(0) @binding(2) var<storage, read> wq: array<i32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;

fn b_at(b: u32, k: u32, n: u32) -> f32 {
    let g = b / p.splits;
    let kg = (b % p.splits) * p.kc + k;
    if (n >= p.gn || k >= p.kc || kg >= p.ktotal) {
        return 0.0;
    }
    let o = g * p.og + n;
    return int8_at(wq[o * p.words + kg / 4u], kg) * scales[o];
}

fn store_c(b: u32, m: u32, n: u32, v: f32) {
    let g = b / p.splits;
    dst[m * p.o + g * p.og + n] = v;
}
