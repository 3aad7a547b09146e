//! Keras' image augmentation layers (`RandomFlip`, `RandomBrightness`,
//! `RandomContrast`, `RandomRotation`, `RandomZoom`, `RandomTranslation`):
//! the identity in inference, a random change per example in training.
//! Their draws are device random ops, as `Dropout`'s, so traced training
//! steps draw afresh like eager ones.
//!
//! The geometric ones (rotation, zoom, translation) resample images through
//! an affine map; that sampler is not built, so they train only as a typed
//! error (inference, `evaluate` and `predict` work).

use super::{Layer, base_config, unique_name};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::nn::initializers::next_seed;
use crate::ops;
use crate::tensor::Tensor;

/// Images `[batch, height, width, channels]` in a float dtype (integers
/// become f32, Keras' compute dtype).
fn images(layer: &str, kind: &'static str, x: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(Error::shape(
            kind,
            &[x.shape()],
            format!("layer {layer} expects images [batch, height, width, channels]"),
        ));
    }
    if x.dtype().is_float() {
        Ok(x.clone())
    } else {
        x.cast(DType::F32)
    }
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
        Ok(s.to_vec())
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
        let mut m = base_config(&self.name, "float32");
        m.insert("factor".into(), serde_json::json!([self.factor.0, self.factor.1]));
        m.insert(
            "value_range".into(),
            serde_json::json!([self.value_range.0, self.value_range.1]),
        );
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
        "RandomBrightness"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
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
        let mut m = base_config(&self.name, "float32");
        m.insert("factor".into(), serde_json::json!([self.factor.0, self.factor.1]));
        m.insert(
            "value_range".into(),
            serde_json::json!([self.value_range.0, self.value_range.1]),
        );
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
        "RandomContrast"
    }
    fn output_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        Ok(s.to_vec())
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
/// identity in inference; training through them is a typed error (the
/// affine resampler is not built).
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
        Ok(s.to_vec())
    }
    fn call(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        let x = images(&self.name, self.kind(), x)?;
        if training {
            return Err(Error::Unimplemented {
                what: format!("training through layer {} ({})", self.name, self.kind()),
                msg: "the affine resampler of Keras' geometric augmentations is not built; \
                      it is the identity in inference (evaluate, predict)"
                    .into(),
            });
        }
        Ok(x)
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
        assert!(matches!(rot.call(&x, true), Err(Error::Unimplemented { .. })));
        assert_eq!(
            rot.call(&x, false).unwrap().to_vec::<f32>().unwrap(),
            x.to_vec::<f32>().unwrap()
        );
    }
}
