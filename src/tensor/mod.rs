//! The tensor layer: [`Tensor`], an immutable, reference-counted n-d array
//! on one [`Device`], and [`Variable`], the mutable slot that holds one
//! (`tf.Variable`). Cloning is cheap (it shares storage); `reshape` shares
//! storage too.
//!
//! It wraps the [`crate::runtime`]'s storage with a shape and dtype; the
//! op methods on `Tensor` (`add`, `matmul`, `sum`, …) are defined by the
//! families of `ops`, through which every op producing a tensor
//! passes. [`observe`] lets the layers above (`autodiff`,
//! `function`) watch ops and variables without this layer
//! knowing them.

pub mod observe;
mod variable;
pub use variable::Variable;

use crate::core::dtype::{DType, Element};
use crate::core::error::{Error, Result};
use crate::core::shape::numel;
use crate::runtime::cpu::CpuData;
use crate::runtime::wgpu::memory::GpuBuf;
use crate::runtime::{Device, Operand, Storage};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) storage: Storage,
    /// The scores a softmax or sigmoid activation made this tensor from
    /// (Keras' `_keras_logits`): cross-entropy losses use them instead of
    /// the clipped probabilities.
    pub(crate) logits: std::sync::OnceLock<Tensor>,
}

/// An immutable n-d array of one [`DType`] on one [`Device`], as
/// `tf.Tensor` (an `EagerTensor`).
///
/// Ops return new tensors; cloning shares the storage. On a GPU, values are
/// computed asynchronously: reading them ([`to_vec`](Tensor::to_vec),
/// [`item`](Tensor::item), `Display`) waits for the pending work.
///
/// ```
/// use wgflow::{Device, Tensor};
/// let cpu = Device::cpu();
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2], &cpu)?;
/// let y = x.matmul(&x)?.add_scalar(1.0)?;
/// assert_eq!(y.shape(), &[2, 2]);
/// assert_eq!(y.to_vec::<f32>()?, vec![8.0, 11.0, 16.0, 23.0]);
/// # Ok::<(), wgflow::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

fn next_id() -> u64 {
    static ID: AtomicU64 = AtomicU64::new(1);
    ID.fetch_add(1, Ordering::Relaxed)
}

