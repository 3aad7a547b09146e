//! The runtime layer: devices and their kernels. It sits on [`crate::core`]
//! and knows nothing of tensors, tapes, graphs or files: a kernel takes
//! [`Operand`]s (storage, shape, dtype) and returns new [`Storage`]. Every
//! device implements the [`Backend`] trait; [`Device`] is the handle users
//! pass around (`tf.device`).
//!
//! - [`cpu`]: the CPU device, the reference implementation of every op
//!   (the oracle of the conformance tests and `WGFLOW_CROSS_CHECK`);
//! - [`wgpu`]: logical GPUs through wgpu, their memory pool, pipeline cache
//!   and the launch code of every WGSL kernel (the WGSL itself lives in the
//!   top-level `shaders/` folder);
//! - [`config`]: which adapters exist, which are visible, memory settings
//!   (`tf.config`).
//!
//! The layer above, `tensor`, wraps storage into tensors;
//! `ops` checks shapes and calls [`Device::run`].

pub mod config;
pub mod cpu;
mod quiet;
pub mod wgpu;

pub use self::wgpu::ExecContext;
pub use self::wgpu::memory::MemoryInfo;

use self::cpu::CpuData;
use self::wgpu::memory::GpuBuf;
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::Op;
use crate::core::shape::numel;
use std::fmt;
use std::sync::Arc;

/// Where a tensor's values are: host memory of the CPU device or a buffer of a GPU.
#[derive(Clone)]
pub enum Storage {
    /// Values on the host (the CPU device).
    Cpu(Arc<CpuData>),
    /// A buffer from a GPU's pool.
    Gpu(Arc<GpuBuf>),
}

/// What a kernel sees of one input: its storage, shape and dtype.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    /// The values.
    pub storage: &'a Storage,
    /// Row-major shape.
    pub shape: &'a [usize],
    /// Element type.
    pub dtype: DType,
}

impl<'a> Operand<'a> {
    /// Row-major shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(self.shape)
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// The host values; the op's device is the CPU, so its operands are too.
    pub(crate) fn cpu_data(&self) -> &'a CpuData {
        match self.storage {
            Storage::Cpu(d) => d,
            Storage::Gpu(_) => unreachable!("cpu_data on GPU storage"),
        }
    }
    /// The GPU buffer; the op's device is a GPU, so its operands are too.
    pub(crate) fn gpu_buf(&self) -> &'a GpuBuf {
        match self.storage {
            Storage::Gpu(b) => b,
            Storage::Cpu(_) => unreachable!("gpu_buf on CPU storage"),
        }
    }
}

/// What a device does for the layers above: run an op's kernel, move values
/// in and out. `Device` dispatches to the CPU backend or a GPU.
pub trait Backend {
    /// Runs `op` on operands that live on this backend; the shape rule has
    /// already produced the output `shape` and `dtype`. One storage per output.
    fn run(&self, op: &Op, x: &[Operand], shape: &[usize], dtype: DType, ctx: &ExecContext) -> Result<Vec<Storage>>;
    /// Host values placed on this backend (`op` names the caller in errors).
    fn upload(&self, op: &'static str, data: &CpuData) -> Result<Storage>;
    /// The host copy of `n` values of `dtype` held in `s` (waits for pending work).
    fn read(&self, s: &Storage, dtype: DType, n: usize) -> Result<CpuData>;
}

/// The CPU device's backend: the reference kernels of `runtime::cpu`.
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn run(&self, op: &Op, x: &[Operand], shape: &[usize], dtype: DType, _ctx: &ExecContext) -> Result<Vec<Storage>> {
        cpu::run(op, x, shape, dtype)
    }
    fn upload(&self, _op: &'static str, data: &CpuData) -> Result<Storage> {
        Ok(Storage::Cpu(Arc::new(data.clone())))
    }
    fn read(&self, s: &Storage, _dtype: DType, _n: usize) -> Result<CpuData> {
        match s {
            Storage::Cpu(d) => Ok((**d).clone()),
            Storage::Gpu(_) => Err(Error::arg("read", "GPU storage read through the CPU backend")),
        }
    }
}

/// Where a tensor lives and its ops run.
#[derive(Clone)]
pub enum Device {
    /// The CPU reference backend: plain Rust, the oracle of the conformance tests.
    Cpu,
    /// A logical GPU.
    Gpu(Arc<self::wgpu::GpuDevice>),
}

