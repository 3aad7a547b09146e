//! Stateful Keras metrics (`keras.metrics`). State accumulates on the device
//! of the values (no readback per batch); `result` reads it back. Totals
//! are non-trainable variables updated by assignment, so a step traced by
//! [`mod@crate::function`] keeps updating them on every replay.
//!
//! [`crate::nn::model::Model::compile`] takes them as [`Metrics`]; `fit`
//! reports them after the loss of [`crate::nn::losses`] and hands them to
//! [`crate::nn::callbacks`].

mod fscore;
mod iou;
pub use fscore::{Average, F1Score, FBetaScore};
pub use iou::{IoU, MAX_CLASSES};

use super::losses::{Loss, same_rank};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops;
use crate::tensor::{Tensor, Variable};

/// `keras.metrics.Metric`: a value accumulated over batches. Implement it
/// for a custom metric; keep the state in variables updated with tensor
/// ops, so that traced steps update it too.
pub trait Metric: Send {
    /// The key in logs and [`History`](crate::nn::History) ("accuracy", ...).
    fn name(&self) -> &str;
    /// Accumulates one batch, without reading anything back.
    ///
    /// Returns [`Error::Shape`] when `y_true` and `y_pred` do not fit together.
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()>;
    /// `update_state(y_true, y_pred, sample_weight)`: each example counts
    /// by its weight, as in Keras' weighted metrics (`[batch]` weights, or
    /// weights that broadcast to the metric's values); without weights it
    /// is [`Metric::update_state`].
    ///
    /// Returns [`Error::Unimplemented`] for a metric with no weighted form
    /// (a custom one that does not implement this), and
    /// [`Error::Shape`] when the weights do not fit the values.
    fn update_state_weighted(
        &mut self,
        y_true: &Tensor,
        y_pred: &Tensor,
        sample_weight: Option<&Tensor>,
    ) -> Result<()> {
        match sample_weight {
            None => self.update_state(y_true, y_pred),
            Some(_) => Err(Error::Unimplemented {
                what: format!("sample weights for the metric {:?}", self.name()),
                msg: "the metric does not implement Metric::update_state_weighted".into(),
            }),
        }
    }
    /// The value so far (0 before any update); reads the state back, which
    /// waits for the device.
    fn result(&self) -> Result<f64>;
    /// Starts over (at the beginning of each epoch and `evaluate`).
    fn reset_state(&mut self);
    /// The metric as a Keras `compile_config` entry (a name Keras resolves
    /// or a `{class_name, config}` object); `None` leaves it out of saved
    /// files.
    fn keras_config(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Running sum and count of per-example values, as two f32 variables (as
/// Keras keeps them): updates are assignments, so a traced step that updates
/// a metric keeps updating it on every replay. Created on the first update,
/// on the device of the values.
#[derive(Default)]
struct Totals {
    state: Option<(Variable, Variable)>,
}

impl Totals {
    fn add(&mut self, values: &Tensor) -> Result<()> {
        let v = values.cast(DType::F32)?;
        let s = v.sum(None, false)?;
        let n = ops::full(&[], v.numel() as f64, DType::F32, s.device())?;
        self.accumulate(&s, &n)
    }
    /// Adds the scalars `s` to the total and `n` to the count.
    fn accumulate(&mut self, s: &Tensor, n: &Tensor) -> Result<()> {
        let (total, count) = self.vars(s.device())?;
        let dev = total.device();
        total.assign(&total.value().add(&s.to_device(&dev)?)?)?;
        count.assign(&count.value().add(&n.to_device(&dev)?)?)
    }
    /// Adds `values` weighted as Keras' `Mean` does: the values averaged
    /// down to the weights' rank, each multiplied by its weight, the count
    /// growing by the weights' sum (weights of rank > 1 averaged per
    /// example). `op` names the metric in errors.
    fn add_weighted(&mut self, op: &'static str, values: &Tensor, weight: Option<&Tensor>) -> Result<()> {
        let Some(w) = weight else {
            return self.add(values);
        };
        let v = values.cast(DType::F32)?;
        let w = w.to_device(v.device())?.cast(DType::F32)?;
        let (mut v, w) = same_rank(&v, &w)?;
        let (wr, vr) = (w.rank(), v.rank());
        if vr > wr {
            let axes: Vec<isize> = (wr as isize..vr as isize).collect();
            v = v.mean(Some(&axes), false)?;
        }
        if crate::core::shape::broadcast(op, v.shape(), w.shape()).ok().as_deref() != Some(v.shape()) {
            return Err(Error::shape(
                op,
                &[values.shape(), w.shape()],
                "sample_weight does not broadcast to the metric's values",
            ));
        }
        let w = w.broadcast_to(v.shape())?;
        let per_example = |x: Tensor| -> Result<Tensor> {
            if x.rank() > 1 {
                let axes: Vec<isize> = (1..x.rank() as isize).collect();
                x.mean(Some(&axes), false)?.sum(None, false)
            } else {
                x.sum(None, false)
            }
        };
        self.accumulate(&per_example(v.mul(&w)?)?, &per_example(w)?)
    }
    /// Adds `n` values whose mean is the scalar `m`.
    fn add_mean(&mut self, m: &Tensor, n: usize) -> Result<()> {
        let total = m.cast(DType::F32)?.mul_scalar(n as f64)?;
        let (t, c) = self.vars(total.device())?;
        let dev = t.device();
        t.assign(&t.value().add(&total.to_device(&dev)?)?)?;
        let n = ops::full(&[], n as f64, DType::F32, &dev)?;
        c.assign(&c.value().add(&n)?)
    }
    fn vars(&mut self, device: &crate::runtime::Device) -> Result<&(Variable, Variable)> {
        if self.state.is_none() {
            let zero = || ops::zeros(&[], DType::F32, device);
            let st = (
                Variable::with_trainable(zero()?, "total", false),
                Variable::with_trainable(zero()?, "count", false),
            );
            self.state = Some(st);
        }
        self.state.as_ref().ok_or_else(|| Error::arg("metric", "no state"))
    }
    fn mean(&self) -> Result<f64> {
        match &self.state {
            Some((total, count)) => {
                let c = count.value().item()?;
                Ok(if c > 0.0 { total.value().item()? / c } else { 0.0 })
            }
            None => Ok(0.0),
        }
    }
    /// Zeroes the state in place: traced steps keep the same variables.
    fn reset(&mut self) {
        if let Some((total, count)) = &self.state {
            for v in [total, count] {
                let zero = ops::zeros(&[], DType::F32, &v.device());
                if let Ok(z) = zero {
                    let _ = v.assign(&z);
                }
            }
        }
    }
}

/// `keras.metrics.Mean`: the mean of every value seen.
pub struct Mean {
    name: String,
    totals: Totals,
}

impl Mean {
    /// `keras.metrics.Mean(name)`.
    pub fn new(name: &str) -> Mean {
        Mean {
            name: name.into(),
            totals: Totals::default(),
        }
    }
    /// Adds values (any shape).
    pub fn update(&mut self, values: &Tensor) -> Result<()> {
        crate::autodiff::without_recording(|| self.totals.add(values))
    }
}

impl Metric for Mean {
    fn name(&self) -> &str {
        &self.name
    }
    /// For `Mean` the "prediction" is the value to average; `y_true` is ignored.
    fn update_state(&mut self, _y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        self.update(y_pred)
    }
    fn update_state_weighted(&mut self, _y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        crate::autodiff::without_recording(|| self.totals.add_weighted("mean", y_pred, w))
    }
    fn result(&self) -> Result<f64> {
        self.totals.mean()
    }
    fn reset_state(&mut self) {
        self.totals.reset();
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// Keras' "accuracy": binary, sparse or categorical by the shapes.
    Auto,
    Exact,
    Binary(f64),
    SparseCategorical,
    Categorical,
}

/// The accuracy metrics: fraction of matching predictions.
pub struct Accuracy {
    name: String,
    kind: Kind,
    totals: Totals,
}

impl Accuracy {
    fn new(name: &str, kind: Kind) -> Accuracy {
        Accuracy {
            name: name.into(),
            kind,
            totals: Totals::default(),
        }
    }
    /// `metrics=["accuracy"]` in Keras' `compile`: binary accuracy where
    /// predictions have a last axis of 1, sparse categorical where labels
    /// have fewer axes (or a last axis of 1 against several classes),
    /// categorical otherwise; decided by each batch's shapes, as Keras
    /// decides by the first.
    pub fn auto() -> Accuracy {
        Accuracy::new("accuracy", Kind::Auto)
    }
    /// `keras.metrics.Accuracy`: y_pred == y_true elementwise.
    pub fn exact() -> Accuracy {
        Accuracy::new("accuracy", Kind::Exact)
    }
    /// `keras.metrics.BinaryAccuracy`: (y_pred > threshold) == y_true.
    pub fn binary(threshold: f64) -> Accuracy {
        Accuracy::new("binary_accuracy", Kind::Binary(threshold))
    }
    /// `keras.metrics.SparseCategoricalAccuracy`: argmax(y_pred) == label.
    pub fn sparse_categorical() -> Accuracy {
        Accuracy::new("sparse_categorical_accuracy", Kind::SparseCategorical)
    }
    /// `keras.metrics.CategoricalAccuracy`: argmax(y_pred) == argmax(y_true).
    pub fn categorical() -> Accuracy {
        Accuracy::new("categorical_accuracy", Kind::Categorical)
    }
    /// Renames the metric (how it shows in logs and History).
    pub fn named(mut self, name: &str) -> Accuracy {
        self.name = name.into();
        self
    }
}

/// Defines a Keras accuracy class as a named [`Accuracy`].
macro_rules! accuracy_type {
    ($(#[$doc:meta])* $name:ident() => $make:expr) => {
        $(#[$doc])*
        pub struct $name(Accuracy);

        impl Default for $name {
            fn default() -> Self {
                $name($make)
            }
        }

        impl $name {
            /// The metric with Keras' defaults.
            pub fn new() -> $name {
                $name($make)
            }
            /// Renames the metric (how it shows in logs and History).
            pub fn named(self, name: &str) -> $name {
                $name(self.0.named(name))
            }
        }

        impl Metric for $name {
            fn name(&self) -> &str {
                self.0.name()
            }
            fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
                self.0.update_state(y_true, y_pred)
            }
            fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
                self.0.update_state_weighted(y_true, y_pred, w)
            }
            fn result(&self) -> Result<f64> {
                self.0.result()
            }
            fn reset_state(&mut self) {
                self.0.reset_state()
            }
            fn keras_config(&self) -> Option<serde_json::Value> {
                self.0.keras_config()
            }
        }
    };
}

accuracy_type!(
    /// `keras.metrics.SparseCategoricalAccuracy`: argmax(y_pred) == label.
    SparseCategoricalAccuracy() => Accuracy::sparse_categorical()
);
accuracy_type!(
    /// `keras.metrics.CategoricalAccuracy`: argmax(y_pred) == argmax(y_true).
    CategoricalAccuracy() => Accuracy::categorical()
);
accuracy_type!(
    /// `keras.metrics.BinaryAccuracy(threshold=0.5)`: (y_pred > threshold) == y_true.
    BinaryAccuracy() => Accuracy::binary(0.5)
);

/// The metrics `Model::compile` takes: none (`()`), one metric, a tuple of
/// up to four, an array of one kind, or a `Vec<Box<dyn Metric>>`.
pub struct Metrics(pub Vec<Box<dyn Metric>>);

impl From<()> for Metrics {
    fn from(_: ()) -> Metrics {
        Metrics(Vec::new())
    }
}

impl From<Vec<Box<dyn Metric>>> for Metrics {
    fn from(v: Vec<Box<dyn Metric>>) -> Metrics {
        Metrics(v)
    }
}

impl<M: Metric + 'static> From<M> for Metrics {
    fn from(m: M) -> Metrics {
        Metrics(vec![Box::new(m)])
    }
}

impl<M: Metric + 'static, const N: usize> From<[M; N]> for Metrics {
    fn from(a: [M; N]) -> Metrics {
        Metrics(a.into_iter().map(|m| Box::new(m) as Box<dyn Metric>).collect())
    }
}

macro_rules! metrics_tuple {
    ($($m:ident),+) => {
        impl<$($m: Metric + 'static),+> From<($($m,)+)> for Metrics {
            #[allow(non_snake_case)]
            fn from(($($m,)+): ($($m,)+)) -> Metrics {
                Metrics(vec![$(Box::new($m) as Box<dyn Metric>),+])
            }
        }
    };
}
metrics_tuple!(A, B);
metrics_tuple!(A, B, C);
metrics_tuple!(A, B, C, D);

impl Metric for Accuracy {
    fn name(&self) -> &str {
        &self.name
    }
    fn keras_config(&self) -> Option<serde_json::Value> {
        let class = match self.kind {
            Kind::Auto => return matches!(self.name.as_str(), "accuracy" | "acc").then(|| self.name.clone().into()),
            Kind::Exact => "Accuracy",
            Kind::Binary(_) => "BinaryAccuracy",
            Kind::SparseCategorical => "SparseCategoricalAccuracy",
            Kind::Categorical => "CategoricalAccuracy",
        };
        // A name only where Keras resolves it to this very metric ("accuracy"
        // picks its kind from the data; exact match needs the class).
        let by_name = match (self.kind, self.name.as_str()) {
            (Kind::Exact | Kind::Auto, _) => false,
            (Kind::Binary(t), "binary_accuracy" | "accuracy" | "acc") => t == 0.5,
            (Kind::SparseCategorical, "sparse_categorical_accuracy" | "accuracy" | "acc") => true,
            (Kind::Categorical, "categorical_accuracy" | "accuracy" | "acc") => true,
            _ => false,
        };
        if by_name {
            return Some(self.name.clone().into());
        }
        let mut config = serde_json::json!({"name": self.name, "dtype": "float32"});
        if let Kind::Binary(t) = self.kind {
            config["threshold"] = t.into();
        }
        Some(
            serde_json::json!({"module": "keras.metrics", "class_name": class, "config": config, "registered_name": null}),
        )
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        self.update_state_weighted(y_true, y_pred, None)
    }
    fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        crate::autodiff::without_recording(|| {
            let t = y_true.to_device(y_pred.device())?;
            let kind = match self.kind {
                // compile_utils.is_binary_or_sparse_categorical
                Kind::Auto => {
                    let (tl, pl) = (t.shape().last().copied(), y_pred.shape().last().copied());
                    if pl == Some(1) {
                        Kind::Binary(0.5)
                    } else if t.rank() < y_pred.rank() || tl == Some(1) && pl.is_some_and(|p| p > 1) {
                        Kind::SparseCategorical
                    } else {
                        Kind::Categorical
                    }
                }
                k => k,
            };
            let hits = match kind {
                Kind::Exact => {
                    let (t, p) = same_rank(&t, y_pred)?;
                    t.cast(p.dtype())?.equal(&p)?
                }
                // Keras compares y_true as given with the 0/1 predictions,
                // so a soft label of 0.7 is a miss whatever the prediction.
                Kind::Binary(th) => {
                    let (t, p) = same_rank(&t, y_pred)?;
                    let p = p.greater(&p.scalar_like(th)?)?.cast(DType::F32)?;
                    t.cast(DType::F32)?.equal(&p)?
                }
                Kind::SparseCategorical => {
                    let l = t.reshape(&[-1])?;
                    if y_pred.rank() != 2 || l.numel() != y_pred.shape()[0] {
                        return Err(Error::shape(
                            "sparse_categorical_accuracy",
                            &[t.shape(), y_pred.shape()],
                            "needs labels [batch] and scores [batch, classes]",
                        ));
                    }
                    // As Keras, the class index meets the label as a float:
                    // a label of 1.5 matches no class.
                    y_pred.argmax(-1)?.cast(DType::F32)?.equal(&l.cast(DType::F32)?)?
                }
                Kind::Categorical | Kind::Auto => y_pred.argmax(-1)?.equal(&t.argmax(-1)?)?,
            };
            self.totals.add_weighted("accuracy", &hits, w)
        })
    }
    fn result(&self) -> Result<f64> {
        self.totals.mean()
    }
    fn reset_state(&mut self) {
        self.totals.reset();
    }
}

/// `keras.metrics.MeanMetricWrapper`: the mean over examples of a loss
/// function, as the regression and probabilistic metrics of Keras are
/// (`mean_squared_error`, `mae`, `binary_crossentropy`, ...).
pub struct MeanMetricWrapper {
    name: String,
    loss: Box<dyn Loss>,
    totals: Totals,
}

impl MeanMetricWrapper {
    /// The mean of `loss` over every example seen, reported as `name`.
    pub fn new(name: &str, loss: impl Loss + 'static) -> MeanMetricWrapper {
        MeanMetricWrapper {
            name: name.into(),
            loss: Box::new(loss),
            totals: Totals::default(),
        }
    }
}

impl Metric for MeanMetricWrapper {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        crate::autodiff::without_recording(|| {
            // An empty batch adds nothing (its mean would be NaN).
            if y_pred.numel() == 0 {
                return Ok(());
            }
            let m = self.loss.call(y_true, y_pred)?;
            let n = y_pred.shape().first().copied().unwrap_or(1);
            self.totals.add_mean(&m, n)
        })
    }
    fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        let Some(w) = w else {
            return self.update_state(y_true, y_pred);
        };
        crate::autodiff::without_recording(|| {
            if y_pred.numel() == 0 {
                return Ok(());
            }
            // Keras' wrapper averages the loss function's per-example values.
            let values = self.loss.values(y_true, y_pred)?;
            self.totals.add_weighted(self.loss.name(), &values, Some(w))
        })
    }
    fn result(&self) -> Result<f64> {
        self.totals.mean()
    }
    fn reset_state(&mut self) {
        self.totals.reset();
    }
    fn keras_config(&self) -> Option<serde_json::Value> {
        let loss = self.loss.keras_config();
        // The name alone where Keras resolves it to this loss, options at
        // their defaults.
        if super::keras::metric_loss(&self.name) == Some(self.loss.name()) && loss.is_string() {
            return Some(self.name.clone().into());
        }
        // Keras' metric class of the same function, with the loss's options.
        let class = super::keras::metric_class(self.loss.name())?;
        let mut config = match loss {
            serde_json::Value::Object(o) => o.get("config").cloned().filter(|c| c.is_object()),
            _ => None,
        }
        .unwrap_or_else(|| serde_json::json!({}));
        if let Some(c) = config.as_object_mut() {
            c.remove("reduction");
        }
        config["name"] = self.name.clone().into();
        config["dtype"] = "float32".into();
        Some(
            serde_json::json!({"module": "keras.metrics", "class_name": class, "config": config, "registered_name": null}),
        )
    }
}

