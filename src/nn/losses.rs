//! Keras losses (`keras.losses`). Each returns the mean over the batch
//! (Keras' `sum_over_batch_size` reduction) as a scalar tensor, built from
//! differentiable ops ([`crate::ops`]) so a
//! [`GradientTape`](crate::autodiff::GradientTape) can take its gradient.
//!
//! [`crate::nn::model::Model::compile`] takes one; the matching accuracy is
//! in [`crate::nn::metrics`]. With `from_logits = true` the model's last
//! layer should have no activation ([`crate::nn::activations::Activation::Linear`]),
//! which is also the numerically stable choice.

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// `keras.losses.Loss`: a scalar to minimize from labels and predictions.
/// Implement it for a custom loss; `Send` so a compiled model can move
/// between threads.
pub trait Loss: Send {
    /// The Keras function name ("mean_squared_error", ...).
    fn name(&self) -> &'static str;
    /// `loss(y_true, y_pred)`: the batch mean as a scalar on `y_pred`'s
    /// device (`y_true` is moved there and cast to its dtype).
    ///
    /// Returns [`Error::Shape`] when the two do not fit together.
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor>;
    /// The loss as a Keras `compile_config` entry: its name, or an object
    /// where an option (`from_logits`) differs from the name's default.
    fn keras_config(&self) -> serde_json::Value {
        self.name().into()
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
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        (**self).call(y_true, y_pred)
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
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        let (t, p) = paired(self.name(), y_true, y_pred)?;
        t.squared_difference(&p)?.mean(None, false)
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
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        let (t, p) = paired(self.name(), y_true, y_pred)?;
        t.sub(&p)?.abs()?.mean(None, false)
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
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
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
        l.mean(None, false)
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
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
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
        z.mul(&logp)?.sum(Some(&[-1]), false)?.neg()?.mean(None, false)
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
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
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
        softmax::sparse_softmax_cross_entropy_with_logits(&labels, &logits)?.mean(None, false)
    }
}

/// The Keras losses of one value per example from `y_true` and `y_pred`
/// of the same shape (after Keras' trailing-1 squeeze or expand): `f`
/// gives the per-element or per-example terms, whose batch mean is the
/// loss. Each keeps its options and writes them to its Keras config.
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
            fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
                let ($yt, $yp) = paired(self.name(), y_true, y_pred)?;
                let $s = self;
                let per: Tensor = $body;
                per.mean(None, false)
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
        near.where_(&quad, &lin)?
    }
);

pairwise_loss!(
    /// `keras.losses.LogCosh`: `log(cosh(y_pred - y_true))`, computed as
    /// `x + softplus(-2x) - log 2` so that it never overflows.
    LogCosh, "LogCosh", "log_cosh", |_s, t, p| {
        let x = p.sub(&t)?;
        x.add(&x.mul_scalar(-2.0)?.softplus()?)?.add_scalar(-std::f64::consts::LN_2)?
    }
);

pairwise_loss!(
    /// `keras.losses.MeanSquaredLogarithmicError`:
    /// `(log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1))^2`.
    MeanSquaredLogarithmicError, "MeanSquaredLogarithmicError", "mean_squared_logarithmic_error", |_s, t, p| {
        let l = |x: &Tensor| x.maximum(&x.scalar_like(EPS)?)?.add_scalar(1.0)?.log();
        l(&p)?.squared_difference(&l(&t)?)?
    }
);

pairwise_loss!(
    /// `keras.losses.MeanAbsolutePercentageError`:
    /// `100 |y_true - y_pred| / max(|y_true|, eps)`.
    MeanAbsolutePercentageError, "MeanAbsolutePercentageError", "mean_absolute_percentage_error", |_s, t, p| {
        let a = t.abs()?;
        t.sub(&p)?.div(&a.maximum(&a.scalar_like(EPS)?)?)?.abs()?.mul_scalar(100.0)?
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
        p.sub(&t.mul(&p.add_scalar(EPS)?.log()?)?)?
    }
);

pairwise_loss!(
    /// `keras.losses.Hinge`: `max(1 - y_true y_pred, 0)`, labels -1 or 1
    /// (labels that are all 0 or 1 become -1 or 1, as Keras does).
    Hinge, "Hinge", "hinge", |_s, t, p| {
        let t = hinge_labels(&t)?;
        t.mul(&p)?.neg()?.add_scalar(1.0)?.relu()?
    }
);

pairwise_loss!(
    /// `keras.losses.SquaredHinge`: `max(1 - y_true y_pred, 0)^2`, labels as
    /// for [`Hinge`].
    SquaredHinge, "SquaredHinge", "squared_hinge", |_s, t, p| {
        let t = hinge_labels(&t)?;
        t.mul(&p)?.neg()?.add_scalar(1.0)?.relu()?.square()?
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
