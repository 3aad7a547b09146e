// optimizer.wgsl's steps eight f32 elements per invocation through
// vec4<u64> views (wide.wgsl), for CPU adapters with 64-bit integers: n is
// a multiple of 8 and the views start on 32 bytes (the host checks). Each
// lane runs the same rule (optimizer_rules.wgsl) as the one-element
// entries; the loops over lanes have constant bounds, which compilers
// unroll. Adam on 200k weights took 5.4 ms of llvmpipe's 23 ms MLP step
// one element per invocation.
//
// Bindings as in optimizer.wgsl.

@group(0) @binding(1) var<storage, read> var_in: array<vec4<u64>>;
@group(0) @binding(2) var<storage, read> grad: array<vec4<u64>>;
@group(0) @binding(3) var<storage, read> a_in: array<vec4<u64>>;
@group(0) @binding(4) var<storage, read> b_in: array<vec4<u64>>;
@group(0) @binding(6) var<storage, read_write> var_out: array<vec4<u64>>;
@group(0) @binding(7) var<storage, read_write> a_out: array<vec4<u64>>;
@group(0) @binding(8) var<storage, read_write> b_out: array<vec4<u64>>;

// Lane c of eight.
fn lane(e: Eight, c: u32) -> f32 {
    return select(e.hi[c & 3u], e.lo[c & 3u], c < 4u);
}

fn pack_lanes(v: array<f32, 8>) -> vec4<u64> {
    return pack8(Eight(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7])));
}

@compute @workgroup_size(256)
fn sgd8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j >= p.n / 8u) {
        return;
    }
    let w = unpack8(var_in[j]);
    let g = unpack8(grad[j]);
    var ow: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
        ow[c] = sgd_step(lane(w, c), clip_if(lane(g, c)), lr()).w;
    }
    var_out[j] = pack_lanes(ow);
}

@compute @workgroup_size(256)
fn sgd_momentum8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j >= p.n / 8u) {
        return;
    }
    let w = unpack8(var_in[j]);
    let g = unpack8(grad[j]);
    let a = unpack8(a_in[j]);
    var ow: array<f32, 8>;
    var oa: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
        let s = sgd_momentum_step(lane(w, c), clip_if(lane(g, c)), lane(a, c), lr(), p.c1, (p.flags & 2u) != 0u);
        ow[c] = s.w;
        oa[c] = s.a;
    }
    a_out[j] = pack_lanes(oa);
    var_out[j] = pack_lanes(ow);
}

@compute @workgroup_size(256)
fn adam8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j >= p.n / 8u) {
        return;
    }
    let w = unpack8(var_in[j]);
    let g = unpack8(grad[j]);
    let a = unpack8(a_in[j]);
    let b = unpack8(b_in[j]);
    var ow: array<f32, 8>;
    var oa: array<f32, 8>;
    var ob: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
        let s = adam_step(
            lane(w, c), clip_if(lane(g, c)), lane(a, c), lane(b, c),
            lr(), alpha(), p.c1, p.c2, p.eps, p.weight_decay,
        );
        ow[c] = s.w;
        oa[c] = s.a;
        ob[c] = s.b;
    }
    a_out[j] = pack_lanes(oa);
    b_out[j] = pack_lanes(ob);
    var_out[j] = pack_lanes(ow);
}

@compute @workgroup_size(256)
fn rmsprop8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j >= p.n / 8u) {
        return;
    }
    let w = unpack8(var_in[j]);
    let g = unpack8(grad[j]);
    let a = unpack8(a_in[j]);
    var ow: array<f32, 8>;
    var oa: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
        let s = rmsprop_step(lane(w, c), clip_if(lane(g, c)), lane(a, c), lr(), p.c1, p.eps);
        ow[c] = s.w;
        oa[c] = s.a;
    }
    a_out[j] = pack_lanes(oa);
    var_out[j] = pack_lanes(ow);
}

@compute @workgroup_size(256)
fn rmsprop_momentum8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg);
    if (j >= p.n / 8u) {
        return;
    }
    let w = unpack8(var_in[j]);
    let g = unpack8(grad[j]);
    let a = unpack8(a_in[j]);
    let b = unpack8(b_in[j]);
    var ow: array<f32, 8>;
    var oa: array<f32, 8>;
    var ob: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
        let s = rmsprop_momentum_step(lane(w, c), clip_if(lane(g, c)), lane(a, c), lane(b, c), lr(), p.c1, p.c2, p.eps);
        ow[c] = s.w;
        oa[c] = s.a;
        ob[c] = s.b;
    }
    a_out[j] = pack_lanes(oa);
    b_out[j] = pack_lanes(ob);
    var_out[j] = pack_lanes(ow);
}
