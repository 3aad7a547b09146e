//! Keras model files both ways: Keras 3's `.keras` format and the legacy
//! single-file `.h5` (`model_config` and `training_config` attributes,
//! weights under `model_weights/<layer>/` as `weight_names` lists them).
//!
//! A `.keras` file is a zip of `metadata.json`, `config.json` (the model's
//! class and each layer's `get_config()`) and `model.weights.h5` (HDF5:
//! each layer's weights at `layers/<key>/vars/<i>`, where `<key>` is the
//! snake-case class name numbered per model, `dense`, `dense_1`, ..., and
//! `<i>` Keras' weight order: kernel, bias; gamma, beta, moving mean,
//! moving variance). [`save`] writes what `keras.models.load_model` reads;
//! [`load_model`] reads what Keras' `model.save("m.keras")` writes, as a
//! [`Sequential`] (from a Sequential model, or a functional one as its graph:
//! branches, merge layers, shared layers) with the
//! same weights, ready to `predict` or `compile`
//! and `fit` (a `compile_config` / `training_config` in the file compiles
//! it: optimizer, loss, accuracy metrics). HDF5 through `hdf5-pure` and the
//! zip through `zip`: no C library to install. A `.keras` file also
//! carries the optimizer's step count and, for Adam, AdamW, SGD and RMSprop, its
//! slots (`optimizer/vars`), both ways; elsewhere a loaded model starts a
//! fresh optimizer, as Keras does when they are missing.
//!
//! Every Keras option of a layer wgflow has is read; an unknown layer
//! class, or an option wgflow does not implement set to anything but its
//! default (a regularizer, `channels_first`, ...), is a typed error naming
//! the layer and the option, never a silently different model.

use super::activations::Activation;
use super::layers::{
    ActivationLayer, AveragePooling1D, AveragePooling2D, BatchNormalization, Bidirectional, Cell, CenterCrop, Conv1D,
    Conv2D, Conv2DTranspose, Cropping2D, Dense, DepthwiseConv2D, Dropout, Embedding, Flatten, FlipMode, Geometric,
    GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D, GroupNormalization, Layer,
    LayerNormalization, LayerScale, LeakyReLU, MaxPooling1D, MaxPooling2D, Merge, MergeMode as RnnMerge, MergeOp,
    Normalization, OpLayer, Operand, RMSNormalization, RandomBrightness, RandomContrast, RandomFlip, RandomGeometric,
    Recurrent, Rescaling, Reshape, Resizing, SeparableConv2D, TensorOp, UpSampling2D, ZeroPadding2D,
};
use super::mixed_precision::Policy;
use super::model::{ModelLayer, Sequential};
use super::topology::{Node, Topology};
use crate::core::error::{Error, Result};
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;

const OP: &str = "keras";

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::arg(OP, format!("{}: {msg}", path.display()))
}

fn h5_err(path: &Path, e: impl std::fmt::Display) -> Error {
    bad(path, format!("model.weights.h5: {e}"))
}

/// Keras' `to_snake_case` of a class name (`BatchNormalization` ->
/// `batch_normalization`, `Conv2D` -> `conv2d`).
fn snake(class: &str) -> String {
    let c: Vec<char> = class.chars().filter(|c| c.is_alphanumeric() || *c == '_').collect();
    let mut out = String::new();
    for (i, &ch) in c.iter().enumerate() {
        let word_start = ch.is_uppercase() && c.get(i + 1).is_some_and(|n| n.is_lowercase());
        let after_lower = i > 0 && ch.is_uppercase() && c[i - 1].is_lowercase();
        if i > 0 && (word_start || after_lower) && !out.ends_with('_') {
            out.push('_');
        }
        out.extend(ch.to_lowercase());
    }
    out
}

/// The weight-group keys of a model's layers, in order (`dense`, `dense_1`, ...).
fn keys(classes: &[&str]) -> Vec<String> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    classes
        .iter()
        .map(|c| {
            let base = snake(c);
            let n = seen.entry(base.clone()).or_insert(0);
            let key = if *n == 0 { base.clone() } else { format!("{base}_{n}") };
            *n += 1;
            key
        })
        .collect()
}

/// The weight-group key of each layer (`classes`, the InputLayer left
/// out): a functional model's InputLayer is one of its layers, first, and
/// takes part in the numbering; a Sequential model's does not.
fn layer_keys(classes: &[&str], functional: bool) -> Vec<String> {
    if !functional {
        return keys(classes);
    }
    let mut all = vec!["InputLayer"];
    all.extend_from_slice(classes);
    keys(&all).split_off(1)
}

/// The weight-group keys Keras gives a model's layers, from their kinds
/// (what wgflow writes them as).
fn kind_keys(model: &Sequential) -> Vec<String> {
    let classes: Vec<&str> = model.layers().iter().map(|l| l.kind()).collect();
    layer_keys(&classes, model.is_functional())
}

fn batch_shape(shape: &[usize]) -> Value {
    let mut v = vec![Value::Null];
    v.extend(shape.iter().map(|&d| Value::from(d)));
    Value::Array(v)
}

/// A weight's dataset: f32, or int64 for an integer weight (as Keras
/// keeps `Normalization`'s `count`).
fn put_weight(ds: &mut hdf5_pure::DatasetBuilder, v: &Variable) -> Result<()> {
    use crate::core::dtype::DType;
    let dims: Vec<u64> = v.shape().iter().map(|&d| d as u64).collect();
    if v.dtype().is_float() {
        let data = v.value().cast(DType::F32)?.to_vec::<f32>()?;
        ds.with_f32_data(&data).with_shape(&dims);
    } else {
        let data: Vec<i64> = v
            .value()
            .cast(DType::I32)?
            .to_vec::<i32>()?
            .into_iter()
            .map(i64::from)
            .collect();
        ds.with_i64_data(&data).with_shape(&dims);
    }
    Ok(())
}

/// Writes `weights` (datasets `0`, `1`, ...) into `g` at `path` (`vars`,
/// `cell/vars`, `forward_layer/cell/vars`), each level above the last
/// with an empty `vars` of its own, as Keras writes them.
fn put_vars(g: &mut hdf5_pure::GroupBuilder, path: &str, name: &str, weights: &[Variable]) -> Result<()> {
    match path.split_once('/') {
        None => {
            let mut vars = g.create_group(path);
            vars.set_attr("name", hdf5_pure::AttrValue::VarLenString(name.to_string()));
            for (i, v) in weights.iter().enumerate() {
                put_weight(vars.create_dataset(&i.to_string()), v)?;
            }
            g.add_group(vars.finish());
        }
        Some((head, rest)) => {
            let mut sub = g.create_group(head);
            put_vars(&mut sub, rest, name, weights)?;
            if rest != "vars" {
                let own = sub.create_group("vars").finish();
                sub.add_group(own);
            }
            g.add_group(sub.finish());
        }
    }
    Ok(())
}

