//! Tensor creation: constants, fills, ranges and seeded random values.
//!
//! Random values are generated on the host with a counter-based generator
//! (SplitMix64), so a seed gives the same tensor on every device.

use crate::device::Device;
use crate::device::cpu::CpuData;
use crate::device::gpu::{GpuDevice, Launch, grid};
use crate::device::memory::GpuBuf;
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::ops::layout::{LAYOUT, wtype};
use crate::ops::{Op, exec_on};
use crate::shape::numel;
use crate::tensor::Tensor;
use half::f16;
use std::any::Any;

pub(crate) fn to_cpu_data<T: Element>(data: Vec<T>) -> CpuData {
    let any: Box<dyn Any> = Box::new(data);
    let any = match any.downcast::<Vec<f32>>() {
        Ok(v) => return CpuData::F32(*v),
        Err(a) => a,
    };
    let any = match any.downcast::<Vec<f64>>() {
        Ok(v) => return CpuData::F64(*v),
        Err(a) => a,
    };
    let any = match any.downcast::<Vec<f16>>() {
        Ok(v) => return CpuData::F16(*v),
        Err(a) => a,
    };
    let any = match any.downcast::<Vec<i32>>() {
        Ok(v) => return CpuData::I32(*v),
        Err(a) => a,
    };
    match any.downcast::<Vec<bool>>() {
        Ok(v) => CpuData::Bool(*v),
        Err(_) => unreachable!("Element is implemented only for f32, f64, f16, i32, bool"),
    }
}

pub(crate) fn from_cpu_data<T: Element>(d: CpuData) -> Vec<T> {
    let b: Box<dyn Any> = match d {
        CpuData::F32(v) => Box::new(v),
        CpuData::F16(v) => Box::new(v),
        CpuData::F64(v) => Box::new(v),
        CpuData::I32(v) => Box::new(v),
        CpuData::Bool(v) => Box::new(v),
    };
    *b.downcast::<Vec<T>>().expect("dtype checked by the caller")
}

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

/// `n` copies of `value` in new GPU memory.
pub(crate) fn fill_gpu(g: &GpuDevice, n: usize, value: f64, dtype: DType) -> Result<GpuBuf> {
    if dtype == DType::F16 && !g.f16 {
        // Packed halves cannot be written one by one without f16 support.
        return g.upload("fill", &CpuData::from_f64(dtype, &vec![value; n]).to_bytes());
    }
    let out = g.alloc("fill", (n * dtype.size()) as u64)?;
    let bits = match dtype {
        DType::I32 => (value as i32) as u32,
        DType::Bool => (value != 0.0) as u32,
        _ => (value as f32).to_bits(),
    };
    g.launch(&Launch {
        kernel: &LAYOUT,
        entry: "fill",
        ty: wtype(dtype),
        consts: &[],
        params: &[n as u32, bits, 0, 0],
        bufs: &[&out],
        groups: grid(n, 256),
    })?;
    Ok(out)
}

pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    full(shape, 0.0, dtype, device)
}

pub fn ones(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    full(shape, 1.0, dtype, device)
}

/// `tf.range(start, limit, delta)`.
pub fn arange(start: f64, limit: f64, delta: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    if delta == 0.0 || !delta.is_finite() {
        return Err(Error::arg(
            "range",
            format!("delta must be finite and non-zero, got {delta}"),
        ));
    }
    let n = ((limit - start) / delta).ceil().max(0.0) as usize;
    let v: Vec<f64> = (0..n).map(|i| start + i as f64 * delta).collect();
    Tensor::from_data(CpuData::from_f64(dtype, &v), &[n], device)
}

/// SplitMix64: a counter-based generator, so element i depends only on (seed, i).
fn splitmix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i.wrapping_add(1)));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) with 53 random bits.
fn unit(seed: u64, i: u64) -> f64 {
    (splitmix(seed, i) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal value `i` of the stream `seed` (Box–Muller).
pub(crate) fn normal_at(seed: u64, i: u64) -> f64 {
    let u1 = unit(seed, 2 * i).max(f64::MIN_POSITIVE);
    let u2 = unit(seed, 2 * i + 1);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    Uniform {
        minval: f64,
        maxval: f64,
    },
    Normal {
        mean: f64,
        stddev: f64,
    },
    /// Normal values beyond two standard deviations redrawn.
    TruncatedNormal {
        mean: f64,
        stddev: f64,
    },
}

/// A random tensor: the values are a pure function of (seed, index), drawn
/// on the host, so a seed gives the same tensor on every device. A traced
/// graph reseeds it on every call (`reseeded`).
#[derive(Clone, Debug, PartialEq)]
pub struct Random {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub dist: Distribution,
    pub seed: u64,
}

impl Random {
    pub(crate) fn reseeded(&self, call: u64) -> Random {
        Random {
            seed: splitmix(self.seed, call),
            ..self.clone()
        }
    }

    fn values(&self) -> Vec<f64> {
        let n = numel(&self.shape) as u64;
        let seed = self.seed;
        match self.dist {
            Distribution::Uniform { minval, maxval } => {
                (0..n).map(|i| minval + (maxval - minval) * unit(seed, i)).collect()
            }
            Distribution::Normal { mean, stddev } => (0..n).map(|i| mean + stddev * normal_at(seed, i)).collect(),
            Distribution::TruncatedNormal { mean, stddev } => (0..n)
                .map(|i| {
                    let mut k = i;
                    loop {
                        let z = normal_at(seed, k);
                        if z.abs() <= 2.0 {
                            return mean + stddev * z;
                        }
                        k += n.max(1);
                    }
                })
                .collect(),
        }
    }
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

pub(crate) fn run(op: &Op, device: &Device) -> Result<Tensor> {
    match (op, device) {
        (Op::Fill { shape, value, dtype }, Device::Cpu) => Ok(Tensor::from_cpu(
            CpuData::from_f64(*dtype, &vec![*value; numel(shape)]),
            shape.clone(),
        )),
        (Op::Fill { shape, value, dtype }, Device::Gpu(g)) => Ok(Tensor::from_gpu(
            fill_gpu(g, numel(shape), *value, *dtype)?,
            shape.clone(),
            *dtype,
            device,
        )),
        (Op::Random(r), _) => Tensor::from_data(CpuData::from_f64(r.dtype, &r.values()), &r.shape, device),
        _ => unreachable!(),
    }
}

impl Tensor {
    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        zeros(shape, dtype, device)
    }
    pub fn ones(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        ones(shape, dtype, device)
    }
    pub fn full(shape: &[usize], value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        full(shape, value, dtype, device)
    }
    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        zeros(self.shape(), self.dtype(), self.device())
    }
    pub fn ones_like(&self) -> Result<Tensor> {
        ones(self.shape(), self.dtype(), self.device())
    }
}
