//! Keras losses (`keras.losses`). Each gives one value per example
//! ([`Loss::values`], Keras' loss functions) and reduces them, times any
//! sample weights, as its [`Reduction`] says: by default the mean over the
//! batch (Keras' `sum_over_batch_size`), a scalar tensor. They are built
//! from differentiable ops ([`crate::ops`]) so a
//! [`GradientTape`](crate::autodiff::GradientTape) can take their gradient.
//!
//! [`crate::nn::model::Model::compile`] takes one; the matching accuracy is
//! in [`crate::nn::metrics`]. With `from_logits = true` the model's last
//! layer should have no activation ([`crate::nn::activations::Activation::Linear`]),
//! which is also the numerically stable choice.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// Keras' `reduction=`: how a loss turns its per-example values, each
/// multiplied by its sample weight, into the loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// `"sum_over_batch_size"` (Keras' default): the sum divided by the
    /// number of values (0 when there are none).
    #[default]
    SumOverBatchSize,
    /// `"sum"`: the sum.
    Sum,
    /// `"mean"`: Keras 3's other name for `sum_over_batch_size`.
    Mean,
    /// `"mean_with_sample_weight"`: the sum divided by the sum of the
    /// sample weights (0 where they sum to 0), by the number of values
    /// when there are none.
    MeanWithSampleWeight,
    /// `"none"` (Keras' `reduction=None`): the weighted values themselves.
    /// Training with it takes the gradient of their sum and reports their
    /// mean, as Keras on TensorFlow does.
    None,
}

impl Reduction {
    /// The name Keras gives it in a loss config (`None` is written as `"none"`).
    pub fn keras_name(self) -> &'static str {
        match self {
            Reduction::SumOverBatchSize => "sum_over_batch_size",
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
            Reduction::MeanWithSampleWeight => "mean_with_sample_weight",
            Reduction::None => "none",
        }
    }

    /// The reduction a Keras config names (`null` is `None`, as Keras reads
    /// it; Keras 2's `"auto"` is the default).
    ///
    /// Returns [`Error::InvalidArgument`] for another name.
    pub fn from_keras(name: Option<&str>) -> Result<Reduction> {
        Ok(match name {
            None | Some("none") => Reduction::None,
            Some("sum_over_batch_size" | "auto") => Reduction::SumOverBatchSize,
            Some("sum") => Reduction::Sum,
            Some("mean") => Reduction::Mean,
            Some("mean_with_sample_weight") => Reduction::MeanWithSampleWeight,
            Some(other) => {
                return Err(Error::arg(
                    "Loss",
                    format!(
                        "reduction {other:?} is not one of sum_over_batch_size, sum, mean, mean_with_sample_weight, none"
                    ),
                ));
            }
        })
    }
}

/// `keras.losses.Loss`: a scalar to minimize from labels and predictions.
/// `Send` so a compiled model can move between threads.
///
/// A custom loss implements [`Loss::values`] (one value per example; then
/// reductions and sample weights work as for the built-in ones) or only
/// [`Loss::call`] (then it cannot take sample weights).
pub trait Loss: Send {
    /// The Keras function name ("mean_squared_error", ...).
    fn name(&self) -> &'static str;
    /// Keras' loss function (`keras.losses.mean_squared_error`, ...): the
    /// unreduced, unweighted values, one per example for most losses
    /// (`y_pred`'s shape without its last axis), on `y_pred`'s device.
    ///
    /// Returns [`Error::Shape`] when the two do not fit together, and
    /// [`Error::Unimplemented`] for a custom loss that defines only `call`.
    fn values(&self, _y_true: &Tensor, _y_pred: &Tensor) -> Result<Tensor> {
        Err(Error::Unimplemented {
            what: format!("per-example values of the loss {:?}", self.name()),
            msg: "a custom loss that implements only Loss::call cannot take sample weights or another reduction; implement Loss::values".into(),
        })
    }
    /// How [`Loss::call`] reduces the values
    /// ([`Reduction::SumOverBatchSize`] unless set by [`Loss::with_reduction`]).
    fn reduction(&self) -> Reduction {
        Reduction::SumOverBatchSize
    }
    /// `loss(y_true, y_pred)`: the values reduced by [`Loss::reduction`]
    /// (by default the batch mean as a scalar) on `y_pred`'s device
    /// (`y_true` is moved there and cast to its dtype).
    ///
    /// Returns [`Error::Shape`] when the two do not fit together.
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        reduce_weighted(self.name(), &self.values(y_true, y_pred)?, None, self.reduction())
    }
    /// `loss(y_true, y_pred, sample_weight)`: each value times its weight
    /// before the reduction, as Keras' `reduce_weighted_values` does (a
    /// trailing axis of 1 on either side is squeezed or expanded, then the
    /// weights broadcast: `[batch]` weights one value per example).
    ///
    /// Returns [`Error::Shape`] when the weights do not broadcast to the
    /// values, and the errors of [`Loss::values`].
    fn call_weighted(&self, y_true: &Tensor, y_pred: &Tensor, sample_weight: Option<&Tensor>) -> Result<Tensor> {
        match sample_weight {
            None => self.call(y_true, y_pred),
            Some(w) => reduce_weighted(self.name(), &self.values(y_true, y_pred)?, Some(w), self.reduction()),
        }
    }
    /// The loss with another reduction: Keras'
    /// `MeanSquaredError(reduction="sum")` is
    /// `MeanSquaredError.with_reduction(Reduction::Sum)`.
    fn with_reduction(self, reduction: Reduction) -> Reduced<Self>
    where
        Self: Sized,
    {
        Reduced { loss: self, reduction }
    }
    /// The loss as a Keras `compile_config` entry: its name, or an object
    /// where an option (`from_logits`) differs from the name's default.
    fn keras_config(&self) -> serde_json::Value {
        self.name().into()
    }
}

