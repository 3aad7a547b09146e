//! Stateful Keras metrics. State accumulates on the device of the values
//! (no readback per batch); `result` reads it back.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

pub trait Metric: Send {
    fn name(&self) -> &str;
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()>;
    fn result(&self) -> Result<f64>;
    fn reset_state(&mut self);
}

/// Running sum and count of per-example values.
#[derive(Default)]
struct Totals {
    total: Option<Tensor>,
    count: f64,
}

impl Totals {
    fn add(&mut self, values: &Tensor) -> Result<()> {
        let v = values.cast(DType::F32)?;
        let s = v.sum(None, false)?;
        self.total = Some(match self.total.take() {
            Some(t) if t.device() == s.device() => t.add(&s)?,
            Some(t) => t.to_device(s.device())?.add(&s)?,
            None => s,
        });
        self.count += v.numel() as f64;
        Ok(())
    }
    fn mean(&self) -> Result<f64> {
        match &self.total {
            Some(t) if self.count > 0.0 => Ok(t.item()? / self.count),
            _ => Ok(0.0),
        }
    }
}

/// `keras.metrics.Mean`: the mean of every value seen.
pub struct Mean {
    name: String,
    totals: Totals,
}

impl Mean {
    pub fn new(name: &str) -> Mean {
        Mean {
            name: name.into(),
            totals: Totals::default(),
        }
    }
    /// Adds values (any shape).
    pub fn update(&mut self, values: &Tensor) -> Result<()> {
        crate::tape::without_recording(|| self.totals.add(values))
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
        self.totals = Totals::default();
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

#[allow(non_snake_case)]
pub fn SparseCategoricalAccuracy() -> Accuracy {
    Accuracy::sparse_categorical()
}
#[allow(non_snake_case)]
pub fn BinaryAccuracy() -> Accuracy {
    Accuracy::binary(0.5)
}

impl Metric for Accuracy {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        crate::tape::without_recording(|| {
            let t = y_true.to_device(y_pred.device())?;
            let hits = match self.kind {
                Kind::Exact => t.cast(y_pred.dtype())?.equal(y_pred)?,
                Kind::Binary(th) => {
                    y_pred
                        .greater(&y_pred.scalar_like(th)?)?
                        .equal(
                            &t.cast(DType::F32)?
                                .greater(&ops::full(&[], 0.5, DType::F32, t.device())?)?,
                        )?
                }
                Kind::SparseCategorical => {
                    let l = t.reshape(&[-1])?.cast(DType::I32)?;
                    if y_pred.rank() != 2 || l.numel() != y_pred.shape()[0] {
                        return Err(Error::shape(
                            "sparse_categorical_accuracy",
                            &[t.shape(), y_pred.shape()],
                            "needs labels [batch] and scores [batch, classes]",
                        ));
                    }
                    y_pred.argmax(-1)?.equal(&l)?
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
        self.totals = Totals::default();
    }
}
