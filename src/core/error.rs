//! One error type for the whole crate. Every variant names the op (or the
//! setting) and the shapes or values involved, so a message alone is enough
//! to find the call that failed.

use crate::core::dtype::DType;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
    /// Where the operating system reported the failure, `source` holds its
    /// `std::io::Error` (also returned by `std::error::Error::source`);
    /// `msg` repeats its text, so the message alone still says what failed.
    Io {
        path: String,
        msg: String,
        source: Option<IoSource>,
    },
}

/// The `std::io::Error` behind an [`Error::Io`], shared so that `Error`
/// stays `Clone`. Two are equal when they are the same error or of the same
/// kind with the same message.
#[derive(Debug, Clone)]
pub struct IoSource(pub Arc<std::io::Error>);

impl IoSource {
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
