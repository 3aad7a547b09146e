// Batched strided matmul operands for the GEMM core (gemm.wgsl):
//   A(m, k) = a[b * sa + m * lda + k]   (TA: a[b * sa + k * lda + m])
//   B(k, n) = b[b * sb + k * ldb + n]   (TB: b[b * sb + n * ldb + k])
//   C(m, n) -> c[b * sc + m * ldc + n]
// vec_a / vec_b: every row start and the length of the contiguous axis of
// that operand are multiples of 4, so it loads as vec4s through the a4 / b4
// views.
//
// Bindings: 1 a, 2 b, 3 c, 4 a as vec4s, 5 b as vec4s.

// Flags (uniforms, so one pipeline serves every case):
// ta, tb: the operand is stored transposed; vec_a, vec_b: see above.
struct Params {
    m: u32,
    n: u32,
    k: u32,
    b0: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    ta: u32,
    sa: u32,
    sb: u32,
    sc: u32,
    tb: u32,
    am: u32,
    ak: u32,
    bk: u32,
    bn: u32,
    vec_a: u32,
    vec_b: u32,
    // C is stored transposed: C(m, n) at c[n * ldc + m] (the host computes
    // C^T = B^T A^T when that shape suits the kernel better).
    tc: u32,
    // matmul_reg split-K: batch entry z sums k in [z kc, (z + 1) kc) of a
    // single matrix product into slice z of c; 0 when not split.
    kc: u32,
    // The first tile (workgroup) along n and m of this launch: the host
    // splits grids past the workgroup limit per dimension into launches.
    tx0: u32,
    ty0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> bm: array<T>;
@group(0) @binding(3) var<storage, read_write> c: array<T>;
@group(0) @binding(4) var<storage, read> a4: array<vec4<T>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<T>>;

fn gemm_dims() -> vec4<u32> {
    return vec4<u32>(p.m, p.n, p.k, p.b0);
}

fn gemm_tile0() -> vec2<u32> {
    return vec2<u32>(p.tx0, p.ty0);
}

fn a_at(b: u32, m: u32, k: u32) -> f32 {
    let mm = min(m, p.m - 1u);
    let kk = min(k, p.k - 1u);
    var i = b * p.sa + mm * p.lda + kk;
    if (p.ta != 0u) {
        i = b * p.sa + kk * p.lda + mm;
    }
    return select(0.0, f32(a[i]), m < p.m && k < p.k);
}

fn b_at(b: u32, k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) {
        return 0.0;
    }
    // One load whichever way B is laid out (see store_c).
    return f32(bm[b * p.sb + select(k * p.ldb + n, n * p.ldb + k, p.tb != 0u)]);
}

