//! Recording a trace. While a [`TraceScope`] is open, a tracer observes
//! (`tensor::observe`) every op, variable read and assignment on its thread;
//! [`host_input`] reports here too. Tensors that
//! reach an op without being produced inside the trace (weights created
//! outside, tensors built from host data) become captured constants.

use super::Signature;
use super::graph::{Graph, HostFn, Node, Source, Value};
use crate::core::error::{Error, Result};
use crate::core::op::Op;
use crate::runtime::Device;
use crate::runtime::cpu::CpuData;
use crate::tensor::observe::{self, Observer, Read, Registration};
use crate::tensor::{Tensor, Variable};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Default)]
pub(crate) struct Builder {
    values: Vec<Value>,
    nodes: Vec<Node>,
    /// tensor id -> value index
    ids: HashMap<u64, usize>,
    sources: Vec<(usize, Source)>,
    assigns: Vec<(Variable, usize)>,
    /// Each variable the trace assigned, with its value before the first
    /// assignment: a trace that fails puts them back, so that a failed call
    /// leaves every variable as it was (a graph assigns when a call ends).
    before: Vec<(Variable, Tensor)>,
}

impl Builder {
    fn value_of(&mut self, t: &Tensor, capture: bool) -> usize {
        if let Some(&v) = self.ids.get(&t.id()) {
            return v;
        }
        let v = self.new_value(t);
        if capture {
            self.sources.push((v, Source::Constant(t.clone())));
        }
        v
    }

    fn new_value(&mut self, t: &Tensor) -> usize {
        let v = self.values.len();
        self.values.push(Value {
            shape: t.shape().to_vec(),
            dtype: t.dtype(),
            device: t.device().clone(),
        });
        self.ids.insert(t.id(), v);
        v
    }
}

thread_local! {
    static STATE: RefCell<Option<Builder>> = const { RefCell::new(None) };
}

/// The tracer: an observer of ops and variables while a trace records.
struct Tracer;

impl Observer for Tracer {
    fn op(&self, op: &Op, inputs: &[&Tensor], outputs: &[Tensor]) {
        record_op(op, inputs, outputs);
    }
    fn read(&self, var: &Variable, value: &Tensor, _how: Read) {
        on_read(var, value);
    }
    fn assign(&self, var: &Variable, value: &Tensor, held: &Tensor) {
        on_assign(var, value, held);
    }
    fn check_read(&self, t: &Tensor) -> Result<()> {
        check_read(t)
    }
}

/// Whether a trace is recording on this thread.
pub(crate) fn active() -> bool {
    STATE.with(|s| s.borrow().is_some())
}

fn with<T>(f: impl FnOnce(&mut Builder) -> T) -> Option<T> {
    STATE.with(|s| s.borrow_mut().as_mut().map(f))
}

fn record_op(op: &Op, inputs: &[&Tensor], outputs: &[Tensor]) {
    with(|b| {
        let ins: Vec<usize> = inputs.iter().map(|t| b.value_of(t, true)).collect();
        let outs: Vec<usize> = outputs.iter().map(|t| b.new_value(t)).collect();
        b.nodes.push(Node::Op {
            op: op.clone(),
            inputs: ins,
            outputs: outs,
        });
    });
}

fn on_read(var: &Variable, t: &Tensor) {
    with(|b| {
        if !b.ids.contains_key(&t.id()) {
            let v = b.new_value(t);
            b.sources.push((v, Source::Read(var.clone())));
        }
    });
}

/// `var` now holds `held`, a detached copy of `t`'s handle: later reads in
/// the trace see the same graph value.
fn on_assign(var: &Variable, t: &Tensor, held: &Tensor) {
    with(|b| {
        if !b.before.iter().any(|(x, _)| x.id() == var.id()) {
            // Observers hear of an assignment before it happens.
            b.before.push((var.clone(), var.peek_raw()));
        }
        let v = b.value_of(t, true);
        b.ids.insert(held.id(), v);
        b.assigns.push((var.clone(), v));
    });
}

/// Refuses to read the value of a tensor the trace computes.
fn check_read(t: &Tensor) -> Result<()> {
    let traced = with(|b| b.ids.contains_key(&t.id())).unwrap_or(false);
    if traced {
        return Err(Error::ReadInTrace {
            op: "to_vec",
            msg: format!(
                "reading the value of a {:?} {} tensor while tracing a function: the value exists only \
                 during tracing, so a branch or a loop that depends on it would be frozen into the graph. \
                 Return the tensor from the function and read it outside, or express the choice with \
                 tensor ops (where_, maximum, ...)",
                t.shape(),
                t.dtype()
            ),
        });
    }
    Ok(())
}

