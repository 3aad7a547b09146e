//! `wgflow_convert`: one converter between model formats, with
//! `tflite_convert`'s flags.
//!
//! ```text
//! wgflow_convert (--keras_model_file m.keras|m.h5 | --saved_model_dir D) --output_file OUT [--opset 17]
//! ```
//!
//! What `--output_file` names decides the format: `*.onnx` (ONNX, opset
//! `--opset`), `*.keras` (Keras 3), `*.h5` (legacy Keras), a path without
//! one of these extensions a SavedModel directory. A SavedModel holds
//! functions, not layers, so it converts to ONNX and SavedModel only. Not
//! built yet: `*.tflite` and the optimization flags (`--optimizations`,
//! `--representative_data`, `--precision`), which are errors that say so.

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wgflow::io::saved_model;
use wgflow::nn::Model;
use wgflow::{Error, Result};

#[derive(Parser)]
#[command(
    name = "wgflow_convert",
    about = "Converts Keras files and SavedModels to ONNX, Keras (.keras, .h5) and SavedModel (tflite_convert's flags)"
)]
struct Cli {
    /// A Keras model file (.keras, or the legacy .h5).
    #[arg(
        long = "keras_model_file",
        alias = "keras-model-file",
        value_name = "FILE",
        conflicts_with = "saved_model_dir"
    )]
    keras_model_file: Option<PathBuf>,
    /// A SavedModel directory (its serve tag-set).
    #[arg(long = "saved_model_dir", alias = "saved-model-dir", value_name = "DIR")]
    saved_model_dir: Option<PathBuf>,
    /// The output: *.onnx, *.keras, *.h5, or a SavedModel directory.
    #[arg(long = "output_file", alias = "output-file", value_name = "PATH")]
    output_file: PathBuf,
    /// The ONNX opset (13 to 17).
    #[arg(long, default_value_t = 17)]
    opset: i64,
    /// Post-training optimizations (not built yet).
    #[arg(long, value_name = "KIND")]
    optimizations: Option<String>,
    /// Representative data for int8 quantization (not built yet).
    #[arg(long = "representative_data", alias = "representative-data", value_name = "X.npy")]
    representative_data: Option<PathBuf>,
    /// Compute precision (not built yet).
    #[arg(long, value_name = "fp16")]
    precision: Option<String>,
}

fn not_built(what: &str) -> Error {
    Error::Unimplemented {
        what: what.into(),
        msg: "wgflow_convert does not build it yet (see the README's status)".into(),
    }
}

fn run(cli: &Cli) -> Result<String> {
    if cli.optimizations.is_some() || cli.representative_data.is_some() || cli.precision.is_some() {
        return Err(not_built("--optimizations / --representative_data / --precision"));
    }
    let out = &cli.output_file;
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "tflite" {
        return Err(not_built("TensorFlow Lite output"));
    }
    if let Some(file) = &cli.keras_model_file {
        let mut model = wgflow::nn::load_model(file)?;
        match ext {
            "onnx" => wgflow::onnx::export(&mut model, out, cli.opset)?,
            "keras" | "h5" | "hdf5" => model.save(out)?,
            _ => model.export(out)?,
        }
        return Ok(format!("{} -> {}", file.display(), out.display()));
    }
    let Some(dir) = &cli.saved_model_dir else {
        return Err(Error::InvalidArgument {
            op: "wgflow_convert",
            msg: "give --keras_model_file or --saved_model_dir".into(),
        });
    };
    let mut loaded = saved_model::load(dir)?;
    match ext {
        "onnx" => {
            let f = loaded.signature(saved_model::DEFAULT_SIGNATURE)?;
            wgflow::onnx::export_function(f, out, cli.opset)?;
        }
        "keras" | "h5" | "hdf5" => {
            return Err(Error::Unimplemented {
                what: "a SavedModel as a Keras file".into(),
                msg: format!(
                    "{}: a SavedModel holds traced functions, not the layers a Keras file describes; convert the Keras model instead",
                    dir.display()
                ),
            });
        }
        // SavedModel to SavedModel: the same files, checked by the load above.
        _ => copy_dir(dir, out)?,
    }
    Ok(format!("{} -> {}", dir.display(), out.display()))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let io = |e: std::io::Error, p: &Path| Error::InvalidArgument {
        op: "wgflow_convert",
        msg: format!("{}: {e}", p.display()),
    };
    if to.exists() {
        return Err(io(std::io::ErrorKind::AlreadyExists.into(), to));
    }
    std::fs::create_dir_all(to).map_err(|e| io(e, to))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(e, from))? {
        let entry = entry.map_err(|e| io(e, from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| io(e, &src))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wgflow_convert: {e}");
            ExitCode::FAILURE
        }
    }
}
