//! Loading a SavedModel: TensorFlow's graph run with wgflow's ops.
//!
//! A signature is evaluated from its outputs back: each `NodeDef` reached is
//! mapped to wgflow ops (`MatMul`, `Conv2D`, `FusedBatchNormV3`, ... — see
//! `eval_op` for the list), function calls (`StatefulPartitionedCall`,
//! `PartitionedCall`) are inlined from the graph's function library (at
//! most [`MAX_INLINED_NODES`] body nodes per run: calls that fan out grow
//! exponentially). A control input (`^node`) is followed only when what it
//! waits on changes a variable (`AssignAddVariableOp` before the
//! `ReadVariableOp` that must see it, a function's control outputs):
//! `AssignVariableOp`, `AssignAddVariableOp` and `AssignSubVariableOp`
//! assign, as a traced graph does at the end of each call; any other
//! variable update is an [`Error::Unimplemented`] naming it, never a stale
//! read. Training-only nodes (savers, initializers, optimizer slots) are
//! never reached.
//!
//! Shape arithmetic (`Shape`, `StridedSlice`, `Pack`, integer `FloorDiv`,
//! constants) is computed on the host with TensorFlow's integer semantics.
//! The evaluation runs inside [`ConcreteFunction::trace`], on stand-in sizes
//! for unknown dimensions, which turns what depends on the batch into
//! symbolic shape attributes. A shape value used as data (`x /
//! tf.cast(tf.shape(x)[0], tf.float32)`) keeps how it follows from the
//! dimensions ([`Sym`]) and is computed by ops at every call; a constant
//! that still differs between the two stand-in runs is an error naming the
//! node that reads it. An op wgflow lacks is an [`Error::Unimplemented`]
//! naming the op and the node at load time, and every error of an op names
//! its node. What constants with repeated values and `Fill`s expand to is
//! capped per run ([`MAX_HOST_EXPANSION`], then `Error::OutOfMemory`).
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
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
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
        cx: OpCx::new(device),
        logs: Vec::new(),
        inlined: 0,
        fn_mutates: HashMap::new(),
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
    ctx.logs.clear();
    let mut traced = ConcreteFunction::trace(key, &specs, &device, |args| {
        ctx.run_signature(&placeholders, args, &out_refs)
    });
    // Inputs that meet in the graph (two towers joined) share their batch:
    // traced again with one stand-in batch for all of them.
    if traced.is_err() && specs.iter().filter(|s| s.shape.first() == Some(&None)).count() > 1 {
        ctx.logs.clear();
        traced = ConcreteFunction::trace_batched(key, &specs, &device, |args| {
            ctx.run_signature(&placeholders, args, &out_refs)
        });
    }
    // A constant that differs between the two runs names its node, more
    // precisely than the trace's own check.
    let checked = ctx.check_traces();
    ctx.logs.clear();
    checked
        .and(traced)
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
    /// For integer data computed from shapes (`Shape`, `Size` and the
    /// arithmetic on them): how each element follows from the dimensions
    /// of the trace's tensors. `None` for constants.
    sym: Option<Vec<Sym>>,
}

/// How an integer host element follows from tensors' dimensions. The
/// trace runs on stand-in sizes for unknown dimensions (see
/// [`ConcreteFunction::trace`]), so a shape value that becomes data
/// (`x / tf.cast(tf.shape(x)[0], tf.float32)`) is computed by ops at
/// every call ([`Host::upload`]), never captured with the stand-in's value.
#[derive(Clone, Debug)]
enum Sym {
    Const(i64),
    /// Dimension `axis` of the tensor.
    Dim(Tensor, usize),
    /// Integer arithmetic (a host op's name) on two elements; the count of
    /// leaves below, capped (see [`MAX_SYM_LEAVES`]).
    Bin(&'static str, Rc<Sym>, Rc<Sym>, usize),
    /// Follows from dimensions by more arithmetic than is tracked.
    Opaque,
}

/// Leaves a [`Sym`] expression may have before it becomes [`Sym::Opaque`].
const MAX_SYM_LEAVES: usize = 64;

impl Sym {
    fn leaves(&self) -> usize {
        match self {
            Sym::Bin(_, _, _, n) => *n,
            _ => 1,
        }
    }

    fn is_const(&self) -> bool {
        matches!(self, Sym::Const(_))
    }

    /// `a op b`, where `op` is one of the integer host ops of [`int_op`].
    fn bin(op: &str, a: Sym, b: Sym) -> Sym {
        let Some(op) = INT_OPS.iter().copied().find(|&o| o == op) else {
            return Sym::Opaque;
        };
        if matches!(a, Sym::Opaque) || matches!(b, Sym::Opaque) {
            return Sym::Opaque;
        }
        let n = a.leaves().saturating_add(b.leaves());
        if n > MAX_SYM_LEAVES {
            return Sym::Opaque;
        }
        Sym::Bin(op, Rc::new(a), Rc::new(b), n)
    }