/// `keras.metrics.RootMeanSquaredError`: the square root of the mean
/// squared error over every element seen.
pub struct RootMeanSquaredError {
    name: String,
    totals: Totals,
}

impl RootMeanSquaredError {
    /// `RootMeanSquaredError()`, reported as `root_mean_squared_error`.
    pub fn new() -> RootMeanSquaredError {
        RootMeanSquaredError {
            name: "root_mean_squared_error".into(),
            totals: Totals::default(),
        }
    }
    /// Renames the metric (how it shows in logs and History).
    pub fn named(self, name: &str) -> RootMeanSquaredError {
        RootMeanSquaredError {
            name: name.into(),
            ..self
        }
    }
}

impl Default for RootMeanSquaredError {
    fn default() -> Self {
        RootMeanSquaredError::new()
    }
}

impl Metric for RootMeanSquaredError {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        self.update_state_weighted(y_true, y_pred, None)
    }
    fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        crate::autodiff::without_recording(|| {
            let (t, p) = same_rank(&y_true.to_device(y_pred.device())?, y_pred)?;
            let e = p.cast(DType::F32)?.squared_difference(&t.cast(DType::F32)?)?;
            self.totals.add_weighted("root_mean_squared_error", &e, w)
        })
    }
    fn result(&self) -> Result<f64> {
        Ok(self.totals.mean()?.sqrt())
    }
    fn reset_state(&mut self) {
        self.totals.reset();
    }
    fn keras_config(&self) -> Option<serde_json::Value> {
        Some(if self.name == "root_mean_squared_error" {
            self.name.clone().into()
        } else {
            serde_json::json!({"module": "keras.metrics", "class_name": "RootMeanSquaredError",
                "config": {"name": self.name, "dtype": "float32"}, "registered_name": null})
        })
    }
}

