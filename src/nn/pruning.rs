//! Magnitude-based weight pruning (`tfmot.sparsity.keras`):
//! [`prune_low_magnitude`] wraps the `Dense` and `Conv2D` layers of a
//! model (or one such layer) so that, while the model trains with the
//! [`UpdatePruningStep`] callback, the smallest-magnitude weights of each
//! kernel are zeroed following a schedule ([`PolynomialDecay`],
//! [`ConstantSparsity`]); [`PruningSummaries`] logs each kernel's sparsity
//! to TensorBoard, and [`strip_pruning`] returns the plain model with the
//! zeros in its kernels, ready to export and compress.
//!
//! At a pruning step (`begin_step <= step <= end_step`, every `frequency`
//! steps) a kernel of n weights keeps its k = max(round(n (1 - s)), 1)
//! weights of largest magnitude, s the schedule's sparsity; the mask stays
//! until the next pruning step. The callback applies the mask to the kernel
//! before and after every step, so the forward pass, validation and
//! checkpoints see the pruned weights, eager or traced.
//!
//! ```no_run
//! # fn main() -> wgflow::Result<()> {
//! use wgflow::nn::pruning::{PolynomialDecay, UpdatePruningStep, prune_low_magnitude, strip_pruning};
//! # let model = wgflow::nn::Sequential::new();
//! let schedule = PolynomialDecay::new(0.0, 0.5, 2000, 4000);
//! let mut pruned = prune_low_magnitude(model, schedule)?;
//! // compile, then fit with callbacks: vec![Box::new(UpdatePruningStep::new())]
//! let model = strip_pruning(pruned)?;
//! # Ok(()) }
//! ```

use super::callbacks::{Callback, TrainContext};
use super::layers::Layer;
use super::model::{Logs, Sequential};
use super::optimizers::Optimizer;
use crate::core::error::{Error, Result};
use crate::io::summary::{SummaryWriter, create_file_writer};
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

const OP: &str = "prune_low_magnitude";

fn arg(msg: String) -> Error {
    Error::InvalidArgument { op: OP, msg }
}

fn check_sparsity(name: &str, s: f64) -> Result<()> {
    if (0.0..1.0).contains(&s) {
        Ok(())
    } else {
        Err(arg(format!("{name} = {s}: a sparsity is in [0, 1)")))
    }
}

/// tfmot's `_should_prune_in_step`.
fn pruning_turn(step: i64, begin: i64, end: i64, frequency: i64) -> bool {
    step >= begin && (end == -1 || step <= end) && (step - begin) % frequency.max(1) == 0
}

/// `tfmot.sparsity.keras.PolynomialDecay`: sparsity rises from
/// `initial_sparsity` at `begin_step` to `final_sparsity` at `end_step` as
/// `final + (initial - final) (1 - p)^power`, p the progress.
#[derive(Clone, Debug, PartialEq)]
pub struct PolynomialDecay {
    /// Sparsity at `begin_step`, in [0, 1).
    pub initial_sparsity: f64,
    /// Sparsity from `end_step` on, in [0, 1).
    pub final_sparsity: f64,
    /// The first step that prunes.
    pub begin_step: i64,
    /// The last step that prunes.
    pub end_step: i64,
    /// The exponent of the decay (3).
    pub power: f64,
    /// Steps between mask updates (100).
    pub frequency: i64,
}

impl PolynomialDecay {
    /// `PolynomialDecay(initial_sparsity, final_sparsity, begin_step, end_step)`
    /// with power 3 and frequency 100.
    pub fn new(initial_sparsity: f64, final_sparsity: f64, begin_step: i64, end_step: i64) -> PolynomialDecay {
        PolynomialDecay {
            initial_sparsity,
            final_sparsity,
            begin_step,
            end_step,
            power: 3.0,
            frequency: 100,
        }
    }

    /// The sparsity at `step` (whether or not the step prunes).
    pub fn sparsity(&self, step: i64) -> f32 {
        let span = (self.end_step - self.begin_step).max(1) as f64;
        let p = ((step - self.begin_step) as f64 / span).clamp(0.0, 1.0);
        ((self.initial_sparsity - self.final_sparsity) * (1.0 - p).powf(self.power) + self.final_sparsity) as f32
    }
}

