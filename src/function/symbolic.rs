//! Graphs that serve every shape of an input signature
//! (`tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1])])`).
//!
//! A [`TensorSpec`] may leave dimensions unknown (`None`). Tracing for such
//! a signature runs the closure twice, on zeros of two different stand-in
//! sizes for the unknown dimensions, and compares the two recordings: the
//! values whose dimensions differ get `None` there, and an op whose shape
//! attribute differs keeps it as [`Dim`]s (the size of an argument's
//! dimension, or reshape's `-1`), as TensorFlow's graphs do with `tf.shape`
//! and `-1`. Variables the closure assigns are put back after each trace.
//!
//! A [`ConcreteFunction`] holds that graph. At a call it checks the
//! arguments against the signature, then interprets the graph once per new
//! concrete shape (the op shape rules re-derive every shape, the closure is
//! not called again) while recording; the recording is compiled and its
//! memory planned like any traced graph, and later calls of that shape
//! replay it. A few such graphs are kept (least recently used dropped).
//! SavedModel export writes the graph; SavedModel loading builds one.

use super::Traced;
use super::def::{Dim, Feed, GraphDef, ValueDef};
use super::graph::HostFn;
use super::trace::{host_input, trace_def};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::Op;
use crate::runtime::Device;
use crate::tensor::{Tensor, Variable};
use std::fmt;
use std::sync::{Arc, Mutex};

/// Shape (dimensions may be unknown), dtype and optional name of a
/// function's argument (`tf.TensorSpec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Dimensions; `None` is unknown until a call (`None` in TF, `-1` in a SavedModel).
    pub shape: Vec<Option<usize>>,
    /// Element type.
    pub dtype: DType,
    /// The argument's name (a SavedModel signature's input key).
    pub name: Option<String>,
}

impl TensorSpec {
    /// A spec of `shape` and `dtype`: `TensorSpec::new(&[None, Some(784)], DType::F32)`.
    pub fn new(shape: &[Option<usize>], dtype: DType) -> TensorSpec {
        TensorSpec {
            shape: shape.to_vec(),
            dtype,
            name: None,
        }
    }

    /// The spec with a name.
    pub fn named(mut self, name: &str) -> TensorSpec {
        self.name = Some(name.to_string());
        self
    }

    /// The spec of `t`, every dimension known.
    pub fn of(t: &Tensor) -> TensorSpec {
        TensorSpec::new(&t.shape().iter().map(|&d| Some(d)).collect::<Vec<_>>(), t.dtype())
    }

    /// Whether `t` fits: same dtype, rank, and every known dimension.
    pub fn is_compatible_with(&self, t: &Tensor) -> bool {
        t.dtype() == self.dtype
            && t.rank() == self.shape.len()
            && self.shape.iter().zip(t.shape()).all(|(s, &d)| s.is_none_or(|s| s == d))
    }

    /// `Ok` when `t` fits; otherwise an error naming the argument (`what`),
    /// the spec and what it got.
    pub fn check(&self, op: &'static str, what: &str, t: &Tensor) -> Result<()> {
        if self.is_compatible_with(t) {
            return Ok(());
        }
        let got = format!("{}{:?}", t.dtype(), t.shape());
        if t.dtype() != self.dtype {
            return Err(Error::DType {
                op,
                got: vec![t.dtype()],
                msg: format!("{what} expects {self}, got {got}"),
            });
        }
        Err(Error::Shape {
            op,
            shapes: vec![t.shape().to_vec()],
            msg: format!("{what} expects {self}, got {got}"),
        })
    }
}

impl fmt::Display for TensorSpec {
    /// `float32[?, 28, 28, 1]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
            .collect();
        write!(f, "{}[{}]", self.dtype, dims.join(", "))
    }
}

/// Graphs kept per concrete shape before the least recently used is dropped.
const SHAPES_KEPT: usize = 16;