/// Counts of a binary classification at several thresholds, kept on the
/// device: true and false positives per threshold, and the positive and
/// negative labels seen. Keras flattens every prediction into one list
/// (`multi_label=False`); a label is positive when it is nonzero.
#[derive(Default)]
struct Confusion {
    state: Option<[Variable; 4]>,
}

/// The most thresholds [`AUC`] counts at.
pub const MAX_THRESHOLDS: usize = 1 << 16;

/// How predictions are set against the thresholds.
#[derive(Clone, Debug, PartialEq)]
enum Cut {
    /// `y_pred > t` for each `t` (Precision and Recall).
    Above(Vec<f64>),
    /// Keras' bucketed form for `n` evenly spaced thresholds in
    /// \[-eps, 1 + eps\] (AUC): predictions clipped to \[0, 1\], bucket
    /// `max(ceil(p (n - 1)) - 1, 0)`, counted at every threshold up to it.
    Even(usize),
}

impl Cut {
    fn len(&self) -> usize {
        match self {
            Cut::Above(t) => t.len(),
            Cut::Even(n) => *n,
        }
    }
}

impl Confusion {
    /// Adds a batch: `p`, `y` and the weights `w` (1 when `None`) flat f32 `[n, 1]`.
    fn add(&mut self, cut: &Cut, y: &Tensor, p: &Tensor, w: Option<&Tensor>) -> Result<()> {
        let dev = p.device().clone();
        let k = cut.len();
        // Predictions meet every threshold at once: [n, k] values.
        if k > MAX_THRESHOLDS || p.numel().saturating_mul(k) > 1 << 28 {
            return Err(Error::arg(
                "confusion_matrix",
                format!(
                    "{} predictions at {k} thresholds are too many at once (at most {MAX_THRESHOLDS} thresholds, 2^28 pairs); update in smaller batches",
                    p.numel()
                ),
            ));
        }
        let (above, p) = match cut {
            Cut::Above(ts) => {
                let ts: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
                (Tensor::from_slice(&ts, &[1, k], &dev)?, p.clone())
            }
            Cut::Even(n) => {
                let p = p.maximum(&p.scalar_like(0.0)?)?.minimum(&p.scalar_like(1.0)?)?;
                let bucket = p.mul_scalar(*n as f64 - 1.0)?.ceil()?.add_scalar(-1.0)?.relu()?;
                let idx = ops::arange(0.0, *n as f64, 1.0, DType::F32, &dev)?.reshape(&[1, *n as isize])?;
                // bucket >= idx  <=>  idx - 1 < bucket, kept as "> threshold".
                (idx.add_scalar(-0.5)?, bucket)
            }
        };
        let mut hit = p.greater(&above)?.cast(DType::F32)?;
        let (pos, all) = match w {
            Some(w) => {
                hit = hit.mul(w)?;
                (y.mul(w)?.sum(None, false)?, w.sum(None, false)?)
            }
            None => (y.sum(None, false)?, ops::full(&[], y.numel() as f64, DType::F32, &dev)?),
        };
        let tp = hit.mul(y)?.sum(Some(&[0]), false)?;
        let fp = hit.sum(Some(&[0]), false)?.sub(&tp)?;
        if self.state.is_none() {
            let z = |s: &[usize]| -> Result<Variable> {
                Ok(Variable::with_trainable(
                    ops::zeros(s, DType::F32, &dev)?,
                    "confusion",
                    false,
                ))
            };
            self.state = Some([z(&[k])?, z(&[k])?, z(&[])?, z(&[])?]);
        }
        let vars = self.state.as_ref().ok_or_else(|| Error::arg("metric", "no state"))?;
        for (v, d) in vars.iter().zip([tp, fp, pos, all]) {
            v.assign(&v.value().add(&d.to_device(&v.device())?)?)?;
        }
        Ok(())
    }

