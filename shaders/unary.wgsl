// Elementwise unary math, y = f(x). OP selects f (codes in ops/unary.rs);
// it is an override constant, so each op is its own pipeline and the
// compiler sees straight-line code (llvmpipe runs a switch on a uniform
// through every case, a few times slower). The gradient entries take OP
// too, except where UNIFORM_GRAD is set: they then take the op as the
// uniform p.op, since with a constant derivative in sight (sign's 0)
// llvmpipe folds dy * 0 to 0, where IEEE (and TensorFlow) give NaN for a
// NaN or infinite dy.
// Storage is T; the math runs in f32, as Eigen does for half transcendental
// functions, and rounds once on store.

override OP: u32 = 0u;
override UNIFORM_GRAD: bool = true;

// The op of the gradient entries.
fn grad_op() -> u32 {
    return select(OP, p.op, UNIFORM_GRAD);
}

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

// Four elements per invocation, where n is a multiple of 4: the same math
// through vec4 views of x and y. GPUs load 16 bytes per instruction; on
// llvmpipe, which loops over the lanes for every storage access, four
// elements share one loop (exp on 4M f32: 17 ms against 22.5 on lavapipe).
// Bindings 5 x, 6 y.
@group(0) @binding(5) var<storage, read> x4: array<vec4<T>>;
@group(0) @binding(6) var<storage, read_write> y4: array<vec4<T>>;

fn apply4(v: vec4<f32>) -> vec4<T> {
    return vec4<T>(vec4<f32>(
        unary_apply(OP, v.x, p.alpha),
        unary_apply(OP, v.y, p.alpha),
        unary_apply(OP, v.z, p.alpha),
        unary_apply(OP, v.w, p.alpha),
    ));
}

@compute @workgroup_size(256)
fn main4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n / 4u) {
        y4[i] = apply4(vec4<f32>(x4[i]));
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
        y[i] = T(f32(dy[i]) * opaque(unary_deriv(grad_op(), f32(x[i]), f32(fy[i]), p.alpha), nwg.z - 1u));
    }
}

// The gradient four elements per invocation (n a multiple of 4).
// Bindings 5 x, 6 dx (out), 7 y, 8 dy.
@group(0) @binding(7) var<storage, read> fy4: array<vec4<T>>;
@group(0) @binding(8) var<storage, read> dy4: array<vec4<T>>;

// `zero` (the grid's z count less one) hides the derivative from the
// compiler, as `opaque` does in generated kernels: a derivative it could
// see is 0 or 1 (relu's, a step's) lets NIR's inexact algebra turn dy * 0
// into 0 (Mesa 25+ does), where TensorFlow's NaN or infinite dy gives NaN.
fn deriv4(v: vec4<f32>, r: vec4<f32>, g: vec4<f32>, zero: u32) -> vec4<T> {
    let d = vec4<f32>(
        opaque(unary_deriv(grad_op(), v.x, r.x, p.alpha), zero),
        opaque(unary_deriv(grad_op(), v.y, r.y, p.alpha), zero),
        opaque(unary_deriv(grad_op(), v.z, r.z, p.alpha), zero),
        opaque(unary_deriv(grad_op(), v.w, r.w, p.alpha), zero),
    );
    return vec4<T>(g * d);
}

@compute @workgroup_size(256)
fn grad4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < p.n / 4u) {
        y4[i] = deriv4(vec4<f32>(x4[i]), vec4<f32>(fy4[i]), vec4<f32>(dy4[i]), nwg.z - 1u);
    }
}
