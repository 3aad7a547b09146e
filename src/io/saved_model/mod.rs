//! TensorFlow's SavedModel format, written and read (`tf.saved_model`).
//!
//! [`save`] writes [`ConcreteFunction`]s (graphs with input signatures,
//! whose unknown dimensions stay unknown) as a directory that TensorFlow,
//! TF Serving and `saved_model_cli` load:
//!
//! - `saved_model.pb`: a `SavedModel` protobuf with one `MetaGraphDef`
//!   tagged `serve`, the graph in TensorFlow ops and one `SignatureDef` per
//!   function (method `tensorflow/serving/predict`); see `export` for the
//!   graph's form;
//! - `variables/variables.index` and `variables/variables.data-00000-of-00001`:
//!   the variables as a tensor bundle ([`bundle`]), or none when
//!   [`SaveOptions::freeze`] writes them into the graph as constants.
//!
//! The directory is written beside its final path and renamed into place
//! (swapped with an existing export in one step where the OS allows), so a
//! crash leaves the old export or the new one, never a mix.
//!
//! [`load`] reads a SavedModel, written by wgflow or by TensorFlow 2 and its
//! Keras (`model.export`, `tf.saved_model.save`), and returns its
//! signatures as [`ConcreteFunction`]s on a device: callable with any
//! batch size, traced and fused like any `wgflow::function`, without the
//! model's code (see `import`).

pub mod bundle;
pub(crate) mod export;
mod import;
pub mod proto;
mod table;

pub use import::{Loaded, load, load_serving, load_with, meta_graph, read_saved_model};

use crate::core::error::{Error, Result};
use crate::function::ConcreteFunction;
use crate::tensor::Variable;
use prost::Message;
use std::path::{Path, PathBuf};

/// The signature key TF Serving calls by default.
pub const DEFAULT_SIGNATURE: &str = "serving_default";
/// The tag of a serving graph.
pub const SERVE_TAG: &str = "serve";

/// How [`save`] writes.
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Write the variables into the graph as constants (a frozen graph)
    /// instead of a `variables/` bundle.
    pub freeze: bool,
}

/// What [`save`] exports: its functions by signature key. Every model of
/// `nn` implements it (its inference pass as `serving_default`, as Keras'
/// `model.export`); functions already at hand go to [`save_functions`].
pub trait Exportable {
    /// The functions to export, by signature key (`serving_default` first).
    fn signatures(&mut self) -> Result<Vec<(String, ConcreteFunction)>>;
    /// Names for the variables in the bundle (checkpoint keys); variables
    /// not listed keep their own names (made unique).
    fn variable_names(&self) -> Vec<(String, Variable)> {
        Vec::new()
    }
}

/// `tf.saved_model.save(obj, dir)`: writes `obj`'s signatures as a
/// SavedModel in `dir` (created, or replaced as a whole).
pub fn save(obj: &mut (impl Exportable + ?Sized), dir: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
    let sigs = obj.signatures()?;
    let names = obj.variable_names();
    let refs: Vec<(&str, &ConcreteFunction)> = sigs.iter().map(|(k, f)| (k.as_str(), f)).collect();
    write(dir.as_ref(), &refs, &names, options)
}

/// Writes functions as a SavedModel in `dir`, one signature per
/// `(key, function)`: `save_functions(dir, &[("serving_default", &f)], &SaveOptions::default())`.
pub fn save_functions(
    dir: impl AsRef<Path>,
    signatures: &[(&str, &ConcreteFunction)],
    options: &SaveOptions,
) -> Result<()> {
    write(dir.as_ref(), signatures, &[], options)
}

/// TF-TRT's `TrtGraphConverterV2(precision_mode=...)`: the SavedModel in
/// `input_dir` rewritten to `output_dir` with every signature computing in
/// `dtype` (`DType::F16`: FP16 mode), its inputs and outputs unchanged (see
/// [`ConcreteFunction::with_compute_dtype`]).
pub fn convert_precision(
    input_dir: impl AsRef<Path>,
    output_dir: impl AsRef<Path>,
    dtype: crate::core::dtype::DType,
) -> Result<()> {
    transform(input_dir, output_dir, |f| f.with_compute_dtype(dtype))
}

/// The SavedModel in `input_dir` rewritten to `output_dir` with int8
/// weights (`Optimize.DEFAULT`'s dynamic-range quantization, as wgflow
/// runs it): every matmul or convolution weight of 1,024 values or more is
/// stored as int8 per output channel (scale max|w|/127), four to an i32
/// word, and expanded inside the matmul and convolution kernels that read
/// it (see [`ConcreteFunction::with_int8_weights`]). The weights take about 4x
/// less space on disk and in device memory. The file uses wgflow's own
/// `WgflowDequantizeInt8` op: wgflow loads it, TensorFlow does not.
pub fn quantize_weights(input_dir: impl AsRef<Path>, output_dir: impl AsRef<Path>) -> Result<()> {
    transform(input_dir, output_dir, |f| f.with_int8_weights(1024))
}

