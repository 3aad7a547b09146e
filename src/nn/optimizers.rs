//! Keras optimizers (SGD with momentum and Nesterov, Adam, AdamW, RMSprop),
//! learning-rate schedules and `clipnorm`. Each variable's step is one fused
//! kernel ([`crate::ops::optim`]); slots are created on first use,
//! zero-initialized.
//!
//! [`crate::nn::model::Model::compile`] takes any of [`SGD`], [`Adam`],
//! [`AdamW`], [`RMSprop`] (each turns into an [`Optimizer`]); a custom loop
//! calls [`Optimizer::apply_gradients`] with gradients from a
//! [`GradientTape`](crate::autodiff::GradientTape). The step count and slots
//! are saved with the variables by [`crate::io::checkpoint`].

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::function::host_input;
use crate::ops::optim::{Rule, Update};
use crate::ops::{self, Op, exec_multi};
use crate::runtime::cpu::CpuData;
use crate::tensor::{Tensor, Variable};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// `keras.optimizers.schedules.LearningRateSchedule`: a learning rate that
/// depends on the step. Evaluated on the host once per step, also when the
/// step is replayed from a traced graph.
pub trait LearningRateSchedule: Send + Sync {
    /// The rate for `step` (0-based: the optimizer's `iterations` before the update).
    fn lr(&self, step: u64) -> f64;
    /// The rate for `step`, an f32 tensor of shape `[1]` on a device, as
    /// an f32 tensor of the same shape: a [`LossScaleOptimizer`] counts its
    /// steps on the device (a skipped step is no step, as in Keras) and
    /// evaluates the schedule there. `None` (the default) evaluates
    /// [`LearningRateSchedule::lr`] on the host at the count of all steps,
    /// skipped ones included.
    fn lr_on_device(&self, step: &Tensor) -> Option<Result<Tensor>> {
        let _ = step;
        None
    }
}

/// `keras.optimizers.schedules.ExponentialDecay`:
/// lr0 * rate^(step / decay_steps), the exponent floored with `staircase`.
#[derive(Clone, Debug)]
pub struct ExponentialDecay {
    /// The rate at step 0.
    pub initial_learning_rate: f64,
    /// Steps over which the rate is multiplied by `decay_rate` once.
    pub decay_steps: u64,
    /// Factor applied per `decay_steps`.
    pub decay_rate: f64,
    /// Decay in discrete jumps every `decay_steps` (Keras' default: false).
    pub staircase: bool,
}

impl LearningRateSchedule for ExponentialDecay {
    fn lr(&self, step: u64) -> f64 {
        let mut p = step as f64 / self.decay_steps.max(1) as f64;
        if self.staircase {
            p = p.floor();
        }
        self.initial_learning_rate * self.decay_rate.powf(p)
    }
    fn lr_on_device(&self, step: &Tensor) -> Option<Result<Tensor>> {
        let rate = || -> Result<Tensor> {
            let mut p = step.div_scalar(self.decay_steps.max(1) as f64)?;
            if self.staircase {
                p = p.floor()?;
            }
            // rate^p = exp(p ln rate); a rate of 0 gives exp(-inf) = 0.
            p.mul_scalar(self.decay_rate.ln())?
                .exp()?
                .mul_scalar(self.initial_learning_rate)
        };
        // ln of a rate of 0 or below is not finite (0^0 would be NaN, not
        // 1): such a schedule stays on the host.
        (self.decay_rate > 0.0).then(rate)
    }
}

/// `keras.optimizers.schedules.CosineDecay` (no warmup):
/// lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, n) / n)) + alpha).
#[derive(Clone, Debug)]
pub struct CosineDecay {
    /// The rate at step 0.
    pub initial_learning_rate: f64,
    /// Steps to decay over; the rate stays at the minimum afterwards.
    pub decay_steps: u64,
    /// The minimum rate as a fraction of `initial_learning_rate` (Keras: 0.0).
    pub alpha: f64,
}

impl LearningRateSchedule for CosineDecay {
    fn lr(&self, step: u64) -> f64 {
        let n = self.decay_steps.max(1) as f64;
        let t = (step as f64).min(n) / n;
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        self.initial_learning_rate * ((1.0 - self.alpha) * cos + self.alpha)
    }
    fn lr_on_device(&self, step: &Tensor) -> Option<Result<Tensor>> {
        let rate = || -> Result<Tensor> {
            let n = self.decay_steps.max(1) as f64;
            let t = step.minimum(&step.scalar_like(n)?)?.div_scalar(n)?;
            let cos = t
                .mul_scalar(std::f64::consts::PI)?
                .cos()?
                .add_scalar(1.0)?
                .mul_scalar(0.5)?;
            cos.mul_scalar(1.0 - self.alpha)?
                .add_scalar(self.alpha)?
                .mul_scalar(self.initial_learning_rate)
        };
        Some(rate())
    }
}

/// `keras.optimizers.schedules.PiecewiseConstantDecay`: `values[0]` up to
/// and including step `boundaries[0]`, `values[1]` up to `boundaries[1]`,
/// and so on; `values` has one more entry than `boundaries`.
#[derive(Clone, Debug)]
pub struct PiecewiseConstantDecay {
    boundaries: Vec<u64>,
    values: Vec<f64>,
}

