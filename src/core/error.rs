//! One error type for the whole crate. Every variant names the op (or the
//! setting) and the shapes or values involved, so a message alone is enough
//! to find the call that failed.

use crate::core::dtype::DType;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The result of every fallible wgflow call.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a wgflow call failed.
///
/// Each variant notes the TensorFlow status it corresponds to where one
/// fits. The `Display` text starts with the op (or device, or path) and holds
/// the shapes or values involved. The enum is `#[non_exhaustive]`: match it
/// with a `_` arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Operand shapes do not fit the op's shape rule (TF's
    /// `InvalidArgumentError` for incompatible shapes).
    Shape {
        /// The op or function (`"matmul"`, `"conv2d"`, `"summary.image"`).
        op: &'static str,
        /// The operands' shapes, in argument order.
        shapes: Vec<Vec<usize>>,
        /// Which part of the rule they break.
        msg: String,
    },
    /// An operand has a dtype the op does not accept, or two operands that
    /// must agree do not (TF's `InvalidArgumentError`; wgflow never casts
    /// implicitly).
    DType {
        /// The op's name.
        op: &'static str,
        /// The operands' dtypes, in argument order.
        got: Vec<DType>,
        /// The dtypes the op accepts, or the rule broken.
        msg: String,
    },
    /// Operands live on different devices. wgflow does not copy between
    /// devices implicitly: move them with `Tensor::to_device` first.
    DeviceMismatch {
        /// The op's name.
        op: &'static str,
        /// The operands' devices (`"gpu:0"`, `"cpu"`), in argument order.
        devices: Vec<String>,
    },
    /// A value argument (axis, padding, index, label...) is out of range
    /// (TF's `InvalidArgumentError`).
    InvalidArgument {
        /// The op or function's name.
        op: &'static str,
        /// The argument, its value and the valid range.
        msg: String,
    },
    /// The memory pool cannot serve the request, even after releasing its
    /// cached buffers and retrying (TF's `ResourceExhaustedError`). The device
    /// stays usable: drop tensors and try again.
    OutOfMemory {
        /// The logical device (`"gpu:0"`).
        device: String,
        /// Bytes asked for.
        requested: u64,
        /// Bytes held by live tensors when the request failed.
        in_use: u64,
        /// The pool's limit in bytes: the one set with
        /// `WGFLOW_MEMORY_LIMIT_MB` or `config::set_memory_limit`, else the
        /// 1 GiB reserved with growth off, `u64::MAX` with growth on.
        limit: u64,
    },
    /// One tensor is larger than the adapter lets a shader bind, so no kernel
    /// could read it whatever memory is free (TF's `ResourceExhaustedError`).
    TooLargeForBinding {
        /// The op whose operand or output it is (`"allocate"` for the pool's
        /// own reservations).
        op: &'static str,
        /// The tensor's size in bytes.
        bytes: u64,
        /// The adapter's `max_storage_buffer_binding_size`.
        limit: u64,
    },
    /// The GPU device was lost (driver reset, removal); it cannot be used
    /// again, and every later call on it returns this error (TF's
    /// `InternalError`).
    DeviceLost {
        /// The logical device and its adapter (`"gpu:0 (llvmpipe)"`).
        device: String,
        /// wgpu's reason and message.
        reason: String,
    },
    /// `WGFLOW_VISIBLE_DEVICES`, `WGFLOW_DEVICE`, another `WGFLOW_*` setting
    /// or a `config::set_*` call names no valid choice, or a device that is
    /// not visible is asked for. Never a silent fallback.
    DeviceSelection {
        /// The setting, its value and why it is wrong.
        msg: String,
        /// The valid choices (`"gpu:0"`, `"cpu"`, the physical GPUs), or
        /// empty where there is no list to choose from (a zero memory limit).
        valid: Vec<String>,
    },
    /// A `config::set_*` call came after the runtime initialized its devices
    /// (the first tensor or device lookup), as TF's `RuntimeError` for
    /// `set_visible_devices` after initialization.
    AlreadyInitialized {
        /// The function called too late (`"set_memory_growth"`).
        setting: &'static str,
    },
    /// A WGSL kernel failed naga's or the driver's validation, or a
    /// specialization it needs is missing: a bug in wgflow or an adapter
    /// limit, not in the caller's arguments (TF's `InternalError`).
    ShaderCompilation {
        /// The kernel and its element type (`"matmul<f16>"`).
        kernel: String,
        /// naga's diagnostic with the source span, or the driver's message.
        msg: String,
    },
    /// wgpu reported an error that is not one of the above: a validation
    /// error caught by an error scope or the uncaptured-error handler, a
    /// failed `request_device` or buffer mapping (TF's `InternalError`).
    Gpu {
        /// The logical device and its adapter (`"gpu:0 (llvmpipe)"`).
        device: String,
        /// wgpu's messages, joined with `; ` when several were collected.
        msg: String,
    },
    /// `WGFLOW_CROSS_CHECK=1`: the GPU result of an op differs from the CPU reference.
    /// Reported by the op that differs, instead of its result.
    CrossCheck {
        /// The op's name, or `fused[...]` for a fused graph region.
        op: String,
        /// The inputs' shapes, in argument order.
        shapes: Vec<Vec<usize>>,
        /// The largest `|gpu - cpu|` over the output's elements.
        max_abs_err: f64,
        /// The tolerance that was exceeded, as `atol … + rtol …`.
        tolerance: String,
    },
    /// Reading a tensor's value where that is not allowed: a tensor computed
    /// inside a `function` trace has no value yet, and a branch on it would
    /// be frozen into the graph (TF raises `OperatorNotAllowedInGraphError`).
    ReadInTrace {
        /// The read that was refused (`"to_vec"`).
        op: &'static str,
        /// What was read and how to express it with tensor ops instead.
        msg: String,
    },
    /// File or data-format problems (checkpoints, datasets, event files).
    /// Where the operating system reported the failure, `source` holds its
    /// `std::io::Error` (also returned by `std::error::Error::source`);
    /// `msg` repeats its text, so the message alone still says what failed.
    Io {
        /// The file or directory involved.
        path: String,
        /// What failed: the OS error's text, or the format problem.
        msg: String,
        /// The OS error, `None` for a format problem.
        source: Option<IoSource>,
    },
    /// A valid request that wgflow does not implement: a TensorFlow op in a
    /// SavedModel that wgflow has no kernel for, a wgflow op that has no
    /// TensorFlow form to export (TF's `UnimplementedError`).
    Unimplemented {
        /// What is missing (`"op 'Einsum'"`).
        what: String,
        /// Where it was met (the node, the file) and what is supported.
        msg: String,
    },
}

