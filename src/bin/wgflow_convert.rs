//! `wgflow_convert`: one converter between model formats, with
//! `tflite_convert`'s flags.
//!
//! ```text
//! wgflow_convert (--keras_model_file m.keras|m.h5 | --saved_model_dir D) --output_file OUT
//!                [--opset 17] [--optimizations default|float16|int8 [--representative_data X.npy]]
//! ```
//!
//! What `--output_file` names decides the format: `*.tflite` (TensorFlow
//! Lite; `--optimizations` picks dynamic-range int8 weights, float16
//! weights, or full int8 calibrated on `--representative_data`, samples
//! along axis 0), `*.onnx` (ONNX, opset `--opset`), `*.keras` (Keras 3),
//! `*.h5` (legacy Keras), a path without one of these extensions a
//! SavedModel directory. A SavedModel holds functions, not layers, so it
//! converts to TFLite, ONNX and SavedModel only. `--precision fp16` (TF-TRT's
//! FP16 mode) writes a SavedModel that computes in f16 (inputs and outputs
//! stay f32), or, for a `.tflite` output, float16 weights.

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wgflow::function::ConcreteFunction;
use wgflow::io::saved_model;
use wgflow::lite::{Converter, OpsSet, Optimize};
use wgflow::nn::Model;
use wgflow::{DType, Error, Result};

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
    /// Post-training optimization of a .tflite output: default (int8
    /// weights, dynamic range), float16 (f16 weights), int8 (int8 weights
    /// and activations; needs --representative_data).
    #[arg(long, value_name = "default|float16|int8")]
    optimizations: Option<String>,
    /// Samples to calibrate int8 activations on: an .npy array, samples along axis 0.
    #[arg(long = "representative_data", alias = "representative-data", value_name = "X.npy")]
    representative_data: Option<PathBuf>,
    /// Compute precision: fp16 (a SavedModel computing in f16; f16 weights in a .tflite output).
    #[arg(long, value_name = "fp16|fp32")]
    precision: Option<String>,
}

fn arg(msg: String) -> Error {
    Error::InvalidArgument {
        op: "wgflow_convert",
        msg,
    }
}

