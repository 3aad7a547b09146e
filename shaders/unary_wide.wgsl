// `main` and `grad` eight f32 elements per invocation through vec4<u64>
// views (shaders/wide.wgsl), where n is a multiple of 8, on CPU adapters.
// Bindings 9 x, 10 y (or dx), 11 y, 12 dy.

@group(0) @binding(9) var<storage, read> xw: array<vec4<u64>>;
@group(0) @binding(10) var<storage, read_write> yw: array<vec4<u64>>;
@group(0) @binding(11) var<storage, read> fyw: array<vec4<u64>>;
@group(0) @binding(12) var<storage, read> dyw: array<vec4<u64>>;

@compute @workgroup_size(256)
fn main8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n / 8u) {
        let v = unpack8(xw[i]);
        yw[i] = pack8(Eight(apply4(v.lo), apply4(v.hi)));
    }
}

@compute @workgroup_size(256)
fn grad8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n / 8u) {
        let v = unpack8(xw[i]);
        let r = unpack8(fyw[i]);
        let g = unpack8(dyw[i]);
        let zero = nwg.z - 1u;
        yw[i] = pack8(Eight(deriv4(v.lo, r.lo, g.lo, zero), deriv4(v.hi, r.hi, g.hi, zero)));
    }
}