/// Keras' `reduce_weighted_values`: `values` times `sample_weight` (after
/// squeezing or expanding a trailing 1 to the same rank), reduced by
/// `reduction`. A scalar is returned as it is, as Keras does. `op` names
/// the loss in errors.
///
/// Returns [`Error::Shape`] when the weights do not broadcast to the values.
pub fn reduce_weighted(
    op: &'static str,
    values: &Tensor,
    sample_weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    let (values, weight) = match sample_weight {
        None => (values.clone(), None),
        Some(w) => {
            let w = w.to_device(values.device())?.cast(values.dtype())?;
            let (v, w) = same_rank(values, &w)?;
            if crate::core::shape::broadcast(op, v.shape(), w.shape()).is_err() {
                return Err(Error::shape(
                    op,
                    &[values.shape(), w.shape()],
                    "sample_weight does not broadcast to the loss's per-example values",
                ));
            }
            (v.mul(&w)?, Some(w))
        }
    };
    if reduction == Reduction::None || values.rank() == 0 {
        return Ok(values);
    }
    match (reduction, weight) {
        (Reduction::Sum, _) => values.sum(None, false),
        (Reduction::MeanWithSampleWeight, Some(w)) => {
            // divide_no_nan, with a divisor that keeps the gradient finite.
            let total = w.sum(None, false)?;
            let zero = total.equal(&total.zeros_like()?)?;
            let safe = zero.where_(&total.ones_like()?, &total)?;
            zero.where_(&total.zeros_like()?, &values.sum(None, false)?.div(&safe)?)
        }
        // The sum over the count, 0 for no values (divide_no_nan).
        _ if values.numel() == 0 => values.sum(None, false),
        _ => values.mean(None, false),
    }
}

/// A loss with another [`Reduction`]: what [`Loss::with_reduction`] makes.
#[derive(Clone, Copy, Debug)]
pub struct Reduced<L> {
    /// The loss whose values are reduced.
    pub loss: L,
    /// How they are reduced.
    pub reduction: Reduction,
}

impl<L: Loss> Loss for Reduced<L> {
    fn name(&self) -> &'static str {
        self.loss.name()
    }
    fn values(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        self.loss.values(y_true, y_pred)
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn keras_config(&self) -> serde_json::Value {
        let mut c = self.loss.keras_config();
        if self.reduction == Reduction::SumOverBatchSize {
            return c;
        }
        if let Some(name) = c.as_str()
            && let Some(class) = class_of(name)
        {
            c = loss_config(class, name, &[], false);
        }
        if let Some(config) = c.get_mut("config").and_then(serde_json::Value::as_object_mut) {
            config.insert("reduction".into(), self.reduction.keras_name().into());
        }
        c
    }
}