    /// (tp, fp, fn, tn) per threshold, read back.
    fn counts(&self, k: usize) -> Result<[Vec<f64>; 4]> {
        let Some([tp, fp, pos, all]) = &self.state else {
            return Ok([vec![0.0; k], vec![0.0; k], vec![0.0; k], vec![0.0; k]]);
        };
        let (tp, fp) = (tp.value().to_f64_vec()?, fp.value().to_f64_vec()?);
        if tp.len() != k || fp.len() != k {
            return Err(Error::arg("confusion_matrix", "the counts do not match the thresholds"));
        }
        let (pos, all) = (pos.value().item()?, all.value().item()?);
        let fneg = tp.iter().map(|t| pos - t).collect();
        let tneg = fp.iter().map(|f| all - pos - f).collect();
        Ok([tp, fp, fneg, tneg])
    }

    fn reset(&mut self) {
        if let Some(vars) = &self.state {
            for v in vars {
                if let Ok(z) = ops::zeros(v.value().shape(), DType::F32, &v.device()) {
                    let _ = v.assign(&z);
                }
            }
        }
    }
}

/// Labels, predictions and sample weights of a confusion metric as flat
/// f32 `[n, 1]` columns: the labels as 0/1 (nonzero is positive),
/// `class_id` picking one column of `[.., classes]`, the weights as Keras'
/// confusion metrics take them (one per example, or of the labels' shape)
/// broadcast to the predictions after `class_id`.
fn flat_weighted(
    name: &'static str,
    y_true: &Tensor,
    y_pred: &Tensor,
    class_id: Option<usize>,
    weight: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let t = y_true.to_device(y_pred.device())?;
    let (t, p) = same_rank(&t, y_pred)?;
    // Keras gives the weights a trailing axis, squeezed again when that
    // leaves them one axis above the labels.
    let weight = match weight {
        Some(w) => {
            let w = w.to_device(p.device())?.cast(DType::F32)?;
            let mut sh: Vec<isize> = w.shape().iter().map(|&d| d as isize).collect();
            sh.push(1);
            Some(if sh.len() == t.rank() + 1 { w } else { w.reshape(&sh)? })
        }
        None => None,
    };
    let (t, p) = match class_id {
        Some(c) => {
            let classes = p.shape().last().copied().unwrap_or(0);
            if t.shape() != p.shape() || p.rank() < 2 || c >= classes {
                return Err(Error::shape(
                    name,
                    &[t.shape(), p.shape()],
                    format!("class_id {c} needs y_true and y_pred of the same shape [.., classes > {c}]"),
                ));
            }
            let pick = |x: &Tensor| -> Result<Tensor> {
                let r = x.rank().saturating_sub(1);
                let mut begin = vec![0usize; x.rank()];
                let mut size = x.shape().to_vec();
                begin[r] = c;
                size[r] = 1;
                x.slice(&begin, &size)
            };
            (pick(&t)?, pick(&p)?)
        }
        None => (t, p),
    };
    if t.numel() != p.numel() {
        return Err(Error::shape(
            name,
            &[t.shape(), p.shape()],
            "y_true and y_pred must have the same number of values",
        ));
    }
    let y = t.cast(DType::Bool)?.cast(DType::F32)?.reshape(&[-1, 1])?;
    let weight = match weight {
        Some(w) => {
            if crate::core::shape::broadcast(name, p.shape(), w.shape())
                .ok()
                .as_deref()
                != Some(p.shape())
            {
                return Err(Error::shape(
                    name,
                    &[w.shape(), p.shape()],
                    "sample_weight does not broadcast to the predictions",
                ));
            }
            Some(w.broadcast_to(p.shape())?.reshape(&[-1, 1])?)
        }
        None => None,
    };
    Ok((y, p.cast(DType::F32)?.reshape(&[-1, 1])?, weight))
}