impl Device {
    /// The backend that runs this device's kernels.
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Device::Cpu => &CpuBackend,
            Device::Gpu(g) => &**g,
        }
    }
    /// Runs `op`'s kernel on this device (see [`Backend::run`]).
    pub fn run(
        &self,
        op: &Op,
        x: &[Operand],
        shape: &[usize],
        dtype: DType,
        ctx: &ExecContext,
    ) -> Result<Vec<Storage>> {
        self.backend().run(op, x, shape, dtype, ctx)
    }

    /// The CPU device (`/CPU:0`): always present, the only one with f64.
    pub fn cpu() -> Device {
        Device::Cpu
    }
    /// `gpu:n` among the visible GPUs.
    pub fn gpu(n: usize) -> Result<Device> {
        config::gpu(n)
    }
    /// `WGFLOW_DEVICE`, else `gpu:0`, else the CPU.
    pub fn default_device() -> Result<Device> {
        config::default_device()
    }
    /// Whether this is a logical GPU (then f64 tensors are refused).
    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }
    /// Adapter name (or "cpu").
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "wgflow CPU reference".into(),
            Device::Gpu(g) => format!("{} ({:?})", g.info.name, g.info.backend),
        }
    }
    /// Whether f16 kernels compute in f16 (adapter has `SHADER_F16`) or in f32.
    pub fn f16_arithmetic(&self) -> bool {
        match self {
            Device::Cpu => false,
            Device::Gpu(g) => g.f16,
        }
    }
    /// The dtype kernels compute `dtype` in here: f32 for bf16 everywhere
    /// (WGSL has no bf16) and for f16 without f16 arithmetic; else `dtype`.
    pub fn computes_in(&self, dtype: DType) -> DType {
        match dtype {
            DType::BF16 => DType::F32,
            DType::F16 if !self.f16_arithmetic() => DType::F32,
            d => d,
        }
    }
    /// Whether f16 GEMMs may run on cooperative matrices (tensor cores)
    /// here: the adapter has them and its driver built the kernel.
    pub fn cooperative_matrix(&self) -> bool {
        match self {
            Device::Cpu => false,
            Device::Gpu(g) => g.cooperative_matrix(),
        }
    }
    /// The largest tensor, in bytes, a kernel can bind on this device
    /// (the adapter's `max_storage_buffer_binding_size`; unbounded on the CPU).
    pub fn max_tensor_bytes(&self) -> u64 {
        match self {
            Device::Cpu => u64::MAX,
            Device::Gpu(g) => g.max_binding(),
        }
    }
    /// Storage buffers one kernel may bind (`None` on the CPU).
    pub(crate) fn max_storage_buffers(&self) -> Option<usize> {
        match self {
            Device::Cpu => None,
            Device::Gpu(g) => Some(g.limits.max_storage_buffers_per_shader_stage as usize),
        }
    }
    /// Pool statistics; the CPU device reports zeros (it allocates with Rust's allocator).
    pub fn memory_info(&self) -> MemoryInfo {
        match self {
            Device::Cpu => MemoryInfo::default(),
            Device::Gpu(g) => g.memory_info(),
        }
    }
    /// Restarts [`MemoryInfo::peak`] from the current in-use bytes
    /// (`tf.config.experimental.reset_memory_stats`); no-op on the CPU.
    pub fn reset_memory_peak(&self) {
        if let Device::Gpu(g) = self {
            g.reset_peak()
        }
    }
    /// Submits pending GPU work and waits for it.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.synchronize(),
        }
    }
    /// Work counters since the device was created; zeros on the CPU.
    pub fn counters(&self) -> Counters {
        match self {
            Device::Cpu => Counters::default(),
            Device::Gpu(g) => g.counters(),
        }
    }
}

/// What a GPU device has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Kernel launches.
    pub dispatches: u64,
    /// Queue submissions.
    pub submits: u64,
    /// Bind groups created (launches that found none cached for their buffers).
    pub bind_groups: u64,
    /// Launches whose uniform parameters were copied into the batch's arena
    /// (a compiled graph's replays bind parameters written once instead).
    pub params_copied: u64,
    /// Read-backs started (each copies one or more tensors to the host in
    /// one transfer).
    pub reads: u64,
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Gpu(g) => f.write_str(&g.label),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Gpu(g) => write!(f, "{} [{}]", g.label, g.info.name),
        }
    }
}
