//! wgflow: TensorFlow 2's working model in Rust on WebGPU.
//!
//! Tensors live on a device ([`Device`]): a GPU through wgpu (Vulkan, Metal,
//! DX12, GL) or the CPU reference backend. Ops run eagerly; on a GPU they are
//! encoded into a pending batch and submitted when a value is read. See the
//! README for the environment variables that select devices and memory
//! behaviour, and `ops` for the op families.
//!
//! The modules are layers; each imports only from the layers below it
//! (`tests/layering.rs` enforces it):
//!
//! | layer | what it is |
//! |---|---|
//! | [`distribute`] | `MirroredStrategy`, `MultiWorkerMirroredStrategy`: data parallelism over devices and MPI workers |
//! | [`serving`] | `wgflow_model_server`: TF Serving's REST and gRPC APIs (feature `server`) |
//! | [`nn`] | Keras: layers, models, losses, optimizers, metrics, `fit`, callbacks |
//! | [`io`], [`data`] | checkpoints and TensorBoard summaries; `tf.data` |
//! | [`autodiff`], [`function`](mod@function) | `GradientTape` and `tf.function`, observers of every op |
//! | [`ops`] | shape and gradient rules, the public op functions, `exec` |
//! | [`tensor`] | `Tensor` and `Variable` |
//! | [`runtime`] | devices: the CPU reference and wgpu GPUs, their kernels and memory |
//! | [`core`] | dtypes, shapes, errors, the `Op` enum |
//!
//! Notices (a GPU left out, the CPU fallback, a function retraced too often,
//! graph fusion given up) are records of the `log` crate under the `wgflow`
//! target, warnings and infos; they show with whatever logger the
//! application installs (the examples use `env_logger`).

#![warn(missing_docs)]
// The Send/Sync proofs of the server's shared state walk wgpu's deep types.
#![recursion_limit = "256"]

pub mod autodiff;
pub mod core;
pub mod data;
pub mod distribute;
pub mod function;
pub mod io;
pub mod nn;
pub mod ops;
pub mod runtime;
#[cfg(feature = "server")]
pub mod serving;
pub mod tensor;

pub use crate::core::dtype::DType;
pub use crate::core::error::{Error, Result};
pub use autodiff::{GradientTape, stop_gradient};
pub use function::function;
pub use io::{onnx, saved_model, tflite as lite};
pub use ops::conv::Padding;
pub use runtime::config;
pub use runtime::{Counters, Device, MemoryInfo};
pub use tensor::{Tensor, Variable};
