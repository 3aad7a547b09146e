// Cooperative-matrix (tensor core) GEMM with 128x128 tiles: entry
// `gemm_coop_wide`, matmul only. It loads its tiles through matmul.wgsl's
// wide_a / wide_b (vec4 loads where the operands allow, issued for the next
// tile before the current one is multiplied, as matmul_wide does), so each
// element loaded feeds twice the products of gemm_coop's 64x64 tile. Built
// as the f16 variant alone (f16 A and B, f32 sums, C rounded to f16 once),
// for the adapters gemm_coop runs on whose workgroups hold 256 invocations
// and 28 KiB of workgroup memory.
//
// A workgroup of 256 invocations (eight subgroups of 32) owns a 128x128
// tile of C; subgroup s holds rows (s / 2) * 32 .. + 32 and columns
// (s % 2) * 64 .. + 64 as eight 16x16 f32 accumulators. K advances 32 at a
// time through workgroup memory, or 16 at a time for tiles that load
// their fragments directly. The accumulators go back through workgroup memory 16 rows at a
// time, so that only elements inside C are written.

const XM = 128u;
const XN = 128u;
const XK = 32u;

// Padded row lengths of xa, xb and xc (gemm_coop.wgsl says why).
const XKP = 40u;
const XNP = 136u;
const XCP = 132u;

var<workgroup> xa: array<f16, 5120>; // A tile [XM][XKP]
var<workgroup> xb: array<f16, 4352>; // B tile [XK][XNP]
var<workgroup> xc: array<f32, 2112>; // 16 rows of a C tile [16][XCP]

// One invocation's share of a 128x32 A tile and a 32x128 B tile: wide_a /
// wide_b's vec4s i and i + 256 of the k halves [k0, k0 + 16) and
// [k0 + 16, k0 + 32).
struct XLoad {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
    b2: vec4<f32>,
    b3: vec4<f32>,
}

fn x_load(b: u32, m0: u32, n0: u32, k0: u32, t: u32) -> XLoad {
    return XLoad(
        wide_a(b, m0, k0, t),
        wide_a(b, m0, k0, t + 256u),
        wide_a(b, m0, k0 + 16u, t),
        wide_a(b, m0, k0 + 16u, t + 256u),
        wide_b(b, n0, k0, t),
        wide_b(b, n0, k0, t + 256u),
        wide_b(b, n0, k0 + 16u, t),
        wide_b(b, n0, k0 + 16u, t + 256u),
    );
}

// Writes wide_a's vec4 `idx` of k half `h` into xa (row-major [m][k]).
fn x_put_a(idx: u32, h: u32, v: vec4<f32>) {
    let w = vec4<f16>(v);
    if (p.ta != 0u) {
        let k = idx / 32u + h * 16u;
        let m = (idx % 32u) * 4u;
        for (var j = 0u; j < 4u; j++) {
            xa[(m + j) * XKP + k] = w[j];
        }
    } else {
        let m = idx / 4u;
        let k = (idx % 4u) * 4u + h * 16u;
        for (var j = 0u; j < 4u; j++) {
            xa[m * XKP + k + j] = w[j];
        }
    }
}

// Writes wide_b's vec4 `idx` of k half `h` into xb (row-major [k][n]).
fn x_put_b(idx: u32, h: u32, v: vec4<f32>) {
    let w = vec4<f16>(v);
    if (p.tb != 0u) {
        let n = idx / 4u;
        let k = (idx % 4u) * 4u + h * 16u;
        for (var j = 0u; j < 4u; j++) {
            xb[(k + j) * XNP + n] = w[j];
        }
    } else {
        let k = idx / 32u + h * 16u;
        let n = (idx % 32u) * 4u;
        for (var j = 0u; j < 4u; j++) {
            xb[k * XNP + n + j] = w[j];
        }
    }
}

fn x_put(t: u32, v: XLoad) {
    x_put_a(t, 0u, v.a0);
    x_put_a(t + 256u, 0u, v.a1);
    x_put_a(t, 1u, v.a2);
    x_put_a(t + 256u, 1u, v.a3);
    x_put_b(t, 0u, v.b0);
    x_put_b(t + 256u, 0u, v.b1);
    x_put_b(t, 1u, v.b2);
    x_put_b(t + 256u, 1u, v.b3);
}

