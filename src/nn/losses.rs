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

/// A cross-entropy's Keras config: the name when `from_logits` is false.
fn xent_config(class: &str, name: &str, from_logits: bool) -> serde_json::Value {
    if from_logits {
        serde_json::json!({"module": "keras.losses", "class_name": class,
            "config": {"name": name, "from_logits": true, "reduction": "sum_over_batch_size"}, "registered_name": null})
    } else {
        name.into()
    }
}

/// Probabilities are clipped to [EPS, 1 - EPS] before logarithms, as Keras does.
const EPS: f64 = 1e-7;

fn same_shape(name: &'static str, t: &Tensor, p: &Tensor) -> Result<()> {
    if t.shape() != p.shape() {
        return Err(Error::shape(
            name,
            &[t.shape(), p.shape()],
            "y_true and y_pred must have the same shape",
        ));
    }
    Ok(())
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
        same_shape(self.name(), y_true, y_pred)?;
        as_pred_dtype(y_true, y_pred)?
            .squared_difference(y_pred)?
            .mean(None, false)
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
        same_shape(self.name(), y_true, y_pred)?;
        as_pred_dtype(y_true, y_pred)?.sub(y_pred)?.abs()?.mean(None, false)
    }
}

/// `keras.losses.BinaryCrossentropy`: targets in \[0, 1\] against
/// predictions of the same shape (one independent yes/no per element).
#[derive(Clone, Copy, Debug, Default)]
pub struct BinaryCrossentropy {
    /// `y_pred` are logits (Keras' default is false: probabilities, clipped
    /// to \[1e-7, 1 - 1e-7\] before the logarithm).
    pub from_logits: bool,
}

impl BinaryCrossentropy {
    /// `BinaryCrossentropy(from_logits=...)`.
    pub fn new(from_logits: bool) -> Self {
        BinaryCrossentropy { from_logits }
    }
}

impl Loss for BinaryCrossentropy {
    fn name(&self) -> &'static str {
        "binary_crossentropy"
    }
    fn keras_config(&self) -> serde_json::Value {
        xent_config("BinaryCrossentropy", "binary_crossentropy", self.from_logits)
    }
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        same_shape(self.name(), y_true, y_pred)?;
        let z = as_pred_dtype(y_true, y_pred)?;
        let scores = scores_of(y_pred, self.from_logits)?;
        let l = if let Some(x) = &scores {
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
}

impl CategoricalCrossentropy {
    /// `CategoricalCrossentropy(from_logits=...)`.
    pub fn new(from_logits: bool) -> Self {
        CategoricalCrossentropy { from_logits }
    }
}

impl Loss for CategoricalCrossentropy {
    fn name(&self) -> &'static str {
        "categorical_crossentropy"
    }
    fn keras_config(&self) -> serde_json::Value {
        xent_config("CategoricalCrossentropy", "categorical_crossentropy", self.from_logits)
    }
    fn call(&self, y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
        same_shape(self.name(), y_true, y_pred)?;
        let z = as_pred_dtype(y_true, y_pred)?;
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
