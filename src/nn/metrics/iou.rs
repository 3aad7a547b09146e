//! `keras.metrics.MeanIoU`, `IoU` and `BinaryIoU`: a confusion matrix of
//! class ids (labels by row, predictions by column) accumulated over the
//! batches; the result is the mean, over the target classes that occur,
//! of `tp / (tp + fp + fn)`. Ids outside `[0, num_classes)` (and the
//! `ignore_class`) are left out, as Keras does.

use super::Metric;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops;
use crate::tensor::{Tensor, Variable};

/// Keras' `backend.epsilon()`.
const EPS: f64 = 1e-7;

/// The most classes an IoU metric counts (its matrix has `n^2` cells).
pub const MAX_CLASSES: usize = 1 << 12;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Mean,
    Ids,
    Binary(f64),
}

/// `keras.metrics.IoU(num_classes, target_class_ids)`, and through its
/// constructors [`IoU::mean`] (`MeanIoU`) and [`IoU::binary`]
/// (`BinaryIoU`).
pub struct IoU {
    name: String,
    kind: Kind,
    num_classes: usize,
    target_class_ids: Vec<usize>,
    ignore_class: Option<i64>,
    sparse_y_true: bool,
    sparse_y_pred: bool,
    cm: Option<Variable>,
}

impl IoU {
    /// `IoU(num_classes, target_class_ids)`, reported as `io_u`: the mean
    /// IoU of the listed classes.
    pub fn new(num_classes: usize, target_class_ids: &[usize]) -> IoU {
        IoU {
            name: "io_u".into(),
            kind: Kind::Ids,
            num_classes,
            target_class_ids: target_class_ids.to_vec(),
            ignore_class: None,
            sparse_y_true: true,
            sparse_y_pred: true,
            cm: None,
        }
    }
    /// `MeanIoU(num_classes)`, reported as `mean_io_u`: every class.
    pub fn mean(num_classes: usize) -> IoU {
        IoU {
            name: "mean_io_u".into(),
            kind: Kind::Mean,
            ..IoU::new(num_classes, &(0..num_classes).collect::<Vec<_>>())
        }
    }
    /// `BinaryIoU(target_class_ids, threshold)`, reported as
    /// `binary_io_u`: predictions at or above `threshold` are class 1.
    pub fn binary(target_class_ids: &[usize], threshold: f64) -> IoU {
        IoU {
            name: "binary_io_u".into(),
            kind: Kind::Binary(threshold),
            ..IoU::new(2, target_class_ids)
        }
    }
    /// `ignore_class=c`: labels of class `c` are left out.
    pub fn ignore_class(self, c: i64) -> IoU {
        IoU {
            ignore_class: Some(c),
            ..self
        }
    }
    /// `sparse_y_true=false`: labels are scores over the classes (the
    /// argmax of the last axis is the class).
    pub fn sparse_y_true(self, sparse: bool) -> IoU {
        IoU {
            sparse_y_true: sparse,
            ..self
        }
    }
    /// `sparse_y_pred=false`: predictions are scores over the classes.
    pub fn sparse_y_pred(self, sparse: bool) -> IoU {
        IoU {
            sparse_y_pred: sparse,
            ..self
        }
    }
    /// Renames the metric (how it shows in logs and History).
    pub fn named(self, name: &str) -> IoU {
        IoU {
            name: name.into(),
            ..self
        }
    }

    fn check(&self) -> Result<()> {
        let op = "iou";
        if self.num_classes == 0 || self.num_classes > MAX_CLASSES {
            return Err(Error::arg(
                op,
                format!("num_classes {} is not in [1, {MAX_CLASSES}]", self.num_classes),
            ));
        }
        if self.target_class_ids.is_empty() || self.target_class_ids.iter().any(|&c| c >= self.num_classes) {
            return Err(Error::arg(
                op,
                format!(
                    "target_class_ids {:?} must be non-empty ids below num_classes {}",
                    self.target_class_ids, self.num_classes
                ),
            ));
        }
        Ok(())
    }

    /// Class ids as a flat f32 column: ids themselves, or the argmax of
    /// the last axis of scores.
    fn ids(t: &Tensor, sparse: bool) -> Result<Tensor> {
        let t = if sparse { t.clone() } else { ops::reduce::argmax(t, -1)? };
        t.cast(DType::F32)?.reshape(&[-1])
    }
}