@compute @workgroup_size(256)
fn gemm_coop_wide(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
) {
    let b = wid.z + p.b0;
    let m0 = (wid.y + p.ty0) * XM;
    let n0 = (wid.x + p.tx0) * XN;
    // The host launches this kernel only where subgroups have 32
    // invocations: sg is in [0, 8).
    let qm = (sg / 2u) * 32u;
    let qn = (sg % 2u) * 64u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c02 = coop_mat16x16<f32, C>();
    var c03 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c12 = coop_mat16x16<f32, C>();
    var c13 = coop_mat16x16<f32, C>();
    // A tile inside both operands, row-major, with rows 16-byte aligned
    // and k a multiple of 16, loads its fragments straight from the
    // operands (the cache shares them between subgroups); other tiles go
    // through workgroup memory. Uniform across the workgroup.
    // (`&`, not `&&`: naga lowers `&&` to a branch whose result it cannot
    // prove uniform.)
    let aligned = (p.ta | p.tb | (p.k % 16u) | (p.lda % 8u) | (p.ldb % 8u) | (p.sa % 8u) | (p.sb % 8u)) == 0u;
    let direct = aligned & (m0 + XM <= p.m) & (n0 + XN <= p.n);
    if (direct) {
        let ra = b * p.sa + (m0 + qm) * p.lda;
        let rb = b * p.sb + n0 + qn;
        for (var k = 0u; k < p.k; k += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + k], p.lda);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + 16u * p.lda + k], p.lda);
            let kb = rb + k * p.ldb;
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&bm[kb], p.ldb);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&bm[kb + 16u], p.ldb);
            let b2 = coopLoadT<coop_mat16x16<f16, B>>(&bm[kb + 32u], p.ldb);
            let b3 = coopLoadT<coop_mat16x16<f16, B>>(&bm[kb + 48u], p.ldb);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
        }
    }
    var next = x_load(b, m0, n0, 0u, t);
    for (var k0 = 0u; k0 < select(p.k, 0u, direct); k0 += XK) {
        x_put(t, next);
        workgroupBarrier();
        if (k0 + XK < p.k) {
            next = x_load(b, m0, n0, k0 + XK, t);
        }
        for (var kk = 0u; kk < XK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&xa[qm * XKP + kk], XKP);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&xa[(qm + 16u) * XKP + kk], XKP);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&xb[kk * XNP + qn], XNP);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&xb[kk * XNP + qn + 16u], XNP);
            let b2 = coopLoadT<coop_mat16x16<f16, B>>(&xb[kk * XNP + qn + 32u], XNP);
            let b3 = coopLoadT<coop_mat16x16<f16, B>>(&xb[kk * XNP + qn + 48u], XNP);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
        }
        workgroupBarrier();
    }
    // C leaves through xc 16 rows at a time: band r of subgroups (s / 2 ==
    // r) stores its upper accumulators, then its lower ones.
    for (var r = 0u; r < 8u; r++) {
        if (sg / 2u == r / 2u) {
            if (r % 2u == 0u) {
                coopStoreT(c00, &xc[qn], XCP);
                coopStoreT(c01, &xc[qn + 16u], XCP);
                coopStoreT(c02, &xc[qn + 32u], XCP);
                coopStoreT(c03, &xc[qn + 48u], XCP);
            } else {
                coopStoreT(c10, &xc[qn], XCP);
                coopStoreT(c11, &xc[qn + 16u], XCP);
                coopStoreT(c12, &xc[qn + 32u], XCP);
                coopStoreT(c13, &xc[qn + 48u], XCP);
            }
        }
        workgroupBarrier();
        for (var i = t; i < 16u * XN; i += 256u) {
            let m = m0 + r * 16u + i / XN;
            let n = n0 + i % XN;
            if (m < p.m && n < p.n) {
                store_c(b, m, n, xc[(i / XN) * XCP + i % XN]);
            }
        }
        workgroupBarrier();
    }
}

// `gemm_coop_direct`: the host's choice over gemm_coop_wide for products
// every 128x128 tile of which lies inside the operands (m and n multiples
// of 128) and loads directly (as gemm_coop_wide's `direct` tiles). Four
// subgroups per tile, each a 64x64 quadrant as sixteen 16x16 accumulators:
// four fragments of A and four of B feed sixteen products, twice
// gemm_coop_wide's ratio. Each subgroup's accumulators leave one 16x16
// block at a time through its own part of xd.
var<workgroup> xd: array<f32, 1024>; // [subgroup][16][16]

