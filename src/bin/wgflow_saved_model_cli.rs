//! `wgflow_saved_model_cli`: TensorFlow's `saved_model_cli`, on wgflow.
//!
//! ```text
//! wgflow_saved_model_cli show --dir D [--all | --tag_set serve [--signature_def KEY]]
//! wgflow_saved_model_cli run --dir D --tag_set serve --signature_def serving_default \
//!     --inputs 'inputs=in.npy' [--outdir O] [--overwrite]
//! ```
//!
//! `show` prints what TensorFlow's prints (tag-sets, signature keys,
//! `inputs['x'] tensor_info:` with dtype, shape and name, `Method name is:`).
//! `run` reads NumPy `.npy` inputs, runs the signature on the default device
//! (`WGFLOW_DEVICE` picks another) and prints each output, or with
//! `--outdir` writes it to `O/<output key>.npy`.

use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wgflow::io::npy::{self, NpyArray, NpyData};
use wgflow::io::saved_model::{self, proto};
use wgflow::runtime::cpu::CpuData;
use wgflow::{DType, Error, Result, Tensor, config};

#[derive(Parser)]
#[command(
    name = "wgflow_saved_model_cli",
    about = "Shows and runs TensorFlow SavedModels on wgflow (the flags of TensorFlow's saved_model_cli)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show tag-sets, signatures and their inputs and outputs.
    Show(Show),
    /// Run a signature on inputs read from .npy files.
    Run(Run),
}

#[derive(Args)]
struct Show {
    /// The SavedModel directory.
    #[arg(long)]
    dir: PathBuf,
    /// Show every tag-set and signature.
    #[arg(long)]
    all: bool,
    /// A comma-separated tag-set (`serve`).
    #[arg(long = "tag_set")]
    tag_set: Option<String>,
    /// A signature key of the tag-set's MetaGraphDef.
    #[arg(long = "signature_def")]
    signature_def: Option<String>,
}

