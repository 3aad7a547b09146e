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

// One step of k: x0 / x1 are this lane's elements of A for rows sid and
// 8 + sid, v0 / v1 its 8 elements of B; c[2 r + j] accumulates row r,
// columns 4 j .. 4 j + 4. (Constant indices only, so c stays in registers.)
fn sg_step(c: ptr<function, array<vec4<f32>, 32>>, x0: f32, x1: f32, v0: vec4<f32>, v1: vec4<f32>) {
    let a0 = subgroupBroadcast(x0, 0u);
    (*c)[0] += a0 * v0;
    (*c)[1] += a0 * v1;
    let a1 = subgroupBroadcast(x0, 1u);
    (*c)[2] += a1 * v0;
    (*c)[3] += a1 * v1;
    let a2 = subgroupBroadcast(x0, 2u);
    (*c)[4] += a2 * v0;
    (*c)[5] += a2 * v1;
    let a3 = subgroupBroadcast(x0, 3u);
    (*c)[6] += a3 * v0;
    (*c)[7] += a3 * v1;
    let a4 = subgroupBroadcast(x0, 4u);
    (*c)[8] += a4 * v0;
    (*c)[9] += a4 * v1;
    let a5 = subgroupBroadcast(x0, 5u);
    (*c)[10] += a5 * v0;
    (*c)[11] += a5 * v1;
    let a6 = subgroupBroadcast(x0, 6u);
    (*c)[12] += a6 * v0;
    (*c)[13] += a6 * v1;
    let a7 = subgroupBroadcast(x0, 7u);
    (*c)[14] += a7 * v0;
    (*c)[15] += a7 * v1;
    let a8 = subgroupBroadcast(x1, 0u);
    (*c)[16] += a8 * v0;
    (*c)[17] += a8 * v1;
    let a9 = subgroupBroadcast(x1, 1u);
    (*c)[18] += a9 * v0;
    (*c)[19] += a9 * v1;
    let a10 = subgroupBroadcast(x1, 2u);
    (*c)[20] += a10 * v0;
    (*c)[21] += a10 * v1;
    let a11 = subgroupBroadcast(x1, 3u);
    (*c)[22] += a11 * v0;
    (*c)[23] += a11 * v1;
    let a12 = subgroupBroadcast(x1, 4u);
    (*c)[24] += a12 * v0;
    (*c)[25] += a12 * v1;
    let a13 = subgroupBroadcast(x1, 5u);
    (*c)[26] += a13 * v0;
    (*c)[27] += a13 * v1;
    let a14 = subgroupBroadcast(x1, 6u);
    (*c)[28] += a14 * v0;
    (*c)[29] += a14 * v1;
    let a15 = subgroupBroadcast(x1, 7u);
    (*c)[30] += a15 * v0;
    (*c)[31] += a15 * v1;
}

@compute @workgroup_size(8, 1)
fn matmul_sg(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) sid: u32,
) {
    let b = wid.z + p.b0;
    let m = (wid.y + p.ty0) * 16u;
    let n = ((wid.x + p.tx0) * 8u + lid.x) * 8u;
    let rg = reg_range(b);
    // This lane's rows of A: m + sid and m + 8 + sid.
    let ra = rg.abase + min(m + sid, p.m - 1u) * p.am;
    let rb = rg.abase + min(m + 8u + sid, p.m - 1u) * p.am;
    var c: array<vec4<f32>, 32>;
    if (p.vec_b != 0u && p.tb == 0u) {
        let step = p.ldb / 4u;
        let q0 = (rg.bbase + min(n, p.n - 4u)) / 4u;
        let q1 = (rg.bbase + min(n + 4u, p.n - 4u)) / 4u;
        for (var k = rg.k0; k < rg.k1; k++) {
            let ka = k * p.ak;
            sg_step(&c, f32(a[ra + ka]), f32(a[rb + ka]), vec4<f32>(b4[q0 + k * step]), vec4<f32>(b4[q1 + k * step]));
        }
    } else {
        let n0 = reg_cols(rg.bbase, n);
        let n1 = reg_cols(rg.bbase, n + 4u);
        for (var k = rg.k0; k < rg.k1; k++) {
            let ka = k * p.ak;
            let kb = k * p.bk;
            sg_step(&c, f32(a[ra + ka]), f32(a[rb + ka]), reg_b(n0, kb), reg_b(n1, kb));
        }
    }
    store_block(b, m + 0u, n + 0u, array<vec4<f32>, 4>(c[0], c[2], c[4], c[6]));
    store_block(b, m + 4u, n + 0u, array<vec4<f32>, 4>(c[8], c[10], c[12], c[14]));
    store_block(b, m + 8u, n + 0u, array<vec4<f32>, 4>(c[16], c[18], c[20], c[22]));
    store_block(b, m + 12u, n + 0u, array<vec4<f32>, 4>(c[24], c[26], c[28], c[30]));
    store_block(b, m + 0u, n + 4u, array<vec4<f32>, 4>(c[1], c[3], c[5], c[7]));
    store_block(b, m + 4u, n + 4u, array<vec4<f32>, 4>(c[9], c[11], c[13], c[15]));
    store_block(b, m + 8u, n + 4u, array<vec4<f32>, 4>(c[17], c[19], c[21], c[23]));
    store_block(b, m + 12u, n + 4u, array<vec4<f32>, 4>(c[25], c[27], c[29], c[31]));
}

