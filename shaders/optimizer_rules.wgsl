// The optimizer rules, one element at a time, in f32: the optimizer kernels
// (optimizer.wgsl) and the fused kernels of compiled graphs (which apply an
// update right after the reduction that computes its gradient) both call
// them, so a traced step updates exactly as an eager one. Formulas follow
// Keras 3; Rust's reference is `Update::step` in ops/optim.rs.

struct Step {
    w: f32,
    a: f32,
    b: f32,
}

// Keras' clipnorm: g * min(1, clip / norm).
fn clip_grad(g: f32, norm: f32, clip: f32) -> f32 {
    return select(g, g * clip / norm, norm > clip);
}

// var -= lr g
fn sgd_step(w: f32, g: f32, lr: f32) -> Step {
    return Step(w - lr * g, 0.0, 0.0);
}

// m = momentum m - lr g; var += m, or momentum m - lr g with Nesterov.
fn sgd_momentum_step(w: f32, g: f32, m0: f32, lr: f32, momentum: f32, nesterov: bool) -> Step {
    let m = momentum * m0 - lr * g;
    let step = select(m, momentum * m - lr * g, nesterov);
    return Step(w + step, m, 0.0);
}

// Decoupled weight decay (AdamW), then m += (g - m)(1 - b1),
// v += (g^2 - v)(1 - b2), var -= alpha m / (sqrt(v) + eps), where alpha is
// the bias-corrected rate lr sqrt(1 - b2^t) / (1 - b1^t).
fn adam_step(w0: f32, g: f32, m0: f32, v0: f32, lr: f32, alpha: f32, b1: f32, b2: f32, eps: f32, wd: f32) -> Step {
    let w = w0 - w0 * wd * lr;
    let m = m0 + (g - m0) * (1.0 - b1);
    let v = v0 + (g * g - v0) * (1.0 - b2);
    return Step(w - alpha * m / (sqrt(v) + eps), m, v);
}

// ms = rho ms + (1 - rho) g^2; var -= lr g / sqrt(ms + eps)
fn rmsprop_step(w: f32, g: f32, ms0: f32, lr: f32, rho: f32, eps: f32) -> Step {
    let ms = rho * ms0 + (1.0 - rho) * g * g;
    return Step(w - lr * g / sqrt(ms + eps), ms, 0.0);
}

// With momentum: mom = momentum mom + lr g / sqrt(ms + eps); var -= mom
fn rmsprop_momentum_step(w: f32, g: f32, ms0: f32, mom0: f32, lr: f32, rho: f32, momentum: f32, eps: f32) -> Step {
    let ms = rho * ms0 + (1.0 - rho) * g * g;
    let mom = momentum * mom0 + lr * g / sqrt(ms + eps);
    return Step(w - mom, ms, mom);
}
