//! Loading a SavedModel: TensorFlow's graph run with wgflow's ops.
//!
//! A signature is evaluated from its outputs back: each `NodeDef` reached is
//! mapped to wgflow ops (`MatMul`, `Conv2D`, `FusedBatchNormV3`, ... — see
//! `eval_op` for the list), function calls (`StatefulPartitionedCall`,
//! `PartitionedCall`) are inlined from the graph's function library, and
//! control inputs (`^node`) are not followed, so training-only nodes
//! (savers, initializers, optimizer slots) are never reached. Shape
//! arithmetic (`Shape`, `StridedSlice`, `Pack`, constants) is computed on
//! the host. The evaluation runs inside [`ConcreteFunction::trace`], which
//! turns what depends on the batch into symbolic shape attributes; so an op
//! wgflow lacks is an [`Error::Unimplemented`] naming the op and the node at
//! load time.
//!
//! Variables: a TF2 SavedModel captures `VarHandleOp`s whose checkpoint
//! keys come from its object graph (`bound_inputs` of the called function
//! → the saved object → the same object in the checkpoint's
//! `_CHECKPOINTABLE_OBJECT_GRAPH`); a TF1-style graph (wgflow's exports,
//! `tf.compat.v1` builders) names them by node. Each is read from the
//! tensor bundle (its CRC checked) the first time a signature needs it.

use super::bundle::{BundleReader, BundleTensor};
use super::proto::{self, FunctionDef, MetaGraphDef, NodeDef, TensorProto, attr_value::Value, dt};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::{BinaryOp, CmpOp, Conv2d, Op, Padding, Pool2d, ReduceOp, UnaryOp};
use crate::function::{ConcreteFunction, TensorSpec};
use crate::runtime::Device;
use crate::runtime::cpu::CpuData;
use crate::tensor::{Tensor, Variable};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const OP: &str = "saved_model.load";

/// A loaded SavedModel (`tf.saved_model.load`): its signatures, callable.
pub struct Loaded {
    dir: PathBuf,
    signatures: BTreeMap<String, ConcreteFunction>,
    unavailable: BTreeMap<String, Error>,
    /// Signatures with inputs of unknown rank, traced per input ranks.
    deferred: BTreeMap<String, BTreeMap<Vec<usize>, ConcreteFunction>>,
    /// The SavedModel and tags, kept to trace the deferred signatures.
    source: Option<Arc<(proto::SavedModel, Vec<String>)>>,
    variables: Vec<(String, Variable)>,
    device: Device,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("dir", &self.dir)
            .field("signatures", &self.signatures.keys().collect::<Vec<_>>())
            .field("device", &self.device)
            .finish()
    }
}

impl Loaded {
    /// The signature keys (`serving_default`, ...), sorted.
    pub fn signature_keys(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self
            .signatures
            .keys()
            .chain(self.deferred.keys())
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    /// The function of deferred signature `key` for inputs of these ranks
    /// (inputs sorted by name), traced on first use.
    fn deferred(&mut self, key: &str, ranks: Vec<usize>) -> Result<&mut ConcreteFunction> {
        let traced = self.deferred.get(key).map(|m| (m.contains_key(&ranks), m.len()));
        match traced {
            None => return Err(Error::arg(OP, format!("no signature '{key}'"))),
            Some((true, _)) => {}
            Some((false, n)) => {
                if n >= MAX_RANK_TRACES {
                    return Err(Error::arg(
                        OP,
                        format!("signature '{key}' was already traced for {n} combinations of input ranks"),
                    ));
                }
                let src = self
                    .source
                    .clone()
                    .ok_or_else(|| Error::arg(OP, format!("signature '{key}': the SavedModel is gone")))?;
                let tags: Vec<&str> = src.1.iter().map(String::as_str).collect();
                let meta = meta_graph(&src.0, &self.dir, &tags)?;
                let sig = meta
                    .signature_def
                    .get(key)
                    .ok_or_else(|| Error::arg(OP, format!("no signature '{key}'")))?;
                let mut ctx = new_ctx(&self.dir, meta, &self.device)?;
                // The variables read so far are shared, not read again.
                ctx.vars = self.variables.iter().cloned().collect();
                let f = trace_sig(&mut ctx, key, sig, Some(&ranks))?;
                self.variables = ctx.vars.into_iter().collect();
                if let Some(m) = self.deferred.get_mut(key) {
                    m.insert(ranks.clone(), f);
                }
            }
        }
        self.deferred
            .get_mut(key)
            .and_then(|m| m.get_mut(&ranks))
            .ok_or_else(|| Error::arg(OP, format!("no signature '{key}'")))
    }

    /// The signatures [`load_serving`] left out, with why.
    pub fn unavailable(&self) -> &BTreeMap<String, Error> {
        &self.unavailable
    }

    /// The signature `key` (`loaded.signatures["serving_default"]`).
    pub fn signature(&mut self, key: &str) -> Result<&mut ConcreteFunction> {
        if let Some(e) = self.unavailable.get(key) {
            return Err(e.clone());
        }
        let keys: Vec<String> = self.signatures.keys().cloned().collect();
        self.signatures.get_mut(key).ok_or_else(|| {
            Error::arg(
                OP,
                format!(
                    "{}: no signature '{key}'; the SavedModel has [{}]",
                    self.dir.display(),
                    keys.join(", ")
                ),
            )
        })
    }

    /// Calls signature `key` with inputs by name; returns the outputs by name
    /// (sorted), as TensorFlow's signature functions take and return dicts.
    /// A missing or unknown input name is an error naming the expected ones.
    pub fn call(&mut self, key: &str, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let f = if self.deferred.contains_key(key) {
            let mut sorted: Vec<&(&str, Tensor)> = inputs.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            let ranks = sorted.iter().map(|(_, t)| t.rank()).collect();
            self.deferred(key, ranks)?
        } else {
            self.signature(key)?
        };
        let names: Vec<String> = f.inputs().iter().map(|s| s.name.clone().unwrap_or_default()).collect();
        for (n, _) in inputs {
            if !names.iter().any(|m| m == n) {
                return Err(Error::arg(
                    OP,
                    format!(
                        "signature '{key}' has no input '{n}'; its inputs are [{}]",
                        names.join(", ")
                    ),
                ));
            }
        }
        let mut args = Vec::with_capacity(names.len());
        for n in &names {
            let t = inputs
                .iter()
                .find(|(m, _)| m == n)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| Error::arg(OP, format!("signature '{key}' needs input '{n}'")))?;
            args.push(t);
        }
        let out = f.call(&args)?;
        Ok(f.output_names().iter().cloned().zip(out).collect())
    }

    /// The variables the signatures read, by checkpoint key.
    pub fn variables(&self) -> &[(String, Variable)] {
        &self.variables
    }

    /// The device the signatures run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The directory loaded.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `tf.saved_model.load(dir)`: the `serve` graph of `dir`, on the default
/// device (`WGFLOW_DEVICE`).
pub fn load(dir: impl AsRef<Path>) -> Result<Loaded> {
    let device = crate::runtime::config::default_device()?;
    load_with(dir, &[super::SERVE_TAG], &device)
}

/// Reads `dir/saved_model.pb`, with errors that name the file.
pub fn read_saved_model(dir: &Path) -> Result<proto::SavedModel> {
    if !dir.is_dir() {
        return Err(Error::format(dir, "SavedModel directory does not exist"));
    }
    let pb = dir.join("saved_model.pb");
    if !pb.is_file() {
        let hint = if dir.join("saved_model.pbtxt").is_file() {
            " (saved_model.pbtxt, the text form, is not supported)"
        } else {
            ""
        };
        return Err(Error::format(dir, format!("no saved_model.pb in the directory{hint}")));
    }
    let bytes = std::fs::read(&pb).map_err(|e| Error::io(&pb, e))?;
    proto::SavedModel::decode(bytes.as_slice())
        .map_err(|e| Error::format(&pb, format!("not a SavedModel protobuf (truncated or corrupt): {e}")))
}

/// The meta graph whose tag set is exactly `tags`.
pub fn meta_graph<'a>(model: &'a proto::SavedModel, dir: &Path, tags: &[&str]) -> Result<&'a MetaGraphDef> {
    let want: HashSet<&str> = tags.iter().copied().collect();
    let mut available = Vec::new();
    for m in &model.meta_graphs {
        let have: Vec<&str> = m
            .meta_info_def
            .as_ref()
            .map_or(vec![], |i| i.tags.iter().map(String::as_str).collect());
        if have.iter().copied().collect::<HashSet<_>>() == want {
            return Ok(m);
        }
        available.push(format!("{{{}}}", have.join(", ")));
    }
    Err(Error::arg(
        OP,
        format!(
            "{}: MetaGraphDef associated with tags {{{}}} could not be found in SavedModel; available tag-sets: [{}]",
            dir.display(),
            tags.join(", "),
            available.join(", ")
        ),
    ))
}