/// A model's entry in a Keras config (`class_name`, `config` with its
/// layers, `build_config`): the whole file's, or a nested model's.
pub(crate) fn model_entry(model: &Sequential, input: &[usize]) -> Result<Value> {
    let mut layers = layer_entries(model, input, false)?;
    carry_policies(&mut layers, &policy_sources(model));
    let dtype =
        json!({"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null});
    let trainable = model.trainable();
    Ok(match model_graph_refs(model)? {
        Some((inputs, outputs)) => json!({
            "module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": model.model_name(), "trainable": trainable, "layers": layers,
                       "input_layers": inputs, "output_layers": outputs},
            "build_config": {"input_shape": null},
        }),
        None => json!({
            "module": "keras", "class_name": "Sequential", "registered_name": null,
            "config": {
                "name": model.model_name(), "trainable": trainable, "dtype": dtype,
                "layers": layers, "build_input_shape": batch_shape(input),
            },
            "build_config": {"input_shape": batch_shape(input)},
        }),
    })
}

/// Nested models go in `.keras` files only: the legacy `.h5` format keeps
/// its weights by layer name, one level deep.
fn refuse_nested_h5(path: &Path, model: &Sequential) -> Result<()> {
    match model.layers().iter().find(|l| nested(l.as_ref()).is_some()) {
        Some(l) => Err(Error::Unimplemented {
            what: format!("the nested model {} in a legacy .h5 file", l.name()),
            msg: format!(
                "{}: save and load models that hold models as .keras files",
                path.display()
            ),
        }),
        None => Ok(()),
    }
}

/// The model inside a layer, for a model used as a layer.
fn nested(layer: &dyn Layer) -> Option<&ModelLayer> {
    layer.as_any().and_then(|a| a.downcast_ref::<ModelLayer>())
}

/// The weight groups of a model's layers under `group` (`layers/`): its
/// InputLayers' empty ones, then each layer's `vars`, a nested model's
/// layers under its own `layers/`.
fn write_layers(group: &mut hdf5_pure::GroupBuilder, model: &Sequential, path: &Path) -> Result<()> {
    let keys = kind_keys(model);
    // Keras keys its InputLayers' (empty) groups as it keys any class.
    for k in 0..model.topology().map_or(0, |g| g.inputs.len()) {
        let key = if k == 0 {
            "input_layer".to_string()
        } else {
            format!("input_layer_{k}")
        };
        let mut lg = group.create_group(&key);
        let vars = lg.create_group("vars").finish();
        lg.add_group(vars);
        group.add_group(lg.finish());
    }
    for (layer, key) in model.layers().iter().zip(keys) {
        let mut lg = group.create_group(&key);
        if let Some(inner) = nested(layer.as_ref()) {
            let mut sub = lg.create_group("layers");
            write_layers(&mut sub, inner.model(), path)?;
            lg.add_group(sub.finish());
            let own = lg.create_group("vars").finish();
            lg.add_group(own);
            group.add_group(lg.finish());
            continue;
        }
        let ws: Vec<Variable> = layer.weights().into_iter().map(|(_, v)| v).collect();
        let runs = layer.keras_var_groups();
        let mut at = 0;
        for (sub, n) in &runs {
            let part = ws
                .get(at..at + n)
                .ok_or_else(|| bad(path, format!("layer {} lists more weights than it has", layer.name())))?;
            put_vars(&mut lg, sub, layer.name(), part)?;
            at += n;
        }
        if !runs.iter().any(|(p, _)| *p == "vars") {
            let own = lg.create_group("vars").finish();
            lg.add_group(own);
        }
        group.add_group(lg.finish());
    }
    Ok(())
}

/// `model.save("m.keras")`: the model's config and weights as a Keras 3
/// file (written whole to a temporary file, then renamed).
pub fn save(model: &Sequential, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let input = model
        .input_shape()
        .ok_or_else(|| bad(path, "the model's input shape is unknown: build it (model.build) first"))?
        .to_vec();
    match path.extension().and_then(|e| e.to_str()) {
        Some("keras") => {}
        Some("h5") | Some("hdf5") => return save_h5(model, path, &input),
        _ => {
            return Err(bad(
                path,
                "a Keras model file name ends in .keras (or .h5, the legacy format)",
            ));
        }
    }
    let mut weights = hdf5_pure::FileBuilder::new();
    let mut group = weights.create_group("layers");
    write_layers(&mut group, model, path)?;
    weights.add_group(group.finish());
    if let Some(c) = model.compiled_ref() {
        if let Some(og) = optimizer_group(model, c, &mut weights)? {
            weights.add_group(og);
        }
    }
    let mut root_vars = weights.create_group("vars");
    root_vars.set_attr(
        "name",
        hdf5_pure::AttrValue::VarLenString(model.model_name().to_string()),
    );
    weights.add_group(root_vars.finish());
    let h5 = weights.finish().map_err(|e| h5_err(path, e))?;
    let config = model_entry(model, &input)?;
    let mut config = config;
    if let Some(c) = model.compiled_ref() {
        config["compile_config"] = compile_config(c);
    }
    let metadata = json!({"keras_version": "3.15.1", "wgflow_version": env!("CARGO_PKG_VERSION")});
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let zerr = |e: zip::result::ZipError| bad(path, e);
    for (name, bytes) in [
        ("metadata.json", metadata.to_string().into_bytes()),
        ("config.json", config.to_string().into_bytes()),
        ("model.weights.h5", h5),
    ] {
        zip.start_file(name, opts).map_err(zerr)?;
        zip.write_all(&bytes).map_err(|e| bad(path, e))?;
    }
    let bytes = zip.finish().map_err(zerr)?.into_inner();
    crate::io::write_atomic(path, &bytes)
}

/// `keras.models.load_model("m.keras")` on the default device.
pub fn load_model(path: impl AsRef<Path>) -> Result<Sequential> {
    load_model_on(path, &crate::runtime::config::default_device()?)
}

/// Most bytes a `.keras` file's `config.json` may declare.
const MAX_CONFIG_BYTES: u64 = 64 << 20;
/// Most bytes a `.keras` file's `model.weights.h5` may declare.
const MAX_WEIGHTS_BYTES: u64 = 16 << 30;

/// [`load_model`] with the weights on `device`.
pub fn load_model_on(path: impl AsRef<Path>, device: &Device) -> Result<Sequential> {
    let path = path.as_ref();
    match path.extension().and_then(|e| e.to_str()) {
        Some("keras") => {}
        Some("h5") | Some("hdf5") => return load_h5(path, device),
        _ => return Err(bad(path, "not a Keras model file (.keras or .h5)")),
    }
    let file = std::fs::File::open(path).map_err(|e| crate::io::io_err(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(path, format!("not a Keras zip archive: {e}")))?;
    // An entry is read up to the size its header declares, which must be
    // sane for what it holds (a zip bomb declares little and inflates to
    // much, or declares terabytes).
    let mut entry = |name: &str, max: u64| -> Result<Vec<u8>> {
        let f = zip
            .by_name(name)
            .map_err(|e| bad(path, format!("no {name} in the archive ({e})")))?;
        let declared = f.size();
        if declared > max {
            return Err(bad(
                path,
                format!("{name} declares {declared} bytes, more than the {max} wgflow reads for it"),
            ));
        }
        let mut out = Vec::new();
        out.try_reserve_exact(declared as usize).map_err(|_| {
            bad(
                path,
                format!("{name} declares {declared} bytes, which do not fit in memory"),
            )
        })?;
        f.take(declared.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("{name} cannot be read: {e}")))?;
        if out.len() as u64 > declared {
            return Err(bad(
                path,
                format!("{name} inflates to more than the {declared} bytes its header declares"),
            ));
        }
        if (out.len() as u64) < declared {
            return Err(bad(
                path,
                format!(
                    "{name} holds {} bytes, not the {declared} its header declares",
                    out.len()
                ),
            ));
        }
        Ok(out)
    };
    let config: Value = serde_json::from_slice(&entry("config.json", MAX_CONFIG_BYTES)?)
        .map_err(|e| bad(path, format!("config.json is not JSON: {e}")))?;
    let h5 = entry("model.weights.h5", MAX_WEIGHTS_BYTES)?;
    let (mut model, keys) = model_from_config(path, &config, device)?;
    if let Some(c) = config.get("compile_config").filter(|c| !c.is_null()) {
        compile_from(&mut model, c, &c["optimizer"]).unwrap_or_else(|e| uncompiled(path, &e));
    }
    let file = open_h5(h5).map_err(|e| h5_err(path, e))?;
    read_layers(path, &file, "", model.layers(), &keys, device)?;
    restore_optimizer(&mut model, &file);
    Ok(model)
}

/// Reads the weights of `layers` (weight-group keys `keys`) from a
/// `.keras` file's `model.weights.h5`, under `prefix` (a nested model's
/// `layers/<key>/`).
fn read_layers(
    path: &Path,
    file: &hdf5_pure::File,
    prefix: &str,
    layers: &[Box<dyn Layer>],
    keys: &[String],
    device: &Device,
) -> Result<()> {
    for (layer, key) in layers.iter().zip(keys) {
        if let Some(inner) = nested(layer.as_ref()) {
            let inner_keys = match &inner.keras_keys {
                Some(k) => k.clone(),
                None => kind_keys(inner.model()),
            };
            let prefix = format!("{prefix}layers/{key}/");
            read_layers(path, file, &prefix, inner.model().layers(), &inner_keys, device)?;
            continue;
        }
        let ws = layer.weights();
        if ws.is_empty() {
            continue;
        }
        let mut at = 0;
        for (sub, n) in layer.keras_var_groups() {
            let group = format!("{prefix}layers/{key}/{sub}");
            let vars = file
                .group(&group)
                .map_err(|_| h5_err(path, format!("no {group} for layer {}", layer.name())))?;
            let stored = vars.datasets().map_err(|e| h5_err(path, e))?.len();
            if stored != n {
                return Err(h5_err(
                    path,
                    format!(
                        "layer {} ({group}) has {stored} weights, the config makes {n}",
                        layer.name()
                    ),
                ));
            }
            for i in 0..n {
                let (wname, var) = ws
                    .get(at + i)
                    .ok_or_else(|| h5_err(path, format!("layer {} lists more weights than it has", layer.name())))?;
                let what = format!("{group}/{i} (the {wname} of layer {})", layer.name());
                let ds = vars
                    .dataset(&i.to_string())
                    .map_err(|_| h5_err(path, format!("no {what}")))?;
                assign(path, &ds, var, &what, device)?;
            }
            at += n;
        }
    }
    Ok(())
}

/// Keras' optimizer variables (`optimizer/vars`: the step count, the
/// learning rate, then each trainable variable's slots in turn) for Adam,
/// AdamW and SGD; other optimizers are left out (Keras then starts a fresh
/// one, with a warning).
fn optimizer_group(
    model: &Sequential,
    c: &super::model::Compiled,
    file: &mut hdf5_pure::FileBuilder,
) -> Result<Option<hdf5_pure::FinishedGroup>> {
    let opt = &c.optimizer;
    if !matches!(opt.name(), "Adam" | "AdamW" | "SGD" | "RMSprop") || opt.is_loss_scaled() {
        return Ok(None);
    }
    let mut g = file.create_group("optimizer");
    let mut vars = g.create_group("vars");
    vars.set_attr("name", hdf5_pure::AttrValue::VarLenString(opt.name().to_lowercase()));
    vars.create_dataset("0")
        .with_i64_data(&[opt.iterations() as i64])
        .with_shape(&[]);
    vars.create_dataset("1")
        .with_f32_data(&[opt.learning_rate() as f32])
        .with_shape(&[]);
    let per = opt.slot_count();
    let mut all = Vec::new();
    for (_, v) in model
        .layers()
        .iter()
        .flat_map(|l| l.weights())
        .filter(|(_, v)| v.trainable())
    {
        let slots: Vec<Vec<f32>> = match opt.existing_slots(&v) {
            Some(s) => s
                .iter()
                .map(|s| s.value().cast(crate::core::dtype::DType::F32)?.to_vec::<f32>())
                .collect::<Result<_>>()?,
            None => vec![vec![0.0; v.numel()]; per],
        };
        let dims: Vec<u64> = v.shape().iter().map(|&d| d as u64).collect();
        all.push((dims, slots));
    }
    let mut i = 2;
    for (var, slot) in slot_order(opt.name(), all.len(), per) {
        let (dims, slots) = &all[var];
        let s = slots.get(slot).map(Vec::as_slice).unwrap_or_default();
        vars.create_dataset(&i.to_string()).with_f32_data(s).with_shape(dims);
        i += 1;
    }
    g.add_group(vars.finish());
    Ok(Some(g.finish()))
}

/// The order of a Keras optimizer's slot variables after its step count
/// and learning rate, as (trainable variable, slot) pairs: Adam's and
/// SGD's slots each variable's in turn; RMSprop's all velocities, then all
/// momentums (it adds them one kind at a time).
fn slot_order(optimizer: &str, vars: usize, per: usize) -> Vec<(usize, usize)> {
    if optimizer == "RMSprop" {
        (0..per).flat_map(|s| (0..vars).map(move |v| (v, s))).collect()
    } else {
        (0..vars).flat_map(|v| (0..per).map(move |s| (v, s))).collect()
    }
}

/// Restores the step count and slots a Keras file holds into the model's
/// optimizer, when they fit it (else a notice: a fresh optimizer, as Keras).
fn restore_optimizer(model: &mut Sequential, file: &hdf5_pure::File) {
    use super::model::Model;
    let Ok(vars) = file.group("optimizer/vars") else { return };
    let trainable = model.trainable_variables();
    let Some(c) = model.compiled().as_mut() else { return };
    let opt = &mut c.optimizer;
    let result = (|| -> std::result::Result<(), String> {
        let n = vars.datasets().map_err(|e| e.to_string())?.len();
        let mut per = None;
        for v in &trainable {
            per = Some(opt.slots_of(v).map_err(|e| e.to_string())?.len());
        }
        let per = per.unwrap_or(0);
        if n != 2 + per * trainable.len() {
            return Err(format!(
                "{n} optimizer variables, {} expected for {} and {} trainable variables",
                2 + per * trainable.len(),
                opt.name(),
                trainable.len()
            ));
        }
        let step = vars
            .dataset("0")
            .and_then(|d| d.read_i64())
            .map_err(|e| e.to_string())?;
        let mut at = 2;
        for (vi, si) in slot_order(opt.name(), trainable.len(), per) {
            let v = &trainable[vi];
            let slots = opt.slots_of(v).map_err(|e| e.to_string())?;
            if let Some(s) = slots.get(si) {
                let d = vars.dataset(&at.to_string()).map_err(|e| e.to_string())?;
                let dims: Vec<usize> = d
                    .shape()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|x| x as usize)
                    .collect();
                if dims != v.shape() {
                    return Err(format!(
                        "optimizer variable {at} has shape {dims:?}, {:?} expected",
                        v.shape()
                    ));
                }
                let data = read_floats(&d)?;
                let t = Tensor::from_vec(data, &dims, &v.device()).map_err(|e| e.to_string())?;
                s.assign(&t.cast(s.dtype()).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                at += 1;
            }
        }
        opt.set_iterations(step.first().copied().unwrap_or(0).max(0) as u64);
        Ok(())
    })();
    if let Err(e) = result {
        log::warn!("Keras file: the optimizer's state does not fit ({e}); training starts a fresh optimizer");
    }
}

/// The model a Keras config describes (a Sequential model, or a
/// functional one as a graph), built on `device`, and the weight-group key
/// of each of its layers in a `.keras` file.
fn model_from_config(path: &Path, config: &Value, device: &Device) -> Result<(Sequential, Vec<String>)> {
    let class = config["class_name"].as_str().unwrap_or_default();
    let cfg = &config["config"];
    let functional = match class {
        "Sequential" => false,
        "Functional" | "Model" => true,
        _ => {
            return Err(Error::Unimplemented {
                what: format!("Keras model class {class:?}"),
                msg: format!("{}: wgflow loads Sequential and functional models", path.display()),
            });
        }
    };
    let layer_cfgs = cfg["layers"]
        .as_array()
        .ok_or_else(|| bad(path, "the model config has no layer list"))?;
    let mut input: Option<Vec<usize>> = None;
    // Each InputLayer's shape, by config entry (a functional model may have several).
    let mut input_shapes: Vec<Option<Vec<usize>>> = Vec::new();
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    let mut classes: Vec<&str> = Vec::new();
    let mut bn_axes: Vec<Option<i64>> = Vec::new();
    // Layers the config freezes (`"trainable": false`), by name.
    let mut frozen: Vec<String> = Vec::new();
    for lc in layer_cfgs {
        let class = lc["class_name"]
            .as_str()
            .ok_or_else(|| bad(path, "a layer without a class_name"))?;
        let c = &lc["config"];
        classes.push(class);
        if class == "InputLayer" {
            if input.is_some() && !functional {
                return Err(bad(path, "a Sequential model with two InputLayers"));
            }
            let shape = shape_of(c.get("batch_shape").or(c.get("batch_input_shape")), true)
                .or_else(|| shape_of(c.get("shape"), false));
            if functional && shape.is_none() {
                let name = lc["name"].as_str().or(c["name"].as_str()).unwrap_or("?");
                return Err(bad(path, format!("InputLayer {name} has no shape")));
            }
            if input.is_none() {
                input = shape.clone();
            }
            input_shapes.push(shape);
            continue;
        }
        input_shapes.push(None);
        // Keras 2 puts the input shape on the first layer.
        if input.is_none() && !functional {
            input = shape_of(c.get("batch_input_shape"), true);
        }
        let mut layer = if is_op(lc) {
            op_from_config(class, lc).map_err(|e| bad(path, e))?
        } else if matches!(class, "Sequential" | "Functional" | "Model") {
            // A model used as a layer: built here, with its own keys.
            let (inner, keys) = model_from_config(path, lc, device)?;
            let mut l = ModelLayer::new(inner);
            l.keras_keys = Some(keys);
            Box::new(l)
        } else {
            layer_from_config(class, c).map_err(|e| bad(path, e))?
        };
        // The layer keeps the file's name (its weights are named after it).
        if let Some(name) = lc["name"].as_str().or(c["name"].as_str()).filter(|n| !n.is_empty()) {
            layer.set_name(name);
            super::layers::reserve_name(name);
        }
        if c.get("trainable") == Some(&Value::Bool(false)) {
            frozen.push(layer.name().to_string());
        }
        layers.push(layer);
        bn_axes.push(if matches!(class, "BatchNormalization" | "LayerNormalization") {
            bn_axis(c.get("axis")).map_err(|e| bad(path, e))?
        } else {
            None
        });
    }
    let input = input
        .or_else(|| shape_of(cfg.get("build_input_shape"), true))
        .or_else(|| shape_of(config["build_config"].get("input_shape"), true))
        .ok_or_else(|| {
            bad(
                path,
                "the model config gives no input shape (no InputLayer, no build_input_shape)",
            )
        })?;
    let layer_classes: Vec<&str> = classes.iter().copied().filter(|c| *c != "InputLayer").collect();
    let (mut model, keys) = if functional {
        let names: Vec<&str> = layer_cfgs
            .iter()
            .map(|l| l["name"].as_str().or(l["config"]["name"].as_str()).unwrap_or_default())
            .collect();
        let graph = graph_from_config(cfg, &names, &classes, &layers, &input_shapes).map_err(|e| bad(path, e))?;
        let firsts = (0..layers.len())
            .map(|l| {
                graph
                    .nodes_of(l)
                    .next()
                    .and_then(|(_, n)| n.inputs.first())
                    .and_then(|&j| graph.nodes.get(j))
                    .map(|n| n.shape.clone())
            })
            .collect::<Vec<_>>();
        check_bn_axes(&layers, &bn_axes, &firsts).map_err(|e| bad(path, e))?;
        // Keras rebuilds the graph and numbers the weight groups in its
        // order (the InputLayer first), whatever the order of the list.
        let name = cfg["name"].as_str().unwrap_or("functional");
        let inputs: Vec<(usize, String)> = graph.inputs.iter().copied().zip(graph.input_names).collect();
        let (model, order) = super::functional::assemble(name, layers, graph.nodes, &inputs, &graph.outputs)?;
        let ordered: Vec<&str> = order
            .iter()
            .map(|&i| layer_classes.get(i).copied().unwrap_or_default())
            .collect();
        (model, layer_keys(&ordered, true))
    } else {
        let mut firsts = Vec::new();
        let mut shape = input.clone();
        for l in &layers {
            firsts.push(Some(shape.clone()));
            shape = l.output_shape(&shape).map_err(|e| bad(path, e))?;
        }
        check_bn_axes(&layers, &bn_axes, &firsts).map_err(|e| bad(path, e))?;
        (Sequential::from_layers(layers), layer_keys(&layer_classes, false))
    };
    match model.topology().map(|g| g.input_shapes()) {
        Some(shapes) => model.build_many(&shapes, device)?,
        None => model.build(&input, device)?,
    }
    for l in model.layers_mut() {
        if frozen.iter().any(|n| n == l.name()) {
            l.set_trainable(false)?;
        }
    }
    if cfg.get("trainable") == Some(&Value::Bool(false)) {
        model.set_trainable(false)?;
    }
    Ok((model, keys))
}

/// A reference to a layer call's output in a Keras config: the layer's
/// name, the call's index among that layer's calls, the output's index.
type TensorRef = (String, usize, usize);

/// `["dense", 0, 0]`.
fn tensor_ref(v: &Value) -> std::result::Result<TensorRef, String> {
    match v.as_array().map(Vec::as_slice) {
        Some([name, node, tensor, ..]) => match (name.as_str(), node.as_u64(), tensor.as_u64()) {
            (Some(n), Some(k), Some(t)) => Ok((n.to_string(), k as usize, t as usize)),
            _ => Err(format!("{v} is not a tensor reference [layer, node, tensor]")),
        },
        _ => Err(format!("{v} is not a tensor reference [layer, node, tensor]")),
    }
}

/// The tensors of a model's `input_layers` / `output_layers`: one
/// reference, or a list of them.
fn tensor_refs(v: &Value) -> std::result::Result<Vec<TensorRef>, String> {
    match v.as_array() {
        Some(a) if a.first().is_some_and(Value::is_string) => Ok(vec![tensor_ref(v)?]),
        Some(a) => a.iter().map(tensor_ref).collect(),
        None => Err(format!("{v} is not a list of tensor references")),
    }
}

/// The input references of one call (`inbound_nodes` entry): Keras 3's
/// `{"args": [tensor or [tensors]], "kwargs": {}}` or Keras 2's list of
/// `[layer, node, tensor, kwargs]`; and the call's `training=` if it fixes
/// one (`base(x, training=False)`), its only keyword wgflow takes.
fn node_inputs(layer: &str, node: &Value, op: bool) -> std::result::Result<(Vec<TensorRef>, Option<bool>), String> {
    let mut training = None;
    let mut kwargs = |k: &Value| match k {
        Value::Null => Ok(()),
        Value::Object(m) => {
            for (k, v) in m.iter().filter(|(_, v)| !v.is_null()) {
                match (k.as_str(), v) {
                    ("training", Value::Bool(b)) => training = Some(*b),
                    _ => {
                        return Err(format!(
                            "layer {layer} is called with {k}={v}, which wgflow does not support"
                        ));
                    }
                }
            }
            Ok(())
        }
        v => Err(format!("layer {layer}: call arguments {v} are not an object")),
    };
    if let Some(list) = node.as_array() {
        let refs = list
            .iter()
            .map(|e| {
                if let Some(k) = e.get(3) {
                    kwargs(k)?;
                }
                tensor_ref(e)
            })
            .collect::<std::result::Result<_, String>>()?;
        return Ok((refs, training));
    }
    kwargs(&node["kwargs"])?;
    let args = node["args"]
        .as_array()
        .ok_or_else(|| format!("layer {layer}: a call without args"))?;
    let keras_tensor = |t: &Value| {
        if t["class_name"] != "__keras_tensor__" {
            return Err(format!("layer {layer}: argument {t} is not a tensor"));
        }
        tensor_ref(&t["config"]["keras_history"])
    };
    if op {
        // An operation's tensors; its numbers are in the layer (`op_operands`).
        let refs = args
            .iter()
            .filter(|a| !a.is_number())
            .map(keras_tensor)
            .collect::<std::result::Result<_, _>>()?;
        return Ok((refs, training));
    }
    let [first] = args.as_slice() else {
        return Err(format!(
            "layer {layer} is called with {} positional arguments; wgflow takes one (a tensor or a list)",
            args.len()
        ));
    };
    let refs = match first {
        Value::Array(ts) => ts.iter().map(keras_tensor).collect::<std::result::Result<_, _>>()?,
        t => vec![keras_tensor(t)?],
    };
    Ok((refs, training))
}

/// Whether a config entry is an operation on tensors (`x + 3` in a
/// functional model), a `keras.src.ops` class. Keras writes legacy `.h5`
/// configs without modules: there an operation is an operation's class
/// whose config lacks what every layer's has (`trainable`), which tells
/// `Multiply` the operation from `Multiply` the merge layer.
fn is_op(lc: &Value) -> bool {
    if let Some(m) = lc["module"].as_str() {
        return m.starts_with("keras.src.ops");
    }
    let class = lc["class_name"].as_str().unwrap_or_default();
    lc["config"].get("trainable").is_none() && TensorOp::from_keras("", class, &lc["config"]).is_ok()
}

/// One call's operands: tensors and numbers, in order.
fn op_operands(layer: &str, node: &Value) -> std::result::Result<Vec<Operand>, String> {
    if node["kwargs"]
        .as_object()
        .is_some_and(|k| k.values().any(|v| !v.is_null()))
    {
        return Err(format!(
            "operation {layer} is called with keyword arguments {}",
            node["kwargs"]
        ));
    }
    let args = node["args"]
        .as_array()
        .ok_or_else(|| format!("operation {layer}: a call without args"))?;
    args.iter()
        .map(|a| match a {
            Value::Number(n) => n
                .as_f64()
                .map(Operand::Scalar)
                .ok_or_else(|| format!("operation {layer}: {n} is not a number wgflow takes")),
            t if t["class_name"] == "__keras_tensor__" => Ok(Operand::Tensor),
            v => Err(format!(
                "operation {layer}: argument {v} is neither a tensor nor a number"
            )),
        })
        .collect()
}

/// An operation of a functional model (a `keras.src.ops.numpy` class) as
/// an [`OpLayer`], its numbers from its calls (the same in every call).
fn op_from_config(class: &str, lc: &Value) -> std::result::Result<Box<dyn Layer>, String> {
    // Legacy .h5 configs have no modules.
    let module = lc["module"].as_str().unwrap_or_default();
    let name = lc["name"].as_str().or(lc["config"]["name"].as_str()).unwrap_or("?");
    let op = TensorOp::from_keras(module, class, &lc["config"]).map_err(|e| format!("operation {name}: {e}"))?;
    let calls = lc["inbound_nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let first = calls
        .first()
        .ok_or_else(|| format!("operation {name} is never called"))?;
    let operands = op_operands(name, first)?;
    for c in &calls[1..] {
        if op_operands(name, c)? != operands {
            return Err(format!(
                "operation {name} is called with different numbers in its calls"
            ));
        }
    }
    Ok(Box::new(OpLayer::new(op, operands).map_err(|e| e.to_string())?))
}

/// A functional model's graph from its config, as Keras'
/// `functional_from_config` makes it: each layer's calls made in order,
/// layers in config order, repeating until every call's inputs exist.
fn graph_from_config(
    cfg: &Value,
    names: &[&str],
    classes: &[&str],
    layers: &[Box<dyn Layer>],
    input_shapes: &[Option<Vec<usize>>],
) -> std::result::Result<Topology, String> {
    use std::collections::{HashMap, VecDeque};
    // Config entry -> index among the layers (None: the InputLayer).
    let mut index = Vec::with_capacity(names.len());
    let mut next = 0;
    for c in classes {
        if *c == "InputLayer" {
            index.push(None);
        } else {
            index.push(Some(next));
            next += 1;
        }
    }
    let mut nodes_of: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut nodes = Vec::new();
    let mut pending: Vec<VecDeque<(Vec<TensorRef>, Option<bool>)>> = Vec::with_capacity(names.len());
    let layer_cfgs = cfg["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (i, lc) in layer_cfgs.iter().enumerate() {
        if nodes_of.contains_key(names[i]) {
            return Err(format!("two layers are named {:?}", names[i]));
        }
        nodes_of.insert(names[i], Vec::new());
        let calls = lc["inbound_nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
        if index[i].is_none() {
            nodes_of.insert(names[i], vec![nodes.len()]);
            let shape = input_shapes
                .get(i)
                .cloned()
                .flatten()
                .ok_or("an InputLayer without a shape")?;
            nodes.push(Node {
                layer: None,
                inputs: Vec::new(),
                shape,
                training: None,
            });
            pending.push(VecDeque::new());
            continue;
        }
        if calls.is_empty() {
            return Err(format!("layer {} is never called in the model's graph", names[i]));
        }
        pending.push(
            calls
                .iter()
                .map(|n| node_inputs(names[i], n, is_op(lc)))
                .collect::<std::result::Result<_, _>>()?,
        );
    }
    loop {
        let mut progress = false;
        for i in 0..pending.len() {
            while let Some((refs, training)) = pending[i].front() {
                let mut inputs = Vec::with_capacity(refs.len());
                for (name, node, tensor) in refs {
                    let made = nodes_of.get(name.as_str()).ok_or_else(|| {
                        format!(
                            "layer {} takes the output of {name:?}, which is not in the model",
                            names[i]
                        )
                    })?;
                    if *tensor != 0 {
                        return Err(format!(
                            "layer {} takes output {tensor} of {name}: wgflow's layers have one output",
                            names[i]
                        ));
                    }
                    match made.get(*node) {
                        Some(&n) => inputs.push(n),
                        None => break,
                    }
                }
                if inputs.len() < refs.len() {
                    break;
                }
                let l = index[i].ok_or("an InputLayer with calls")?;
                let shapes: Vec<Vec<usize>> = inputs.iter().map(|&j: &usize| nodes[j].shape.clone()).collect();
                let layer = layers.get(l).ok_or("a layer index out of range")?;
                let shape = layer.output_shape_many(&shapes).map_err(|e| e.to_string())?;
                if let Some(v) = nodes_of.get_mut(names[i]) {
                    v.push(nodes.len());
                }
                nodes.push(Node {
                    layer: Some(l),
                    inputs,
                    shape,
                    training: *training,
                });
                pending[i].pop_front();
                progress = true;
            }
        }
        if pending.iter().all(VecDeque::is_empty) {
            break;
        }
        if !progress {
            return Err("the graph has a loop or a call whose inputs never exist".into());
        }
    }
    let refs_in = tensor_refs(&cfg["input_layers"])?;
    let refs_out = tensor_refs(&cfg["output_layers"])?;
    if refs_in.is_empty() || refs_out.is_empty() {
        return Err("the model lists no inputs or no outputs".into());
    }
    let mut outputs = Vec::with_capacity(refs_out.len());
    for r in &refs_out {
        let (out_name, out_node, out_tensor) = r;
        // Keras numbers a nested functional model's calls from 1 here (its
        // node 0 is its own making), and from 0 in the calls' arguments.
        let at = names.iter().position(|n| n == out_name).unwrap_or(usize::MAX);
        let out_node = match classes.get(at) {
            Some(&("Functional" | "Model")) => out_node.checked_sub(1),
            _ => Some(*out_node),
        };
        let o = nodes_of
            .get(out_name.as_str())
            .zip(out_node)
            .and_then(|(v, k)| v.get(k))
            .copied()
            .filter(|_| *out_tensor == 0)
            .ok_or_else(|| format!("the output {r:?} is not a call in the graph"))?;
        outputs.push(o);
    }
    let mut inputs = Vec::with_capacity(refs_in.len());
    let mut input_names = Vec::with_capacity(refs_in.len());
    for (in_name, ..) in &refs_in {
        let at = names.iter().position(|n| n == in_name).unwrap_or(usize::MAX);
        let node = nodes_of.get(in_name.as_str()).and_then(|v| v.first()).copied();
        match (classes.get(at), node) {
            (Some(&"InputLayer"), Some(n)) if !inputs.contains(&n) => {
                inputs.push(n);
                input_names.push(in_name.clone());
            }
            _ => return Err(format!("the input {in_name:?} is not one of the model's InputLayers")),
        }
    }
    Ok(Topology {
        nodes,
        inputs,
        input_names,
        outputs,
    })
}

/// Copies a stored weight into `var`, checking its shape.
fn assign(
    path: &Path,
    ds: &hdf5_pure::Dataset,
    var: &crate::tensor::Variable,
    what: &str,
    device: &Device,
) -> Result<()> {
    let dims: Vec<usize> = ds
        .shape()
        .map_err(|e| h5_err(path, e))?
        .into_iter()
        .map(|d| d as usize)
        .collect();
    if dims != var.shape() {
        return Err(Error::shape(
            "keras.load_model",
            &[&dims, &var.shape()],
            format!("{}: {what} has the wrong shape for the config", path.display()),
        ));
    }
    let data = read_floats(ds).map_err(|e| h5_err(path, format!("{what}: {e}")))?;
    let t = Tensor::from_vec(data, &dims, device)?.cast(var.dtype())?;
    var.assign(&t)
}

/// A legacy Keras `.h5` file: the config in the root's `model_config`
/// attribute, the weights under `model_weights/<layer>/` as its
/// `weight_names` attribute lists them (layers matched in order).
fn load_h5(path: &Path, device: &Device) -> Result<Sequential> {
    let bytes = std::fs::read(path).map_err(|e| crate::io::io_err(path, e))?;
    let file = open_h5(bytes).map_err(|e| bad(path, format!("not a readable HDF5 file: {e}")))?;
    let root = file.root().attrs().map_err(|e| bad(path, e))?;
    let config = root
        .get("model_config")
        .and_then(|a| a.as_str())
        .ok_or_else(|| bad(path, "no model_config attribute (a weights-only file?)"))?;
    let config: Value =
        serde_json::from_str(config).map_err(|e| bad(path, format!("model_config is not JSON: {e}")))?;
    let (mut model, _) = model_from_config(path, &config, device)?;
    refuse_nested_h5(path, &model)?;
    if let Some(t) = root.get("training_config").and_then(|a| a.as_str()) {
        let t: Value = serde_json::from_str(t).map_err(|e| bad(path, format!("training_config is not JSON: {e}")))?;
        compile_from(&mut model, &t, &t["optimizer_config"]).unwrap_or_else(|e| uncompiled(path, &e));
    }
    let weights = file
        .group("model_weights")
        .map_err(|_| bad(path, "no model_weights group"))?;
    let names: Vec<String> = weights
        .attrs()
        .map_err(|e| bad(path, e))?
        .get("layer_names")
        .and_then(|a| a.as_strings().map(<[String]>::to_vec))
        .ok_or_else(|| bad(path, "model_weights has no layer_names"))?;
    let mut stored = Vec::new();
    for name in &names {
        let g = weights
            .group(name)
            .map_err(|_| bad(path, format!("no model_weights/{name}")))?;
        let wn: Vec<String> = g
            .attrs()
            .map_err(|e| bad(path, e))?
            .get("weight_names")
            .and_then(|a| a.as_strings().map(<[String]>::to_vec))
            .unwrap_or_default();
        if !wn.is_empty() {
            stored.push((name.clone(), g, wn));
        }
    }
    let with_weights: Vec<&dyn Layer> = model
        .layers()
        .iter()
        .map(|l| &**l)
        .filter(|l| !l.weights().is_empty())
        .collect();
    if stored.len() != with_weights.len() {
        return Err(bad(
            path,
            format!(
                "the file has weights for {} layers, the config makes {} layers with weights",
                stored.len(),
                with_weights.len()
            ),
        ));
    }
    for (layer, (name, g, wn)) in with_weights.into_iter().zip(&stored) {
        let ws = layer.weights();
        if wn.len() != ws.len() {
            return Err(bad(
                path,
                format!(
                    "model_weights/{name} has {} weights, layer {} has {}",
                    wn.len(),
                    layer.name(),
                    ws.len()
                ),
            ));
        }
        for (w, (short, var)) in wn.iter().zip(&ws) {
            let what = format!("model_weights/{name}/{w} (the {short} of layer {})", layer.name());
            let ds = g.dataset(w).map_err(|_| bad(path, format!("no {what}")))?;
            assign(path, &ds, var, &what, device)?;
        }
    }
    Ok(model)
}

/// A legacy Keras `.h5` file of the model (the layout Keras 3's
/// `model.save("m.h5")` writes; layers without weights are left out of
/// `layer_names`, as Keras' reader allows).
fn save_h5(model: &Sequential, path: &Path, input: &[usize]) -> Result<()> {
    refuse_nested_h5(path, model)?;
    let mut layers = layer_entries(model, input, true)?;
    carry_policies(&mut layers, &policy_sources(model));
    let name = model.model_name();
    let config = match model_graph_refs(model)? {
        Some((inputs, outputs)) => json!({"class_name": "Functional", "config": {"name": name, "trainable": true,
            "layers": layers, "input_layers": inputs, "output_layers": outputs}}),
        None => json!({"class_name": "Sequential", "config": {"name": name, "trainable": true, "layers": layers,
            "build_input_shape": batch_shape(input)}}),
    };
    use hdf5_pure::AttrValue as A;
    let mut f = hdf5_pure::FileBuilder::new();
    f.set_attr("model_config", A::VarLenAsciiString(config.to_string()));
    f.set_attr("keras_version", A::VarLenAsciiString("3.15.1".into()));
    f.set_attr("backend", A::VarLenAsciiString("tensorflow".into()));
    if let Some(c) = model.compiled_ref() {
        let mut t = compile_config(c);
        t["optimizer_config"] = t["optimizer"].take();
        if let Some(o) = t.as_object_mut() {
            o.remove("optimizer");
        }
        f.set_attr("training_config", A::VarLenAsciiString(t.to_string()));
    }
    let mut mw = f.create_group("model_weights");
    let mut names = Vec::new();
    for l in model.layers() {
        let ws = l.weights();
        if ws.is_empty() {
            continue;
        }
        names.push(l.name().to_string());
        let mut lg = mw.create_group(l.name());
        let wn: Vec<String> = ws.iter().map(|(w, _)| format!("{name}/{}/{w}", l.name())).collect();
        lg.set_attr("weight_names", A::VarLenAsciiStringArray(wn));
        let mut outer = lg.create_group(name);
        let mut inner = outer.create_group(l.name());
        for (w, v) in &ws {
            put_weight(inner.create_dataset(w), v)?;
        }
        outer.add_group(inner.finish());
        lg.add_group(outer.finish());
        mw.add_group(lg.finish());
    }
    mw.set_attr("layer_names", A::VarLenAsciiStringArray(names));
    mw.set_attr("keras_version", A::VarLenAsciiString("3.15.1".into()));
    mw.set_attr("backend", A::VarLenAsciiString("tensorflow".into()));
    f.add_group(mw.finish());
    let bytes = f.finish().map_err(|e| bad(path, e))?;
    crate::io::write_atomic(path, &bytes)
}

/// Layers without a dtype policy of their own (pooling, `Flatten`,
/// `Dropout`, `BatchNormalization`, `Activation`) compute in wgflow in the
/// dtype of their input: in Keras, that is the policy of the layer before
/// them (`mixed_float16` after a mixed `Conv2D`), which they are written
/// with. `sources[i]` is the entry whose output entry `i` takes first.
fn carry_policies(layers: &mut [Value], sources: &[Option<usize>]) {
    let mut carried: Vec<Value> = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter_mut().enumerate() {
        let class = l["class_name"].as_str().unwrap_or_default().to_string();
        let from = sources
            .get(i)
            .copied()
            .flatten()
            .and_then(|j| carried.get(j).cloned())
            .unwrap_or_else(|| Value::from("float32"));
        let Some(name) = l.pointer_mut("/config/dtype/config/name") else {
            carried.push(Value::from("float32"));
            continue;
        };
        if matches!(
            class.as_str(),
            "Dense"
                | "Conv1D"
                | "Conv2D"
                | "Conv2DTranspose"
                | "DepthwiseConv2D"
                | "SeparableConv2D"
                | "Embedding"
                | "LSTM"
                | "GRU"
                | "SimpleRNN"
                | "Bidirectional"
                | "Add"
                | "Subtract"
                | "Multiply"
                | "Average"
                | "Maximum"
                | "Minimum"
                | "Concatenate"
        ) {
            carried.push(name.clone());
        } else {
            *name = from.clone();
            carried.push(from);
        }
    }
}

/// For each config entry of the model (the InputLayer first), the entry
/// whose output it takes first.
fn policy_sources(model: &Sequential) -> Vec<Option<usize>> {
    let n = model.layers().len();
    let Some(g) = model.topology() else {
        return (0..=n).map(|i| i.checked_sub(1)).collect();
    };
    // Entries: the InputLayers, then the layers.
    let k = g.inputs.len();
    let mut out = vec![None; k];
    for l in 0..n {
        let src = g
            .nodes_of(l)
            .next()
            .and_then(|(_, node)| node.inputs.first())
            .and_then(|&j| match g.nodes.get(j)?.layer {
                Some(pl) => Some(k + pl),
                None => g.inputs.iter().position(|&i| i == j),
            });
        out.push(src);
    }
    out
}

/// A Keras tensor reference in a call's arguments.
fn keras_tensor(name: &str, node: usize, shape: &[usize]) -> Value {
    json!({"class_name": "__keras_tensor__",
           "config": {"shape": batch_shape(shape), "dtype": "float32", "keras_history": [name, node, 0]}})
}

/// The config entries of the model's layers, the InputLayer first: the
/// `.keras` form (`legacy`: the `.h5` form, without modules); for a
/// functional model each with its name and calls (`inbound_nodes`).
fn layer_entries(model: &Sequential, input: &[usize], legacy: bool) -> Result<Vec<Value>> {
    let g = model.topology();
    let inputs: Vec<(String, Vec<usize>)> = match g {
        Some(g) => g.input_names.iter().cloned().zip(g.input_shapes()).collect(),
        None => vec![("input_layer".to_string(), input.to_vec())],
    };
    let mut out = Vec::new();
    for (name, shape) in &inputs {
        let mut input_cfg = json!({"batch_shape": batch_shape(shape), "dtype": "float32", "sparse": false,
                                   "ragged": false, "name": name});
        if !legacy {
            input_cfg["optional"] = false.into();
        }
        let mut entry = json!({"class_name": "InputLayer", "config": input_cfg});
        if !legacy {
            entry["module"] = "keras.layers".into();
            entry["registered_name"] = Value::Null;
        }
        if g.is_some() {
            entry["name"] = name.as_str().into();
            entry["inbound_nodes"] = json!([]);
        }
        out.push(entry);
    }
    let names: Vec<String> = model.layers().iter().map(|l| l.name().to_string()).collect();
    let mut shape = input.to_vec();
    for (i, layer) in model.layers().iter().enumerate() {
        let mut entry = json!({"class_name": layer.kind(), "config": layer.keras_config()?});
        if let Some(t) = entry["config"].get_mut("trainable") {
            *t = layer.trainable().into();
        }
        let (module, registered) = layer.keras_module();
        if !legacy || module != "keras.layers" {
            entry["module"] = module.into();
            entry["registered_name"] = registered.into();
        }
        match g {
            None => {
                if !legacy && (!layer.weights().is_empty() || layer.kind() == "Flatten") {
                    entry["build_config"] = json!({"input_shape": batch_shape(&shape)});
                }
                shape = layer.output_shape(&shape)?;
            }
            Some(g) => {
                let mut calls = Vec::new();
                let mut built = Value::Null;
                for (_, node) in g.nodes_of(i) {
                    let mut args = Vec::new();
                    for &j in &node.inputs {
                        let (from, k) = g.history(j, &names)?;
                        let s = g.nodes.get(j).map(|n| n.shape.as_slice()).unwrap_or_default();
                        args.push(keras_tensor(from, k, s));
                    }
                    let shapes: Vec<Value> = node
                        .inputs
                        .iter()
                        .filter_map(|&j| g.nodes.get(j))
                        .map(|n| batch_shape(&n.shape))
                        .collect();
                    let merge = layer.takes_list();
                    if built.is_null() {
                        built = if merge {
                            Value::Array(shapes)
                        } else {
                            shapes.into_iter().next().unwrap_or_default()
                        };
                    }
                    let args = match layer.keras_call_args(args.clone()) {
                        Some(all) => all,
                        None if merge => vec![Value::Array(args)],
                        None => vec![args.into_iter().next().unwrap_or_default()],
                    };
                    let kwargs = match node.training {
                        // Operations take no training= in Keras.
                        Some(t) if !module.starts_with("keras.src.ops") => json!({"training": t}),
                        _ => json!({}),
                    };
                    calls.push(json!({"args": args, "kwargs": kwargs}));
                }
                // Operations (`keras.src.ops`) are not layers: nothing to build.
                if !legacy && module == "keras.layers" {
                    entry["build_config"] = json!({"input_shape": built});
                }
                entry["name"] = layer.name().into();
                entry["inbound_nodes"] = Value::Array(calls);
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// A functional model's `input_layers` and `output_layers`; `None` for a
/// Sequential one.
fn model_graph_refs(model: &Sequential) -> Result<Option<(Value, Value)>> {
    let Some(g) = model.topology() else { return Ok(None) };
    let names: Vec<String> = model.layers().iter().map(|l| l.name().to_string()).collect();
    let refs = |nodes: &[usize]| -> Result<Value> {
        let mut all = Vec::with_capacity(nodes.len());
        for &i in nodes {
            let (name, k) = g.history(i, &names)?;
            // A nested functional model's calls count from 1 here, as Keras
            // writes them (see `graph_from_config`).
            let functional = g
                .nodes
                .get(i)
                .and_then(|n| n.layer)
                .and_then(|l| model.layers().get(l))
                .is_some_and(|l| l.kind() == "Functional");
            all.push(json!([name, if functional { k + 1 } else { k }, 0]));
        }
        // One tensor is written as itself, several as a list.
        Ok(match <[Value; 1]>::try_from(all) {
            Ok([one]) => one,
            Err(all) => Value::Array(all),
        })
    };
    Ok(Some((refs(&g.inputs)?, refs(&g.outputs)?)))
}

/// Keras' `compile_config`: optimizer, loss and the metrics that have a
/// Keras form.
fn compile_config(c: &super::model::Compiled) -> Value {
    if !c.heads.is_empty() {
        // A model of several outputs: lists, one entry per output.
        let losses: Vec<Value> = c
            .heads
            .iter()
            .map(|h| match &h.loss {
                Some(l) => l.keras_config(),
                None => c.loss.keras_config(),
            })
            .collect();
        let weights: Vec<f64> = c.heads.iter().map(|h| h.weight).collect();
        let metrics: Vec<Value> = c
            .heads
            .iter()
            .map(|h| Value::Array(h.metrics.iter().filter_map(|m| m.keras_config()).collect()))
            .collect();
        return json!({"optimizer": c.optimizer.keras_config(), "loss": losses, "loss_weights": weights,
            "metrics": metrics, "weighted_metrics": null, "run_eagerly": c.run_eagerly, "steps_per_execution": 1,
            "jit_compile": false});
    }
    let metrics: Vec<Value> = c.metrics.iter().filter_map(|m| m.keras_config()).collect();
    let weighted: Vec<Value> = c.weighted_metrics.iter().filter_map(|m| m.keras_config()).collect();
    let weighted = if weighted.is_empty() {
        Value::Null
    } else {
        weighted.into()
    };
    json!({"optimizer": c.optimizer.keras_config(), "loss": c.loss.keras_config(), "loss_weights": null,
        "metrics": metrics, "weighted_metrics": weighted, "run_eagerly": c.run_eagerly, "steps_per_execution": 1,
        "jit_compile": false})
}

/// Keras' aliases of loss functions, as their function names.
fn canonical(name: &str) -> &str {
    match name {
        "mse" | "MSE" => "mean_squared_error",
        "mae" | "MAE" => "mean_absolute_error",
        "mape" | "MAPE" => "mean_absolute_percentage_error",
        "msle" | "MSLE" => "mean_squared_logarithmic_error",
        "bce" | "BCE" => "binary_crossentropy",
        "kld" | "KLD" | "kullback_leibler_divergence" => "kl_divergence",
        "huber_loss" => "huber",
        "logcosh" | "log_cosh_error" => "log_cosh",
        n => n,
    }
}

/// The loss function behind a metric name Keras resolves in `compile`
/// (`"mse"`, `"binary_crossentropy"`, ...), as its function name.
pub(crate) fn metric_loss(name: &str) -> Option<&'static str> {
    const WRAPPED: [&str; 13] = [
        "mean_squared_error",
        "mean_absolute_error",
        "mean_absolute_percentage_error",
        "mean_squared_logarithmic_error",
        "log_cosh",
        "kl_divergence",
        "poisson",
        "hinge",
        "squared_hinge",
        "categorical_hinge",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
    ];
    // Keras' metric names: the classes' snake_case names and a few aliases
    // ("logcosh" and "kld" are loss names only).
    let n = match name {
        "logcosh" | "log_cosh" | "kld" | "KLD" | "kullback_leibler_divergence" | "huber_loss" => return None,
        n => canonical(n),
    };
    WRAPPED.iter().copied().find(|&w| w == n)
}

/// Keras' metric class computing the mean of a loss function.
pub(crate) fn metric_class(loss: &str) -> Option<&'static str> {
    Some(match loss {
        "mean_squared_error" => "MeanSquaredError",
        "mean_absolute_error" => "MeanAbsoluteError",
        "mean_absolute_percentage_error" => "MeanAbsolutePercentageError",
        "mean_squared_logarithmic_error" => "MeanSquaredLogarithmicError",
        "log_cosh" => "LogCoshError",
        "kl_divergence" => "KLDivergence",
        "poisson" => "Poisson",
        "hinge" => "Hinge",
        "squared_hinge" => "SquaredHinge",
        "categorical_hinge" => "CategoricalHinge",
        "binary_crossentropy" => "BinaryCrossentropy",
        "categorical_crossentropy" => "CategoricalCrossentropy",
        "sparse_categorical_crossentropy" => "SparseCategoricalCrossentropy",
        _ => return None,
    })
}

/// A Keras loss (a name or `{class_name, config}`) as a wgflow loss.
/// Options that change the loss and that wgflow lacks (`ignore_class`,
/// another axis) are refused rather than dropped.
fn loss_from(name: &str, c: &Value) -> std::result::Result<Box<dyn super::losses::Loss>, String> {
    use super::losses::*;
    let num = |k: &str, d: f64| -> std::result::Result<f64, String> {
        match c.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("loss {name:?}: {k} = {v} is not a number")),
        }
    };
    let logits = c.get("from_logits").and_then(Value::as_bool).unwrap_or(false);
    let refuse = |k: &str, v: &Value| Err(format!("loss {name:?} with {k} = {v} is not supported"));
    // A missing key is the default; `null` is Keras' `reduction=None`.
    let reduction = match c.get("reduction") {
        None => Reduction::SumOverBatchSize,
        Some(r) if r.is_null() || r.is_string() => match Reduction::from_keras(r.as_str()) {
            Ok(r) => r,
            Err(_) => return refuse("reduction", r),
        },
        Some(r) => return refuse("reduction", r),
    };
    if let Some(v) = c.get("ignore_class").filter(|v| !v.is_null()) {
        return refuse("ignore_class", v);
    }
    let n = canonical(name);
    if n != "cosine_similarity"
        && let Some(v) = c.get("axis").filter(|v| !v.is_null() && v.as_i64() != Some(-1))
    {
        return refuse("axis", v);
    }
    let smooth = num("label_smoothing", 0.0)?;
    if smooth != 0.0 && !matches!(n, "binary_crossentropy" | "categorical_crossentropy")
        || !(0.0..=1.0).contains(&smooth)
    {
        return refuse("label_smoothing", &c["label_smoothing"]);
    }
    let loss: Box<dyn Loss> = match n {
        "sparse_categorical_crossentropy" => Box::new(SparseCategoricalCrossentropy::new(logits)),
        "categorical_crossentropy" => Box::new(CategoricalCrossentropy::new(logits).label_smoothing(smooth)),
        "binary_crossentropy" => Box::new(BinaryCrossentropy::new(logits).label_smoothing(smooth)),
        "mean_squared_error" => Box::new(MeanSquaredError),
        "mean_absolute_error" => Box::new(MeanAbsoluteError),
        "mean_absolute_percentage_error" => Box::new(MeanAbsolutePercentageError),
        "mean_squared_logarithmic_error" => Box::new(MeanSquaredLogarithmicError),
        "huber" => Box::new(Huber {
            delta: num("delta", 1.0)?,
        }),
        "log_cosh" => Box::new(LogCosh),
        "kl_divergence" => Box::new(KLDivergence),
        "poisson" => Box::new(Poisson),
        "hinge" => Box::new(Hinge),
        "squared_hinge" => Box::new(SquaredHinge),
        "categorical_hinge" => Box::new(CategoricalHinge),
        "cosine_similarity" => Box::new(CosineSimilarity {
            axis: c.get("axis").and_then(Value::as_i64).unwrap_or(-1),
        }),
        other => return Err(format!("loss {other:?} has no wgflow loss")),
    };
    Ok(if reduction == Reduction::SumOverBatchSize {
        loss
    } else {
        Box::new(loss.with_reduction(reduction))
    })
}

/// A Keras metric (a name or `{class_name, config}`) as a wgflow metric.
/// `Err` says why it is left out.
fn metric_from(m: &Value) -> std::result::Result<Box<dyn super::metrics::Metric>, String> {
    use super::metrics::{MAX_THRESHOLDS, *};
    let class = m.get("class_name").and_then(Value::as_str);
    let (n, c) = match m {
        Value::String(s) => (snake(s), Value::Null),
        // A metric function: {"class_name": "function", "config": "mae"}.
        Value::Object(_) if class == Some("function") => {
            (m["config"].as_str().unwrap_or_default().to_string(), Value::Null)
        }
        // keras.metrics.Accuracy: exact match, not the auto-picked "accuracy".
        Value::Object(_) if class == Some("Accuracy") => {
            let label = m["config"]["name"].as_str().unwrap_or("accuracy");
            return Ok(Box::new(Accuracy::exact().named(label)));
        }
        Value::Object(_) => (snake(class.unwrap_or_default()), m["config"].clone()),
        v => return Err(format!("{v} is not a metric")),
    };
    // Keras names a metric by the string given, else by its config.
    let label = match m {
        Value::String(s) => s.clone(),
        _ if class == Some("function") => n.clone(),
        _ => c["name"].as_str().map_or_else(|| n.clone(), str::to_string),
    };
    let set = |k: &str| c.get(k).filter(|v| !v.is_null());
    let lacks = |k: &str| format!("{k} = {} is not supported", c[k]);
    let m: Box<dyn Metric> = match n.as_str() {
        // Keras picks the accuracy by the shapes of labels and predictions.
        "accuracy" | "acc" => Box::new(Accuracy::auto().named(&label)),
        "sparse_categorical_accuracy" => Box::new(SparseCategoricalAccuracy::new().named(&label)),
        "categorical_accuracy" => Box::new(CategoricalAccuracy::new().named(&label)),
        "binary_accuracy" => {
            Box::new(Accuracy::binary(set("threshold").and_then(Value::as_f64).unwrap_or(0.5)).named(&label))
        }
        "root_mean_squared_error" => Box::new(RootMeanSquaredError::new().named(&label)),
        "top_k_categorical_accuracy" | "sparse_top_k_categorical_accuracy" => {
            if set("from_sorted_ids").and_then(Value::as_bool) == Some(true) {
                return Err(lacks("from_sorted_ids"));
            }
            let k = match set("k") {
                None => 5,
                Some(v) => v.as_u64().ok_or_else(|| lacks("k"))? as usize,
            };
            let m = if n.starts_with("sparse") {
                SparseTopKCategoricalAccuracy::new()
            } else {
                TopKCategoricalAccuracy::new()
            };
            Box::new(m.k(k).named(&label))
        }
        "precision" | "recall" => {
            let t = match set("thresholds") {
                None => None,
                Some(Value::Array(a)) if a.len() == 1 => Some(a[0].as_f64()),
                Some(v) => Some(v.as_f64()),
            };
            let p = if n == "recall" { Recall::new() } else { Precision::new() };
            let mut p = p.named(&label);
            if let Some(t) = t {
                // Keras refuses thresholds outside [0, 1] too.
                p = p.threshold(
                    t.filter(|t| (0.0..=1.0).contains(t))
                        .ok_or_else(|| lacks("thresholds"))?,
                );
            }
            if let Some(k) = set("top_k") {
                p = p.top_k(k.as_u64().filter(|&k| k > 0).ok_or_else(|| lacks("top_k"))? as usize);
            }
            match set("class_id") {
                None => Box::new(p),
                Some(v) => Box::new(p.class_id(v.as_u64().ok_or_else(|| lacks("class_id"))? as usize)),
            }
        }
        "mean_io_u" | "io_u" | "binary_io_u" => {
            if set("axis").is_some_and(|a| a.as_i64() != Some(-1)) {
                return Err(lacks("axis"));
            }
            let ids = |v: Option<&Value>| -> std::result::Result<Vec<usize>, String> {
                v.and_then(Value::as_array)
                    .ok_or_else(|| lacks("target_class_ids"))?
                    .iter()
                    .map(|c| c.as_u64().map(|c| c as usize).ok_or_else(|| lacks("target_class_ids")))
                    .collect()
            };
            let classes = || -> std::result::Result<usize, String> {
                set("num_classes")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize)
                    .filter(|&n| (1..=MAX_CLASSES).contains(&n))
                    .ok_or_else(|| lacks("num_classes"))
            };
            let mut m = match n.as_str() {
                "binary_io_u" => {
                    let ids = match set("target_class_ids") {
                        None => vec![0, 1],
                        v => ids(v)?,
                    };
                    let t = match set("threshold") {
                        None => 0.5,
                        Some(v) => v.as_f64().ok_or_else(|| lacks("threshold"))?,
                    };
                    IoU::binary(&ids, t)
                }
                "mean_io_u" => IoU::mean(classes()?),
                _ => IoU::new(classes()?, &ids(set("target_class_ids"))?),
            };
            if let Some(v) = set("ignore_class") {
                m = m.ignore_class(v.as_i64().ok_or_else(|| lacks("ignore_class"))?);
            }
            for (k, f) in [
                ("sparse_y_true", IoU::sparse_y_true as fn(IoU, bool) -> IoU),
                ("sparse_y_pred", IoU::sparse_y_pred),
            ] {
                if let Some(v) = set(k) {
                    m = f(m, v.as_bool().ok_or_else(|| lacks(k))?);
                }
            }
            Box::new(m.named(&label))
        }
        "f1_score" | "f_beta_score" | "fbeta_score" => {
            let average = match set("average").and_then(Value::as_str) {
                Some(a) => Average::from_name(a).ok_or_else(|| lacks("average"))?,
                // A score per class is not one number.
                None => return Err(lacks("average")),
            };
            let beta = match (n.as_str(), set("beta")) {
                ("f1_score", _) | (_, None) => 1.0,
                (_, Some(v)) => v.as_f64().filter(|b| *b > 0.0).ok_or_else(|| lacks("beta"))?,
            };
            let mut f = FBetaScore::new(average, beta).named(&label);
            if let Some(t) = set("threshold") {
                f = f.threshold(
                    t.as_f64()
                        .filter(|t| *t > 0.0 && *t <= 1.0)
                        .ok_or_else(|| lacks("threshold"))?,
                );
            }
            Box::new(f)
        }
        "auc" => {
            if set("thresholds").is_some() {
                return Err(lacks("thresholds"));
            }
            let multi = set("multi_label").and_then(Value::as_bool) == Some(true);
            let label_weights = match set("label_weights") {
                None => None,
                Some(v) if multi => Some(
                    v.as_array()
                        .ok_or_else(|| lacks("label_weights"))?
                        .iter()
                        .map(|w| w.as_f64().filter(|w| *w >= 0.0).ok_or_else(|| lacks("label_weights")))
                        .collect::<std::result::Result<Vec<f64>, String>>()?,
                ),
                Some(_) => return Err(lacks("label_weights")),
            };
            let curve = match set("curve").and_then(Value::as_str) {
                None | Some("ROC") => Curve::Roc,
                Some("PR") => Curve::Pr,
                Some(_) => return Err(lacks("curve")),
            };
            let summation = match set("summation_method").and_then(Value::as_str) {
                None | Some("interpolation") => Summation::Interpolation,
                Some("minoring") => Summation::Minoring,
                Some("majoring") => Summation::Majoring,
                Some(_) => return Err(lacks("summation_method")),
            };
            let nt = match set("num_thresholds") {
                None => 200,
                Some(v) => v
                    .as_u64()
                    .filter(|&n| (2..=MAX_THRESHOLDS as u64).contains(&n))
                    .ok_or_else(|| lacks("num_thresholds"))? as usize,
            };
            let mut auc = AUC::new()
                .num_thresholds(nt)
                .curve(curve)
                .summation(summation)
                .from_logits(set("from_logits").and_then(Value::as_bool).unwrap_or(false))
                .multi_label(multi)
                .named(&label);
            if let Some(lw) = label_weights {
                auc = auc.label_weights(&lw);
            }
            Box::new(auc)
        }
        name => {
            let f = metric_loss(name).ok_or_else(|| "wgflow has no such metric".to_string())?;
            Box::new(MeanMetricWrapper::new(&label, loss_from(f, &c)?))
        }
    };
    Ok(m)
}

/// A compile config wgflow cannot follow (an optimizer option or loss it
/// lacks) leaves the model loaded, weights and all, but not compiled: it
/// predicts, and `fit` asks for a `compile` first.
fn uncompiled(path: &Path, e: &str) {
    log::warn!("{}: loaded without its training config: {e}", path.display());
}

/// Compiles `model` as a Keras `compile_config` says: the optimizer (class
/// and options), the loss (a name or `{class_name, config}`) and the
/// metrics (those wgflow lacks are skipped with a notice: they change no
/// weight).
/// Compiles `model` as a `compile_config` (or legacy `training_config`,
/// whose optimizer is `opt`) says: optimizer, loss, metrics and weighted
/// metrics.
fn compile_from(model: &mut Sequential, c: &Value, opt: &Value) -> std::result::Result<(), String> {
    use super::model::Model;
    let optimizer = super::optimizers::Optimizer::from_keras_config(opt).map_err(|e| e.to_string())?;
    let metrics_of = |list: &Value| -> Vec<Box<dyn super::metrics::Metric>> {
        let mut ms = Vec::new();
        for m in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            match metric_from(m) {
                Ok(m) => ms.push(m),
                Err(e) => log::warn!("Keras metric {m} has no wgflow metric ({e}); compiled without it"),
            }
        }
        ms
    };
    // A model of several outputs: one loss (and weight, and metric list)
    // each, as lists in the outputs' order or dicts keyed by their names.
    let outputs = model.output_names();
    let by_output = |v: &Value, what: &str| -> std::result::Result<Vec<Value>, String> {
        match v {
            Value::Array(a) => Ok(a.clone()),
            Value::Object(o) => outputs
                .iter()
                .map(|n| {
                    o.get(n)
                        .cloned()
                        .ok_or_else(|| format!("compile_config: {what} has no entry for output {n}"))
                })
                .collect(),
            v => Err(format!("compile_config: {what} {v} is not a list or a dict by output")),
        }
    };
    let loss = &c["loss"];
    let per_output_loss = loss.is_array() || (loss.is_object() && loss.get("class_name").is_none());
    if per_output_loss {
        let losses = by_output(loss, "loss")?
            .iter()
            .map(loss_entry)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let weights = match &c["loss_weights"] {
            Value::Null => Vec::new(),
            v => by_output(v, "loss_weights")?
                .iter()
                .map(|w| {
                    w.as_f64()
                        .ok_or_else(|| format!("compile_config: loss weight {w} is not a number"))
                })
                .collect::<std::result::Result<Vec<f64>, _>>()?,
        };
        let metrics: Vec<super::metrics::Metrics> = match &c["metrics"] {
            Value::Null => Vec::new(),
            v => by_output(v, "metrics")?
                .iter()
                .map(|l| match l {
                    Value::Null => Ok(super::metrics::Metrics(Vec::new())),
                    Value::Array(_) => Ok(super::metrics::Metrics(metrics_of(l))),
                    // One metric for the output, not in a list.
                    m => Ok(super::metrics::Metrics(metrics_of(&Value::Array(vec![m.clone()])))),
                })
                .collect::<std::result::Result<Vec<_>, String>>()?,
        };
        if !c["weighted_metrics"].is_null() && c["weighted_metrics"].as_array().is_none_or(|a| !a.is_empty()) {
            return Err("compile_config: weighted_metrics with a loss per output are not supported".into());
        }
        return model
            .compile_outputs(optimizer, losses, &weights, metrics)
            .map_err(|e| e.to_string());
    }
    let loss = loss_entry(&c["loss"])?;
    model.compile(optimizer, loss, metrics_of(&c["metrics"]));
    model
        .set_weighted_metrics(metrics_of(&c["weighted_metrics"]))
        .map_err(|e| e.to_string())
}

/// One loss of a `compile_config`: a name, a function or a class config.
fn loss_entry(loss: &Value) -> std::result::Result<Box<dyn super::losses::Loss>, String> {
    let (name, config) = match loss {
        Value::String(s) => (s.clone(), &Value::Null),
        // keras.losses.huber (a function) is {"class_name": "function", "config": "huber"}.
        Value::Object(o) if o.get("class_name").and_then(Value::as_str) == Some("function") => (
            o.get("config").and_then(Value::as_str).unwrap_or_default().to_string(),
            &Value::Null,
        ),
        Value::Object(o) => (
            snake(o.get("class_name").and_then(Value::as_str).unwrap_or_default()),
            &loss["config"],
        ),
        v => return Err(format!("compile_config: loss {v} is not supported")),
    };
    loss_from(&name, config).map_err(|e| format!("compile_config: {e}"))
}

/// Opens HDF5 bytes, refusing a file shorter than its superblock says (a
/// truncated file, as HDF5's own library does): its end may hold weights.
fn open_h5(bytes: Vec<u8>) -> std::result::Result<hdf5_pure::File, String> {
    let len = bytes.len() as u64;
    let file = hdf5_pure::File::from_bytes(bytes).map_err(|e| e.to_string())?;
    let eof = file.superblock().eof_address;
    if len < eof {
        return Err(format!("truncated: {len} bytes, the file says {eof}"));
    }
    Ok(file)
}

/// A float dataset as f32 (f16 decoded by hand: hdf5-pure reads 4- and
/// 8-byte floats only).
fn read_floats(ds: &hdf5_pure::Dataset) -> std::result::Result<Vec<f32>, String> {
    if let Ok(hdf5_pure::Datatype::FloatingPoint { size: 2, .. }) = ds.datatype() {
        let raw = ds.read_raw().map_err(|e| e.to_string())?;
        return Ok(raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect());
    }
    ds.read_f32().map_err(|e| e.to_string())
}

/// A shape list (`[null, 28, 28, 1]`); `batch`: the first entry is the
/// batch and is dropped.
fn shape_of(v: Option<&Value>, batch: bool) -> Option<Vec<usize>> {
    let a = v?.as_array()?;
    let dims = if batch { a.get(1..)? } else { a.as_slice() };
    dims.iter().map(|d| d.as_u64().map(|d| d as usize)).collect()
}

/// An augmentation's factor: a pair `[lower, upper]`, or a number `f`
/// read as `(low * |f|, |f|)`.
fn factor_pair(v: Option<&Value>, low: f64) -> std::result::Result<(f64, f64), String> {
    let num = |v: &Value| v.as_f64().filter(|f| f.is_finite());
    match v {
        None => Err("missing".into()),
        Some(Value::Array(a)) => match a.as_slice() {
            [l, u] => match (num(l), num(u)) {
                (Some(l), Some(u)) => Ok((l.min(u), l.max(u))),
                _ => Err(format!("{a:?} is not two numbers")),
            },
            _ => Err(format!("{a:?} is not a pair")),
        },
        Some(v) => num(v)
            .map(|f| (low * f.abs(), f.abs()))
            .ok_or_else(|| format!("{v} is not a number or a pair")),
    }
}

/// [`factor_pair`] within `[min, max]`, Keras' bounds for the layer
/// (`min` itself excluded when `open`).
fn bounded(v: Option<&Value>, low: f64, (min, max, open): (f64, f64, bool)) -> std::result::Result<(f64, f64), String> {
    let (l, u) = factor_pair(v, low)?;
    let below = |x: f64| if open { x <= min } else { x < min };
    if below(l) || u > max {
        return Err(format!("({l}, {u}) is outside [{min}, {max}]"));
    }
    Ok((l, u))
}

/// `ZeroPadding2D`'s `padding` and `Cropping2D`'s `cropping`: an int,
/// (symmetric height, symmetric width), or ((top, bottom), (left, right)).
fn pad_pairs(given: Option<&Value>, default: [[usize; 2]; 2]) -> std::result::Result<[[usize; 2]; 2], String> {
    let bad = || "is not an int, a pair or a pair of pairs".to_string();
    let n = |v: &Value| v.as_u64().map(|v| v as usize).ok_or_else(bad);
    Ok(match given {
        None => default,
        Some(Value::Array(a)) if a.len() == 2 => match (&a[0], &a[1]) {
            (Value::Array(h), Value::Array(w)) if h.len() == 2 && w.len() == 2 => {
                [[n(&h[0])?, n(&h[1])?], [n(&w[0])?, n(&w[1])?]]
            }
            (h, w) => {
                let (h, w) = (n(h)?, n(w)?);
                [[h, h], [w, w]]
            }
        },
        Some(v) => {
            let k = n(v)?;
            [[k, k], [k, k]]
        }
    })
}

/// A layer's options, read with the keys it knows; unknown options set to
/// anything but `null` are errors.
struct Opts<'a> {
    class: &'a str,
    c: &'a Value,
    known: Vec<&'static str>,
}

