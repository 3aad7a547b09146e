//! wgflow: TensorFlow 2's working model in Rust on WebGPU.
//!
//! Tensors live on a device ([`Device`]): a GPU through wgpu (Vulkan, Metal,
//! DX12, GL) or the CPU reference backend. Ops run eagerly; on a GPU they are
//! encoded into a pending batch and submitted when a value is read. See the
//! README for the environment variables that select devices and memory
//! behaviour, and `ops` for the op families.

pub mod data;
pub mod device;
pub mod dtype;
pub mod error;
pub mod function;
pub mod io;
pub mod nn;
pub mod ops;
pub mod shape;
pub mod tape;
pub mod tensor;

pub use device::config;
pub use device::{Counters, Device, MemoryInfo};
pub use dtype::DType;
pub use error::{Error, Result};
pub use function::function;
pub use ops::conv::Padding;
pub use tape::{GradientTape, stop_gradient};
pub use tensor::{Tensor, Variable};
