//! `keras.metrics.FBetaScore` and `F1Score`: precision and recall of
//! thresholded predictions per class, combined as
//! `(1 + b^2) p r / (b^2 p + r)` and averaged over the classes (macro,
//! or weighted by each class's labels) or over every prediction (micro),
//! with Keras' epsilon of 1e-7 in each division.

use super::Metric;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops;
use crate::tensor::{Tensor, Variable};

/// How [`FBetaScore`] averages over the classes (Keras' `average`; its
/// `None`, a score per class, is not a scalar and is not offered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Average {
    /// Every prediction counted together.
    Micro,
    /// The mean of the classes' scores.
    Macro,
    /// The classes' scores weighted by how many labels each has.
    Weighted,
}

impl Average {
    fn name(self) -> &'static str {
        match self {
            Average::Micro => "micro",
            Average::Macro => "macro",
            Average::Weighted => "weighted",
        }
    }

    /// Keras' name of an average.
    pub fn from_name(name: &str) -> Option<Average> {
        match name {
            "micro" => Some(Average::Micro),
            "macro" => Some(Average::Macro),
            "weighted" => Some(Average::Weighted),
            _ => None,
        }
    }
}

/// Keras' `backend.epsilon()`.
const EPS: f64 = 1e-7;

/// `keras.metrics.FBetaScore(average, beta, threshold)` over `[batch,
/// classes]` labels (one-hot or multi-label) and predictions. Without a
/// threshold, the largest prediction of each row (and any tied with it)
/// counts as positive, unless it is 0; with one, every prediction above it.
pub struct FBetaScore {
    name: String,
    average: Average,
    beta: f64,
    threshold: Option<f64>,
    /// True positives, false positives, false negatives and label weights
    /// per class (a scalar each for `Micro`).
    state: Option<[Variable; 4]>,
}

/// `keras.metrics.F1Score`: an [`FBetaScore`] with `beta` 1.
pub struct F1Score;

impl F1Score {
    /// `F1Score(average)`, reported as `f1_score`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(average: Average) -> FBetaScore {
        FBetaScore {
            name: "f1_score".into(),
            ..FBetaScore::new(average, 1.0)
        }
    }
}

impl FBetaScore {
    /// `FBetaScore(average, beta)`, reported as `fbeta_score`; `beta` must
    /// be positive (checked at the first update).
    pub fn new(average: Average, beta: f64) -> FBetaScore {
        FBetaScore {
            name: "fbeta_score".into(),
            average,
            beta,
            threshold: None,
            state: None,
        }
    }
    /// `threshold=t`: predictions above `t` (in (0, 1]) count as positive.
    pub fn threshold(self, t: f64) -> FBetaScore {
        FBetaScore {
            threshold: Some(t),
            ..self
        }
    }
    /// Renames the metric (how it shows in logs and History).
    pub fn named(self, name: &str) -> FBetaScore {
        FBetaScore {
            name: name.into(),
            ..self
        }
    }

    fn check(&self) -> Result<()> {
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return Err(Error::arg(
                "fbeta_score",
                format!("beta {} must be positive", self.beta),
            ));
        }
        if let Some(t) = self.threshold
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(Error::arg("fbeta_score", format!("threshold {t} must be in (0, 1]")));
        }
        Ok(())
    }
}

