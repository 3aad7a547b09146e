// Optimizer steps, one invocation per element: each reads the variable,
// its gradient and slots, and writes the new variable and slots (to new
// buffers), with the rules of optimizer_rules.wgsl; parameters, the
// learning rate and clipping in optimizer_params.wgsl.
//
// Bindings: 1 var, 2 grad, 3 slot a, 4 slot b, 5 norm, 6 var out,
// 7 slot a out, 8 slot b out, 9 hyper = [lr, alpha].

@group(0) @binding(1) var<storage, read> var_in: array<T>;
@group(0) @binding(2) var<storage, read> grad: array<T>;
@group(0) @binding(3) var<storage, read> a_in: array<T>;
@group(0) @binding(4) var<storage, read> b_in: array<T>;
@group(0) @binding(6) var<storage, read_write> var_out: array<T>;
@group(0) @binding(7) var<storage, read_write> a_out: array<T>;
@group(0) @binding(8) var<storage, read_write> b_out: array<T>;

fn g_at(i: u32) -> f32 {
    return clip_if(f32(grad[i]));
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        var_out[i] = T(sgd_step(f32(var_in[i]), g_at(i), lr()).w);
    }
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        let s = sgd_momentum_step(f32(var_in[i]), g_at(i), f32(a_in[i]), lr(), p.c1, (p.flags & 2u) != 0u);
        a_out[i] = T(s.a);
        var_out[i] = T(s.w);
    }
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        let s = adam_step(
            f32(var_in[i]), g_at(i), f32(a_in[i]), f32(b_in[i]),
            lr(), alpha(), p.c1, p.c2, p.eps, p.weight_decay,
        );
        a_out[i] = T(s.a);
        b_out[i] = T(s.b);
        var_out[i] = T(s.w);
    }
}

@compute @workgroup_size(256)
fn rmsprop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        let s = rmsprop_step(f32(var_in[i]), g_at(i), f32(a_in[i]), lr(), p.c1, p.eps);
        a_out[i] = T(s.a);
        var_out[i] = T(s.w);
    }
}

@compute @workgroup_size(256)
fn rmsprop_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        let s = rmsprop_momentum_step(f32(var_in[i]), g_at(i), f32(a_in[i]), f32(b_in[i]), lr(), p.c1, p.c2, p.eps);
        a_out[i] = T(s.a);
        b_out[i] = T(s.b);
        var_out[i] = T(s.w);
    }
}
