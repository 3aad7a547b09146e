// Cooperative-matrix (tensor core) GEMM core: entry `gemm_coop`, over the
// same operand functions as gemm.wgsl's entries (gemm_dims, gemm_tile0,
// a_at, b_at, store_c; matmul.wgsl's or conv.wgsl's), built only as the f16
// variant (T = f16: f16 A and B, f32 sums, C rounded to f16 once) for
// adapters with `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` that list
// 16x16x16 f16 x f16 + f32 and whose subgroups have 32 invocations.
//
// A workgroup of 128 invocations (four subgroups) owns a 64x64 tile of C
// (gemm_coop_tile.wgsl: staging and write-back); subgroup s holds the
// 32x32 quadrant (s / 2, s % 2) as four 16x16 f32 accumulators.

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
        coop_stage(b, m0, n0, k0, t, 128u);
        workgroupBarrier();
        for (var kk = 0u; kk < CK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&ca[qm * CKP + kk], CKP);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&ca[(qm + 16u) * CKP + kk], CKP);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&cb[kk * CNP + qn], CNP);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&cb[kk * CNP + qn + 16u], CNP);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    // C leaves through cc 16 rows at a time: pass r takes the upper
    // (r even) or lower accumulators of the subgroups holding rows
    // (r / 2) * 32 .. + 32.
    for (var r = 0u; r < 4u; r++) {
        if (sg / 2u == r / 2u) {
            if (r % 2u == 0u) {
                coopStoreT(c00, &cc[qn], CCP);
                coopStoreT(c01, &cc[qn + 16u], CCP);
            } else {
                coopStoreT(c10, &cc[qn], CCP);
                coopStoreT(c11, &cc[qn + 16u], CCP);
            }
        }
        workgroupBarrier();
        coop_write(b, m0, n0, r, t, 128u);
        workgroupBarrier();
    }
}