impl PiecewiseConstantDecay {
    /// The schedule, or [`Error::InvalidArgument`] when `values` does not have one more
    /// entry than `boundaries` or the boundaries do not increase.
    pub fn new(boundaries: Vec<u64>, values: Vec<f64>) -> Result<PiecewiseConstantDecay> {
        if values.len() != boundaries.len() + 1 {
            return Err(Error::arg(
                "PiecewiseConstantDecay",
                format!(
                    "{} values for {} boundaries: there must be one more value than boundaries",
                    values.len(),
                    boundaries.len()
                ),
            ));
        }
        if boundaries.windows(2).any(|w| w[1] <= w[0]) {
            return Err(Error::arg(
                "PiecewiseConstantDecay",
                format!("boundaries {boundaries:?} must increase"),
            ));
        }
        Ok(PiecewiseConstantDecay { boundaries, values })
    }
}

impl LearningRateSchedule for PiecewiseConstantDecay {
    fn lr(&self, step: u64) -> f64 {
        let past = self.boundaries.iter().filter(|&&b| step > b).count();
        self.values[past]
    }
    fn lr_on_device(&self, step: &Tensor) -> Option<Result<Tensor>> {
        // values[0] plus each step up in value whose boundary lies behind.
        let rate = || -> Result<Tensor> {
            let mut r = step.mul_scalar(0.0)?.add_scalar(self.values[0])?;
            for (i, &b) in self.boundaries.iter().enumerate() {
                let past = step.greater(&step.scalar_like(b as f64)?)?.cast(DType::F32)?;
                r = r.add(&past.mul_scalar(self.values[i + 1] - self.values[i])?)?;
            }
            Ok(r)
        };
        // Boundaries past f32's exact integers would compare inexactly.
        let exact = self.boundaries.iter().all(|&b| b < 1 << 24);
        let finite = self.values.iter().all(|v| v.is_finite());
        (exact && finite).then(rate)
    }
}

/// `keras.optimizers.schedules.PolynomialDecay`: from
/// `initial_learning_rate` to `end_learning_rate` over `decay_steps` along
/// `(1 - step / decay_steps)^power`; with `cycle`, `decay_steps` grows to
/// the next multiple past the step instead of the rate staying at the end.
#[derive(Clone, Debug)]
pub struct PolynomialDecay {
    /// The rate at step 0.
    pub initial_learning_rate: f64,
    /// Steps to decay over.
    pub decay_steps: u64,
    /// The rate after `decay_steps` (Keras: 0.0001).
    pub end_learning_rate: f64,
    /// The polynomial's power (Keras: 1.0).
    pub power: f64,
    /// Restart the decay past `decay_steps` (Keras: false).
    pub cycle: bool,
}

impl LearningRateSchedule for PolynomialDecay {
    fn lr(&self, step: u64) -> f64 {
        let n = self.decay_steps.max(1) as f64;
        let s = step as f64;
        let (s, n) = if self.cycle {
            // Keras: a multiplier of 1 at step 0.
            let k = if step == 0 { 1.0 } else { (s / n).ceil() };
            (s, n * k)
        } else {
            (s.min(n), n)
        };
        let (a, b) = (self.initial_learning_rate, self.end_learning_rate);
        (a - b) * (1.0 - s / n).powf(self.power) + b
    }
    fn lr_on_device(&self, step: &Tensor) -> Option<Result<Tensor>> {
        let rate = || -> Result<Tensor> {
            let n = self.decay_steps.max(1) as f64;
            let frac = if self.cycle {
                // ceil(s / n) with 1 at step 0: max(ceil(s / n), 1).
                let k = step.div_scalar(n)?.ceil()?;
                let k = k.maximum(&k.scalar_like(1.0)?)?;
                step.div(&k.mul_scalar(n)?)?
            } else {
                step.minimum(&step.scalar_like(n)?)?.div_scalar(n)?
            };
            let (a, b) = (self.initial_learning_rate, self.end_learning_rate);
            frac.neg()?
                .add_scalar(1.0)?
                .pow_scalar(self.power)?
                .mul_scalar(a - b)?
                .add_scalar(b)
        };
        Some(rate())
    }
}

/// `keras.optimizers.schedules.InverseTimeDecay`:
/// lr0 / (1 + decay_rate * step / decay_steps), the quotient floored with
/// `staircase`.
#[derive(Clone, Debug)]
pub struct InverseTimeDecay {
    /// The rate at step 0.
    pub initial_learning_rate: f64,
    /// Steps per unit of decay.
    pub decay_steps: u64,
    /// How fast the rate falls.
    pub decay_rate: f64,
    /// Decay in discrete jumps every `decay_steps` (Keras: false).
    pub staircase: bool,
}

