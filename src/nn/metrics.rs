//! Stateful Keras metrics (`keras.metrics`). State accumulates on the device
//! of the values (no readback per batch); `result` reads it back. Totals
//! are non-trainable variables updated by assignment, so a step traced by
//! [`mod@crate::function`] keeps updating them on every replay.
//!
//! [`crate::nn::model::Model::compile`] takes them as [`Metrics`]; `fit`
//! reports them after the loss of [`crate::nn::losses`] and hands them to
//! [`crate::nn::callbacks`].

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
    /// The value so far (0 before any update); reads the state back, which
    /// waits for the device.
    fn result(&self) -> Result<f64>;
    /// Starts over (at the beginning of each epoch and `evaluate`).
    fn reset_state(&mut self);
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
        let (total, count) = match &self.state {
            Some(st) => st,
            None => {
                let zero = || ops::zeros(&[], DType::F32, s.device());
                let st = (
                    Variable::with_trainable(zero()?, "total", false),
                    Variable::with_trainable(zero()?, "count", false),
                );
                self.state.insert(st)
            }
        };
        let dev = total.device();
        total.assign(&total.value().add(&s.to_device(&dev)?)?)?;
        count.assign(&count.value().add(&n.to_device(&dev)?)?)
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
    fn result(&self) -> Result<f64> {
        self.totals.mean()
    }
    fn reset_state(&mut self) {
        self.totals.reset();
    }
}

#[derive(Clone, Copy)]
enum Kind {
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
    ($(#[$doc:meta])* $name:ident($($arg:ident: $t:ty),*) => $make:expr) => {
        $(#[$doc])*
        pub struct $name(Accuracy);

        impl $name {
            /// The metric with Keras' defaults.
            pub fn new($($arg: $t),*) -> $name {
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
            fn result(&self) -> Result<f64> {
                self.0.result()
            }
            fn reset_state(&mut self) {
                self.0.reset_state()
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

/// Keras' `squeeze_or_expand_to_same_rank`: labels `[n]` against
/// predictions `[n, 1]` (or the reverse) meet as `[n, 1]`, not broadcast
/// to `[n, n]`.
fn same_rank(t: &Tensor, p: &Tensor) -> Result<(Tensor, Tensor)> {
    let expand = |x: &Tensor| -> Result<Tensor> {
        let mut sh: Vec<isize> = x.shape().iter().map(|&d| d as isize).collect();
        sh.push(1);
        x.reshape(&sh)
    };
    let (rt, rp) = (t.rank(), p.rank());
    if rt == rp + 1 && t.shape().last() == Some(&1) {
        return Ok((t.clone(), expand(p)?));
    }
    if rp == rt + 1 && p.shape().last() == Some(&1) {
        return Ok((expand(t)?, p.clone()));
    }
    Ok((t.clone(), p.clone()))
}

impl Metric for Accuracy {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        crate::autodiff::without_recording(|| {
            let t = y_true.to_device(y_pred.device())?;
            let hits = match self.kind {
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
                Kind::Categorical => y_pred.argmax(-1)?.equal(&t.argmax(-1)?)?,
            };
            self.totals.add(&hits)
        })
    }
    fn result(&self) -> Result<f64> {
        self.totals.mean()
    }
    fn reset_state(&mut self) {
        self.totals.reset();
    }
}