/// Keras' `_filter_top_k`: each row's `k` highest predictions kept, the
/// others set to -1e10 (ties go to the lower index, as `tf.math.top_k`).
fn filter_top_k(op: &'static str, x: &Tensor, k: usize) -> Result<Tensor> {
    let Some(&c) = x.shape().last() else {
        return Err(Error::shape(op, &[x.shape()], "top_k needs predictions [.., classes]"));
    };
    if k == 0 {
        return Err(Error::arg(op, "top_k must be at least 1"));
    }
    let rows = x.numel() / c.max(1);
    if rows.saturating_mul(c).saturating_mul(c) > 1 << 28 {
        return Err(Error::arg(
            op,
            format!("top_k over {c} classes of {rows} rows is too many pairs at once; update in smaller batches"),
        ));
    }
    let x = x.cast(DType::F32)?;
    let dev = x.device().clone();
    let (xi, xj) = (x.reshape(&[-1, c as isize, 1])?, x.reshape(&[-1, 1, c as isize])?);
    // rank(i) = #{j: x_j > x_i} + #{j < i: x_j == x_i}
    let before: Vec<f32> = (0..c * c).map(|n| if n % c < n / c { 1.0 } else { 0.0 }).collect();
    let before = Tensor::from_vec(before, &[1, c, c], &dev)?;
    let above = xj.greater(&xi)?.cast(DType::F32)?;
    let tied = xj.equal(&xi)?.cast(DType::F32)?.mul(&before)?;
    let rank = above.add(&tied)?.sum(Some(&[-1]), false)?.reshape(&[-1])?;
    let shape: Vec<isize> = x.shape().iter().map(|&d| d as isize).collect();
    let keep = rank.scalar_like(k as f64)?.greater(&rank)?.reshape(&shape)?;
    keep.where_(&x, &x.scalar_like(-1e10)?)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// `keras.metrics.Precision` and `keras.metrics.Recall`: of the
/// predictions above `threshold` (0.5), the fraction whose label is
/// positive (precision), or of the positive labels, the fraction predicted
/// above it (recall); 0 before any positive.
pub struct Precision {
    name: String,
    recall: bool,
    /// `None`: Keras' default, 0.5, or with `top_k` every kept prediction.
    threshold: Option<f64>,
    class_id: Option<usize>,
    top_k: Option<usize>,
    counts: Confusion,
}

/// `keras.metrics.Recall`: a [`Precision`] that reports recall.
pub struct Recall;

impl Recall {
    /// `Recall()`: threshold 0.5, reported as `recall`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Precision {
        Precision {
            name: "recall".into(),
            recall: true,
            ..Precision::new()
        }
    }
}

