//! `UpSampling2D`: each pixel repeated into a block, as Keras' nearest
//! interpolation. Written as a broadcast product with a block of ones
//! between two reshapes, so the batch stays unknown in exports and the
//! gradient (the sum over each block) comes from the product's rule.

use super::{Layer, base_config, unique_name};
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;

/// `keras.layers.UpSampling2D(size)`: `[batch, h, w, c]` to `[batch, h
/// sh, w sw, c]`, each pixel repeated `sh x sw` times (nearest; Keras'
/// `bilinear` is not built).
pub struct UpSampling2D {
    name: String,
    /// Rows and columns each pixel becomes.
    pub size: [usize; 2],
}

impl UpSampling2D {
    /// `UpSampling2D(size=(sh, sw))`; Keras' default is `(2, 2)`.
    pub fn new(size: [usize; 2]) -> UpSampling2D {
        UpSampling2D {
            name: unique_name("up_sampling2d"),
            size,
        }
    }
}

impl Layer for UpSampling2D {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("size".into(), serde_json::json!(self.size));
        m.insert("data_format".into(), "channels_last".into());
        m.insert("interpolation".into(), "nearest".into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "UpSampling2D"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        let [sh, sw] = self.size;
        match s {
            &[h, w, c] if sh > 0 && sw > 0 => h
                .checked_mul(sh)
                .zip(w.checked_mul(sw))
                .map(|(h, w)| vec![h, w, c])
                .ok_or_else(|| Error::shape("UpSampling2D", &[s], "the upsampled size overflows")),
            &[_, _, _] => Err(Error::arg(
                "UpSampling2D",
                format!("layer {}: size {:?} must be positive", self.name, self.size),
            )),
            _ => Err(Error::shape(
                "UpSampling2D",
                &[s],
                "expects examples [height, width, channels]",
            )),
        }
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let &[_, h, w, c] = x.shape() else {
            return Err(Error::shape(
                "UpSampling2D",
                &[x.shape()],
                "expects [batch, height, width, channels]",
            ));
        };
        let out = self.output_shape(&[h, w, c])?;
        let [sh, sw] = self.size;
        let d = |v: usize| v as isize;
        let ones = crate::ops::creation::full(&[1, 1, sh, 1, sw, 1], 1.0, x.dtype(), x.device())?;
        x.reshape(&[-1, d(h), 1, d(w), 1, d(c)])?
            .mul(&ones)?
            .reshape(&[-1, d(out[0]), d(out[1]), d(c)])
    }
}