/// A graph for one input signature whose unknown dimensions it serves at
/// every size (TensorFlow's `ConcreteFunction`); see the module docs.
pub struct ConcreteFunction {
    name: String,
    def: GraphDef,
    inputs: Vec<TensorSpec>,
    outputs: Vec<String>,
    variables: Vec<Variable>,
    captures: Vec<Tensor>,
    hosts: Vec<Arc<Mutex<HostFn>>>,
    device: Device,
    graphs: Traced,
}

impl fmt::Debug for ConcreteFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcreteFunction")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("device", &self.device)
            .finish()
    }
}

impl ConcreteFunction {
    /// Traces `f` for `inputs` (see the module docs) on `device`. Outputs
    /// are named `output_0`, `output_1`, ... (rename with
    /// [`ConcreteFunction::with_output_names`]); inputs take their spec's
    /// name, else `input_<i>`.
    pub fn trace(
        name: &str,
        inputs: &[TensorSpec],
        device: &Device,
        f: impl FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<ConcreteFunction> {
        ConcreteFunction::trace_with(name, inputs, device, false, f)
    }

    /// [`ConcreteFunction::trace`] for inputs that share their first
    /// dimension (a model's inputs share the batch): each unknown first
    /// dimension takes the same stand-in sizes, so ops that join inputs
    /// (a concatenation of two towers) trace, and shape attributes that
    /// follow the batch follow the first input's.
    pub fn trace_batched(
        name: &str,
        inputs: &[TensorSpec],
        device: &Device,
        f: impl FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<ConcreteFunction> {
        ConcreteFunction::trace_with(name, inputs, device, true, f)
    }

    fn trace_with(
        name: &str,
        inputs: &[TensorSpec],
        device: &Device,
        shared_batch: bool,
        mut f: impl FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<ConcreteFunction> {
        let unknown: Vec<(usize, usize)> = inputs
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.shape
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.is_none())
                    .map(move |(a, _)| (i, a))
            })
            .collect();
        // Two stand-in sizes per unknown dimension, distinct from each other
        // and from every other unknown's, so that an attribute that follows
        // one of them can be told which.
        const A: [usize; 8] = [11, 13, 17, 19, 23, 29, 31, 37];
        const B: [usize; 8] = [41, 43, 47, 53, 59, 61, 67, 71];
        if unknown.len() > A.len() {
            return Err(Error::arg(
                "function",
                format!(
                    "{name}: at most {} unknown dimensions are supported, got {}",
                    A.len(),
                    unknown.len()
                ),
            ));
        }
        let sizes = |table: &[usize; 8]| -> Vec<Vec<usize>> {
            inputs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.shape
                        .iter()
                        .enumerate()
                        .map(|(a, d)| match d {
                            Some(d) => *d,
                            // The batch: the first unknown first dimension's sizes.
                            None if shared_batch && a == 0 => {
                                unknown.iter().position(|&(_, b)| b == 0).map_or(1, |k| table[k])
                            }
                            None => unknown.iter().position(|&u| u == (i, a)).map_or(1, |k| table[k]),
                        })
                        .collect()
                })
                .collect()
        };
        let (sa, sb) = (sizes(&A), sizes(&B));
        let standins = |shapes: &[Vec<usize>]| -> Result<Vec<Tensor>> {
            shapes
                .iter()
                .zip(inputs)
                .map(|(s, spec)| crate::ops::zeros(s, spec.dtype, device))
                .collect()
        };
        let (da, bind) = trace_def(&standins(&sa)?, &mut f)?;
        let def = if unknown.is_empty() {
            da
        } else {
            let (db, bind_b) = trace_def(&standins(&sb)?, &mut f)?;
            let def = generalize(name, da, &db, &sa, &sb)?;
            same_captures(name, &bind.captures, &bind_b.captures)?;
            def
        };
        let outputs = (0..def.outputs.len()).map(|i| format!("output_{i}")).collect();
        let hosts = bind
            .hosts
            .into_iter()
            .map(|h| h.map(|h| Arc::new(Mutex::new(h))))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::arg("function", format!("{name}: a host input was taken")))?;
        ConcreteFunction::build(name, def, inputs, outputs, bind.variables, bind.captures, hosts, device)
    }

    /// A function of `def` (unknown dimensions allowed, shape attributes as
    /// [`Dim`]s) with its variables and captured constants bound, as a
    /// SavedModel loader makes it. `inputs` are the arguments' specs, in
    /// the order of `def`'s `Feed::Arg`s; `outputs` name `def.outputs`.
    pub fn from_def(
        name: &str,
        def: GraphDef,
        inputs: Vec<TensorSpec>,
        outputs: Vec<String>,
        variables: Vec<Variable>,
        captures: Vec<Tensor>,
        device: &Device,
    ) -> Result<ConcreteFunction> {
        if !def.host_inputs.is_empty() {
            return Err(Error::arg(
                "function",
                format!("{name}: host inputs cannot be bound from a GraphDef"),
            ));
        }
        ConcreteFunction::build(name, def, &inputs, outputs, variables, captures, Vec::new(), device)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        name: &str,
        def: GraphDef,
        inputs: &[TensorSpec],
        outputs: Vec<String>,
        variables: Vec<Variable>,
        captures: Vec<Tensor>,
        hosts: Vec<Arc<Mutex<HostFn>>>,
        device: &Device,
    ) -> Result<ConcreteFunction> {
        let bad = |msg: String| Error::arg("function", format!("{name}: {msg}"));
        if def.arguments().len() != inputs.len() {
            return Err(bad(format!(
                "the graph has {} arguments but the signature {} inputs",
                def.arguments().len(),
                inputs.len()
            )));
        }
        if outputs.len() != def.outputs.len() {
            return Err(bad(format!(
                "{} output names for {} outputs",
                outputs.len(),
                def.outputs.len()
            )));
        }
        if variables.len() != def.variables.len() || captures.len() != def.captures.len() {
            return Err(bad("the variables or captures do not match the graph".into()));
        }
        check_def(name, &def)?;
        let inputs = inputs
            .iter()
            .enumerate()
            .map(|(i, s)| TensorSpec {
                name: Some(s.name.clone().unwrap_or_else(|| format!("input_{i}"))),
                ..s.clone()
            })
            .collect();
        Ok(ConcreteFunction {
            name: name.to_string(),
            def,
            inputs,
            outputs,
            variables,
            captures,
            hosts,
            device: device.clone(),
            graphs: Traced::bounded(name, SHAPES_KEPT),
        })
    }

    /// Renames the outputs (a SavedModel signature's output keys).
    pub fn with_output_names(mut self, names: &[&str]) -> Result<ConcreteFunction> {
        if names.len() != self.outputs.len() {
            return Err(Error::arg(
                "function",
                format!(
                    "{}: {} output names for {} outputs",
                    self.name,
                    names.len(),
                    self.outputs.len()
                ),
            ));
        }
        self.outputs = names.iter().map(|s| s.to_string()).collect();
        Ok(self)
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The graph, with unknown dimensions (`None`) and symbolic attributes.
    pub fn def(&self) -> &GraphDef {
        &self.def
    }

    /// The arguments' specs, each named.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// The outputs' names, in order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// The outputs' specs (named), as far as the graph knows their shapes.
    pub fn outputs(&self) -> Vec<TensorSpec> {
        self.def
            .outputs
            .iter()
            .zip(&self.outputs)
            .map(|(&v, n)| {
                let ValueDef { shape, dtype } = &self.def.values[v];
                TensorSpec::new(shape, *dtype).named(n)
            })
            .collect()
    }

    /// The variables the graph reads or assigns, in `def().variables` order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The constants captured while tracing, in `def().captures` order.
    pub fn captures(&self) -> &[Tensor] {
        &self.captures
    }

    /// The device the function runs on (its variables' device).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Concrete shapes compiled so far (at most a few are kept).
    pub fn compiled_shapes(&self) -> usize {
        self.graphs.graphs.len()
    }

    /// The graph compiled for `args`' shapes, once a call has compiled
    /// one ([`Graph::describe`](super::Graph::describe) lists its kernels).
    pub fn graph(&self, args: &[Tensor]) -> Option<&super::Graph> {
        self.graphs.graph(args)
    }

    /// Runs the function on `args`, which must fit the input signature; an
    /// argument on another device is copied to the function's.
    pub fn call(&mut self, args: &[Tensor]) -> Result<Vec<Tensor>> {
        if args.len() != self.inputs.len() {
            return Err(Error::arg(
                "function",
                format!(
                    "{} takes {} arguments, got {}",
                    self.name,
                    self.inputs.len(),
                    args.len()
                ),
            ));
        }
        let mut moved = Vec::with_capacity(args.len());
        for (spec, a) in self.inputs.iter().zip(args) {
            let what = format!("{} input '{}'", self.name, spec.name.as_deref().unwrap_or("?"));
            spec.check("function", &what, a)?;
            moved.push(if a.device() == &self.device {
                a.clone()
            } else {
                a.to_device(&self.device)?
            });
        }
        let (def, vars, caps, hosts, device) = (&self.def, &self.variables, &self.captures, &self.hosts, &self.device);
        self.graphs
            .call(&moved, |a| interpret(def, vars, caps, hosts, device, a))
    }
}