impl<'a> Opts<'a> {
    fn new(class: &'a str, c: &'a Value) -> Opts<'a> {
        Opts {
            class,
            c,
            known: vec!["name", "trainable", "dtype", "module", "registered_name"],
        }
    }

    fn err(&self, key: &str, msg: impl std::fmt::Display) -> String {
        let name = self.c["name"].as_str().unwrap_or("?");
        format!("layer {name} ({}): option {key}: {msg}", self.class)
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.c.get(key).filter(|v| !v.is_null())
    }

    /// Options wgflow reads as always their default: an error otherwise.
    fn fixed(&mut self, key: &'static str, default: Value) -> std::result::Result<(), String> {
        match self.get(key) {
            Some(v) if *v != default => Err(self.err(key, format!("{v} is not supported (only {default})"))),
            _ => Ok(()),
        }
    }

    fn usize(&mut self, key: &'static str, default: Option<usize>) -> std::result::Result<usize, String> {
        match self.get(key) {
            Some(v) => v
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| self.err(key, format!("{v} is not a count"))),
            None => default.ok_or_else(|| self.err(key, "missing")),
        }
    }

    fn pair(&mut self, key: &'static str, default: Option<[usize; 2]>) -> std::result::Result<[usize; 2], String> {
        match self.get(key) {
            Some(Value::Number(n)) => {
                let n = n.as_u64().ok_or_else(|| self.err(key, "not a count"))? as usize;
                Ok([n, n])
            }
            Some(Value::Array(a)) if a.len() == 2 => {
                let f = |v: &Value| v.as_u64().map(|v| v as usize);
                match (f(&a[0]), f(&a[1])) {
                    (Some(x), Some(y)) => Ok([x, y]),
                    _ => Err(self.err(key, "not two counts")),
                }
            }
            Some(v) => Err(self.err(key, format!("{v} is not a count or a pair"))),
            None => default.ok_or_else(|| self.err(key, "missing")),
        }
    }

    /// A 1-D size: a count or a list of one.
    fn single(&mut self, key: &'static str, default: Option<usize>) -> std::result::Result<usize, String> {
        match self.get(key) {
            Some(Value::Number(n)) => Ok(n.as_u64().ok_or_else(|| self.err(key, "not a count"))? as usize),
            Some(Value::Array(a)) if a.len() == 1 => a[0]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| self.err(key, "not a count")),
            Some(v) => Err(self.err(key, format!("{v} is not a count or a list of one"))),
            None => default.ok_or_else(|| self.err(key, "missing")),
        }
    }

    fn f64(&mut self, key: &'static str, default: f64) -> std::result::Result<f64, String> {
        match self.get(key) {
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, format!("{v} is not a number"))),
            None => Ok(default),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> std::result::Result<bool, String> {
        match self.get(key) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("{v} is not true or false"))),
            None => Ok(default),
        }
    }

    fn str(&mut self, key: &'static str, default: &'static str) -> std::result::Result<&'a str, String> {
        match self.get(key) {
            Some(v) => v.as_str().ok_or_else(|| self.err(key, format!("{v} is not a string"))),
            None => Ok(default),
        }
    }

    fn activation(&mut self) -> std::result::Result<Activation, String> {
        let name = self.str("activation", "linear")?;
        Activation::from_name(name)
            .map_err(|_| self.err("activation", format!("{name:?} is not an activation wgflow has")))
    }

    fn padding(&mut self) -> std::result::Result<&'a str, String> {
        let p = self.str("padding", "valid")?;
        match p {
            "same" | "valid" => Ok(p),
            _ => Err(self.err("padding", format!("{p:?} is not supported"))),
        }
    }

    fn policy(&mut self) -> std::result::Result<Policy, String> {
        let name = match self.c.get("dtype") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => o
                .get("config")
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("float32"),
            _ => "float32",
        };
        Policy::new(name).map_err(|e| self.err("dtype", e))
    }

    /// Ignores initializers (the weights come from the file) and checks that
    /// nothing unknown is set.
    fn finish(mut self) -> std::result::Result<(), String> {
        for k in [
            "kernel_initializer",
            "bias_initializer",
            "beta_initializer",
            "gamma_initializer",
            "moving_mean_initializer",
            "moving_variance_initializer",
            "embeddings_initializer",
            "seed",
        ] {
            self.known.push(k);
        }
        let Some(map) = self.c.as_object() else {
            return Err(format!("layer of class {}: its config is not an object", self.class));
        };
        for (k, v) in map {
            if !v.is_null() && !self.known.contains(&k.as_str()) {
                return Err(self.err(k, format!("{v} is not supported by wgflow's {}", self.class)));
            }
        }
        Ok(())
    }
}