impl LearningRateSchedule for InverseTimeDecay {
    fn lr(&self, step: u64) -> f64 {
        let mut p = step as f64 / self.decay_steps.max(1) as f64;
        if self.staircase {
            p = p.floor();
        }
        self.initial_learning_rate / (1.0 + self.decay_rate * p)
    }
    fn lr_on_device(&self, step: &Tensor) -> Option<Result<Tensor>> {
        let rate = || -> Result<Tensor> {
            let mut p = step.div_scalar(self.decay_steps.max(1) as f64)?;
            if self.staircase {
                p = p.floor()?;
            }
            p.mul_scalar(self.decay_rate)?
                .add_scalar(1.0)?
                .reciprocal()?
                .mul_scalar(self.initial_learning_rate)
        };
        Some(rate())
    }
}

/// An optimizer's `learning_rate` argument: a number or a schedule, as
/// Keras accepts either; `From` makes both `0.01` and
/// `ExponentialDecay { .. }` work where it is expected.
pub enum LearningRate {
    /// The same rate at every step.
    Constant(f64),
    /// A rate computed from the step.
    Schedule(Arc<dyn LearningRateSchedule>),
}

impl From<f64> for LearningRate {
    fn from(v: f64) -> Self {
        LearningRate::Constant(v)
    }
}

impl<S: LearningRateSchedule + 'static> From<S> for LearningRate {
    fn from(s: S) -> Self {
        LearningRate::Schedule(Arc::new(s))
    }
}

