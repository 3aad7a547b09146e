// Softmax and log-softmax of x viewed as [rows, r, inner] along the middle
// axis (max-subtracted), and sparse softmax cross-entropy from logits [n, c].
// `*_rows` entries: one workgroup per row (inner == 1); `*_cols`: one
// invocation per (row, inner) pair, for CPU adapters, where barriers cost
// more than a serial loop. Math in f32.
//
// Bindings: 1 x, 2 y, 3 labels (i32), 4 device status (status.wgsl).

struct Params {
    rows: u32,
    r: u32,
    inner: u32,
    n_out: u32,
    slot: u32,
    log: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;

var<workgroup> red: array<f32, 256>;

// Code 2: a label out of range.
fn report(value: i32, limit: u32) {
    report_status(p.slot, 2u, value, limit);
}

fn wg_max(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = red[t] + red[t + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// (max, sum of exp(x - max)) of row `base`, cooperatively. Every partial
// max starts from the row's first element, so no -inf sentinel is needed.
fn row_stats(t: u32, base: u32) -> vec2<f32> {
    var m = f32(x[base]);
    for (var k = t; k < p.r; k += 256u) {
        m = max(m, f32(x[base + k]));
    }
    m = wg_max(t, m);
    var s = 0.0;
    for (var k = t; k < p.r; k += 256u) {
        s += exp(f32(x[base + k]) - m);
    }
    return vec2<f32>(m, wg_sum(t, s));
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(256)
fn softmax_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = row_of(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.r;
    let ms = row_stats(lid.x, base);
    let ls = log(ms.y);
    for (var k = lid.x; k < p.r; k += 256u) {
        let z = f32(x[base + k]) - ms.x;
        y[base + k] = T(select(exp(z) / ms.y, z - ls, p.log != 0u));
    }
}

@compute @workgroup_size(256)
fn softmax_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_index(gid, nwg);
    if (o >= p.n_out) {
        return;
    }
    let b = o % p.inner;
    let base = (o / p.inner) * p.r * p.inner + b;
    var m = f32(x[base]);
    for (var k = 1u; k < p.r; k++) {
        m = max(m, f32(x[base + k * p.inner]));
    }
    var s = 0.0;
    for (var k = 0u; k < p.r; k++) {
        s += exp(f32(x[base + k * p.inner]) - m);
    }
    let ls = log(s);
    for (var k = 0u; k < p.r; k++) {
        let z = f32(x[base + k * p.inner]) - m;
        y[base + k * p.inner] = T(select(exp(z) / s, z - ls, p.log != 0u));
    }
}

// loss[row] = logsumexp(x[row]) - x[row, label]
@compute @workgroup_size(256)
fn xent_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = row_of(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.r;
    let ms = row_stats(lid.x, base);
    if (lid.x == 0u) {
        let label = labels[row];
        if (label < 0 || u32(label) >= p.r) {
            report(label, p.r);
            y[row] = T(0.0);
        } else {
            y[row] = T(log(ms.y) + ms.x - f32(x[base + u32(label)]));
        }
    }
}

// grad[row, k] = softmax(x[row])[k] - (k == label)
@compute @workgroup_size(256)
fn xent_grad_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = row_of(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.r;
    let ms = row_stats(lid.x, base);
    let label = labels[row];
    if (lid.x == 0u && (label < 0 || u32(label) >= p.r)) {
        report(label, p.r);
    }
    for (var k = lid.x; k < p.r; k += 256u) {
        let sm = exp(f32(x[base + k]) - ms.x) / ms.y;
        y[base + k] = T(sm - select(0.0, 1.0, i32(k) == label));
    }
}

// (max, sum of exp(x - max)) of row `base`, by one invocation.
fn row_stats_serial(base: u32) -> vec2<f32> {
    var m = f32(x[base]);
    for (var k = 1u; k < p.r; k++) {
        m = max(m, f32(x[base + k]));
    }
    var s = 0.0;
    for (var k = 0u; k < p.r; k++) {
        s += exp(f32(x[base + k]) - m);
    }
    return vec2<f32>(m, s);
}

// xent_rows, one invocation per row.
@compute @workgroup_size(256)
fn xent_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_index(gid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.r;
    let ms = row_stats_serial(base);
    let label = labels[row];
    if (label < 0 || u32(label) >= p.r) {
        report(label, p.r);
        y[row] = T(0.0);
    } else {
        y[row] = T(log(ms.y) + ms.x - f32(x[base + u32(label)]));
    }
}

// xent_grad_rows, one invocation per row.
@compute @workgroup_size(256)
fn xent_grad_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_index(gid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.r;
    let ms = row_stats_serial(base);
    let label = labels[row];
    if (label < 0 || u32(label) >= p.r) {
        report(label, p.r);
    }
    for (var k = 0u; k < p.r; k++) {
        let sm = exp(f32(x[base + k]) - ms.x) / ms.y;
        y[base + k] = T(sm - select(0.0, 1.0, i32(k) == label));
    }
}
