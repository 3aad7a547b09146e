//! `UpSampling2D`: each pixel repeated into a block, as Keras' nearest
//! interpolation. Written as a broadcast product with a block of ones
//! between two reshapes, so the batch stays unknown in exports and the
//! gradient (the sum over each block) comes from the product's rule.
//! `Cropping2D`: a slice of each image.

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

/// `keras.layers.Cropping2D(cropping)`: rows cut from the top and bottom,
/// columns from the left and right of each `[height, width, channels]`
/// image.
pub struct Cropping2D {
    name: String,
    /// `[[top, bottom], [left, right]]`.
    pub cropping: [[usize; 2]; 2],
}

impl Cropping2D {
    /// `Cropping2D(cropping=((top, bottom), (left, right)))`.
    pub fn new(cropping: [[usize; 2]; 2]) -> Cropping2D {
        Cropping2D {
            name: unique_name("cropping2d"),
            cropping,
        }
    }
}

impl Layer for Cropping2D {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("cropping".into(), serde_json::json!(self.cropping));
        m.insert("data_format".into(), "channels_last".into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Cropping2D"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        let [[t, b], [l, r]] = self.cropping;
        let &[h, w, c] = s else {
            return Err(Error::shape(
                "Cropping2D",
                &[s],
                "expects examples [height, width, channels]",
            ));
        };
        // Keras refuses a crop that leaves nothing.
        match (t.checked_add(b).filter(|&k| k < h), l.checked_add(r).filter(|&k| k < w)) {
            (Some(v), Some(u)) => Ok(vec![h - v, w - u, c]),
            _ => Err(Error::shape(
                "Cropping2D",
                &[s],
                format!(
                    "layer {}: cropping {:?} leaves no rows or columns",
                    self.name, self.cropping
                ),
            )),
        }
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let &[n, h, w, c] = x.shape() else {
            return Err(Error::shape(
                "Cropping2D",
                &[x.shape()],
                "expects [batch, height, width, channels]",
            ));
        };
        let out = self.output_shape(&[h, w, c])?;
        let [[t, _], [l, _]] = self.cropping;
        x.slice(&[0, t, l, 0], &[n, out[0], out[1], c])
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

#[cfg(test)]
mod cropping_tests {
    use super::*;
    use crate::runtime::Device;

    #[test]
    fn cropping_cuts_each_side_and_refuses_to_leave_nothing() {
        let d = Device::cpu();
        let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[1, 3, 4, 1], &d).unwrap();
        let mut c = Cropping2D::new([[1, 0], [1, 2]]);
        let y = c.call(&x, false).unwrap();
        assert_eq!(y.shape(), &[1, 2, 1, 1]);
        assert_eq!(y.to_vec::<f32>().unwrap(), [5.0, 9.0]);
        let mut all = Cropping2D::new([[2, 1], [0, 0]]);
        assert!(matches!(all.call(&x, false), Err(Error::Shape { .. })));
        let mut huge = Cropping2D::new([[usize::MAX, 1], [0, 0]]);
        assert!(matches!(huge.call(&x, false), Err(Error::Shape { .. })));
    }
}

/// `keras.layers.Resizing(height, width, interpolation)`: each image
/// resized as `tf.image.resize` does (`bilinear` or `nearest`, no
/// antialiasing), after a centered crop to the target's aspect ratio with
/// `crop_to_aspect_ratio`, in f32 (integer images are rounded back to
/// their dtype, as Keras does).
pub struct Resizing {
    name: String,
    /// Output rows and columns.
    pub size: [usize; 2],
    /// `bilinear` (true) or `nearest`.
    pub bilinear: bool,
    /// Crop to the target's aspect ratio first (Keras' `crop_to_aspect_ratio`).
    pub crop_to_aspect_ratio: bool,
}

impl Resizing {
    /// `Resizing(height, width)` with bilinear interpolation.
    pub fn new(height: usize, width: usize) -> Resizing {
        Resizing {
            name: unique_name("resizing"),
            size: [height, width],
            bilinear: true,
            crop_to_aspect_ratio: false,
        }
    }
}

/// The largest centered window of `size`'s aspect ratio in an `h x w`
/// image: (top, left, rows, columns). The ratio is truncated from f32 as
/// Keras' TensorFlow backend computes it for `Resizing` (`narrow`), else
/// from f64 as `smart_resize` does for known shapes.
fn aspect_window(h: usize, w: usize, [th, tw]: [usize; 2], narrow: bool) -> (usize, usize, usize, usize) {
    let ratio = |a: usize, b: usize, c: usize| {
        if narrow {
            (a as f32 * b as f32 / c as f32) as usize
        } else {
            (a as f64 * b as f64 / c as f64) as usize
        }
    };
    let ch = ratio(w, th, tw).clamp(1, h.max(1));
    let cw = ratio(h, tw, th).clamp(1, w.max(1));
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// The output example of a layer that resizes `[height, width, channels]`
/// images to `size`.
fn resized(kind: &'static str, layer: &str, size: [usize; 2], s: &[usize]) -> Result<Vec<usize>> {
    match s {
        &[h, w, c] if h > 0 && w > 0 && size[0] > 0 && size[1] > 0 => Ok(vec![size[0], size[1], c]),
        _ => Err(Error::shape(
            kind,
            &[s, &size],
            format!("layer {layer} expects examples [height, width, channels] and a size of at least 1x1"),
        )),
    }
}

impl Layer for Resizing {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("height".into(), self.size[0].into());
        m.insert("width".into(), self.size[1].into());
        let i = if self.bilinear { "bilinear" } else { "nearest" };
        m.insert("interpolation".into(), i.into());
        m.insert("crop_to_aspect_ratio".into(), self.crop_to_aspect_ratio.into());
        m.insert("pad_to_aspect_ratio".into(), false.into());
        m.insert("fill_mode".into(), "constant".into());
        m.insert("fill_value".into(), 0.0.into());
        m.insert("antialias".into(), false.into());
        m.insert("data_format".into(), "channels_last".into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "Resizing"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        resized(self.kind(), &self.name, self.size, s)
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let &[n, h, w, c] = x.shape() else {
            return Err(Error::shape(
                "Resizing",
                &[x.shape()],
                "expects [batch, height, width, channels]",
            ));
        };
        self.output_shape(&[h, w, c])?;
        use crate::core::dtype::DType;
        // Keras resizes in f32 and rounds integer images back to their dtype.
        let dt = x.dtype();
        let xf = if dt == DType::F32 {
            x.clone()
        } else {
            x.cast(DType::F32)?
        };
        let (top, left, ch, cw) = if self.crop_to_aspect_ratio {
            aspect_window(h, w, self.size, true)
        } else {
            (0, 0, h, w)
        };
        let xf = if (ch, cw) == (h, w) {
            xf
        } else {
            xf.slice(&[0, top, left, 0], &[n, ch, cw, c])?
        };
        let y = crate::ops::image::resize(&xf, self.size, self.bilinear)?;
        if dt.is_float() { Ok(y) } else { y.round()?.cast(dt) }
    }
}

/// `keras.layers.CenterCrop(height, width)`: the centered `height x width`
/// window of each image (in f32, Keras' compute dtype); an image smaller
/// than that in either direction is cropped to the target's aspect ratio
/// and resized bilinearly, as Keras' `smart_resize` does.
pub struct CenterCrop {
    name: String,
    /// Output rows and columns.
    pub size: [usize; 2],
}

impl CenterCrop {
    /// `CenterCrop(height, width)`.
    pub fn new(height: usize, width: usize) -> CenterCrop {
        CenterCrop {
            name: unique_name("center_crop"),
            size: [height, width],
        }
    }
}

impl Layer for CenterCrop {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("height".into(), self.size[0].into());
        m.insert("width".into(), self.size[1].into());
        m.insert("data_format".into(), "channels_last".into());
        Ok(m.into())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "CenterCrop"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        resized(self.kind(), &self.name, self.size, s)
    }
    fn call(&mut self, x: &Tensor, _training: bool) -> Result<Tensor> {
        use crate::core::dtype::DType;
        let &[n, h, w, c] = x.shape() else {
            return Err(Error::shape(
                "CenterCrop",
                &[x.shape()],
                "expects [batch, height, width, channels]",
            ));
        };
        self.output_shape(&[h, w, c])?;
        let x = if x.dtype() == DType::F32 {
            x.clone()
        } else {
            x.cast(DType::F32)?
        };
        let [th, tw] = self.size;
        if h >= th && w >= tw {
            return x.slice(&[0, (h - th) / 2, (w - tw) / 2, 0], &[n, th, tw, c]);
        }
        // smart_resize: the window of the target's aspect ratio, resized.
        let (top, left, ch, cw) = aspect_window(h, w, self.size, false);
        let window = x.slice(&[0, top, left, 0], &[n, ch, cw, c])?;
        crate::ops::image::resize(&window, self.size, true)
    }
}
