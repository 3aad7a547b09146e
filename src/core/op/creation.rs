//! Attributes of the creation ops: seeded random tensors ([`Random`],
//! [`Distribution`]) and the generator behind them.
//!
//! Random values are generated on the host with a counter-based generator
//! (SplitMix64), so a seed gives the same tensor on every device.
//!
//! Part of [`crate::core::op`]; the public functions (`zeros`, `full`,
//! `random_normal`, …) are in `ops::creation`.

use crate::core::dtype::DType;
use crate::core::shape::numel;

/// SplitMix64: a counter-based generator, so element i depends only on (seed, i).
pub(crate) fn splitmix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i.wrapping_add(1)));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) with 53 random bits.
pub(crate) fn unit(seed: u64, i: u64) -> f64 {
    (splitmix(seed, i) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal value `i` of the stream `seed` (Box–Muller).
pub(crate) fn normal_at(seed: u64, i: u64) -> f64 {
    let u1 = unit(seed, 2 * i).max(f64::MIN_POSITIVE);
    let u2 = unit(seed, 2 * i + 1);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The distribution a [`Random`] tensor is drawn from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Uniform in `[minval, maxval)` (`tf.random.uniform`).
    Uniform {
        /// Inclusive lower bound.
        minval: f64,
        /// Exclusive upper bound.
        maxval: f64,
    },
    /// Gaussian (`tf.random.normal`).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
    },
    /// Normal values beyond two standard deviations redrawn
    /// (`tf.random.truncated_normal`).
    TruncatedNormal {
        /// Mean of the untruncated normal.
        mean: f64,
        /// Standard deviation of the untruncated normal.
        stddev: f64,
    },
}

/// A random tensor: the values are a pure function of (seed, index), drawn
/// on the host, so a seed gives the same tensor on every device. A traced
/// graph reseeds it on every call (`reseeded`).
#[derive(Clone, Debug, PartialEq)]
pub struct Random {
    /// Output shape.
    pub shape: Vec<usize>,
    /// Output dtype; a float type.
    pub dtype: DType,
    /// What the values are drawn from.
    pub dist: Distribution,
    /// The stream: equal seeds give equal tensors.
    pub seed: u64,
}

impl Random {
    pub(crate) fn reseeded(&self, call: u64) -> Random {
        Random {
            seed: splitmix(self.seed, call),
            ..self.clone()
        }
    }

    pub(crate) fn values(&self) -> Vec<f64> {
        (0..numel(&self.shape) as u64).map(|i| self.value(i)).collect()
    }

    /// Value `i` of the tensor (row-major), a pure function of (seed, i),
    /// so that any piece can be drawn on its own.
    #[inline]
    pub(crate) fn value(&self, i: u64) -> f64 {
        let seed = self.seed;
        match self.dist {
            Distribution::Uniform { minval, maxval } => minval + (maxval - minval) * unit(seed, i),
            Distribution::Normal { mean, stddev } => mean + stddev * normal_at(seed, i),
            Distribution::TruncatedNormal { mean, stddev } => {
                let n = (numel(&self.shape) as u64).max(1);
                let mut k = i;
                loop {
                    let z = normal_at(seed, k);
                    if z.abs() <= 2.0 {
                        return mean + stddev * z;
                    }
                    k += n;
                }
            }
        }
    }
}