/// The Keras class of a built-in loss's function name.
fn class_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "mean_squared_error" => "MeanSquaredError",
        "mean_absolute_error" => "MeanAbsoluteError",
        "mean_absolute_percentage_error" => "MeanAbsolutePercentageError",
        "mean_squared_logarithmic_error" => "MeanSquaredLogarithmicError",
        "huber" => "Huber",
        "log_cosh" => "LogCosh",
        "kl_divergence" => "KLDivergence",
        "poisson" => "Poisson",
        "hinge" => "Hinge",
        "squared_hinge" => "SquaredHinge",
        "categorical_hinge" => "CategoricalHinge",
        "cosine_similarity" => "CosineSimilarity",
        "binary_crossentropy" => "BinaryCrossentropy",
        "categorical_crossentropy" => "CategoricalCrossentropy",
        "sparse_categorical_crossentropy" => "SparseCategoricalCrossentropy",
        _ => return None,
    })
}

/// The mean over the last axis, as Keras' elementwise losses take it (a
/// scalar stays as it is).
fn mean_last(x: Tensor) -> Result<Tensor> {
    if x.rank() == 0 {
        Ok(x)
    } else {
        x.mean(Some(&[-1]), false)
    }
}

/// A loss's Keras config: its function name where every option is at
/// Keras' default, else `{class_name, config}` with the options.
fn loss_config(class: &str, name: &str, options: &[(&str, serde_json::Value)], defaults: bool) -> serde_json::Value {
    if defaults {
        return name.into();
    }
    let mut config = serde_json::json!({"name": name, "reduction": "sum_over_batch_size"});
    for (k, v) in options {
        config[*k] = v.clone();
    }
    serde_json::json!({"module": "keras.losses", "class_name": class, "config": config, "registered_name": null})
}

/// A cross-entropy's Keras config: the name when `from_logits` is false
/// and there is no label smoothing.
fn xent_config(class: &str, name: &str, from_logits: bool, label_smoothing: f64) -> serde_json::Value {
    let mut options = vec![("from_logits", from_logits.into())];
    if class != "SparseCategoricalCrossentropy" {
        options.push(("label_smoothing", label_smoothing.into()));
    }
    loss_config(class, name, &options, !from_logits && label_smoothing == 0.0)
}

impl Loss for Box<dyn Loss> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn values(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        (**self).values(y_true, y_pred)
    }
    fn reduction(&self) -> Reduction {
        (**self).reduction()
    }
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        (**self).call(y_true, y_pred)
    }
    fn call_weighted(&self, y_true: &Tensor, y_pred: &Tensor, sample_weight: Option<&Tensor>) -> Result<Tensor> {
        (**self).call_weighted(y_true, y_pred, sample_weight)
    }
    fn keras_config(&self) -> serde_json::Value {
        (**self).keras_config()
    }
}

/// Probabilities are clipped to [EPS, 1 - EPS] before logarithms, as Keras does.
const EPS: f64 = 1e-7;

/// Keras' `squeeze_or_expand_to_same_rank`: where one side has one more
/// axis, of size 1, it is squeezed, unless the other side has rank 1, which
/// is expanded instead (labels `[n]` against predictions `[n, 1]` meet as
/// `[n, 1]`, not broadcast to `[n, n]`).
pub(crate) fn same_rank(t: &Tensor, p: &Tensor) -> Result<(Tensor, Tensor)> {
    let expand = |x: &Tensor| -> Result<Tensor> {
        let mut sh = dims(x);
        sh.push(1);
        x.reshape(&sh)
    };
    let squeeze = |x: &Tensor| -> Result<Tensor> {
        let sh = dims(x);
        x.reshape(&sh[..sh.len().saturating_sub(1)])
    };
    let (rt, rp) = (t.rank(), p.rank());
    if rt == rp + 1 && t.shape().last() == Some(&1) {
        return Ok(if rp == 1 {
            (t.clone(), expand(p)?)
        } else {
            (squeeze(t)?, p.clone())
        });
    }
    if rp == rt + 1 && p.shape().last() == Some(&1) {
        return Ok(if rt == 1 {
            (expand(t)?, p.clone())
        } else {
            (t.clone(), squeeze(p)?)
        });
    }
    Ok((t.clone(), p.clone()))
}