impl Precision {
    /// `Precision()`: threshold 0.5, reported as `precision`.
    pub fn new() -> Precision {
        Precision {
            name: "precision".into(),
            recall: false,
            threshold: None,
            class_id: None,
            top_k: None,
            counts: Confusion::default(),
        }
    }
    /// `top_k=k`: only each row's `k` highest predictions can count as
    /// positive (ties go to the lower class, as `tf.math.top_k`), before
    /// `class_id` and the threshold apply.
    pub fn top_k(self, k: usize) -> Precision {
        Precision { top_k: Some(k), ..self }
    }
    /// `thresholds=t`: a prediction above `t` counts as positive.
    pub fn threshold(self, t: f64) -> Precision {
        Precision {
            threshold: Some(t),
            ..self
        }
    }
    /// `class_id=c`: only column `c` of `[.., classes]` labels and predictions.
    pub fn class_id(self, c: usize) -> Precision {
        Precision {
            class_id: Some(c),
            ..self
        }
    }
    /// Renames the metric (how it shows in logs and History).
    pub fn named(self, name: &str) -> Precision {
        Precision {
            name: name.into(),
            ..self
        }
    }
}

impl Default for Precision {
    fn default() -> Self {
        Precision::new()
    }
}

impl Metric for Precision {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        self.update_state_weighted(y_true, y_pred, None)
    }
    fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        crate::autodiff::without_recording(|| {
            let op = if self.recall { "recall" } else { "precision" };
            // Keras' default: 0.5, or with top_k its NEG_INF (every kept
            // prediction is positive).
            let threshold = match (self.threshold, self.top_k) {
                (Some(t), _) => t,
                (None, None) => 0.5,
                (None, Some(_)) => -1e10,
            };
            if let Some(t) = self.threshold
                && !(0.0..=1.0).contains(&t)
            {
                return Err(Error::arg(op, format!("threshold {t} is not in [0, 1]")));
            }
            let top;
            let y_pred = match self.top_k {
                Some(k) => {
                    top = filter_top_k(op, y_pred, k)?;
                    &top
                }
                None => y_pred,
            };
            let (y, p, w) = flat_weighted(op, y_true, y_pred, self.class_id, w)?;
            self.counts.add(&Cut::Above(vec![threshold]), &y, &p, w.as_ref())
        })
    }
    fn result(&self) -> Result<f64> {
        let [tp, fp, fneg, _] = self.counts.counts(1)?;
        Ok(if self.recall {
            ratio(tp[0], tp[0] + fneg[0])
        } else {
            ratio(tp[0], tp[0] + fp[0])
        })
    }
    fn reset_state(&mut self) {
        self.counts.reset();
    }
    fn keras_config(&self) -> Option<serde_json::Value> {
        let class = if self.recall { "Recall" } else { "Precision" };
        let mut config = serde_json::json!({"name": self.name, "dtype": "float32", "top_k": self.top_k,
            "class_id": self.class_id, "thresholds": self.threshold});
        if self.threshold == Some(0.5) && self.top_k.is_none() {
            config["thresholds"] = serde_json::Value::Null;
        }
        Some(
            serde_json::json!({"module": "keras.metrics", "class_name": class, "config": config, "registered_name": null}),
        )
    }
}

/// Which curve [`AUC`] measures the area under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Curve {
    /// Recall against the false positive rate (Keras' default).
    #[default]
    Roc,
    /// Precision against recall.
    Pr,
}

/// How [`AUC`] sums the area between thresholds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Summation {
    /// Trapezoids (for PR, Davis and Goadrich's interpolation); Keras' default.
    #[default]
    Interpolation,
    /// Rectangles under the curve.
    Minoring,
    /// Rectangles over the curve.
    Majoring,
}

/// `keras.metrics.AUC`: the area under the ROC (or precision-recall)
/// curve, from counts at `num_thresholds` (200) evenly spaced thresholds,
/// as Keras computes it. Predictions are probabilities (or logits with
/// `from_logits`); labels are positive when nonzero.
pub struct AUC {
    name: String,
    num_thresholds: usize,
    curve: Curve,
    summation: Summation,
    from_logits: bool,
    counts: Confusion,
    /// `multi_label`: one curve per column of `[.., labels]` data, their
    /// areas averaged (weighted by `label_weights` where given).
    multi_label: bool,
    label_weights: Option<Vec<f64>>,
    per_label: Vec<Confusion>,
}

impl AUC {
    /// `AUC()`: ROC, 200 thresholds, interpolation, reported as `auc`.
    pub fn new() -> AUC {
        AUC {
            name: "auc".into(),
            num_thresholds: 200,
            curve: Curve::Roc,
            summation: Summation::Interpolation,
            from_logits: false,
            counts: Confusion::default(),
            multi_label: false,
            label_weights: None,
            per_label: Vec::new(),
        }
    }
    /// `multi_label=true`: labels and predictions `[.., labels]`, one
    /// curve per label, the AUC their mean. Starts the counts over.
    pub fn multi_label(self, on: bool) -> AUC {
        AUC {
            multi_label: on,
            per_label: Vec::new(),
            ..self
        }
    }
    /// `label_weights=[...]` (with `multi_label`): the labels' areas
    /// averaged with these weights (one per label, not all zero).
    pub fn label_weights(self, w: &[f64]) -> AUC {
        AUC {
            label_weights: Some(w.to_vec()),
            ..self
        }
    }
    /// `num_thresholds=n`; at least 2 (fewer are taken as 2), at most
    /// [`MAX_THRESHOLDS`] (more are an error at the first update). Starts
    /// the counts over.
    pub fn num_thresholds(self, n: usize) -> AUC {
        AUC {
            num_thresholds: n.max(2),
            counts: Confusion::default(),
            per_label: Vec::new(),
            ..self
        }
    }
    /// `curve="ROC"` or `"PR"`.
    pub fn curve(self, curve: Curve) -> AUC {
        AUC { curve, ..self }
    }
    /// `summation_method=...`.
    pub fn summation(self, summation: Summation) -> AUC {
        AUC { summation, ..self }
    }
    /// `from_logits=true`: predictions pass through a sigmoid first.
    pub fn from_logits(self, from_logits: bool) -> AUC {
        AUC { from_logits, ..self }
    }
    /// Renames the metric (how it shows in logs and History).
    pub fn named(self, name: &str) -> AUC {
        AUC {
            name: name.into(),
            ..self
        }
    }
}