/// `load` with a tag set and a device.
pub fn load_with(dir: impl AsRef<Path>, tags: &[&str], device: &Device) -> Result<Loaded> {
    load_impl(dir.as_ref(), tags, device, false)
}

/// [`load_with`] for a server: a signature that needs what wgflow lacks
/// (an op, a string dtype, an input of unknown rank: TF Serving's
/// `classify`/`regress` signatures over `tf.Example`) is left out and
/// listed by [`Loaded::unavailable`] instead of failing the load, as long
/// as one signature loads.
pub fn load_serving(dir: impl AsRef<Path>, tags: &[&str], device: &Device) -> Result<Loaded> {
    load_impl(dir.as_ref(), tags, device, true)
}

fn new_ctx<'a>(dir: &Path, meta: &'a MetaGraphDef, device: &Device) -> Result<Ctx<'a>> {
    let graph = meta
        .graph_def
        .as_ref()
        .ok_or_else(|| Error::format(dir, "saved_model.pb: the MetaGraphDef has no graph"))?;
    let mut ctx = Ctx {
        dir: dir.to_path_buf(),
        main: graph.node.iter().map(|n| (n.name.as_str(), n)).collect(),
        functions: graph
            .library
            .iter()
            .flat_map(|l| &l.function)
            .filter_map(|f| f.signature.as_ref().map(|s| (s.name.as_str(), f)))
            .collect(),
        bundle: None,
        keys: HashMap::new(),
        trainable: HashMap::new(),
        vars: BTreeMap::new(),
        device: device.clone(),
    };
    ctx.map_variables(meta)?;
    Ok(ctx)
}

/// Whether a signature has an input of unknown rank: it is traced when
/// called, once per combination of input ranks.
fn has_unknown_rank(sig: &proto::SignatureDef) -> bool {
    sig.inputs
        .values()
        .any(|i| i.tensor_shape.as_ref().and_then(|s| s.dims()).is_none())
}

/// Most input-rank combinations traced for one unknown-rank signature.
const MAX_RANK_TRACES: usize = 8;

/// Traces signature `key`; `ranks` (inputs sorted by name) stand in for
/// inputs of unknown rank.
fn trace_sig(ctx: &mut Ctx, key: &str, sig: &proto::SignatureDef, ranks: Option<&[usize]>) -> Result<ConcreteFunction> {
    let dir = ctx.dir.clone();
    let device = ctx.device.clone();
    let mut ins: Vec<(&String, &proto::TensorInfo)> = sig.inputs.iter().collect();
    ins.sort_by(|a, b| a.0.cmp(b.0));
    let mut outs: Vec<(&String, &proto::TensorInfo)> = sig.outputs.iter().collect();
    outs.sort_by(|a, b| a.0.cmp(b.0));
    let mut specs = Vec::new();
    let mut placeholders = Vec::new();
    for (i, (name, info)) in ins.iter().enumerate() {
        let dtype = wg_dtype(info.dtype).ok_or_else(|| Error::Unimplemented {
            what: format!("input dtype {}", dt::name(info.dtype)),
            msg: format!("signature '{key}' input '{name}'"),
        })?;
        let shape = match (
            info.tensor_shape.as_ref().and_then(|s| s.dims()),
            ranks.and_then(|r| r.get(i)),
        ) {
            (Some(d), _) => d,
            (None, Some(&r)) => vec![None; r],
            (None, None) => {
                return Err(Error::Unimplemented {
                    what: "an input of unknown rank".into(),
                    msg: format!("signature '{key}' input '{name}'"),
                });
            }
        };
        specs.push(TensorSpec::new(&shape, dtype).named(name));
        placeholders.push(parse_ref(&info.name, false)?.0.to_string());
    }
    let out_refs: Vec<String> = outs.iter().map(|(_, i)| i.name.clone()).collect();
    let out_names: Vec<&str> = outs.iter().map(|(n, _)| n.as_str()).collect();
    ConcreteFunction::trace(key, &specs, &device, |args| {
        ctx.run_signature(&placeholders, args, &out_refs)
    })
    .map_err(|e| match e {
        Error::Unimplemented { what, msg } => Error::Unimplemented {
            what,
            msg: format!("{msg} (signature '{key}' of {})", dir.display()),
        },
        e => e,
    })?
    .with_output_names(&out_names)
}

fn load_impl(dir: &Path, tags: &[&str], device: &Device, partial: bool) -> Result<Loaded> {
    let model = read_saved_model(dir)?;
    let meta = meta_graph(&model, dir, tags)?;
    let mut ctx = new_ctx(dir, meta, device)?;
    let mut signatures = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    let mut deferred = BTreeMap::new();
    let mut keys: Vec<&String> = meta.signature_def.keys().collect();
    keys.sort();
    for key in keys {
        let sig = &meta.signature_def[key];
        // The init op's "signature" (output NoOp, DT_INVALID) is not one TF exposes.
        if key.starts_with("__saved_model") || sig.outputs.values().any(|o| o.dtype == dt::INVALID) {
            continue;
        }
        let unsupported = sig.inputs.values().find(|i| wg_dtype(i.dtype).is_none());
        if has_unknown_rank(sig) && unsupported.is_none() {
            deferred.insert(key.clone(), BTreeMap::new());
            continue;
        }
        match trace_sig(&mut ctx, key, sig, None) {
            Ok(f) => {
                signatures.insert(key.clone(), f);
            }
            Err(e @ Error::Unimplemented { .. }) if partial => {
                unavailable.insert(key.clone(), e);
            }
            Err(e) => return Err(e),
        }
    }
    if signatures.is_empty() && deferred.is_empty() {
        if unavailable.len() == 1 {
            if let Some(e) = unavailable.values().next() {
                return Err(e.clone());
            }
        }
        if !unavailable.is_empty() {
            let all: Vec<String> = unavailable.iter().map(|(k, e)| format!("'{k}': {e}")).collect();
            return Err(Error::Unimplemented {
                what: "every signature of this SavedModel".into(),
                msg: all.join("; "),
            });
        }
    }
    let variables = ctx.vars.into_iter().collect();
    let source = if deferred.is_empty() {
        None
    } else {
        Some(Arc::new((model.clone(), tags.iter().map(|t| t.to_string()).collect())))
    };
    Ok(Loaded {
        dir: dir.to_path_buf(),
        signatures,
        unavailable,
        deferred,
        source,
        variables,
        device: device.clone(),
    })
}

/// wgflow's dtype for a TensorFlow `DataType` (int64 values are held as int32).
fn wg_dtype(t: i32) -> Option<DType> {
    Some(match t {
        dt::FLOAT => DType::F32,
        dt::HALF => DType::F16,
        dt::BFLOAT16 => DType::BF16,
        dt::DOUBLE => DType::F64,
        dt::INT32 | dt::INT64 => DType::I32,
        dt::BOOL => DType::Bool,
        _ => return None,
    })
}

/// `node:2` (main graph) or `node:out_arg:2` (function body) → (node, output
/// slot, output arg name). `^node` is a control input.
fn parse_ref(r: &str, in_function: bool) -> Result<(&str, usize, Option<&str>)> {
    let bad = || Error::arg(OP, format!("malformed tensor name '{r}'"));
    let mut parts = r.split(':');
    let node = parts.next().ok_or_else(bad)?;
    let rest: Vec<&str> = parts.collect();
    match (in_function, rest.as_slice()) {
        (_, []) => Ok((node, 0, None)),
        (false, [i]) => Ok((node, i.parse().map_err(|_| bad())?, None)),
        (true, [arg, i]) => Ok((node, i.parse().map_err(|_| bad())?, Some(arg))),
        (true, [i]) => Ok((node, i.parse().map_err(|_| bad())?, None)),
        _ => Err(bad()),
    }
}

/// The position of output arg `arg` of `op` among its outputs, for the ops
/// with several output args.
fn arg_offset(op: &str, arg: &str) -> usize {
    let list: &[&str] = match op {
        "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => &[
            "y",
            "batch_mean",
            "batch_variance",
            "reserve_space_1",
            "reserve_space_2",
            "reserve_space_3",
        ],
        "SparseSoftmaxCrossEntropyWithLogits" => &["loss", "backprop"],
        "TopKV2" => &["values", "indices"],
        "Unique" => &["y", "idx"],
        _ => &[],
    };
    list.iter().position(|a| *a == arg).unwrap_or(0)
}

/// A value while evaluating: a tensor, host data (constants and shape
/// arithmetic), a variable handle, or nothing (a control-only node).
#[derive(Clone)]
enum Val {
    T(Tensor),
    H(Host),
    R(Variable),
    Nothing,
}