impl LearningRate {
    /// The rate at `step`.
    pub fn at(&self, step: u64) -> f64 {
        match self {
            LearningRate::Constant(v) => *v,
            LearningRate::Schedule(s) => s.lr(step),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sgd {
        momentum: f64,
        nesterov: bool,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    RmsProp {
        rho: f64,
        momentum: f64,
        eps: f64,
    },
}

/// An optimizer of any algorithm: what [`SGD`], [`Adam`], [`AdamW`] and
/// [`RMSprop`] build and `Model::compile` takes.
pub struct Optimizer {
    name: &'static str,
    kind: Kind,
    learning_rate: Arc<LearningRate>,
    clipnorm: Option<f64>,
    /// Shared with the host inputs of traced steps, which advance it on replay.
    iterations: Arc<AtomicU64>,
    /// variable id -> slot variables
    slots: HashMap<u64, Vec<Variable>>,
    /// Dynamic loss scaling ([`LossScaleOptimizer`]).
    loss_scale: Option<LossScale>,
}

/// Dynamic loss scaling: the scale and the count of finite steps since it
/// last changed, as device scalars so that a traced step updates them.
struct LossScale {
    initial: f64,
    /// The good-step count the counter starts from (a restore).
    pending_good: u64,
    growth_steps: u64,
    scale: Option<Variable>,
    good: Option<Variable>,
    /// Steps skipped for non-finite gradients: they do not count in
    /// `iterations` (nor in Adam's bias correction), as in Keras.
    skipped: Option<Variable>,
    /// A zero read from memory: the finiteness probe multiplies by it. A
    /// literal 0 would let a fused kernel's compiler fold `g * 0` to 0 under
    /// fast math, and every gradient would look finite.
    zero: Option<Variable>,
}

impl LossScale {
    /// The scale, good-step and skipped-step variables, created on `device`
    /// on first use.
    fn vars(&mut self, device: &crate::runtime::Device) -> Result<(Variable, Variable, Variable)> {
        if self.scale.is_none() {
            let s = Tensor::scalar(self.initial as f32, device)?;
            self.scale = Some(Variable::with_trainable(s, "loss_scale/current_loss_scale", false));
            let g = Tensor::scalar(self.pending_good as f32, device)?;
            self.good = Some(Variable::with_trainable(g, "loss_scale/step_counter", false));
            let z = Tensor::scalar(0.0f32, device)?;
            self.zero = Some(Variable::with_trainable(z, "loss_scale/zero", false));
            let k = Tensor::scalar(0.0f32, device)?;
            self.skipped = Some(Variable::with_trainable(k, "loss_scale/skipped_steps", false));
        }
        match (&self.scale, &self.good, &self.skipped) {
            (Some(s), Some(g), Some(k)) => Ok((s.clone(), g.clone(), k.clone())),
            _ => Err(Error::arg("LossScaleOptimizer", "the loss scale was not created")),
        }
    }

    /// Steps skipped so far (a read from the device).
    fn skipped_steps(&self) -> u64 {
        let read = |v: &Variable| v.value().to_vec::<f32>().ok()?.first().copied();
        self.skipped.as_ref().and_then(read).map_or(0, |k| k.max(0.0) as u64)
    }

    /// The zero of the finiteness probe (created with the scale).
    fn zero(&self) -> Result<Tensor> {
        self.zero
            .as_ref()
            .map(|z| z.value())
            .ok_or_else(|| Error::arg("LossScaleOptimizer", "the loss scale was not created"))
    }
}

/// `keras.optimizers.LossScaleOptimizer(inner)`: dynamic loss scaling for
/// mixed precision. [`Optimizer::scale_loss`] multiplies the loss by the
/// scale (2^15 at first) before the gradient is taken, so small f16
/// gradients do not flush to zero; [`Optimizer::apply_gradients`] divides
/// the gradients by it and, when any of them is not finite, skips the
/// update (variables and slots keep their values) and halves the scale;
/// after `dynamic_growth_steps` (2,000) finite steps in a row it doubles.
/// Both happen on the device, in eager and traced steps alike. As in
/// Keras, a skipped step does not count in `iterations`, in Adam's bias
/// correction nor in a learning-rate schedule: all three follow a device
/// counter of skipped steps. (A schedule of your own without
/// [`LearningRateSchedule::lr_on_device`] is evaluated on the host at the
/// count of all steps, skipped ones included.)
/// `Model::compile` wraps the optimizer in one under the
/// `"mixed_float16"` policy.
pub struct LossScaleOptimizer(Optimizer);

impl LossScaleOptimizer {
    /// Dynamic loss scaling around `inner`, Keras' defaults.
    pub fn new(inner: impl Into<Optimizer>) -> LossScaleOptimizer {
        let mut o = inner.into();
        if o.loss_scale.is_none() {
            o.loss_scale = Some(LossScale {
                initial: 32768.0,
                pending_good: 0,
                growth_steps: 2000,
                scale: None,
                good: None,
                skipped: None,
                zero: None,
            });
        }
        LossScaleOptimizer(o)
    }
    /// `initial_scale=` (2^15).
    pub fn initial_scale(mut self, s: f64) -> Self {
        if let Some(ls) = &mut self.0.loss_scale {
            ls.initial = s;
        }
        self
    }
    /// `dynamic_growth_steps=` (2,000): finite steps before the scale doubles.
    pub fn dynamic_growth_steps(mut self, n: u64) -> Self {
        if let Some(ls) = &mut self.0.loss_scale {
            ls.growth_steps = n.max(1);
        }
        self
    }
}

impl std::ops::Deref for LossScaleOptimizer {
    type Target = Optimizer;
    fn deref(&self) -> &Optimizer {
        &self.0
    }
}

impl std::ops::DerefMut for LossScaleOptimizer {
    fn deref_mut(&mut self) -> &mut Optimizer {
        &mut self.0
    }
}

impl From<LossScaleOptimizer> for Optimizer {
    fn from(o: LossScaleOptimizer) -> Optimizer {
        o.0
    }
}

/// Defines an optimizer type: a thin owner of an [`Optimizer`] that has
/// only the options of its own algorithm (an option of another one is a
/// compile error), and turns into an `Optimizer` for `Model::compile`.
macro_rules! optimizer_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(Optimizer);

        impl std::ops::Deref for $name {
            type Target = Optimizer;
            fn deref(&self) -> &Optimizer {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut Optimizer {
                &mut self.0
            }
        }

        impl From<$name> for Optimizer {
            fn from(o: $name) -> Optimizer {
                o.0
            }
        }

        impl $name {
            /// Scales each gradient so its L2 norm is at most `c` (`clipnorm`).
            pub fn clipnorm(mut self, c: f64) -> Self {
                self.0.clipnorm = Some(c);
                self
            }
        }
    };
}

optimizer_type!(
    /// `keras.optimizers.SGD(learning_rate=0.01, momentum=0.0, nesterov=False)`.
    SGD
);
optimizer_type!(
    /// `keras.optimizers.Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)`.
    ///
    /// Options of other algorithms do not exist on it:
    ///
    /// ```compile_fail
    /// let adam = wgflow::nn::optimizers::Adam::new(1e-3).momentum(0.9);
    /// ```
    ///
    /// ```
    /// let adam = wgflow::nn::optimizers::Adam::new(1e-3).betas(0.9, 0.99).clipnorm(1.0);
    /// ```
    Adam
);
optimizer_type!(
    /// `keras.optimizers.AdamW(learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7)`.
    AdamW
);
optimizer_type!(
    /// `keras.optimizers.RMSprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7)`.
    RMSprop
);

impl SGD {
    /// Plain gradient descent at `learning_rate` (a rate or a schedule).
    pub fn new(learning_rate: impl Into<LearningRate>) -> SGD {
        SGD(Optimizer::new(
            "SGD",
            Kind::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            learning_rate.into(),
        ))
    }
    /// Momentum (0 turns it off).
    pub fn momentum(mut self, m: f64) -> Self {
        if let Kind::Sgd { momentum, .. } = &mut self.0.kind {
            *momentum = m;
        }
        self
    }
    /// Nesterov momentum.
    pub fn nesterov(mut self, on: bool) -> Self {
        if let Kind::Sgd { nesterov, .. } = &mut self.0.kind {
            *nesterov = on;
        }
        self
    }
}

fn adam(name: &'static str, learning_rate: LearningRate, weight_decay: f64) -> Optimizer {
    Optimizer::new(
        name,
        Kind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            weight_decay,
        },
        learning_rate,
    )
}

fn set_adam(o: &mut Optimizer, f: impl FnOnce(&mut f64, &mut f64, &mut f64, &mut f64)) {
    if let Kind::Adam {
        beta1,
        beta2,
        eps,
        weight_decay,
    } = &mut o.kind
    {
        f(beta1, beta2, eps, weight_decay);
    }
}

impl Adam {
    /// Adam at `learning_rate` (a rate or a schedule).
    pub fn new(learning_rate: impl Into<LearningRate>) -> Adam {
        Adam(adam("Adam", learning_rate.into(), 0.0))
    }
    /// `beta_1` and `beta_2`.
    pub fn betas(mut self, b1: f64, b2: f64) -> Self {
        set_adam(&mut self.0, |beta1, beta2, _, _| (*beta1, *beta2) = (b1, b2));
        self
    }
    /// `epsilon`.
    pub fn epsilon(mut self, e: f64) -> Self {
        set_adam(&mut self.0, |_, _, eps, _| *eps = e);
        self
    }
}

impl AdamW {
    /// AdamW at `learning_rate` (a rate or a schedule), weight decay 0.004.
    pub fn new(learning_rate: impl Into<LearningRate>) -> AdamW {
        AdamW(adam("AdamW", learning_rate.into(), 0.004))
    }
    /// `beta_1` and `beta_2`.
    pub fn betas(mut self, b1: f64, b2: f64) -> Self {
        set_adam(&mut self.0, |beta1, beta2, _, _| (*beta1, *beta2) = (b1, b2));
        self
    }
    /// `epsilon`.
    pub fn epsilon(mut self, e: f64) -> Self {
        set_adam(&mut self.0, |_, _, eps, _| *eps = e);
        self
    }
    /// Decoupled weight decay.
    pub fn weight_decay(mut self, wd: f64) -> Self {
        set_adam(&mut self.0, |_, _, _, w| *w = wd);
        self
    }
}

impl RMSprop {
    /// RMSprop at `learning_rate` (a rate or a schedule).
    pub fn new(learning_rate: impl Into<LearningRate>) -> RMSprop {
        RMSprop(Optimizer::new(
            "RMSprop",
            Kind::RmsProp {
                rho: 0.9,
                momentum: 0.0,
                eps: 1e-7,
            },
            learning_rate.into(),
        ))
    }
    /// Discounting factor of the squared-gradient average.
    pub fn rho(mut self, r: f64) -> Self {
        if let Kind::RmsProp { rho, .. } = &mut self.0.kind {
            *rho = r;
        }
        self
    }
    /// Momentum (0 turns it off).
    pub fn momentum(mut self, m: f64) -> Self {
        if let Kind::RmsProp { momentum, .. } = &mut self.0.kind {
            *momentum = m;
        }
        self
    }
    /// `epsilon`.
    pub fn epsilon(mut self, e: f64) -> Self {
        if let Kind::RmsProp { eps, .. } = &mut self.0.kind {
            *eps = e;
        }
        self
    }
}

impl Optimizer {
    fn new(name: &'static str, kind: Kind, learning_rate: LearningRate) -> Optimizer {
        Optimizer {
            name,
            kind,
            learning_rate: Arc::new(learning_rate),
            clipnorm: None,
            iterations: Arc::new(AtomicU64::new(0)),
            slots: HashMap::new(),
            loss_scale: None,
        }
    }

