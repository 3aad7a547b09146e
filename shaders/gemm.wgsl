// Tiled GEMM core, shared by matmul and the convolutions:
//   C[b](m, n) = sum_k A[b](m, k) * B[b](k, n)
// in 64x64 output tiles, 16x16 invocations, each holding a 4x4 block of
// accumulators in registers; K advances 16 at a time through workgroup
// memory laid out [k][m/4] and [k][n/4] as vec4s, so the inner loop is two
// vec4 loads and four vec4 FMAs.
//
// The including file defines the operands:
//   fn gemm_dims() -> vec4<u32>   (M, N, K, batch offset)
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
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
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
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        if (m >= dims.x) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (n < dims.y) {
                store_c(b, m, n, acc[i][j]);
            }
        }
    }
}