/// Host data with TensorFlow's dtype.
#[derive(Clone, Debug)]
struct Host {
    dtype: i32,
    shape: Vec<usize>,
    data: HostData,
}

#[derive(Clone, Debug)]
enum HostData {
    F(Vec<f64>),
    I(Vec<i64>),
    B(Vec<bool>),
    S(Vec<Vec<u8>>),
}

impl Host {
    fn ints(dtype: i32, shape: Vec<usize>, v: Vec<i64>) -> Host {
        Host {
            dtype,
            shape,
            data: HostData::I(v),
        }
    }

    fn as_ints(&self, what: &str) -> Result<Vec<i64>> {
        match &self.data {
            HostData::I(v) => Ok(v.clone()),
            HostData::F(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            HostData::B(v) => Ok(v.iter().map(|&b| b as i64).collect()),
            HostData::S(_) => Err(Error::arg(OP, format!("{what}: expected numbers, got strings"))),
        }
    }

    /// A constant of the graph.
    fn from_proto(t: &TensorProto, node: &str) -> Result<Host> {
        let shape: Vec<usize> = match t.tensor_shape.as_ref().and_then(|s| s.dims()) {
            Some(d) => d
                .into_iter()
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| Error::arg(OP, format!("node '{node}': a constant of unknown shape")))?,
            None => Vec::new(),
        };
        let n = crate::core::shape::checked_numel(OP, &shape, 1)?;
        let raw = &t.tensor_content;
        let fill = |mut v: Vec<f64>| -> Result<Vec<f64>> {
            // Repeated fields hold the values, the last one repeated to fill (TF's rule).
            if v.len() == n {
                return Ok(v);
            }
            if v.len() > n {
                return Err(Error::arg(
                    OP,
                    format!("node '{node}': {} values for {n} elements", v.len()),
                ));
            }
            // A few bytes of file must not become gigabytes of memory.
            if n > MAX_REPEATED_FILL {
                return Err(Error::arg(
                    OP,
                    format!("node '{node}': a constant of {n} elements given by {} values", v.len()),
                ));
            }
            let last = v.last().copied().unwrap_or(0.0);
            v.resize(n, last);
            Ok(v)
        };
        let check_len = |size: usize| -> Result<()> {
            if raw.len() != n.saturating_mul(size) {
                return Err(Error::arg(
                    OP,
                    format!("node '{node}': tensor_content has {} bytes for {n} elements", raw.len()),
                ));
            }
            Ok(())
        };
        let data = match t.dtype {
            dt::FLOAT | dt::HALF | dt::DOUBLE | dt::BFLOAT16 => {
                let v: Vec<f64> = if !raw.is_empty() {
                    match t.dtype {
                        dt::FLOAT => {
                            check_len(4)?;
                            raw.chunks_exact(4)
                                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                                .collect()
                        }
                        dt::DOUBLE => {
                            check_len(8)?;
                            raw.chunks_exact(8)
                                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                                .collect()
                        }
                        dt::HALF => {
                            check_len(2)?;
                            raw.chunks_exact(2)
                                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                                .collect()
                        }
                        _ => {
                            check_len(2)?;
                            raw.chunks_exact(2)
                                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                                .collect()
                        }
                    }
                } else {
                    match t.dtype {
                        dt::FLOAT => fill(t.float_val.iter().map(|&x| x as f64).collect())?,
                        dt::DOUBLE => fill(t.double_val.clone())?,
                        dt::HALF => fill(
                            t.half_val
                                .iter()
                                .map(|&x| half::f16::from_bits(x as u16).to_f64())
                                .collect(),
                        )?,
                        _ => fill(
                            t.half_val
                                .iter()
                                .map(|&x| half::bf16::from_bits(x as u16).to_f64())
                                .collect(),
                        )?,
                    }
                };
                HostData::F(v)
            }
            dt::INT32 | dt::INT64 | dt::INT16 | dt::INT8 | dt::UINT8 => {
                let v: Vec<i64> = if !raw.is_empty() {
                    match t.dtype {
                        dt::INT64 => {
                            check_len(8)?;
                            raw.chunks_exact(8)
                                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                                .collect()
                        }
                        dt::INT32 => {
                            check_len(4)?;
                            raw.chunks_exact(4)
                                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                                .collect()
                        }
                        dt::INT16 => {
                            check_len(2)?;
                            raw.chunks_exact(2)
                                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                                .collect()
                        }
                        dt::INT8 => {
                            check_len(1)?;
                            raw.iter().map(|&b| b as i8 as i64).collect()
                        }
                        _ => {
                            check_len(1)?;
                            raw.iter().map(|&b| b as i64).collect()
                        }
                    }
                } else if t.dtype == dt::INT64 {
                    fill(t.int64_val.iter().map(|&x| x as f64).collect())?
                        .into_iter()
                        .map(|x| x as i64)
                        .collect()
                } else {
                    fill(t.int_val.iter().map(|&x| x as f64).collect())?
                        .into_iter()
                        .map(|x| x as i64)
                        .collect()
                };
                HostData::I(v)
            }
            dt::BOOL => {
                let v: Vec<bool> = if !raw.is_empty() {
                    check_len(1)?;
                    raw.iter().map(|&b| b != 0).collect()
                } else {
                    fill(t.bool_val.iter().map(|&b| b as u8 as f64).collect())?
                        .into_iter()
                        .map(|x| x != 0.0)
                        .collect()
                };
                HostData::B(v)
            }
            dt::STRING => HostData::S(t.string_val.clone()),
            other => {
                return Err(Error::Unimplemented {
                    what: format!("a constant of dtype {}", dt::name(other)),
                    msg: format!("node '{node}'"),
                });
            }
        };
        Ok(Host {
            dtype: t.dtype,
            shape,
            data,
        })
    }

    /// The host data as a tensor on `device`.
    fn upload(&self, device: &Device, node: &str) -> Result<Tensor> {
        let data = match (&self.data, self.dtype) {
            (HostData::F(v), dt::HALF) => CpuData::F16(v.iter().map(|&x| half::f16::from_f32(x as f32)).collect()),
            (HostData::F(v), dt::BFLOAT16) => {
                CpuData::BF16(v.iter().map(|&x| half::bf16::from_f32(x as f32)).collect())
            }
            (HostData::F(v), dt::DOUBLE) => CpuData::F64(v.clone()),
            (HostData::F(v), _) => CpuData::F32(v.iter().map(|&x| x as f32).collect()),
            (HostData::I(v), _) => CpuData::I32(
                v.iter()
                    .map(|&x| {
                        i32::try_from(x).map_err(|_| Error::Unimplemented {
                            what: format!("the int64 value {x}"),
                            msg: format!("node '{node}': wgflow computes integers in int32"),
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            (HostData::B(v), _) => CpuData::Bool(v.clone()),
            (HostData::S(_), _) => {
                return Err(Error::Unimplemented {
                    what: "string tensors".into(),
                    msg: format!("node '{node}'"),
                });
            }
        };
        Tensor::from_data(data, &self.shape, device)
    }
}

/// Evaluation state shared by every signature of one load.
struct Ctx<'a> {
    dir: PathBuf,
    main: HashMap<&'a str, &'a NodeDef>,
    functions: HashMap<&'a str, &'a FunctionDef>,
    bundle: Option<BundleReader>,
    /// Main-graph variable handle node → checkpoint key.
    keys: HashMap<String, String>,
    /// Checkpoint key → trainable, from the object graph.
    trainable: HashMap<String, bool>,
    vars: BTreeMap<String, Variable>,
    device: Device,
}

/// One graph or function body being evaluated.
struct Scope<'a> {
    nodes: HashMap<&'a str, &'a NodeDef>,
    in_function: bool,
    /// Function arguments by name (a function body).
    args: HashMap<&'a str, Val>,
    /// Evaluated nodes' outputs.
    memo: HashMap<&'a str, Vec<Val>>,
    /// Function calls open above this scope (recursion guard).
    depth: usize,
}

const MAX_CALL_DEPTH: usize = 64;

/// Elements a constant may expand to from fewer stored values (TF repeats
/// the last one); larger constants must store every value.
const MAX_REPEATED_FILL: usize = 1 << 26;

impl<'a> Ctx<'a> {
    fn bundle(&mut self) -> Result<&BundleReader> {
        if self.bundle.is_none() {
            let prefix = self.dir.join("variables").join("variables");
            self.bundle = Some(BundleReader::open(&prefix)?);
        }
        self.bundle
            .as_ref()
            .ok_or_else(|| Error::format(&self.dir, "variables bundle missing"))
    }

    /// TF2 SavedModels: which checkpoint key each captured handle of the
    /// main graph's function calls holds.
    fn map_variables(&mut self, meta: &MetaGraphDef) -> Result<()> {
        let Some(og) = &meta.object_graph_def else {
            return Ok(());
        };
        if og.concrete_functions.is_empty() {
            return Ok(());
        }
        let ckpt: proto::TrackableObjectGraph = {
            let bundle = self.bundle()?;
            let raw = bundle.read_string("_CHECKPOINTABLE_OBJECT_GRAPH")?;
            let first = raw
                .first()
                .ok_or_else(|| Error::format(&self.dir.join("variables"), "_CHECKPOINTABLE_OBJECT_GRAPH is empty"))?;
            proto::TrackableObjectGraph::decode(first.as_slice()).map_err(|e| {
                Error::format(
                    &self.dir.join("variables"),
                    format!("_CHECKPOINTABLE_OBJECT_GRAPH is not a TrackableObjectGraph: {e}"),
                )
            })?
        };
        // Walk the saved objects and the checkpoint's objects in tandem,
        // matching children by name (as TensorFlow's loader does).
        let mut key_of: HashMap<usize, String> = HashMap::new();
        let mut seen = HashSet::new();
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize)]);
        while let Some((s, c)) = queue.pop_front() {
            if !seen.insert(s) {
                continue;
            }
            let (Some(so), Some(co)) = (og.nodes.get(s), ckpt.nodes.get(c)) else {
                continue;
            };
            if let Some(a) = co.attributes.iter().find(|a| a.name == "VARIABLE_VALUE") {
                key_of.insert(s, a.checkpoint_key.clone());
                if let Some(v) = &so.variable {
                    self.trainable.insert(a.checkpoint_key.clone(), v.trainable);
                }
            }
            for child in &so.children {
                if let Some(cc) = co.children.iter().find(|x| x.local_name == child.local_name) {
                    if let (Ok(a), Ok(b)) = (usize::try_from(child.node_id), usize::try_from(cc.node_id)) {
                        queue.push_back((a, b));
                    }
                }
            }
        }
        for node in self.main.values() {
            if !matches!(node.op.as_str(), "StatefulPartitionedCall" | "PartitionedCall") {
                continue;
            }
            let Some(f) = func_attr(node) else { continue };
            let Some(cf) = og.concrete_functions.get(f) else {
                continue;
            };
            let data: Vec<&String> = node.input.iter().filter(|i| !i.starts_with('^')).collect();
            let k = cf.bound_inputs.len();
            if k > data.len() {
                continue;
            }
            for (inp, id) in data[data.len() - k..].iter().zip(&cf.bound_inputs) {
                let handle = inp.split(':').next().unwrap_or_default().to_string();
                if let Some(key) = usize::try_from(*id).ok().and_then(|id| key_of.get(&id)) {
                    self.keys.insert(handle, key.clone());
                }
            }
        }
        Ok(())
    }