@compute @workgroup_size(128)
fn gemm_coop_direct(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let b = wid.z + p.b0;
    let m0 = (wid.y + p.ty0) * XM + (sg / 2u) * 64u;
    let n0 = (wid.x + p.tx0) * XN + (sg % 2u) * 64u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c02 = coop_mat16x16<f32, C>();
    var c03 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c12 = coop_mat16x16<f32, C>();
    var c13 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c22 = coop_mat16x16<f32, C>();
    var c23 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();
    var c32 = coop_mat16x16<f32, C>();
    var c33 = coop_mat16x16<f32, C>();
    let ra = b * p.sa + m0 * p.lda;
    let rb = b * p.sb + n0;
    let l16 = 16u * p.lda;
    // The fragments of step k + 16 load before step k multiplies, so their
    // latency overlaps the products (the last step loads its own again).
    var a0 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra], p.lda);
    var a1 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + l16], p.lda);
    var a2 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + 2u * l16], p.lda);
    var a3 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + 3u * l16], p.lda);
    var b0 = coopLoadT<coop_mat16x16<f16, B>>(&bm[rb], p.ldb);
    var b1 = coopLoadT<coop_mat16x16<f16, B>>(&bm[rb + 16u], p.ldb);
    var b2 = coopLoadT<coop_mat16x16<f16, B>>(&bm[rb + 32u], p.ldb);
    var b3 = coopLoadT<coop_mat16x16<f16, B>>(&bm[rb + 48u], p.ldb);
    for (var k = 0u; k < p.k; k += 16u) {
        let kn = min(k + 16u, p.k - 16u);
        let na0 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + kn], p.lda);
        let na1 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + l16 + kn], p.lda);
        let na2 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + 2u * l16 + kn], p.lda);
        let na3 = coopLoadT<coop_mat16x16<f16, A>>(&a[ra + 3u * l16 + kn], p.lda);
        let kb = rb + kn * p.ldb;
        let nb0 = coopLoadT<coop_mat16x16<f16, B>>(&bm[kb], p.ldb);
        let nb1 = coopLoadT<coop_mat16x16<f16, B>>(&bm[kb + 16u], p.ldb);
        let nb2 = coopLoadT<coop_mat16x16<f16, B>>(&bm[kb + 32u], p.ldb);
        let nb3 = coopLoadT<coop_mat16x16<f16, B>>(&bm[kb + 48u], p.ldb);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c02 = coopMultiplyAdd(a0, b2, c02);
        c03 = coopMultiplyAdd(a0, b3, c03);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
        c12 = coopMultiplyAdd(a1, b2, c12);
        c13 = coopMultiplyAdd(a1, b3, c13);
        c20 = coopMultiplyAdd(a2, b0, c20);
        c21 = coopMultiplyAdd(a2, b1, c21);
        c22 = coopMultiplyAdd(a2, b2, c22);
        c23 = coopMultiplyAdd(a2, b3, c23);
        c30 = coopMultiplyAdd(a3, b0, c30);
        c31 = coopMultiplyAdd(a3, b1, c31);
        c32 = coopMultiplyAdd(a3, b2, c32);
        c33 = coopMultiplyAdd(a3, b3, c33);
        a0 = na0;
        a1 = na1;
        a2 = na2;
        a3 = na3;
        b0 = nb0;
        b1 = nb1;
        b2 = nb2;
        b3 = nb3;
    }
    let at = sg * 256u;
    for (var q = 0u; q < 16u; q++) {
        // Block q = 4 i + j of the quadrant (constant-indexed stores, so
        // the accumulators stay in registers).
        switch q {
            case 0u: { coopStoreT(c00, &xd[at], 16u); }
            case 1u: { coopStoreT(c01, &xd[at], 16u); }
            case 2u: { coopStoreT(c02, &xd[at], 16u); }
            case 3u: { coopStoreT(c03, &xd[at], 16u); }
            case 4u: { coopStoreT(c10, &xd[at], 16u); }
            case 5u: { coopStoreT(c11, &xd[at], 16u); }
            case 6u: { coopStoreT(c12, &xd[at], 16u); }
            case 7u: { coopStoreT(c13, &xd[at], 16u); }
            case 8u: { coopStoreT(c20, &xd[at], 16u); }
            case 9u: { coopStoreT(c21, &xd[at], 16u); }
            case 10u: { coopStoreT(c22, &xd[at], 16u); }
            case 11u: { coopStoreT(c23, &xd[at], 16u); }
            case 12u: { coopStoreT(c30, &xd[at], 16u); }
            case 13u: { coopStoreT(c31, &xd[at], 16u); }
            case 14u: { coopStoreT(c32, &xd[at], 16u); }
            default: { coopStoreT(c33, &xd[at], 16u); }
        }
        workgroupBarrier();
        let mq = m0 + (q / 4u) * 16u;
        let nq = n0 + (q % 4u) * 16u;
        for (var e = lane; e < 256u; e += 32u) {
            store_c(b, mq + e / 16u, nq + e % 16u, xd[at + e]);
        }
        workgroupBarrier();
    }
}
