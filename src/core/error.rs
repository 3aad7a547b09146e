//! One error type for the whole crate. Every variant names the op (or the
//! setting) and the shapes or values involved, so a message alone is enough
//! to find the call that failed.

use crate::core::dtype::DType;
use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Operand shapes do not fit the op's shape rule.
    Shape {
        op: &'static str,
        shapes: Vec<Vec<usize>>,
        msg: String,
    },
    /// An operand has a dtype the op does not accept.
    DType {
        op: &'static str,
        got: Vec<DType>,
        msg: String,
    },
    /// Operands live on different devices.
    DeviceMismatch { op: &'static str, devices: Vec<String> },
    /// A value argument (axis, padding, index, label...) is out of range.
    InvalidArgument { op: &'static str, msg: String },
    /// The memory pool cannot serve the request, even after releasing its cache.
    OutOfMemory {
        device: String,
        requested: u64,
        in_use: u64,
        limit: u64,
    },
    /// One tensor is larger than the adapter lets a shader bind.
    TooLargeForBinding { op: &'static str, bytes: u64, limit: u64 },
    /// The GPU device was lost (driver reset, removal); it cannot be used again.
    DeviceLost { device: String, reason: String },
    /// `WGFLOW_VISIBLE_DEVICES`, `WGFLOW_DEVICE` or a `config::set_*` call is wrong.
    DeviceSelection { msg: String, valid: Vec<String> },
    /// A `config::set_*` call came after the runtime initialized its devices.
    AlreadyInitialized { setting: &'static str },
    /// A WGSL kernel failed naga's or the driver's validation.
    ShaderCompilation { kernel: String, msg: String },
    /// wgpu reported an error that is not one of the above.
    Gpu { device: String, msg: String },
    /// `WGFLOW_CROSS_CHECK=1`: the GPU result of an op differs from the CPU reference.
    CrossCheck {
        op: String,
        shapes: Vec<Vec<usize>>,
        max_abs_err: f64,
        tolerance: String,
    },
    /// Reading a tensor's value where that is not allowed (inside a trace).
    ReadInTrace { op: &'static str, msg: String },
    /// File or data-format problems (checkpoints, datasets, event files).
    Io { path: String, msg: String },
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
            Error::Io { path, msg } => write!(f, "{path}: {msg}"),
        }
    }
}

impl std::error::Error for Error {}
