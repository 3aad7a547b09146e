// Reductions of x viewed as [rows, r, inner] over the middle axis, giving
// [rows, inner]. `rows_main`: inner == 1, one workgroup per row with a tree
// in workgroup memory. `cols_main`: inner > 1, one invocation per output.
// When those leave the device idle (few outputs, a long reduced axis), the
// host splits r into `parts` chunks of `chunk` elements: `rows_part` /
// `cols_part` reduce each chunk into the partials pv (value) and pi (index
// within r), and `rows_final` / `cols_final` reduce the partials of each
// output. Accumulation is in Acc (f32 for f16 data). No identity sentinels:
// a partial result carries a flag saying whether it saw any element, chunks
// are never empty, and the host handles r == 0.
//
// OP: 0 sum, 1 mean, 2 max, 3 min, 4 prod, 5 argmax, 6 argmin. An override
// constant rather than a uniform: compiled per op, the inner loop holds only
// its own combine step (a CPU adapter flattens a switch on a uniform into
// every case for every element). The uniform `op` field is kept for the
// host's parameter layout but not read.
// Bindings: 1 x, 2 y (T), 3 y (i32, for arg ops), 5 pv, 6 pi.

struct Params {
    rows: u32,
    r: u32,
    inner: u32,
    n_out: u32,
    op: u32,
    dim: u32,
    chunk: u32,
    parts: u32,
}

override OP: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<storage, read_write> yi: array<i32>;
@group(0) @binding(4) var<storage, read> idx: array<i32>;
@group(0) @binding(5) var<storage, read_write> pv: array<Acc>;
@group(0) @binding(6) var<storage, read_write> pi: array<u32>;

var<workgroup> sv: array<Acc, 256>;
var<workgroup> si: array<u32, 256>;
var<workgroup> sh: array<u32, 256>;

// Whether (v, i) replaces the current (a, j) for arg ops: TensorFlow's
// (Eigen's) scan from (the type's lowest value, index 0), in an order-free
// form. An element counts only if it beats that start (so NaN, -inf and
// the lowest value itself never win for argmax); a counted one beats an
// uncounted one, the better value wins, and ties (and uncounted pairs)
// go to the smaller index, which makes a row with none counted give 0.
fn counts(v: Acc) -> bool {
    if (OP == 5u) {
        return v > acc_lowest();
    }
    return v < acc_highest();
}

fn wins(v: Acc, i: u32, a: Acc, j: u32) -> bool {
    let vc = counts(v);
    let ac = counts(a);
    if (vc != ac) {
        return vc;
    }
    if (!vc) {
        return i < j;
    }
    if (OP == 5u) {
        return v > a || (v == a && i < j);
    }
    return v < a || (v == a && i < j);
}

fn combine(a: Acc, v: Acc) -> Acc {
    switch OP {
        // NaN propagates (TensorFlow's reduce_max and reduce_min).
        case 2u: { return select(select(max(a, v), v, acc_is_nan(v)), a, acc_is_nan(a)); }
        case 3u: { return select(select(min(a, v), v, acc_is_nan(v)), a, acc_is_nan(a)); }
        case 4u: { return a * v; }
        default: { return a + v; }
    }
}

// A running result: value, index of the element it came from (arg ops),
// and whether it saw any element.
struct Part {
    v: Acc,
    i: u32,
    has: bool,
}

fn none() -> Part {
    return Part(Acc(0), 0u, false);
}

fn add(a: Part, v: Acc, k: u32) -> Part {
    if (!a.has) {
        return Part(v, k, true);
    }
    if (OP >= 5u) {
        if (wins(v, k, a.v, a.i)) {
            return Part(v, k, true);
        }
        return a;
    }
    return Part(combine(a.v, v), a.i, true);
}

// Tree over the workgroup's parts; every invocation gets the result.
fn tree(t: u32, a: Part) -> Part {
    sv[t] = a.v;
    si[t] = a.i;
    sh[t] = select(0u, 1u, a.has);
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s && sh[t + s] != 0u) {
            let m = add(Part(sv[t], si[t], sh[t] != 0u), sv[t + s], si[t + s]);
            sv[t] = m.v;
            si[t] = m.i;
            sh[t] = 1u;
        }
        workgroupBarrier();
    }
    return Part(sv[0], si[0], sh[0] != 0u);
}