    /// The variable behind handle node `node` of the main graph.
    fn variable(&mut self, node: &NodeDef) -> Result<Variable> {
        let key = match self.keys.get(&node.name) {
            Some(k) => k.clone(),
            None => {
                let shared = attr_s(node, "shared_name").unwrap_or_default();
                let bundle = self.bundle()?;
                if bundle.entry(&node.name).is_some() || shared.is_empty() {
                    node.name.clone()
                } else {
                    shared
                }
            }
        };
        if let Some(v) = self.vars.get(&key) {
            return Ok(v.clone());
        }
        let dir = self.dir.clone();
        let bundle = self.bundle()?;
        if bundle.entry(&key).is_none() {
            return Err(Error::format(
                &dir.join("variables"),
                format!(
                    "variable '{}' (checkpoint key '{key}') is not in the variables bundle",
                    node.name
                ),
            ));
        }
        let t = bundle.read(&key)?;
        let want_dtype = attr_type(node, "dtype");
        if want_dtype.is_some_and(|d| d != t.dtype) {
            return Err(Error::format(
                &dir.join("variables"),
                format!(
                    "variable '{key}' is {} in the bundle but {} in the graph",
                    dt::name(t.dtype),
                    dt::name(want_dtype.unwrap_or_default())
                ),
            ));
        }
        if let Some(shape) = attr_shape(node, "shape").and_then(|s| s.dims()) {
            let fits =
                shape.len() == t.shape.len() && shape.iter().zip(&t.shape).all(|(a, b)| a.is_none_or(|a| a == *b));
            if !fits {
                return Err(Error::format(
                    &dir.join("variables"),
                    format!(
                        "variable '{key}' has shape {:?} in the bundle but {shape:?} in the graph",
                        t.shape
                    ),
                ));
            }
        }
        let value = bundle_tensor(&t, &key, &self.device)?;
        let var = Variable::with_trainable(value, &key, self.trainable.get(&key).copied().unwrap_or(true));
        self.vars.insert(key, var.clone());
        Ok(var)
    }

    /// One signature: the placeholders bound to `args`, the outputs evaluated.
    fn run_signature(&mut self, placeholders: &[String], args: &[Tensor], outs: &[String]) -> Result<Vec<Tensor>> {
        let main: HashMap<&'a str, &'a NodeDef> = self.main.clone();
        let mut scope = Scope {
            nodes: main,
            in_function: false,
            args: HashMap::new(),
            memo: HashMap::new(),
            depth: 0,
        };
        for (p, a) in placeholders.iter().zip(args) {
            let Some((&name, _)) = self.main.get_key_value(p.as_str()) else {
                return Err(Error::format(
                    &self.dir.join("saved_model.pb"),
                    format!("signature input '{p}' names no node of the graph"),
                ));
            };
            scope.memo.insert(name, vec![Val::T(a.clone())]);
        }
        let vals = self.eval(&mut scope, outs)?;
        vals.into_iter()
            .zip(outs)
            .map(|(v, name)| match v {
                Val::T(t) => Ok(t),
                Val::H(h) => h.upload(&self.device, name),
                _ => Err(Error::arg(OP, format!("output '{name}' is not a tensor"))),
            })
            .collect()
    }

    /// The values of `refs` in `scope`, evaluating what they need (an
    /// explicit stack: graphs may be deeper than the thread's stack).
    fn eval(&mut self, scope: &mut Scope<'a>, refs: &[String]) -> Result<Vec<Val>> {
        for r in refs {
            let (node, _, _) = parse_ref(r, scope.in_function)?;
            if scope.args.contains_key(node) {
                continue;
            }
            let Some((&name, _)) = scope.nodes.get_key_value(node) else {
                return Err(Error::format(
                    &self.dir.join("saved_model.pb"),
                    format!("tensor '{r}' names no node"),
                ));
            };
            let mut stack: Vec<&'a str> = vec![name];
            let mut open: HashSet<&'a str> = HashSet::new();
            while let Some(&top) = stack.last() {
                if scope.memo.contains_key(top) {
                    stack.pop();
                    continue;
                }
                let node = scope.nodes[top];
                let mut pending = None;
                for inp in node.input.iter().filter(|i| !i.starts_with('^')) {
                    let (dep, _, _) = parse_ref(inp, scope.in_function)?;
                    if scope.args.contains_key(dep) {
                        continue;
                    }
                    let Some((&dep, _)) = scope.nodes.get_key_value(dep) else {
                        return Err(Error::format(
                            &self.dir.join("saved_model.pb"),
                            format!("node '{}' reads '{inp}', which names no node", node.name),
                        ));
                    };
                    if !scope.memo.contains_key(dep) {
                        pending = Some(dep);
                        break;
                    }
                }
                match pending {
                    Some(dep) => {
                        if !open.insert(dep) {
                            return Err(Error::format(
                                &self.dir.join("saved_model.pb"),
                                format!("the graph has a cycle through node '{dep}'"),
                            ));
                        }
                        stack.push(dep);
                    }
                    None => {
                        let inputs = node
                            .input
                            .iter()
                            .filter(|i| !i.starts_with('^'))
                            .map(|i| lookup(scope, i))
                            .collect::<Result<Vec<Val>>>()?;
                        let out = self.eval_node(node, inputs, scope.depth)?;
                        scope.memo.insert(top, out);
                        open.remove(top);
                        stack.pop();
                    }
                }
            }
        }
        refs.iter().map(|r| lookup(scope, r)).collect()
    }