// For products at most 16 columns wide (a filter gradient's [taps, output
// channels] over a long sum): matmul_sg's 64-column block would leave
// three of its four column groups computing clamped columns. Here a
// workgroup (one subgroup of 8 lanes) is 16 rows x 16 columns: each lane
// holds rows sid and 8 + sid across all 16 columns; per k it loads its two
// elements of A and two of B (columns 2 sid and 2 sid + 1) and takes the
// other fourteen of B by broadcast: 4 loads feed 32 FMAs.
// Grid: x = ceil(N / 16), y = ceil(M / 16), z = batches (or split-K slices).
fn narrow_step(c: ptr<function, array<vec4<f32>, 8>>, x0: f32, x1: f32, y0: f32, y1: f32) {
    let v0 = vec4<f32>(subgroupBroadcast(y0, 0u), subgroupBroadcast(y1, 0u), subgroupBroadcast(y0, 1u), subgroupBroadcast(y1, 1u));
    let v1 = vec4<f32>(subgroupBroadcast(y0, 2u), subgroupBroadcast(y1, 2u), subgroupBroadcast(y0, 3u), subgroupBroadcast(y1, 3u));
    let v2 = vec4<f32>(subgroupBroadcast(y0, 4u), subgroupBroadcast(y1, 4u), subgroupBroadcast(y0, 5u), subgroupBroadcast(y1, 5u));
    let v3 = vec4<f32>(subgroupBroadcast(y0, 6u), subgroupBroadcast(y1, 6u), subgroupBroadcast(y0, 7u), subgroupBroadcast(y1, 7u));
    (*c)[0] += x0 * v0;
    (*c)[1] += x0 * v1;
    (*c)[2] += x0 * v2;
    (*c)[3] += x0 * v3;
    (*c)[4] += x1 * v0;
    (*c)[5] += x1 * v1;
    (*c)[6] += x1 * v2;
    (*c)[7] += x1 * v3;
}

@compute @workgroup_size(8, 1)
fn matmul_sg_narrow(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) sid: u32,
) {
    let b = wid.z + p.b0;
    let m = (wid.y + p.ty0) * 16u;
    let n = (wid.x + p.tx0) * 16u;
    let rg = reg_range(b);
    let ra = rg.abase + min(m + sid, p.m - 1u) * p.am;
    let rb = rg.abase + min(m + 8u + sid, p.m - 1u) * p.am;
    let cb0 = rg.bbase + min(n + 2u * sid, p.n - 1u) * p.bn;
    let cb1 = rg.bbase + min(n + 2u * sid + 1u, p.n - 1u) * p.bn;
    var c: array<vec4<f32>, 8>;
    for (var k = rg.k0; k < rg.k1; k++) {
        let ka = k * p.ak;
        let kb = k * p.bk;
        narrow_step(&c, f32(a[ra + ka]), f32(a[rb + ka]), f32(bm[cb0 + kb]), f32(bm[cb1 + kb]));
    }
    store_row(b, m + sid, n, c[0]);
    store_row(b, m + sid, n + 4u, c[1]);
    store_row(b, m + sid, n + 8u, c[2]);
    store_row(b, m + sid, n + 12u, c[3]);
    store_row(b, m + 8u + sid, n, c[4]);
    store_row(b, m + 8u + sid, n + 4u, c[5]);
    store_row(b, m + 8u + sid, n + 8u, c[6]);
    store_row(b, m + 8u + sid, n + 12u, c[7]);
}