/// `y_true` on `y_pred`'s device, in its dtype and (as Keras squeezes or
/// expands a trailing 1) of its shape; any other difference is an error.
fn paired(name: &'static str, t: &Tensor, p: &Tensor) -> Result<(Tensor, Tensor)> {
    let (t, p) = same_rank(t, p)?;
    if t.shape() != p.shape() {
        return Err(Error::shape(
            name,
            &[t.shape(), p.shape()],
            "y_true and y_pred must have the same shape",
        ));
    }
    Ok((as_pred_dtype(&t, &p)?, p))
}

fn dims(t: &Tensor) -> Vec<isize> {
    t.shape().iter().map(|&d| d as isize).collect()
}

fn as_pred_dtype(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    y_true.to_device(y_pred.device())?.cast(y_pred.dtype())
}

/// `keras.losses.MeanSquaredError`: `mean((y_true - y_pred)^2)` over every
/// element; `y_true` and `y_pred` have the same shape.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeanSquaredError;

impl Loss for MeanSquaredError {
    fn name(&self) -> &'static str {
        "mean_squared_error"
    }
    fn values(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        let (t, p) = paired(self.name(), y_true, y_pred)?;
        mean_last(t.squared_difference(&p)?)
    }
}

/// `keras.losses.MeanAbsoluteError`: `mean(|y_true - y_pred|)` over every
/// element; `y_true` and `y_pred` have the same shape.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeanAbsoluteError;

impl Loss for MeanAbsoluteError {
    fn name(&self) -> &'static str {
        "mean_absolute_error"
    }
    fn values(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        let (t, p) = paired(self.name(), y_true, y_pred)?;
        mean_last(t.sub(&p)?.abs()?)
    }
}

/// `keras.losses.BinaryCrossentropy`: targets in \[0, 1\] against
/// predictions of the same shape (one independent yes/no per element).
#[derive(Clone, Copy, Debug, Default)]
pub struct BinaryCrossentropy {
    /// `y_pred` are logits (Keras' default is false: probabilities, clipped
    /// to \[1e-7, 1 - 1e-7\] before the logarithm).
    pub from_logits: bool,
    /// Targets move toward 0.5 by this fraction: `y (1 - s) + 0.5 s`
    /// (Keras' default 0).
    pub label_smoothing: f64,
}

impl BinaryCrossentropy {
    /// `BinaryCrossentropy(from_logits=...)`.
    pub fn new(from_logits: bool) -> Self {
        BinaryCrossentropy {
            from_logits,
            label_smoothing: 0.0,
        }
    }
    /// `label_smoothing=s`, in \[0, 1\].
    pub fn label_smoothing(self, s: f64) -> Self {
        BinaryCrossentropy {
            label_smoothing: s,
            ..self
        }
    }
}

impl Loss for BinaryCrossentropy {
    fn name(&self) -> &'static str {
        "binary_crossentropy"
    }
    fn keras_config(&self) -> serde_json::Value {
        xent_config(
            "BinaryCrossentropy",
            "binary_crossentropy",
            self.from_logits,
            self.label_smoothing,
        )
    }
    fn values(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        smoothing(self.name(), self.label_smoothing)?;
        let scores = scores_of(y_pred, self.from_logits)?;
        let (z, y_pred) = paired(self.name(), y_true, y_pred)?;
        let y_pred = &y_pred;
        let s = self.label_smoothing;
        let z = if s > 0.0 {
            z.mul_scalar(1.0 - s)?.add_scalar(0.5 * s)?
        } else {
            z
        };
        let l = if let Some(x) = &scores {
            let x = &x.reshape(&dims(y_pred))?;
            // max(x, 0) - x z + log(1 + exp(-|x|)), stable for any x
            x.relu()?.sub(&x.mul(&z)?)?.add(&x.abs()?.neg()?.exp()?.log1p()?)?
        } else {
            let p = clip(y_pred)?;
            let one = p.ones_like()?;
            z.mul(&p.log()?)?.add(&one.sub(&z)?.mul(&one.sub(&p)?.log()?)?)?.neg()?
        };
        mean_last(l)
    }
}

/// The logits behind `y_pred`: itself with `from_logits`, else those a
/// softmax or sigmoid activation recorded on it (Keras 3 does the same
/// through `_keras_logits`, so saturated probabilities still train), in
/// `y_pred`'s dtype; `None` means probabilities.
fn scores_of(y_pred: &Tensor, from_logits: bool) -> Result<Option<Tensor>> {
    if from_logits {
        return Ok(Some(y_pred.clone()));
    }
    match y_pred.logits() {
        Some(l) if l.shape() == y_pred.shape() && l.device() == y_pred.device() => {
            Ok(Some(if l.dtype() == y_pred.dtype() {
                l.clone()
            } else {
                l.cast(y_pred.dtype())?
            }))
        }
        _ => Ok(None),
    }
}

