//! Models: the [`Model`] trait (forward pass and weights) with Keras'
//! `compile` / `fit` / `evaluate` / `predict` / `summary` on top, and
//! [`Sequential`].
//!
//! A model is built from [`crate::nn::layers`] and trained against a loss
//! from [`crate::nn::losses`] with an optimizer from
//! [`crate::nn::optimizers`], reporting [`crate::nn::metrics`] and calling
//! [`crate::nn::callbacks`]. Unless `run_eagerly` is set, each step is
//! traced once per input signature and replayed as a graph
//! ([`mod@crate::function`]), as Keras wraps its steps in `tf.function`.

use super::callbacks::{Callback, TrainContext};
use super::layers::{Layer, count_params, unique_name};
use super::losses::Loss;
use super::metrics::{Mean, Metric, Metrics};
use super::optimizers::Optimizer;
use super::progress::Progress;
use super::topology::Topology;
use crate::autodiff::{GradientTape, without_recording};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::data::Dataset;
use crate::function::{ConcreteFunction, TensorSpec, Traced};
use crate::ops::layout;
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What [`Model::compile`] sets: the training configuration and the state
/// that lives as long as it (metric totals, traced steps). A custom model
/// stores it in a field returned by [`Model::compiled`].
pub struct Compiled {
    /// The optimizer `train_step` applies; it owns the slots and step count.
    pub optimizer: Optimizer,
    /// The loss `train_step` minimizes and `evaluate` reports as "loss".
    pub loss: Box<dyn Loss>,
    /// Metrics reported after "loss", in the order given to `compile`;
    /// sample weights do not reach them (Keras' `metrics`).
    pub metrics: Vec<Box<dyn Metric>>,
    /// Keras' `weighted_metrics`, reported after `metrics`: updated with the
    /// batch's sample weights (see [`Model::set_weighted_metrics`]). A name
    /// taken by one of `metrics` is reported as `weighted_<name>`.
    pub weighted_metrics: Vec<Box<dyn Metric>>,
    /// Keras' `run_eagerly`: `fit`, `evaluate` and `predict` run their steps
    /// op by op instead of tracing them once and replaying the graph.
    pub run_eagerly: bool,
    /// The mean training loss of the epoch (`train_step` updates it).
    pub loss_tracker: Mean,
    /// Keras' `train_function` and `test_function`: the traced steps `fit`
    /// and `evaluate` replay, kept across calls (and epochs) until the next
    /// `compile`.
    pub(crate) train_function: Traced,
    pub(crate) test_function: Traced,
    /// Keras' `predict_function` (a model that was never compiled traces
    /// `predict` once per call).
    pub(crate) predict_function: Traced,
    /// The loss mean `evaluate` accumulates (the test step updates it).
    pub(crate) test_loss: Mean,
    /// For a model compiled with [`Model::compile_outputs`]: each
    /// output's loss, weight and metrics (the first output's loss is
    /// `loss`); empty for a model of one output.
    pub heads: Vec<super::heads::Head>,
    /// The traced step of `evaluate_many` (and of `evaluate` on a model
    /// with `heads`), apart from `test_function`, whose step differs.
    pub(crate) test_many_function: Traced,
}

/// Metric names and values, in display order ("loss" first, then the
/// compiled metrics, then the "val_" ones): Keras' `logs` dict.
pub type Logs = Vec<(String, f64)>;

/// `keras.callbacks.History`: every epoch's logs, as [`Model::fit`] returns it.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// `History.history`: each metric with one value per epoch, in first-seen order.
    pub history: Vec<(String, Vec<f64>)>,
    /// `History.epoch`: the 0-based index of each recorded epoch.
    pub epochs: Vec<usize>,
}

impl History {
    fn push(&mut self, epoch: usize, logs: &Logs) {
        self.epochs.push(epoch);
        for (k, v) in logs {
            match self.history.iter_mut().find(|(n, _)| n == k) {
                Some((_, vs)) => vs.push(*v),
                None => self.history.push((k.clone(), vec![*v])),
            }
        }
    }
    /// The values of one metric over the epochs.
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.history.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

/// Options of [`Model::fit`]: Keras' keyword arguments, with Keras' defaults
/// in [`FitArgs::default`] (`batch_size=32`, `epochs=1`, `shuffle=True`,
/// `verbose` on); set the ones you need and take the rest with
/// `..FitArgs::default()`.
pub struct FitArgs {
    /// Examples per step (32); the last batch of an epoch may be smaller.
    /// Ignored by [`Model::fit_dataset`], whose dataset is already batched.
    pub batch_size: usize,
    /// The index of the epoch to stop before (1), not a count: training runs
    /// epochs `initial_epoch..epochs`, as in Keras.
    pub epochs: usize,
    /// The epoch to start at (0), to resume a previous run.
    pub initial_epoch: usize,
    /// (x, y) evaluated at the end of every epoch ("val_" metrics).
    pub validation_data: Option<(Tensor, Tensor)>,
    /// `validation_data=([x1, ...], [y1, ...])` for [`Model::fit_many`]:
    /// one tensor per input and one target per output, evaluated at the
    /// end of every epoch as [`Model::evaluate_many`] does ("val_" logs).
    pub validation_data_many: Option<(Vec<Tensor>, Vec<Tensor>)>,
    /// Weights of the validation examples (Keras' third element of
    /// `validation_data`): the "val_loss" is weighted by them.
    pub validation_sample_weight: Option<Tensor>,
    /// Reshuffle the examples every epoch (true). [`Model::fit`] only.
    pub shuffle: bool,
    /// Seed of the shuffle order (0), so that runs repeat exactly.
    pub seed: u64,
    /// Called at the begin and end of training, after every batch and epoch.
    pub callbacks: Vec<Box<dyn Callback>>,
    /// Print "Epoch i/n" and a progress bar per epoch (true): Keras' `verbose=1`.
    pub verbose: bool,
    /// Where to train; the model's device (where its weights are) when `None`.
    pub device: Option<Device>,
    /// Keras' `steps_per_epoch`: end each epoch after this many batches
    /// (`None`: when the data runs out).
    pub steps_per_epoch: Option<usize>,
    /// Keras' `sample_weight`: one weight per example (`[n]`, or a shape
    /// that broadcasts to the loss's per-example values, first axis `n`);
    /// each example's loss is multiplied by it before the loss's
    /// reduction. Metrics stay unweighted, as Keras' `metrics` are.
    /// [`Model::fit`] only; a dataset's elements carry their weights as
    /// `(x, y, sample_weight)`.
    pub sample_weight: Option<Tensor>,
    /// Keras' `class_weight`: the weight of each example's class (its label,
    /// or the argmax of a one-hot label), 1 for a class not listed. Not
    /// together with `sample_weight`.
    pub class_weight: Option<std::collections::HashMap<usize, f64>>,
}

impl Default for FitArgs {
    fn default() -> Self {
        FitArgs {
            batch_size: 32,
            epochs: 1,
            initial_epoch: 0,
            validation_data: None,
            validation_data_many: None,
            validation_sample_weight: None,
            shuffle: true,
            seed: 0,
            callbacks: Vec::new(),
            verbose: true,
            device: None,
            steps_per_epoch: None,
            sample_weight: None,
            class_weight: None,
        }
    }
}

/// `keras.Model`: a forward pass over its weights. `compile`, `fit`,
/// `evaluate`, `predict` and `summary` come with the trait; a custom model
/// (Keras' subclassed model) implements `call`, `named_variables` and
/// `compiled` (a field holding `Option<Compiled>`), and may override
/// `train_step`.
///
/// ```
/// use wgflow::nn::layers::Dense;
/// use wgflow::nn::losses::SparseCategoricalCrossentropy;
/// use wgflow::nn::metrics::SparseCategoricalAccuracy;
/// use wgflow::nn::optimizers::Adam;
/// use wgflow::nn::{FitArgs, Model, Sequential};
/// use wgflow::{DType, Device};
///
/// let x = wgflow::ops::random_normal(&[64, 4], 0.0, 1.0, DType::F32, 1, &Device::Cpu)?;
/// let y = x.argmax(-1)?;
/// let mut model = Sequential::new().add(Dense::new(4));
/// model.compile(Adam::new(0.01), SparseCategoricalCrossentropy::new(true), SparseCategoricalAccuracy::new());
/// let args = FitArgs { epochs: 2, verbose: false, device: Some(Device::Cpu), ..FitArgs::default() };
/// let history = model.fit(&x, &y, args)?;
/// assert_eq!(history.get("loss").unwrap().len(), 2);
/// # Ok::<(), wgflow::Error>(())
/// ```
pub trait Model {
    /// The forward pass on a batch `x` (batch first). `training` selects
    /// training behaviour, as Keras' `training=` argument: dropout active,
    /// batch normalization on batch statistics.
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor>;
    /// Every weight with a path unique in the model (checkpoint names).
    fn named_variables(&self) -> Vec<(String, Variable)>;
    /// The storage of the compiled configuration: `None` until
    /// [`Model::compile`]. The provided methods take it out and put it back
    /// around each step.
    fn compiled(&mut self) -> &mut Option<Compiled>;
    /// The name `summary` prints (Keras' `model.name`); "model" by default.
    fn name(&self) -> String {
        "model".into()
    }
    /// Layers and per-example input shape, for `summary`.
    fn summary_layers(&self) -> (Vec<&dyn Layer>, Option<Vec<usize>>) {
        (Vec::new(), None)
    }