/// The one axis a BatchNormalization config names (`-1`, `3`, `[1]`, ...);
/// `None` when it names none (the last). Anything else is an error holding
/// the value.
/// An `axis` option that must be the last axis: -1 or [-1].
fn last_axis(o: &mut Opts) -> std::result::Result<(), String> {
    match bn_axis(o.get("axis")) {
        Ok(None | Some(-1)) => Ok(()),
        Ok(Some(a)) => Err(o.err("axis", format!("{a}: wgflow normalizes the last axis (-1)"))),
        Err(v) => Err(o.err("axis", format!("{v} is not an axis"))),
    }
}

fn bn_axis(v: Option<&Value>) -> std::result::Result<Option<i64>, String> {
    let one = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.len() == 1 => &a[0],
        Some(v) => v,
    };
    one.as_i64()
        .map(Some)
        .ok_or_else(|| v.map(Value::to_string).unwrap_or_default())
}

/// Each BatchNormalization layer's axis must be the last of its input
/// (`-1`, or `rank - 1`: `[1]` after a Dense, `[3]` after a Conv2D, as
/// Keras 2 writes them); `inputs` is each layer's first input's shape per
/// example.
fn check_bn_axes(
    layers: &[Box<dyn Layer>],
    axes: &[Option<i64>],
    inputs: &[Option<Vec<usize>>],
) -> std::result::Result<(), String> {
    for ((layer, axis), shape) in layers.iter().zip(axes).zip(inputs) {
        let (Some(a), Some(shape)) = (*axis, shape) else {
            continue;
        };
        let rank = shape.len() as i64 + 1;
        if a != -1 && a != rank - 1 {
            return Err(format!(
                "layer {} ({}): axis {a} of a rank-{rank} input: wgflow normalizes the last axis ({} or -1)",
                layer.name(),
                layer.kind(),
                rank - 1
            ));
        }
    }
    Ok(())
}

