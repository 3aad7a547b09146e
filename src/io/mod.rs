//! Files other tools read: [`checkpoint`]s (safetensors, as
//! `tf.train.Checkpoint`), TensorBoard event files ([`summary`], as
//! `tf.summary`), NumPy arrays ([`npy`], as `np.save` and `np.load`) and
//! TensorFlow SavedModels ([`saved_model`]). Checkpoint and `.npy` writers
//! go through a temporary file and a
//! rename, so a crash never leaves a half-written file under the final
//! name; event files are appended to, record by record, in a file created
//! exclusively.
//!
//! This layer works with tensors and variables only: it knows nothing of
//! Keras, so an optimizer reaches a checkpoint through the
//! [`checkpoint::OptimizerState`] trait. Keras' callbacks in
//! `nn::callbacks` drive both writers during `fit`; examples are
//! read by `data`, its sibling layer.

pub mod checkpoint;
pub mod npy;
pub mod onnx;
pub mod saved_model;
pub mod summary;
pub mod tflite;

use crate::core::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// A format problem in `path` that a library reported (no OS error behind
/// it); OS errors go through `Error::io`, which keeps them as the source.
pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, e.to_string())
}

/// Writes `bytes` to `path` through a temporary file of its own in the same
/// directory (`<name>.tmp-<pid>-<n>`, created exclusively), fsynced, then
/// renamed over `path`: readers see the old file or the new one, never a
/// torn one, and concurrent writers of one path (threads or processes)
/// never share a temporary file; the last rename wins.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let (tmp, mut f) = loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_file_name(format!("{name}.tmp-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            // Left by a crashed writer whose pid we now have: take the next number.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    };
    let mut write = || -> std::io::Result<()> {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