    /// Whether this is a [`LossScaleOptimizer`].
    pub fn is_loss_scaled(&self) -> bool {
        self.loss_scale.is_some()
    }

    /// Keras' `optimizer.scale_loss(loss)`: the loss times the current loss
    /// scale, what to take gradients of (the loss itself without loss
    /// scaling); [`Optimizer::apply_gradients`] unscales them.
    pub fn scale_loss(&mut self, loss: &Tensor) -> Result<Tensor> {
        let Some(ls) = &mut self.loss_scale else {
            return Ok(loss.clone());
        };
        let (scale, ..) = ls.vars(loss.device())?;
        let s = scale.value();
        let s = if loss.dtype() == s.dtype() {
            s
        } else {
            s.cast(loss.dtype())?
        };
        loss.mul(&s)
    }

    /// The current loss scale (read back from the device), or `None`
    /// without loss scaling.
    pub fn loss_scale(&self) -> Result<Option<f64>> {
        match &self.loss_scale {
            None => Ok(None),
            Some(ls) => match &ls.scale {
                None => Ok(Some(ls.initial)),
                Some(v) => Ok(Some(f64::from(
                    v.peek().to_vec::<f32>()?.first().copied().unwrap_or(0.0),
                ))),
            },
        }
    }

    /// The Keras class name ("SGD", "Adam", "AdamW", "RMSprop").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The optimizer as a Keras `compile_config` entry (class and options;
    /// the learning rate is the current one).
    pub fn keras_config(&self) -> serde_json::Value {
        let mut c = serde_json::json!({"name": self.name.to_lowercase(), "learning_rate": self.learning_rate(),
            "clipnorm": self.clipnorm});
        match self.kind {
            Kind::Sgd { momentum, nesterov } => {
                c["momentum"] = momentum.into();
                c["nesterov"] = nesterov.into();
            }
            Kind::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                c["beta_1"] = beta1.into();
                c["beta_2"] = beta2.into();
                c["epsilon"] = eps.into();
                if self.name == "AdamW" {
                    c["weight_decay"] = weight_decay.into();
                }
            }
            Kind::RmsProp { rho, momentum, eps } => {
                c["rho"] = rho.into();
                c["momentum"] = momentum.into();
                c["epsilon"] = eps.into();
            }
        }
        serde_json::json!({"module": "keras.optimizers", "class_name": self.name, "config": c, "registered_name": null})
    }