/// A recurrent layer from its Keras options (LSTM, GRU, SimpleRNN).
fn recurrent_options(class: &str, o: &mut Opts) -> std::result::Result<Recurrent, String> {
    let cell = match class {
        "LSTM" => Cell::Lstm,
        "GRU" => Cell::Gru,
        _ => Cell::Simple,
    };
    let act = o.str("activation", "tanh")?;
    let act = Activation::from_name(act).map_err(|e| o.err("activation", e))?;
    let mut l = Recurrent::new(cell, o.usize("units", None)?)
        .activation(act)
        .use_bias(o.bool("use_bias", true)?)
        .return_sequences(o.bool("return_sequences", false)?)
        .go_backwards(o.bool("go_backwards", false)?)
        .dtype(o.policy()?);
    if cell != Cell::Simple {
        let name = o.str("recurrent_activation", "sigmoid")?;
        l = l.recurrent_activation(Activation::from_name(name).map_err(|e| o.err("recurrent_activation", e))?);
    }
    if cell == Cell::Gru {
        l = l.reset_after(o.bool("reset_after", true)?);
    }
    o.fixed("return_state", json!(false))?;
    o.fixed("stateful", json!(false))?;
    for k in ["dropout", "recurrent_dropout"] {
        let rate = o.f64(k, 0.0)?;
        if rate != 0.0 {
            return Err(o.err(
                k,
                format!("{rate} is not supported (only 0): dropout inside the cell is not built"),
            ));
        }
    }
    // The weights come from the file: no orthogonal draw.
    l.orthogonal_init = false;
    o.fixed("time_major", json!(false))?;
    for k in [
        "recurrent_initializer",
        "unit_forget_bias",
        "unroll",
        "zero_output_for_mask",
        "implementation",
        "use_cudnn",
    ] {
        // How the loop runs or starts, not what it computes.
        o.known.push(k);
    }
    Ok(l)
}

