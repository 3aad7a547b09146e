// Elementwise binary ops with NumPy broadcasting, comparisons giving masks,
// and `where`. Operand k is read at sum(c_d * stride_k[d]) over the output
// coordinate c (stride 0 on broadcast dimensions). Fast modes (MODE) skip
// the index math: 0, every operand is laid out like the output; 2, a is and
// b repeats with period `period` (a row broadcast, a bias); 3, the same with
// a and b swapped; 4, a is and each element of b repeats `period` times in a
// row (a column broadcast); 5, the same swapped; 6, b is a single value; 7,
// a is; 1, the general strided walk.
//
// OP and MODE are override constants, so every (op, mode) pair is its own
// pipeline and the compiler sees straight-line code: llvmpipe runs a switch
// on a uniform through every case, which made a `mul` 3-6x slower than an
// `exp` on the same tensor.
//
// Bindings: 1 a, 2 b, 3 out (T), 4 mask out (u32), 5 condition (u32).

override OP: u32 = 0u;
override MODE: u32 = 1u;

struct Params {
    n: u32,
    rank: u32,
    period: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
    _p3: u32,
    _p4: u32,
    shape: array<vec4<u32>, 2>,
    sa: array<vec4<u32>, 2>,
    sb: array<vec4<u32>, 2>,
    sc: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<storage, read_write> mask: array<u32>;
@group(0) @binding(5) var<storage, read> cond: array<u32>;

// Offsets of element i in a, b and the condition.
fn offsets(i: u32) -> vec3<u32> {
    switch MODE {
        case 0u: {
            return vec3<u32>(i, i, i);
        }
        case 2u: {
            return vec3<u32>(i, i % p.period, 0u);
        }
        case 3u: {
            return vec3<u32>(i % p.period, i, 0u);
        }
        case 4u: {
            return vec3<u32>(i, i / p.period, 0u);
        }
        case 5u: {
            return vec3<u32>(i / p.period, i, 0u);
        }
        case 6u: {
            return vec3<u32>(i, 0u, 0u);
        }
        case 7u: {
            return vec3<u32>(0u, i, 0u);
        }
        default: {}
    }
    var rem = i;
    var o = vec3<u32>(0u, 0u, 0u);
    for (var k = i32(p.rank) - 1; k >= 0; k--) {
        let d = u32(k);
        let dim = at8(p.shape, d);
        let c = rem % dim;
        rem = rem / dim;
        o += c * vec3<u32>(at8(p.sa, d), at8(p.sb, d), at8(p.sc, d));
    }
    return o;
}

// Elements per invocation of `binary` and `cmp`: 4 for the row and column
// broadcasts, which then divide by the period once per 4 elements and
// step the quotient and remainder after (a u32 division per element made
// them 1.4x slower than `exp` on llvmpipe, which has no vector division);
// 1 otherwise. The host dispatches ceil(n / BINARY_RUN) invocations.
const BINARY_RUN: u32 = 4u;

// Whether MODE is a row or column broadcast (run of BINARY_RUN elements).
fn runs() -> bool {
    return MODE >= 2u && MODE <= 5u;
}

// The run of elements an invocation of `binary` or `cmp` writes in the
// broadcast modes: len of them from i, whose quotient and remainder by the
// period are q and r.
struct Walk {
    i: u32,
    len: u32,
    q: u32,
    r: u32,
}

fn walk(idx: u32) -> Walk {
    // Below n, and n < 2^32, so i0 + 3 does not wrap.
    if (idx >= (p.n + BINARY_RUN - 1u) / BINARY_RUN) {
        return Walk(0u, 0u, 0u, 0u);
    }
    let i0 = idx * BINARY_RUN;
    return Walk(i0, min(BINARY_RUN, p.n - i0), i0 / p.period, i0 % p.period);
}

// Offsets in a and b of the walk's current element: row broadcasts read
// b (or a) at r, column broadcasts at q.
fn walk_offsets(w: Walk) -> vec2<u32> {
    switch MODE {
        case 3u: {
            return vec2<u32>(w.r, w.i);
        }
        case 4u: {
            return vec2<u32>(w.i, w.q);
        }
        case 5u: {
            return vec2<u32>(w.q, w.i);
        }
        default: {
            return vec2<u32>(w.i, w.r);
        }
    }
}

fn walk_next(w: Walk) -> Walk {
    var n = w;
    n.i += 1u;
    n.r += 1u;
    if (n.r == p.period) {
        n.r = 0u;
        n.q += 1u;
    }
    return n;
}

@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (runs()) {
        var w = walk(idx);
        for (var j = 0u; j < w.len; j++) {
            let o = walk_offsets(w);
            out[w.i] = binary_apply(OP, a[o.x], b[o.y]);
            w = walk_next(w);
        }
        return;
    }
    if (idx >= p.n) {
        return;
    }
    let o = offsets(idx);
    out[idx] = binary_apply(OP, a[o.x], b[o.y]);
}