    /// An optimizer from a Keras `compile_config` entry: a name (`"adam"`)
    /// or `{class_name, config}`; unknown classes are an error.
    pub fn from_keras_config(v: &serde_json::Value) -> Result<Optimizer> {
        let (class, c) = match v {
            serde_json::Value::String(s) => (s.as_str(), serde_json::Value::Null),
            v => (v["class_name"].as_str().unwrap_or_default(), v["config"].clone()),
        };
        let f = |k: &str, d: f64| c.get(k).and_then(serde_json::Value::as_f64).unwrap_or(d);
        // Options wgflow lacks are refused rather than dropped, so a loaded
        // model never trains differently from the one saved.
        let set = |k: &str| {
            c.get(k)
                .is_some_and(|v| !v.is_null() && v != &serde_json::Value::Bool(false))
        };
        let lacking = |what: String| Error::Unimplemented {
            what: format!("Keras optimizer {class:?} with {what}"),
            msg: "wgflow's optimizers have clipnorm, not this option".into(),
        };
        if c.get("learning_rate").is_some_and(|v| !v.is_null() && !v.is_number()) {
            return Err(lacking("a learning-rate schedule in its config".into()));
        }
        for k in [
            "amsgrad",
            "centered",
            "use_ema",
            "global_clipnorm",
            "clipvalue",
            "gradient_accumulation_steps",
            "loss_scale_factor",
        ] {
            if set(k) {
                return Err(lacking(format!("{k} = {}", c[k])));
            }
        }
        let decay = c.get("weight_decay").and_then(serde_json::Value::as_f64).unwrap_or(0.0);
        if !class.eq_ignore_ascii_case("adamw") && decay != 0.0 {
            return Err(lacking(format!("weight_decay = {decay}")));
        }
        let lr = f("learning_rate", 0.001);
        let opt: Optimizer = match class.to_lowercase().as_str() {
            "sgd" => SGD::new(f("learning_rate", 0.01))
                .momentum(f("momentum", 0.0))
                .nesterov(c.get("nesterov").and_then(serde_json::Value::as_bool).unwrap_or(false))
                .into(),
            "adam" => Adam::new(lr)
                .betas(f("beta_1", 0.9), f("beta_2", 0.999))
                .epsilon(f("epsilon", 1e-7))
                .into(),
            "adamw" => AdamW::new(lr)
                .betas(f("beta_1", 0.9), f("beta_2", 0.999))
                .epsilon(f("epsilon", 1e-7))
                .weight_decay(f("weight_decay", 0.004))
                .into(),
            "rmsprop" => RMSprop::new(lr)
                .rho(f("rho", 0.9))
                .momentum(f("momentum", 0.0))
                .epsilon(f("epsilon", 1e-7))
                .into(),
            other => {
                return Err(Error::Unimplemented {
                    what: format!("Keras optimizer {other:?}"),
                    msg: "wgflow has SGD, Adam, AdamW and RMSprop".into(),
                });
            }
        };
        let mut opt = opt;
        opt.clipnorm = c.get("clipnorm").and_then(serde_json::Value::as_f64);
        Ok(opt)
    }