/// A wgflow layer from a Keras class name and config.
fn layer_from_config(class: &str, c: &Value) -> std::result::Result<Box<dyn Layer>, String> {
    let mut o = Opts::new(class, c);
    let layer: Box<dyn Layer> = match class {
        "Dense" => {
            let l = Dense::new(o.usize("units", None)?)
                .activation(o.activation()?)
                .use_bias(o.bool("use_bias", true)?)
                .dtype(o.policy()?);
            o.fixed("quantization_config", Value::Null)?;
            o.fixed("lora_rank", Value::Null)?;
            Box::new(l)
        }
        "Conv2D" => {
            o.fixed("data_format", json!("channels_last"))?;
            let padding = o.padding()?;
            let l = Conv2D::new(o.usize("filters", None)?, o.pair("kernel_size", None)?)
                .strides(o.pair("strides", Some([1, 1]))?)
                .padding(padding)
                .map_err(|e| e.to_string())?
                .dilation_rate(o.pair("dilation_rate", Some([1, 1]))?)
                .groups(o.usize("groups", Some(1))?)
                .activation(o.activation()?)
                .use_bias(o.bool("use_bias", true)?)
                .dtype(o.policy()?);
            o.fixed("lora_rank", Value::Null)?;
            Box::new(l)
        }
        "Conv2DTranspose" => {
            o.fixed("data_format", json!("channels_last"))?;
            let padding = o.padding()?;
            let mut l = Conv2DTranspose::new(o.usize("filters", None)?, o.pair("kernel_size", None)?)
                .strides(o.pair("strides", Some([1, 1]))?)
                .padding(padding)
                .map_err(|e| e.to_string())?
                .dilation_rate(o.pair("dilation_rate", Some([1, 1]))?)
                .activation(o.activation()?)
                .use_bias(o.bool("use_bias", true)?)
                .dtype(o.policy()?);
            if o.c.get("output_padding").is_some_and(|v| !v.is_null()) {
                l = l.output_padding(o.pair("output_padding", None)?);
            }
            o.known.push("output_padding");
            // Keras 2 wrote `groups: 1` for every convolution.
            o.fixed("groups", json!(1))?;
            Box::new(l)
        }
        "DepthwiseConv2D" | "SeparableConv2D" => {
            o.fixed("data_format", json!("channels_last"))?;
            let padding = o.padding()?;
            let dw = DepthwiseConv2D::new(o.pair("kernel_size", None)?)
                .strides(o.pair("strides", Some([1, 1]))?)
                .padding(padding)
                .map_err(|e| e.to_string())?
                .depth_multiplier(o.usize("depth_multiplier", Some(1))?)
                .dilation_rate(o.pair("dilation_rate", Some([1, 1]))?)
                .dtype(o.policy()?);
            let (activation, use_bias) = (o.activation()?, o.bool("use_bias", true)?);
            o.fixed("depthwise_regularizer", Value::Null)?;
            o.fixed("depthwise_constraint", Value::Null)?;
            o.known.push("depthwise_initializer");
            if class == "SeparableConv2D" {
                o.fixed("pointwise_regularizer", Value::Null)?;
                o.fixed("pointwise_constraint", Value::Null)?;
                o.known.push("pointwise_initializer");
                let filters = o.usize("filters", None)?;
                Box::new(
                    SeparableConv2D::around(filters, dw)
                        .activation(activation)
                        .use_bias(use_bias),
                )
            } else {
                Box::new(dw.activation(activation).use_bias(use_bias))
            }
        }
        "MaxPooling2D" | "AveragePooling2D" => {
            o.fixed("data_format", json!("channels_last"))?;
            let size = o.pair("pool_size", Some([2, 2]))?;
            let strides = o.pair("strides", Some(size))?;
            let padding = o.padding()?;
            if class == "MaxPooling2D" {
                Box::new(
                    MaxPooling2D::new(size)
                        .strides(strides)
                        .padding(padding)
                        .map_err(|e| e.to_string())?,
                )
            } else {
                Box::new(
                    AveragePooling2D::new(size)
                        .strides(strides)
                        .padding(padding)
                        .map_err(|e| e.to_string())?,
                )
            }
        }
        "GlobalAveragePooling2D" | "GlobalMaxPooling2D" => {
            o.fixed("data_format", json!("channels_last"))?;
            let keep = o.bool("keepdims", false)?;
            if class == "GlobalMaxPooling2D" {
                Box::new(GlobalMaxPooling2D::new().keepdims(keep))
            } else {
                Box::new(GlobalAveragePooling2D::new().keepdims(keep))
            }
        }
        "UpSampling2D" => {
            o.fixed("data_format", json!("channels_last"))?;
            o.fixed("interpolation", json!("nearest"))?;
            Box::new(UpSampling2D::new(o.pair("size", Some([2, 2]))?))
        }
        "ZeroPadding2D" => {
            o.fixed("data_format", json!("channels_last"))?;
            let given = o.get("padding");
            let p = pad_pairs(given, [[1, 1], [1, 1]]).map_err(|e| o.err("padding", e))?;
            Box::new(ZeroPadding2D::new(p))
        }
        "Cropping2D" => {
            o.fixed("data_format", json!("channels_last"))?;
            let given = o.get("cropping");
            Box::new(Cropping2D::new(
                pad_pairs(given, [[0, 0], [0, 0]]).map_err(|e| o.err("cropping", e))?,
            ))
        }
        "Normalization" => {
            let axis = match o.get("axis") {
                None => vec![-1],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_i64().map(|v| v as isize))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| o.err("axis", "is not a list of axes"))?,
                Some(v) => vec![v.as_i64().ok_or_else(|| o.err("axis", format!("{v} is not an axis")))? as isize],
            };
            let mut l = Normalization::new().axis(&axis).invert(o.bool("invert", false)?);
            let floats = |v: &Value| -> Option<Vec<f32>> {
                let mut out = Vec::new();
                fn walk(v: &Value, out: &mut Vec<f32>) -> Option<()> {
                    match v {
                        Value::Array(a) => a.iter().try_for_each(|e| walk(e, out)),
                        v => {
                            out.push(v.as_f64()? as f32);
                            Some(())
                        }
                    }
                }
                walk(v, &mut out)?;
                Some(out)
            };
            match (o.get("mean"), o.get("variance")) {
                (None, None) => {}
                (Some(m), Some(v)) => {
                    let m = floats(m).ok_or_else(|| o.err("mean", "is not numbers"))?;
                    let v = floats(v).ok_or_else(|| o.err("variance", "is not numbers"))?;
                    l = l.with_stats(m, v);
                }
                _ => return Err(o.err("mean", "mean and variance come together")),
            }
            Box::new(l)
        }
        "RandomFlip" => {
            o.fixed("data_format", json!("channels_last"))?;
            o.get("seed");
            let mode = o.str("mode", "horizontal_and_vertical")?;
            Box::new(RandomFlip::new(
                FlipMode::from_name(mode).map_err(|e| o.err("mode", e))?,
            ))
        }
        "RandomBrightness" | "RandomContrast" => {
            o.fixed("data_format", json!("channels_last"))?;
            o.get("seed");
            // A number f is (-f, f) for brightness and, as Keras 3.15 keeps
            // it, (0, f) for contrast.
            let low = if class == "RandomBrightness" { -1.0 } else { 0.0 };
            let factor = bounded(o.get("factor"), low, (low, 1.0, false)).map_err(|e| o.err("factor", e))?;
            let range = match o.get("value_range") {
                None => (0.0, 255.0),
                Some(v) if v.is_array() => factor_pair(Some(v), 1.0).map_err(|e| o.err("value_range", e))?,
                Some(v) => return Err(o.err("value_range", format!("{v} is not a pair"))),
            };
            if class == "RandomBrightness" {
                Box::new(RandomBrightness::with_range(factor, range))
            } else {
                Box::new(RandomContrast::new(factor, range))
            }
        }
        "RandomRotation" | "RandomZoom" | "RandomTranslation" => {
            // Keras' bounds: a zoom factor above -1 (a positive scale).
            const ZOOM: (f64, f64, bool) = (-1.0, 1.0, true);
            const SHIFT: (f64, f64, bool) = (-1.0, 1.0, false);
            o.fixed("data_format", json!("channels_last"))?;
            o.get("seed");
            let kind = match class {
                "RandomRotation" => Geometric::Rotation {
                    factor: bounded(o.get("factor"), -1.0, (-1.0, 1.0, false)).map_err(|e| o.err("factor", e))?,
                },
                "RandomZoom" => Geometric::Zoom {
                    height: bounded(o.get("height_factor"), -1.0, ZOOM).map_err(|e| o.err("height_factor", e))?,
                    width: match o.get("width_factor") {
                        None => None,
                        Some(v) => Some(bounded(Some(v), -1.0, ZOOM).map_err(|e| o.err("width_factor", e))?),
                    },
                },
                _ => Geometric::Translation {
                    height: bounded(o.get("height_factor"), -1.0, SHIFT).map_err(|e| o.err("height_factor", e))?,
                    width: bounded(o.get("width_factor"), -1.0, SHIFT).map_err(|e| o.err("width_factor", e))?,
                },
            };
            let mut l = RandomGeometric::new(kind);
            l.fill_mode = o.str("fill_mode", "reflect")?.to_string();
            l.interpolation = o.str("interpolation", "bilinear")?.to_string();
            l.fill_value = o.f64("fill_value", 0.0)?;
            Box::new(l)
        }
        "CenterCrop" => {
            o.fixed("data_format", json!("channels_last"))?;
            Box::new(CenterCrop::new(o.usize("height", None)?, o.usize("width", None)?))
        }
        "Resizing" => {
            o.fixed("data_format", json!("channels_last"))?;
            o.fixed("antialias", json!(false))?;
            o.fixed("pad_to_aspect_ratio", json!(false))?;
            // Only pad_to_aspect_ratio fills.
            o.get("fill_mode");
            o.get("fill_value");
            let mut l = Resizing::new(o.usize("height", None)?, o.usize("width", None)?);
            l.bilinear = match o.str("interpolation", "bilinear")? {
                "bilinear" => true,
                "nearest" => false,
                i => return Err(o.err("interpolation", format!("{i:?} is not supported (bilinear, nearest)"))),
            };
            l.crop_to_aspect_ratio = o.bool("crop_to_aspect_ratio", false)?;
            Box::new(l)
        }
        "LayerScale" => Box::new(LayerScale::new(
            o.f64("init_values", 1e-6)?,
            o.usize("projection_dim", None)?,
        )),
        "Reshape" => {
            let shape = o
                .get("target_shape")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .map(|d| d.as_i64().map(|d| d as isize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| o.err("target_shape", "is not a list of integers"))?;
            Box::new(Reshape::new(&shape))
        }
        "Rescaling" => {
            let (scale, offset) = (o.f64("scale", 1.0)?, o.f64("offset", 0.0)?);
            Box::new(Rescaling::new(scale, offset))
        }
        "LSTM" | "GRU" | "SimpleRNN" => Box::new(recurrent_options(class, &mut o)?),
        "Bidirectional" => {
            let inner = |v: &Value| -> std::result::Result<Recurrent, String> {
                let class = v["class_name"].as_str().unwrap_or_default();
                if !matches!(class, "LSTM" | "GRU" | "SimpleRNN") {
                    return Err(format!(
                        "Bidirectional over a {class:?} layer is not supported (LSTM, GRU, SimpleRNN)"
                    ));
                }
                let mut io = Opts::new(class, &v["config"]);
                let l = recurrent_options(class, &mut io)?;
                io.finish()?;
                Ok(l)
            };
            let layer = o.get("layer").ok_or_else(|| o.err("layer", "missing"))?;
            let mut l = Bidirectional::new(inner(layer)?);
            if let Some(b) = o.get("backward_layer") {
                l = l.backward_layer(inner(b)?).map_err(|e| o.err("backward_layer", e))?;
            }
            o.known.push("merge_mode");
            let mode = match o.c.get("merge_mode") {
                None => RnnMerge::Concat,
                Some(Value::String(m)) => RnnMerge::from_name(m).map_err(|e| o.err("merge_mode", e))?,
                Some(v) => {
                    return Err(o.err(
                        "merge_mode",
                        format!("{v}: a list of both directions' outputs is not supported"),
                    ));
                }
            };
            Box::new(l.merge_mode(mode).dtype(o.policy()?))
        }
        "Add" | "Subtract" | "Multiply" | "Average" | "Maximum" | "Minimum" | "Concatenate" => {
            let op = match class {
                "Add" => MergeOp::Add,
                "Subtract" => MergeOp::Subtract,
                "Multiply" => MergeOp::Multiply,
                "Average" => MergeOp::Average,
                "Maximum" => MergeOp::Maximum,
                "Minimum" => MergeOp::Minimum,
                _ => MergeOp::Concatenate(o.get("axis").map_or(Ok(-1), |v| {
                    v.as_i64()
                        .map(|a| a as isize)
                        .ok_or_else(|| o.err("axis", format!("{v} is not an axis")))
                })?),
            };
            Box::new(Merge::new(op).dtype(o.policy()?))
        }
        "Flatten" => {
            o.fixed("data_format", json!("channels_last"))?;
            Box::new(Flatten::new())
        }
        "Dropout" => {
            let mut l = Dropout::new(o.f64("rate", 0.5)?);
            // A list of sizes, null for the input's own.
            if let Some(v) = o.get("noise_shape") {
                let size = |d: &Value| {
                    if d.is_null() {
                        Some(None)
                    } else {
                        d.as_u64().map(|d| Some(d as usize))
                    }
                };
                let dims = v
                    .as_array()
                    .and_then(|a| a.iter().map(size).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| o.err("noise_shape", format!("{v} is not a list of sizes or nulls")))?;
                l = l.noise_shape(dims);
            }
            Box::new(l)
        }
        "BatchNormalization" => {
            // One axis; whether it is the last one is checked against the
            // input's rank once the shapes are known (`check_bn_axes`).
            bn_axis(o.get("axis")).map_err(|v| o.err("axis", format!("{v}: wgflow normalizes the last axis")))?;
            let mut l = BatchNormalization::new()
                .momentum(o.f64("momentum", 0.99)?)
                .epsilon(o.f64("epsilon", 1e-3)?);
            l.center = o.bool("center", true)?;
            l.scale = o.bool("scale", true)?;
            for k in ["synchronized", "renorm"] {
                o.fixed(k, json!(false))?;
            }
            o.known.extend(["renorm_clipping", "renorm_momentum"]);
            Box::new(l)
        }
        "LayerNormalization" => {
            // As for BatchNormalization, the axis is checked against the
            // input's rank once the shapes are known.
            bn_axis(o.get("axis")).map_err(|v| o.err("axis", format!("{v}: wgflow normalizes the last axis")))?;
            let mut l = LayerNormalization::new().epsilon(o.f64("epsilon", 1e-3)?);
            l.center = o.bool("center", true)?;
            l.scale = o.bool("scale", true)?;
            o.fixed("rms_scaling", json!(false))?;
            Box::new(l)
        }
        "GroupNormalization" => {
            last_axis(&mut o)?;
            let mut l = GroupNormalization::new(o.usize("groups", Some(32))?).epsilon(o.f64("epsilon", 1e-3)?);
            l.center = o.bool("center", true)?;
            l.scale = o.bool("scale", true)?;
            Box::new(l)
        }
        "RMSNormalization" => {
            last_axis(&mut o)?;
            Box::new(RMSNormalization::new().epsilon(o.f64("epsilon", 1e-6)?))
        }
        "Activation" => Box::new(ActivationLayer::new(o.activation()?)),
        "ReLU" => {
            o.fixed("negative_slope", json!(0.0))?;
            o.fixed("threshold", json!(0.0))?;
            match o.get("max_value").map(Value::as_f64) {
                None => Box::new(ActivationLayer::new(Activation::Relu)),
                Some(Some(6.0)) => Box::new(ActivationLayer::new(Activation::Relu6)),
                Some(v) => return Err(o.err("max_value", format!("{v:?} is not supported (only null or 6)"))),
            }
        }
        "LeakyReLU" => {
            // Keras 2 files call the slope alpha.
            let slope = match o.get("alpha") {
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| o.err("alpha", format!("{v} is not a number")))?,
                None => o.f64("negative_slope", 0.3)?,
            };
            if slope.is_nan() || slope < 0.0 {
                return Err(o.err("negative_slope", format!("{slope} is negative")));
            }
            Box::new(LeakyReLU::new(slope))
        }
        "Softmax" => {
            o.fixed("axis", json!(-1))?;
            Box::new(ActivationLayer::new(Activation::Softmax))
        }
        "Conv1D" => {
            o.fixed("data_format", json!("channels_last"))?;
            o.fixed("groups", json!(1))?;
            let padding = o.str("padding", "valid")?;
            let l = Conv1D::new(o.usize("filters", None)?, o.single("kernel_size", None)?)
                .strides(o.single("strides", Some(1))?)
                .padding(padding)
                .map_err(|e| o.err("padding", e))?
                .dilation_rate(o.single("dilation_rate", Some(1))?)
                .activation(o.activation()?)
                .use_bias(o.bool("use_bias", true)?)
                .dtype(o.policy()?);
            o.fixed("lora_rank", Value::Null)?;
            Box::new(l)
        }
        "MaxPooling1D" | "AveragePooling1D" => {
            o.fixed("data_format", json!("channels_last"))?;
            let size = o.single("pool_size", Some(2))?;
            let strides = o.single("strides", Some(size))?;
            let padding = o.padding()?;
            if class == "MaxPooling1D" {
                Box::new(
                    MaxPooling1D::new(size)
                        .strides(strides)
                        .padding(padding)
                        .map_err(|e| e.to_string())?,
                )
            } else {
                Box::new(
                    AveragePooling1D::new(size)
                        .strides(strides)
                        .padding(padding)
                        .map_err(|e| e.to_string())?,
                )
            }
        }
        "Embedding" => {
            o.fixed("mask_zero", json!(false))?;
            o.fixed("embeddings_regularizer", Value::Null)?;
            o.fixed("embeddings_constraint", Value::Null)?;
            o.fixed("quantization_config", Value::Null)?;
            o.fixed("lora_rank", Value::Null)?;
            // Keras 2's input_length only states the input shape.
            o.get("input_length");
            let l = Embedding::new(o.usize("input_dim", None)?, o.usize("output_dim", None)?).dtype(o.policy()?);
            Box::new(l)
        }
        "GlobalAveragePooling1D" | "GlobalMaxPooling1D" => {
            o.fixed("data_format", json!("channels_last"))?;
            let keep = o.bool("keepdims", false)?;
            if class == "GlobalMaxPooling1D" {
                Box::new(GlobalMaxPooling1D::new().keepdims(keep))
            } else {
                Box::new(GlobalAveragePooling1D::new().keepdims(keep))
            }
        }
        _ => return Err(format!("layer class {class:?} has no wgflow layer")),
    };
    for k in [
        "kernel_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "bias_constraint",
        "beta_regularizer",
        "gamma_regularizer",
        "beta_constraint",
        "gamma_constraint",
    ] {
        o.fixed(k, Value::Null)?;
    }
    o.finish()?;
    Ok(layer)
}

