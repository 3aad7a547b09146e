// Cooperative-matrix (tensor core) GEMM whose tiles go through workgroup
// memory as vectors: entry `gemm_coop_staged`, matmul only, f16 A and B,
// f32 sums, C rounded to f16 once. A fragment prelude sets the matrices'
// side FS and FL, the vec4s of each operand an invocation stages per step
// (coop_frag16.wgsl for GPUs with 16x16x16 matrices, coop_frag8.wgsl for
// 8x8x8 ones), so that lavapipe proves the code tensor cores run.
//
// Four subgroups own an 8 FS x 8 FS tile of C (128x128 at FS = 16);
// subgroup s holds the 4 FS x 4 FS quadrant (s / 2, s % 2) as sixteen
// accumulators, so that four fragments of A and four of B feed sixteen
// products. k advances 2 FS per step through two buffers of each tile:
// while the subgroups multiply step s's tiles, each invocation holds its
// vec4s of step s + 1 in registers, then stores them into the other
// buffer, with one barrier per step. gemm_coop_wide's staging, which
// converted every element to f32 and stored it alone, cost more than the
// products; here every copy is one vec4<f16> each way: a tile keeps its
// operand's layout (rows along the contiguous axis) and a transposed
// operand's fragments load column-major. Rows are padded by 16 bytes so
// that the rows a fragment load reads fall in different banks. Loads
// outside the operands give zeros and C leaves through workgroup memory
// one fragment per subgroup at a time, guarded, so any shape runs.

const YM = 8u * FS;
const YK = 2u * FS;
// vec4s along a tile row of k, of m (or n), and the padded row lengths.
const YKV = YK / 4u;
const YMV = YM / 4u;
const YKP = YKV + 2u;
const YMP = YMV + 2u;
// One buffer of a tile, in vec4s: the [m][k] layout, the larger.
const YBUF = YM * YKP;
const YWG = 4u * FS * FS / FL;

var<workgroup> ya: array<vec4<f16>, 2u * YBUF>;
var<workgroup> yb: array<vec4<f16>, 2u * YBUF>;
var<workgroup> yc: array<f32, 4u * FS * FS>; // one fragment per subgroup

// Where vec4 `i` of a tile with rows of `rowv` vec4s sits in a buffer with
// rows of `rowp`.
fn y_slot(i: u32, rowv: u32, rowp: u32) -> u32 {
    return (i / rowv) * rowp + i % rowv;
}

// Vec4 `i` of the step's A tile from k0, along A's contiguous axis ([m][k]
// rows, or [k][m] for a transposed A).
fn y_load_a(b: u32, m0: u32, k0: u32, i: u32) -> vec4<f16> {
    let tr = p.ta != 0u;
    let m = m0 + select(i / YKV, (i % YMV) * 4u, tr);
    let k = k0 + select((i % YKV) * 4u, i / YMV, tr);
    if (p.vec_a != 0u) {
        // Rows start and end on vec4s: a vec4 is all inside or all out.
        if (m < p.m && k < p.k) {
            return vec4<f16>(a4[(b * p.sa + select(m * p.lda + k, k * p.lda + m, tr)) / 4u]);
        }
        return vec4<f16>();
    }
    let dm = select(vec4<u32>(0u), vec4<u32>(0u, 1u, 2u, 3u), tr);
    let dk = select(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(0u), tr);
    return vec4<f16>(
        f16(a_at(b, m + dm.x, k + dk.x)),
        f16(a_at(b, m + dm.y, k + dk.y)),
        f16(a_at(b, m + dm.z, k + dk.z)),
        f16(a_at(b, m + dm.w, k + dk.w)),
    );
}

// Vec4 `i` of the step's B tile from k0 ([k][n] rows, or [n][k] for a
// transposed B).
fn y_load_b(b: u32, n0: u32, k0: u32, i: u32) -> vec4<f16> {
    let tr = p.tb != 0u;
    let n = n0 + select((i % YMV) * 4u, i / YKV, tr);
    let k = k0 + select(i / YMV, (i % YKV) * 4u, tr);
    if (p.vec_b != 0u) {
        if (n < p.n && k < p.k) {
            return vec4<f16>(b4[(b * p.sb + select(k * p.ldb + n, n * p.ldb + k, tr)) / 4u]);
        }
        return vec4<f16>();
    }
    let dn = select(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(0u), tr);
    let dk = select(vec4<u32>(0u), vec4<u32>(0u, 1u, 2u, 3u), tr);
    return vec4<f16>(
        f16(b_at(b, k + dk.x, n + dn.x)),
        f16(b_at(b, k + dk.y, n + dn.y)),
        f16(b_at(b, k + dk.z, n + dn.z)),
        f16(b_at(b, k + dk.w, n + dn.w)),
    );
}

// Stores vec4 `i` of each tile into the buffers at `buf`.
fn y_put(buf: u32, i: u32, va: vec4<f16>, vb: vec4<f16>) {
    if (p.ta != 0u) {
        ya[buf + y_slot(i, YMV, YMP)] = va;
    } else {
        ya[buf + y_slot(i, YKV, YKP)] = va;
    }
    if (p.tb != 0u) {
        yb[buf + y_slot(i, YKV, YKP)] = vb;
    } else {
        yb[buf + y_slot(i, YMV, YMP)] = vb;
    }
}