/// The `std::io::Error` behind an [`Error::Io`], shared so that `Error`
/// stays `Clone`. Two are equal when they are the same error or of the same
/// kind with the same message.
#[derive(Debug, Clone)]
pub struct IoSource(pub Arc<std::io::Error>);

impl IoSource {
    /// Wraps an OS error for [`Error::Io`].
    pub fn new(e: std::io::Error) -> Self {
        IoSource(Arc::new(e))
    }
}

impl std::ops::Deref for IoSource {
    type Target = std::io::Error;
    fn deref(&self) -> &std::io::Error {
        &self.0
    }
}

impl PartialEq for IoSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string())
    }
}

impl Error {
    pub(crate) fn shape(op: &'static str, shapes: &[&[usize]], msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            shapes: shapes.iter().map(|s| s.to_vec()).collect(),
            msg: msg.into(),
        }
    }
    pub(crate) fn dtype(op: &'static str, got: &[DType], msg: impl Into<String>) -> Self {
        Error::DType {
            op,
            got: got.to_vec(),
            msg: msg.into(),
        }
    }
    pub(crate) fn arg(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
    /// A file operation on `path` failed; the OS error is kept as the source.
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
            source: Some(IoSource::new(e)),
        }
    }
    /// The contents of `path` are wrong (a format problem, no OS error).
    pub(crate) fn format(path: &Path, msg: impl Into<String>) -> Self {
        Error::Io {
            path: path.display().to_string(),
            msg: msg.into(),
            source: None,
        }
    }
    pub(crate) fn selection(msg: impl Into<String>, valid: Vec<String>) -> Self {
        Error::DeviceSelection { msg: msg.into(), valid }
    }
}

fn shapes_str(shapes: &[Vec<usize>]) -> String {
    shapes.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, shapes, msg } => {
                write!(f, "{op}: incompatible shapes {}: {msg}", shapes_str(shapes))
            }
            Error::DType { op, got, msg } => write!(f, "{op}: unsupported dtypes {got:?}: {msg}"),
            Error::DeviceMismatch { op, devices } => write!(
                f,
                "{op}: operands are on different devices ({}); move them with to_device first",
                devices.join(", ")
            ),
            Error::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
            Error::OutOfMemory {
                device,
                requested,
                in_use,
                limit,
            } => write!(
                f,
                "out of memory on {device}: requested {requested} bytes with {in_use} bytes in use (limit {limit} bytes)"
            ),
            Error::TooLargeForBinding { op, bytes, limit } => write!(
                f,
                "{op}: a tensor of {bytes} bytes is larger than this adapter's max_storage_buffer_binding_size ({limit} bytes)"
            ),
            Error::DeviceLost { device, reason } => write!(f, "{device} was lost: {reason}"),
            Error::DeviceSelection { msg, valid } => {
                write!(f, "{msg}; valid devices: [{}]", valid.join(", "))
            }
            Error::AlreadyInitialized { setting } => write!(
                f,
                "{setting} must be called before the runtime initializes its devices (before the first tensor or device lookup)"
            ),
            Error::ShaderCompilation { kernel, msg } => {
                write!(f, "kernel {kernel} failed to compile: {msg}")
            }
            Error::Gpu { device, msg } => write!(f, "{device}: {msg}"),
            Error::CrossCheck {
                op,
                shapes,
                max_abs_err,
                tolerance,
            } => write!(
                f,
                "cross-check failed for {op} with inputs {}: max abs error {max_abs_err:e} exceeds {tolerance}",
                shapes_str(shapes)
            ),
            Error::ReadInTrace { op, msg } => write!(f, "{op}: {msg}"),
            Error::Io { path, msg, .. } => write!(f, "{path}: {msg}"),
            Error::Unimplemented { what, msg } => write!(f, "{what} is not supported: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source: Some(e), .. } => Some(&*e.0),
            _ => None,
        }
    }
}