    /// Inlines a call of function `name`.
    fn call(&mut self, name: &str, inputs: Vec<Val>, depth: usize, node: &NodeDef) -> Result<Vec<Val>> {
        if depth >= MAX_CALL_DEPTH {
            return Err(Error::format(
                &self.dir.join("saved_model.pb"),
                format!(
                    "node '{}': function calls nest deeper than {MAX_CALL_DEPTH} (recursion?)",
                    node.name
                ),
            ));
        }
        let f: &'a FunctionDef = self.functions.get(name).copied().ok_or_else(|| {
            Error::format(
                &self.dir.join("saved_model.pb"),
                format!("node '{}' calls function '{name}', which the library lacks", node.name),
            )
        })?;
        let sig = f.signature.as_ref().ok_or_else(|| {
            Error::format(
                &self.dir.join("saved_model.pb"),
                format!("function '{name}' has no signature"),
            )
        })?;
        if sig.input_arg.len() != inputs.len() {
            return Err(Error::format(
                &self.dir.join("saved_model.pb"),
                format!(
                    "node '{}' passes {} inputs to '{name}', which takes {}",
                    node.name,
                    inputs.len(),
                    sig.input_arg.len()
                ),
            ));
        }
        let mut scope = Scope {
            nodes: f.node_def.iter().map(|n| (n.name.as_str(), n)).collect(),
            in_function: true,
            args: sig.input_arg.iter().map(|a| a.name.as_str()).zip(inputs).collect(),
            memo: HashMap::new(),
            depth: depth + 1,
        };
        let refs = sig
            .output_arg
            .iter()
            .map(|o| {
                f.ret.get(&o.name).cloned().ok_or_else(|| {
                    Error::format(
                        &self.dir.join("saved_model.pb"),
                        format!("function '{name}' does not say what output '{}' returns", o.name),
                    )
                })
            })
            .collect::<Result<Vec<String>>>()?;
        self.eval(&mut scope, &refs)
    }

    fn eval_node(&mut self, node: &'a NodeDef, x: Vec<Val>, depth: usize) -> Result<Vec<Val>> {
        match node.op.as_str() {
            "StatefulPartitionedCall" | "PartitionedCall" => {
                let f = func_attr(node).ok_or_else(|| {
                    Error::format(
                        &self.dir.join("saved_model.pb"),
                        format!("node '{}' names no function", node.name),
                    )
                })?;
                self.call(f, x, depth, node)
            }
            "VarHandleOp" => Ok(vec![Val::R(self.variable(node)?)]),
            "VariableV2" | "Variable" => Ok(vec![Val::T(self.variable(node)?.value())]),
            "ReadVariableOp" => match x.first() {
                Some(Val::R(v)) => Ok(vec![Val::T(v.value())]),
                _ => Err(Error::arg(
                    OP,
                    format!("node '{}': ReadVariableOp needs a variable handle", node.name),
                )),
            },
            _ => eval_op(node, x, &self.device).map_err(|e| match e {
                Error::Unimplemented { what, msg } if msg.is_empty() => Error::Unimplemented {
                    what,
                    msg: format!("node '{}'", node.name),
                },
                e => e,
            }),
        }
    }
}

fn lookup(scope: &Scope<'_>, r: &str) -> Result<Val> {
    let (node, slot, arg) = parse_ref(r, scope.in_function)?;
    if let Some(v) = scope.args.get(node) {
        return Ok(v.clone());
    }
    let outs = scope
        .memo
        .get(node)
        .ok_or_else(|| Error::arg(OP, format!("tensor '{r}' was not evaluated")))?;
    let op = scope.nodes.get(node).map_or("", |n| n.op.as_str());
    let i = arg.map_or(0, |a| arg_offset(op, a)) + slot;
    outs.get(i).cloned().ok_or_else(|| {
        Error::arg(
            OP,
            format!("tensor '{r}': node '{node}' ({op}) has {} outputs", outs.len()),
        )
    })
}

fn func_attr(node: &NodeDef) -> Option<&str> {
    match node.attr.get("f").and_then(|a| a.value.as_ref()) {
        Some(Value::Func(f)) => Some(f.name.as_str()),
        _ => None,
    }
}

fn attr<'n>(node: &'n NodeDef, name: &str) -> Option<&'n Value> {
    node.attr.get(name).and_then(|a| a.value.as_ref())
}
fn attr_s(node: &NodeDef, name: &str) -> Option<String> {
    match attr(node, name) {
        Some(Value::S(s)) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}
fn attr_i(node: &NodeDef, name: &str) -> Option<i64> {
    match attr(node, name) {
        Some(Value::I(i)) => Some(*i),
        _ => None,
    }
}
fn attr_f(node: &NodeDef, name: &str) -> Option<f32> {
    match attr(node, name) {
        Some(Value::F(f)) => Some(*f),
        _ => None,
    }
}
fn attr_b(node: &NodeDef, name: &str) -> Option<bool> {
    match attr(node, name) {
        Some(Value::B(b)) => Some(*b),
        _ => None,
    }
}
fn attr_type(node: &NodeDef, name: &str) -> Option<i32> {
    match attr(node, name) {
        Some(Value::Type(t)) => Some(*t),
        _ => None,
    }
}
fn attr_ints(node: &NodeDef, name: &str) -> Option<Vec<i64>> {
    match attr(node, name) {
        Some(Value::List(l)) => Some(l.i.clone()),
        _ => None,
    }
}
fn attr_shape<'n>(node: &'n NodeDef, name: &str) -> Option<&'n proto::TensorShapeProto> {
    match attr(node, name) {
        Some(Value::Shape(s)) => Some(s),
        _ => None,
    }
}

/// A bundle tensor as a wgflow tensor on `device`.
fn bundle_tensor(t: &BundleTensor, key: &str, device: &Device) -> Result<Tensor> {
    let raw = &t.data;
    let n = crate::core::shape::checked_numel(OP, &t.shape, 1)?;
    let need = |size: usize| -> Result<()> {
        if raw.len() != n.saturating_mul(size) {
            return Err(Error::arg(
                OP,
                format!("variable '{key}': {} bytes for shape {:?}", raw.len(), t.shape),
            ));
        }
        Ok(())
    };
    let data = match t.dtype {
        dt::FLOAT => {
            need(4)?;
            CpuData::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        dt::HALF => {
            need(2)?;
            CpuData::F16(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )
        }
        dt::BFLOAT16 => {
            need(2)?;
            CpuData::BF16(
                raw.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )
        }
        dt::DOUBLE => {
            need(8)?;
            CpuData::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            )
        }
        dt::INT32 => {
            need(4)?;
            CpuData::I32(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        dt::BOOL => {
            need(1)?;
            CpuData::Bool(raw.iter().map(|&b| b != 0).collect())
        }
        other => {
            return Err(Error::Unimplemented {
                what: format!("a variable of dtype {}", dt::name(other)),
                msg: format!("variable '{key}'"),
            });
        }
    };
    Tensor::from_data(data, &t.shape, device)
}

fn unimpl(what: String) -> Error {
    Error::Unimplemented {
        what,
        msg: String::new(),
    }
}

fn tensor(v: &Val, device: &Device, node: &NodeDef) -> Result<Tensor> {
    match v {
        Val::T(t) => Ok(t.clone()),
        Val::H(h) => h.upload(device, &node.name),
        Val::R(var) => Ok(var.value()),
        Val::Nothing => Err(Error::arg(
            OP,
            format!("node '{}' reads a node without outputs", node.name),
        )),
    }
}

fn host<'v>(v: &'v Val, node: &NodeDef, what: &str) -> Result<&'v Host> {
    match v {
        Val::H(h) => Ok(h),
        _ => Err(Error::Unimplemented {
            what: format!("a {what} computed from tensor values"),
            msg: format!(
                "node '{}' ({}): wgflow needs it from constants and shapes (Shape, StridedSlice, Pack, ...)",
                node.name, node.op
            ),
        }),
    }
}

fn arg<'v>(x: &'v [Val], i: usize, node: &NodeDef) -> Result<&'v Val> {
    x.get(i).ok_or_else(|| {
        Error::format(
            Path::new("saved_model.pb"),
            format!(
                "node '{}' ({}) has {} inputs, needs {}",
                node.name,
                node.op,
                x.len(),
                i + 1
            ),
        )
    })
}

fn shape_of(v: &Val, node: &NodeDef) -> Result<Vec<usize>> {
    Ok(match v {
        Val::T(t) => t.shape().to_vec(),
        Val::H(h) => h.shape.clone(),
        Val::R(var) => var.shape(),
        Val::Nothing => {
            return Err(Error::arg(
                OP,
                format!("node '{}' reads a node without outputs", node.name),
            ));
        }
    })
}

fn norm_axis(a: i64, rank: usize, node: &NodeDef) -> Result<usize> {
    let r = rank as i64;
    let ax = if a < 0 { a + r } else { a };
    if ax < 0 || ax >= r.max(1) {
        return Err(Error::arg(
            OP,
            format!("node '{}': axis {a} out of range for rank {rank}", node.name),
        ));
    }
    Ok(ax as usize)
}

