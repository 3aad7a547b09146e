// Data movement: strided copy (permute, slice, broadcast, concat), fill,
// gather along an axis, one-hot. Element type T; f32, i32 and bool are all
// moved as 32-bit words (the u32 variant), f16 as halves.
//
// Bindings: 1 src, 2 dst, 3 indices (i32), 4 device status (status.wgsl).

struct Copy {
    n: u32,
    rank: u32,
    src_off: u32,
    dst_off: u32,
    shape: array<vec4<u32>, 2>,
    src_strides: array<vec4<u32>, 2>,
    dst_strides: array<vec4<u32>, 2>,
}

struct Small {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
}

struct Gather {
    n: u32,
    d: u32,
    j: u32,
    inner: u32,
    slot: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> cp: Copy;
@group(0) @binding(0) var<uniform> sp: Small;
@group(0) @binding(0) var<uniform> gp: Gather;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;
@group(0) @binding(3) var<storage, read> idx: array<i32>;

// dst[dst_off + sum(c_d * dst_stride_d)] = src[src_off + sum(c_d * src_stride_d)]
// over every coordinate c of `shape`.
@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= cp.n) {
        return;
    }
    var rem = i;
    var s = cp.src_off;
    var d = cp.dst_off;
    for (var k = i32(cp.rank) - 1; k >= 0; k--) {
        let dim = at8(cp.shape, u32(k));
        let c = rem % dim;
        rem = rem / dim;
        s += c * at8(cp.src_strides, u32(k));
        d += c * at8(cp.dst_strides, u32(k));
    }
    dst[d] = src[s];
}

// dst[i] = value for i < a; b holds the value's bits.
@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < sp.a) {
        dst[i] = t_from_bits(sp.b);
    }
}

// src is [outer, d, inner]: dst[o, j, b] = src[o, idx[j], b]; a bad index
// reports and yields zero.
@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= gp.n) {
        return;
    }
    let b = i % gp.inner;
    let j = (i / gp.inner) % gp.j;
    let o = i / (gp.inner * gp.j);
    let k = idx[j];
    if (k < 0 || u32(k) >= gp.d) {
        report_status(gp.slot, 1u, k, gp.d);
        dst[i] = T(0);
        return;
    }
    dst[i] = src[(o * gp.d + u32(k)) * gp.inner + b];
}

// TensorFlow refuses an integer division by zero (code 3) and a negative
// integer power (4): a pass over the divisor or exponent (idx, sp.a
// values) reports one such value in status record sp.c (code sp.b).
@compute @workgroup_size(256)
fn int_check(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= sp.a) {
        return;
    }
    let v = idx[i];
    if ((sp.b == 3u && v == 0) || (sp.b == 4u && v < 0)) {
        report_status(sp.c, sp.b, v, 0u);
    }
}

// dst[r, j] = on if idx[r] == j else off (a = n, b = depth, c = on bits,
// d = off bits); indices outside [0, depth) give a row of `off`, as in TF.
@compute @workgroup_size(256)
fn one_hot(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= sp.a) {
        return;
    }
    let r = i / sp.b;
    let j = i % sp.b;
    dst[i] = select(t_from_bits(sp.d), t_from_bits(sp.c), idx[r] == i32(j));
}