impl Metric for IoU {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        self.update_state_weighted(y_true, y_pred, None)
    }
    fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        crate::autodiff::without_recording(|| {
            self.check()?;
            let op = "iou";
            let dev = y_pred.device().clone();
            let pred = match self.kind {
                Kind::Binary(t) => {
                    let p = y_pred.cast(DType::F32)?;
                    p.greater_equal(&p.scalar_like(t)?)?.cast(DType::F32)?.reshape(&[-1])?
                }
                _ => IoU::ids(y_pred, self.sparse_y_pred)?,
            };
            let truth = IoU::ids(&y_true.to_device(&dev)?, self.sparse_y_true)?;
            if truth.numel() != pred.numel() {
                return Err(Error::shape(
                    op,
                    &[y_true.shape(), y_pred.shape()],
                    "labels and predictions must hold one class id each, alike",
                ));
            }
            let n = truth.numel();
            let weight = match w {
                None => truth.ones_like()?,
                Some(w) => {
                    let w = w.to_device(&dev)?.cast(DType::F32)?.reshape(&[-1])?;
                    match w.numel() {
                        1 => w.broadcast_to(&[n])?,
                        k if k == n => w,
                        _ => {
                            return Err(Error::shape(
                                op,
                                &[w.shape(), truth.shape()],
                                "sample_weight needs one weight per class id (or one in all)",
                            ));
                        }
                    }
                }
            };
            // In range on both sides, and not the ignored class.
            let c = self.num_classes as f64;
            let inside = |t: &Tensor| -> Result<Tensor> {
                let lo = t.greater_equal(&t.scalar_like(0.0)?)?.cast(DType::F32)?;
                let hi = t.scalar_like(c)?.greater(t)?.cast(DType::F32)?;
                lo.mul(&hi)
            };
            let mut keep = inside(&truth)?.mul(&inside(&pred)?)?;
            if let Some(ig) = self.ignore_class {
                let other = truth.sub(&truth.scalar_like(ig as f64)?)?.abs()?;
                keep = keep.mul(&other.greater(&other.scalar_like(0.0)?)?.cast(DType::F32)?)?;
            }
            let weight = weight.mul(&keep)?;
            // Ids truncated as Keras' int cast does (they are >= 0 here),
            // the ones left out set to 0 with weight 0.
            let id = |t: &Tensor| -> Result<Tensor> {
                let t = t.mul(&keep)?;
                // NaN ids fail both bounds: keep is 0 and so is the id.
                let t = keep.greater(&keep.scalar_like(0.0)?)?.where_(&t, &t.zeros_like()?)?;
                ops::layout::one_hot(&t.floor()?.cast(DType::I32)?, self.num_classes, 1.0, 0.0, DType::F32)
            };
            let rows = id(&truth)?.mul(&weight.reshape(&[-1, 1])?)?;
            let cm = rows.matmul_t(&id(&pred)?, true, false)?;
            let var = match &self.cm {
                Some(v) => v.clone(),
                None => {
                    let z = ops::zeros(&[self.num_classes, self.num_classes], DType::F32, &dev)?;
                    let v = Variable::with_trainable(z, op, false);
                    self.cm = Some(v.clone());
                    v
                }
            };
            var.assign(&var.value().add(&cm.to_device(&var.device())?)?)
        })
    }
    fn result(&self) -> Result<f64> {
        let Some(cm) = &self.cm else { return Ok(0.0) };
        let k = self.num_classes;
        let m = cm.value().to_f64_vec()?;
        if m.len() != k * k {
            return Err(Error::arg("iou", "the confusion matrix does not match num_classes"));
        }
        let (mut total, mut valid) = (0.0, 0.0);
        for &c in &self.target_class_ids {
            let row: f64 = m[c * k..(c + 1) * k].iter().sum();
            let col: f64 = (0..k).map(|r| m[r * k + c]).sum();
            let tp = m[c * k + c];
            let denom = row + col - tp;
            if denom > 1e-9 {
                total += tp / (denom + EPS);
                valid += 1.0;
            }
        }
        Ok(total / (valid + EPS))
    }
    fn reset_state(&mut self) {
        if let Some(v) = &self.cm
            && let Ok(z) = ops::zeros(&v.shape(), DType::F32, &v.device())
        {
            let _ = v.assign(&z);
        }
    }
    fn keras_config(&self) -> Option<serde_json::Value> {
        let (class, config) = match self.kind {
            Kind::Binary(t) => (
                "BinaryIoU",
                serde_json::json!({"target_class_ids": self.target_class_ids, "threshold": t,
                    "name": self.name, "dtype": "float32"}),
            ),
            kind => {
                let mut c = serde_json::json!({"num_classes": self.num_classes, "name": self.name,
                    "dtype": "float32", "ignore_class": self.ignore_class, "sparse_y_true": self.sparse_y_true,
                    "sparse_y_pred": self.sparse_y_pred, "axis": -1});
                if kind == Kind::Mean {
                    ("MeanIoU", c)
                } else {
                    c["target_class_ids"] = serde_json::json!(self.target_class_ids);
                    ("IoU", c)
                }
            }
        };
        Some(
            serde_json::json!({"module": "keras.metrics", "class_name": class, "config": config, "registered_name": null}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Device;

    /// Hand-counted, with ids out of range, NaN and an ignored class left out.
    #[test]
    fn counts_by_hand() {
        let d = Device::Cpu;
        let t = |v: Vec<f32>| Tensor::from_vec(v, &[6], &d).unwrap();
        let y = t(vec![0.0, 0.0, 1.0, 1.0, 7.0, f32::NAN]);
        let p = t(vec![0.0, 1.0, 1.0, 1.0, 0.0, 1.0]);
        let mut m = IoU::mean(2);
        m.update_state(&y, &p).unwrap();
        // Class 0: tp 1, fp 0, fn 1 -> 1/2; class 1: tp 2, fp 1 -> 2/3.
        let want = (1.0 / (2.0 + EPS) + 2.0 / (3.0 + EPS)) / (2.0 + EPS);
        assert!((m.result().unwrap() - want).abs() < 1e-9, "{}", m.result().unwrap());
        let mut ig = IoU::new(2, &[1]).ignore_class(0);
        ig.update_state(&y, &p).unwrap();
        // Only labels of class 1 count: tp 2 of 2.
        assert!((ig.result().unwrap() - 2.0 / (2.0 + EPS) / (1.0 + EPS)).abs() < 1e-9);
        assert!(IoU::new(2, &[2]).update_state(&y, &p).is_err());
        assert!(IoU::mean(0).update_state(&y, &p).is_err());
        let short = Tensor::from_vec(vec![0.0f32; 5], &[5], &d).unwrap();
        assert!(matches!(m.update_state(&y, &short), Err(Error::Shape { .. })));
        m.reset_state();
        assert_eq!(m.result().unwrap(), 0.0);
    }
}
