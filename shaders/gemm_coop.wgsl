// Cooperative-matrix (tensor core) GEMM core: entry `gemm_coop`, over the
// same operand functions as gemm.wgsl's entries (gemm_dims, gemm_tile0,
// a_at, b_at, store_c; matmul.wgsl's or conv.wgsl's), built only as the f16
// variant (T = f16: f16 A and B, f32 sums, C rounded to f16 once) for
// adapters with `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` that list
// 16x16x16 f16 x f16 + f32 and whose subgroups have 32 invocations.
//
// A workgroup of 128 invocations (four subgroups) owns a 64x64 tile of C;
// subgroup s holds the 32x32 quadrant (s / 2, s % 2) as four 16x16 f32
// accumulators. K advances 32 at a time: every invocation copies its share
// of the A and B tiles into workgroup memory through matmul.wgsl's a_at /
// b_at (zero outside the matrices, so edge tiles need no special case),
// then each subgroup multiplies its fragments. The accumulators go back
// through workgroup memory, so that only elements inside C are written.
// Workgroup memory: 4 + 4 + 8 KiB.

const CM = 64u;
const CN = 64u;
const CK = 32u;

var<workgroup> ca: array<f16, 2048>; // A tile [CM][CK]
var<workgroup> cb: array<f16, 2048>; // B tile [CK][CN]
var<workgroup> cc: array<f32, 2048>; // half a C tile [CM / 2][CN]

@compute @workgroup_size(128)
fn gemm_coop(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
) {
    let dims = gemm_dims();
    let b = wid.z + dims.w;
    let t0 = gemm_tile0();
    let m0 = (wid.y + t0.y) * CM;
    let n0 = (wid.x + t0.x) * CN;
    // The host launches this kernel only where subgroups have 32
    // invocations: sg is in [0, 4).
    let qm = (sg / 2u) * 32u;
    let qn = (sg % 2u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < dims.z; k0 += CK) {
        for (var i = t; i < CM * CK; i += 128u) {
            ca[i] = f16(a_at(b, m0 + i / CK, k0 + i % CK));
            cb[i] = f16(b_at(b, k0 + i / CN, n0 + i % CN));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < CK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&ca[qm * CK + kk], CK);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&ca[(qm + 16u) * CK + kk], CK);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&cb[kk * CN + qn], CN);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&cb[kk * CN + qn + 16u], CN);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    // C leaves through workgroup memory half a tile at a time (16 KiB in
    // all, WebGPU's default limit): the top subgroups' rows, then the
    // bottom ones'.
    for (var half = 0u; half < 2u; half++) {
        if (sg / 2u == half) {
            coopStoreT(c00, &cc[qn], CN);
            coopStoreT(c01, &cc[qn + 16u], CN);
            coopStoreT(c10, &cc[16u * CN + qn], CN);
            coopStoreT(c11, &cc[16u * CN + qn + 16u], CN);
        }
        workgroupBarrier();
        for (var i = t; i < 32u * CN; i += 128u) {
            let m = m0 + half * 32u + i / CN;
            let n = n0 + i % CN;
            if (m < dims.x && n < dims.y) {
                store_c(b, m, n, cc[i]);
            }
        }
        workgroupBarrier();
    }
}
