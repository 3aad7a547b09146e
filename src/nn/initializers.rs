//! Weight initializers with Keras' names and formulas. Each call draws a
//! new seed from a counter started by `set_random_seed`, so a program that
//! seeds once builds the same weights on every run and device. The counter
//! belongs to the calling thread, so models built on different threads do
//! not perturb each other's sequences.
//!
//! Layers in [`crate::nn::layers`] take an [`Initializer`] for their
//! kernels and biases; the draws are the seeded random ops of [`crate::ops`]
//! (`random_uniform`, `truncated_normal`, ...), run on the layer's device.

use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::ops;
use crate::runtime::Device;
use crate::tensor::Tensor;
use std::cell::Cell;

thread_local! {
    static SEED: Cell<u64> = const { Cell::new(0x5EED) };
}

/// `keras.utils.set_random_seed`: restarts this thread's seed sequence of
/// initializers and dropout.
pub fn set_random_seed(seed: u64) {
    SEED.with(|s| s.set(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED));
}

/// The next seed of this thread's sequence, advancing it: what every
/// random initializer and `Dropout` call uses, so a layer that draws
/// randomness stays reproducible under [`set_random_seed`].
pub fn next_seed() -> u64 {
    SEED.with(|s| {
        let v = s.get();
        s.set(v.wrapping_add(1));
        v
    })
}

/// `keras.initializers`: how a weight's initial value is drawn from its
/// shape. Fans come from [`fans`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Initializer {
    /// U(-l, l), l = sqrt(6 / (fan_in + fan_out)): Keras' default for kernels.
    GlorotUniform,
    /// N(0, 2 / fan_in) truncated at two standard deviations.
    HeNormal,
    /// `zeros`: Keras' default for biases.
    Zeros,
    /// `ones`: batch normalization's `gamma` and moving variance.
    Ones,
    /// `Constant(value)`.
    Constant(f64),
    /// `RandomNormal(mean, stddev)`; Keras' defaults are 0.0 and 0.05.
    RandomNormal {
        /// Mean of the normal distribution.
        mean: f64,
        /// Standard deviation of the normal distribution.
        stddev: f64,
    },
    /// `RandomUniform(minval, maxval)`; Keras' defaults are -0.05 and 0.05.
    RandomUniform {
        /// Lower bound, inclusive.
        minval: f64,
        /// Upper bound, exclusive.
        maxval: f64,
    },
}

/// (fan_in, fan_out) of a kernel shape, as Keras computes them: `[in, out]`
/// for dense, `[kh, kw, in, out]` (HWIO) for conv, where both fans are
/// multiplied by the receptive field `kh * kw`. A vector counts as its own
/// length for both; a scalar as 1.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        _ => {
            // Saturating: a shape this large fails to allocate, with an error.
            let receptive = shape[..shape.len() - 2]
                .iter()
                .fold(1usize, |a, &d| a.saturating_mul(d));
            (
                shape[shape.len() - 2].saturating_mul(receptive),
                shape[shape.len() - 1].saturating_mul(receptive),
            )
        }
    }
}

impl Initializer {
    /// A tensor of `shape` and `dtype` on `device`, drawn with the next seed
    /// of this thread (constant initializers draw none).
    ///
    /// Errors are those of the creation ops (an unsupported dtype, device
    /// memory).
    pub fn init(&self, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let (fan_in, fan_out) = fans(shape);
        match *self {
            Initializer::GlorotUniform => {
                let l = (6.0 / fan_in.saturating_add(fan_out).max(1) as f64).sqrt();
                ops::random_uniform(shape, -l, l, dtype, next_seed(), device)
            }
            Initializer::HeNormal => {
                // Keras divides by .87962566 so the truncated normal keeps variance 2 / fan_in.
                let std = (2.0 / fan_in.max(1) as f64).sqrt() / 0.879_625_660_575_294_5;
                ops::truncated_normal(shape, 0.0, std, dtype, next_seed(), device)
            }
            Initializer::Zeros => ops::zeros(shape, dtype, device),
            Initializer::Ones => ops::ones(shape, dtype, device),
            Initializer::Constant(v) => ops::full(shape, v, dtype, device),
            Initializer::RandomNormal { mean, stddev } => {
                ops::random_normal(shape, mean, stddev, dtype, next_seed(), device)
            }
            Initializer::RandomUniform { minval, maxval } => {
                ops::random_uniform(shape, minval, maxval, dtype, next_seed(), device)
            }
        }
    }
}
