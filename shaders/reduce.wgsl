// Reductions of x viewed as [rows, r, inner] over the middle axis, giving
// [rows, inner]. `rows_main`: inner == 1, one workgroup per row with a tree
// in workgroup memory. `cols_main`: inner > 1, one invocation per output.
// Accumulation is in Acc (f32 for f16 data). No identity sentinels: each
// partial result carries a flag saying whether it saw any element, and the
// host handles r == 0.
//
// p.op: 0 sum, 1 mean, 2 max, 3 min, 4 prod, 5 argmax, 6 argmin.
// Bindings: 1 x, 2 y (T), 3 y (i32, for arg ops).

struct Params {
    rows: u32,
    r: u32,
    inner: u32,
    n_out: u32,
    op: u32,
    dim: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<storage, read_write> yi: array<i32>;
@group(0) @binding(4) var<storage, read> idx: array<i32>;

var<workgroup> sv: array<Acc, 256>;
var<workgroup> si: array<u32, 256>;
var<workgroup> sh: array<u32, 256>;

// Whether (v, i) replaces the current (a, j) for arg ops: strictly better,
// or equal with a smaller index (first occurrence wins).
fn wins(v: Acc, i: u32, a: Acc, j: u32) -> bool {
    if (p.op == 5u) {
        return v > a || (v == a && i < j);
    }
    return v < a || (v == a && i < j);
}

fn combine(a: Acc, v: Acc) -> Acc {
    switch p.op {
        case 2u: { return max(a, v); }
        case 3u: { return min(a, v); }
        case 4u: { return a * v; }
        default: { return a + v; }
    }
}

fn store(o: u32, a: Acc, i: u32) {
    if (p.op >= 5u) {
        yi[o] = i32(i);
    } else if (p.op == 1u) {
        y[o] = T(a / Acc(p.r));
    } else {
        y[o] = T(a);
    }
}

@compute @workgroup_size(256)
fn rows_main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.r;
    let t = lid.x;
    var acc: Acc;
    var idx = 0u;
    var has = false;
    for (var k = t; k < p.r; k += 256u) {
        let v = Acc(x[base + k]);
        if (!has) {
            acc = v;
            idx = k;
            has = true;
        } else if (p.op >= 5u) {
            if (wins(v, k, acc, idx)) {
                acc = v;
                idx = k;
            }
        } else {
            acc = combine(acc, v);
        }
    }
    sv[t] = acc;
    si[t] = idx;
    sh[t] = select(0u, 1u, has);
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s && sh[t + s] != 0u) {
            let v = sv[t + s];
            let k = si[t + s];
            if (sh[t] == 0u) {
                sv[t] = v;
                si[t] = k;
                sh[t] = 1u;
            } else if (p.op >= 5u) {
                if (wins(v, k, sv[t], si[t])) {
                    sv[t] = v;
                    si[t] = k;
                }
            } else {
                sv[t] = combine(sv[t], v);
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        store(row, sv[0], si[0]);
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
    var acc = Acc(x[base]);
    var idx = 0u;
    for (var k = 1u; k < p.r; k++) {
        let v = Acc(x[base + k * p.inner]);
        if (p.op >= 5u) {
            if (wins(v, k, acc, idx)) {
                acc = v;
                idx = k;
            }
        } else {
            acc = combine(acc, v);
        }
    }
    store(o, acc, idx);
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