fn load_tiles(b: u32, m0: u32, n0: u32, k0: u32, t: u32) {
    let abase = b * p.sa;
    let bbase = b * p.sb;
    // A tile, 64 (m) x 16 (k): four elements per invocation, along the
    // operand's contiguous axis so neighbours read neighbouring addresses.
    if (p.ta != 0u) {
        let k = t / 16u;
        let mq = (t % 16u) * 4u;
        if (p.vec_a != 0u) {
            var v = vec4<f32>(0.0);
            if (k0 + k < p.k && m0 + mq < p.m) {
                v = vec4<f32>(a4[(abase + (k0 + k) * p.lda + m0 + mq) / 4u]);
            }
            ta[k * 16u + mq / 4u] = v;
        } else {
            for (var j = 0u; j < 4u; j++) {
                ta[k * 16u + (mq + j) / 4u][j] = a_at(b, m0 + mq + j, k0 + k);
            }
        }
    } else {
        let m = t / 4u;
        let kq = (t % 4u) * 4u;
        if (p.vec_a != 0u) {
            var v = vec4<f32>(0.0);
            if (m0 + m < p.m && k0 + kq < p.k) {
                v = vec4<f32>(a4[(abase + (m0 + m) * p.lda + k0 + kq) / 4u]);
            }
            for (var j = 0u; j < 4u; j++) {
                ta[(kq + j) * 16u + m / 4u][m % 4u] = v[j];
            }
        } else {
            for (var j = 0u; j < 4u; j++) {
                ta[(kq + j) * 16u + m / 4u][m % 4u] = a_at(b, m0 + m, k0 + kq + j);
            }
        }
    }
    // B tile, 16 (k) x 64 (n).
    if (p.tb != 0u) {
        let n = t / 4u;
        let kq = (t % 4u) * 4u;
        if (p.vec_b != 0u) {
            var v = vec4<f32>(0.0);
            if (n0 + n < p.n && k0 + kq < p.k) {
                v = vec4<f32>(b4[(bbase + (n0 + n) * p.ldb + k0 + kq) / 4u]);
            }
            for (var j = 0u; j < 4u; j++) {
                tb[(kq + j) * 16u + n / 4u][n % 4u] = v[j];
            }
        } else {
            for (var j = 0u; j < 4u; j++) {
                tb[(kq + j) * 16u + n / 4u][n % 4u] = b_at(b, k0 + kq + j, n0 + n);
            }
        }
    } else {
        let k = t / 16u;
        let nq = (t % 16u) * 4u;
        if (p.vec_b != 0u) {
            var v = vec4<f32>(0.0);
            if (k0 + k < p.k && n0 + nq < p.n) {
                v = vec4<f32>(b4[(bbase + (k0 + k) * p.ldb + n0 + nq) / 4u]);
            }
            tb[k * 16u + nq / 4u] = v;
        } else {
            for (var j = 0u; j < 4u; j++) {
                tb[k * 16u + (nq + j) / 4u][j] = b_at(b, k0 + k, n0 + nq + j);
            }
        }
    }
}

// B(k, n..n+4), one vec4 load when B's rows are contiguous and aligned.
fn b4_at(b: u32, k: u32, n: u32) -> vec4<f32> {
    if (p.vec_b != 0u && p.tb == 0u) {
        // Branch-free: a CPU adapter runs lanes in SIMD, where a divergent
        // branch costs more than a clamped load.
        let i = (b * p.sb + min(k, p.k - 1u) * p.ldb + min(n, p.n - 4u)) / 4u;
        return select(vec4<f32>(0.0), vec4<f32>(b4[i]), k < p.k && n < p.n);
    }
    return vec4<f32>(b_at(b, k, n), b_at(b, k, n + 1u), b_at(b, k, n + 2u), b_at(b, k, n + 3u));
}

// One store whichever way C is laid out: a CPU adapter runs both sides of
// a branch, each store a loop over the lanes.
fn store_c(b: u32, m: u32, n: u32, v: f32) {
    c[b * p.sc + select(m * p.ldc + n, n * p.ldc + m, p.tc != 0u)] = T(v);
}


// Where batch entry b of a register-path kernel reads: the operands' base
// offsets and its range of k (split-K: slice b of one product's sum).
struct RegRange {
    abase: u32,
    bbase: u32,
    k0: u32,
    k1: u32,
}

fn reg_range(b: u32) -> RegRange {
    if (p.kc != 0u) {
        let k0 = b * p.kc;
        return RegRange(0u, 0u, k0, min(p.k, k0 + p.kc));
    }
    return RegRange(b * p.sa, b * p.sb, 0u, p.k);
}

// Offsets of the 4 columns n .. n + 4 of B from bbase, clamped to the last
// column (computed, never stored), for the register-path kernels.
fn reg_cols(bbase: u32, n: u32) -> vec4<u32> {
    return bbase + min(vec4<u32>(n) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u)) * p.bn;
}

// B(k, ·) at the 4 columns `cols` (from reg_cols), kb = k * bk.
fn reg_b(cols: vec4<u32>, kb: u32) -> vec4<f32> {
    return vec4<f32>(f32(bm[cols.x + kb]), f32(bm[cols.y + kb]), f32(bm[cols.z + kb]), f32(bm[cols.w + kb]));
}

