//! TFLite's quantization arithmetic: symmetric per-channel int8 weights,
//! asymmetric per-tensor int8 activations calibrated on data, int32 bias.

use super::net::{Net, OP};
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;

/// Symmetric int8 per channel along `dim`: scale max|w|/127 (1 for an
/// all-zero channel), values in [-127, 127].
pub(crate) fn per_channel(data: &[f32], shape: &[usize], dim: usize) -> (Vec<i8>, Vec<f32>) {
    let channels = shape.get(dim).copied().unwrap_or(1).max(1);
    let inner: usize = shape.iter().skip(dim + 1).product();
    let channel = |i: usize| (i / inner.max(1)) % channels;
    let mut max = vec![0.0f32; channels];
    for (i, &w) in data.iter().enumerate() {
        let m = &mut max[channel(i)];
        *m = m.max(w.abs());
    }
    let scales: Vec<f32> = max
        .iter()
        .map(|&m| if m > 0.0 && m.is_finite() { m / 127.0 } else { 1.0 })
        .collect();
    let q = data
        .iter()
        .enumerate()
        .map(|(i, &w)| (w / scales[channel(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Asymmetric int8 parameters for the range [lo, hi] widened to hold 0.
pub(crate) fn affine(lo: f32, hi: f32) -> (f32, i64) {
    let (lo, mut hi) = (lo.min(0.0), hi.max(0.0));
    if !(hi - lo).is_normal() {
        hi = lo + 1.0;
    }
    let scale = (hi - lo) / 255.0;
    let zero = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i64;
    (scale, zero)
}

pub(crate) fn quantize(x: f32, scale: f32, zero: i64) -> i8 {
    ((x / scale).round() + zero as f32).clamp(-128.0, 127.0) as i8
}

pub(crate) fn bias(b: f32, scale: f32) -> i32 {
    let q = (f64::from(b) / f64::from(scale)).round();
    q.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

/// The (min, max) of every activation over a representative dataset.
pub(crate) struct Ranges(Vec<Option<(f32, f32)>>);

impl Ranges {
    pub(crate) fn get(&self, v: usize) -> Option<(f32, f32)> {
        self.0.get(v).copied().flatten()
    }

    pub(crate) fn calibrate(net: &Net, data: &[Vec<Tensor>]) -> Result<Ranges> {
        if data.is_empty() {
            return Err(Error::arg(OP, "the representative dataset is empty"));
        }
        let mut r: Vec<Option<(f32, f32)>> = vec![None; net.values.len()];
        for (k, sample) in data.iter().enumerate() {
            if sample.len() != net.inputs.len() {
                return Err(Error::arg(
                    OP,
                    format!(
                        "representative dataset sample {k}: {} tensors for a model of {} inputs",
                        sample.len(),
                        net.inputs.len()
                    ),
                ));
            }
            for (t, &v) in sample.iter().zip(&net.inputs) {
                let want = &net.values[v].shape;
                let fits = t.rank() == want.len() && t.shape().iter().zip(want).all(|(&d, w)| w.is_none_or(|w| w == d));
                if !fits {
                    return Err(Error::shape(
                        OP,
                        &[t.shape()],
                        format!(
                            "representative dataset sample {k}: input '{}' takes shape {:?} (None: any size)",
                            net.values[v].name, want
                        ),
                    ));
                }
            }
            let vals = net.eval(sample)?;
            for (slot, t) in r.iter_mut().zip(vals) {
                let Some(t) = t else { continue };
                let v = t.to_f64_vec()?;
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::arg(
                        OP,
                        format!("representative dataset sample {k} gives non-finite activations"),
                    ));
                }
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min) as f32;
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max) as f32;
                if v.is_empty() {
                    continue;
                }
                *slot = Some(match *slot {
                    Some((a, b)) => (a.min(lo), b.max(hi)),
                    None => (lo, hi),
                });
            }
        }
        Ok(Ranges(r))
    }
}
