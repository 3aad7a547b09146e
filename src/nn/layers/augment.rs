//! Keras' image augmentation layers (`RandomFlip`, `RandomBrightness`,
//! `RandomContrast`, `RandomRotation`, `RandomZoom`, `RandomTranslation`):
//! the identity in inference, a random change per example in training.
//! Their draws are device random ops, as `Dropout`'s, so traced training
//! steps draw afresh like eager ones.
//!
//! The geometric ones (rotation, zoom, translation) resample each image
//! through a random affine map ([`crate::ops::image::affine_transform`]),
//! with Keras' matrices, fill modes and interpolations.

use super::{Layer, base_config, unique_name};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::nn::initializers::next_seed;
use crate::ops;
use crate::ops::image::{FillMode, affine_transform};
use crate::tensor::Tensor;

/// Images `[batch, height, width, channels]` in f32, the layers' compute
/// dtype in Keras (integers and 16-bit floats are cast).
fn images(layer: &str, kind: &'static str, x: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(Error::shape(
            kind,
            &[x.shape()],
            format!("layer {layer} expects images [batch, height, width, channels]"),
        ));
    }
    if x.dtype() == DType::F32 {
        Ok(x.clone())
    } else {
        x.cast(DType::F32)
    }
}

/// The output of one example `[height, width, channels]`: the same.
fn example(layer: &str, kind: &'static str, s: &[usize]) -> Result<Vec<usize>> {
    if s.len() != 3 {
        return Err(Error::shape(
            kind,
            &[s],
            format!("layer {layer} expects examples [height, width, channels]"),
        ));
    }
    Ok(s.to_vec())
}

/// One uniform draw per example, `[batch, 1, 1, 1]`, in `x`'s dtype.
fn per_example(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    let n = x.shape()[0];
    ops::random_uniform(&[n, 1, 1, 1], lo, hi, x.dtype(), next_seed(), x.device())
}

/// Which axes `RandomFlip` flips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlipMode {
    /// Left to right (`"horizontal"`).
    Horizontal,
    /// Top to bottom (`"vertical"`).
    Vertical,
    /// Both, with one draw per example (`"horizontal_and_vertical"`).
    Both,
}

impl FlipMode {
    /// The mode of a Keras name.
    pub fn from_name(name: &str) -> Result<FlipMode> {
        match name {
            "horizontal" => Ok(FlipMode::Horizontal),
            "vertical" => Ok(FlipMode::Vertical),
            "horizontal_and_vertical" => Ok(FlipMode::Both),
            m => Err(Error::arg(
                "RandomFlip",
                format!("mode {m:?} is not horizontal, vertical or horizontal_and_vertical"),
            )),
        }
    }
    fn name(self) -> &'static str {
        match self {
            FlipMode::Horizontal => "horizontal",
            FlipMode::Vertical => "vertical",
            FlipMode::Both => "horizontal_and_vertical",
        }
    }
}

/// `keras.layers.RandomFlip(mode)`: in training, each image is flipped with
/// probability 1/2.
pub struct RandomFlip {
    name: String,
    /// The axes flipped.
    pub mode: FlipMode,
}

impl RandomFlip {
    /// `RandomFlip(mode)` (Keras' default is `horizontal_and_vertical`).
    pub fn new(mode: FlipMode) -> RandomFlip {
        RandomFlip {
            name: unique_name("random_flip"),
            mode,
        }
    }
}

/// `x` reversed along `axis` (a gather of constant indices).
fn reversed(x: &Tensor, axis: usize) -> Result<Tensor> {
    let n = x.shape()[axis];
    let len = i32::try_from(n).map_err(|_| Error::shape("RandomFlip", &[x.shape()], "too large to flip"))?;
    let idx = Tensor::from_vec((0..len).rev().collect::<Vec<i32>>(), &[n], x.device())?;
    x.gather(&idx, axis as isize)
}

impl Layer for RandomFlip {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        m.insert("mode".into(), self.mode.name().into());
        m.insert("seed".into(), serde_json::Value::Null);
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
        "RandomFlip"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        example(&self.name, self.kind(), s)
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        let x = images(&self.name, "RandomFlip", x)?;
        if !training {
            return Ok(x);
        }
        let flip = per_example(&x, 0.0, 1.0)?.less_equal(&x.scalar_like(0.5)?)?;
        let mut y = x;
        if matches!(self.mode, FlipMode::Horizontal | FlipMode::Both) {
            y = flip.where_(&reversed(&y, 2)?, &y)?;
        }
        if matches!(self.mode, FlipMode::Vertical | FlipMode::Both) {
            y = flip.where_(&reversed(&y, 1)?, &y)?;
        }
        Ok(y)
    }
}