    /// Steps taken so far (with loss scaling, skipped steps left out: a
    /// read from the device).
    pub fn iterations(&self) -> u64 {
        let all = self.iterations.load(Ordering::SeqCst);
        all.saturating_sub(self.loss_scale.as_ref().map_or(0, LossScale::skipped_steps))
    }
    /// Sets the step count (a checkpoint restore); schedules and Adam's bias
    /// correction continue from it.
    pub fn set_iterations(&mut self, n: u64) {
        // The host counts every step; the skipped ones are subtracted.
        let skipped = self.loss_scale.as_ref().map_or(0, LossScale::skipped_steps);
        self.iterations.store(n.saturating_add(skipped), Ordering::SeqCst);
    }
    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate.at(self.iterations())
    }

    pub(crate) fn slot_count(&self) -> usize {
        match self.kind {
            Kind::Sgd { momentum, .. } => (momentum != 0.0) as usize,
            Kind::Adam { .. } => 2,
            Kind::RmsProp { momentum, .. } => 1 + (momentum != 0.0) as usize,
        }
    }

    /// Slot names, in the order the fused kernel takes them.
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Sgd { .. } => &["momentum"],
            Kind::Adam { .. } => &["m", "v"],
            Kind::RmsProp { .. } => &["velocity", "momentum"],
        }
    }

    /// The slots of `var` (created zero if missing).
    pub fn slots_of(&mut self, var: &Variable) -> Result<Vec<Variable>> {
        let k = self.slot_count();
        if let Some(s) = self.slots.get(&var.id()) {
            return Ok(s.clone());
        }
        let names = self.slot_names();
        let mut s = Vec::new();
        for name in names.iter().take(k) {
            let z = ops::zeros(&var.shape(), var.dtype(), &var.device())?;
            s.push(Variable::with_trainable(z, &format!("{}/{}", var.name(), name), false));
        }
        self.slots.insert(var.id(), s.clone());
        Ok(s)
    }

    /// Existing slots of `var`, if the optimizer has stepped it.
    pub fn existing_slots(&self, var: &Variable) -> Option<&[Variable]> {
        self.slots.get(&var.id()).map(|v| v.as_slice())
    }

    fn rule(&self) -> Rule {
        let f = |x: f64| x as f32;
        match self.kind {
            Kind::Sgd { momentum, nesterov } => Rule::Sgd {
                momentum: f(momentum),
                nesterov,
            },
            Kind::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Rule::Adam {
                beta1: f(beta1),
                beta2: f(beta2),
                eps: f(eps),
                weight_decay: f(weight_decay),
            },
            Kind::RmsProp { rho, momentum, eps } => Rule::RmsProp {
                rho: f(rho),
                momentum: f(momentum),
                eps: f(eps),
            },
        }
    }

    /// [lr, Adam's bias-corrected lr] of the next step, taking the step: a
    /// host input, so that a traced step recomputes it on every replay.
    fn hyper(&self, device: &crate::runtime::Device) -> Result<Tensor> {
        let iters = self.iterations.clone();
        let lr = self.learning_rate.clone();
        let betas = match self.kind {
            Kind::Adam { beta1, beta2, .. } => Some((beta1, beta2)),
            _ => None,
        };
        host_input(&[2], device, move || {
            let step = iters.fetch_add(1, Ordering::SeqCst);
            let rate = lr.at(step);
            let alpha = match betas {
                Some((b1, b2)) => {
                    let t = (step + 1) as f64;
                    rate * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t))
                }
                None => rate,
            };
            CpuData::F32(vec![rate as f32, alpha as f32])
        })
    }

    /// [`Optimizer::hyper`] for a loss-scaled step: the schedule's rate and
    /// Adam's bias correction at the count of steps not `skipped` (a device
    /// scalar), computed on the device as Keras does.
    fn scaled_hyper(&self, device: &crate::runtime::Device, skipped: &Variable) -> Result<Tensor> {
        let iters = self.iterations.clone();
        let lr = self.learning_rate.clone();
        // [rate from the host's count, the 1-based step counting skipped ones]
        let host = host_input(&[2], device, move || {
            let step = iters.fetch_add(1, Ordering::SeqCst);
            CpuData::F32(vec![lr.at(step) as f32, (step + 1) as f32])
        })?;
        let t = host.slice(&[1], &[1])?.sub(&skipped.peek())?;
        let on_device: Option<Tensor> = match &*self.learning_rate {
            LearningRate::Schedule(s) => s.lr_on_device(&t.sub_scalar(1.0)?).transpose()?,
            LearningRate::Constant(_) => None,
        };
        let rate = match on_device {
            Some(r) if r.shape() == [1] && r.dtype() == DType::F32 => r,
            Some(r) => {
                return Err(Error::shape(
                    "LearningRateSchedule::lr_on_device",
                    &[r.shape(), &[1]],
                    format!("gave a {} tensor where an f32 tensor of shape [1] is needed", r.dtype()),
                ));
            }
            None => host.slice(&[0], &[1])?,
        };
        let Kind::Adam { beta1, beta2, .. } = self.kind else {
            return ops::layout::concat(&[&rate, &rate], 0);
        };
        // 1 - beta^t, with beta^t = exp(t ln beta).
        let less = |beta: f64| -> Result<Tensor> { t.mul_scalar(beta.ln())?.exp()?.neg()?.add_scalar(1.0) };
        let alpha = rate.mul(&less(beta2)?.sqrt()?)?.div(&less(beta1)?)?;
        ops::layout::concat(&[&rate, &alpha], 0)
    }

    /// One step for every (gradient, variable) pair; `None` gradients are
    /// skipped, as Keras does. Never recorded by tapes.
    pub fn apply_gradients(&mut self, grads: &[Option<Tensor>], vars: &[Variable]) -> Result<()> {
        if grads.len() != vars.len() {
            return Err(Error::arg(
                "apply_gradients",
                format!("{} gradients for {} variables", grads.len(), vars.len()),
            ));
        }
        let update = Update {
            rule: self.rule(),
            clip: self.clipnorm.map(|c| c as f32),
        };
        let live: Vec<&Variable> = grads
            .iter()
            .zip(vars)
            .filter(|(g, _)| g.is_some())
            .map(|(_, v)| v)
            .collect();
        let Some(first) = live.first() else {
            return Ok(());
        };
        let device = first.device();
        if let Some(v) = live.iter().find(|v| v.device() != device) {
            return Err(Error::DeviceMismatch {
                op: "apply_gradients",
                devices: vec![device.to_string(), v.device().to_string()],
            });
        }
        for (g, v) in grads.iter().zip(vars) {
            if let Some(g) = g {
                if g.shape() != v.shape().as_slice() {
                    return Err(Error::shape(
                        "apply_gradients",
                        &[g.shape(), &v.shape()],
                        format!("gradient does not match variable {}", v.name()),
                    ));
                }
            }
        }
        crate::autodiff::without_recording(|| -> Result<()> {
            // With loss scaling: the gradients unscaled, and whether all are finite.
            let scaled = match &mut self.loss_scale {
                None => None,
                Some(ls) => {
                    let (scale, good, skipped) = ls.vars(&device)?;
                    let inv = scale.peek().scalar_like(1.0)?.div(&scale.peek())?;
                    let zero = ls.zero()?;
                    let mut probe = zero.clone();
                    let mut unscaled = Vec::with_capacity(grads.len());
                    for g in grads {
                        unscaled.push(match g {
                            None => None,
                            Some(g) => {
                                let g = g.cast(DType::F32)?.mul(&inv)?;
                                // 0 * g is 0 unless g is NaN or infinite.
                                probe = probe.add(&g.mul(&zero)?.sum(None, false)?)?;
                                Some(g)
                            }
                        });
                    }
                    let finite = probe.equal(&zero)?;
                    Some((unscaled, finite, scale, good, skipped, ls.growth_steps))
                }
            };
            let grads = match &scaled {
                Some((unscaled, ..)) => unscaled.as_slice(),
                None => grads,
            };
            let keep = |new: &Tensor, old: Tensor| -> Result<Tensor> {
                match &scaled {
                    Some((_, finite, ..)) => finite.where_(new, &old),
                    None => Ok(new.clone()),
                }
            };
            let hyper = match &scaled {
                Some((.., skipped, _)) => self.scaled_hyper(&device, skipped)?,
                None => self.hyper(&device)?,
            };
            for (g, v) in grads.iter().zip(vars) {
                let Some(g) = g else { continue };
                let g = if g.dtype() == v.dtype() {
                    g.clone()
                } else {
                    g.cast(v.dtype())?
                };
                let slots = self.slots_of(v)?;
                let mut inputs: Vec<Tensor> = vec![v.peek(), g.clone()];
                inputs.extend(slots.iter().map(|s| s.peek()));
                inputs.push(hyper.clone());
                if update.clip.is_some() {
                    inputs.push(g.cast(DType::F32)?.square()?.sum(None, false)?.sqrt()?);
                }
                let refs: Vec<&Tensor> = inputs.iter().collect();
                let out = exec_multi(Op::Optimizer(update), &refs)?;
                v.assign(&keep(&out[0], v.peek())?)?;
                for (s, t) in slots.iter().zip(&out[1..]) {
                    s.assign(&keep(t, s.peek())?)?;
                }
            }
            // Keras' dynamic loss scale: halve on a non-finite step, double
            // after `growth` finite ones in a row.
            if let Some((_, finite, scale, good, skipped, growth)) = &scaled {
                let k = skipped.peek();
                skipped.assign(&finite.where_(&k, &k.add_scalar(1.0)?)?)?;
                let (s, n) = (scale.peek(), good.peek());
                let zero = n.scalar_like(0.0)?;
                let counted = finite.where_(&n.add_scalar(1.0)?, &zero)?;
                let grow = counted.greater_equal(&n.scalar_like(*growth as f64)?)?;
                let next = finite.where_(&grow.where_(&s.mul_scalar(2.0)?, &s)?, &s.mul_scalar(0.5)?)?;
                scale.assign(&next)?;
                good.assign(&grow.where_(&zero, &counted)?)?;
            }
            Ok(())
        })
    }
}