    /// The forward pass of a model of several inputs or outputs (a
    /// functional one from [`crate::nn::Functional::build_multi`]): one
    /// tensor per input in, one per output out, in the model's order. For
    /// a model of one input and one output it is [`Model::call`].
    ///
    /// Returns [`Error::InvalidArgument`] for a count of tensors other than
    /// the model's inputs, and the errors of the layers.
    fn call_many(&mut self, xs: &[Tensor], training: bool) -> Result<Vec<Tensor>> {
        match xs {
            [x] => Ok(vec![self.call(x, training)?]),
            _ => Err(Error::arg(
                "Model.call",
                format!("model {} takes one input, {} given", self.name(), xs.len()),
            )),
        }
    }

    /// The per-example shape of each input, once known (built or called):
    /// one for most models.
    fn input_shapes(&self) -> Option<Vec<Vec<usize>>> {
        let (_, input) = self.summary_layers();
        input.map(|s| vec![s])
    }

    /// The names the serving signature gives the inputs: `inputs` for a
    /// model of one input, else the names of its `Input`s.
    fn input_names(&self) -> Vec<String> {
        vec!["inputs".into()]
    }

    /// The inference pass (`training=false`) as a function of one input
    /// `inputs` whose batch dimension is unknown, its output `output_0`:
    /// what [`Model::export`] writes as the `serving_default` signature.
    /// A model of several inputs takes them by their [`Model::input_names`]
    /// and gives `output_0`, `output_1`, ... The model must be built (or
    /// called once) so its input shapes are known.
    fn serving_function(&mut self) -> Result<ConcreteFunction>
    where
        Self: Sized,
    {
        let inputs = self.input_shapes().ok_or_else(|| {
            Error::arg(
                "Model.export",
                "the model's input shape is unknown: build it (model.build) or call it once first",
            )
        })?;
        let names = self.input_names();
        let specs: Vec<TensorSpec> = inputs
            .iter()
            .zip(&names)
            .map(|(input, name)| {
                let mut shape = vec![None];
                shape.extend(input.iter().map(|&d| Some(d)));
                TensorSpec::new(&shape, crate::core::dtype::DType::F32).named(name)
            })
            .collect();
        let device = self.device()?;
        let name = self.name();
        ConcreteFunction::trace_batched(&name, &specs, &device, |x| self.call_many(x, false))
    }

    /// Keras' `model.export(dir)`: the model's inference pass as a
    /// TensorFlow SavedModel in `dir` (signature `serving_default`, input
    /// `inputs` of shape `[-1, ...]`, output `output_0`), loadable by
    /// `tf.saved_model.load`, TF Serving and
    /// [`crate::io::saved_model::load`]. Variables are named
    /// `<layer>/<weight>` in the bundle.
    fn export(&mut self, dir: impl AsRef<std::path::Path>) -> Result<()>
    where
        Self: Sized,
    {
        crate::io::saved_model::save(self, dir, &crate::io::saved_model::SaveOptions::default())
    }

