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
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Device;

    #[test]
    fn repeats_pixels_and_refuses_bad_sizes() {
        let d = Device::Cpu;
        let x = Tensor::from_vec(vec![1.0f32, f32::NAN, -0.0, 4.0], &[1, 2, 1, 2], &d).unwrap();
        let y = UpSampling2D::new([2, 3]).call(&x, false).unwrap();
        assert_eq!(y.shape(), &[1, 4, 3, 2]);
        let v = y.to_vec::<f32>().unwrap();
        // Rows 0-1 repeat pixel (0, 0), rows 2-3 pixel (1, 0), channels kept.
        for r in 0..4 {
            for c in 0..3 {
                let at = (r * 3 + c) * 2;
                let (a, b) = if r < 2 { (1.0, f32::NAN) } else { (-0.0, 4.0) };
                assert_eq!(v[at].to_bits(), (a as f32).to_bits(), "{v:?}");
                assert!(v[at + 1] == b || (b.is_nan() && v[at + 1].is_nan()), "{v:?}");
            }
        }
        assert!(matches!(
            UpSampling2D::new([0, 2]).call(&x, false),
            Err(Error::InvalidArgument { .. })
        ));
        let flat = Tensor::from_vec(vec![1.0f32; 4], &[2, 2], &d).unwrap();
        assert!(matches!(
            UpSampling2D::new([2, 2]).call(&flat, false),
            Err(Error::Shape { .. })
        ));
        assert!(UpSampling2D::new([usize::MAX, 2]).output_shape(&[2, 2, 1]).is_err());
    }
}