/// Checks what a call relies on: feeds, nodes and outputs refer to values
/// that exist, each value defined once, inputs defined before use.
fn check_def(name: &str, def: &GraphDef) -> Result<()> {
    let bad = |msg: String| Error::arg("function", format!("{name}: malformed graph: {msg}"));
    let n = def.values.len();
    let mut defined = vec![false; n];
    let define = |v: usize, defined: &mut Vec<bool>| -> Result<()> {
        match defined.get_mut(v) {
            Some(d) if !*d => {
                *d = true;
                Ok(())
            }
            Some(_) => Err(bad(format!("value {v} is defined twice"))),
            None => Err(bad(format!("value {v} does not exist ({n} values)"))),
        }
    };
    for (v, f) in &def.feeds {
        define(*v, &mut defined)?;
        let ok = match f {
            Feed::Arg(_) => true,
            Feed::Variable(i) => *i < def.variables.len(),
            Feed::Capture(i) => *i < def.captures.len(),
            Feed::Host(i) => *i < def.host_inputs.len(),
        };
        if !ok {
            return Err(bad(format!("feed {f:?} refers to nothing")));
        }
    }
    for (i, node) in def.nodes.iter().enumerate() {
        for &v in &node.inputs {
            if !defined.get(v).copied().unwrap_or(false) {
                return Err(bad(format!(
                    "node {i} ({}) reads value {v} before it is defined",
                    node.op.name()
                )));
            }
        }
        if !node.op.arity().contains(&node.inputs.len()) {
            return Err(bad(format!(
                "node {i} ({}) has {} inputs",
                node.op.name(),
                node.inputs.len()
            )));
        }
        if node.outputs.is_empty() {
            return Err(bad(format!("node {i} ({}) has no outputs", node.op.name())));
        }
        for &v in &node.outputs {
            define(v, &mut defined)?;
        }
    }
    for &v in def.outputs.iter().chain(def.assigns.iter().map(|(_, v)| v)) {
        if !defined.get(v).copied().unwrap_or(false) {
            return Err(bad(format!("output value {v} is never defined")));
        }
    }
    if def.assigns.iter().any(|(var, _)| *var >= def.variables.len()) {
        return Err(bad("an assignment names a variable that does not exist".into()));
    }
    Ok(())
}