@compute @workgroup_size(256)
fn cmp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg);
    if (runs()) {
        var w = walk(idx);
        for (var j = 0u; j < w.len; j++) {
            let o = walk_offsets(w);
            mask[w.i] = select(0u, 1u, compare_apply(OP, a[o.x], b[o.y]));
            w = walk_next(w);
        }
        return;
    }
    if (idx >= p.n) {
        return;
    }
    let o = offsets(idx);
    mask[idx] = select(0u, 1u, compare_apply(OP, a[o.x], b[o.y]));
}

// `binary` and `cmp` four elements per invocation through vec4 views,
// where n is a multiple of 4 and, in the broadcast modes 2 to 5, so is the
// period: then every vec4 of the output reads one vec4 of each operand, or
// one value of it broadcast (read through the scalar views a and b, whose
// length need not be a multiple of 4). GPUs load 16 bytes per
// instruction; llvmpipe loops over the lanes for every storage access, and
// four elements share one loop.
// Bindings 1 a, 2 b, 6 a, 7 b (as vec4s), 8 out (T), 9 mask out (u32).
@group(0) @binding(6) var<storage, read> a4: array<vec4<T>>;
@group(0) @binding(7) var<storage, read> b4: array<vec4<T>>;
@group(0) @binding(8) var<storage, read_write> out4: array<vec4<T>>;
@group(0) @binding(9) var<storage, read_write> mask4: array<vec4<u32>>;

// The operands of output vec4 j.
struct Pair4 {
    a: vec4<T>,
    b: vec4<T>,
}

fn operands4(j: u32) -> Pair4 {
    // Vec4s per period.
    let q = p.period / 4u;
    switch MODE {
        case 2u: {
            return Pair4(a4[j], b4[j % q]);
        }
        case 3u: {
            return Pair4(a4[j % q], b4[j]);
        }
        case 4u: {
            return Pair4(a4[j], vec4<T>(b[j / q]));
        }
        case 5u: {
            return Pair4(vec4<T>(a[j / q]), b4[j]);
        }
        case 6u: {
            return Pair4(a4[j], vec4<T>(b[0]));
        }
        case 7u: {
            return Pair4(vec4<T>(a[0]), b4[j]);
        }
        default: {
            return Pair4(a4[j], b4[j]);
        }
    }
}

fn binary_vec4(a: vec4<T>, b: vec4<T>) -> vec4<T> {
    return vec4<T>(
        binary_apply(OP, a.x, b.x),
        binary_apply(OP, a.y, b.y),
        binary_apply(OP, a.z, b.z),
        binary_apply(OP, a.w, b.w),
    );
}

fn compare_vec4(a: vec4<T>, b: vec4<T>) -> vec4<u32> {
    let c = vec4<bool>(
        compare_apply(OP, a.x, b.x),
        compare_apply(OP, a.y, b.y),
        compare_apply(OP, a.z, b.z),
        compare_apply(OP, a.w, b.w),
    );
    return select(vec4<u32>(0u), vec4<u32>(1u), c);
}

@compute @workgroup_size(256)
fn binary4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j < p.n / 4u) {
        let o = operands4(j);
        out4[j] = binary_vec4(o.a, o.b);
    }
}

@compute @workgroup_size(256)
fn cmp4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j < p.n / 4u) {
        let o = operands4(j);
        mask4[j] = compare_vec4(o.a, o.b);
    }
}

// out = cond ? a : b
@compute @workgroup_size(256)
fn where_(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let o = offsets(i);
    out[i] = select(b[o.y], a[o.x], cond[o.z] != 0u);
}

// `where_` four elements per invocation where every operand is laid out
// like the output (mode 0) and n is a multiple of 4.
// Bindings 6 a, 7 b, 8 out, 14 condition (as vec4s).
@group(0) @binding(14) var<storage, read> cond4: array<vec4<u32>>;

@compute @workgroup_size(256)
fn where4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j < p.n / 4u) {
        out4[j] = select(b4[j], a4[j], cond4[j] != vec4<u32>(0u));
    }
}