/// The SavedModel in `input_dir` (loaded on the CPU device) written to
/// `output_dir` with `f` applied to every signature.
pub fn transform(
    input_dir: impl AsRef<Path>,
    output_dir: impl AsRef<Path>,
    f: impl Fn(&ConcreteFunction) -> Result<ConcreteFunction>,
) -> Result<()> {
    let mut loaded = load_with(input_dir, &[SERVE_TAG], &crate::runtime::Device::cpu())?;
    let keys: Vec<String> = loaded.signature_keys().into_iter().map(String::from).collect();
    let mut converted = Vec::with_capacity(keys.len());
    for k in &keys {
        converted.push((k.clone(), f(loaded.signature(k)?)?));
    }
    let refs: Vec<(&str, &ConcreteFunction)> = converted.iter().map(|(k, f)| (k.as_str(), f)).collect();
    save_functions(output_dir, &refs, &SaveOptions::default())
}

fn write(
    dir: &Path,
    signatures: &[(&str, &ConcreteFunction)],
    names: &[(String, Variable)],
    options: &SaveOptions,
) -> Result<()> {
    if signatures.is_empty() {
        return Err(Error::arg("saved_model.save", "no signatures to export"));
    }
    let sigs: Vec<export::Signature<'_>> = signatures
        .iter()
        .map(|(k, f)| export::Signature {
            key: k.to_string(),
            function: f,
        })
        .collect();
    let (meta, tensors) = export::meta_graph(&sigs, names, options.freeze)?;
    let model = proto::SavedModel {
        saved_model_schema_version: 1,
        meta_graphs: vec![meta],
    };
    let bytes = model.encode_to_vec();
    // Protobuf messages are limited to 2 GiB; TensorFlow refuses bigger ones.
    if bytes.len() > i32::MAX as usize {
        return Err(Error::arg(
            "saved_model.save",
            format!("saved_model.pb would be {} bytes, past protobuf's 2 GiB", bytes.len()),
        ));
    }
    write_dir_atomic(dir, |tmp| {
        std::fs::write(tmp.join("saved_model.pb"), &bytes).map_err(|e| Error::io(&tmp.join("saved_model.pb"), e))?;
        let vars = tmp.join("variables");
        std::fs::create_dir(&vars).map_err(|e| Error::io(&vars, e))?;
        if !tensors.is_empty() {
            bundle::write(&vars.join("variables"), &tensors)?;
        }
        std::fs::create_dir(tmp.join("assets")).map_err(|e| Error::io(&tmp.join("assets"), e))?;
        Ok(())
    })
}

/// Fills a fresh directory beside `dir` with `fill`, then puts it at `dir`:
/// a rename, or an atomic exchange with an existing `dir` (Linux'
/// `renameat2(RENAME_EXCHANGE)`; elsewhere two renames, the old export
/// kept aside until the new one is in place).
pub(crate) fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::arg("saved_model.save", format!("{} names no directory", dir.display())))?
        .to_string();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let (tmp, old) = loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let tmp = parent.join(format!(".{name}.tmp-{tag}"));
        match std::fs::create_dir(&tmp) {
            Ok(()) => break (tmp, parent.join(format!(".{name}.old-{tag}"))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    };
    let placed = fill(&tmp).and_then(|()| {
        sync_tree(&tmp).map_err(|e| Error::io(&tmp, e))?;
        if dir.exists() {
            if exchange(&tmp, dir).is_ok() {
                // `tmp` now holds what was at `dir` (an old export, or a file).
                let _ = std::fs::remove_dir_all(&tmp).or_else(|_| std::fs::remove_file(&tmp));
                return Ok(());
            }
            std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
            std::fs::rename(&tmp, dir).map_err(|e| {
                let _ = std::fs::rename(&old, dir);
                Error::io(dir, e)
            })?;
            let _ = std::fs::remove_dir_all(&old);
            Ok(())
        } else {
            std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
        }
    });
    if placed.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    placed
}

/// fsyncs every file under `dir`, then the directories.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let cb = CString::new(b.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings for the call's duration.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// The next free version number under `base` (TF Serving's numbered
/// version folders): one past the largest numeric folder, or 1.
pub fn next_version(base: impl AsRef<Path>) -> Result<u64> {
    let base = base.as_ref();
    let mut max = 0;
    match std::fs::read_dir(base) {
        Ok(entries) => {
            for e in entries.flatten() {
                if let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                    max = max.max(v);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(base, e)),
    }
    Ok(max + 1)
}