/// Runs `def` op by op on `args` (inside a trace, which records it).
fn interpret(
    def: &GraphDef,
    vars: &[Variable],
    caps: &[Tensor],
    hosts: &[Arc<Mutex<HostFn>>],
    device: &Device,
    args: &[Tensor],
) -> Result<Vec<Tensor>> {
    let mut vals: Vec<Option<Tensor>> = vec![None; def.values.len()];
    let missing = || Error::arg("function", "a feed of the graph is not bound");
    for (v, feed) in &def.feeds {
        let t = match feed {
            Feed::Arg(i) => args.get(*i).cloned().ok_or_else(missing)?,
            Feed::Variable(i) => vars.get(*i).ok_or_else(missing)?.value(),
            Feed::Capture(i) => caps.get(*i).cloned().ok_or_else(missing)?,
            Feed::Host(i) => {
                let h = hosts.get(*i).ok_or_else(missing)?.clone();
                let shape = def
                    .host_inputs
                    .get(*i)
                    .and_then(ValueDef::concrete)
                    .ok_or_else(|| Error::arg("function", "a host input has unknown dimensions"))?;
                host_input(&shape, device, move || {
                    let mut f = h.lock().unwrap_or_else(|p| p.into_inner());
                    f()
                })?
            }
        };
        if let Some(slot) = vals.get_mut(*v) {
            *slot = Some(t);
        }
    }
    for node in &def.nodes {
        let inputs: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|&v| vals.get(v).and_then(Option::as_ref).ok_or_else(missing))
            .collect::<Result<_>>()?;
        let op = match &node.dims {
            None => node.op.clone(),
            Some(dims) => resolve(&node.op, dims, args, &inputs)?,
        };
        let out = if inputs.is_empty() {
            vec![crate::ops::exec_on(op, device)?]
        } else {
            crate::ops::exec_multi(op, &inputs)?
        };
        for (&o, t) in node.outputs.iter().zip(out) {
            if let Some(slot) = vals.get_mut(o) {
                *slot = Some(t);
            }
        }
    }
    for &(var, v) in &def.assigns {
        let t = vals.get(v).and_then(Option::as_ref).ok_or_else(missing)?;
        vars.get(var).ok_or_else(missing)?.assign(t)?;
    }
    def.outputs
        .iter()
        .map(|&v| vals.get(v).and_then(Option::clone).ok_or_else(missing))
        .collect()
}