impl Default for AUC {
    fn default() -> Self {
        AUC::new()
    }
}

impl Metric for AUC {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        self.update_state_weighted(y_true, y_pred, None)
    }
    fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        crate::autodiff::without_recording(|| {
            let cut = Cut::Even(self.num_thresholds);
            if !self.multi_label {
                if self.label_weights.is_some() {
                    return Err(Error::Unimplemented {
                        what: "AUC label_weights without multi_label".into(),
                        msg: "wgflow weighs labels only in multi-label AUC".into(),
                    });
                }
                let (y, p, w) = flat_weighted("auc", y_true, y_pred, None, w)?;
                let p = if self.from_logits { p.sigmoid()? } else { p };
                return self.counts.add(&cut, &y, &p, w.as_ref());
            }
            let labels = match y_pred.shape() {
                [_, .., l] if y_pred.rank() >= 2 => *l,
                s => {
                    return Err(Error::shape(
                        "auc",
                        &[y_true.shape(), s],
                        "multi-label AUC takes [.., labels] data",
                    ));
                }
            };
            if self.per_label.is_empty() {
                self.per_label = (0..labels).map(|_| Confusion::default()).collect();
            }
            if self.per_label.len() != labels || self.label_weights.as_ref().is_some_and(|lw| lw.len() != labels) {
                return Err(Error::shape(
                    "auc",
                    &[y_true.shape(), y_pred.shape()],
                    format!(
                        "{labels} labels, where the metric has {} (and label_weights {:?})",
                        self.per_label.len(),
                        self.label_weights
                    ),
                ));
            }
            for (j, counts) in self.per_label.iter_mut().enumerate() {
                let (y, p, w) = flat_weighted("auc", y_true, y_pred, Some(j), w)?;
                let p = if self.from_logits { p.sigmoid()? } else { p };
                counts.add(&cut, &y, &p, w.as_ref())?;
            }
            Ok(())
        })
    }
    fn result(&self) -> Result<f64> {
        if !self.multi_label {
            return self.area(&self.counts);
        }
        if self.per_label.is_empty() {
            return Ok(0.0);
        }
        let areas = self
            .per_label
            .iter()
            .map(|c| self.area(c))
            .collect::<Result<Vec<f64>>>()?;
        Ok(match &self.label_weights {
            None => areas.iter().sum::<f64>() / areas.len() as f64,
            Some(lw) => ratio(areas.iter().zip(lw).map(|(a, w)| a * w).sum(), lw.iter().sum()),
        })
    }
    fn reset_state(&mut self) {
        self.counts.reset();
        for c in self.per_label.iter_mut() {
            c.reset();
        }
    }
    fn keras_config(&self) -> Option<serde_json::Value> {
        self.config()
    }
}

impl AUC {
    /// The area under the curve of one set of counts.
    fn area(&self, counts: &Confusion) -> Result<f64> {
        let n = self.num_thresholds;
        let [tp, fp, fneg, tneg] = counts.counts(n)?;
        if self.curve == Curve::Pr && self.summation == Summation::Interpolation {
            return Ok(pr_auc(&tp, &fp, &fneg));
        }
        let recall: Vec<f64> = (0..n).map(|i| ratio(tp[i], tp[i] + fneg[i])).collect();
        let (x, y): (Vec<f64>, Vec<f64>) = match self.curve {
            Curve::Roc => ((0..n).map(|i| ratio(fp[i], fp[i] + tneg[i])).collect(), recall),
            Curve::Pr => (recall, (0..n).map(|i| ratio(tp[i], tp[i] + fp[i])).collect()),
        };
        Ok((0..n - 1)
            .map(|i| {
                let h = match self.summation {
                    Summation::Interpolation => (y[i] + y[i + 1]) / 2.0,
                    Summation::Minoring => y[i].min(y[i + 1]),
                    Summation::Majoring => y[i].max(y[i + 1]),
                };
                (x[i] - x[i + 1]) * h
            })
            .sum())
    }

    fn config(&self) -> Option<serde_json::Value> {
        let curve = if self.curve == Curve::Roc { "ROC" } else { "PR" };
        let summation = match self.summation {
            Summation::Interpolation => "interpolation",
            Summation::Minoring => "minoring",
            Summation::Majoring => "majoring",
        };
        Some(
            serde_json::json!({"module": "keras.metrics", "class_name": "AUC", "config": {
            "name": self.name, "dtype": "float32", "num_thresholds": self.num_thresholds, "curve": curve,
            "summation_method": summation, "multi_label": self.multi_label,
            "num_labels": (self.multi_label && !self.per_label.is_empty()).then_some(self.per_label.len()),
            "label_weights": self.label_weights,
            "from_logits": self.from_logits}, "registered_name": null}),
        )
    }
}

/// The area under the precision-recall curve with Keras' interpolation
/// (Davis and Goadrich 2006: precision varies with the number of
/// predicted positives between thresholds).
fn pr_auc(tp: &[f64], fp: &[f64], fneg: &[f64]) -> f64 {
    let p: Vec<f64> = tp.iter().zip(fp).map(|(a, b)| a + b).collect();
    (0..tp.len().saturating_sub(1))
        .map(|i| {
            let dtp = tp[i] - tp[i + 1];
            let dp = p[i] - p[i + 1];
            let slope = ratio(dtp, dp.max(0.0));
            let intercept = tp[i + 1] - slope * p[i + 1];
            let safe = if p[i] > 0.0 && p[i + 1] > 0.0 {
                ratio(p[i], p[i + 1].max(0.0))
            } else {
                1.0
            };
            ratio(
                slope * (dtp + intercept * safe.ln()),
                (tp[i + 1] + fneg[i + 1]).max(0.0),
            )
        })
        .sum()
}