/// A label smoothing outside \[0, 1\] (or NaN) is an error.
fn smoothing(name: &'static str, s: f64) -> Result<()> {
    if (0.0..=1.0).contains(&s) {
        Ok(())
    } else {
        Err(Error::arg(name, format!("label_smoothing must be in [0, 1], got {s}")))
    }
}

fn clip(p: &Tensor) -> Result<Tensor> {
    p.maximum(&p.scalar_like(EPS)?)?.minimum(&p.scalar_like(1.0 - EPS)?)
}

/// `keras.losses.CategoricalCrossentropy`: one-hot (or soft) targets
/// `[batch, classes]` against scores of the same shape, over the last axis.
#[derive(Clone, Copy, Debug, Default)]
pub struct CategoricalCrossentropy {
    /// `y_pred` are logits (Keras' default is false: probabilities, which
    /// are renormalized to sum to 1 and clipped, as Keras does).
    pub from_logits: bool,
    /// Targets move toward uniform by this fraction: `y (1 - s) + s /
    /// classes` (Keras' default 0).
    pub label_smoothing: f64,
}

impl CategoricalCrossentropy {
    /// `CategoricalCrossentropy(from_logits=...)`.
    pub fn new(from_logits: bool) -> Self {
        CategoricalCrossentropy {
            from_logits,
            label_smoothing: 0.0,
        }
    }
    /// `label_smoothing=s`, in \[0, 1\].
    pub fn label_smoothing(self, s: f64) -> Self {
        CategoricalCrossentropy {
            label_smoothing: s,
            ..self
        }
    }
}

impl Loss for CategoricalCrossentropy {
    fn name(&self) -> &'static str {
        "categorical_crossentropy"
    }
    fn keras_config(&self) -> serde_json::Value {
        xent_config(
            "CategoricalCrossentropy",
            "categorical_crossentropy",
            self.from_logits,
            self.label_smoothing,
        )
    }
    fn values(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        smoothing(self.name(), self.label_smoothing)?;
        if y_true.shape() != y_pred.shape() || y_pred.rank() == 0 {
            return Err(Error::shape(
                self.name(),
                &[y_true.shape(), y_pred.shape()],
                "y_true and y_pred must have the same shape, [batch, classes]",
            ));
        }
        let z = as_pred_dtype(y_true, y_pred)?;
        let s = self.label_smoothing;
        let classes = y_pred.shape().last().copied().unwrap_or(1) as f64;
        let z = if s > 0.0 {
            z.mul_scalar(1.0 - s)?.add_scalar(s / classes)?
        } else {
            z
        };
        let logp = if let Some(x) = scores_of(y_pred, self.from_logits)? {
            softmax::log_softmax(&x, -1)?
        } else {
            // Keras normalizes the probabilities before clipping.
            let p = y_pred.div(&y_pred.sum(Some(&[-1]), true)?)?;
            clip(&p)?.log()?
        };
        z.mul(&logp)?.sum(Some(&[-1]), false)?.neg()
    }
}

/// `keras.losses.SparseCategoricalCrossentropy`: integer labels `[batch]`
/// (or `[batch, 1]`) against scores `[batch, classes]`. Labels outside
/// `[0, classes)` are an error (on a GPU, at the next readback).
#[derive(Clone, Copy, Debug, Default)]
pub struct SparseCategoricalCrossentropy {
    /// `y_pred` are logits (Keras' default is false: probabilities, whose
    /// clipped logarithms are then used as logits, as TF does).
    pub from_logits: bool,
}

impl SparseCategoricalCrossentropy {
    /// `SparseCategoricalCrossentropy(from_logits=...)`.
    pub fn new(from_logits: bool) -> Self {
        SparseCategoricalCrossentropy { from_logits }
    }
}