    /// Bundle names of the weights: `<layer name>/<weight>` (`dense/kernel`).
    fn export_names(&self) -> Vec<(String, Variable)> {
        let (layers, _) = self.summary_layers();
        if layers.is_empty() {
            return self.named_variables();
        }
        layers
            .iter()
            .flat_map(|l| {
                l.weight_paths()
                    .into_iter()
                    .map(|(w, v)| (format!("{}/{w}", l.name()), v))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// `model.variables` (Keras' `weights`): every variable, trainable or not,
    /// in the order of `named_variables`.
    fn variables(&self) -> Vec<Variable> {
        self.named_variables().into_iter().map(|(_, v)| v).collect()
    }

    /// Where the weights live (the default device before they exist).
    fn device(&self) -> Result<Device> {
        match self.named_variables().first() {
            Some((_, v)) => Ok(v.device()),
            None => crate::runtime::config::default_device(),
        }
    }

    /// `model.trainable_variables`: the ones the optimizer updates (not, for
    /// example, batch normalization's moving statistics).
    fn trainable_variables(&self) -> Vec<Variable> {
        self.variables().into_iter().filter(|v| v.trainable()).collect()
    }

    /// `model.compile(optimizer, loss, metrics)`. `optimizer` is any
    /// optimizer type of [`crate::nn::optimizers`]; `metrics` is `()`, one
    /// metric, a tuple or array of metrics, or a `Vec<Box<dyn Metric>>` (see
    /// [`Metrics`]). Compiling again replaces the optimizer (and its state),
    /// resets the metrics and drops the traced steps.
    fn compile(&mut self, optimizer: impl Into<Optimizer>, loss: impl Loss + 'static, metrics: impl Into<Metrics>)
    where
        Self: Sized,
    {
        let mut optimizer: Optimizer = optimizer.into();
        // Keras' auto_scale_loss: mixed float16 trains with loss scaling.
        if super::mixed_precision::global_policy() == super::mixed_precision::Policy::mixed_float16()
            && !optimizer.is_loss_scaled()
        {
            optimizer = super::optimizers::LossScaleOptimizer::new(optimizer).into();
        }
        *self.compiled() = Some(Compiled {
            optimizer,
            loss: Box::new(loss),
            metrics: metrics.into().0,
            weighted_metrics: Vec::new(),
            run_eagerly: false,
            loss_tracker: Mean::new("loss"),
            train_function: Traced::new("train_step"),
            test_function: Traced::new("test_step"),
            predict_function: Traced::new("predict_step"),
            test_loss: Mean::new("loss"),
            heads: Vec::new(),
            test_many_function: Traced::new("test_step"),
        });
    }

    /// The outputs' names in the logs of a model of several outputs (the
    /// layers that make them, as Keras names them); `output_0` for a
    /// model of one.
    fn output_names(&self) -> Vec<String> {
        vec!["output_0".into()]
    }

    /// Keras' `compile(optimizer, loss=[...], loss_weights=[...],
    /// metrics=[[...], ...])` for a model of several outputs: one loss per
    /// output (in [`Model::output_names`]' order), their weights (empty:
    /// all 1) and each output's metrics (empty: none). `fit_many` then
    /// minimizes the weighted sum of the losses, reported as "loss", with
    /// each output's own loss as `<output>_loss` and its metrics as
    /// `<output>_<metric>`.
    ///
    /// Returns [`Error::InvalidArgument`] when the lists do not have one
    /// entry per output.
    fn compile_outputs(
        &mut self,
        optimizer: impl Into<Optimizer>,
        losses: Vec<Box<dyn Loss>>,
        loss_weights: &[f64],
        metrics: Vec<Metrics>,
    ) -> Result<()>
    where
        Self: Sized,
    {
        let names = self.output_names();
        let n = names.len();
        let bad = |what: &str, got: usize| {
            Error::arg(
                "Model.compile",
                format!("the model has {n} outputs ({}): {got} {what} given", names.join(", ")),
            )
        };
        if losses.len() != n {
            return Err(bad("losses", losses.len()));
        }
        if !loss_weights.is_empty() && loss_weights.len() != n {
            return Err(bad("loss weights", loss_weights.len()));
        }
        if !metrics.is_empty() && metrics.len() != n {
            return Err(bad("metric lists", metrics.len()));
        }
        let mut losses = losses.into_iter();
        let first = losses.next().ok_or_else(|| bad("losses", 0))?;
        let mut metrics = metrics.into_iter();
        let heads = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let loss = if k == 0 { None } else { losses.next() };
                let weight = loss_weights.get(k).copied().unwrap_or(1.0);
                let ms = metrics.next().map(|m| m.0).unwrap_or_default();
                super::heads::Head::new(name.clone(), loss, weight, ms)
            })
            .collect();
        self.compile(optimizer, first, ());
        if let Some(c) = self.compiled().as_mut() {
            c.heads = heads;
        }
        Ok(())
    }

    /// Keras' `compile(..., weighted_metrics=[...])`, after
    /// [`Model::compile`]: metrics updated with the sample weights of each
    /// batch (`FitArgs::sample_weight` or `class_weight`, a dataset's
    /// `(x, y, sample_weight)`, [`Model::evaluate_weighted`]); without
    /// weights they count every example once.
    ///
    /// Returns [`Error::InvalidArgument`] if the model is not compiled.
    fn set_weighted_metrics(&mut self, metrics: impl Into<Metrics>) -> Result<()>
    where
        Self: Sized,
    {
        let c = self.compiled().as_mut().ok_or_else(not_compiled)?;
        if !c.heads.is_empty() {
            return Err(Error::arg(
                "Model.compile",
                "weighted_metrics are for models compiled with compile, not compile_outputs: give each output its metrics",
            ));
        }
        c.weighted_metrics = metrics.into().0;
        c.train_function = Traced::new("train_step");
        c.test_function = Traced::new("test_step");
        c.test_many_function = Traced::new("test_step");
        Ok(())
    }

    /// `model.run_eagerly = on`: with `true`, `fit`, `evaluate` and `predict`
    /// run every op eagerly (easier to debug, slower); by default they trace
    /// their step once per batch shape and replay the compiled graph.
    fn set_run_eagerly(&mut self, on: bool) -> Result<()> {
        self.compiled().as_mut().ok_or_else(not_compiled)?.run_eagerly = on;
        Ok(())
    }

    /// Whether steps run eagerly (`set_run_eagerly`; off by default).
    fn run_eagerly(&mut self) -> bool {
        self.compiled().as_ref().is_some_and(|c| c.run_eagerly)
    }

    /// One optimization step on a batch: forward pass, loss, gradients,
    /// optimizer update, loss tracker and metrics; returns the loss (on the
    /// device). `fit` traces it (see `run_eagerly`), so an override must do
    /// all its work with tensor ops and variables.
    fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<Tensor>
    where
        Self: Sized,
    {
        weighted_train_step(self, x, y, None)
    }

    /// [`Model::train_step`] with sample weights, which `fit` calls where
    /// there are weights (`FitArgs::sample_weight` or `class_weight`, or
    /// dataset elements `(x, y, sample_weight)`); without weights it is
    /// `train_step`. A model that overrides `train_step` and trains with
    /// weights overrides this too.
    fn train_step_weighted(&mut self, x: &Tensor, y: &Tensor, sample_weight: Option<&Tensor>) -> Result<Tensor>
    where
        Self: Sized,
    {
        match sample_weight {
            None => self.train_step(x, y),
            Some(w) => weighted_train_step(self, x, y, Some(w)),
        }
    }
    /// `model.fit(x, y, batch_size, epochs, validation_data, shuffle, callbacks)`:
    /// trains on `x` and `y` (matching first dimensions) and returns the
    /// per-epoch logs.
    ///
    /// Returns [`Error::InvalidArgument`] if the model is not compiled, and
    /// the errors of the step (shape mismatches with the layers or the loss),
    /// of the callbacks and of the device.
    fn fit(&mut self, x: &Tensor, y: &Tensor, args: FitArgs) -> Result<History>
    where
        Self: Sized,
    {
        let (ds, epoch) = epoch_batches(x, y, &args)?;
        fit_model(self, &ds, args, Some(epoch), (1, 1))
    }

    /// `model.fit([x1, ...], [y1, ...])` for a model of several inputs or
    /// outputs: one tensor per input and one target per output (all with
    /// the same first dimension). A model of several outputs is compiled
    /// with [`Model::compile_outputs`]. `sample_weight` weighs every
    /// output's loss; validation data of several tensors is
    /// `FitArgs::validation_data_many`; `class_weight` is for models of
    /// one input and one output.
    ///
    /// Returns [`Error::InvalidArgument`] for counts that do not match the
    /// model, and the errors of [`Model::fit`].
    fn fit_many(&mut self, xs: &[Tensor], ys: &[Tensor], args: FitArgs) -> Result<History>
    where
        Self: Sized,
    {
        if args.class_weight.is_some() || args.validation_data.is_some() {
            return Err(Error::arg(
                "fit",
                "class_weight and validation_data take one input and one output: for a model of several, give validation_data_many",
            ));
        }
        if let Some((vx, vy)) = &args.validation_data_many {
            self.check_split(vx.len(), vy.len())?;
        }
        let split = self.check_split(xs.len(), ys.len())?;
        let (ds, epoch) = epoch_batches_many(xs, ys, &args)?;
        fit_model(self, &ds, args, Some(epoch), split)
    }

    /// `model.evaluate([x1, ...], [y1, ...])` for a model of several
    /// inputs or outputs: "loss" (the weighted sum), then each output's
    /// loss and metrics as `fit_many` reports them.
    ///
    /// Returns [`Error::InvalidArgument`] for counts that do not match the
    /// model or if it is not compiled.
    fn evaluate_many(&mut self, xs: &[Tensor], ys: &[Tensor], batch_size: usize) -> Result<Logs>
    where
        Self: Sized,
    {
        self.check_split(xs.len(), ys.len())?;
        let d = self.device()?;
        super::heads::evaluate(self, xs, ys, None, batch_size, &d)
    }

    /// The training step of a model of several inputs or outputs (what
    /// `fit_many` runs): the weighted sum of the outputs' losses minimized,
    /// each output's loss and metrics tracked.
    fn train_step_many(&mut self, xs: &[Tensor], ys: &[Tensor], sample_weight: Option<&Tensor>) -> Result<Tensor>
    where
        Self: Sized,
    {
        super::heads::train_step(self, xs, ys, sample_weight)
    }

    /// Checks `inputs` and `outputs` against the model and its compile.
    fn check_split(&mut self, inputs: usize, outputs: usize) -> Result<(usize, usize)>
    where
        Self: Sized,
    {
        let want_in = self.input_names().len();
        let heads = self.compiled().as_ref().ok_or_else(not_compiled)?.heads.len().max(1);
        let want_out = self.output_names().len();
        if inputs != want_in || outputs != want_out || heads != want_out {
            return Err(Error::arg(
                "fit",
                format!(
                    "the model takes {want_in} inputs and gives {want_out} outputs (compiled for {heads}); {inputs} inputs and {outputs} targets given{}",
                    if heads != want_out {
                        ": compile it with compile_outputs"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok((inputs, outputs))
    }

    /// `model.fit(dataset, ...)`: the dataset yields (x, y) batches, moved to
    /// `args.device` on a prefetch thread; `batch_size` and `shuffle` in
    /// `args` are ignored.
    ///
    /// Returns [`Error::InvalidArgument`] if the model is not compiled or an
    /// element is not a pair, and the errors of [`Model::fit`].
    fn fit_dataset(&mut self, ds: &Dataset, args: FitArgs) -> Result<History>
    where
        Self: Sized,
    {
        fit_model(self, ds, args, None, (1, 1))
    }

    /// The loss and metrics accumulated so far in this epoch.
    fn current_logs(&mut self) -> Result<Logs>
    where
        Self: Sized,
    {
        logs_of(self.compiled())
    }

    /// `model.evaluate(x, y, batch_size)`: loss and metrics in inference mode
    /// on the model's device (Keras' default `batch_size` is 32). The loss is
    /// the example-weighted mean over all batches.
    ///
    /// Returns [`Error::InvalidArgument`] if the model is not compiled or
    /// `batch_size` is 0.
    fn evaluate(&mut self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Logs>
    where
        Self: Sized,
    {
        let d = self.device()?;
        self.evaluate_on(x, y, batch_size, &d)
    }

    /// [`Model::evaluate`] with each batch moved to `device` (how `fit`
    /// evaluates `validation_data` on its training device).
    fn evaluate_on(&mut self, x: &Tensor, y: &Tensor, batch_size: usize, device: &Device) -> Result<Logs>
    where
        Self: Sized,
    {
        self.evaluate_weighted_on(x, y, None, batch_size, device)
    }

    /// `model.evaluate(x, y, batch_size, sample_weight=w)`: each example's
    /// loss multiplied by its weight before the loss's reduction (metrics
    /// unweighted, as Keras' `metrics`).
    ///
    /// Returns [`Error::Shape`] if `sample_weight`'s first axis is not `x`'s,
    /// and the errors of [`Model::evaluate`].
    fn evaluate_weighted(&mut self, x: &Tensor, y: &Tensor, sample_weight: &Tensor, batch_size: usize) -> Result<Logs>
    where
        Self: Sized,
    {
        let d = self.device()?;
        self.evaluate_weighted_on(x, y, Some(sample_weight), batch_size, &d)
    }

    /// [`Model::evaluate_weighted`] on `device`, weights optional.
    fn evaluate_weighted_on(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        sample_weight: Option<&Tensor>,
        batch_size: usize,
        device: &Device,
    ) -> Result<Logs>
    where
        Self: Sized,
    {
        if self.compiled().as_ref().is_some_and(|c| !c.heads.is_empty()) {
            let w = sample_weight.map(|w| weights_for(x, w)).transpose()?;
            let (xs, ys) = (std::slice::from_ref(x), std::slice::from_ref(y));
            return super::heads::evaluate(self, xs, ys, w.as_ref(), batch_size, device);
        }
        let eager = self.run_eagerly();
        let mut data = vec![x.clone(), y.clone()];
        if let Some(w) = sample_weight {
            data.push(weights_for(x, w)?);
        }
        let mut c = self.compiled().take().ok_or_else(not_compiled)?;
        let r = (|| {
            let Compiled {
                loss: loss_fn,
                metrics,
                weighted_metrics: weighted,
                test_function: traced,
                test_loss: loss,
                ..
            } = &mut c;
            loss.reset_state();
            reset_metrics(metrics, weighted);
            let ds = Dataset::from_tensor_slices(&data)?.batch(batch_size, false)?;
            (|| -> Result<Logs> {
                for b in ds.iter()? {
                    let args = b?.iter().map(|t| t.to_device(device)).collect::<Result<Vec<_>>>()?;
                    let mut step = |a: &[Tensor]| -> Result<Vec<Tensor>> {
                        without_recording(|| {
                            let (bx, by) = (&a[0], &a[1]);
                            let pred = self.call(bx, false)?;
                            let (l, _) = scalar_loss(loss_fn.call_weighted(by, &pred, a.get(2))?)?;
                            // The batch mean weighted by the batch size.
                            loss.update(&l.broadcast_to(&[bx.shape()[0]])?)?;
                            update_metrics(metrics, weighted, by, &pred, a.get(2))?;
                            Ok(Vec::new())
                        })
                    };
                    if eager {
                        step(&args)?;
                    } else {
                        traced.call(&args, step)?;
                    }
                }
                let mut logs = vec![("loss".to_string(), loss.result()?)];
                logs.extend(metric_logs(metrics, weighted)?);
                Ok(logs)
            })()
        })();
        *self.compiled() = Some(c);
        r
    }

    /// `model.predict(x, batch_size)`: outputs in inference mode, batch by
    /// batch, concatenated along the first axis. Needs no `compile`.
    ///
    /// Returns [`Error::InvalidArgument`] if `x` has no rows or `batch_size`
    /// is 0.
    fn predict(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor>
    where
        Self: Sized,
    {
        let mut outs = self.predict_many(std::slice::from_ref(x), batch_size)?;
        match outs.len() {
            1 => outs.pop().ok_or_else(|| Error::arg("predict", "no output")),
            n => Err(Error::arg(
                "predict",
                format!("model {} gives {n} outputs: use predict_many", self.name()),
            )),
        }
    }

    /// `model.predict([x1, x2, ...])` for a model of several inputs or
    /// outputs: one tensor per input (matching first dimensions), one per
    /// output, each batch by batch in inference mode and concatenated.
    /// For a model of one input and one output it is [`Model::predict`].
    ///
    /// Returns [`Error::InvalidArgument`] if the inputs have no rows or
    /// differing row counts, or `batch_size` is 0.
    fn predict_many(&mut self, xs: &[Tensor], batch_size: usize) -> Result<Vec<Tensor>>
    where
        Self: Sized,
    {
        let device = self.device()?;
        let eager = self.run_eagerly();
        let ds = Dataset::from_tensor_slices(xs)?.batch(batch_size, false)?;
        let mut traced = match self.compiled().as_mut() {
            Some(c) => std::mem::replace(&mut c.predict_function, Traced::new("predict_step")),
            None => Traced::new("predict_step"),
        };
        let mut outs: Vec<Vec<Tensor>> = Vec::new();
        let r = (|| -> Result<()> {
            for b in ds.iter()? {
                let bx = b?.iter().map(|t| t.to_device(&device)).collect::<Result<Vec<_>>>()?;
                let mut step = |a: &[Tensor]| -> Result<Vec<Tensor>> { without_recording(|| self.call_many(a, false)) };
                let ys = if eager { step(&bx)? } else { traced.call(&bx, step)? };
                if outs.is_empty() {
                    outs = ys.iter().map(|_| Vec::new()).collect();
                }
                for (o, y) in outs.iter_mut().zip(ys) {
                    o.push(y);
                }
            }
            Ok(())
        })();
        if let Some(c) = self.compiled().as_mut() {
            c.predict_function = traced;
        }
        r?;
        if outs.is_empty() {
            return Err(Error::arg("predict", "no input rows"));
        }
        outs.iter()
            .map(|o| layout::concat(&o.iter().collect::<Vec<_>>(), 0))
            .collect()
    }

    /// For a functional model, each layer of `summary_layers` with the
    /// output shape of its first call and the tensors its calls take
    /// (`dense[0][0]`); `None` for other models.
    fn summary_connections(&self) -> Option<Vec<(Vec<usize>, Vec<String>)>> {
        None
    }

    /// Keras' `summary()` table: layers, output shapes, parameter counts
    /// (and for a functional model, what each layer is connected to).
    fn summary(&self) -> String {
        let (layers, input) = self.summary_layers();
        let graph = self.summary_connections();
        let mut out = format!("Model: \"{}\"\n", self.name());
        let width = if graph.is_some() { 90 } else { 65 };
        let line = "_".repeat(width);
        let dline = "=".repeat(width);
        let shown = |s: Option<&[usize]>| match s {
            Some(s) => format!(
                "(None, {})",
                s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            ),
            None => "?".into(),
        };
        out += &format!(
            "{line}\n {:<28}{:<26}{:<10}{}\n{dline}\n",
            "Layer (type)",
            "Output Shape",
            "Param #",
            if graph.is_some() { "Connected to" } else { "" }
        );
        if let Some(graph) = &graph {
            let mut names = self.input_names();
            if names.len() == 1 {
                names = vec!["input_layer".into()];
            }
            let shapes = self
                .input_shapes()
                .unwrap_or_else(|| vec![input.clone().unwrap_or_default()]);
            for (name, shape) in names.iter().zip(&shapes) {
                out += &format!(
                    " {:<28}{:<26}{:<10}-\n",
                    format!("{name} (InputLayer)"),
                    shown(Some(shape)),
                    0
                );
            }
            for (l, (shape, from)) in layers.iter().zip(graph) {
                let name = format!("{} ({})", l.name(), l.kind());
                out += &format!(
                    " {name:<28}{:<26}{:<10}{}\n",
                    shown(Some(shape)),
                    with_commas(count_params(*l)),
                    from.join(", ")
                );
            }
        } else {
            let mut shape = input;
            for l in &layers {
                let next = shape.as_ref().and_then(|s| l.output_shape(s).ok());
                let name = format!("{} ({})", l.name(), l.kind());
                out += &format!(
                    " {name:<28}{:<26}{:<10}\n",
                    shown(next.as_deref()),
                    with_commas(count_params(*l))
                );
                shape = next;
            }
        }
        let all: usize = self.variables().iter().map(|v| v.numel()).sum();
        let trainable: usize = self.trainable_variables().iter().map(|v| v.numel()).sum();
        out += &format!(
            "{dline}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: {}\n{line}\n",
            with_commas(all),
            with_commas(trainable),
            with_commas(all - trainable)
        );
        out
    }
}

/// The default training step, weighted by `sample_weight` where given.
/// A loss with [`Reduction::None`](super::losses::Reduction::None) trains on
/// the sum of its values and reports their mean, as Keras does.
fn weighted_train_step<M: Model>(m: &mut M, x: &Tensor, y: &Tensor, sample_weight: Option<&Tensor>) -> Result<Tensor> {
    let mut c = m.compiled().take().ok_or_else(not_compiled)?;
    let r = (|| {
        let tape = GradientTape::new();
        let pred = m.call(x, true)?;
        let (loss, objective) = scalar_loss(c.loss.call_weighted(y, &pred, sample_weight)?)?;
        let scaled = c.optimizer.scale_loss(&objective)?;
        let vars = m.trainable_variables();
        let refs: Vec<&Variable> = vars.iter().collect();
        let grads = tape.gradient(&scaled, &refs)?;
        drop(tape);
        c.optimizer.apply_gradients(&grads, &vars)?;
        without_recording(|| -> Result<()> {
            // Keras weights each batch's loss by its size, so a short
            // last batch counts for what it holds.
            let n = x.shape().first().copied().unwrap_or(1);
            c.loss_tracker.update(&loss.broadcast_to(&[n])?)?;
            update_metrics(&mut c.metrics, &mut c.weighted_metrics, y, &pred, sample_weight)
        })?;
        Ok(loss)
    })();
    *m.compiled() = Some(c);
    r
}

/// A loss value as (what is reported, what is minimized): the same scalar,
/// or for unreduced values their mean and their sum.
pub(crate) fn scalar_loss(l: Tensor) -> Result<(Tensor, Tensor)> {
    if l.rank() == 0 {
        return Ok((l.clone(), l));
    }
    let sum = l.sum(None, false)?;
    let mean = if l.numel() == 0 {
        sum.clone()
    } else {
        l.mean(None, false)?
    };
    Ok((mean, sum))
}

/// Keras' `class_weight_to_sample_weights`: each example's weight is its
/// class's (1 for a class `weights` does not list); the class is the
/// rounded label, or the argmax of a one-hot row.
pub(crate) fn class_sample_weights(y: &Tensor, weights: &std::collections::HashMap<usize, f64>) -> Result<Tensor> {
    let shape = y.shape().to_vec();
    let labels = match shape.as_slice() {
        [] => {
            return Err(Error::shape(
                "fit",
                &[&shape],
                "class_weight needs labels with a batch axis",
            ));
        }
        [_] | [_, 1] => y.to_f64_vec()?,
        [_, _] => y.argmax(-1)?.to_f64_vec()?,
        _ => {
            return Err(Error::shape(
                "fit",
                &[&shape],
                "class_weight needs labels [n], [n, 1] or one-hot [n, classes]",
            ));
        }
    };
    let w: Vec<f32> = labels
        .iter()
        .map(|&l| {
            let l = l.round();
            // Classes are non-negative; other labels (and NaN) weigh 1.
            let class = (l >= 0.0 && l <= u32::MAX as f64).then_some(l as usize);
            class.and_then(|k| weights.get(&k)).map_or(1.0, |&v| v as f32)
        })
        .collect();
    Tensor::from_vec(w, &[labels.len()], &Device::Cpu)
}

fn with_commas(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The loss and metrics `c` has accumulated.
fn logs_of(c: &Option<Compiled>) -> Result<Logs> {
    let c = c.as_ref().ok_or_else(not_compiled)?;
    let mut logs = vec![("loss".to_string(), c.loss_tracker.result()?)];
    logs.extend(metric_logs(&c.metrics, &c.weighted_metrics)?);
    logs.extend(super::heads::logs(c)?);
    Ok(logs)
}

/// Starts every metric over.
pub(crate) fn reset_metrics(metrics: &mut [Box<dyn Metric>], weighted: &mut [Box<dyn Metric>]) {
    for m in metrics.iter_mut().chain(weighted.iter_mut()) {
        m.reset_state();
    }
}

/// One batch into the metrics: the weighted ones with `sample_weight`.
pub(crate) fn update_metrics(
    metrics: &mut [Box<dyn Metric>],
    weighted: &mut [Box<dyn Metric>],
    y: &Tensor,
    pred: &Tensor,
    sample_weight: Option<&Tensor>,
) -> Result<()> {
    for m in metrics.iter_mut() {
        m.update_state(y, pred)?;
    }
    for m in weighted.iter_mut() {
        m.update_state_weighted(y, pred, sample_weight)?;
    }
    Ok(())
}

/// The metrics' results under Keras' names: a weighted metric whose name
/// is taken is `weighted_<name>` (then `_1`, `_2`, ... as Keras counts).
pub(crate) fn metric_logs(metrics: &[Box<dyn Metric>], weighted: &[Box<dyn Metric>]) -> Result<Logs> {
    let mut logs: Logs = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut unique = |name: String| -> String {
        match seen.get_mut(&name) {
            None => {
                seen.insert(name.clone(), 1);
                name
            }
            Some(k) => {
                *k += 1;
                format!("{name}_{}", *k - 1)
            }
        }
    };
    for m in metrics {
        logs.push((unique(m.name().to_string()), m.result()?));
    }
    for m in weighted {
        let name = m.name().to_string();
        let name = if logs.iter().any(|(n, _)| *n == name) {
            unique(format!("weighted_{name}"))
        } else {
            unique(name)
        };
        logs.push((name, m.result()?));
    }
    Ok(logs)
}

/// `x` and `y` in batches of `args.batch_size`, shuffled (with
/// `args.shuffle`) in the order of the epoch the returned counter holds:
/// what `fit(x, y)` iterates.
pub(crate) fn epoch_batches(x: &Tensor, y: &Tensor, args: &FitArgs) -> Result<(Dataset, Arc<AtomicU64>)> {
    epoch_batches_many(std::slice::from_ref(x), std::slice::from_ref(y), args)
}

/// [`epoch_batches`] of several inputs and targets: elements `(x1, ...,
/// y1, ..., [sample_weight])`.
fn epoch_batches_many(xs: &[Tensor], ys: &[Tensor], args: &FitArgs) -> Result<(Dataset, Arc<AtomicU64>)> {
    let (Some(x), Some(y)) = (xs.first(), ys.first()) else {
        return Err(Error::arg("fit", "no inputs or no targets"));
    };
    let n = x.shape().first().copied().unwrap_or(0);
    let epoch = Arc::new(AtomicU64::new(0));
    let mut data = xs.to_vec();
    data.extend(ys.iter().cloned());
    match (&args.sample_weight, &args.class_weight) {
        (Some(_), Some(_)) => return Err(both_weights()),
        (Some(w), None) => data.push(weights_for(x, w)?),
        (None, Some(cw)) => data.push(class_sample_weights(y, cw)?),
        (None, None) => {}
    }
    let mut ds = Dataset::from_tensor_slices(&data)?;
    if args.shuffle {
        ds = ds.shuffle_for_epoch(n.max(1), args.seed, epoch.clone());
    }
    Ok((ds.batch(args.batch_size, false)?, epoch))
}

/// [`Model::fit_dataset`], with the epoch counter of [`epoch_batches`] when
/// the data is `fit`'s own.
fn fit_model<M: Model>(
    m: &mut M,
    ds: &Dataset,
    args: FitArgs,
    epoch: Option<Arc<AtomicU64>>,
    split: (usize, usize),
) -> Result<History> {
    if m.compiled().is_none() {
        return Err(not_compiled());
    }
    // Where the weights are, unless told otherwise.
    let device = match &args.device {
        Some(d) => d.clone(),
        None => m.device()?,
    };
    let dev = device.clone();
    let mut ds = ds.clone();
    // fit(x, y) has weighted its own examples already.
    if epoch.is_none() {
        ds = weighted_elements(ds, &args)?;
    }
    let ds = ds
        .map(move |e| e.iter().map(|t| t.to_device(&dev)).collect())
        .prefetch(2);
    let mut traced = std::mem::replace(
        &mut m.compiled().as_mut().ok_or_else(not_compiled)?.train_function,
        Traced::new("train_step"),
    );
    let vars = m.named_variables();
    let mut target = One {
        model: &mut *m,
        traced: &mut traced,
        device,
        batch_size: args.batch_size,
        epoch,
        split,
    };
    let history = fit_loop(&mut target, &ds, args, vars);
    if let Some(c) = m.compiled().as_mut() {
        c.train_function = traced;
    }
    history
}

/// A dataset's elements with `args.class_weight`'s weights appended
/// (elements that carry weights of their own are then an error);
/// `args.sample_weight` is for `fit(x, y)` only.
pub(crate) fn weighted_elements(ds: Dataset, args: &FitArgs) -> Result<Dataset> {
    if args.sample_weight.is_some() {
        return Err(Error::arg(
            "fit",
            "sample_weight is for fit(x, y); a dataset's elements carry their weights as (x, y, sample_weight)",
        ));
    }
    let Some(cw) = args.class_weight.clone() else {
        return Ok(ds);
    };
    Ok(ds.map(move |mut e| {
        if e.len() != 2 {
            return Err(both_weights());
        }
        let w = class_sample_weights(&e[1], &cw)?;
        e.push(w);
        Ok(e)
    }))
}

/// What [`fit_loop`] trains: one model ([`Model::fit_dataset`]) or a
/// mirrored one (`distribute::Mirrored::fit`), on one worker or one of
/// several.
pub(crate) trait FitTarget {
    /// The `Compiled` whose optimizer and metrics are reported.
    fn compiled(&mut self) -> &mut Option<Compiled>;
    /// One training step on a dataset element; returns the loss.
    fn step(&mut self, batch: Vec<Tensor>) -> Result<Tensor>;
    /// The validation logs of one epoch.
    fn validate(&mut self, x: &Tensor, y: &Tensor, w: Option<&Tensor>) -> Result<Logs>;
    /// The validation logs of one epoch of a model of several inputs or
    /// outputs (`FitArgs::validation_data_many`).
    fn validate_many(&mut self, _xs: &[Tensor], _ys: &[Tensor]) -> Result<Logs> {
        Err(Error::arg(
            "fit",
            "validation_data_many is for Model::fit_many on one device",
        ))
    }
    /// After the restore callbacks, with the epoch they resume at (every
    /// worker calls it, restored or not).
    fn restored(&mut self, _initial_epoch: Option<usize>) -> Result<()> {
        Ok(())
    }
    /// At each epoch's end, with this worker's wish to stop: whether
    /// training stops (every worker must decide alike).
    fn stop(&mut self, stop: bool) -> Result<bool> {
        Ok(stop)
    }
    /// This worker's index; 0, the chief, alone prints and writes files.
    fn worker(&self) -> usize {
        0
    }
    /// Before each epoch's first batch, with its index.
    fn begin_epoch(&mut self, _epoch: usize) {}
}

/// One model on one device, its traced step kept across epochs.
struct One<'a, M: Model> {
    model: &'a mut M,
    traced: &'a mut Traced,
    device: Device,
    batch_size: usize,
    /// The shuffle's epoch, when the data is `fit`'s own.
    epoch: Option<Arc<AtomicU64>>,
    /// How many of an element's tensors are inputs and targets ((1, 1)
    /// but for `fit_many`).
    split: (usize, usize),
}

impl<M: Model> FitTarget for One<'_, M> {
    fn begin_epoch(&mut self, epoch: usize) {
        if let Some(e) = &self.epoch {
            e.store(epoch as u64, Ordering::Relaxed);
        }
    }
    fn compiled(&mut self) -> &mut Option<Compiled> {
        self.model.compiled()
    }
    fn step(&mut self, batch: Vec<Tensor>) -> Result<Tensor> {
        let (ni, no) = self.split;
        let heads = self.model.compiled().as_ref().is_some_and(|c| !c.heads.is_empty());
        if (ni, no) != (1, 1) || heads {
            if batch.len() != ni + no && batch.len() != ni + no + 1 {
                return Err(Error::arg(
                    "fit",
                    format!(
                        "elements need {ni} inputs, {no} targets and maybe sample weights, got {} tensors",
                        batch.len()
                    ),
                ));
            }
            let m = &mut *self.model;
            let run = |m: &mut M, b: &[Tensor]| {
                let (xs, rest) = b.split_at(ni);
                let (ys, w) = rest.split_at(no);
                m.train_step_many(xs, ys, w.first())
            };
            return if m.run_eagerly() {
                run(m, &batch)
            } else {
                Ok(self.traced.call(&batch, |b| Ok(vec![run(m, b)?]))?.remove(0))
            };
        }
        if !matches!(batch.len(), 2 | 3) {
            return Err(Error::arg(
                "fit",
                format!(
                    "dataset elements need (x, y) or (x, y, sample_weight), got {} tensors",
                    batch.len()
                ),
            ));
        }
        let m = &mut *self.model;
        if m.run_eagerly() {
            m.train_step_weighted(&batch[0], &batch[1], batch.get(2))
        } else {
            Ok(self
                .traced
                .call(&batch, |b| Ok(vec![m.train_step_weighted(&b[0], &b[1], b.get(2))?]))?
                .remove(0))
        }
    }
    fn validate(&mut self, x: &Tensor, y: &Tensor, w: Option<&Tensor>) -> Result<Logs> {
        self.model.evaluate_weighted_on(x, y, w, self.batch_size, &self.device)
    }
    fn validate_many(&mut self, xs: &[Tensor], ys: &[Tensor]) -> Result<Logs> {
        super::heads::evaluate(&mut *self.model, xs, ys, None, self.batch_size, &self.device)
    }
}

/// The epochs of `fit` around a step: the callbacks (begin, restore, batch
/// end, epoch end, end), the epoch range and `steps_per_epoch`, metric
/// resets, the progress bar, validation and the history.
pub(crate) fn fit_loop<T: FitTarget>(
    target: &mut T,
    ds: &Dataset,
    mut args: FitArgs,
    vars: Vec<(String, Variable)>,
) -> Result<History> {
    if args.validation_sample_weight.is_some() && args.validation_data.is_none() {
        return Err(Error::arg(
            "fit",
            "validation_sample_weight is set without validation_data",
        ));
    }
    let mut history = History::default();
    let mut callbacks = std::mem::take(&mut args.callbacks);
    let mut ctx = TrainContext {
        worker: target.worker(),
        ..TrainContext::default()
    };
    // Only the chief prints.
    let verbose = args.verbose && ctx.is_chief();
    for cb in callbacks.iter_mut() {
        cb.on_train_begin(vars.clone(), &mut ctx)?;
    }
    for cb in callbacks.iter_mut() {
        let opt = target.compiled().as_mut().map(|c| &mut c.optimizer);
        cb.on_restore(opt, &mut ctx)?;
    }
    target.restored(ctx.initial_epoch)?;
    let first_epoch = ctx
        .initial_epoch
        .map_or(args.initial_epoch, |e| e.max(args.initial_epoch));
    let total = match (ds.cardinality(), args.steps_per_epoch) {
        (Some(n), Some(s)) => Some(n.min(s)),
        (n, s) => s.or(n),
    };
    let mut step = target.compiled().as_ref().map_or(0, |c| c.optimizer.iterations());
    for epoch in first_epoch..args.epochs {
        if verbose {
            println!("Epoch {}/{}", epoch + 1, args.epochs);
        }
        let c = target.compiled().as_mut().ok_or_else(not_compiled)?;
        c.loss_tracker.reset_state();
        reset_metrics(&mut c.metrics, &mut c.weighted_metrics);
        super::heads::reset(c);
        let mut progress = Progress::new(total, verbose);
        let mut steps = 0;
        target.begin_epoch(epoch);
        for batch in ds.iter()? {
            if args.steps_per_epoch.is_some_and(|s| steps >= s) {
                break;
            }
            let batch = batch?;
            for cb in callbacks.iter_mut() {
                cb.on_train_batch_begin(step, &mut ctx)?;
            }
            let loss = target.step(batch)?;
            steps += 1;
            step += 1;
            if progress.due() {
                let logs = logs_of(target.compiled())?;
                progress.update(steps, &logs);
            }
            for cb in callbacks.iter_mut() {
                cb.on_train_batch_end(step, &loss, &mut ctx)?;
            }
        }
        let mut logs = logs_of(target.compiled())?;
        if let Some((vx, vy)) = &args.validation_data {
            let val = target.validate(vx, vy, args.validation_sample_weight.as_ref())?;
            logs.extend(val.into_iter().map(|(k, v)| (format!("val_{k}"), v)));
        }
        if let Some((vx, vy)) = &args.validation_data_many {
            let val = target.validate_many(vx, vy)?;
            logs.extend(val.into_iter().map(|(k, v)| (format!("val_{k}"), v)));
        }
        progress.finish(steps, &logs);
        history.push(epoch, &logs);
        let c = target.compiled().take();
        let r = callbacks
            .iter_mut()
            .try_for_each(|cb| cb.on_epoch_end(epoch, &logs, c.as_ref().map(|c| &c.optimizer), step, &mut ctx));
        *target.compiled() = c;
        r?;
        ctx.stop_training = target.stop(ctx.stop_training)?;
        if ctx.stop_training {
            break;
        }
    }
    for cb in callbacks.iter_mut() {
        cb.on_train_end(&mut ctx)?;
    }
    Ok(history)
}

fn both_weights() -> Error {
    Error::arg("fit", "class_weight and sample_weight cannot be set at the same time")
}

/// Sample weights checked against `x`'s examples, as f32.
fn weights_for(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if w.rank() == 0 || w.shape()[0] != x.shape().first().copied().unwrap_or(0) {
        return Err(Error::shape(
            "fit",
            &[x.shape(), w.shape()],
            "sample_weight needs one weight per example of x (first axes equal)",
        ));
    }
    if w.dtype() == crate::core::dtype::DType::F32 {
        Ok(w.clone())
    } else {
        w.cast(crate::core::dtype::DType::F32)
    }
}

pub(crate) fn not_compiled() -> Error {
    Error::arg(
        "fit",
        "the model must be compiled first: call model.compile(optimizer, loss, metrics)",
    )
}

/// `keras.Sequential`: layers applied in order; or, built by
/// [`super::Functional`] or loaded from a Keras file of a functional model,
/// Keras' functional `Model`: a graph of layer calls with branches, merges
/// and shared layers (Keras 3's `Sequential` is itself a functional model).
pub struct Sequential {
    name: String,
    layers: Vec<Box<dyn Layer>>,
    input_shape: Option<Vec<usize>>,
    compiled: Option<Compiled>,
    graph: Option<Topology>,
    /// Why a layer could not be added (see [`Sequential::push`]).
    broken: Option<String>,
}

impl Sequential {
    /// An empty model; add layers with [`Sequential::add`].
    pub fn new() -> Sequential {
        Sequential::from_layers(Vec::new())
    }

    /// A model of `layers`, in order (`keras.Sequential([...])`).
    pub fn from_layers(layers: Vec<Box<dyn Layer>>) -> Sequential {
        Sequential {
            name: unique_name("sequential"),
            layers,
            input_shape: None,
            compiled: None,
            graph: None,
            broken: None,
        }
    }

    /// A functional model of `layers` (in Keras' order) and their calls.
    pub(crate) fn from_topology(name: &str, layers: Vec<Box<dyn Layer>>, graph: Topology) -> Sequential {
        Sequential {
            name: name.to_string(),
            layers,
            input_shape: Some(graph.input_shape().to_vec()),
            compiled: None,
            graph: Some(graph),
            broken: None,
        }
    }

    /// The graph of a functional model; `None` for a plain stack.
    pub(crate) fn topology(&self) -> Option<&Topology> {
        self.graph.as_ref()
    }

    /// Whether the model is a functional graph (Keras' `Functional`) rather
    /// than a stack of layers.
    pub fn is_functional(&self) -> bool {
        self.graph.is_some()
    }

    /// The model with `layer` appended: `Sequential::new().add(Dense::new(10))`.
    /// On a functional model the layer takes the model's output.
    pub fn add(mut self, layer: impl Layer + 'static) -> Sequential {
        self.push(layer);
        self
    }

    /// Appends `layer` (`model.add(layer)` on a model held by reference).
    ///
    /// On a functional model of several outputs the layer has no one
    /// output to take: it is not added, and the model's next `build`,
    /// `call` or `save` says so.
    pub fn push(&mut self, layer: impl Layer + 'static) {
        if let Some(g) = &mut self.graph {
            // The shape is worked out again (with its error) by `build`.
            let last = self.layers.len();
            let shape = match g.outputs.as_slice() {
                [o] => g
                    .nodes
                    .get(*o)
                    .and_then(|n| layer.output_shape(&n.shape).ok())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if let Err(e) = g.push(last, shape) {
                self.broken = Some(e.to_string());
                return;
            }
        }
        self.layers.push(Box::new(layer));
    }

    /// The error of an earlier `push` that could not add its layer.
    fn check_pushed(&self) -> Result<()> {
        match &self.broken {
            Some(e) => Err(Error::arg("Model", e.clone())),
            None => Ok(()),
        }
    }

    /// `model.layers`, in call order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Takes the layers out (what pruning wraps); the model is left
    /// uncompiled, as a model whose layers change must be compiled again.
    pub(crate) fn take_layers(&mut self) -> Vec<Box<dyn Layer>> {
        self.compiled = None;
        std::mem::take(&mut self.layers)
    }

    pub(crate) fn set_layers(&mut self, layers: Vec<Box<dyn Layer>>) {
        self.layers = layers;
    }

    /// The layers, mutably: to build or call one layer on its own, as with
    /// Keras' `model.layers[i]`.
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }

    /// Creates every weight for examples of `input_shape` (batch excluded) on `device`.
    ///
    /// Returns [`Error::Shape`] when a layer cannot take what reaches it, or
    /// (for a functional model) `input_shape` is not the model's.
    pub fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        self.check_pushed()?;
        if let Some(g) = &mut self.graph {
            if g.inputs.len() != 1 {
                return Err(Error::arg(
                    "Model.build",
                    format!(
                        "functional model {} takes {} inputs: build it with build_many",
                        self.name,
                        g.inputs.len()
                    ),
                ));
            }
            if input_shape != g.input_shape() {
                return Err(Error::shape(
                    "Model.build",
                    &[input_shape, g.input_shape()],
                    format!("functional model {} takes examples of its Input's shape", self.name),
                ));
            }
            g.refresh_shapes(&self.layers)?;
            return g.build(&mut self.layers, device);
        }
        let mut s = input_shape.to_vec();
        for l in self.layers.iter_mut() {
            if !l.built() {
                l.build(&s, device)?;
            }
            s = l.output_shape(&s)?;
        }
        self.input_shape = Some(input_shape.to_vec());
        Ok(())
    }

    /// [`Sequential::build`] for a functional model of several inputs:
    /// `input_shapes` must be its `Input`s' shapes, in order.
    ///
    /// Returns [`Error::Shape`] when they are not.
    pub fn build_many(&mut self, input_shapes: &[Vec<usize>], device: &Device) -> Result<()> {
        self.check_pushed()?;
        match &mut self.graph {
            Some(g) => {
                if input_shapes != g.input_shapes().as_slice() {
                    let want = g.input_shapes();
                    let mut all: Vec<&[usize]> = input_shapes.iter().map(Vec::as_slice).collect();
                    all.extend(want.iter().map(Vec::as_slice));
                    return Err(Error::shape(
                        "Model.build",
                        &all,
                        format!("functional model {} takes examples of its Inputs' shapes", self.name),
                    ));
                }
                g.refresh_shapes(&self.layers)?;
                g.build(&mut self.layers, device)
            }
            None => match input_shapes {
                [s] => self.build(s, device),
                _ => Err(Error::arg(
                    "Model.build",
                    format!(
                        "model {} takes one input, {} shapes given",
                        self.name,
                        input_shapes.len()
                    ),
                )),
            },
        }
    }

    /// Keras' `model.trainable = False` (or `True`): [`Layer::set_trainable`]
    /// on every layer (which must be built). Compile again afterwards.
    pub fn set_trainable(&mut self, trainable: bool) -> Result<()> {
        for l in self.layers.iter_mut() {
            l.set_trainable(trainable)?;
        }
        Ok(())
    }

    /// Keras' `model.trainable`: whether every layer with weights is
    /// trainable (layers without weights have nothing to freeze).
    pub fn trainable(&self) -> bool {
        self.layers
            .iter()
            .filter(|l| !l.weights().is_empty())
            .all(|l| l.trainable())
    }

    /// The per-example input shape the model was built for, if built (the
    /// first input's, for a model of several).
    pub fn input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    /// What `compile` set, if compiled.
    pub fn compiled_ref(&self) -> Option<&Compiled> {
        self.compiled.as_ref()
    }

    /// The model's name (`sequential`, ...).
    pub fn model_name(&self) -> &str {
        &self.name
    }

    /// Keras' `model.save("m.keras")`: the config and weights as a Keras 3
    /// file that `keras.models.load_model` and [`crate::nn::load_model`]
    /// read (see [`crate::nn::keras`]).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        super::keras::save(self, path)
    }
}

/// A model used as a layer (Keras: a `Sequential` or functional model
/// called inside another model, such as a pretrained base under a new
/// head): one input, one output, its layers' weights as its own.
///
/// `layer.set_trainable(false)` freezes the whole model (Keras' `base.trainable
/// = False`), its batch normalization included (moving statistics, in
/// training too). Keras files keep it nested both ways (`.keras` only: the
/// legacy `.h5` format is refused for nested models).
pub struct ModelLayer {
    model: Sequential,
    /// The weight-group keys of the model's layers in the Keras file it
    /// was loaded from (which can differ from what their kinds give:
    /// a Keras `ReLU` is an `Activation` here).
    pub(crate) keras_keys: Option<Vec<String>>,
}

impl ModelLayer {
    /// `model` as a layer.
    pub fn new(model: Sequential) -> ModelLayer {
        ModelLayer {
            model,
            keras_keys: None,
        }
    }
    /// The model inside.
    pub fn model(&self) -> &Sequential {
        &self.model
    }
    /// The model inside, to change it.
    pub fn model_mut(&mut self) -> &mut Sequential {
        &mut self.model
    }
    /// Takes the model out.
    pub fn into_inner(self) -> Sequential {
        self.model
    }
}

impl Layer for ModelLayer {
    fn name(&self) -> &str {
        &self.model.name
    }
    fn set_name(&mut self, name: &str) {
        self.model.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        if self.model.is_functional() {
            "Functional"
        } else {
            "Sequential"
        }
    }
    fn build(&mut self, input_shape: &[usize], device: &Device) -> Result<()> {
        self.model.build(input_shape, device)
    }
    fn built(&self) -> bool {
        self.model.input_shape.is_some() && self.model.layers.iter().all(|l| l.built())
    }
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        self.model.check_pushed()?;
        match &self.model.graph {
            Some(g) => {
                let (&[_], &[out]) = (g.inputs.as_slice(), g.outputs.as_slice()) else {
                    return Err(Error::arg(
                        "ModelLayer",
                        format!(
                            "model {} takes {} inputs and gives {} outputs; as a layer it takes one and gives one",
                            self.model.name,
                            g.inputs.len(),
                            g.outputs.len()
                        ),
                    ));
                };
                if input_shape != g.input_shape() {
                    return Err(Error::shape(
                        "ModelLayer",
                        &[input_shape, g.input_shape()],
                        format!("model {} takes examples of its Input's shape", self.model.name),
                    ));
                }
                Ok(g.nodes.get(out).map(|n| n.shape.clone()).unwrap_or_default())
            }
            None => {
                let mut s = input_shape.to_vec();
                for l in &self.model.layers {
                    s = l.output_shape(&s)?;
                }
                Ok(s)
            }
        }
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        Model::call(&mut self.model, x, training)
    }
    fn weights(&self) -> Vec<(&'static str, Variable)> {
        self.model.layers.iter().flat_map(|l| l.weights()).collect()
    }
    fn weight_paths(&self) -> Vec<(String, Variable)> {
        self.model
            .layers
            .iter()
            .flat_map(|l| {
                l.weight_paths()
                    .into_iter()
                    .map(|(p, v)| (format!("{}/{p}", l.name()), v))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
    fn set_trainable(&mut self, trainable: bool) -> Result<()> {
        self.model.set_trainable(trainable)
    }
    fn trainable(&self) -> bool {
        self.model.trainable()
    }
    fn keras_config(&self) -> Result<serde_json::Value> {
        let input = self.model.input_shape.clone().ok_or_else(|| {
            Error::arg(
                "ModelLayer",
                format!("model {} is not built: its input shape is unknown", self.model.name),
            )
        })?;
        let mut entry = super::keras::model_entry(&self.model, &input)?;
        Ok(entry["config"].take())
    }
    fn keras_module(&self) -> (&'static str, Option<&'static str>) {
        if self.model.is_functional() {
            ("keras.src.models.functional", Some("Functional"))
        } else {
            ("keras", None)
        }
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// Every model exports its inference pass (`Model::serving_function`) as
/// `serving_default`, its weights named `<layer>/<weight>`.
impl<M: Model> crate::io::saved_model::Exportable for M {
    fn signatures(&mut self) -> Result<Vec<(String, ConcreteFunction)>> {
        let f = self.serving_function()?;
        Ok(vec![(crate::io::saved_model::DEFAULT_SIGNATURE.to_string(), f)])
    }
    fn variable_names(&self) -> Vec<(String, Variable)> {
        self.export_names()
    }
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new()
    }
}

/// Under a float16 or bfloat16 policy the last layer computes in 16 bits;
/// the model's output (and so the loss) is f32.
fn f32_output(h: Tensor) -> Result<Tensor> {
    if !h.dtype().is_half() {
        return Ok(h);
    }
    let logits = h.logits().cloned();
    let h = h.cast(DType::F32)?;
    Ok(match logits {
        Some(l) => h.with_logits(&l),
        None => h,
    })
}

impl Model for Sequential {
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.check_pushed()?;
        if let Some(g) = &self.graph
            && (g.inputs.len() != 1 || g.outputs.len() != 1)
        {
            return Err(Error::arg(
                "Model.call",
                format!(
                    "functional model {} takes {} inputs and gives {} outputs: use call_many and predict_many",
                    self.name,
                    g.inputs.len(),
                    g.outputs.len()
                ),
            ));
        }
        let mut out = self.call_many(std::slice::from_ref(x), training)?;
        out.pop()
            .ok_or_else(|| Error::arg("Model.call", "the model gave no output"))
    }

    fn call_many(&mut self, xs: &[Tensor], training: bool) -> Result<Vec<Tensor>> {
        self.check_pushed()?;
        if let (None, [x]) = (&self.input_shape, xs)
            && x.rank() >= 1
        {
            self.input_shape = Some(x.shape()[1..].to_vec());
        }
        let hs = match &self.graph {
            Some(g) => g.call(&mut self.layers, xs, training)?,
            None => {
                let [x] = xs else {
                    return Err(Error::arg(
                        "Model.call",
                        format!("model {} takes one input, {} given", self.name, xs.len()),
                    ));
                };
                let mut h = x.clone();
                for l in self.layers.iter_mut() {
                    h = l.call(&h, training)?;
                }
                vec![h]
            }
        };
        hs.into_iter().map(f32_output).collect()
    }

    fn input_shapes(&self) -> Option<Vec<Vec<usize>>> {
        match &self.graph {
            Some(g) => Some(g.input_shapes()),
            None => self.input_shape.clone().map(|s| vec![s]),
        }
    }

    fn output_names(&self) -> Vec<String> {
        let Some(g) = self.graph.as_ref().filter(|g| g.outputs.len() > 1) else {
            return vec!["output_0".into()];
        };
        // The layer making each output (an input passed through: the
        // input's name); a name given twice gets `_1`, `_2`, ... as
        // tf.keras numbered them.
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        g.outputs
            .iter()
            .enumerate()
            .map(|(k, &o)| {
                let node = g.nodes.get(o);
                let base = match node.and_then(|n| n.layer) {
                    Some(l) => self.layers.get(l).map(|l| l.name().to_string()),
                    None => g
                        .inputs
                        .iter()
                        .position(|&i| i == o)
                        .and_then(|i| g.input_names.get(i).cloned()),
                }
                .unwrap_or_else(|| format!("output_{k}"));
                let n = seen.entry(base.clone()).or_insert(0);
                *n += 1;
                if *n == 1 { base } else { format!("{base}_{}", *n - 1) }
            })
            .collect()
    }

    fn input_names(&self) -> Vec<String> {
        match &self.graph {
            Some(g) if g.inputs.len() > 1 => g.input_names.clone(),
            _ => vec!["inputs".into()],
        }
    }

    fn named_variables(&self) -> Vec<(String, Variable)> {
        let mut v = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (n, var) in l.weight_paths() {
                v.push((format!("layers/{i}/{n}"), var));
            }
        }
        v
    }

    fn compiled(&mut self) -> &mut Option<Compiled> {
        &mut self.compiled
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn summary_layers(&self) -> (Vec<&dyn Layer>, Option<Vec<usize>>) {
        (
            self.layers.iter().map(|l| l.as_ref()).collect(),
            self.input_shape.clone(),
        )
    }

    fn summary_connections(&self) -> Option<Vec<(Vec<usize>, Vec<String>)>> {
        let g = self.graph.as_ref()?;
        let names: Vec<String> = self.layers.iter().map(|l| l.name().to_string()).collect();
        let rows = (0..self.layers.len())
            .map(|l| {
                let mut shape = Vec::new();
                let mut from = Vec::new();
                for (k, (_, n)) in g.nodes_of(l).enumerate() {
                    if k == 0 {
                        shape = n.shape.clone();
                    }
                    for &j in &n.inputs {
                        if let Ok((name, node)) = g.history(j, &names) {
                            from.push(format!("{name}[{node}][0]"));
                        }
                    }
                }
                (shape, from)
            })
            .collect();
        Some(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::layers::Dense;
    use crate::nn::losses::SparseCategoricalCrossentropy;
    use crate::nn::metrics::SparseCategoricalAccuracy;
    use crate::nn::optimizers::SGD;
    use crate::{DType, ops};

    /// Like Keras' `train_function` / `test_function` / `predict_function`:
    /// `fit`, `evaluate` and `predict` trace their step once per input
    /// signature, not once per call or epoch.
    #[test]
    fn fit_and_evaluate_keep_their_traced_steps() {
        let d = Device::Cpu;
        let x = ops::random_normal(&[32, 4], 0.0, 1.0, DType::F32, 1, &d).unwrap();
        let y = x.argmax(-1).unwrap();
        let mut m = Sequential::new().add(Dense::new(4));
        m.build(&[4], &d).unwrap();
        m.compile(
            SGD::new(0.1),
            SparseCategoricalCrossentropy::new(true),
            SparseCategoricalAccuracy::new(),
        );
        let args = |batch_size| FitArgs {
            epochs: 3,
            batch_size,
            validation_data: Some((x.clone(), y.clone())),
            verbose: false,
            device: Some(Device::Cpu),
            ..FitArgs::default()
        };
        // 32 rows: batches of 8 have one signature, batches of 5 two (5, 2).
        m.fit(&x, &y, args(8)).unwrap();
        m.fit(&x, &y, args(5)).unwrap();
        m.fit(&x, &y, args(8)).unwrap();
        let first = m.evaluate(&x, &y, 8).unwrap();
        m.evaluate(&x, &y, 5).unwrap();
        let again = m.evaluate(&x, &y, 8).unwrap();
        assert_eq!(first, again, "evaluate resets its loss and metrics");
        m.predict(&x, 8).unwrap();
        m.predict(&x, 5).unwrap();
        m.predict(&x, 8).unwrap();
        let c = m.compiled().as_ref().unwrap();
        assert_eq!(c.predict_function.trace_count(), 3);
        assert_eq!(c.train_function.trace_count(), 3);
        // fit's validation (batches of 8 and 5) and evaluate share it.
        assert_eq!(c.test_function.trace_count(), 3);
    }
}