/// The Keras config of a layer that changes pixel values by a random
/// `factor` within `value_range`.
fn value_config(name: &str, factor: (f64, f64), value_range: (f64, f64)) -> serde_json::Value {
    let mut m = base_config(name, "float32");
    m.insert("factor".into(), serde_json::json!([factor.0, factor.1]));
    m.insert("value_range".into(), serde_json::json!([value_range.0, value_range.1]));
    m.insert("seed".into(), serde_json::Value::Null);
    m.insert("data_format".into(), "channels_last".into());
    m.into()
}

/// `keras.layers.RandomBrightness(factor, value_range)`: in training, each
/// image gets `delta * (high - low)` added, `delta` uniform in `factor`,
/// then is clipped to `value_range`.
pub struct RandomBrightness {
    name: String,
    /// The range of `delta`, a fraction of the value range.
    pub factor: (f64, f64),
    /// The images' range (`[0, 255]`).
    pub value_range: (f64, f64),
}

impl RandomBrightness {
    /// `RandomBrightness(factor)`: `delta` in `[-factor, factor]`, values in `[0, 255]`.
    pub fn new(factor: f64) -> RandomBrightness {
        RandomBrightness::with_range((-factor.abs(), factor.abs()), (0.0, 255.0))
    }
    /// `RandomBrightness((lower, upper), value_range=(low, high))`.
    pub fn with_range(factor: (f64, f64), value_range: (f64, f64)) -> RandomBrightness {
        RandomBrightness {
            name: unique_name("random_brightness"),
            factor,
            value_range,
        }
    }
}

impl Layer for RandomBrightness {
    fn keras_config(&self) -> Result<serde_json::Value> {
        Ok(value_config(&self.name, self.factor, self.value_range))
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "RandomBrightness"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        example(&self.name, self.kind(), s)
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        let x = images(&self.name, "RandomBrightness", x)?;
        if !training {
            return Ok(x);
        }
        let (lo, hi) = self.value_range;
        let delta = per_example(&x, self.factor.0, self.factor.1)?.mul_scalar(hi - lo)?;
        x.add(&delta)?
            .maximum(&x.scalar_like(lo)?)?
            .minimum(&x.scalar_like(hi)?)
    }
}

/// `keras.layers.RandomContrast(factor, value_range)`: in training, each
/// image's channels move away from (or toward) their mean over the image by
/// a factor uniform in `[1 - lower, 1 + upper]`, then are clipped to
/// `value_range`.
pub struct RandomContrast {
    name: String,
    /// `(lower, upper)` as Keras keeps it (`RandomContrast(0.2)` is `(0, 0.2)`).
    pub factor: (f64, f64),
    /// The images' range (`[0, 255]`).
    pub value_range: (f64, f64),
}

impl RandomContrast {
    /// `RandomContrast((lower, upper), value_range=(low, high))`.
    pub fn new(factor: (f64, f64), value_range: (f64, f64)) -> RandomContrast {
        RandomContrast {
            name: unique_name("random_contrast"),
            factor,
            value_range,
        }
    }
}

impl Layer for RandomContrast {
    fn keras_config(&self) -> Result<serde_json::Value> {
        Ok(value_config(&self.name, self.factor, self.value_range))
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }
    fn kind(&self) -> &'static str {
        "RandomContrast"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        example(&self.name, self.kind(), s)
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        let x = images(&self.name, "RandomContrast", x)?;
        if !training {
            return Ok(x);
        }
        let f = per_example(&x, 1.0 - self.factor.0, 1.0 + self.factor.1)?;
        let mean = x.mean(Some(&[1]), true)?.mean(Some(&[2]), true)?;
        let (lo, hi) = self.value_range;
        x.sub(&mean)?
            .mul(&f)?
            .add(&mean)?
            .maximum(&x.scalar_like(lo)?)?
            .minimum(&x.scalar_like(hi)?)
    }
}

/// The geometric augmentations, kept with their Keras options so that
/// files go both ways.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Geometric {
    /// `RandomRotation(factor)`: a turn of `factor` times a full circle.
    Rotation {
        /// `(lower, upper)` fractions of a full turn.
        factor: (f64, f64),
    },
    /// `RandomZoom(height_factor, width_factor)`.
    Zoom {
        /// `(lower, upper)` for the height.
        height: (f64, f64),
        /// `(lower, upper)` for the width; `None` keeps the aspect ratio.
        width: Option<(f64, f64)>,
    },
    /// `RandomTranslation(height_factor, width_factor)`.
    Translation {
        /// `(lower, upper)` fractions of the height.
        height: (f64, f64),
        /// `(lower, upper)` fractions of the width.
        width: (f64, f64),
    },
}