/// `keras.metrics.SparseTopKCategoricalAccuracy` and
/// `TopKCategoricalAccuracy`: the fraction of examples whose class is
/// among the `k` (5) highest scores. As TensorFlow's `in_top_k`, ties at
/// the boundary count as in, and a class outside \[0, classes) or a row
/// with a non-finite score is a miss.
pub struct TopKCategoricalAccuracy {
    name: String,
    k: usize,
    sparse: bool,
    totals: Totals,
}

/// `keras.metrics.SparseTopKCategoricalAccuracy`: a
/// [`TopKCategoricalAccuracy`] of integer labels.
pub struct SparseTopKCategoricalAccuracy;

impl SparseTopKCategoricalAccuracy {
    /// `SparseTopKCategoricalAccuracy(k=5)`, reported as
    /// `sparse_top_k_categorical_accuracy`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> TopKCategoricalAccuracy {
        TopKCategoricalAccuracy {
            name: "sparse_top_k_categorical_accuracy".into(),
            sparse: true,
            ..TopKCategoricalAccuracy::new()
        }
    }
}

impl TopKCategoricalAccuracy {
    /// `TopKCategoricalAccuracy(k=5)` of one-hot labels, reported as
    /// `top_k_categorical_accuracy`.
    pub fn new() -> TopKCategoricalAccuracy {
        TopKCategoricalAccuracy {
            name: "top_k_categorical_accuracy".into(),
            k: 5,
            sparse: false,
            totals: Totals::default(),
        }
    }
    /// `k=...`: how many of the highest scores count.
    pub fn k(self, k: usize) -> TopKCategoricalAccuracy {
        TopKCategoricalAccuracy { k, ..self }
    }
    /// Renames the metric (how it shows in logs and History).
    pub fn named(self, name: &str) -> TopKCategoricalAccuracy {
        TopKCategoricalAccuracy {
            name: name.into(),
            ..self
        }
    }
}

impl Default for TopKCategoricalAccuracy {
    fn default() -> Self {
        TopKCategoricalAccuracy::new()
    }
}

impl Metric for TopKCategoricalAccuracy {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        self.update_state_weighted(y_true, y_pred, None)
    }
    fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        crate::autodiff::without_recording(|| {
            let op = if self.sparse {
                "sparse_top_k_categorical_accuracy"
            } else {
                "top_k_categorical_accuracy"
            };
            let t = y_true.to_device(y_pred.device())?;
            let classes = y_pred.shape().last().copied().unwrap_or(0);
            let p = y_pred.cast(DType::F32)?.reshape(&[-1, classes as isize])?;
            // Keras takes labels as int32 (1.7 is class 1).
            let label = if self.sparse {
                t.reshape(&[-1])?.cast(DType::I32)?
            } else {
                t.reshape(&[-1, classes as isize])?.argmax(-1)?
            };
            if y_pred.rank() == 0 || label.numel() != p.shape()[0] {
                return Err(Error::shape(
                    op,
                    &[t.shape(), y_pred.shape()],
                    "needs labels for each row of scores [.., classes]",
                ));
            }
            // The label's score, picked without multiplying (0 * inf is NaN).
            let label = label.cast(DType::F32)?.reshape(&[-1, 1])?;
            let idx = ops::arange(0.0, classes as f64, 1.0, DType::F32, p.device())?.reshape(&[1, -1])?;
            let mine = label.equal(&idx)?;
            let score = mine.where_(&p, &p.zeros_like()?)?.sum(Some(&[-1]), true)?;
            let above = p.greater(&score)?.cast(DType::F32)?.sum(Some(&[-1]), true)?;
            let valid = label
                .greater_equal(&label.scalar_like(0.0)?)?
                .logical_and(&label.less(&label.scalar_like(classes as f64)?)?)?;
            // TF's kernel cannot say for a row with any non-finite score.
            let finite = p
                .abs()?
                .less(&p.scalar_like(f64::INFINITY)?)?
                .cast(DType::F32)?
                .min(Some(&[-1]), true)?
                .greater(&score.scalar_like(0.0)?)?;
            let hit = above
                .less(&above.scalar_like(self.k as f64)?)?
                .logical_and(&valid)?
                .logical_and(&finite)?;
            // One hit per row of scores, each weighted by its example.
            let rows: Vec<isize> = y_pred.shape()[..y_pred.rank().saturating_sub(1)]
                .iter()
                .map(|&d| d as isize)
                .collect();
            self.totals.add_weighted(op, &hit.reshape(&rows)?, w)
        })
    }
    fn result(&self) -> Result<f64> {
        self.totals.mean()
    }
    fn reset_state(&mut self) {
        self.totals.reset();
    }
    fn keras_config(&self) -> Option<serde_json::Value> {
        let class = if self.sparse {
            "SparseTopKCategoricalAccuracy"
        } else {
            "TopKCategoricalAccuracy"
        };
        let default = if self.sparse {
            "sparse_top_k_categorical_accuracy"
        } else {
            "top_k_categorical_accuracy"
        };
        if self.k == 5 && self.name == default {
            return Some(self.name.clone().into());
        }
        Some(serde_json::json!({"module": "keras.metrics", "class_name": class,
            "config": {"name": self.name, "dtype": "float32", "k": self.k}, "registered_name": null}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Device;

    /// Ties at the k-th place go to the lower class, as `tf.math.top_k`.
    #[test]
    fn top_k_keeps_the_lower_of_tied_classes() {
        let d = Device::Cpu;
        let x = Tensor::from_vec(vec![0.2f32, 0.5, 0.5, 0.9, 0.1, 0.9], &[2, 3], &d).unwrap();
        let y = filter_top_k("precision", &x, 1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y, [-1e10, 0.5, -1e10, 0.9, -1e10, -1e10]);
        assert!(filter_top_k("precision", &x, 0).is_err());
        let mut p = Precision::new().top_k(2);
        let t = Tensor::from_vec(vec![0.0f32, 1.0, 0.0, 0.0, 0.0, 1.0], &[2, 3], &d).unwrap();
        p.update_state(&t, &x).unwrap();
        // Kept: (1, 2) and (0, 2), every kept one positive: 2 of 4 right.
        assert_eq!(p.result().unwrap(), 0.5);
    }
}
