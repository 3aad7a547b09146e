// matmul for CPU adapters whose subgroups are 8 lanes (llvmpipe on AVX2
// hosts runs a subgroup as the 8 SIMD lanes of one CPU thread). There every
// storage load costs a bounds-checked scalar access per lane, whether the
// lanes' addresses differ or not, while subgroupBroadcast is a register
// shuffle. So each lane loads one element of A per 8 rows and the others
// take it by broadcast: per k, 2 loads of A and 8 of B (two vec4) per lane
// feed 128 FMAs, where matmul_reg spends 4 and 16 loads on 64.
// Same operands, parameters and bindings as matmul_reg (matmul.wgsl). A
// workgroup is one subgroup: 16 rows x 64 columns, each lane holding 16
// rows x 8 columns. Out-of-range rows and columns are clamped (computed,
// never stored), so every lane takes part in every broadcast.
// Grid: x = ceil(N / 64), y = ceil(M / 16), z = batches (or split-K slices).
@compute @workgroup_size(8, 1)
fn matmul_sg(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) sid: u32,
) {
    let b = wid.z + p.b0;
    let m = wid.y * 16u;
    let n = (wid.x * 8u + lid.x) * 8u;
    var abase = b * p.sa;
    var bbase = b * p.sb;
    var k0 = 0u;
    var k1 = p.k;
    if (p.kc != 0u) {
        abase = 0u;
        bbase = 0u;
        k0 = b * p.kc;
        k1 = min(p.k, k0 + p.kc);
    }
    // This lane's rows of A: m + sid and m + 8 + sid.
    let ra = abase + min(m + sid, p.m - 1u) * p.am;
    let rb = abase + min(m + 8u + sid, p.m - 1u) * p.am;
    var c0_0 = vec4<f32>(0.0); var c0_1 = vec4<f32>(0.0);
    var c1_0 = vec4<f32>(0.0); var c1_1 = vec4<f32>(0.0);
    var c2_0 = vec4<f32>(0.0); var c2_1 = vec4<f32>(0.0);
    var c3_0 = vec4<f32>(0.0); var c3_1 = vec4<f32>(0.0);
    var c4_0 = vec4<f32>(0.0); var c4_1 = vec4<f32>(0.0);
    var c5_0 = vec4<f32>(0.0); var c5_1 = vec4<f32>(0.0);
    var c6_0 = vec4<f32>(0.0); var c6_1 = vec4<f32>(0.0);
    var c7_0 = vec4<f32>(0.0); var c7_1 = vec4<f32>(0.0);
    var c8_0 = vec4<f32>(0.0); var c8_1 = vec4<f32>(0.0);
    var c9_0 = vec4<f32>(0.0); var c9_1 = vec4<f32>(0.0);
    var c10_0 = vec4<f32>(0.0); var c10_1 = vec4<f32>(0.0);
    var c11_0 = vec4<f32>(0.0); var c11_1 = vec4<f32>(0.0);
    var c12_0 = vec4<f32>(0.0); var c12_1 = vec4<f32>(0.0);
    var c13_0 = vec4<f32>(0.0); var c13_1 = vec4<f32>(0.0);
    var c14_0 = vec4<f32>(0.0); var c14_1 = vec4<f32>(0.0);
    var c15_0 = vec4<f32>(0.0); var c15_1 = vec4<f32>(0.0);
    if (p.vec_b != 0u && p.tb == 0u) {
        let step = p.ldb / 4u;
        let q0 = (bbase + min(n + 0u, p.n - 4u)) / 4u;
        let q1 = (bbase + min(n + 4u, p.n - 4u)) / 4u;
        for (var k = k0; k < k1; k++) {
            let kb = k * step;
            let v0 = vec4<f32>(b4[q0 + kb]);
            let v1 = vec4<f32>(b4[q1 + kb]);
            let ka = k * p.ak;
            let x0 = f32(a[ra + ka]);
            let x1 = f32(a[rb + ka]);
            let a0 = subgroupBroadcast(x0, 0u);
            c0_0 += a0 * v0; c0_1 += a0 * v1;
            let a1 = subgroupBroadcast(x0, 1u);
            c1_0 += a1 * v0; c1_1 += a1 * v1;
            let a2 = subgroupBroadcast(x0, 2u);
            c2_0 += a2 * v0; c2_1 += a2 * v1;
            let a3 = subgroupBroadcast(x0, 3u);
            c3_0 += a3 * v0; c3_1 += a3 * v1;
            let a4 = subgroupBroadcast(x0, 4u);
            c4_0 += a4 * v0; c4_1 += a4 * v1;
            let a5 = subgroupBroadcast(x0, 5u);
            c5_0 += a5 * v0; c5_1 += a5 * v1;
            let a6 = subgroupBroadcast(x0, 6u);
            c6_0 += a6 * v0; c6_1 += a6 * v1;
            let a7 = subgroupBroadcast(x0, 7u);
            c7_0 += a7 * v0; c7_1 += a7 * v1;
            let a8 = subgroupBroadcast(x1, 0u);
            c8_0 += a8 * v0; c8_1 += a8 * v1;
            let a9 = subgroupBroadcast(x1, 1u);
            c9_0 += a9 * v0; c9_1 += a9 * v1;
            let a10 = subgroupBroadcast(x1, 2u);
            c10_0 += a10 * v0; c10_1 += a10 * v1;
            let a11 = subgroupBroadcast(x1, 3u);
            c11_0 += a11 * v0; c11_1 += a11 * v1;
            let a12 = subgroupBroadcast(x1, 4u);
            c12_0 += a12 * v0; c12_1 += a12 * v1;
            let a13 = subgroupBroadcast(x1, 5u);
            c13_0 += a13 * v0; c13_1 += a13 * v1;
            let a14 = subgroupBroadcast(x1, 6u);
            c14_0 += a14 * v0; c14_1 += a14 * v1;
            let a15 = subgroupBroadcast(x1, 7u);
            c15_0 += a15 * v0; c15_1 += a15 * v1;
        }
    } else {
        let n0 = bbase + min(n + 0u, p.n - 1u) * p.bn;
        let n1 = bbase + min(n + 1u, p.n - 1u) * p.bn;
        let n2 = bbase + min(n + 2u, p.n - 1u) * p.bn;
        let n3 = bbase + min(n + 3u, p.n - 1u) * p.bn;
        let n4 = bbase + min(n + 4u, p.n - 1u) * p.bn;
        let n5 = bbase + min(n + 5u, p.n - 1u) * p.bn;
        let n6 = bbase + min(n + 6u, p.n - 1u) * p.bn;
        let n7 = bbase + min(n + 7u, p.n - 1u) * p.bn;
        for (var k = k0; k < k1; k++) {
            let kb = k * p.bk;
            let v0 = vec4<f32>(f32(bm[n0 + kb]), f32(bm[n1 + kb]), f32(bm[n2 + kb]), f32(bm[n3 + kb]));
            let v1 = vec4<f32>(f32(bm[n4 + kb]), f32(bm[n5 + kb]), f32(bm[n6 + kb]), f32(bm[n7 + kb]));
            let ka = k * p.ak;
            let x0 = f32(a[ra + ka]);
            let x1 = f32(a[rb + ka]);
            let a0 = subgroupBroadcast(x0, 0u);
            c0_0 += a0 * v0; c0_1 += a0 * v1;
            let a1 = subgroupBroadcast(x0, 1u);
            c1_0 += a1 * v0; c1_1 += a1 * v1;
            let a2 = subgroupBroadcast(x0, 2u);
            c2_0 += a2 * v0; c2_1 += a2 * v1;
            let a3 = subgroupBroadcast(x0, 3u);
            c3_0 += a3 * v0; c3_1 += a3 * v1;
            let a4 = subgroupBroadcast(x0, 4u);
            c4_0 += a4 * v0; c4_1 += a4 * v1;
            let a5 = subgroupBroadcast(x0, 5u);
            c5_0 += a5 * v0; c5_1 += a5 * v1;
            let a6 = subgroupBroadcast(x0, 6u);
            c6_0 += a6 * v0; c6_1 += a6 * v1;
            let a7 = subgroupBroadcast(x0, 7u);
            c7_0 += a7 * v0; c7_1 += a7 * v1;
            let a8 = subgroupBroadcast(x1, 0u);
            c8_0 += a8 * v0; c8_1 += a8 * v1;
            let a9 = subgroupBroadcast(x1, 1u);
            c9_0 += a9 * v0; c9_1 += a9 * v1;
            let a10 = subgroupBroadcast(x1, 2u);
            c10_0 += a10 * v0; c10_1 += a10 * v1;
            let a11 = subgroupBroadcast(x1, 3u);
            c11_0 += a11 * v0; c11_1 += a11 * v1;
            let a12 = subgroupBroadcast(x1, 4u);
            c12_0 += a12 * v0; c12_1 += a12 * v1;
            let a13 = subgroupBroadcast(x1, 5u);
            c13_0 += a13 * v0; c13_1 += a13 * v1;
            let a14 = subgroupBroadcast(x1, 6u);
            c14_0 += a14 * v0; c14_1 += a14 * v1;
            let a15 = subgroupBroadcast(x1, 7u);
            c15_0 += a15 * v0; c15_1 += a15 * v1;
        }
    }
    store_block(b, m + 0u, n + 0u, array<vec4<f32>, 4>(c0_0, c1_0, c2_0, c3_0));
    store_block(b, m + 4u, n + 0u, array<vec4<f32>, 4>(c4_0, c5_0, c6_0, c7_0));
    store_block(b, m + 8u, n + 0u, array<vec4<f32>, 4>(c8_0, c9_0, c10_0, c11_0));
    store_block(b, m + 12u, n + 0u, array<vec4<f32>, 4>(c12_0, c13_0, c14_0, c15_0));
    store_block(b, m + 0u, n + 4u, array<vec4<f32>, 4>(c0_1, c1_1, c2_1, c3_1));
    store_block(b, m + 4u, n + 4u, array<vec4<f32>, 4>(c4_1, c5_1, c6_1, c7_1));
    store_block(b, m + 8u, n + 4u, array<vec4<f32>, 4>(c8_1, c9_1, c10_1, c11_1));
    store_block(b, m + 12u, n + 4u, array<vec4<f32>, 4>(c12_1, c13_1, c14_1, c15_1));
}