/// A tensor whose value the host computes on every call: while tracing, the
/// graph records `f` and calls it again at each replay (how an optimizer's
/// learning rate and step count stay current inside a traced step). Outside
/// a trace it is just `f()` on `device`.
pub fn host_input(shape: &[usize], device: &Device, mut f: impl FnMut() -> CpuData + Send + 'static) -> Result<Tensor> {
    let t = Tensor::from_data(f(), shape, device)?;
    with(|b| {
        let v = b.new_value(&t);
        let boxed: HostFn = Box::new(f);
        b.sources.push((v, Source::Host(boxed)));
    });
    Ok(t)
}

/// Runs `f` on `args` while recording; returns its outputs and the graph.
/// `f` sees a placeholder of each argument (the same values under another
/// identity), so one tensor passed twice, `f(x, x)`, becomes two inputs
/// of the graph, as in TensorFlow. When `f` or the graph's construction
/// fails, the variables `f` assigned get their old values back.
pub(crate) fn trace(args: &[Tensor], f: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>) -> Result<(Vec<Tensor>, Graph)> {
    let inputs: Vec<Tensor> = args.iter().map(Tensor::detached).collect();
    let scope = TraceScope::begin(&inputs)?;
    let out = f(&inputs);
    let mut builder = scope.end();
    let before = std::mem::take(&mut builder.before);
    let built = out.and_then(|out| {
        let graph = Graph::build(builder, Signature::of(args), args, &out)?;
        Ok((out, graph))
    });
    if built.is_err() {
        restore(before);
    }
    built
}

/// Runs `f` on `args` while recording and returns the recording as a
/// [`GraphDef`](super::GraphDef) with its bindings, without compiling it.
/// Every variable `f` assigned gets its old value back: this trace only
/// looks at what `f` does.
pub(crate) fn trace_def(
    args: &[Tensor],
    f: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<(super::GraphDef, super::def::Bindings)> {
    let inputs: Vec<Tensor> = args.iter().map(Tensor::detached).collect();
    let scope = TraceScope::begin(&inputs)?;
    let out = f(&inputs);
    let mut builder = scope.end();
    let before = std::mem::take(&mut builder.before);
    restore(before);
    let out = out?;
    Ok(super::graph::split(builder, &out))
}

/// Puts back the values assigned variables had before a trace.
fn restore(before: Vec<(Variable, Tensor)>) {
    for (var, t) in before.into_iter().rev() {
        var.assign_raw(t);
    }
}

/// An open recording; `end` closes it (dropping it discards the recording).
pub struct TraceScope {
    open: bool,
    _registration: Registration,
}

impl TraceScope {
    /// Starts recording with `args` as the graph's inputs.
    pub fn begin(args: &[Tensor]) -> Result<TraceScope> {
        if active() {
            return Err(Error::arg("function", "a trace is already recording on this thread"));
        }
        let mut b = Builder::default();
        for (i, a) in args.iter().enumerate() {
            if b.ids.contains_key(&a.id()) {
                return Err(Error::arg(
                    "function",
                    format!("argument {i} is the same tensor as an earlier one"),
                ));
            }
            let v = b.new_value(a);
            b.sources.push((v, Source::Arg(i)));
        }
        STATE.with(|s| *s.borrow_mut() = Some(b));
        Ok(TraceScope {
            open: true,
            _registration: observe::register(Rc::new(Tracer)),
        })
    }

    pub(crate) fn end(mut self) -> Builder {
        self.open = false;
        STATE.with(|s| s.borrow_mut().take()).unwrap_or_default()
    }

    /// Ends the recording and builds the graph of outputs `out`.
    pub fn finish(self, args: &[Tensor], out: &[Tensor]) -> Result<Graph> {
        let b = self.end();
        Graph::build(b, Signature::of(args), args, out)
    }
}

impl Drop for TraceScope {
    /// A recording dropped before its end is discarded, and the variables
    /// it assigned get their old values back.
    fn drop(&mut self) {
        if self.open {
            if let Some(b) = STATE.with(|s| s.borrow_mut().take()) {
                restore(b.before);
            }
        }
    }
}

pub(crate) fn into_parts(
    b: Builder,
) -> (
    Vec<Value>,
    Vec<Node>,
    HashMap<u64, usize>,
    Vec<(usize, Source)>,
    Vec<(Variable, usize)>,
) {
    (b.values, b.nodes, b.ids, b.sources, b.assigns)
}
