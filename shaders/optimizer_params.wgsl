// What the optimizer kernels (optimizer.wgsl, optimizer_wide.wgsl) share:
// the parameters, the learning rate and clipping. The gradient is first
// scaled by min(1, clip / norm) when clipping is on (flags bit 0); norm[0]
// holds the gradient's L2 norm. Formulas follow Keras 3. The learning rate
// and Adam's bias-corrected rate come from a buffer, not the uniform,
// because they change every step and a traced graph replays the same
// launch.
//
// Bindings: 5 norm, 9 hyper = [lr, alpha] (the others in each kernel).

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
@group(0) @binding(5) var<storage, read> norm: array<f32>;
@group(0) @binding(9) var<storage, read> hyper: array<f32>;

fn lr() -> f32 {
    return hyper[0];
}

// Adam: lr * sqrt(1 - beta2^t) / (1 - beta1^t)
fn alpha() -> f32 {
    return hyper[1];
}

// The gradient, clipped when clipping is on.
fn clip_if(g: f32) -> f32 {
    if ((p.flags & 1u) != 0u) {
        return clip_grad(g, norm[0], p.clip);
    }
    return g;
}