fn padding(node: &NodeDef) -> Result<Padding> {
    match attr_s(node, "padding").as_deref() {
        Some("SAME") => Ok(Padding::Same),
        Some("VALID") => Ok(Padding::Valid),
        Some("EXPLICIT") => {
            let p = attr_ints(node, "explicit_paddings").unwrap_or_default();
            let u = |i: usize| p.get(i).and_then(|&x| usize::try_from(x).ok()).unwrap_or(0);
            Ok(Padding::Explicit {
                top: u(2),
                bottom: u(3),
                left: u(4),
                right: u(5),
            })
        }
        other => Err(unimpl(format!("padding {other:?}"))),
    }
}

fn nhwc(node: &NodeDef) -> Result<()> {
    match attr_s(node, "data_format").as_deref() {
        None | Some("NHWC") => Ok(()),
        Some(f) => Err(unimpl(format!("data_format {f} of {}", node.op))),
    }
}

/// `[1, h, w, 1]` → `[h, w]`.
fn hw(node: &NodeDef, name: &str, default: usize) -> Result<[usize; 2]> {
    let v = attr_ints(node, name).unwrap_or_else(|| vec![1, default as i64, default as i64, 1]);
    let get = |i: usize| v.get(i).and_then(|&x| usize::try_from(x).ok()).filter(|&x| x > 0);
    match (get(1), get(2), v.len()) {
        (Some(h), Some(w), 4) => Ok([h, w]),
        _ => Err(Error::arg(OP, format!("node '{}': bad {name} {v:?}", node.name))),
    }
}

fn unary(op: &str, node: &NodeDef) -> Option<UnaryOp> {
    Some(match op {
        "Neg" => UnaryOp::Neg,
        "Abs" => UnaryOp::Abs,
        "Sign" => UnaryOp::Sign,
        "Exp" => UnaryOp::Exp,
        "Expm1" => UnaryOp::Expm1,
        "Log" => UnaryOp::Log,
        "Log1p" => UnaryOp::Log1p,
        "Sqrt" => UnaryOp::Sqrt,
        "Rsqrt" => UnaryOp::Rsqrt,
        "Square" => UnaryOp::Square,
        "Reciprocal" | "Inv" => UnaryOp::Reciprocal,
        "Sin" => UnaryOp::Sin,
        "Cos" => UnaryOp::Cos,
        "Tanh" => UnaryOp::Tanh,
        "Sigmoid" => UnaryOp::Sigmoid,
        "Relu" => UnaryOp::Relu,
        "Relu6" => UnaryOp::Relu6,
        "Elu" => UnaryOp::Elu,
        "Selu" => UnaryOp::Selu,
        "Softplus" => UnaryOp::Softplus,
        "Softsign" => UnaryOp::Softsign,
        "Floor" => UnaryOp::Floor,
        "Ceil" => UnaryOp::Ceil,
        "Round" => UnaryOp::Round,
        "Erf" => UnaryOp::Erf,
        "LeakyRelu" => UnaryOp::LeakyRelu(attr_f(node, "alpha").unwrap_or(0.2)),
        _ => return None,
    })
}

fn binary(op: &str) -> Option<BinaryOp> {
    Some(match op {
        "Add" | "AddV2" | "BiasAdd" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        "RealDiv" | "Div" | "TruncateDiv" => BinaryOp::Div,
        "Pow" => BinaryOp::Pow,
        "Maximum" => BinaryOp::Maximum,
        "Minimum" => BinaryOp::Minimum,
        "SquaredDifference" => BinaryOp::SquaredDifference,
        "LogicalAnd" => BinaryOp::LogicalAnd,
        "LogicalOr" => BinaryOp::LogicalOr,
        _ => return None,
    })
}

fn compare(op: &str) -> Option<CmpOp> {
    Some(match op {
        "Equal" => CmpOp::Equal,
        "NotEqual" => CmpOp::NotEqual,
        "Less" => CmpOp::Less,
        "LessEqual" => CmpOp::LessEqual,
        "Greater" => CmpOp::Greater,
        "GreaterEqual" => CmpOp::GreaterEqual,
        _ => return None,
    })
}

fn apply(op: Op, x: &[&Tensor]) -> Result<Val> {
    Ok(Val::T(crate::ops::apply(op, x)?))
}

fn reshape(t: &Tensor, shape: &[i64], node: &NodeDef) -> Result<Tensor> {
    let s: Vec<isize> = shape
        .iter()
        .map(|&d| isize::try_from(d).map_err(|_| Error::arg(OP, format!("node '{}': bad dimension {d}", node.name))))
        .collect::<Result<_>>()?;
    crate::ops::layout::reshape(t, &s)
}