impl Tensor {
    pub(crate) fn from_storage(storage: Storage, shape: Vec<usize>, dtype: DType, device: Device) -> Tensor {
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape,
            dtype,
            device,
            storage,
            logits: std::sync::OnceLock::new(),
        }))
    }

    /// Records the logits this tensor was computed from (see `Inner::logits`).
    pub(crate) fn with_logits(self, logits: &Tensor) -> Tensor {
        let _ = self.0.logits.set(logits.clone());
        self
    }

    /// The logits recorded by [`Tensor::with_logits`], if any.
    pub(crate) fn logits(&self) -> Option<&Tensor> {
        self.0.logits.get()
    }

    pub(crate) fn from_cpu(data: CpuData, shape: Vec<usize>) -> Tensor {
        let dtype = data.dtype();
        debug_assert_eq!(data.len(), numel(&shape));
        Tensor::from_storage(Storage::Cpu(Arc::new(data)), shape, dtype, Device::Cpu)
    }

    pub(crate) fn from_gpu(buf: GpuBuf, shape: Vec<usize>, dtype: DType, device: &Device) -> Tensor {
        Tensor::from_storage(Storage::Gpu(Arc::new(buf)), shape, dtype, device.clone())
    }

    /// The host values, when this is the last handle to them (a graph's
    /// arena recycles them); `None` on a GPU or while they are shared.
    pub(crate) fn into_host_data(self) -> Option<CpuData> {
        let inner = Arc::try_unwrap(self.0).ok()?;
        match inner.storage {
            Storage::Cpu(d) => Arc::try_unwrap(d).ok(),
            Storage::Gpu(_) => None,
        }
    }

    /// Drops this handle; when it was the last one to host values, they go
    /// to the arena of the graph replaying on this thread, if any.
    pub(crate) fn recycle(self) {
        if let Some(d) = self.into_host_data() {
            crate::runtime::cpu::arena::recycle(d);
        }
    }

    /// Host data placed on `device`; `data.len()` must equal the shape's size.
    pub fn from_data(data: CpuData, shape: &[usize], device: &Device) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::shape(
                "from_vec",
                &[&[data.len()], shape],
                format!("{} values cannot fill shape {shape:?}", data.len()),
            ));
        }
        let t = Tensor::from_cpu(data, shape.to_vec());
        if device.is_gpu() { t.to_device(device) } else { Ok(t) }
    }

    /// `tf.constant(data, shape=...)` on `device`; the dtype follows `T`
    /// (see [`Element`]). [`Error::Shape`] when `data.len()` is not the
    /// shape's size; [`Error::DType`] for f64 data on a GPU.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_data(crate::runtime::cpu::to_cpu_data(data), shape, device)
    }

    /// [`from_vec`](Tensor::from_vec) from a borrowed slice (copies it).
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(v: T, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(vec![v], &[], device)
    }

    /// A process-unique identity: clones share it, every op result (even a
    /// `reshape` or `stop_gradient` sharing storage) gets a new one. Tapes
    /// and traces key tensors by it.
    pub fn id(&self) -> u64 {
        self.0.id
    }
    /// Row-major dimensions; `[]` for a scalar.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// The device holding the values, where ops on this tensor run.
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    /// Number of dimensions (`tf.rank`); 0 for a scalar.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }
    /// Number of elements (`tf.size`): the product of the shape, 1 for a scalar.
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }
    /// Size of dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        Ok(self.0.shape[crate::core::shape::axis("dim", axis, self.rank())?])
    }

    /// What a kernel sees of this tensor.
    pub(crate) fn operand(&self) -> Operand<'_> {
        Operand {
            storage: &self.0.storage,
            shape: &self.0.shape,
            dtype: self.0.dtype,
        }
    }

    pub(crate) fn cpu_data(&self) -> &CpuData {
        match &self.0.storage {
            Storage::Cpu(d) => d,
            Storage::Gpu(_) => unreachable!("cpu_data on a GPU tensor"),
        }
    }

    pub(crate) fn gpu_buf(&self) -> &GpuBuf {
        match &self.0.storage {
            Storage::Gpu(b) => b,
            Storage::Cpu(_) => unreachable!("gpu_buf on a CPU tensor"),
        }
    }

    /// A new tensor sharing this one's storage, with an identity of its own
    /// (what a variable holds, and `stop_gradient`'s result).
    pub(crate) fn detached(&self) -> Tensor {
        Tensor::from_storage(
            self.0.storage.clone(),
            self.shape().to_vec(),
            self.dtype(),
            self.device().clone(),
        )
    }

    /// The host copy of the values (waits for pending GPU work).
    pub fn to_data(&self) -> Result<CpuData> {
        observe::check_read(self)?;
        match (&self.0.storage, &self.0.device) {
            (Storage::Cpu(d), _) => Ok((**d).clone()),
            (Storage::Gpu(b), Device::Gpu(g)) => {
                let bytes = g.read(b)?;
                Ok(CpuData::from_bytes(self.dtype(), self.numel(), &bytes))
            }
            _ => unreachable!(),
        }
    }

    /// The values as a flat row-major `Vec`; `T` must match the dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::dtype(
                "to_vec",
                &[self.dtype()],
                format!("cannot read a {} tensor as {}; cast it first", self.dtype(), T::DTYPE),
            ));
        }
        Ok(crate::runtime::cpu::from_cpu_data(self.to_data()?))
    }

    /// Every value converted to f64, whatever the dtype.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.to_data()?.to_f64())
    }

    /// The single value of a one-element tensor, as f64.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                &[self.shape()],
                "item() needs exactly one element",
            ));
        }
        Ok(self.to_f64_vec()?[0])
    }

    /// A copy on `device` (the same tensor when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let data = self.to_data()?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(Arc::new(data)),
            Device::Gpu(g) => {
                if self.dtype() == DType::F64 {
                    return Err(Error::dtype(
                        "to_device",
                        &[DType::F64],
                        "float64 lives only on the CPU device (WGSL has no f64); cast to float32 first",
                    ));
                }
                Storage::Gpu(Arc::new(g.upload("to_device", &data.to_bytes())?))
            }
        };
        Ok(Tensor::from_storage(
            storage,
            self.shape().to_vec(),
            self.dtype(),
            device.clone(),
        ))
    }

    /// Whether two tensors share the same storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        match (&self.0.storage, &other.0.storage) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Arc::ptr_eq(a, b),
            (Storage::Gpu(a), Storage::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor(shape={:?}, dtype={}, device={})",
            self.shape(),
            self.dtype(),
            self.device()
        )
    }
}

impl fmt::Display for Tensor {
    /// Reads the values back; prints at most 20 of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_f64_vec() {
            Ok(v) => {
                let shown: Vec<String> = v.iter().take(20).map(|x| format!("{x:.6}")).collect();
                let more = if v.len() > 20 { ", ..." } else { "" };
                write!(
                    f,
                    "tf.Tensor([{}{more}], shape={:?}, dtype={}, device={})",
                    shown.join(", "),
                    self.shape(),
                    self.dtype(),
                    self.device()
                )
            }
            Err(e) => write!(f, "{self:?} <unreadable: {e}>"),
        }
    }
}
