//! Files other tools read: [`checkpoint`]s (safetensors, as
//! `tf.train.Checkpoint`) and TensorBoard event files ([`summary`], as
//! `tf.summary`). Checkpoint writers go through a temporary file and a
//! rename, so a crash never leaves a half-written file under the final
//! name; event files are appended to, record by record, in a file created
//! exclusively.
//!
//! This layer works with tensors and variables only: it knows nothing of
//! Keras, so an optimizer reaches a checkpoint through the
//! [`checkpoint::OptimizerState`] trait. Keras' callbacks in
//! [`crate::nn::callbacks`] drive both writers during `fit`; examples are
//! read by [`crate::data`], its sibling layer.

pub mod checkpoint;
pub mod summary;

use crate::core::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// A format problem in `path` that a library reported (no OS error behind
/// it); OS errors go through `Error::io`, which keeps them as the source.
pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, e.to_string())
}

/// Writes `bytes` to `path` through `path.tmp-<pid>`, fsynced, then renamed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        "{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