impl Metric for FBetaScore {
    fn name(&self) -> &str {
        &self.name
    }
    fn update_state(&mut self, y_true: &Tensor, y_pred: &Tensor) -> Result<()> {
        self.update_state_weighted(y_true, y_pred, None)
    }
    fn update_state_weighted(&mut self, y_true: &Tensor, y_pred: &Tensor, w: Option<&Tensor>) -> Result<()> {
        crate::autodiff::without_recording(|| {
            self.check()?;
            let op = "fbeta_score";
            if y_pred.rank() != 2 || y_true.shape() != y_pred.shape() {
                return Err(Error::shape(
                    op,
                    &[y_true.shape(), y_pred.shape()],
                    "expects labels and predictions of one shape [batch, classes]",
                ));
            }
            let classes = y_pred.shape()[1];
            if let Some(s) = &self.state
                && self.average != Average::Micro
                && s[0].shape() != [classes]
            {
                return Err(Error::shape(
                    op,
                    &[&s[0].shape(), y_pred.shape()],
                    "the classes differ from the earlier batches'",
                ));
            }
            let p = y_pred.cast(DType::F32)?;
            let hit = match self.threshold {
                Some(t) => p.greater(&p.scalar_like(t)?)?.cast(DType::F32)?,
                None => {
                    let top = p.max(Some(&[-1]), true)?;
                    let at_top = p.greater_equal(&top)?.cast(DType::F32)?;
                    let nonzero = p.abs()?.greater(&p.scalar_like(1e-9)?)?.cast(DType::F32)?;
                    at_top.mul(&nonzero)?
                }
            };
            let y = y_true.to_device(p.device())?.cast(DType::F32)?;
            let w = match w {
                Some(w) => {
                    if w.numel() != y_pred.shape()[0] {
                        return Err(Error::shape(
                            op,
                            &[w.shape(), y_pred.shape()],
                            "sample_weight needs one weight per example",
                        ));
                    }
                    Some(w.to_device(p.device())?.cast(DType::F32)?.reshape(&[-1, 1])?)
                }
                None => None,
            };
            let axes: Option<&[isize]> = match self.average {
                Average::Micro => None,
                _ => Some(&[0]),
            };
            let sum = |v: Tensor| -> Result<Tensor> {
                match &w {
                    Some(w) => v.mul(w)?.sum(axes, false),
                    None => v.sum(axes, false),
                }
            };
            let miss = hit.scalar_like(1.0)?.sub(&hit)?;
            let tp = sum(hit.mul(&y)?)?;
            let fp = sum(hit.mul(&y.scalar_like(1.0)?.sub(&y)?)?)?;
            let fneg = sum(miss.mul(&y)?)?;
            let weights = sum(y.clone())?;
            if self.state.is_none() {
                let dev = p.device().clone();
                let shape: Vec<usize> = match self.average {
                    Average::Micro => Vec::new(),
                    _ => vec![classes],
                };
                let z = || -> Result<Variable> {
                    Ok(Variable::with_trainable(
                        ops::zeros(&shape, DType::F32, &dev)?,
                        op,
                        false,
                    ))
                };
                self.state = Some([z()?, z()?, z()?, z()?]);
            }
            let vars = self.state.as_ref().ok_or_else(|| Error::arg(op, "no state"))?;
            for (v, d) in vars.iter().zip([tp, fp, fneg, weights]) {
                v.assign(&v.value().add(&d.to_device(&v.device())?)?)?;
            }
            Ok(())
        })
    }
    fn result(&self) -> Result<f64> {
        let Some(vars) = &self.state else { return Ok(0.0) };
        let [tp, fp, fneg, weights] = [0, 1, 2, 3].map(|i| vars[i].value().to_f64_vec());
        let (tp, fp, fneg, weights) = (tp?, fp?, fneg?, weights?);
        let b2 = self.beta * self.beta;
        let scores: Vec<f64> = tp
            .iter()
            .zip(&fp)
            .zip(&fneg)
            .map(|((&t, &f), &n)| {
                let precision = t / (t + f + EPS);
                let recall = t / (t + n + EPS);
                (1.0 + b2) * precision * recall / (b2 * precision + recall + EPS)
            })
            .collect();
        Ok(match self.average {
            Average::Weighted => {
                let total: f64 = weights.iter().sum();
                scores.iter().zip(&weights).map(|(s, w)| s * w / (total + EPS)).sum()
            }
            _ if scores.is_empty() => 0.0,
            _ => scores.iter().sum::<f64>() / scores.len() as f64,
        })
    }
    fn reset_state(&mut self) {
        if let Some(vars) = &self.state {
            for v in vars {
                if let Ok(z) = ops::zeros(&v.shape(), DType::F32, &v.device()) {
                    let _ = v.assign(&z);
                }
            }
        }
    }
    fn keras_config(&self) -> Option<serde_json::Value> {
        let f1 = self.beta == 1.0 && self.name == "f1_score";
        let mut config = serde_json::json!({"name": self.name, "dtype": "float32",
            "average": self.average.name(), "threshold": self.threshold});
        let class = if f1 {
            "F1Score"
        } else {
            config["beta"] = self.beta.into();
            "FBetaScore"
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

    /// Hand-counted: two classes, a tie at the top of a row counts for
    /// both, a row of zeros predicts nothing.
    #[test]
    fn counts_by_hand() {
        let d = Device::Cpu;
        let t = |v: Vec<f32>| Tensor::from_vec(v, &[3, 2], &d).unwrap();
        let y = t(vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
        let p = t(vec![0.7, 0.3, 0.5, 0.5, 0.0, 0.0]);
        let mut m = F1Score::new(Average::Micro);
        m.update_state(&y, &p).unwrap();
        // Predicted: (0), (0, 1) -> tp 2, fp 1, fn 1.
        let (pr, rc) = (2.0 / (3.0 + EPS), 2.0 / (3.0 + EPS));
        let want = 2.0 * pr * rc / (pr + rc + EPS);
        assert!((m.result().unwrap() - want).abs() < 1e-9);
        m.reset_state();
        assert_eq!(m.result().unwrap(), 0.0);
        let bad = Tensor::from_vec(vec![1.0f32; 3], &[3], &d).unwrap();
        assert!(matches!(m.update_state(&bad, &bad), Err(Error::Shape { .. })));
        let mut zero = FBetaScore::new(Average::Macro, 0.0);
        assert!(matches!(zero.update_state(&y, &p), Err(Error::InvalidArgument { .. })));
        let mut high = F1Score::new(Average::Macro).threshold(1.5);
        assert!(matches!(high.update_state(&y, &p), Err(Error::InvalidArgument { .. })));
    }
}