#[derive(Args)]
struct Run {
    /// The SavedModel directory.
    #[arg(long)]
    dir: PathBuf,
    /// A comma-separated tag-set (`serve`).
    #[arg(long = "tag_set")]
    tag_set: String,
    /// The signature key to run.
    #[arg(long = "signature_def")]
    signature_def: String,
    /// `KEY=FILE.npy` pairs separated by `;` (TensorFlow's form); also
    /// `KEY=FILE.npz[VARIABLE]` is not supported.
    #[arg(long)]
    inputs: String,
    /// Write each output to `<outdir>/<output key>.npy` instead of printing it.
    #[arg(long)]
    outdir: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    overwrite: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Show(s) => show(&s),
        Cmd::Run(r) => run(&r),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tags_of(m: &proto::MetaGraphDef) -> Vec<String> {
    m.meta_info_def.as_ref().map_or(vec![], |i| i.tags.clone())
}

fn shape_str(s: &Option<proto::TensorShapeProto>) -> String {
    match s.as_ref().and_then(|s| s.dims()) {
        None => "unknown_rank".into(),
        Some(d) => {
            let dims: Vec<String> = d.iter().map(|x| x.map_or("-1".into(), |x| x.to_string())).collect();
            if dims.len() == 1 {
                format!("({},)", dims[0])
            } else {
                format!("({})", dims.join(", "))
            }
        }
    }
}

fn print_signature(sig: &proto::SignatureDef, indent: &str) {
    println!("{indent}The given SavedModel SignatureDef contains the following input(s):");
    for (k, v) in sig.inputs.iter().collect::<BTreeMap<_, _>>() {
        print_tensor("inputs", k, v, indent);
    }
    println!("{indent}The given SavedModel SignatureDef contains the following output(s):");
    for (k, v) in sig.outputs.iter().collect::<BTreeMap<_, _>>() {
        print_tensor("outputs", k, v, indent);
    }
    println!("{indent}Method name is: {}", sig.method_name);
}

fn print_tensor(kind: &str, key: &str, t: &proto::TensorInfo, indent: &str) {
    println!("{indent}  {kind}['{key}'] tensor_info:");
    println!("{indent}      dtype: {}", proto::dt::name(t.dtype));
    println!("{indent}      shape: {}", shape_str(&t.tensor_shape));
    println!("{indent}      name: {}", t.name);
}

fn split_tags(s: &str) -> Vec<&str> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn show(a: &Show) -> Result<()> {
    let model = saved_model::read_saved_model(&a.dir)?;
    if a.all {
        for m in &model.meta_graphs {
            println!(
                "\nMetaGraphDef with tag-set: '{}' contains the following SignatureDefs:",
                tags_of(m).join(", ")
            );
            for (k, sig) in m.signature_def.iter().collect::<BTreeMap<_, _>>() {
                println!("\nsignature_def['{k}']:");
                print_signature(sig, "  ");
            }
        }
        return Ok(());
    }
    let Some(tag_set) = &a.tag_set else {
        println!("The given SavedModel contains the following tag-sets:");
        for m in &model.meta_graphs {
            println!("'{}'", tags_of(m).join(", "));
        }
        return Ok(());
    };
    let meta = saved_model::meta_graph(&model, &a.dir, &split_tags(tag_set))?;
    match &a.signature_def {
        None => {
            println!("The given SavedModel MetaGraphDef contains SignatureDefs with the following keys:");
            for k in meta.signature_def.keys().collect::<std::collections::BTreeSet<_>>() {
                println!("SignatureDef key: \"{k}\"");
            }
        }
        Some(key) => {
            let sig = meta.signature_def.get(key).ok_or_else(|| no_signature(key, meta))?;
            print_signature(sig, "");
        }
    }
    Ok(())
}

fn no_signature(key: &str, meta: &proto::MetaGraphDef) -> Error {
    let mut keys: Vec<&String> = meta.signature_def.keys().collect();
    keys.sort();
    Error::InvalidArgument {
        op: "saved_model_cli",
        msg: format!(
            "Could not find signature \"{key}\". Please choose from: {}",
            keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `KEY=FILE;KEY2=FILE2`.
fn parse_inputs(s: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, f) = part.split_once('=').ok_or_else(|| Error::InvalidArgument {
            op: "saved_model_cli",
            msg: format!("--inputs \"{part}\" is not in the format of <input_key>=<filename>"),
        })?;
        if f.contains('[') {
            return Err(Error::InvalidArgument {
                op: "saved_model_cli",
                msg: format!("--inputs \"{part}\": .npz variables are not supported; pass a .npy file"),
            });
        }
        out.push((k.trim().to_string(), PathBuf::from(f.trim())));
    }
    Ok(out)
}

/// The array converted to the input's dtype, as TensorFlow converts a
/// NumPy feed (integers must fit int32).
fn to_tensor(a: &NpyArray, want: DType, device: &wgflow::Device, path: &Path) -> Result<Tensor> {
    let exact = match (&a.data, want) {
        (NpyData::F32(v), DType::F32) => Some(CpuData::F32(v.clone())),
        (NpyData::F16(v), DType::F16) => Some(CpuData::F16(v.clone())),
        (NpyData::F64(v), DType::F64) => Some(CpuData::F64(v.clone())),
        (NpyData::I32(v), DType::I32) => Some(CpuData::I32(v.clone())),
        (NpyData::Bool(v), DType::Bool) => Some(CpuData::Bool(v.clone())),
        _ => None,
    };
    if let Some(data) = exact {
        return Tensor::from_data(data, &a.shape, device);
    }
    let ints: Option<Vec<i128>> = match &a.data {
        NpyData::I8(v) => Some(v.iter().map(|&x| x as i128).collect()),
        NpyData::I16(v) => Some(v.iter().map(|&x| x as i128).collect()),
        NpyData::I32(v) => Some(v.iter().map(|&x| x as i128).collect()),
        NpyData::I64(v) => Some(v.iter().map(|&x| x as i128).collect()),
        NpyData::U8(v) => Some(v.iter().map(|&x| x as i128).collect()),
        NpyData::U16(v) => Some(v.iter().map(|&x| x as i128).collect()),
        NpyData::U32(v) => Some(v.iter().map(|&x| x as i128).collect()),
        NpyData::U64(v) => Some(v.iter().map(|&x| x as i128).collect()),
        NpyData::Bool(v) => Some(v.iter().map(|&x| x as i128).collect()),
        _ => None,
    };
    let floats: Vec<f64> = match (&a.data, &ints) {
        (_, Some(i)) => i.iter().map(|&x| x as f64).collect(),
        (NpyData::F16(v), _) => v.iter().map(|x| x.to_f64()).collect(),
        (NpyData::F32(v), _) => v.iter().map(|&x| x as f64).collect(),
        (NpyData::F64(v), _) => v.clone(),
        _ => Vec::new(),
    };
    let data = match want {
        DType::F32 => CpuData::F32(floats.iter().map(|&x| x as f32).collect()),
        DType::F16 => CpuData::F16(floats.iter().map(|&x| half::f16::from_f32(x as f32)).collect()),
        DType::BF16 => CpuData::BF16(floats.iter().map(|&x| half::bf16::from_f32(x as f32)).collect()),
        DType::F64 => CpuData::F64(floats),
        DType::Bool => CpuData::Bool(floats.iter().map(|&x| x != 0.0).collect()),
        DType::I32 => {
            let Some(ints) = ints else {
                return Err(Error::InvalidArgument {
                    op: "saved_model_cli",
                    msg: format!("{}: floating-point values for an int32 input", path.display()),
                });
            };
            CpuData::I32(
                ints.iter()
                    .map(|&x| {
                        i32::try_from(x).map_err(|_| Error::InvalidArgument {
                            op: "saved_model_cli",
                            msg: format!("{}: the value {x} does not fit the int32 input", path.display()),
                        })
                    })
                    .collect::<Result<_>>()?,
            )
        }
    };
    Tensor::from_data(data, &a.shape, device)
}

fn to_npy(t: &Tensor) -> Result<NpyArray> {
    let data = match t.to_data()? {
        CpuData::F32(v) => NpyData::F32(v),
        CpuData::F16(v) => NpyData::F16(v),
        CpuData::F64(v) => NpyData::F64(v),
        // NumPy has no bfloat16: written widened to float32 (exact).
        CpuData::BF16(v) => NpyData::F32(v.iter().map(|x| x.to_f32()).collect()),
        CpuData::I32(v) => NpyData::I32(v),
        CpuData::Bool(v) => NpyData::Bool(v),
    };
    NpyArray::new(t.shape().to_vec(), data)
}

/// NumPy-like nested-list text of `t`.
fn format_tensor(t: &Tensor) -> Result<String> {
    let vals: Vec<String> = match t.to_data()? {
        CpuData::Bool(v) => v
            .iter()
            .map(|b| if *b { "True".into() } else { "False".into() })
            .collect(),
        CpuData::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        other => {
            let f: Vec<f64> = match other {
                CpuData::F32(v) => v.iter().map(|&x| x as f64).collect(),
                CpuData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
                CpuData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
                CpuData::F64(v) => v,
                _ => vec![],
            };
            f.iter()
                .map(|x| {
                    if x.is_nan() {
                        "nan".into()
                    } else if x.is_infinite() {
                        if *x > 0.0 { "inf".into() } else { "-inf".into() }
                    } else {
                        format!("{x:e}")
                    }
                })
                .collect()
        }
    };
    fn nest(shape: &[usize], vals: &[String], depth: usize) -> String {
        match shape.split_first() {
            None => vals.first().cloned().unwrap_or_default(),
            Some((&n, rest)) => {
                let inner: usize = rest.iter().product();
                let parts: Vec<String> = (0..n)
                    .map(|i| nest(rest, vals.get(i * inner..(i + 1) * inner).unwrap_or(&[]), depth + 1))
                    .collect();
                let sep = if rest.is_empty() {
                    " ".to_string()
                } else {
                    format!("\n{}", " ".repeat(depth + 1))
                };
                format!("[{}]", parts.join(&sep))
            }
        }
    }
    Ok(nest(t.shape(), &vals, 0))
}

fn run(a: &Run) -> Result<()> {
    let device = config::default_device()?;
    let inputs = parse_inputs(&a.inputs)?;
    let tags = split_tags(&a.tag_set);
    // Check the signature before the (slower) load, with TF's wording.
    let model = saved_model::read_saved_model(&a.dir)?;
    let meta = saved_model::meta_graph(&model, &a.dir, &tags)?;
    let sig = meta
        .signature_def
        .get(&a.signature_def)
        .ok_or_else(|| no_signature(&a.signature_def, meta))?;
    for (k, _) in &inputs {
        if !sig.inputs.contains_key(k) {
            let mut keys: Vec<&String> = sig.inputs.keys().collect();
            keys.sort();
            return Err(Error::InvalidArgument {
                op: "saved_model_cli",
                msg: format!(
                    "\"{k}\" is not a valid input key. Please choose from {}",
                    keys.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let mut loaded = saved_model::load_with(&a.dir, &tags, &device)?;
    let f = loaded.signature(&a.signature_def)?;
    let specs = f.inputs().to_vec();
    let mut named = Vec::new();
    for (k, path) in &inputs {
        let arr = npy::read(path)?;
        let want = specs
            .iter()
            .find(|s| s.name.as_deref() == Some(k.as_str()))
            .map_or(DType::F32, |s| s.dtype);
        named.push((k.as_str(), to_tensor(&arr, want, &device, path)?));
    }
    let outs = loaded.call(&a.signature_def, &named)?;
    match &a.outdir {
        None => {
            for (k, t) in &outs {
                println!("Result for output key {k}:\n{}", format_tensor(t)?);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::InvalidArgument {
                op: "saved_model_cli",
                msg: format!("{}: {e}", dir.display()),
            })?;
            for (k, t) in &outs {
                let path = dir.join(format!("{k}.npy"));
                if path.exists() && !a.overwrite {
                    return Err(Error::InvalidArgument {
                        op: "saved_model_cli",
                        msg: format!(
                            "Output file {} already exists. Add \"--overwrite\" to overwrite the existing output files.",
                            path.display()
                        ),
                    });
                }
                npy::write(&path, &to_npy(t)?)?;
                println!("Output {k} is saved to {}", path.display());
            }
        }
    }
    Ok(())
}