// One step of k in matmul_reg: x holds A(m + i, k) for the block's rows i,
// v0..v3 the 16 values B(k, n .. n + 16); c[4 i + j] accumulates row i,
// columns 4 j .. 4 j + 4. (Constant indices only, so c stays in registers.)
fn reg_step(c: ptr<function, array<vec4<f32>, 16>>, x: vec4<f32>, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    (*c)[0] += x.x * v0;
    (*c)[1] += x.x * v1;
    (*c)[2] += x.x * v2;
    (*c)[3] += x.x * v3;
    (*c)[4] += x.y * v0;
    (*c)[5] += x.y * v1;
    (*c)[6] += x.y * v2;
    (*c)[7] += x.y * v3;
    (*c)[8] += x.z * v0;
    (*c)[9] += x.z * v1;
    (*c)[10] += x.z * v2;
    (*c)[11] += x.z * v3;
    (*c)[12] += x.w * v0;
    (*c)[13] += x.w * v1;
    (*c)[14] += x.w * v2;
    (*c)[15] += x.w * v3;
}

// The register-blocked kernel of gemm.wgsl specialized to strided matrices:
// A(m, k) = a[b*sa + m*am + k*ak], B(k, n) = b[b*sb + k*bk + n*bn]. Each
// lane holds 4 rows x 16 columns (16 vec4 accumulators): on llvmpipe every
// load costs a bounds-checked scalar access per lane, so loads per FMA is
// what counts, and register spills are cheap next to them. Out-of-range
// rows and columns are clamped (computed, never stored) so that the loop
// has no branches. One SIMD-8 group per workgroup.
// Grid: x = ceil(N / 128), y = ceil(M / 4).
@compute @workgroup_size(8, 1)
fn matmul_reg(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.z + p.b0;
    let m = (wid.y + p.ty0) * 4u;
    let n = ((wid.x + p.tx0) * 8u + lid.x) * 16u;
    let rg = reg_range(b);
    // Row offsets of A(m + i, ·), i < 4.
    let r = rg.abase + min(vec4<u32>(m) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u)) * p.am;
    var c: array<vec4<f32>, 16>;
    if (p.vec_b != 0u && p.tb == 0u) {
        let step = p.ldb / 4u;
        let q = (rg.bbase + min(vec4<u32>(n) + vec4<u32>(0u, 4u, 8u, 12u), vec4<u32>(p.n - 4u))) / 4u;
        for (var k = rg.k0; k < rg.k1; k++) {
            let kb = k * step;
            let ka = k * p.ak;
            let x = vec4<f32>(f32(a[r.x + ka]), f32(a[r.y + ka]), f32(a[r.z + ka]), f32(a[r.w + ka]));
            reg_step(&c, x, vec4<f32>(b4[q.x + kb]), vec4<f32>(b4[q.y + kb]), vec4<f32>(b4[q.z + kb]), vec4<f32>(b4[q.w + kb]));
        }
    } else {
        let n0 = reg_cols(rg.bbase, n);
        let n1 = reg_cols(rg.bbase, n + 4u);
        let n2 = reg_cols(rg.bbase, n + 8u);
        let n3 = reg_cols(rg.bbase, n + 12u);
        for (var k = rg.k0; k < rg.k1; k++) {
            let kb = k * p.bk;
            let ka = k * p.ak;
            let x = vec4<f32>(f32(a[r.x + ka]), f32(a[r.y + ka]), f32(a[r.z + ka]), f32(a[r.w + ka]));
            reg_step(&c, x, reg_b(n0, kb), reg_b(n1, kb), reg_b(n2, kb), reg_b(n3, kb));
        }
    }
    store_block(b, m, n + 0u, array<vec4<f32>, 4>(c[0], c[4], c[8], c[12]));
    store_block(b, m, n + 4u, array<vec4<f32>, 4>(c[1], c[5], c[9], c[13]));
    store_block(b, m, n + 8u, array<vec4<f32>, 4>(c[2], c[6], c[10], c[14]));
    store_block(b, m, n + 12u, array<vec4<f32>, 4>(c[3], c[7], c[11], c[15]));
}