/// `keras.layers.RandomRotation`, `RandomZoom` and `RandomTranslation`: the
/// identity in inference; in training each image turns (by `factor` of a
/// full turn), zooms (`1 + factor`: above 1 zooms out) or shifts (`factor`
/// of its size), read through `fill_mode` (`reflect`, `wrap`, `constant`,
/// `nearest`) with `bilinear` or `nearest` interpolation.
pub struct RandomGeometric {
    name: String,
    /// What the layer draws.
    pub kind: Geometric,
    /// Keras' `fill_mode`, `interpolation` and `fill_value`, kept for files.
    pub fill_mode: String,
    /// Keras' `interpolation`.
    pub interpolation: String,
    /// Keras' `fill_value`.
    pub fill_value: f64,
}

impl RandomGeometric {
    /// A geometric augmentation with Keras' defaults (`reflect`,
    /// `bilinear`, 0).
    pub fn new(kind: Geometric) -> RandomGeometric {
        let base = match kind {
            Geometric::Rotation { .. } => "random_rotation",
            Geometric::Zoom { .. } => "random_zoom",
            Geometric::Translation { .. } => "random_translation",
        };
        RandomGeometric {
            name: unique_name(base),
            kind,
            fill_mode: "reflect".into(),
            interpolation: "bilinear".into(),
            fill_value: 0.0,
        }
    }
}