#[cfg(test)]
mod tests {
    #[test]
    fn snake_case_matches_keras() {
        for (c, s) in [
            ("Conv2D", "conv2d"),
            ("Conv2DTranspose", "conv2d_transpose"),
            ("BatchNormalization", "batch_normalization"),
            ("MaxPooling2D", "max_pooling2d"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("Dense", "dense"),
            ("ReLU", "re_lu"),
        ] {
            assert_eq!(super::snake(c), s);
        }
        assert_eq!(
            super::keys(&["Dense", "Flatten", "Dense", "Dense"]),
            ["dense", "flatten", "dense_1", "dense_2"]
        );
    }

    /// Keras 2's functional configs (`Model`, `batch_input_shape`, calls
    /// as lists of `[layer, node, tensor, kwargs]`) load as the graph they
    /// describe; calls wgflow cannot make are errors naming the layer.
    #[test]
    fn keras2_functional_configs() {
        use crate::nn::model::Model;
        use crate::runtime::Device;
        use crate::tensor::Tensor;
        use serde_json::json;
        let dense = |name: &str, act: &str, from: serde_json::Value| {
            json!({"name": name, "class_name": "Dense", "inbound_nodes": from,
                   "config": {"name": name, "trainable": true, "dtype": "float32", "units": 2,
                              "activation": act, "use_bias": true}})
        };
        let config = |add_from: serde_json::Value| {
            json!({"class_name": "Model", "config": {"name": "model", "layers": [
                {"name": "input_1", "class_name": "InputLayer", "inbound_nodes": [],
                 "config": {"batch_input_shape": [null, 3], "dtype": "float32", "sparse": false, "name": "input_1"}},
                dense("dense", "relu", json!([[["input_1", 0, 0, {}]]])),
                dense("dense_1", "linear", json!([[["input_1", 0, 0, {}]]])),
                {"name": "add", "class_name": "Add", "inbound_nodes": add_from,
                 "config": {"name": "add", "trainable": true, "dtype": "float32"}},
            ], "input_layers": [["input_1", 0, 0]], "output_layers": [["add", 0, 0]]}})
        };
        let path = std::path::Path::new("m.h5");
        let d = Device::Cpu;
        let good = config(json!([[["dense", 0, 0, {}], ["dense_1", 0, 0, {}]]]));
        let (mut m, keys) = super::model_from_config(path, &good, &d).unwrap();
        assert!(m.is_functional());
        assert_eq!(keys, ["dense", "dense_1", "add"]);
        for (l, k) in [
            (0, [1.0f32, -1.0, 2.0, 0.5, -3.0, 1.0]),
            (1, [0.5, 0.5, 1.0, -1.0, 2.0, 0.0]),
        ] {
            let ws = m.layers()[l].weights();
            ws[0]
                .1
                .assign(&Tensor::from_vec(k.to_vec(), &[3, 2], &d).unwrap())
                .unwrap();
            ws[1]
                .1
                .assign(&Tensor::from_vec(vec![0.1f32, -0.2], &[2], &d).unwrap())
                .unwrap();
        }
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[1, 3], &d).unwrap();
        let y = m.call(&x, false).unwrap().to_vec::<f32>().unwrap();
        // relu([1+4-9, -1+1+3] + b) + ([0.5+2+6, 0.5-2+0] + b)
        let want = [0.0f32 + 8.5 + 0.1, (3.0f32 - 0.2) + (-1.5 - 0.2)];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{y:?} against {want:?}");
        }
        for (from, what) in [
            (
                json!([[["dense", 0, 0, {"scale": 2.0}], ["dense_1", 0, 0, {}]]]),
                "scale",
            ),
            (json!([[["dense", 0, 1, {}], ["dense_1", 0, 0, {}]]]), "output 1"),
            (json!([[["dense", 1, 0, {}], ["dense_1", 0, 0, {}]]]), "loop"),
            (json!([[["nowhere", 0, 0, {}]]]), "not in the model"),
            (json!([]), "never called"),
        ] {
            let Err(e) = super::model_from_config(path, &config(from), &d) else {
                panic!("{what}: loaded")
            };
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
    }