impl Loss for SparseCategoricalCrossentropy {
    fn name(&self) -> &'static str {
        "sparse_categorical_crossentropy"
    }
    fn keras_config(&self) -> serde_json::Value {
        xent_config(
            "SparseCategoricalCrossentropy",
            "sparse_categorical_crossentropy",
            self.from_logits,
            0.0,
        )
    }
    fn values(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        if y_pred.rank() != 2 || (y_true.rank() != 1 && !(y_true.rank() == 2 && y_true.shape()[1] == 1)) {
            return Err(Error::shape(
                self.name(),
                &[y_true.shape(), y_pred.shape()],
                "needs labels [batch] and scores [batch, classes]",
            ));
        }
        if y_true.shape()[0] != y_pred.shape()[0] {
            return Err(Error::shape(
                self.name(),
                &[y_true.shape(), y_pred.shape()],
                "labels and scores differ in batch size",
            ));
        }
        let labels = y_true.to_device(y_pred.device())?.reshape(&[-1])?;
        let labels = if labels.dtype() == DType::I32 {
            labels
        } else {
            labels.cast(DType::I32)?
        };
        // From probabilities TF takes log(clip(p)) as logits; softmax then
        // renormalizes them.
        let logits = match scores_of(y_pred, self.from_logits)? {
            Some(x) => x,
            None => clip(y_pred)?.log()?,
        };
        softmax::sparse_softmax_cross_entropy_with_logits(&labels, &logits)
    }
}