fn store(o: u32, a: Part) {
    if (OP >= 5u) {
        yi[o] = i32(a.i);
    } else if (OP == 1u) {
        y[o] = T(a.v / Acc(p.r));
    } else {
        y[o] = T(a.v);
    }
}

// This invocation's share of x[base + lo .. base + hi].
fn strided(t: u32, base: u32, lo: u32, hi: u32) -> Part {
    var a = none();
    for (var k = lo + t; k < hi; k += 256u) {
        a = add(a, Acc(x[base + k]), k);
    }
    return a;
}

@compute @workgroup_size(256)
fn rows_main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let a = tree(lid.x, strided(lid.x, row * p.r, 0u, p.r));
    if (lid.x == 0u) {
        store(row, a);
    }
}

// One workgroup per (row, chunk).
@compute @workgroup_size(256)
fn rows_part(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= p.rows * p.parts) {
        return;
    }
    let lo = (w % p.parts) * p.chunk;
    let a = tree(lid.x, strided(lid.x, (w / p.parts) * p.r, lo, min(p.r, lo + p.chunk)));
    if (lid.x == 0u) {
        pv[w] = a.v;
        pi[w] = a.i;
    }
}

// One workgroup per row, over its parts.
@compute @workgroup_size(256)
fn rows_final(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    var a = none();
    for (var k = lid.x; k < p.parts; k += 256u) {
        a = add(a, pv[row * p.parts + k], pi[row * p.parts + k]);
    }
    a = tree(lid.x, a);
    if (lid.x == 0u) {
        store(row, a);
    }
}

@compute @workgroup_size(256)
fn cols_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_index(gid, nwg);
    if (o >= p.n_out) {
        return;
    }
    let b = o % p.inner;
    let base = (o / p.inner) * p.r * p.inner + b;
    var a = Part(Acc(x[base]), 0u, true);
    for (var k = 1u; k < p.r; k++) {
        a = add(a, Acc(x[base + k * p.inner]), k);
    }
    store(o, a);
}

// One invocation per (row, chunk, column); partials laid out the same way.
@compute @workgroup_size(256)
fn cols_part(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_index(gid, nwg);
    if (o >= p.rows * p.parts * p.inner) {
        return;
    }
    let b = o % p.inner;
    let lo = ((o / p.inner) % p.parts) * p.chunk;
    let hi = min(p.r, lo + p.chunk);
    let base = (o / (p.inner * p.parts)) * p.r * p.inner + b;
    var a = none();
    for (var k = lo; k < hi; k++) {
        a = add(a, Acc(x[base + k * p.inner]), k);
    }
    pv[o] = a.v;
    pi[o] = a.i;
}

// One invocation per output, over its parts.
@compute @workgroup_size(256)
fn cols_final(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_index(gid, nwg);
    if (o >= p.n_out) {
        return;
    }
    let b = o % p.inner;
    let base = (o / p.inner) * p.parts * p.inner + b;
    var a = none();
    for (var s = 0u; s < p.parts; s++) {
        a = add(a, pv[base + s * p.inner], pi[base + s * p.inner]);
    }
    store(o, a);
}

// Gather's gradient, a segment sum: x is dy viewed [rows, r, inner] with r
// the number of indices; y[o, d, b] = sum of x[o, j, b] over j with
// idx[j] == d, for d < dim.
@compute @workgroup_size(256)
fn gather_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_index(gid, nwg);
    if (o >= p.n_out) {
        return;
    }
    let b = o % p.inner;
    let d = (o / p.inner) % p.dim;
    let row = o / (p.inner * p.dim);
    var acc = Acc(0);
    for (var j = 0u; j < p.r; j++) {
        if (idx[j] == i32(d)) {
            acc += Acc(x[(row * p.r + j) * p.inner + b]);
        }
    }
    y[o] = T(acc);
}