/// `op` with its shape attribute computed from `dims` for this call.
fn resolve(op: &Op, dims: &[Dim], args: &[Tensor], inputs: &[&Tensor]) -> Result<Op> {
    let name = op.name();
    let mut out = Vec::with_capacity(dims.len());
    let mut infer = None;
    for (i, d) in dims.iter().enumerate() {
        out.push(match *d {
            Dim::Known(n) => n,
            Dim::Arg { arg, axis } => args
                .get(arg)
                .and_then(|a| a.shape().get(axis))
                .copied()
                .ok_or_else(|| Error::arg(name, format!("dimension {axis} of argument {arg} does not exist")))?,
            Dim::Infer => {
                if infer.replace(i).is_some() || !matches!(op, Op::Reshape(_)) {
                    return Err(Error::arg(name, "only reshape infers one dimension (-1)"));
                }
                1
            }
        });
    }
    if let Some(i) = infer {
        let x = inputs
            .first()
            .ok_or_else(|| Error::arg(name, "reshape without an input"))?;
        let rest = out
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::arg(name, format!("target shape {out:?} overflows")))?;
        if rest == 0 || x.numel() % rest != 0 {
            return Err(Error::shape(
                name,
                &[x.shape()],
                format!("cannot reshape {} elements into {dims:?}", x.numel()),
            ));
        }
        out[i] = x.numel() / rest;
    }
    op.with_shape_attr(out)
        .ok_or_else(|| Error::arg(name, "the op has no shape attribute to compute"))
}