/// `tfmot.sparsity.keras.ConstantSparsity`: `target_sparsity` at every
/// pruning step from `begin_step` to `end_step` (-1: no end).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstantSparsity {
    /// The sparsity, in [0, 1).
    pub target_sparsity: f64,
    /// The first step that prunes (0).
    pub begin_step: i64,
    /// The last step that prunes (-1: none).
    pub end_step: i64,
    /// Steps between mask updates (100).
    pub frequency: i64,
}

impl ConstantSparsity {
    /// `ConstantSparsity(target_sparsity, begin_step)`: no end, frequency 100.
    pub fn new(target_sparsity: f64, begin_step: i64) -> ConstantSparsity {
        ConstantSparsity {
            target_sparsity,
            begin_step,
            end_step: -1,
            frequency: 100,
        }
    }
}

/// A pruning schedule: `schedule(step)` in tfmot.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// [`PolynomialDecay`].
    PolynomialDecay(PolynomialDecay),
    /// [`ConstantSparsity`].
    ConstantSparsity(ConstantSparsity),
}

impl From<PolynomialDecay> for Schedule {
    fn from(s: PolynomialDecay) -> Schedule {
        Schedule::PolynomialDecay(s)
    }
}

impl From<ConstantSparsity> for Schedule {
    fn from(s: ConstantSparsity) -> Schedule {
        Schedule::ConstantSparsity(s)
    }
}

impl Schedule {
    /// tfmot's `schedule(step)`: whether `step` updates the masks, and the
    /// sparsity it prunes to.
    pub fn call(&self, step: i64) -> (bool, f32) {
        match self {
            Schedule::PolynomialDecay(p) => (
                pruning_turn(step, p.begin_step, p.end_step, p.frequency),
                p.sparsity(step),
            ),
            Schedule::ConstantSparsity(c) => (
                pruning_turn(step, c.begin_step, c.end_step, c.frequency),
                c.target_sparsity as f32,
            ),
        }
    }

    /// The sparsity `step` prunes to, or `None` where it does not prune.
    pub fn prune_at(&self, step: i64) -> Option<f32> {
        let (turn, s) = self.call(step);
        turn.then_some(s)
    }

    /// Checks the options: sparsities in [0, 1), `begin_step <= end_step`,
    /// a positive frequency.
    pub fn validate(&self) -> Result<()> {
        let (begin, end, freq) = match self {
            Schedule::PolynomialDecay(p) => {
                check_sparsity("initial_sparsity", p.initial_sparsity)?;
                check_sparsity("final_sparsity", p.final_sparsity)?;
                if !(p.power.is_finite() && p.power > 0.0) {
                    return Err(arg(format!("power = {}: it must be positive", p.power)));
                }
                if p.end_step < 0 {
                    return Err(arg(format!(
                        "PolynomialDecay needs an end_step >= 0, not {}",
                        p.end_step
                    )));
                }
                (p.begin_step, p.end_step, p.frequency)
            }
            Schedule::ConstantSparsity(c) => {
                check_sparsity("target_sparsity", c.target_sparsity)?;
                (c.begin_step, c.end_step, c.frequency)
            }
        };
        if begin < 0 {
            return Err(arg(format!("begin_step = {begin}: it must be >= 0")));
        }
        if end != -1 && begin > end {
            return Err(arg(format!("begin_step = {begin} is after end_step = {end}")));
        }
        if freq <= 0 {
            return Err(arg(format!("frequency = {freq}: it must be positive")));
        }
        Ok(())
    }
}

/// One pruned kernel, shared by its layer and the callbacks.
struct State {
    layer: String,
    kernel: Variable,
    mask: Variable,
    schedule: Schedule,
    /// The step the next batch runs (-1: no `UpdatePruningStep` yet).
    step: i64,
    threshold: f32,
}

type Shared = Arc<Mutex<State>>;