    /// The element as an int32 scalar computed by ops: a dimension of `t`
    /// as the sum of a fill of that length, whose size a traced graph
    /// re-derives at every call.
    fn tensor(&self, device: &Device, at: &str) -> Result<Tensor> {
        match self {
            Sym::Const(c) => {
                let c = i32::try_from(*c).map_err(|_| Error::Unimplemented {
                    what: format!("the int64 value {c}"),
                    msg: format!("{at}: wgflow computes integers in int32"),
                })?;
                crate::ops::full(&[], c as f64, DType::I32, device)
            }
            Sym::Dim(t, axis) => {
                let d = t.shape().get(*axis).copied().unwrap_or(1);
                let ones = crate::ops::full(&[d], 1.0, DType::I32, device)?;
                crate::ops::apply(
                    Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: vec![0],
                        keepdims: false,
                    },
                    &[&ones],
                )
            }
            Sym::Bin(op, a, b, _) => {
                let (a, b) = (a.tensor(device, at)?, b.tensor(device, at)?);
                tensor_binary(op, &a, &b)?.ok_or_else(|| unimpl(format!("integer {op} of tensors")))
            }
            Sym::Opaque => Err(Error::Unimplemented {
                what:
                    "a value computed from the input's dimensions by more arithmetic than wgflow tracks, used as data"
                        .into(),
                msg: format!("{at}: its value would be fixed at the size traced, not the size of each call"),
            }),
        }
    }
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
            sym: None,
        }
    }

    /// Integers with how each follows from dimensions, where any does.
    fn ints_sym(dtype: i32, shape: Vec<usize>, v: Vec<i64>, sym: Option<Vec<Sym>>) -> Host {
        let sym = sym.filter(|s| s.len() == v.len() && s.iter().any(|e| !e.is_const()));
        Host {
            sym,
            ..Host::ints(dtype, shape, v)
        }
    }

    fn is_int(&self) -> bool {
        matches!(self.data, HostData::I(_))
    }

    /// Element `i` as a [`Sym`] (a single value broadcasts).
    fn sym_at(&self, i: usize) -> Sym {
        let i = if self.numel() == 1 { 0 } else { i };
        if let Some(e) = self.sym.as_ref().and_then(|s| s.get(i)) {
            return e.clone();
        }
        match &self.data {
            HostData::I(v) => v.get(i).map_or(Sym::Opaque, |&c| Sym::Const(c)),
            _ => Sym::Opaque,
        }
    }

    fn numel(&self) -> usize {
        match &self.data {
            HostData::F(v) => v.len(),
            HostData::I(v) => v.len(),
            HostData::B(v) => v.len(),
            HostData::S(v) => v.len(),
        }
    }

    /// A hash of dtype, shape and values (to tell two traces' constants apart).
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.dtype.hash(&mut h);
        self.shape.hash(&mut h);
        match &self.data {
            HostData::F(v) => v.iter().for_each(|x| x.to_bits().hash(&mut h)),
            HostData::I(v) => v.hash(&mut h),
            HostData::B(v) => v.hash(&mut h),
            HostData::S(v) => v.hash(&mut h),
        }
        h.finish()
    }

    fn as_ints(&self, what: &str) -> Result<Vec<i64>> {
        match &self.data {
            HostData::I(v) => Ok(v.clone()),
            HostData::F(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            HostData::B(v) => Ok(v.iter().map(|&b| b as i64).collect()),
            HostData::S(_) => Err(Error::arg(OP, format!("{what}: expected numbers, got strings"))),
        }
    }

    /// A constant of the graph; what repeated values expand to is taken
    /// from the load's budget.
    fn from_proto(t: &TensorProto, node: &str, cx: &OpCx) -> Result<Host> {
        let shape: Vec<usize> = match t.tensor_shape.as_ref().and_then(|s| s.dims()) {
            Some(d) => d
                .into_iter()
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| Error::arg(OP, format!("node '{node}': a constant of unknown shape")))?,
            None => Vec::new(),
        };
        let n = crate::core::shape::checked_numel(OP, &shape, 1)?;
        let raw = &t.tensor_content;
        fn fill<T: Clone + Default>(mut v: Vec<T>, n: usize, node: &str, cx: &OpCx) -> Result<Vec<T>> {
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
            cx.expand(n, size_of::<T>(), node, "Const")?;
            let last = v.last().cloned().unwrap_or_default();
            v.try_reserve_exact(n - v.len()).map_err(|_| Error::OutOfMemory {
                device: format!("the host (node '{node}', a constant of {n} elements)"),
                requested: (n.saturating_mul(size_of::<T>())) as u64,
                in_use: 0,
                limit: 0,
            })?;
            v.resize(n, last);
            Ok(v)
        }
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
                        dt::FLOAT => fill(t.float_val.iter().map(|&x| x as f64).collect(), n, node, cx)?,
                        dt::DOUBLE => fill(t.double_val.clone(), n, node, cx)?,
                        dt::HALF => fill(
                            t.half_val
                                .iter()
                                .map(|&x| half::f16::from_bits(x as u16).to_f64())
                                .collect(),
                            n,
                            node,
                            cx,
                        )?,
                        _ => fill(
                            t.half_val
                                .iter()
                                .map(|&x| half::bf16::from_bits(x as u16).to_f64())
                                .collect(),
                            n,
                            node,
                            cx,
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
                    // Exactly: through f64, values past 2^53 would round.
                    fill(t.int64_val.clone(), n, node, cx)?
                } else {
                    fill(t.int_val.iter().map(|&x| x as i64).collect(), n, node, cx)?
                };
                HostData::I(v)
            }
            dt::BOOL => {
                let v: Vec<bool> = if !raw.is_empty() {
                    check_len(1)?;
                    raw.iter().map(|&b| b != 0).collect()
                } else {
                    fill(t.bool_val.clone(), n, node, cx)?
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
            sym: None,
        })
    }

    /// The host data as a tensor on `cx`'s device, read by `at` (`node 'x'
    /// (Op)`). Elements computed from dimensions are computed by ops (see
    /// [`Sym`]); the rest is a constant, logged for [`Ctx::check_traces`].
    fn upload(&self, cx: &OpCx, at: &str) -> Result<Tensor> {
        let device = &cx.device;
        if let Some(sym) = self.sym.as_ref().filter(|s| s.iter().any(|e| !e.is_const())) {
            let mut elems = Vec::with_capacity(sym.len());
            for e in sym {
                elems.push(crate::ops::layout::reshape(&e.tensor(device, at)?, &[1])?);
            }
            let refs: Vec<&Tensor> = elems.iter().collect();
            let flat = crate::ops::layout::concat(&refs, 0)?;
            let shape: Vec<isize> = self.shape.iter().map(|&d| d as isize).collect();
            return crate::ops::layout::reshape(&flat, &shape);
        }
        cx.uploads.borrow_mut().push((at.to_string(), self.fingerprint()));
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
                            msg: format!("{at}: wgflow computes integers in int32"),
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            (HostData::B(v), _) => CpuData::Bool(v.clone()),
            (HostData::S(_), _) => {
                return Err(Error::Unimplemented {
                    what: "string tensors".into(),
                    msg: at.to_string(),
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
    cx: OpCx,
    /// Per run of the signature (a trace runs it twice, on two stand-in
    /// sizes): the host values uploaded as constants, by the node reading
    /// them (see [`Ctx::check_traces`]).
    logs: Vec<Vec<(String, u64)>>,
    /// Function body nodes inlined in this run (see [`MAX_INLINED_NODES`]).
    inlined: usize,
    /// Whether a function (or one it calls) changes a variable.
    fn_mutates: HashMap<String, bool>,
}

/// What evaluating one op needs of the load besides the node: the device,
/// the budget of elements that a few bytes of the file may expand to
/// (repeated constant values, `Fill`), and the log of host values uploaded
/// as constants.
struct OpCx {
    device: Device,
    expand_left: Cell<usize>,
    uploads: RefCell<Vec<(String, u64)>>,
}

impl OpCx {
    fn new(device: &Device) -> OpCx {
        OpCx {
            device: device.clone(),
            expand_left: Cell::new(MAX_HOST_EXPANSION),
            uploads: RefCell::new(Vec::new()),
        }
    }

    /// A new run: the budget full, the log empty.
    fn reset(&self) {
        self.expand_left.set(MAX_HOST_EXPANSION);
        self.uploads.borrow_mut().clear();
    }

    /// Takes `n` elements of `elem` bytes from the budget, or
    /// `Error::OutOfMemory` (TF's `ResourceExhausted`) naming the node.
    fn expand(&self, n: usize, elem: usize, node: &str, op: &str) -> Result<()> {
        let left = self.expand_left.get();
        if n > left {
            let bytes = |k: usize| k.saturating_mul(elem) as u64;
            return Err(Error::OutOfMemory {
                device: format!(
                    "the host (saved_model.load: node '{node}' ({op}) expands to {n} elements; the constants \
                     and fills of one signature may expand to {MAX_HOST_EXPANSION} elements in all)"
                ),
                requested: bytes(n),
                in_use: bytes(MAX_HOST_EXPANSION - left),
                limit: bytes(MAX_HOST_EXPANSION),
            });
        }
        self.expand_left.set(left - n);
        Ok(())
    }
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
    /// Whether evaluating a node would change a variable (see
    /// [`Ctx::mutates`]).
    mutating: HashMap<&'a str, bool>,
}

const MAX_CALL_DEPTH: usize = 64;

/// Function body nodes one run of a signature may inline: calls that fan
/// out (each function calling the next twice) grow exponentially.
const MAX_INLINED_NODES: usize = 1 << 20;

/// Elements that the constants with repeated values and the `Fill`s of one
/// run of a signature may expand to, in all (1 GiB of float32).
const MAX_HOST_EXPANSION: usize = 1 << 28;

/// Ops that change a variable (or another resource): reached through a
/// control input, they must run before the node that waits on them.
fn is_mutating(op: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "Assign",
        "ResourceApply",
        "ResourceSparseApply",
        "Apply",
        "SparseApply",
        "ResourceScatter",
        "Scatter",
        "ResourceStridedSliceAssign",
        "StridedSliceAssign",
        "LookupTableInsert",
        "LookupTableImport",
        "LookupTableRemove",
    ];
    const EXACT: &[&str] = &["CountUpTo", "ResourceCountUpTo", "DestroyResourceOp"];
    // ScatterNd and ScatterNdNonAliasingAdd build a new tensor: they change nothing.
    let functional = op == "ScatterNd" || op.starts_with("ScatterNdNonAliasing");
    !functional && (PREFIXES.iter().any(|p| op.starts_with(p)) || EXACT.contains(&op))
}

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
        self.cx.reset();
        self.inlined = 0;
        let out = self.run_signature_inner(placeholders, args, outs);
        let log = std::mem::take(&mut *self.cx.uploads.borrow_mut());
        self.logs.push(log);
        out
    }

    fn run_signature_inner(
        &mut self,
        placeholders: &[String],
        args: &[Tensor],
        outs: &[String],
    ) -> Result<Vec<Tensor>> {
        let main: HashMap<&'a str, &'a NodeDef> = self.main.clone();
        let mut scope = Scope {
            nodes: main,
            in_function: false,
            args: HashMap::new(),
            memo: HashMap::new(),
            depth: 0,
            mutating: HashMap::new(),
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
                Val::H(h) => h.upload(&self.cx, &format!("output '{name}'")),
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
                for inp in &node.input {
                    // A control input (`^node`) runs first when it changes
                    // a variable; others (savers, initializers, NoOps over
                    // reads) are not needed for the values.
                    let (control, r) = match inp.strip_prefix('^') {
                        Some(r) => (true, r),
                        None => (false, inp.as_str()),
                    };
                    let (dep, _, _) = parse_ref(r, scope.in_function)?;
                    if scope.args.contains_key(dep) {
                        continue;
                    }
                    let Some((&dep, _)) = scope.nodes.get_key_value(dep) else {
                        return Err(Error::format(
                            &self.dir.join("saved_model.pb"),
                            format!("node '{}' reads '{inp}', which names no node", node.name),
                        ));
                    };
                    if scope.memo.contains_key(dep) || (control && !self.mutates(scope, dep)) {
                        continue;
                    }
                    pending = Some(dep);
                    break;
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

    /// Whether evaluating node `start` of `scope` (its data and control
    /// inputs, the functions it calls) would change a variable.
    fn mutates(&mut self, scope: &mut Scope<'a>, start: &'a str) -> bool {
        if let Some(&m) = scope.mutating.get(start) {
            return m;
        }
        let dep_of = |inp: &str| -> String {
            let r = inp.strip_prefix('^').unwrap_or(inp);
            r.split(':').next().unwrap_or_default().to_string()
        };
        // Depth first, each node decided after its inputs; a cycle's back
        // edge counts as not mutating (evaluation reports the cycle).
        let mut stack: Vec<(&'a str, bool)> = vec![(start, false)];
        let mut entered: HashSet<&'a str> = HashSet::new();
        while let Some((name, inputs_done)) = stack.pop() {
            if scope.mutating.contains_key(name) {
                continue;
            }
            let Some(&node) = scope.nodes.get(name) else {
                continue;
            };
            if !inputs_done {
                if !entered.insert(name) {
                    continue;
                }
                stack.push((name, true));
                for inp in &node.input {
                    if let Some((&d, _)) = scope.nodes.get_key_value(dep_of(inp).as_str()) {
                        if !scope.mutating.contains_key(d) && !entered.contains(d) {
                            stack.push((d, false));
                        }
                    }
                }
                continue;
            }
            let mut m = is_mutating(&node.op);
            if !m && matches!(node.op.as_str(), "StatefulPartitionedCall" | "PartitionedCall") {
                m = func_attr(node).is_some_and(|f| self.function_mutates(f, 0));
            }
            m = m
                || node
                    .input
                    .iter()
                    .any(|inp| scope.mutating.get(dep_of(inp).as_str()) == Some(&true));
            scope.mutating.insert(name, m);
        }
        scope.mutating.get(start).copied().unwrap_or(false)
    }

    /// Whether function `name` (or one it calls) has an op that changes a
    /// variable: TensorFlow runs every such op of a called function.
    fn function_mutates(&mut self, name: &str, depth: usize) -> bool {
        if let Some(&m) = self.fn_mutates.get(name) {
            return m;
        }
        let Some(f) = self.functions.get(name).copied() else {
            return false;
        };
        if depth > MAX_CALL_DEPTH {
            return false;
        }
        // A recursive call meets `false` here; the call depth limit reports it.
        self.fn_mutates.insert(name.to_string(), false);
        let m = f.node_def.iter().any(|n| {
            is_mutating(&n.op)
                || (matches!(n.op.as_str(), "StatefulPartitionedCall" | "PartitionedCall")
                    && func_attr(n).is_some_and(|g| self.function_mutates(g, depth + 1)))
        });
        self.fn_mutates.insert(name.to_string(), m);
        m
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
        self.inlined = self.inlined.saturating_add(f.node_def.len());
        if self.inlined > MAX_INLINED_NODES {
            return Err(Error::arg(
                OP,
                format!(
                    "node '{}' calls function '{name}', past {MAX_INLINED_NODES} function nodes inlined for one \
                     signature (functions that call others several times grow exponentially)",
                    node.name
                ),
            ));
        }
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
            mutating: HashMap::new(),
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
        let out = self.eval(&mut scope, &refs)?;
        // The function's side effects that no output waits on (TF runs its
        // control outputs with every call).
        let mut effects: Vec<&'a String> = f.control_ret.values().collect();
        effects.sort();
        let mut run = Vec::new();
        for e in effects {
            let node = parse_ref(e, true)?.0;
            if let Some((&n, _)) = scope.nodes.get_key_value(node) {
                if self.mutates(&mut scope, n) {
                    run.push(n.to_string());
                }
            }
        }
        if !run.is_empty() {
            self.eval(&mut scope, &run)?;
        }
        Ok(out)
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
            "AssignVariableOp" | "AssignAddVariableOp" | "AssignSubVariableOp" => {
                let var = match x.first() {
                    Some(Val::R(v)) => v.clone(),
                    _ => {
                        return Err(Error::arg(
                            OP,
                            format!("node '{}': {} needs a variable handle", node.name, node.op),
                        ));
                    }
                };
                let value = tensor(arg(&x, 1, node)?, &self.cx, node)?;
                let new = match node.op.as_str() {
                    "AssignVariableOp" => value,
                    op => {
                        let b = if op == "AssignAddVariableOp" {
                            BinaryOp::Add
                        } else {
                            BinaryOp::Sub
                        };
                        crate::ops::apply(Op::Binary(b), &[&var.value(), &value]).map_err(|e| at_node(e, node))?
                    }
                };
                var.assign(&new).map_err(|e| at_node(e, node))?;
                Ok(vec![Val::Nothing])
            }
            _ => eval_op(node, x, &self.cx).map_err(|e| at_node(e, node)),
        }
    }

    /// After a trace: where the two runs on different stand-in sizes
    /// uploaded different constants, a value computed from the unknown
    /// dimensions became data without being computed per call. An error
    /// naming the first node that read one (the traced graph would compute
    /// with the stand-in's value at every size).
    fn check_traces(&self) -> Result<()> {
        let [a, b] = self.logs.as_slice() else {
            return Ok(());
        };
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return Err(Error::Unimplemented {
                    what: "a value computed from the input's unknown dimensions, used as data".into(),
                    msg: format!(
                        "{} reads a constant that differs between the sizes traced: the graph would keep one \
                         size's value at every size",
                        x.0
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `e` with the TF node and op it came from (once).
fn at_node(e: Error, node: &NodeDef) -> Error {
    let tag = format!("node '{}' ({})", node.name, node.op);
    let named = format!("node '{}'", node.name);
    let add = |msg: String| {
        if msg.contains(&named) {
            msg
        } else if msg.is_empty() {
            tag.clone()
        } else {
            format!("{tag}: {msg}")
        }
    };
    match e {
        Error::Unimplemented { what, msg } => Error::Unimplemented { what, msg: add(msg) },
        Error::Shape { op, shapes, msg } => Error::Shape {
            op,
            shapes,
            msg: add(msg),
        },
        Error::DType { op, got, msg } => Error::DType { op, got, msg: add(msg) },
        Error::InvalidArgument { op, msg } => Error::InvalidArgument { op, msg: add(msg) },
        Error::ReadInTrace { op, msg } => Error::ReadInTrace { op, msg: add(msg) },
        Error::Io { path, msg, source } => Error::Io {
            path,
            msg: add(msg),
            source,
        },
        Error::OutOfMemory {
            device,
            requested,
            in_use,
            limit,
        } => Error::OutOfMemory {
            device: if device.contains(&named) {
                device
            } else {
                format!("{device} ({tag})")
            },
            requested,
            in_use,
            limit,
        },
        e => e,
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

fn tensor(v: &Val, cx: &OpCx, node: &NodeDef) -> Result<Tensor> {
    match v {
        Val::T(t) => Ok(t.clone()),
        Val::H(h) => h.upload(cx, &format!("node '{}' ({})", node.name, node.op)),
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
            // NHWC: [batch before, after, top, bottom, left, right, channel before, after].
            let p = attr_ints(node, "explicit_paddings").unwrap_or_default();
            let u: Vec<usize> = p.iter().filter_map(|&x| usize::try_from(x).ok()).collect();
            match u.as_slice() {
                [0, 0, top, bottom, left, right, 0, 0] => Ok(Padding::Explicit {
                    top: *top,
                    bottom: *bottom,
                    left: *left,
                    right: *right,
                }),
                _ if u.len() == 8 && p.len() == 8 => Err(unimpl(format!(
                    "explicit_paddings {p:?} (padding of the batch or channel dimension)"
                ))),
                _ => Err(Error::arg(
                    OP,
                    format!(
                        "node '{}': explicit_paddings {p:?} is not 8 non-negative values",
                        node.name
                    ),
                )),
            }
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

/// `[1, h, w, 1]` → `[h, w]`. A batch or channel entry other than 1 is
/// Unimplemented (as in TensorFlow's kernels), naming the attribute.
fn hw(node: &NodeDef, name: &str, default: usize) -> Result<[usize; 2]> {
    let v = attr_ints(node, name).unwrap_or_else(|| vec![1, default as i64, default as i64, 1]);
    let get = |i: usize| v.get(i).and_then(|&x| usize::try_from(x).ok()).filter(|&x| x > 0);
    match (get(0), get(1), get(2), get(3), v.len()) {
        (Some(1), Some(h), Some(w), Some(1), 4) => Ok([h, w]),
        (Some(_), Some(_), Some(_), Some(_), 4) => Err(unimpl(format!(
            "{} {name} {v:?}: an entry other than 1 for the batch or channel dimension (NHWC)",
            node.op
        ))),
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
        "RealDiv" | "Div" => BinaryOp::Div,
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

/// The integer ops computed on the host for shape arithmetic.
const INT_OPS: [&str; 12] = [
    "Add",
    "AddV2",
    "Sub",
    "Mul",
    "Div",
    "TruncateDiv",
    "FloorDiv",
    "FloorMod",
    "TruncateMod",
    "Mod",
    "Maximum",
    "Minimum",
];

/// TensorFlow's integer `op` on `p` and `q`; `None` where it overflows or
/// divides by zero. `Div` and `TruncateDiv` truncate toward zero (-7 / 2 =
/// -3), `FloorDiv` floors (7 // -2 = -4), `FloorMod` takes the divisor's
/// sign (7 % -2 = -1), `TruncateMod` the dividend's.
fn int_op(op: &str, p: i64, q: i64) -> Option<i64> {
    let floor_adjust = |r: i64| r != 0 && ((r < 0) != (q < 0));
    match op {
        "Add" | "AddV2" => p.checked_add(q),
        "Sub" => p.checked_sub(q),
        "Mul" => p.checked_mul(q),
        "Div" | "TruncateDiv" => p.checked_div(q),
        "FloorDiv" => {
            let d = p.checked_div(q)?;
            if floor_adjust(p.checked_rem(q)?) {
                d.checked_sub(1)
            } else {
                Some(d)
            }
        }
        "FloorMod" => {
            let r = p.checked_rem(q)?;
            if floor_adjust(r) { r.checked_add(q) } else { Some(r) }
        }
        "TruncateMod" | "Mod" => p.checked_rem(q),
        "Maximum" => Some(p.max(q)),
        "Minimum" => Some(p.min(q)),
        _ => None,
    }
}

/// Host arithmetic for shape computations: integer operands of the same
/// shape, or one a single value. `None` where it does not apply (the
/// operands then go to the device).
fn host_binary(op: &str, a: &Host, b: &Host, node: &NodeDef) -> Result<Option<Host>> {
    if !INT_OPS.contains(&op) {
        return Ok(None);
    }
    let (HostData::I(x), HostData::I(y)) = (&a.data, &b.data) else {
        return Ok(None);
    };
    // Same shapes, or one side a single value of no higher rank.
    let shape = if a.shape == b.shape || (y.len() == 1 && b.shape.len() <= a.shape.len()) {
        a.shape.clone()
    } else if x.len() == 1 && a.shape.len() <= b.shape.len() {
        b.shape.clone()
    } else {
        return Ok(None);
    };
    let n = x.len().max(y.len());
    let get = |v: &[i64], i: usize| v.get(if v.len() == 1 { 0 } else { i }).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (p, q) = (get(x, i), get(y, i));
        out.push(int_op(op, p, q).ok_or_else(|| {
            Error::arg(
                OP,
                format!(
                    "node '{}': integer {op} of {p} and {q} overflows or divides by 0",
                    node.name
                ),
            )
        })?);
    }
    let sym =
        (a.sym.is_some() || b.sym.is_some()).then(|| (0..n).map(|i| Sym::bin(op, a.sym_at(i), b.sym_at(i))).collect());
    Ok(Some(Host::ints_sym(a.dtype, shape, out, sym)))
}

/// TensorFlow's binary ops that wgflow composes from its own (floor and
/// truncating division and remainder) or maps to one `BinaryOp`, on
/// tensors of one dtype; `None` for other ops.
fn tensor_binary(op: &str, a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    use crate::ops::apply as ap;
    let bin = |o: BinaryOp, x: &Tensor, y: &Tensor| ap(Op::Binary(o), &[x, y]);
    let cmp = |o: CmpOp, x: &Tensor, y: &Tensor| ap(Op::Compare(o), &[x, y]);
    let un = |o: UnaryOp, x: &Tensor| ap(Op::Unary(o), &[x]);
    let float = a.dtype().is_float();
    if !matches!(op, "FloorDiv" | "FloorMod" | "TruncateDiv" | "TruncateMod" | "Mod") {
        return match binary(op) {
            Some(o) => Ok(Some(bin(o, a, b)?)),
            None => Ok(None),
        };
    }
    if a.dtype() == DType::Bool {
        return Err(Error::dtype("saved_model.load", &[a.dtype()], format!("{op} of bool")));
    }
    let zero = crate::ops::full(&[], 0.0, a.dtype(), a.device())?;
    let one = crate::ops::full(&[], 1.0, a.dtype(), a.device())?;
    // Truncating quotient: int32 division truncates; floats round toward 0.
    let q = bin(BinaryOp::Div, a, b)?;
    let q = if float {
        let neg = cmp(CmpOp::Less, &q, &zero)?;
        ap(Op::Where, &[&neg, &un(UnaryOp::Ceil, &q)?, &un(UnaryOp::Floor, &q)?])?
    } else {
        q
    };
    let r = bin(BinaryOp::Sub, a, &bin(BinaryOp::Mul, &q, b)?)?;
    // Floor where the remainder is non-zero with the divisor's other sign.
    let adjust = || -> Result<Tensor> {
        let nz = cmp(CmpOp::NotEqual, &r, &zero)?;
        let signs = bin(
            BinaryOp::LogicalXor,
            &cmp(CmpOp::Less, &r, &zero)?,
            &cmp(CmpOp::Less, b, &zero)?,
        )?;
        bin(BinaryOp::LogicalAnd, &nz, &signs)
    };
    Ok(Some(match op {
        "TruncateDiv" => q,
        "TruncateMod" | "Mod" => r,
        "FloorDiv" if float => un(UnaryOp::Floor, &bin(BinaryOp::Div, a, b)?)?,
        "FloorDiv" => ap(Op::Where, &[&adjust()?, &bin(BinaryOp::Sub, &q, &one)?, &q])?,
        _ => ap(Op::Where, &[&adjust()?, &bin(BinaryOp::Add, &r, b)?, &r])?,
    }))
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
                format!(
                    "node '{}': slice index {} of dimension 0 out of bounds (size {len})",
                    node.name, begin[0]
                ),
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
    let sym = h
        .sym
        .as_ref()
        .map(|s| idx.iter().filter_map(|&i| s.get(i).cloned()).collect());
    Ok(Host {
        dtype: h.dtype,
        shape: if shrink { vec![] } else { vec![idx.len()] },
        data,
        sym,
    })
}

/// The TensorFlow op of `node` on wgflow's ops.
fn eval_op(node: &NodeDef, x: Vec<Val>, cx: &OpCx) -> Result<Vec<Val>> {
    let device = &cx.device;
    let op = node.op.as_str();
    let one = |v: Val| Ok(vec![v]);
    let t = |i: usize| -> Result<Tensor> { tensor(arg(&x, i, node)?, cx, node) };
    if let Some(u) = unary(op, node) {
        let a = t(0)?;
        return one(apply(Op::Unary(u), &[&a])?);
    }
    if let Some(c) = compare(op) {
        let (a, b) = (t(0)?, t(1)?);
        return one(apply(Op::Compare(c), &[&a, &b])?);
    }
    if binary(op).is_some() || INT_OPS.contains(&op) {
        if let (Val::H(a), Val::H(b)) = (arg(&x, 0, node)?, arg(&x, 1, node)?) {
            if let Some(h) = host_binary(op, a, b, node)? {
                return one(Val::H(h));
            }
        }
        if op == "BiasAdd" {
            nhwc(node)?;
        }
        let (a, b) = (t(0)?, t(1)?);
        return match tensor_binary(op, &a, &b)? {
            Some(y) => one(Val::T(y)),
            None => Err(unimpl(format!("op '{op}'"))),
        };
    }
    match op {
        "Identity" | "StopGradient" | "Snapshot" | "PreventGradient" | "EnsureShape" | "CheckNumerics" => {
            one(arg(&x, 0, node)?.clone())
        }
        "IdentityN" => Ok(x),
        "NoOp" => Ok(vec![Val::Nothing]),
        "Const" => match attr(node, "value") {
            Some(Value::Tensor(tp)) => one(Val::H(Host::from_proto(tp, &node.name, cx)?)),
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
            let v = arg(&x, 0, node)?;
            let s = shape_of(v, node)?;
            let dtype = attr_type(node, "out_type").unwrap_or(dt::INT32);
            // A tensor's dimensions may be a trace's stand-ins: keep how
            // they follow from it (a variable's or a constant's are fixed).
            let dims: Option<Vec<Sym>> = match v {
                Val::T(t) => Some((0..s.len()).map(|i| Sym::Dim(t.clone(), i)).collect()),
                _ => None,
            };
            let ints = |v: &[usize]| -> Result<Vec<i64>> {
                v.iter()
                    .map(|&d| i64::try_from(d).map_err(|_| Error::arg(OP, format!("dimension {d} overflows"))))
                    .collect()
            };
            let h = match op {
                "Shape" => Host::ints_sym(dtype, vec![s.len()], ints(&s)?, dims),
                "Size" => {
                    let n = s
                        .iter()
                        .try_fold(1usize, |a, &d| a.checked_mul(d))
                        .ok_or_else(|| Error::arg(OP, format!("the size of {s:?} overflows")))?;
                    let sym = dims.map(|d| vec![d.into_iter().fold(Sym::Const(1), |acc, e| Sym::bin("Mul", acc, e))]);
                    Host::ints_sym(dtype, vec![], ints(&[n])?, sym)
                }
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
                    let v = tensor(v, cx, node)?;
                    one(Val::T(tensor_strided_slice(&v, &b, &e, &s, node)?))
                }
            }
        }
        "Pack" => {
            let axis = attr_i(node, "axis").unwrap_or(0);
            // Integer scalars stay on the host (shape vectors); other
            // values (floats) are packed by ops in their own dtype.
            let host_ints = x
                .iter()
                .all(|v| matches!(v, Val::H(h) if h.is_int() && h.shape.is_empty()));
            if host_ints && axis == 0 && !x.is_empty() {
                let mut out = Vec::new();
                let mut sym = Vec::new();
                let mut dtype = dt::INT32;
                for v in &x {
                    let h = host(v, node, "packed value")?;
                    dtype = h.dtype;
                    out.extend(h.as_ints("Pack")?);
                    sym.push(h.sym_at(0));
                }
                return one(Val::H(Host::ints_sym(dtype, vec![out.len()], out, Some(sym))));
            }
            let ts = x.iter().map(|v| tensor(v, cx, node)).collect::<Result<Vec<_>>>()?;
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
        // Split(split_dim, value): `num_split` equal parts along the axis
        // (wgflow's own export of grouped convolutions writes it).
        "Split" => {
            let axis = host(arg(&x, 0, node)?, node, "split dimension")?.as_ints("split_dim")?;
            let v = t(1)?;
            let rank = v.rank() as i64;
            let axis = *axis.first().unwrap_or(&0);
            let d = if axis < 0 { axis + rank } else { axis };
            let n = attr_i(node, "num_split").unwrap_or(1);
            if d < 0 || d >= rank || n < 1 || v.shape()[d as usize] % n as usize != 0 {
                return Err(Error::arg(
                    "Split",
                    format!(
                        "{}: cannot split shape {:?} into {n} equal parts along axis {axis}",
                        node.name,
                        v.shape()
                    ),
                ));
            }
            let (d, n) = (d as usize, n as usize);
            let part = v.shape()[d] / n;
            let mut size = v.shape().to_vec();
            size[d] = part;
            (0..n)
                .map(|i| {
                    let mut begin = vec![0; size.len()];
                    begin[d] = i * part;
                    Ok(Val::T(v.slice(&begin, &size)?))
                })
                .collect()
        }
        "ConcatV2" => {
            let (vals, axis) = x.split_at(x.len().saturating_sub(1));
            let axis = host(arg(axis, 0, node)?, node, "concat axis")?.as_ints("axis")?;
            let axis = *axis.first().unwrap_or(&0);
            let host_ints = vals
                .iter()
                .all(|v| matches!(v, Val::H(h) if h.is_int() && h.shape.len() == 1));
            if host_ints && !vals.is_empty() && matches!(axis, 0 | -1) {
                let mut out = Vec::new();
                let mut sym = Vec::new();
                let mut dtype = dt::INT32;
                for v in vals {
                    let h = host(v, node, "concat value")?;
                    dtype = h.dtype;
                    let ints = h.as_ints("ConcatV2")?;
                    sym.extend((0..ints.len()).map(|i| h.sym_at(i)));
                    out.extend(ints);
                }
                return one(Val::H(Host::ints_sym(dtype, vec![out.len()], out, Some(sym))));
            }
            let ts = vals.iter().map(|v| tensor(v, cx, node)).collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = ts.iter().collect();
            one(Val::T(crate::ops::layout::concat(&refs, axis as isize)?))
        }
        "Reshape" => {
            let s = host(arg(&x, 1, node)?, node, "target shape")?.as_ints("shape")?;
            if let Val::H(h) = arg(&x, 0, node)? {
                if h.is_int() {
                    return one(Val::H(host_reshape(h, &s, node)?));
                }
            }
            one(Val::T(reshape(&t(0)?, &s, node)?))
        }
        "Squeeze" => {
            let a = t(0)?;
            let dims = attr_ints(node, "squeeze_dims").unwrap_or_default();
            let axes: Vec<usize> = dims
                .iter()
                .map(|&d| norm_axis(d, a.rank(), node))
                .collect::<Result<_>>()?;
            for &ax in &axes {
                if a.shape()[ax] != 1 {
                    return Err(Error::arg(
                        OP,
                        format!(
                            "node '{}': can not squeeze dim[{ax}], expected a dimension of 1, got {} (shape {:?})",
                            node.name,
                            a.shape()[ax],
                            a.shape()
                        ),
                    ));
                }
            }
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
            let d = host(arg(&x, 1, node)?, node, "axis")?.as_ints("axis")?;
            let v = arg(&x, 0, node)?;
            let shape = shape_of(v, node)?;
            let ax = norm_axis(*d.first().unwrap_or(&0), shape.len() + 1, node)?;
            let mut s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            s.insert(ax, 1);
            if let Val::H(h) = v {
                if h.is_int() {
                    return one(Val::H(host_reshape(h, &s, node)?));
                }
            }
            one(Val::T(reshape(&t(0)?, &s, node)?))
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
                if matches!(to, dt::INT32 | dt::INT64) && !matches!(h.data, HostData::S(_)) {
                    let sym = h.sym.clone().filter(|_| h.is_int());
                    return one(Val::H(Host::ints_sym(to, h.shape.clone(), h.as_ints("Cast")?, sym)));
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
            let shape = dims_of(&dims, node)?;
            let dtype = wg_dtype(v.dtype).ok_or_else(|| unimpl(format!("Fill of {}", dt::name(v.dtype))))?;
            let n = crate::core::shape::checked_numel(OP, &shape, dtype.size())?;
            cx.expand(n, dtype.size(), &node.name, op)?;
            one(Val::T(crate::ops::full(&shape, value, dtype, device)?))
        }
        "ZerosLike" | "OnesLike" => {
            let a = t(0)?;
            let v = if op == "ZerosLike" { 0.0 } else { 1.0 };
            one(Val::T(crate::ops::full(a.shape(), v, a.dtype(), device)?))
        }
        "BroadcastTo" => {
            let s = host(arg(&x, 1, node)?, node, "broadcast shape")?.as_ints("shape")?;
            let shape = dims_of(&s, node)?;
            one(Val::T(crate::ops::layout::broadcast_to(&t(0)?, &shape)?))
        }
        "Slice" => {
            let a = t(0)?;
            let b = host(arg(&x, 1, node)?, node, "slice begin")?.as_ints("begin")?;
            let s = host(arg(&x, 2, node)?, node, "slice size")?.as_ints("size")?;
            let (begin, size) = slice_bounds(a.shape(), &b, &s, node)?;
            one(Val::T(crate::ops::layout::slice(&a, &begin, &size)?))
        }
        "OneHot" => {
            let idx = t(0)?;
            let depth = host(arg(&x, 1, node)?, node, "one_hot depth")?.as_ints("depth")?;
            let depth = match depth.as_slice() {
                [d] => usize::try_from(*d)
                    .map_err(|_| Error::arg(OP, format!("node '{}': depth {d} is negative", node.name)))?,
                _ => return Err(Error::arg(OP, format!("node '{}': depth must be a scalar", node.name))),
            };
            let scalar = |i: usize, what: &str| -> Result<f64> {
                let h = host(arg(&x, i, node)?, node, what)?;
                match &h.data {
                    HostData::F(v) if v.len() == 1 => Ok(v[0]),
                    HostData::I(v) if v.len() == 1 => Ok(v[0] as f64),
                    HostData::B(v) if v.len() == 1 => Ok(v[0] as u8 as f64),
                    _ => Err(Error::arg(OP, format!("node '{}': {what} must be a scalar", node.name))),
                }
            };
            let (on, off) = (scalar(2, "on_value")?, scalar(3, "off_value")?);
            let axis = attr_i(node, "axis").unwrap_or(-1);
            if axis != -1 && axis != idx.rank() as i64 {
                return Err(unimpl(format!("OneHot with axis {axis} (only the last axis)")));
            }
            let to = attr_type(node, "T").unwrap_or(dt::FLOAT);
            let dtype = wg_dtype(to).ok_or_else(|| unimpl(format!("OneHot of {}", dt::name(to))))?;
            if idx.dtype() != DType::I32 {
                return Err(unimpl(format!("OneHot of {} indices", idx.dtype())));
            }
            one(apply(Op::OneHot { depth, on, off, dtype }, &[&idx])?)
        }
        "Pad" | "PadV2" => {
            let a = t(0)?;
            let p = host(arg(&x, 1, node)?, node, "paddings")?.as_ints("paddings")?;
            if op == "PadV2" {
                let c = host(arg(&x, 2, node)?, node, "constant_values")?;
                let zero = match &c.data {
                    HostData::F(v) => v.iter().all(|&x| x == 0.0),
                    HostData::I(v) => v.iter().all(|&x| x == 0),
                    HostData::B(v) => v.iter().all(|&x| !x),
                    HostData::S(_) => false,
                };
                if !zero {
                    return Err(unimpl("PadV2 with a constant other than 0".into()));
                }
            }
            let rank = a.rank();
            if p.len() != rank.saturating_mul(2) {
                return Err(Error::arg(
                    OP,
                    format!(
                        "node '{}': paddings {p:?} must be [{rank}, 2] for an input of shape {:?}",
                        node.name,
                        a.shape()
                    ),
                ));
            }
            let mut before = Vec::with_capacity(rank);
            let mut shape = Vec::with_capacity(rank);
            for (i, &d) in a.shape().iter().enumerate() {
                let (lo, hi) = (p[2 * i], p[2 * i + 1]);
                let (lo, hi) = match (usize::try_from(lo), usize::try_from(hi)) {
                    (Ok(lo), Ok(hi)) => (lo, hi),
                    _ => {
                        return Err(Error::arg(
                            OP,
                            format!("node '{}': paddings {p:?} must not be negative", node.name),
                        ));
                    }
                };
                let out = d
                    .checked_add(lo)
                    .and_then(|s| s.checked_add(hi))
                    .ok_or_else(|| Error::arg(OP, format!("node '{}': paddings {p:?} overflow", node.name)))?;
                before.push(lo);
                shape.push(out);
            }
            let n = crate::core::shape::checked_numel(OP, &shape, a.dtype().size())?;
            cx.expand(n.saturating_sub(a.numel()), a.dtype().size(), &node.name, op)?;
            one(apply(Op::Pad { before, shape }, &[&a])?)
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
            let s = w.shape().to_vec();
            if s.len() != 4 || a.rank() != 4 {
                return Err(Error::shape(
                    OP,
                    &[a.shape(), &s],
                    format!("node '{}': input and filter must be rank 4", node.name),
                ));
            }
            let groups = if op == "DepthwiseConv2dNative" {
                let out = s[2]
                    .checked_mul(s[3])
                    .ok_or_else(|| Error::shape(OP, &[&s], format!("node '{}': filter too large", node.name)))?;
                w = reshape(&w, &[s[0] as i64, s[1] as i64, 1, out as i64], node)?;
                s[2]
            } else {
                // A filter of fewer input channels than the input: a grouped
                // convolution (TF's Conv2D with groups = in / filter in).
                let (cin, fin) = (a.shape()[3], s[2]);
                if fin == 0 || cin % fin != 0 {
                    return Err(Error::shape(
                        OP,
                        &[a.shape(), &s],
                        format!(
                            "node '{}': the input's {cin} channels are not a multiple of the filter's {fin} input channels",
                            node.name
                        ),
                    ));
                }
                let groups = cin / fin;
                if groups > 1 && s[3] % groups != 0 {
                    return Err(Error::shape(
                        OP,
                        &[a.shape(), &s],
                        format!(
                            "node '{}': the filter's {} output channels are not a multiple of the {groups} groups",
                            node.name, s[3]
                        ),
                    ));
                }
                groups
            };
            let conv = Conv2d {
                strides: hw(node, "strides", 1)?,
                padding: padding(node)?,
                dilations: hw(node, "dilations", 1)?,
                groups,
            };
            one(apply(Op::Conv2d(conv), &[&a, &w])?)
        }
        // `tf.nn.conv2d_transpose` (Keras' Conv2DTranspose): the input's
        // sizes, the filter, the output gradient.
        "Conv2DBackpropInput" => {
            nhwc(node)?;
            let sizes = host(arg(&x, 0, node)?, node, "input sizes")?.as_ints("input_sizes")?;
            let sizes = dims_of(&sizes, node)?;
            let (w, dy) = (t(1)?, t(2)?);
            let fin = w.shape().get(2).copied().unwrap_or(0);
            let groups = match sizes.get(3) {
                Some(&c) if sizes.len() == 4 && fin > 0 && c % fin == 0 => c / fin,
                _ => {
                    return Err(Error::shape(
                        OP,
                        &[&sizes, w.shape()],
                        format!(
                            "node '{}': input sizes must be [batch, height, width, channels], channels a multiple of the filter's in-channels",
                            node.name
                        ),
                    ));
                }
            };
            let conv = Conv2d {
                strides: hw(node, "strides", 1)?,
                padding: padding(node)?,
                dilations: hw(node, "dilations", 1)?,
                groups,
            };
            one(apply(Op::Conv2dInputGrad(conv, sizes), &[&dy, &w])?)
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
                if h.shape.len() == 1 && matches!(axes.as_slice(), [0] | [-1]) {
                    if let HostData::I(v) = &h.data {
                        let (f, init) = if op == "Prod" { ("Mul", 1) } else { ("Add", 0) };
                        let r = v
                            .iter()
                            .try_fold(init, |a, &b| int_op(f, a, b))
                            .ok_or_else(|| Error::arg(OP, format!("node '{}': overflow", node.name)))?;
                        let sym = h
                            .sym
                            .as_ref()
                            .map(|s| vec![s.iter().cloned().fold(Sym::Const(init), |a, e| Sym::bin(f, a, e))]);
                        return one(Val::H(Host::ints_sym(h.dtype, vec![], vec![r], sym)));
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
            let (x0, scale, offset, mean, var) = (t(0)?, t(1)?, t(2)?, t(3)?, t(4)?);
            // T=half with U=float (mixed precision): computed in U, the
            // result cast back to T, as TensorFlow's kernel does.
            let u = scale.dtype();
            let a = if x0.dtype() == u {
                x0.clone()
            } else {
                crate::ops::apply(Op::Cast(u), &[&x0])?
            };
            let eps = attr_f(node, "epsilon").unwrap_or(1e-4) as f64;
            // y = (x - mean) * scale / sqrt(var + eps) + offset
            let e = crate::ops::full(&[], eps, var.dtype(), device)?;
            let ve = crate::ops::apply(Op::Binary(BinaryOp::Add), &[&var, &e])?;
            let inv = crate::ops::apply(Op::Unary(UnaryOp::Rsqrt), &[&ve])?;
            let k = crate::ops::apply(Op::Binary(BinaryOp::Mul), &[&inv, &scale])?;
            let c = crate::ops::apply(Op::Binary(BinaryOp::Sub), &[&a, &mean])?;
            let y = crate::ops::apply(Op::Binary(BinaryOp::Mul), &[&c, &k])?;
            let y = crate::ops::apply(Op::Binary(BinaryOp::Add), &[&y, &offset])?;
            let y = if y.dtype() == x0.dtype() {
                y
            } else {
                crate::ops::apply(Op::Cast(x0.dtype()), &[&y])?
            };
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
                v => tensor(v, cx, node)?,
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

/// Non-negative dimensions from host integers.
fn dims_of(v: &[i64], node: &NodeDef) -> Result<Vec<usize>> {
    v.iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| Error::arg(OP, format!("node '{}': negative dimension in {v:?}", node.name)))
        })
        .collect()
}

/// Host integers in a new shape (one entry may be -1).
fn host_reshape(h: &Host, shape: &[i64], node: &NodeDef) -> Result<Host> {
    let n = h.numel();
    let bad = || {
        Error::arg(
            OP,
            format!("node '{}': cannot reshape {n} values to {shape:?}", node.name),
        )
    };
    let known = shape
        .iter()
        .filter(|&&d| d != -1)
        .try_fold(1usize, |a, &d| usize::try_from(d).ok().and_then(|d| a.checked_mul(d)))
        .ok_or_else(bad)?;
    let infer = shape.iter().filter(|&&d| d == -1).count();
    let dims: Vec<usize> = match infer {
        0 if known == n => shape.iter().map(|&d| d as usize).collect(),
        1 if known != 0 && n % known == 0 => shape
            .iter()
            .map(|&d| if d == -1 { n / known } else { d as usize })
            .collect(),
        _ => return Err(bad()),
    };
    Ok(Host {
        shape: dims,
        ..h.clone()
    })
}

/// `Slice`'s begin and size (-1: to the end) checked against `shape`, as
/// TensorFlow checks them.
fn slice_bounds(shape: &[usize], begin: &[i64], size: &[i64], node: &NodeDef) -> Result<(Vec<usize>, Vec<usize>)> {
    if begin.len() != shape.len() || size.len() != shape.len() {
        return Err(Error::arg(
            OP,
            format!(
                "node '{}': begin {begin:?} and size {size:?} must have one entry per dimension of {shape:?}",
                node.name
            ),
        ));
    }
    let mut b = Vec::with_capacity(shape.len());
    let mut s = Vec::with_capacity(shape.len());
    for (i, &d) in shape.iter().enumerate() {
        let lo = usize::try_from(begin[i]).ok().filter(|&lo| lo <= d);
        let n = match (lo, size[i]) {
            (Some(lo), -1) => Some(d - lo),
            (Some(lo), n) => usize::try_from(n).ok().filter(|&n| n <= d - lo),
            _ => None,
        };
        match (lo, n) {
            (Some(lo), Some(n)) => {
                b.push(lo);
                s.push(n);
            }
            _ => {
                return Err(Error::arg(
                    OP,
                    format!(
                        "node '{}': expected begin {} and size {} in [0, {d}] for dimension {i} of {shape:?}",
                        node.name, begin[i], size[i]
                    ),
                ));
            }
        }
    }
    Ok((b, s))
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
        if m("shrink_axis_mask") & bit != 0 {
            // One index, which must exist (TF: "slice index ... out of bounds").
            let at = norm(begin[i]);
            if at < 0 || at >= d {
                return Err(Error::arg(
                    OP,
                    format!(
                        "node '{}': slice index {} of dimension {i} out of bounds (shape {shape:?})",
                        node.name, begin[i]
                    ),
                ));
            }
            b.push(at as usize);
            size.push(1);
            continue;
        }
        let lo = if m("begin_mask") & bit != 0 {
            0
        } else {
            norm(begin[i]).clamp(0, d)
        };
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
