// gemm_coop.wgsl's twin for adapters whose cooperative matrices are 8x8x8
// (f16 x f16 + f32): Apple GPUs' simdgroup matrices through Metal, and
// lavapipe from Mesa 25.1. Same entry name, tile, operand functions and
// workgroup memory, so the host plans both alike; the device builds this
// one in its place (`GpuDevice::coop8`).
//
// A workgroup of 16 subgroups, whatever their size: the host sets WG to 16
// times the adapter's one subgroup size. Subgroup s holds the 16x16 block
// (s / 4, s % 4) of the 64x64 tile (gemm_coop_tile.wgsl) as four 8x8 f32
// accumulators.

override WG: u32 = 128u;

@compute @workgroup_size(WG)
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
    // sg is in [0, 16): WG holds 16 subgroups.
    let qm = (sg / 4u) * 16u;
    let qn = (sg % 4u) * 16u;
    var c00 = coop_mat8x8<f32, C>();
    var c01 = coop_mat8x8<f32, C>();
    var c10 = coop_mat8x8<f32, C>();
    var c11 = coop_mat8x8<f32, C>();
    for (var k0 = 0u; k0 < dims.z; k0 += CK) {
        coop_stage(b, m0, n0, k0, t, WG);
        workgroupBarrier();
        for (var kk = 0u; kk < CK; kk += 8u) {
            let a0 = coopLoadT<coop_mat8x8<f16, A>>(&ca[qm * CKP + kk], CKP);
            let a1 = coopLoadT<coop_mat8x8<f16, A>>(&ca[(qm + 8u) * CKP + kk], CKP);
            let b0 = coopLoadT<coop_mat8x8<f16, B>>(&cb[kk * CNP + qn], CNP);
            let b1 = coopLoadT<coop_mat8x8<f16, B>>(&cb[kk * CNP + qn + 8u], CNP);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    // C leaves through cc 16 rows at a time: pass r takes the subgroups
    // holding rows r * 16 .. + 16.
    for (var r = 0u; r < 4u; r++) {
        if (sg / 4u == r) {
            coopStoreT(c00, &cc[qn], CCP);
            coopStoreT(c01, &cc[qn + 8u], CCP);
            coopStoreT(c10, &cc[8u * CCP + qn], CCP);
            coopStoreT(c11, &cc[8u * CCP + qn + 8u], CCP);
        }
        workgroupBarrier();
        coop_write(b, m0, n0, r, t, WG);
        workgroupBarrier();
    }
}