/// Pruned kernels by their mask variable's id: how the callbacks find the
/// layers of the model they train from its variables.
static REGISTRY: Mutex<Vec<(u64, Weak<Mutex<State>>)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn register(s: &Shared) {
    let id = lock(s).mask.id();
    let mut r = lock(&REGISTRY);
    r.retain(|(_, w)| w.strong_count() > 0);
    r.push((id, Arc::downgrade(s)));
}

fn states_of(vars: &[(String, Variable)]) -> Vec<Shared> {
    let r = lock(&REGISTRY);
    vars.iter()
        .filter_map(|(_, v)| r.iter().find(|(id, _)| *id == v.id()).and_then(|(_, w)| w.upgrade()))
        .collect()
}

impl State {
    /// kernel *= mask.
    fn apply(&self) -> Result<()> {
        let k = self.kernel.value().mul(&self.mask.value())?;
        self.kernel.assign(&k)
    }

    /// Keeps the k = max(round(n (1 - s)), 1) weights of largest magnitude.
    fn update_mask(&mut self, sparsity: f32) -> Result<()> {
        let w = self.kernel.value().to_f64_vec()?;
        let n = w.len();
        if n == 0 {
            return Ok(());
        }
        let keep = ((n as f64 * (1.0 - f64::from(sparsity))).round() as usize).clamp(1, n);
        let mut order: Vec<usize> = (0..n).collect();
        let by_magnitude = |a: &usize, b: &usize| w[*b].abs().total_cmp(&w[*a].abs()).then(a.cmp(b));
        order.select_nth_unstable_by(keep - 1, by_magnitude);
        let mut mask = vec![0.0f32; n];
        for &i in &order[..keep] {
            mask[i] = 1.0;
        }
        self.threshold = w[order[keep - 1]].abs() as f32;
        let device = self.kernel.device();
        let m = Tensor::from_vec(mask, &self.kernel.shape(), &device)?;
        let m = if self.mask.dtype() == m.dtype() {
            m
        } else {
            m.cast(self.mask.dtype())?
        };
        self.mask.assign(&m)?;
        self.apply()
    }

    fn sparsity(&self) -> Result<f64> {
        let m = self.mask.value().to_f64_vec()?;
        Ok(m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len().max(1) as f64)
    }
}

/// `prune_low_magnitude(layer)`: a `Dense` or `Conv2D` layer whose kernel
/// is pruned while it trains with [`UpdatePruningStep`].
pub struct PruneLowMagnitude {
    name: String,
    inner: Option<Box<dyn Layer>>,
    schedule: Schedule,
    state: Option<Shared>,
}

impl PruneLowMagnitude {
    fn wrap(inner: Box<dyn Layer>, schedule: Schedule) -> Result<PruneLowMagnitude> {
        schedule.validate()?;
        if !matches!(inner.kind(), "Dense" | "Conv2D") {
            return Err(arg(format!(
                "layer {} ({}) has no kernel wgflow prunes: only Dense and Conv2D layers are pruned",
                inner.name(),
                inner.kind()
            )));
        }
        let mut w = PruneLowMagnitude {
            name: format!("prune_low_magnitude_{}", inner.name()),
            inner: Some(inner),
            schedule,
            state: None,
        };
        w.attach()?;
        Ok(w)
    }

    fn inner(&self) -> Result<&dyn Layer> {
        self.inner
            .as_deref()
            .ok_or_else(|| arg("the layer was stripped".into()))
    }

    /// Creates the mask once the kernel exists.
    fn attach(&mut self) -> Result<()> {
        if self.state.is_some() {
            return Ok(());
        }
        let inner = self.inner()?;
        if !inner.built() {
            return Ok(());
        }
        let kernel = inner
            .weights()
            .into_iter()
            .find(|(n, _)| *n == "kernel")
            .map(|(_, v)| v)
            .ok_or_else(|| arg(format!("layer {} has no kernel", inner.name())))?;
        let ones = kernel.value().ones_like()?;
        let mask = Variable::with_trainable(ones, &format!("{}/mask", self.name), false);
        let s = Arc::new(Mutex::new(State {
            layer: inner.name().to_string(),
            kernel,
            mask,
            schedule: self.schedule.clone(),
            step: -1,
            threshold: 0.0,
        }));
        register(&s);
        self.state = Some(s);
        Ok(())
    }