@compute @workgroup_size(YWG)
fn gemm_coop_staged(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
) {
    let b = wid.z + p.b0;
    let m0 = (wid.y + p.ty0) * YM;
    let n0 = (wid.x + p.tx0) * YM;
    // The host launches this kernel only where a subgroup holds a quarter
    // of the workgroup: sg is in [0, 4).
    let qm = (sg / 2u) * 4u * FS;
    let qn = (sg % 2u) * 4u * FS;
    var c00 = FragC();
    var c01 = FragC();
    var c02 = FragC();
    var c03 = FragC();
    var c10 = FragC();
    var c11 = FragC();
    var c12 = FragC();
    var c13 = FragC();
    var c20 = FragC();
    var c21 = FragC();
    var c22 = FragC();
    var c23 = FragC();
    var c30 = FragC();
    var c31 = FragC();
    var c32 = FragC();
    var c33 = FragC();
    var ra: array<vec4<f16>, FL>;
    var rb: array<vec4<f16>, FL>;
    for (var j = 0u; j < FL; j++) {
        ra[j] = y_load_a(b, m0, 0u, t + j * YWG);
        rb[j] = y_load_b(b, n0, 0u, t + j * YWG);
    }
    for (var j = 0u; j < FL; j++) {
        y_put(0u, t + j * YWG, ra[j], rb[j]);
    }
    workgroupBarrier();
    let ta = p.ta != 0u;
    let tb = p.tb != 0u;
    let steps = (p.k + YK - 1u) / YK;
    for (var s = 0u; s < steps; s++) {
        let cur = (s % 2u) * YBUF;
        let more = s + 1u < steps;
        if (more) {
            let k1 = (s + 1u) * YK;
            for (var j = 0u; j < FL; j++) {
                ra[j] = y_load_a(b, m0, k1, t + j * YWG);
                rb[j] = y_load_b(b, n0, k1, t + j * YWG);
            }
        }
        for (var kk = 0u; kk < YK; kk += FS) {
            var a0: FragA;
            var a1: FragA;
            var a2: FragA;
            var a3: FragA;
            if (ta) {
                let at = cur + kk * YMP + qm / 4u;
                a0 = coopLoad<FragA>(&ya[at], YMP);
                a1 = coopLoad<FragA>(&ya[at + FS / 4u], YMP);
                a2 = coopLoad<FragA>(&ya[at + FS / 2u], YMP);
                a3 = coopLoad<FragA>(&ya[at + 3u * FS / 4u], YMP);
            } else {
                let at = cur + qm * YKP + kk / 4u;
                a0 = coopLoadT<FragA>(&ya[at], YKP);
                a1 = coopLoadT<FragA>(&ya[at + FS * YKP], YKP);
                a2 = coopLoadT<FragA>(&ya[at + 2u * FS * YKP], YKP);
                a3 = coopLoadT<FragA>(&ya[at + 3u * FS * YKP], YKP);
            }
            var b0: FragB;
            var b1: FragB;
            var b2: FragB;
            var b3: FragB;
            if (tb) {
                let at = cur + qn * YKP + kk / 4u;
                b0 = coopLoad<FragB>(&yb[at], YKP);
                b1 = coopLoad<FragB>(&yb[at + FS * YKP], YKP);
                b2 = coopLoad<FragB>(&yb[at + 2u * FS * YKP], YKP);
                b3 = coopLoad<FragB>(&yb[at + 3u * FS * YKP], YKP);
            } else {
                let at = cur + kk * YMP + qn / 4u;
                b0 = coopLoadT<FragB>(&yb[at], YMP);
                b1 = coopLoadT<FragB>(&yb[at + FS / 4u], YMP);
                b2 = coopLoadT<FragB>(&yb[at + FS / 2u], YMP);
                b3 = coopLoadT<FragB>(&yb[at + 3u * FS / 4u], YMP);
            }
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
        }
        if (more) {
            for (var j = 0u; j < FL; j++) {
                y_put(YBUF - cur, t + j * YWG, ra[j], rb[j]);
            }
        }
        workgroupBarrier();
    }
    let at = sg * FS * FS;
    for (var q = 0u; q < 16u; q++) {
        // Block q = 4 i + j of the quadrant (constant-indexed stores, so
        // the accumulators stay in registers).
        switch q {
            case 0u: { coopStoreT(c00, &yc[at], FS); }
            case 1u: { coopStoreT(c01, &yc[at], FS); }
            case 2u: { coopStoreT(c02, &yc[at], FS); }
            case 3u: { coopStoreT(c03, &yc[at], FS); }
            case 4u: { coopStoreT(c10, &yc[at], FS); }
            case 5u: { coopStoreT(c11, &yc[at], FS); }
            case 6u: { coopStoreT(c12, &yc[at], FS); }
            case 7u: { coopStoreT(c13, &yc[at], FS); }
            case 8u: { coopStoreT(c20, &yc[at], FS); }
            case 9u: { coopStoreT(c21, &yc[at], FS); }
            case 10u: { coopStoreT(c22, &yc[at], FS); }
            case 11u: { coopStoreT(c23, &yc[at], FS); }
            case 12u: { coopStoreT(c30, &yc[at], FS); }
            case 13u: { coopStoreT(c31, &yc[at], FS); }
            case 14u: { coopStoreT(c32, &yc[at], FS); }
            default: { coopStoreT(c33, &yc[at], FS); }
        }
        workgroupBarrier();
        let mq = m0 + qm + (q / 4u) * FS;
        let nq = n0 + qn + (q % 4u) * FS;
        for (var e = lane; e < FS * FS; e += lanes) {
            let m = mq + e / FS;
            let n = nq + e % FS;
            if (m < p.m && n < p.n) {
                store_c(b, m, n, yc[at + e]);
            }
        }
        workgroupBarrier();
    }
}
