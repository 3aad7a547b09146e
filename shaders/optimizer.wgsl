// Fused optimizer steps, one invocation per element: each reads the
// variable, its gradient and slots, and writes the new variable and slots
// (to new buffers). The gradient is first scaled by min(1, clip / norm)
// when clipping is on (flags bit 0); norm[0] holds the gradient's L2 norm.
// Formulas follow Keras 3. The learning rate and Adam's bias-corrected
// rate come from a buffer, not the uniform, because they change every step
// and a traced graph replays the same launch.
//
// Bindings: 1 var, 2 grad, 3 slot a, 4 slot b, 5 norm, 6 var out,
// 7 slot a out, 8 slot b out, 9 hyper = [lr, alpha].

struct Params {
    n: u32,
    flags: u32,
    _p0: u32,
    _p1: u32,
    _lr: f32,
    // sgd: momentum; adam: beta1; rmsprop: rho
    c1: f32,
    // adam: beta2; rmsprop: momentum
    c2: f32,
    eps: f32,
    _alpha: f32,
    weight_decay: f32,
    clip: f32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> var_in: array<T>;
@group(0) @binding(2) var<storage, read> grad: array<T>;
@group(0) @binding(3) var<storage, read> a_in: array<T>;
@group(0) @binding(4) var<storage, read> b_in: array<T>;
@group(0) @binding(5) var<storage, read> norm: array<f32>;
@group(0) @binding(6) var<storage, read_write> var_out: array<T>;
@group(0) @binding(7) var<storage, read_write> a_out: array<T>;
@group(0) @binding(8) var<storage, read_write> b_out: array<T>;
@group(0) @binding(9) var<storage, read> hyper: array<f32>;

fn lr() -> f32 {
    return hyper[0];
}

// Adam: lr * sqrt(1 - beta2^t) / (1 - beta1^t)
fn alpha() -> f32 {
    return hyper[1];
}

fn g_at(i: u32) -> f32 {
    var g = f32(grad[i]);
    if ((p.flags & 1u) != 0u) {
        let n = norm[0];
        g = select(g, g * p.clip / n, n > p.clip);
    }
    return g;
}

// var -= lr * g
@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        var_out[i] = T(f32(var_in[i]) - lr() * g_at(i));
    }
}

// m = momentum m - lr g; var += m, or momentum m - lr g with Nesterov (flags bit 1)
@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        let g = g_at(i);
        let m = p.c1 * f32(a_in[i]) - lr() * g;
        a_out[i] = T(m);
        let step = select(m, p.c1 * m - lr() * g, (p.flags & 2u) != 0u);
        var_out[i] = T(f32(var_in[i]) + step);
    }
}

// Decoupled weight decay (AdamW), then m += (g - m)(1 - b1),
// v += (g^2 - v)(1 - b2), var -= alpha m / (sqrt(v) + eps).
@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        let g = g_at(i);
        var w = f32(var_in[i]);
        w -= w * p.weight_decay * lr();
        var m = f32(a_in[i]);
        var v = f32(b_in[i]);
        m += (g - m) * (1.0 - p.c1);
        v += (g * g - v) * (1.0 - p.c2);
        a_out[i] = T(m);
        b_out[i] = T(v);
        var_out[i] = T(w - alpha() * m / (sqrt(v) + p.eps));
    }
}

// ms = rho ms + (1 - rho) g^2; var -= lr g / sqrt(ms + eps)
@compute @workgroup_size(256)
fn rmsprop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        let g = g_at(i);
        let ms = p.c1 * f32(a_in[i]) + (1.0 - p.c1) * g * g;
        a_out[i] = T(ms);
        var_out[i] = T(f32(var_in[i]) - lr() * g / sqrt(ms + p.eps));
    }
}

// With momentum: mom = momentum mom + lr g / sqrt(ms + eps); var -= mom
@compute @workgroup_size(256)
fn rmsprop_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        let g = g_at(i);
        let ms = p.c1 * f32(a_in[i]) + (1.0 - p.c1) * g * g;
        let mom = p.c2 * f32(b_in[i]) + lr() * g / sqrt(ms + p.eps);
        a_out[i] = T(ms);
        b_out[i] = T(mom);
        var_out[i] = T(f32(var_in[i]) - mom);
    }
}
