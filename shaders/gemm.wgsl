// GEMM core, shared by matmul and the convolutions:
//   C[b](m, n) = sum_k A[b](m, k) * B[b](k, n)
// Two entry points over the same operand functions:
//
// `gemm` (GPUs): 64x64 output tiles per workgroup of 16x16 invocations, each
// holding a 4x4 block of accumulators in registers; K advances 16 at a time
// through workgroup memory laid out [k][m/4] and [k][n/4] as vec4s, so the
// inner loop is two vec4 loads and four vec4 FMAs.
//
// `gemm_reg` (CPU adapters such as llvmpipe, which run invocations as SIMD
// lanes and pay a bounds-checked scalar load per lane per element): no
// workgroup memory; a workgroup of 16 lanes shares 4 rows, so the A loads
// are uniform, and each lane holds a 4x4 block, so every B element a lane
// loads feeds four FMAs.
//
// The including file defines:
//   fn gemm_dims() -> vec4<u32>   (M, N, K, batch offset)
//   fn gemm_tile0() -> vec2<u32>  first tile along N and M of this launch (the
//       host splits grids past the workgroup limit into several launches)
//   fn a_at(b: u32, m: u32, k: u32) -> f32   zero outside the matrix
//   fn b_at(b: u32, k: u32, n: u32) -> f32   zero outside the matrix
//   fn b4_at(b: u32, k: u32, n: u32) -> vec4<f32>   B(k, n..n+4)
//   fn load_tiles(b: u32, m0: u32, n0: u32, k0: u32, t: u32)
//       fills ta[k * 16 + m / 4][m % 4] and tb[k * 16 + n / 4][n % 4] for
//       the tile at (m0, n0, k0), zero outside the matrices; t in [0, 256)
//   fn store_c(b: u32, m: u32, n: u32, v: f32)

const TM = 64u;
const TN = 64u;
const TK = 16u;

var<workgroup> ta: array<vec4<f32>, 256>;
var<workgroup> tb: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let dims = gemm_dims();
    let b = wid.z + dims.w;
    let t0 = gemm_tile0();
    let m0 = (wid.y + t0.y) * TM;
    let n0 = (wid.x + t0.x) * TN;
    let t = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < dims.z; k0 += TK) {
        load_tiles(b, m0, n0, k0, t);
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let a = ta[k * 16u + lid.y];
            let v = tb[k * 16u + lid.x];
            acc[0] += a.x * v;
            acc[1] += a.y * v;
            acc[2] += a.z * v;
            acc[3] += a.w * v;
        }
        workgroupBarrier();
    }
    store_block(b, m0 + lid.y * 4u, n0 + lid.x * 4u, acc);
}

fn store_block(b: u32, m: u32, n: u32, acc: array<vec4<f32>, 4>) {
    store_row(b, m, n, acc[0]);
    store_row(b, m + 1u, n, acc[1]);
    store_row(b, m + 2u, n, acc[2]);
    store_row(b, m + 3u, n, acc[3]);
}

fn store_row(b: u32, m: u32, n: u32, v: vec4<f32>) {
    let dims = gemm_dims();
    if (m < dims.x) {
        if (n < dims.y) {
            store_c(b, m, n, v.x);
        }
        if (n + 1u < dims.y) {
            store_c(b, m, n + 1u, v.y);
        }
        if (n + 2u < dims.y) {
            store_c(b, m, n + 2u, v.z);
        }
        if (n + 3u < dims.y) {
            store_c(b, m, n + 3u, v.w);
        }
    }
}

// Grid: x = ceil(N / 64), y = ceil(M / 4), z = batches.
@compute @workgroup_size(16, 1)
fn gemm_reg(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let dims = gemm_dims();
    let b = wid.z + dims.w;
    let t0 = gemm_tile0();
    let m = (wid.y + t0.y) * 4u;
    let n = ((wid.x + t0.x) * 16u + lid.x) * 4u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k = 0u; k < dims.z; k++) {
        let v = b4_at(b, k, n);
        c0 += a_at(b, m, k) * v;
        c1 += a_at(b, m + 1u, k) * v;
        c2 += a_at(b, m + 2u, k) * v;
        c3 += a_at(b, m + 3u, k) * v;
    }
    store_block(b, m, n, array<vec4<f32>, 4>(c0, c1, c2, c3));
}