/// Checks that the two traces captured the same constants, values and all:
/// a constant computed on the host from a stand-in size (`x / x.shape()[0]
/// as f32`) would keep that size's value in the graph at every size.
fn same_captures(name: &str, a: &[Tensor], b: &[Tensor]) -> Result<()> {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.id() == y.id() {
            continue;
        }
        if x.to_data()?.to_bytes() != y.to_data()?.to_bytes() {
            return Err(Error::arg(
                "function",
                format!(
                    "{name}: the traced graph depends on the unknown dimensions (captured constant {i}, {} {:?}, \
                     has other values at another size); a value computed on the host from a dimension would \
                     keep the traced size's value at every size: compute it with tensor ops",
                    x.dtype(),
                    x.shape()
                ),
            ));
        }
    }
    Ok(())
}

/// The graph of two traces whose unknown dimensions had the stand-in sizes
/// `sa` and `sb` (per argument): what differs becomes unknown or symbolic.
fn generalize(name: &str, mut a: GraphDef, b: &GraphDef, sa: &[Vec<usize>], sb: &[Vec<usize>]) -> Result<GraphDef> {
    let differ = |what: String| {
        Error::arg(
            "function",
            format!(
                "{name}: the traced graph depends on the unknown dimensions ({what}); \
                 only shapes and shape attributes may depend on them"
            ),
        )
    };
    if a.nodes.len() != b.nodes.len() {
        return Err(differ(format!(
            "{} ops at one size, {} at another",
            a.nodes.len(),
            b.nodes.len()
        )));
    }
    if a.feeds != b.feeds || a.variables != b.variables || a.assigns != b.assigns || a.outputs != b.outputs {
        return Err(differ("its inputs, variables or outputs".into()));
    }
    if a.captures != b.captures || a.host_inputs != b.host_inputs {
        return Err(differ(format!(
            "a captured constant of shape {:?} vs {:?}; build it with ops inside the function",
            a.captures.iter().map(|c| &c.shape).collect::<Vec<_>>(),
            b.captures.iter().map(|c| &c.shape).collect::<Vec<_>>()
        )));
    }
    if a.values.len() != b.values.len() {
        return Err(differ("the number of values".into()));
    }
    for (va, vb) in a.values.iter_mut().zip(&b.values) {
        if va.dtype != vb.dtype || va.shape.len() != vb.shape.len() {
            return Err(differ("a value's dtype or rank".into()));
        }
        for (x, y) in va.shape.iter_mut().zip(&vb.shape) {
            if x != y {
                *x = None;
            }
        }
    }
    for (i, (na, nb)) in a.nodes.iter_mut().zip(&b.nodes).enumerate() {
        if na.inputs != nb.inputs || na.outputs != nb.outputs {
            return Err(differ(format!("the wiring of op {i} ({})", na.op.name())));
        }
        if na.op == nb.op {
            continue;
        }
        let (Some(xa), Some(xb)) = (na.op.shape_attr(), nb.op.shape_attr()) else {
            return Err(differ(format!("the attributes of op {i} ({})", na.op.name())));
        };
        if na.op.with_shape_attr(xb.to_vec()).as_ref() != Some(&nb.op) || xa.len() != xb.len() {
            return Err(differ(format!("the attributes of op {i} ({})", na.op.name())));
        }
        let mut dims = Vec::with_capacity(xa.len());
        let mut varying = 0;
        for (&x, &y) in xa.iter().zip(xb) {
            if x == y {
                dims.push(Dim::Known(x));
                continue;
            }
            varying += 1;
            let arg = sa.iter().zip(sb).enumerate().find_map(|(arg, (s, t))| {
                s.iter()
                    .zip(t)
                    .position(|(&p, &q)| p == x && q == y && p != q)
                    .map(|axis| Dim::Arg { arg, axis })
            });
            dims.push(arg.unwrap_or(Dim::Infer));
        }
        let infers = dims.iter().filter(|d| **d == Dim::Infer).count();
        if infers > 0 && !(matches!(na.op, Op::Reshape(_)) && infers == 1) {
            return Err(differ(format!(
                "{varying} entries of {}'s shape attribute {xa:?} vs {xb:?} are no argument's dimension",
                na.op.name()
            )));
        }
        // A reshape whose other entries are all known infers the varying one.
        na.dims = Some(dims);
    }
    Ok(a)
}