impl crate::io::checkpoint::OptimizerState for Optimizer {
    fn iterations(&self) -> u64 {
        Optimizer::iterations(self)
    }
    fn set_iterations(&mut self, n: u64) {
        Optimizer::set_iterations(self, n)
    }
    fn slot_names(&self) -> &'static [&'static str] {
        Optimizer::slot_names(self)
    }
    fn slot_count(&self) -> usize {
        Optimizer::slot_count(self)
    }
    fn existing_slots(&self, var: &Variable) -> Option<&[Variable]> {
        Optimizer::existing_slots(self, var)
    }
    fn slots_of(&mut self, var: &Variable) -> Result<Vec<Variable>> {
        Optimizer::slots_of(self, var)
    }
    fn loss_scale_state(&self) -> Result<Option<(f64, u64)>> {
        let Some(ls) = &self.loss_scale else {
            return Ok(None);
        };
        let read = |v: &Option<Variable>| -> Result<Option<f32>> {
            v.as_ref()
                .map(|v| Ok(v.peek().to_vec::<f32>()?.first().copied().unwrap_or(0.0)))
                .transpose()
        };
        let scale = read(&ls.scale)?.map_or(ls.initial, f64::from);
        let good = read(&ls.good)?.map_or(ls.pending_good, |g| g as u64);
        Ok(Some((scale, good)))
    }
    fn set_loss_scale_state(&mut self, scale: f64, good_steps: u64) -> Result<()> {
        let Some(ls) = &mut self.loss_scale else {
            return Ok(());
        };
        match (&ls.scale, &ls.good) {
            (Some(s), Some(g)) => {
                s.assign(&s.peek().scalar_like(scale)?)?;
                g.assign(&g.peek().scalar_like(good_steps as f64)?)?;
            }
            // Created on first use, from these.
            _ => {
                ls.initial = scale;
                ls.pending_good = good_steps;
            }
        }
        Ok(())
    }
}
