// Elementwise unary math, y = f(x). OP selects f (codes in ops/unary.rs);
// it is an override constant, so each op is its own pipeline and the
// compiler sees straight-line code (llvmpipe runs a switch on a uniform
// through every case, a few times slower). The gradient entry takes the op
// as the uniform p.op instead: with a constant derivative in sight (sign's
// 0) llvmpipe folds dy * 0 to 0, where IEEE (and TensorFlow) give NaN for a
// NaN or infinite dy.
// Storage is T; the math runs in f32, as Eigen does for half transcendental
// functions, and rounds once on store.

override OP: u32 = 0u;

struct Params {
    n: u32,
    alpha: f32,
    op: u32,
    _p: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        y[i] = T(unary_apply(OP, f32(x[i]), p.alpha));
    }
}

// Gradient: dx = dy * f'(x), with y = f(x) at hand where f' is cheaper
// through it. Bindings 1 x, 2 dx (out), 3 y, 4 dy.
@group(0) @binding(3) var<storage, read> fy: array<T>;
@group(0) @binding(4) var<storage, read> dy: array<T>;

@compute @workgroup_size(256)
fn grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n) {
        y[i] = T(f32(dy[i]) * unary_deriv(p.op, f32(x[i]), f32(fy[i]), p.alpha));
    }
}