/// Host arithmetic for shape computations (same shapes or a scalar side).
fn host_binary(op: &str, a: &Host, b: &Host, node: &NodeDef) -> Result<Option<Host>> {
    let (HostData::I(x), HostData::I(y)) = (&a.data, &b.data) else {
        return Ok(None);
    };
    // Same lengths, or one side a single value broadcast over the other.
    let n = match (x.len(), y.len()) {
        (p, q) if p == q => p,
        (1, q) => q,
        (p, 1) => p,
        _ => return Ok(None),
    };
    let get = |v: &[i64], i: usize| v.get(if v.len() == 1 { 0 } else { i }).copied().unwrap_or(0);
    let f = |p: i64, q: i64| -> Option<i64> {
        match op {
            "Add" | "AddV2" => p.checked_add(q),
            "Sub" => p.checked_sub(q),
            "Mul" => p.checked_mul(q),
            "FloorDiv" | "Div" => (q != 0).then(|| p.div_euclid(q)),
            "Maximum" => Some(p.max(q)),
            "Minimum" => Some(p.min(q)),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        match f(get(x, i), get(y, i)) {
            Some(v) => out.push(v),
            None => {
                return if ["Add", "AddV2", "Sub", "Mul", "FloorDiv", "Div", "Maximum", "Minimum"].contains(&op) {
                    Err(Error::arg(
                        OP,
                        format!("node '{}': integer {op} overflows or divides by 0", node.name),
                    ))
                } else {
                    Ok(None)
                };
            }
        }
    }
    let shape = if x.len() >= y.len() {
        a.shape.clone()
    } else {
        b.shape.clone()
    };
    Ok(Some(Host::ints(a.dtype, shape, out)))
}

/// `StridedSlice` of host data along its first axis (shape vectors).
fn host_strided_slice(h: &Host, begin: &[i64], end: &[i64], strides: &[i64], node: &NodeDef) -> Result<Host> {
    let masks = |n: &str| attr_i(node, n).unwrap_or(0);
    if masks("ellipsis_mask") != 0 || masks("new_axis_mask") != 0 || h.shape.len() != 1 || begin.len() != 1 {
        return Err(unimpl("StridedSlice beyond one axis of a shape vector".into()));
    }
    let len = h.shape[0] as i64;
    let stride = *strides.first().unwrap_or(&1);
    if stride == 0 {
        return Err(Error::arg(OP, format!("node '{}': stride 0", node.name)));
    }
    let norm = |x: i64| if x < 0 { x + len } else { x };
    let idx: Vec<usize> = if masks("shrink_axis_mask") & 1 == 1 {
        let i = norm(begin[0]);
        if i < 0 || i >= len {
            return Err(Error::arg(
                OP,
                format!("node '{}': index {} out of range {len}", node.name, begin[0]),
            ));
        }
        vec![i as usize]
    } else {
        let (lo, hi) = if stride > 0 { (0, len) } else { (-1, len - 1) };
        let b = if masks("begin_mask") & 1 == 1 {
            if stride > 0 { lo } else { hi }
        } else {
            norm(begin[0]).clamp(lo, hi)
        };
        let e = if masks("end_mask") & 1 == 1 {
            if stride > 0 { hi } else { lo }
        } else {
            norm(*end.first().unwrap_or(&len)).clamp(lo, hi)
        };
        let mut v = Vec::new();
        let mut i = b;
        while (stride > 0 && i < e) || (stride < 0 && i > e) {
            v.push(i as usize);
            match i.checked_add(stride) {
                Some(next) => i = next,
                None => break,
            }
        }
        v
    };
    let data = {
        match &h.data {
            HostData::I(x) => HostData::I(idx.iter().filter_map(|&i| x.get(i).copied()).collect::<Vec<_>>()),
            HostData::F(x) => HostData::F(idx.iter().filter_map(|&i| x.get(i).copied()).collect()),
            HostData::B(x) => HostData::B(idx.iter().filter_map(|&i| x.get(i).copied()).collect()),
            HostData::S(x) => HostData::S(idx.iter().filter_map(|&i| x.get(i).cloned()).collect()),
        }
    };
    let shrink = masks("shrink_axis_mask") & 1 == 1;
    Ok(Host {
        dtype: h.dtype,
        shape: if shrink { vec![] } else { vec![idx.len()] },
        data,
    })
}

/// The TensorFlow op of `node` on wgflow's ops.
fn eval_op(node: &NodeDef, x: Vec<Val>, device: &Device) -> Result<Vec<Val>> {
    let op = node.op.as_str();
    let one = |v: Val| Ok(vec![v]);
    let t = |i: usize| -> Result<Tensor> { tensor(arg(&x, i, node)?, device, node) };
    if let Some(u) = unary(op, node) {
        let a = t(0)?;
        return one(apply(Op::Unary(u), &[&a])?);
    }
    if let Some(c) = compare(op) {
        let (a, b) = (t(0)?, t(1)?);
        return one(apply(Op::Compare(c), &[&a, &b])?);
    }
    if let Some(bop) = binary(op) {
        if let (Val::H(a), Val::H(b)) = (arg(&x, 0, node)?, arg(&x, 1, node)?) {
            if let Some(h) = host_binary(op, a, b, node)? {
                return one(Val::H(h));
            }
        }
        if op == "BiasAdd" {
            nhwc(node)?;
        }
        let (a, b) = (t(0)?, t(1)?);
        return one(apply(Op::Binary(bop), &[&a, &b])?);
    }
    match op {
        "Identity" | "StopGradient" | "Snapshot" | "PreventGradient" | "EnsureShape" | "CheckNumerics" => {
            one(arg(&x, 0, node)?.clone())
        }
        "IdentityN" => Ok(x),
        "NoOp" => Ok(vec![Val::Nothing]),
        "Const" => match attr(node, "value") {
            Some(Value::Tensor(tp)) => one(Val::H(Host::from_proto(tp, &node.name)?)),
            _ => Err(Error::format(
                Path::new("saved_model.pb"),
                format!("Const node '{}' has no value", node.name),
            )),
        },
        "Placeholder" => Err(Error::arg(
            OP,
            format!("placeholder '{}' is not an input of this signature", node.name),
        )),
        "PlaceholderWithDefault" => one(arg(&x, 0, node)?.clone()),
        "Shape" | "Size" | "Rank" => {
            let s = shape_of(arg(&x, 0, node)?, node)?;
            let dtype = attr_type(node, "out_type").unwrap_or(dt::INT32);
            let h = match op {
                "Shape" => Host::ints(dtype, vec![s.len()], s.iter().map(|&d| d as i64).collect()),
                "Size" => Host::ints(dtype, vec![], vec![s.iter().product::<usize>() as i64]),
                _ => Host::ints(dt::INT32, vec![], vec![s.len() as i64]),
            };
            one(Val::H(h))
        }
        "StridedSlice" => {
            let b = host(arg(&x, 1, node)?, node, "slice begin")?.as_ints("begin")?;
            let e = host(arg(&x, 2, node)?, node, "slice end")?.as_ints("end")?;
            let s = host(arg(&x, 3, node)?, node, "slice strides")?.as_ints("strides")?;
            match arg(&x, 0, node)? {
                Val::H(h) => one(Val::H(host_strided_slice(h, &b, &e, &s, node)?)),
                v => {
                    let v = tensor(v, device, node)?;
                    one(Val::T(tensor_strided_slice(&v, &b, &e, &s, node)?))
                }
            }
        }
        "Pack" => {
            let axis = attr_i(node, "axis").unwrap_or(0);
            if x.iter().all(|v| matches!(v, Val::H(_))) && axis == 0 {
                let mut out = Vec::new();
                let mut dtype = dt::INT32;
                for v in &x {
                    let h = host(v, node, "packed value")?;
                    if !h.shape.is_empty() {
                        return Err(unimpl("Pack of host values that are not scalars".into()));
                    }
                    dtype = h.dtype;
                    out.extend(h.as_ints("Pack")?);
                }
                return one(Val::H(Host::ints(dtype, vec![out.len()], out)));
            }
            let ts = x.iter().map(|v| tensor(v, device, node)).collect::<Result<Vec<_>>>()?;
            let first = ts
                .first()
                .ok_or_else(|| Error::arg(OP, format!("node '{}': Pack of nothing", node.name)))?;
            let rank = first.rank();
            let ax = norm_axis(axis, rank + 1, node)?;
            let mut expanded = Vec::new();
            for t in &ts {
                let mut s: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
                s.insert(ax, 1);
                expanded.push(reshape(t, &s, node)?);
            }
            let refs: Vec<&Tensor> = expanded.iter().collect();
            one(Val::T(crate::ops::layout::concat(&refs, ax as isize)?))
        }
        "ConcatV2" => {
            let (vals, axis) = x.split_at(x.len().saturating_sub(1));
            let axis = host(arg(axis, 0, node)?, node, "concat axis")?.as_ints("axis")?;
            let axis = *axis.first().unwrap_or(&0);
            if vals.iter().all(|v| matches!(v, Val::H(h) if h.shape.len() == 1)) {
                let mut out = Vec::new();
                let mut dtype = dt::INT32;
                for v in vals {
                    let h = host(v, node, "concat value")?;
                    dtype = h.dtype;
                    out.extend(h.as_ints("ConcatV2")?);
                }
                return one(Val::H(Host::ints(dtype, vec![out.len()], out)));
            }
            let ts = vals
                .iter()
                .map(|v| tensor(v, device, node))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = ts.iter().collect();
            one(Val::T(crate::ops::layout::concat(&refs, axis as isize)?))
        }
        "Reshape" => {
            let s = host(arg(&x, 1, node)?, node, "target shape")?.as_ints("shape")?;
            one(Val::T(reshape(&t(0)?, &s, node)?))
        }
        "Squeeze" => {
            let a = t(0)?;
            let dims = attr_ints(node, "squeeze_dims").unwrap_or_default();
            let axes: Vec<usize> = dims
                .iter()
                .map(|&d| norm_axis(d, a.rank(), node))
                .collect::<Result<_>>()?;
            let s: Vec<i64> = a
                .shape()
                .iter()
                .enumerate()
                .filter(|&(i, &d)| !(d == 1 && (axes.is_empty() || axes.contains(&i))))
                .map(|(_, &d)| d as i64)
                .collect();
            one(Val::T(reshape(&a, &s, node)?))
        }
        "ExpandDims" => {
            let a = t(0)?;
            let d = host(arg(&x, 1, node)?, node, "axis")?.as_ints("axis")?;
            let ax = norm_axis(*d.first().unwrap_or(&0), a.rank() + 1, node)?;
            let mut s: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
            s.insert(ax, 1);
            one(Val::T(reshape(&a, &s, node)?))
        }
        "Transpose" => {
            let p = host(arg(&x, 1, node)?, node, "permutation")?.as_ints("perm")?;
            let p: Vec<usize> = p.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
            one(Val::T(crate::ops::layout::transpose(&t(0)?, &p)?))
        }
        "Cast" => {
            let to = attr_type(node, "DstT").unwrap_or(dt::FLOAT);
            if attr_b(node, "Truncate") == Some(true) && matches!(to, dt::HALF | dt::BFLOAT16) {
                return Err(unimpl(format!(
                    "Cast to {} with Truncate=true (rounding toward zero)",
                    dt::name(to)
                )));
            }
            if let Val::H(h) = arg(&x, 0, node)? {
                if matches!(to, dt::INT32 | dt::INT64) {
                    return one(Val::H(Host::ints(to, h.shape.clone(), h.as_ints("Cast")?)));
                }
            }
            let d = wg_dtype(to).ok_or_else(|| unimpl(format!("Cast to {}", dt::name(to))))?;
            one(apply(Op::Cast(d), &[&t(0)?])?)
        }
        "Fill" => {
            let dims = host(arg(&x, 0, node)?, node, "fill shape")?.as_ints("dims")?;
            let v = host(arg(&x, 1, node)?, node, "fill value")?;
            let value = match &v.data {
                HostData::F(f) => f.first().copied().unwrap_or(0.0),
                HostData::I(i) => i.first().copied().unwrap_or(0) as f64,
                HostData::B(b) => b.first().copied().unwrap_or(false) as u8 as f64,
                HostData::S(_) => return Err(unimpl("Fill with strings".into())),
            };
            let shape: Vec<usize> = dims.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
            let dtype = wg_dtype(v.dtype).ok_or_else(|| unimpl(format!("Fill of {}", dt::name(v.dtype))))?;
            one(Val::T(crate::ops::full(&shape, value, dtype, device)?))
        }
        "ZerosLike" | "OnesLike" => {
            let a = t(0)?;
            let v = if op == "ZerosLike" { 0.0 } else { 1.0 };
            one(Val::T(crate::ops::full(a.shape(), v, a.dtype(), device)?))
        }
        "Select" | "SelectV2" => {
            let (c, a, b) = (t(0)?, t(1)?, t(2)?);
            if op == "Select" && c.rank() == 1 && a.rank() > 1 {
                return Err(unimpl("Select with a vector condition on a matrix".into()));
            }
            one(apply(Op::Where, &[&c, &a, &b])?)
        }
        "AddN" => {
            let mut acc = t(0)?;
            for i in 1..x.len() {
                acc = crate::ops::apply(Op::Binary(BinaryOp::Add), &[&acc, &t(i)?])?;
            }
            one(Val::T(acc))
        }
        "WgflowDequantizeInt8" => {
            let cols = attr_i(node, "cols")
                .and_then(|c| usize::try_from(c).ok())
                .ok_or_else(|| unimpl("WgflowDequantizeInt8 without a valid 'cols'".into()))?;
            one(apply(Op::DequantizeInt8 { cols }, &[&t(0)?, &t(1)?])?)
        }
        "MatMul" => {
            let (a, b) = (t(0)?, t(1)?);
            let ta = attr_b(node, "transpose_a").unwrap_or(false);
            let tb = attr_b(node, "transpose_b").unwrap_or(false);
            one(apply(Op::MatMul { ta, tb }, &[&a, &b])?)
        }
        "BatchMatMul" | "BatchMatMulV2" | "BatchMatMulV3" => {
            let (a, b) = (t(0)?, t(1)?);
            let ta = attr_b(node, "adj_x").unwrap_or(false);
            let tb = attr_b(node, "adj_y").unwrap_or(false);
            one(apply(Op::MatMul { ta, tb }, &[&a, &b])?)
        }
        "Conv2D" | "DepthwiseConv2dNative" => {
            nhwc(node)?;
            let (a, mut w) = (t(0)?, t(1)?);
            let mut groups = 1;
            if op == "DepthwiseConv2dNative" {
                let s = w.shape().to_vec();
                if s.len() != 4 {
                    return Err(Error::shape(
                        OP,
                        &[&s],
                        format!("node '{}': depthwise filter must be rank 4", node.name),
                    ));
                }
                groups = s[2];
                let out = s[2].saturating_mul(s[3]);
                w = reshape(&w, &[s[0] as i64, s[1] as i64, 1, out as i64], node)?;
            }
            let conv = Conv2d {
                strides: hw(node, "strides", 1)?,
                padding: padding(node)?,
                dilations: hw(node, "dilations", 1)?,
                groups,
            };
            one(apply(Op::Conv2d(conv), &[&a, &w])?)
        }
        "MaxPool" | "AvgPool" => {
            nhwc(node)?;
            let p = Pool2d {
                max: op == "MaxPool",
                ksize: hw(node, "ksize", 1)?,
                strides: hw(node, "strides", 1)?,
                padding: padding(node)?,
            };
            one(apply(Op::Pool(p), &[&t(0)?])?)
        }
        "Mean" | "Sum" | "Max" | "Min" | "Prod" => {
            let keep = attr_b(node, "keep_dims").unwrap_or(false);
            let axes = host(arg(&x, 1, node)?, node, "reduction axes")?.as_ints("axes")?;
            if let (Val::H(h), "Prod" | "Sum", false) = (arg(&x, 0, node)?, op, keep) {
                if h.shape.len() == 1 {
                    if let HostData::I(v) = &h.data {
                        let r = if op == "Prod" {
                            v.iter().try_fold(1i64, |a, &b| a.checked_mul(b))
                        } else {
                            v.iter().try_fold(0i64, |a, &b| a.checked_add(b))
                        };
                        let r = r.ok_or_else(|| Error::arg(OP, format!("node '{}': overflow", node.name)))?;
                        return one(Val::H(Host::ints(h.dtype, vec![], vec![r])));
                    }
                }
            }
            let a = t(0)?;
            let mut ax: Vec<usize> = axes
                .iter()
                .map(|&d| norm_axis(d, a.rank(), node))
                .collect::<Result<_>>()?;
            ax.sort_unstable();
            ax.dedup();
            let r = match op {
                "Mean" => ReduceOp::Mean,
                "Sum" => ReduceOp::Sum,
                "Max" => ReduceOp::Max,
                "Min" => ReduceOp::Min,
                _ => ReduceOp::Prod,
            };
            one(apply(
                Op::Reduce {
                    op: r,
                    axes: ax,
                    keepdims: keep,
                },
                &[&a],
            )?)
        }
        "ArgMax" | "ArgMin" => {
            let a = t(0)?;
            let d = host(arg(&x, 1, node)?, node, "axis")?.as_ints("axis")?;
            let axis = norm_axis(*d.first().unwrap_or(&0), a.rank(), node)?;
            one(apply(
                Op::ArgReduce {
                    max: op == "ArgMax",
                    axis,
                },
                &[&a],
            )?)
        }
        "Softmax" | "LogSoftmax" => {
            let a = t(0)?;
            let axis = a.rank().saturating_sub(1);
            one(apply(
                Op::Softmax {
                    axis,
                    log: op == "LogSoftmax",
                },
                &[&a],
            )?)
        }
        "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => {
            nhwc(node)?;
            if attr_b(node, "is_training").unwrap_or(true) {
                return Err(unimpl(format!("{op} with is_training=true (a training graph)")));
            }
            let (a, scale, offset, mean, var) = (t(0)?, t(1)?, t(2)?, t(3)?, t(4)?);
            let eps = attr_f(node, "epsilon").unwrap_or(1e-4) as f64;
            // y = (x - mean) * scale / sqrt(var + eps) + offset
            let e = crate::ops::full(&[], eps, var.dtype(), device)?;
            let ve = crate::ops::apply(Op::Binary(BinaryOp::Add), &[&var, &e])?;
            let inv = crate::ops::apply(Op::Unary(UnaryOp::Rsqrt), &[&ve])?;
            let k = crate::ops::apply(Op::Binary(BinaryOp::Mul), &[&inv, &scale])?;
            let c = crate::ops::apply(Op::Binary(BinaryOp::Sub), &[&a, &mean])?;
            let y = crate::ops::apply(Op::Binary(BinaryOp::Mul), &[&c, &k])?;
            let y = crate::ops::apply(Op::Binary(BinaryOp::Add), &[&y, &offset])?;
            Ok(vec![
                Val::T(y),
                Val::T(mean.clone()),
                Val::T(var.clone()),
                Val::T(mean),
                Val::T(var),
                Val::Nothing,
            ])
        }
        "GatherV2" | "ResourceGather" => {
            let params = match arg(&x, 0, node)? {
                Val::R(v) => v.value(),
                v => tensor(v, device, node)?,
            };
            let idx = t(1)?;
            let axis = if op == "GatherV2" {
                *host(arg(&x, 2, node)?, node, "axis")?
                    .as_ints("axis")?
                    .first()
                    .unwrap_or(&0)
            } else {
                0
            };
            if attr_i(node, "batch_dims").unwrap_or(0) != 0 {
                return Err(unimpl(format!("{op} with batch_dims")));
            }
            one(Val::T(crate::ops::layout::gather(&params, &idx, axis as isize)?))
        }
        _ => Err(Error::Unimplemented {
            what: format!("op '{op}'"),
            msg: String::new(),
        }),
    }
}