impl Layer for RandomGeometric {
    fn keras_config(&self) -> Result<serde_json::Value> {
        let mut m = base_config(&self.name, "float32");
        let pair = |p: (f64, f64)| serde_json::json!([p.0, p.1]);
        match self.kind {
            Geometric::Rotation { factor } => {
                m.insert("factor".into(), pair(factor));
            }
            Geometric::Zoom { height, width } => {
                m.insert("height_factor".into(), pair(height));
                m.insert("width_factor".into(), width.map_or(serde_json::Value::Null, pair));
            }
            Geometric::Translation { height, width } => {
                m.insert("height_factor".into(), pair(height));
                m.insert("width_factor".into(), pair(width));
            }
        }
        m.insert("fill_mode".into(), self.fill_mode.clone().into());
        m.insert("interpolation".into(), self.interpolation.clone().into());
        m.insert("fill_value".into(), self.fill_value.into());
        m.insert("seed".into(), serde_json::Value::Null);
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
        match self.kind {
            Geometric::Rotation { .. } => "RandomRotation",
            Geometric::Zoom { .. } => "RandomZoom",
            Geometric::Translation { .. } => "RandomTranslation",
        }
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        example(&self.name, self.kind(), s)
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        let x = images(&self.name, self.kind(), x)?;
        let fill = FillMode::from_name(&self.fill_mode)
            .map_err(|e| Error::arg(self.kind(), format!("layer {}: {e}", self.name)))?;
        let bilinear = match self.interpolation.as_str() {
            "bilinear" => true,
            "nearest" => false,
            i => {
                return Err(Error::arg(
                    self.kind(),
                    format!("layer {}: interpolation {i:?} is not bilinear or nearest", self.name),
                ));
            }
        };
        if !training {
            return Ok(x);
        }
        let &[n, h, w, _] = x.shape() else { return Ok(x) };
        let dev = x.device();
        let draw = |(lo, hi): (f64, f64)| ops::random_uniform(&[n], lo, hi, DType::F32, next_seed(), dev);
        let zeros = Tensor::full(&[n], 0.0, DType::F32, dev)?;
        let ones = Tensor::full(&[n], 1.0, DType::F32, dev)?;
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        // Each row maps an output pixel to the input point it reads, as
        // Keras builds it for ImageProjectiveTransformV3.
        let rows: [Tensor; 6] = match self.kind {
            Geometric::Rotation { factor } => {
                let deg = draw((factor.0 * 360.0, factor.1 * 360.0))?;
                let rad = deg.mul_scalar(std::f64::consts::PI / 180.0)?;
                let (cos, sin) = (rad.cos()?, rad.sin()?);
                let a1 = sin.neg()?;
                let a2 = cos.mul_scalar(-cx)?.sub(&a1.mul_scalar(cy)?)?.add_scalar(cx)?;
                let b2 = sin.mul_scalar(-cx)?.sub(&cos.mul_scalar(cy)?)?.add_scalar(cy)?;
                [cos.clone(), a1, a2, sin, cos, b2]
            }
            Geometric::Zoom { height, width } => {
                let zy = draw((1.0 + height.0, 1.0 + height.1))?;
                let zx = match width {
                    Some(wf) => draw((1.0 + wf.0, 1.0 + wf.1))?,
                    None => zy.clone(),
                };
                let a2 = zx.neg()?.add_scalar(1.0)?.mul_scalar(cx)?;
                let b2 = zy.neg()?.add_scalar(1.0)?.mul_scalar(cy)?;
                [zx, zeros.clone(), a2, zeros.clone(), zy, b2]
            }
            Geometric::Translation { height, width } => {
                let ty = draw(height)?.mul_scalar(h as f64)?;
                let tx = draw(width)?.mul_scalar(w as f64)?;
                [
                    ones.clone(),
                    zeros.clone(),
                    tx.neg()?,
                    zeros.clone(),
                    ones.clone(),
                    ty.neg()?,
                ]
            }
        };
        let [r0, r1, r2, r3, r4, r5] = &rows;
        let t = ops::layout::stack(&[r0, r1, r2, r3, r4, r5, &zeros, &zeros], 1)?;
        affine_transform(&x, &t, bilinear, fill, self.fill_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Device;

    fn image(d: &Device) -> Tensor {
        // Two 2x3 images of one channel, values 0..12.
        Tensor::from_vec((0..12).map(|v| v as f32 * 20.0).collect(), &[2, 2, 3, 1], d).unwrap()
    }

    #[test]
    fn flips_are_whole_images_and_inference_is_the_identity() {
        let d = Device::cpu();
        let x = image(&d);
        let mut flip = RandomFlip::new(FlipMode::Horizontal);
        assert_eq!(
            flip.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
            x.to_vec::<f32>().unwrap()
        );
        let xs = x.to_vec::<f32>().unwrap();
        let mut seen = [false, false];
        for _ in 0..40 {
            let y = flip.call(&x, true).unwrap().to_vec::<f32>().unwrap();
            for b in 0..2 {
                let img = &y[b * 6..b * 6 + 6];
                let orig = &xs[b * 6..b * 6 + 6];
                let mirrored: Vec<f32> = orig.chunks(3).flat_map(|r| r.iter().rev().copied()).collect();
                assert!(img == orig || img == mirrored.as_slice(), "{img:?}");
                seen[usize::from(img == mirrored.as_slice())] = true;
            }
        }
        assert_eq!(seen, [true, true], "both outcomes in 80 draws");
    }

    #[test]
    fn brightness_and_contrast_stay_in_range() {
        let d = Device::cpu();
        let x = image(&d);
        let mut b = RandomBrightness::new(0.5);
        let mut c = RandomContrast::new((0.0, 3.0), (0.0, 255.0));
        for _ in 0..10 {
            for y in [b.call(&x, true).unwrap(), c.call(&x, true).unwrap()] {
                assert!(y.to_vec::<f32>().unwrap().iter().all(|v| (0.0..=255.0).contains(v)));
            }
        }
        // A shift keeps differences within an image (before clipping).
        let mut small = RandomBrightness::with_range((0.1, 0.1), (0.0, 1000.0));
        let y = small.call(&x, true).unwrap().to_vec::<f32>().unwrap();
        assert!(
            (y[1] - y[0] - 20.0).abs() < 1e-3 && (y[0] - 100.0).abs() < 1e-3,
            "{y:?}"
        );
        let mut rot = RandomGeometric::new(Geometric::Rotation { factor: (-0.1, 0.1) });
        assert_eq!(
            rot.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
            x.to_vec::<f32>().unwrap()
        );
        // A half turn of a 2x3 image reverses it (reflect never reads outside).
        let mut half = RandomGeometric::new(Geometric::Rotation { factor: (0.5, 0.5) });
        let y = half.call(&x, true).unwrap().to_vec::<f32>().unwrap();
        let xs = x.to_vec::<f32>().unwrap();
        for b in 0..2 {
            let rev: Vec<f32> = xs[b * 6..b * 6 + 6].iter().rev().copied().collect();
            for (g, w) in y[b * 6..b * 6 + 6].iter().zip(&rev) {
                assert!((g - w).abs() < 1e-3, "{y:?}");
            }
        }
        // A shift by a whole image width reads only the constant fill.
        let mut shift = RandomGeometric::new(Geometric::Translation {
            height: (0.0, 0.0),
            width: (1.0, 1.0),
        });
        shift.fill_mode = "constant".into();
        shift.fill_value = 7.0;
        let y = shift.call(&x, true).unwrap().to_vec::<f32>().unwrap();
        assert!(y.iter().all(|&v| v == 7.0), "{y:?}");
        let mut bad = RandomGeometric::new(Geometric::Zoom {
            height: (0.1, 0.2),
            width: None,
        });
        bad.fill_mode = "mirror".into();
        assert!(matches!(bad.call(&x, false), Err(Error::InvalidArgument { .. })));
    }
}