/// The converter settings the flags ask for.
fn tflite_settings(cli: &Cli, c: &mut Converter) -> Result<()> {
    let precision = cli.precision.as_deref().map(str::to_ascii_lowercase);
    let opt = cli.optimizations.as_deref().map(str::to_ascii_lowercase);
    match precision.as_deref() {
        None | Some("fp32") => {}
        Some("fp16") => {
            if opt.as_deref().is_some_and(|o| o != "float16") {
                return Err(arg(
                    "--precision fp16 writes float16 weights; it cannot be combined with another --optimizations"
                        .into(),
                ));
            }
            c.optimizations = vec![Optimize::Default];
            c.target_spec.supported_types = vec![DType::F16];
        }
        Some(p) => return Err(arg(format!("--precision {p}: the choices are fp16, fp32"))),
    }
    match opt.as_deref() {
        None => {}
        Some("default") => c.optimizations = vec![Optimize::Default],
        Some("float16") => {
            c.optimizations = vec![Optimize::Default];
            c.target_spec.supported_types = vec![DType::F16];
        }
        Some("int8") => {
            c.optimizations = vec![Optimize::Default];
            c.target_spec.supported_ops = vec![OpsSet::TfliteBuiltinsInt8];
        }
        Some(o) => {
            return Err(arg(format!(
                "--optimizations {o}: the choices are default, float16, int8"
            )));
        }
    }
    match (&cli.representative_data, opt.as_deref()) {
        (Some(p), Some("int8" | "default")) => {
            let a = wgflow::io::npy::read(p)?;
            c.representative_dataset = Some(wgflow::lite::representative_from_npy(&a, 64)?);
        }
        (Some(_), _) => {
            return Err(arg(
                "--representative_data calibrates int8: use it with --optimizations int8".into(),
            ));
        }
        (None, Some("int8")) => {
            return Err(arg(
                "--optimizations int8 needs --representative_data X.npy to calibrate the activations".into(),
            ));
        }
        _ => {}
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<String> {
    let out = &cli.output_file;
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "tflite" && cli.representative_data.is_some() {
        return Err(arg("--representative_data applies to a .tflite --output_file".into()));
    }
    if ext != "tflite" && cli.optimizations.is_some() {
        return optimized_saved_model(cli, ext);
    }
    if ext != "tflite" && cli.precision.is_some() {
        return fp16_saved_model(cli, ext);
    }
    if ext == "tflite" {
        let (mut c, from) = match (&cli.keras_model_file, &cli.saved_model_dir) {
            (Some(file), _) => {
                let mut model = wgflow::nn::load_model_on(file, &wgflow::Device::cpu())?;
                (Converter::from_keras_model(&mut model)?, file)
            }
            (None, Some(dir)) => (Converter::from_saved_model(dir)?, dir),
            (None, None) => return Err(arg("give --keras_model_file or --saved_model_dir".into())),
        };
        tflite_settings(cli, &mut c)?;
        c.convert_to(out)?;
        return Ok(format!("{} -> {}", from.display(), out.display()));
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

/// `--optimizations` to a SavedModel: wgflow's own variants (int8 weights
/// dequantized on the device; f16 compute).
fn optimized_saved_model(cli: &Cli, ext: &str) -> Result<String> {
    let opt = cli
        .optimizations
        .as_deref()
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let convert = |f: &ConcreteFunction| -> Result<ConcreteFunction> {
        match opt.as_str() {
            "default" => f.with_int8_weights(1024),
            "float16" => f.with_compute_dtype(DType::F16),
            "int8" => Err(arg(
                "--optimizations int8 (int8 activations) is a TFLite form: write a .tflite, or use --optimizations default for a SavedModel with int8 weights".into(),
            )),
            o => Err(arg(format!("--optimizations {o}: the choices are default, float16, int8"))),
        }
    };
    let from = rewrite_saved_model(cli, ext, "--optimizations", convert)?;
    Ok(format!(
        "{from} -> {} (wgflow SavedModel, --optimizations {opt})",
        cli.output_file.display()
    ))
}

/// `--precision fp16|fp32` to a SavedModel (TF-TRT's precision mode).
fn fp16_saved_model(cli: &Cli, ext: &str) -> Result<String> {
    let dtype = match cli.precision.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("fp16") => DType::F16,
        Some("fp32") | None => DType::F32,
        Some(p) => return Err(arg(format!("--precision {p}: the choices are fp16, fp32"))),
    };
    let from = rewrite_saved_model(cli, ext, "--precision", |f| f.with_compute_dtype(dtype))?;
    if dtype == DType::F16
        && let Ok(d) = wgflow::config::default_device()
        && !d.f16_arithmetic()
    {
        eprintln!(
            "wgflow_convert: {d} has no SHADER_F16: the model's f16 ops compute in f32 there (rounded to f16); adapters with it compute in f16"
        );
    }
    Ok(format!(
        "{from} -> {} (computing in {dtype})",
        cli.output_file.display()
    ))
}

/// The input's signatures, each through `convert`, written as a SavedModel
/// to `--output_file`; returns the input's name.
fn rewrite_saved_model(
    cli: &Cli,
    ext: &str,
    flag: &str,
    convert: impl Fn(&ConcreteFunction) -> Result<ConcreteFunction>,
) -> Result<String> {
    if !ext.is_empty() {
        return Err(arg(format!(
            "{flag} applies to a .tflite or SavedModel --output_file, not *.{ext}"
        )));
    }
    let out = &cli.output_file;
    match (&cli.keras_model_file, &cli.saved_model_dir) {
        (Some(file), _) => {
            let mut model = wgflow::nn::load_model_on(file, &wgflow::Device::cpu())?;
            let mut converted = Vec::new();
            for (k, f) in &saved_model::Exportable::signatures(&mut model)? {
                converted.push((k.clone(), convert(f)?));
            }
            let refs: Vec<(&str, &ConcreteFunction)> = converted.iter().map(|(k, f)| (k.as_str(), f)).collect();
            saved_model::save_functions(out, &refs, &saved_model::SaveOptions::default())?;
            Ok(file.display().to_string())
        }
        (None, Some(dir)) => {
            saved_model::transform(dir, out, convert)?;
            Ok(dir.display().to_string())
        }
        (None, None) => Err(arg("give --keras_model_file or --saved_model_dir".into())),
    }
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