/// `StridedSlice` of a tensor with unit strides and no ellipsis or new axes.
fn tensor_strided_slice(x: &Tensor, begin: &[i64], end: &[i64], strides: &[i64], node: &NodeDef) -> Result<Tensor> {
    let m = |n: &str| attr_i(node, n).unwrap_or(0);
    if m("ellipsis_mask") != 0 || m("new_axis_mask") != 0 || strides.iter().any(|&s| s != 1) {
        return Err(unimpl(
            "StridedSlice of a tensor with strides, ellipsis or new axes".into(),
        ));
    }
    let shape = x.shape().to_vec();
    let mut b = Vec::new();
    let mut size = Vec::new();
    let mut out_shape = Vec::new();
    for (i, &d) in shape.iter().enumerate() {
        let d = d as i64;
        let bit = 1i64 << i.min(62);
        let norm = |v: i64| if v < 0 { v + d } else { v };
        if i >= begin.len() {
            b.push(0);
            size.push(d as usize);
            out_shape.push(d);
            continue;
        }
        let lo = if m("begin_mask") & bit != 0 {
            0
        } else {
            norm(begin[i]).clamp(0, d)
        };
        if m("shrink_axis_mask") & bit != 0 {
            if lo >= d {
                return Err(Error::arg(OP, format!("node '{}': index out of range", node.name)));
            }
            b.push(lo as usize);
            size.push(1);
            continue;
        }
        let hi = if m("end_mask") & bit != 0 {
            d
        } else {
            norm(*end.get(i).unwrap_or(&d)).clamp(0, d)
        };
        let n = (hi - lo).max(0);
        b.push(lo as usize);
        size.push(n as usize);
        out_shape.push(n);
    }
    let s = crate::ops::layout::slice(x, &b, &size)?;
    reshape(&s, &out_shape, node)
}