    /// The wrapped layer with the mask applied to its kernel
    /// (`strip_pruning` for one layer).
    pub fn strip(mut self) -> Result<Box<dyn Layer>> {
        if let Some(s) = &self.state {
            lock(s).apply()?;
        }
        self.inner.take().ok_or_else(|| arg("the layer was stripped".into()))
    }
}

impl Layer for PruneLowMagnitude {
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "PruneLowMagnitude"
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        if let Some(inner) = self.inner.as_mut() {
            inner.build(input_shape, device)?;
        }
        self.attach()
    }
    fn built(&self) -> bool {
        self.state.is_some()
    }
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        self.inner()?.output_shape(input_shape)
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        if self.state.is_none() {
            let shape = x.shape().get(1..).unwrap_or(&[]).to_vec();
            self.build(&shape, x.device())?;
        }
        if training && self.state.as_ref().is_some_and(|s| lock(s).step < 0) {
            return Err(arg(format!(
                "{}: training a pruned model needs the UpdatePruningStep callback (fit with callbacks: vec![Box::new(UpdatePruningStep::new())]), as in tfmot",
                self.name
            )));
        }
        self.inner
            .as_mut()
            .ok_or_else(|| arg("the layer was stripped".into()))?
            .call(x, training)
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        let mut w = self.inner.as_ref().map(|l| l.weights()).unwrap_or_default();
        if let Some(s) = &self.state {
            w.push(("mask", lock(s).mask.clone()));
        }
        w
    }
    fn take_wrapped(&mut self) -> Option<Box<dyn Layer>> {
        if let Some(s) = &self.state {
            // A failed re-mask leaves the kernel as the last step left it.
            let _ = lock(s).apply();
        }
        self.inner.take()
    }
}

/// What [`prune_low_magnitude`] takes: a model, or a `Dense` / `Conv2D` layer.
pub trait Prunable {
    /// The pruned form.
    type Output;
    /// Wraps with `schedule`.
    fn prune(self, schedule: Schedule) -> Result<Self::Output>;
}

impl Prunable for Sequential {
    type Output = Sequential;
    fn prune(mut self, schedule: Schedule) -> Result<Sequential> {
        schedule.validate()?;
        let layers = self.take_layers();
        let mut out: Vec<Box<dyn Layer>> = Vec::with_capacity(layers.len());
        for l in layers {
            if matches!(l.kind(), "Dense" | "Conv2D") {
                out.push(Box::new(PruneLowMagnitude::wrap(l, schedule.clone())?));
            } else {
                out.push(l);
            }
        }
        self.set_layers(out);
        Ok(self)
    }
}

impl Prunable for Box<dyn Layer> {
    type Output = PruneLowMagnitude;
    fn prune(self, schedule: Schedule) -> Result<PruneLowMagnitude> {
        PruneLowMagnitude::wrap(self, schedule)
    }
}

impl Prunable for super::layers::Dense {
    type Output = PruneLowMagnitude;
    fn prune(self, schedule: Schedule) -> Result<PruneLowMagnitude> {
        PruneLowMagnitude::wrap(Box::new(self), schedule)
    }
}

impl Prunable for super::layers::Conv2D {
    type Output = PruneLowMagnitude;
    fn prune(self, schedule: Schedule) -> Result<PruneLowMagnitude> {
        PruneLowMagnitude::wrap(Box::new(self), schedule)
    }
}

/// `tfmot.sparsity.keras.prune_low_magnitude(to_prune, pruning_schedule)`:
/// a model whose `Dense` and `Conv2D` layers are wrapped (other layers stay
/// as they are), or one wrapped layer. Compile the model after wrapping it.
pub fn prune_low_magnitude<P: Prunable>(to_prune: P, schedule: impl Into<Schedule>) -> Result<P::Output> {
    to_prune.prune(schedule.into())
}