// The wide tile for large products on GPUs: 128x128 outputs per workgroup of
// 16x16 invocations, K advancing 16 at a time through wa / wb laid out
// [k][m/4] and [k][n/4] (32 vec4s per k). Each invocation holds four 4x4
// blocks 64 rows and 64 columns apart, so a step of k is four vec4 loads
// from workgroup memory for 64 FMAs, and neighbouring invocations read
// neighbouring vec4s. The next tile's global loads are issued into
// registers before the current tile is multiplied, so their latency
// overlaps the arithmetic.
// Grid: x = ceil(N / 128), y = ceil(M / 128), z = batches.
var<workgroup> wa: array<vec4<f32>, 512>;
var<workgroup> wb: array<vec4<f32>, 512>;

// A tile of 128 (m) x 16 (k), B tile of 16 (k) x 128 (n): 512 vec4s each,
// two per invocation (i = 0, 1), read along each operand's contiguous axis.
struct WideLoad {
    a0: vec4<f32>,
    a1: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
}

fn wide_a(b: u32, m0: u32, k0: u32, idx: u32) -> vec4<f32> {
    if (p.ta != 0u) {
        let k = k0 + idx / 32u;
        let m = m0 + (idx % 32u) * 4u;
        if (p.vec_a != 0u) {
            if (k < p.k && m < p.m) {
                return vec4<f32>(a4[(b * p.sa + k * p.lda + m) / 4u]);
            }
            return vec4<f32>(0.0);
        }
        return vec4<f32>(a_at(b, m, k), a_at(b, m + 1u, k), a_at(b, m + 2u, k), a_at(b, m + 3u, k));
    }
    let m = m0 + idx / 4u;
    let k = k0 + (idx % 4u) * 4u;
    if (p.vec_a != 0u) {
        if (m < p.m && k < p.k) {
            return vec4<f32>(a4[(b * p.sa + m * p.lda + k) / 4u]);
        }
        return vec4<f32>(0.0);
    }
    return vec4<f32>(a_at(b, m, k), a_at(b, m, k + 1u), a_at(b, m, k + 2u), a_at(b, m, k + 3u));
}

fn wide_b(b: u32, n0: u32, k0: u32, idx: u32) -> vec4<f32> {
    if (p.tb != 0u) {
        let n = n0 + idx / 4u;
        let k = k0 + (idx % 4u) * 4u;
        if (p.vec_b != 0u) {
            if (n < p.n && k < p.k) {
                return vec4<f32>(b4[(b * p.sb + n * p.ldb + k) / 4u]);
            }
            return vec4<f32>(0.0);
        }
        return vec4<f32>(b_at(b, k, n), b_at(b, k + 1u, n), b_at(b, k + 2u, n), b_at(b, k + 3u, n));
    }
    let k = k0 + idx / 32u;
    let n = n0 + (idx % 32u) * 4u;
    if (p.vec_b != 0u) {
        if (k < p.k && n < p.n) {
            return vec4<f32>(b4[(b * p.sb + k * p.ldb + n) / 4u]);
        }
        return vec4<f32>(0.0);
    }
    return vec4<f32>(b_at(b, k, n), b_at(b, k, n + 1u), b_at(b, k, n + 2u), b_at(b, k, n + 3u));
}

fn wide_load(b: u32, m0: u32, n0: u32, k0: u32, t: u32) -> WideLoad {
    return WideLoad(wide_a(b, m0, k0, t), wide_a(b, m0, k0, t + 256u), wide_b(b, n0, k0, t), wide_b(b, n0, k0, t + 256u));
}

// Writes a vec4 loaded by wide_a / wide_b into the [k][m/4] layout.
fn wide_put_a(idx: u32, v: vec4<f32>) {
    if (p.ta != 0u) {
        wa[idx] = v;
    } else {
        let m = idx / 4u;
        let k = (idx % 4u) * 4u;
        for (var j = 0u; j < 4u; j++) {
            wa[(k + j) * 32u + m / 4u][m % 4u] = v[j];
        }
    }
}

