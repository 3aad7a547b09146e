//! Fused optimizer steps (kernel: shaders/optimizer.wgsl): one kernel per
//! variable reads the variable, gradient and slots and writes their new
//! values, as new tensors (the optimizer assigns them).
//! `nn::optimizers` builds the [`Update`]s; this file holds their
//! math, with Keras' update formulas.
//!
//! Part of [`crate::core::op`]; the shape rule is in `ops::optim`.

/// The update formula and its constant hyper-parameters (the learning rate,
/// which may change every step, is an input instead).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// Inputs (var, grad[, momentum]); outputs (var[, momentum]).
    Sgd {
        /// Velocity decay; 0 for plain SGD (no slot).
        momentum: f32,
        /// Nesterov momentum (Keras' `nesterov=True`).
        nesterov: bool,
    },
    /// Inputs (var, grad, m, v); outputs (var, m, v). The bias-corrected
    /// learning rate of the step comes with the hyper-parameter input.
    Adam {
        /// Decay of the first-moment estimate (`beta_1`).
        beta1: f32,
        /// Decay of the second-moment estimate (`beta_2`).
        beta2: f32,
        /// Added to the root of the second moment (`epsilon`).
        eps: f32,
        /// Decoupled weight decay (AdamW); 0 for Adam.
        weight_decay: f32,
    },
    /// Inputs (var, grad, ms[, mom]); outputs (var, ms[, mom]).
    RmsProp {
        /// Decay of the mean square (`rho`).
        rho: f32,
        /// Momentum; 0 for none (no `mom` slot).
        momentum: f32,
        /// Added to the mean square under the root (`epsilon`).
        eps: f32,
    },
}

/// One step of an optimizer for one variable. Inputs: variable, gradient,
/// slots, then `hyper` = [learning rate, Adam's bias-corrected rate] (f32,
/// it changes every step), then with `clip` the gradient's L2 norm (a scalar
/// f32): the gradient is scaled by min(1, clip / norm) (Keras' `clipnorm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    /// The formula.
    pub rule: Rule,
    /// Keras' `clipnorm`: the largest L2 norm the gradient keeps; `None`
    /// for no clipping (and no norm input).
    pub clip: Option<f32>,
}

impl Update {
    /// `"sgd_update"`, `"adam_update"` or `"rmsprop_update"`.
    pub fn name(&self) -> &'static str {
        match self.rule {
            Rule::Sgd { .. } => "sgd_update",
            Rule::Adam { .. } => "adam_update",
            Rule::RmsProp { .. } => "rmsprop_update",
        }
    }

    /// Number of slot tensors the rule reads and writes.
    pub fn slots(&self) -> usize {
        match self.rule {
            Rule::Sgd { momentum, .. } => (momentum != 0.0) as usize,
            Rule::Adam { .. } => 2,
            Rule::RmsProp { momentum, .. } => 1 + (momentum != 0.0) as usize,
        }
    }

    /// The reference step for one element: (var, [slots]) from (var, grad, [slots]).
    #[inline]
    pub(crate) fn step(&self, w: f64, g: f64, s: [f64; 2], norm: f64, hyper: [f64; 2]) -> (f64, [f64; 2]) {
        let [lr, alpha] = hyper;
        let g = match self.clip {
            Some(c) if norm > c as f64 => g * c as f64 / norm,
            _ => g,
        };
        match self.rule {
            Rule::Sgd { momentum, nesterov } => {
                let mo = momentum as f64;
                if mo == 0.0 {
                    return (w - lr * g, s);
                }
                let m = mo * s[0] - lr * g;
                (w + if nesterov { mo * m - lr * g } else { m }, [m, 0.0])
            }
            Rule::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let w = w - w * weight_decay as f64 * lr;
                let m = s[0] + (g - s[0]) * (1.0 - beta1 as f64);
                let v = s[1] + (g * g - s[1]) * (1.0 - beta2 as f64);
                (w - alpha * m / (v.sqrt() + eps as f64), [m, v])
            }
            Rule::RmsProp { rho, momentum, eps } => {
                let ms = rho as f64 * s[0] + (1.0 - rho as f64) * g * g;
                let inc = lr * g / (ms + eps as f64).sqrt();
                if momentum == 0.0 {
                    (w - inc, [ms, 0.0])
                } else {
                    let mom = momentum as f64 * s[1] + inc;
                    (w - mom, [ms, mom])
                }
            }
        }
    }

    /// The rule applied to WGSL expressions (a call into
    /// shaders/optimizer_rules.wgsl, which returns a `Step`): variable,
    /// gradient, slots, gradient norm (read with clipping), learning rate,
    /// Adam's rate. Hyper-parameters become exact literals.
    pub(crate) fn wgsl(&self, w: &str, g: &str, s: [&str; 2], norm: &str, lr: &str, alpha: &str) -> String {
        let lit = |x: f32| format!("bitcast<f32>({}u)", x.to_bits());
        let g = match self.clip {
            Some(c) => format!("clip_grad({g}, {norm}, {})", lit(c)),
            None => g.to_string(),
        };
        let [a, b] = s;
        match self.rule {
            Rule::Sgd { momentum: 0.0, .. } => format!("sgd_step({w}, {g}, {lr})"),
            Rule::Sgd { momentum, nesterov } => {
                format!("sgd_momentum_step({w}, {g}, {a}, {lr}, {}, {nesterov})", lit(momentum))
            }
            Rule::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => format!(
                "adam_step({w}, {g}, {a}, {b}, {lr}, {alpha}, {}, {}, {}, {})",
                lit(beta1),
                lit(beta2),
                lit(eps),
                lit(weight_decay)
            ),
            Rule::RmsProp {
                rho,
                momentum: 0.0,
                eps,
            } => {
                format!("rmsprop_step({w}, {g}, {a}, {lr}, {}, {})", lit(rho), lit(eps))
            }
            Rule::RmsProp { rho, momentum, eps } => format!(
                "rmsprop_momentum_step({w}, {g}, {a}, {b}, {lr}, {}, {}, {})",
                lit(rho),
                lit(momentum),
                lit(eps)
            ),
        }
    }

    pub(crate) fn entry(&self) -> &'static str {
        match self.rule {
            Rule::Sgd { momentum: 0.0, .. } => "sgd",
            Rule::Sgd { .. } => "sgd_momentum",
            Rule::Adam { .. } => "adam",
            Rule::RmsProp { momentum: 0.0, .. } => "rmsprop",
            Rule::RmsProp { .. } => "rmsprop_momentum",
        }
    }

    /// `entry`'s eight-wide twin (shaders/optimizer_wide.wgsl).
    pub(crate) fn wide_entry(&self) -> &'static str {
        match self.rule {
            Rule::Sgd { momentum: 0.0, .. } => "sgd8",
            Rule::Sgd { .. } => "sgd_momentum8",
            Rule::Adam { .. } => "adam8",
            Rule::RmsProp { momentum: 0.0, .. } => "rmsprop8",
            Rule::RmsProp { .. } => "rmsprop_momentum8",
        }
    }
}