/// `tfmot.sparsity.keras.strip_pruning(model)`: the model with each pruned
/// layer replaced by the layer it wraps, its kernel masked (zeros where
/// pruned). The result is uncompiled, as in tfmot.
pub fn strip_pruning(mut model: Sequential) -> Result<Sequential> {
    let layers = model.take_layers();
    let mut out: Vec<Box<dyn Layer>> = Vec::with_capacity(layers.len());
    for mut l in layers {
        match l.take_wrapped() {
            Some(inner) => out.push(inner),
            None => out.push(l),
        }
    }
    model.set_layers(out);
    Ok(model)
}

/// `tfmot.sparsity.keras.UpdatePruningStep()`: the callback that advances
/// the pruned layers' step before each batch, updates their masks on the
/// schedule's pruning steps, and keeps the pruned weights at zero.
#[derive(Default)]
pub struct UpdatePruningStep {
    states: Vec<Shared>,
}

impl UpdatePruningStep {
    /// The callback.
    pub fn new() -> UpdatePruningStep {
        UpdatePruningStep::default()
    }
}

impl Callback for UpdatePruningStep {
    fn on_train_begin(&mut self, vars: Vec<(String, Variable)>, _ctx: &mut TrainContext) -> Result<()> {
        self.states = states_of(&vars);
        if self.states.is_empty() {
            return Err(arg(
                "UpdatePruningStep: the model has no pruned layers (wrap it with prune_low_magnitude)".into(),
            ));
        }
        // Weights changed since the last fit (a restore) are masked again;
        // from here on each step's end keeps them masked.
        self.states.iter().try_for_each(|s| lock(s).apply())
    }
    fn on_train_batch_begin(&mut self, step: u64, _ctx: &mut TrainContext) -> Result<()> {
        for s in &self.states {
            let mut s = lock(s);
            s.step = step as i64;
            if let Some(sparsity) = s.schedule.prune_at(step as i64) {
                s.update_mask(sparsity)?;
            }
        }
        Ok(())
    }
    fn on_train_batch_end(&mut self, _step: u64, _loss: &Tensor, _ctx: &mut TrainContext) -> Result<()> {
        // The optimizer moved pruned weights; zero them again.
        self.states.iter().try_for_each(|s| lock(s).apply())
    }
}

/// `tfmot.sparsity.keras.PruningSummaries(log_dir)`: each pruned kernel's
/// sparsity and magnitude threshold (`{layer}/sparsity`,
/// `{layer}/threshold`) as TensorBoard scalars after every epoch, at the
/// global step.
pub struct PruningSummaries {
    /// Where the event file goes.
    pub log_dir: PathBuf,
    writer: Option<SummaryWriter>,
    states: Vec<Shared>,
}

impl PruningSummaries {
    /// `PruningSummaries(log_dir)`.
    pub fn new(log_dir: impl Into<PathBuf>) -> PruningSummaries {
        PruningSummaries {
            log_dir: log_dir.into(),
            writer: None,
            states: Vec::new(),
        }
    }
}

impl Callback for PruningSummaries {
    fn on_train_begin(&mut self, vars: Vec<(String, Variable)>, ctx: &mut TrainContext) -> Result<()> {
        self.states = states_of(&vars);
        if ctx.is_chief() {
            self.writer = Some(create_file_writer(&self.log_dir)?);
        }
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        _optimizer: Option<&Optimizer>,
        step: u64,
        _ctx: &mut TrainContext,
    ) -> Result<()> {
        let Some(w) = self.writer.as_mut() else { return Ok(()) };
        for s in &self.states {
            let s = lock(s);
            w.scalar(&format!("{}/sparsity", s.layer), s.sparsity()?, step as i64)?;
            w.scalar(&format!("{}/threshold", s.layer), f64::from(s.threshold), step as i64)?;
        }
        w.flush()
    }
    fn on_train_end(&mut self, _ctx: &mut TrainContext) -> Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}