/// The Keras losses of one value per example from `y_true` and `y_pred`
/// of the same shape (after Keras' trailing-1 squeeze or expand): `f`
/// gives the per-example values (elementwise terms are averaged over the
/// last axis, as Keras' functions do). Each keeps its options and writes them to its Keras config.
macro_rules! pairwise_loss {
    (@def $(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;
    };
    (@def $(#[$doc:meta])* $name:ident($($opt:ident: $t:ty = $def:expr),*)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            $(
                #[doc = concat!("`", stringify!($opt), "` (Keras' default ", stringify!($def), ").")]
                pub $opt: $t,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($opt: $def),* }
            }
        }
    };
    ($(#[$doc:meta])* $name:ident $(($($opt:ident: $t:ty = $def:expr),*))?, $class:literal, $fname:literal,
     |$s:ident, $yt:ident, $yp:ident| $body:expr) => {
        pairwise_loss!(@def $(#[$doc])* $name $(($($opt: $t = $def),*))?);

        impl Loss for $name {
            fn name(&self) -> &'static str {
                $fname
            }
            fn keras_config(&self) -> serde_json::Value {
                let options: Vec<(&str, serde_json::Value)> = vec![$($((stringify!($opt), self.$opt.into())),*)?];
                let defaults = true $($(&& self.$opt == $def)*)?;
                loss_config($class, $fname, &options, defaults)
            }
            fn values(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
                let ($yt, $yp) = paired(self.name(), y_true, y_pred)?;
                let $s = self;
                let per: Tensor = $body;
                Ok(per)
            }
        }
    };
}

pairwise_loss!(
    /// `keras.losses.Huber`: squared error within `delta`, linear beyond:
    /// `0.5 e^2` where `|e| <= delta`, else `delta |e| - 0.5 delta^2`.
    Huber(delta: f64 = 1.0), "Huber", "huber", |s, t, p| {
        let e = p.sub(&t)?;
        let a = e.abs()?;
        let near = a.less_equal(&a.scalar_like(s.delta)?)?;
        let quad = e.square()?.mul_scalar(0.5)?;
        let lin = a.mul_scalar(s.delta)?.add_scalar(-0.5 * s.delta * s.delta)?;
        mean_last(near.where_(&quad, &lin)?)?
    }
);

pairwise_loss!(
    /// `keras.losses.LogCosh`: `log(cosh(y_pred - y_true))`, computed as
    /// `x + softplus(-2x) - log 2` so that it never overflows.
    LogCosh, "LogCosh", "log_cosh", |_s, t, p| {
        let x = p.sub(&t)?;
        mean_last(x.add(&x.mul_scalar(-2.0)?.softplus()?)?.add_scalar(-std::f64::consts::LN_2)?)?
    }
);

pairwise_loss!(
    /// `keras.losses.MeanSquaredLogarithmicError`:
    /// `(log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1))^2`.
    MeanSquaredLogarithmicError, "MeanSquaredLogarithmicError", "mean_squared_logarithmic_error", |_s, t, p| {
        let l = |x: &Tensor| x.maximum(&x.scalar_like(EPS)?)?.add_scalar(1.0)?.log();
        mean_last(l(&p)?.squared_difference(&l(&t)?)?)?
    }
);

pairwise_loss!(
    /// `keras.losses.MeanAbsolutePercentageError`:
    /// `100 |y_true - y_pred| / max(|y_true|, eps)`.
    MeanAbsolutePercentageError, "MeanAbsolutePercentageError", "mean_absolute_percentage_error", |_s, t, p| {
        let a = t.abs()?;
        mean_last(t.sub(&p)?.div(&a.maximum(&a.scalar_like(EPS)?)?)?.abs()?.mul_scalar(100.0)?)?
    }
);

pairwise_loss!(
    /// `keras.losses.KLDivergence`: `sum(y_true log(y_true / y_pred))` over
    /// the last axis, both clipped to \[1e-7, 1\].
    KLDivergence, "KLDivergence", "kl_divergence", |_s, t, p| {
        let c = |x: &Tensor| x.maximum(&x.scalar_like(EPS)?)?.minimum(&x.scalar_like(1.0)?);
        let (t, p) = (c(&t)?, c(&p)?);
        t.mul(&t.div(&p)?.log()?)?.sum(Some(&[-1]), false)?
    }
);

pairwise_loss!(
    /// `keras.losses.Poisson`: `y_pred - y_true log(y_pred + eps)`.
    Poisson, "Poisson", "poisson", |_s, t, p| {
        mean_last(p.sub(&t.mul(&p.add_scalar(EPS)?.log()?)?)?)?
    }
);

pairwise_loss!(
    /// `keras.losses.Hinge`: `max(1 - y_true y_pred, 0)`, labels -1 or 1
    /// (labels that are all 0 or 1 become -1 or 1, as Keras does).
    Hinge, "Hinge", "hinge", |_s, t, p| {
        let t = hinge_labels(&t)?;
        mean_last(t.mul(&p)?.neg()?.add_scalar(1.0)?.relu()?)?
    }
);

pairwise_loss!(
    /// `keras.losses.SquaredHinge`: `max(1 - y_true y_pred, 0)^2`, labels as
    /// for [`Hinge`].
    SquaredHinge, "SquaredHinge", "squared_hinge", |_s, t, p| {
        let t = hinge_labels(&t)?;
        mean_last(t.mul(&p)?.neg()?.add_scalar(1.0)?.relu()?.square()?)?
    }
);

pairwise_loss!(
    /// `keras.losses.CategoricalHinge`: `max(max((1 - y_true) y_pred) -
    /// sum(y_true y_pred) + 1, 0)` over the last axis.
    CategoricalHinge, "CategoricalHinge", "categorical_hinge", |_s, t, p| {
        let pos = t.mul(&p)?.sum(Some(&[-1]), false)?;
        let neg = t.neg()?.add_scalar(1.0)?.mul(&p)?.max(Some(&[-1]), false)?;
        neg.sub(&pos)?.add_scalar(1.0)?.relu()?
    }
);

pairwise_loss!(
    /// `keras.losses.CosineSimilarity`: minus the cosine of the angle
    /// between `y_true` and `y_pred` along `axis` (each scaled by
    /// `min(1 / norm, 1e7)`, so zero vectors give 0).
    CosineSimilarity(axis: i64 = -1), "CosineSimilarity", "cosine_similarity", |s, t, p| {
        let ax = [s.axis as isize];
        let unit = |x: &Tensor| -> Result<Tensor> {
            let inv = x.square()?.sum(Some(&ax), true)?.rsqrt()?;
            x.mul(&inv.minimum(&inv.scalar_like(1.0 / EPS)?)?)
        };
        unit(&t)?.mul(&unit(&p)?)?.sum(Some(&ax), false)?.neg()?
    }
);

/// Keras' `convert_binary_labels_to_hinge`: labels that are all 0 or 1
/// become -1 or 1; others stay. Decided on the device (no readback).
fn hinge_labels(t: &Tensor) -> Result<Tensor> {
    let binary = t
        .equal(&t.zeros_like()?)?
        .logical_or(&t.equal(&t.ones_like()?)?)?
        .cast(t.dtype())?
        .min(None, false)?
        .greater(&t.scalar_like(0.5)?)?;
    binary.where_(&t.mul_scalar(2.0)?.add_scalar(-1.0)?, t)
}
