//! Tensor creation: fills (`tf.zeros`, `tf.ones`, `tf.fill`), ranges
//! (`tf.range`) and seeded random values (`tf.random.*`), on a given
//! [`Device`]. Constants from host data are [`Tensor::from_vec`].
//!
//! Random values are generated on the host with a counter-based generator
//! (SplitMix64), so a seed gives the same tensor on every device; the
//! distributions are [`crate::core::op::creation`]'s. float64 is refused on
//! a GPU ([`Error::DType`]).

pub use crate::core::op::creation::*;

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::ops::{Op, exec_on};
use crate::runtime::Device;
use crate::runtime::cpu::CpuData;
use crate::tensor::Tensor;

fn check_gpu_dtype(op: &'static str, dtype: DType, device: &Device) -> Result<()> {
    if dtype == DType::F64 && device.is_gpu() {
        return Err(Error::dtype(op, &[dtype], "float64 exists only on the CPU device"));
    }
    Ok(())
}

/// `tf.fill(shape, value)` with the given dtype; on a GPU, filled by a kernel.
pub fn full(shape: &[usize], value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    check_gpu_dtype("fill", dtype, device)?;
    exec_on(
        Op::Fill {
            shape: shape.to_vec(),
            value,
            dtype,
        },
        device,
    )
}

/// `tf.zeros(shape, dtype)` on `device`.
pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    full(shape, 0.0, dtype, device)
}

/// `tf.ones(shape, dtype)` on `device`.
pub fn ones(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    full(shape, 1.0, dtype, device)
}

/// `tf.range(start, limit, delta)`: `ceil((limit - start) / delta)` values
/// (none when that is negative), built on the host. A zero or non-finite
/// `delta` is [`Error::InvalidArgument`].
pub fn arange(start: f64, limit: f64, delta: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    if delta == 0.0 || !delta.is_finite() {
        return Err(Error::arg(
            "range",
            format!("delta must be finite and non-zero, got {delta}"),
        ));
    }
    let count = ((limit - start) / delta).ceil().max(0.0);
    if !count.is_finite() || count >= (isize::MAX as usize / 8) as f64 {
        return Err(Error::arg(
            "range",
            format!("range({start}, {limit}, {delta}) has {count} elements, more than fit in memory"),
        ));
    }
    let n = count as usize;
    let mut v: Vec<f64> = Vec::new();
    crate::runtime::cpu::reserve(&mut v, n, "range")?;
    v.extend((0..n).map(|i| start + i as f64 * delta));
    Tensor::from_data(CpuData::from_f64(dtype, &v), &[n], device)
}

fn random(
    name: &'static str,
    shape: &[usize],
    dist: Distribution,
    dtype: DType,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    if !dtype.is_float() {
        return Err(Error::dtype(name, &[dtype], "needs a float dtype"));
    }
    check_gpu_dtype(name, dtype, device)?;
    exec_on(
        Op::Random(Random {
            shape: shape.to_vec(),
            dtype,
            dist,
            seed,
        }),
        device,
    )
}

/// `tf.random.uniform(shape, minval, maxval, seed=seed)`.
pub fn random_uniform(
    shape: &[usize],
    minval: f64,
    maxval: f64,
    dtype: DType,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    random(
        "random_uniform",
        shape,
        Distribution::Uniform { minval, maxval },
        dtype,
        seed,
        device,
    )
}

/// `tf.random.normal(shape, mean, stddev, seed=seed)`.
pub fn random_normal(
    shape: &[usize],
    mean: f64,
    stddev: f64,
    dtype: DType,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    random(
        "random_normal",
        shape,
        Distribution::Normal { mean, stddev },
        dtype,
        seed,
        device,
    )
}

/// `tf.random.truncated_normal`: values beyond two standard deviations are redrawn.
pub fn truncated_normal(
    shape: &[usize],
    mean: f64,
    stddev: f64,
    dtype: DType,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    random(
        "truncated_normal",
        shape,
        Distribution::TruncatedNormal { mean, stddev },
        dtype,
        seed,
        device,
    )
}

/// Output of the creation ops, which have no inputs.
pub(crate) fn infer(op: &Op) -> Result<(Vec<usize>, DType)> {
    match op {
        Op::Fill { shape, dtype, .. } => Ok((shape.clone(), *dtype)),
        Op::Random(r) => Ok((r.shape.clone(), r.dtype)),
        _ => unreachable!(),
    }
}

impl Tensor {
    /// [`zeros`]: `tf.zeros(shape, dtype)` on `device`.
    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        zeros(shape, dtype, device)
    }
    /// [`ones`]: `tf.ones(shape, dtype)` on `device`.
    pub fn ones(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        ones(shape, dtype, device)
    }
    /// [`full`]: `tf.fill(shape, value)` with `dtype` on `device`.
    pub fn full(shape: &[usize], value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        full(shape, value, dtype, device)
    }
    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        zeros(self.shape(), self.dtype(), self.device())
    }
    /// Ones with this tensor's shape, dtype and device (`tf.ones_like`).
    pub fn ones_like(&self) -> Result<Tensor> {
        ones(self.shape(), self.dtype(), self.device())
    }
}