fn wide_put_b(idx: u32, v: vec4<f32>) {
    if (p.tb != 0u) {
        let n = idx / 4u;
        let k = (idx % 4u) * 4u;
        for (var j = 0u; j < 4u; j++) {
            wb[(k + j) * 32u + n / 4u][n % 4u] = v[j];
        }
    } else {
        wb[idx] = v;
    }
}

// One 4x4 block's step of k: c[i] += a[i] * v (constant indices only, so
// the block stays in registers).
fn wide_fma(c: ptr<function, array<vec4<f32>, 4>>, a: vec4<f32>, v: vec4<f32>) {
    (*c)[0] += a.x * v;
    (*c)[1] += a.y * v;
    (*c)[2] += a.z * v;
    (*c)[3] += a.w * v;
}

@compute @workgroup_size(16, 16)
fn matmul_wide(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    wide_tile(wid, lid.y * 16u + lid.x, lid.y, lid.x);
}

// matmul_wide with each subgroup of 32 invocations on a 4x8 block of the
// 16x16 invocation grid (`warp_yx`) instead of two rows of 16: a step of
// k then reads 4 distinct vec4s of A and 8 of B per subgroup (64 and 128
// bytes) instead of 2 and 16 (256 bytes of B), fewer workgroup-memory
// wavefronts for the same FMAs, as SIMT GEMMs lay out warp tiles (CUTLASS's
// 4x8 lanes per warp).
@compute @workgroup_size(16, 16)
fn matmul_wide_warp(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let yx = warp_yx(t);
    wide_tile(wid, t, yx.x, yx.y);
}

// The invocation-grid row and column of invocation t in the 4x8-per-32
// layout: subgroup w = t / 32 of 8 takes rows (w / 2) * 4 .. + 4 and
// columns (w % 2) * 8 .. + 8.
fn warp_yx(t: u32) -> vec2<u32> {
    let w = t / 32u;
    let l = t % 32u;
    return vec2<u32>((w / 2u) * 4u + l / 8u, (w % 2u) * 8u + l % 8u);
}

// Workgroup `wid`'s 128x128 tile: invocation t loads its share of the
// operands and holds the four 4x4 blocks at invocation-grid row ty and
// column tx.
fn wide_tile(wid: vec3<u32>, t: u32, ty: u32, tx: u32) {
    let b = wid.z + p.b0;
    let m0 = (wid.y + p.ty0) * 128u;
    let n0 = (wid.x + p.tx0) * 128u;
    var c00: array<vec4<f32>, 4>;
    var c01: array<vec4<f32>, 4>;
    var c10: array<vec4<f32>, 4>;
    var c11: array<vec4<f32>, 4>;
    var next = wide_load(b, m0, n0, 0u, t);
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        wide_put_a(t, next.a0);
        wide_put_a(t + 256u, next.a1);
        wide_put_b(t, next.b0);
        wide_put_b(t + 256u, next.b1);
        workgroupBarrier();
        if (k0 + 16u < p.k) {
            next = wide_load(b, m0, n0, k0 + 16u, t);
        }
        for (var k = 0u; k < 16u; k++) {
            let a0 = wa[k * 32u + ty];
            let a1 = wa[k * 32u + 16u + ty];
            let v0 = wb[k * 32u + tx];
            let v1 = wb[k * 32u + 16u + tx];
            wide_fma(&c00, a0, v0);
            wide_fma(&c01, a0, v1);
            wide_fma(&c10, a1, v0);
            wide_fma(&c11, a1, v1);
        }
        workgroupBarrier();
    }
    wide_store(b, m0 + ty * 4u, n0 + tx * 4u, c00, c01, c10, c11);
}

// Stores an invocation's four 4x4 blocks of a 128x128 tile, 64 rows and
// columns apart, from (m, n).
fn wide_store(b: u32, m: u32, n: u32, c00: array<vec4<f32>, 4>, c01: array<vec4<f32>, 4>, c10: array<vec4<f32>, 4>, c11: array<vec4<f32>, 4>) {
    store_block(b, m, n, c00);
    store_block(b, m, n + 64u, c01);
    store_block(b, m + 64u, n, c10);
    store_block(b, m + 64u, n + 64u, c11);
}