    /// Recurrent configs a hostile or hand-written file may hold: huge unit
    /// counts are typed errors, an integer dropout of 0 is 0, a missing
    /// activation is Keras' tanh, a bidirectional pair running the same way
    /// is refused.
    #[test]
    fn recurrent_configs() {
        use crate::core::error::Error;
        use crate::runtime::Device;
        use serde_json::json;
        let path = std::path::Path::new("m.keras");
        let d = Device::Cpu;
        let model = |layer: serde_json::Value| {
            json!({"class_name": "Sequential", "config": {"name": "s", "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [null, 4, 3]}},
                layer,
            ]}})
        };
        let lstm = |extra: serde_json::Value| {
            let mut c = json!({"name": "lstm", "units": 2});
            if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            json!({"class_name": "LSTM", "config": c})
        };
        for units in [1u64 << 62, u64::MAX >> 1] {
            let Err(e) = super::model_from_config(path, &model(lstm(json!({"units": units}))), &d) else {
                panic!("{units} units loaded")
            };
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument { .. } | Error::OutOfMemory { .. } | Error::Shape { .. }
                ),
                "{e}"
            );
        }
        let (m, _) = super::model_from_config(path, &model(lstm(json!({"dropout": 0}))), &d).unwrap();
        let Some(l) = m.layers().first() else {
            panic!("no layer")
        };
        let cfg = l.keras_config().unwrap();
        assert_eq!(cfg["activation"], "tanh", "{cfg}");
        let Err(e) = super::model_from_config(path, &model(lstm(json!({"dropout": 0.5}))), &d) else {
            panic!("dropout 0.5 loaded")
        };
        assert!(e.to_string().contains("dropout"), "{e}");
        let bi = json!({"class_name": "Bidirectional", "config": {"name": "b",
            "layer": lstm(json!({"go_backwards": true}))}});
        let Err(e) = super::model_from_config(path, &model(bi), &d) else {
            panic!("a pair running the same way loaded")
        };
        assert!(e.to_string().contains("go_backwards"), "{e}");
    }
}
