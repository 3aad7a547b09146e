//! Devices: the CPU reference and logical GPUs (see `config` for selection).

pub mod config;
pub mod cpu;
pub mod gpu;
pub mod memory;

pub use memory::MemoryInfo;

use crate::error::Result;
use std::fmt;
use std::sync::Arc;

/// Where a tensor lives and its ops run.
#[derive(Clone)]
pub enum Device {
    /// The CPU reference backend: plain Rust, the oracle of the conformance tests.
    Cpu,
    Gpu(Arc<gpu::GpuDevice>),
}

impl Device {
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
