//! `wgflow::function`: trace a step once, replay it as a graph
//! (`tf.function`).
//!
//! The first call with an input signature (shapes, dtypes and devices of
//! the arguments) runs the closure eagerly while recording every op it runs
//! (`ops::exec` reports each one), every variable it reads and assigns, and
//! the host values it asks to recompute per call (an optimizer's learning
//! rate and step count). The recording becomes a [`Graph`]; later calls with
//! that signature replay the graph on the new arguments without running the
//! closure. As in TensorFlow, what the closure does besides tensor ops (a
//! `println!`, pushing to a Vec, reading a clock) happens only while tracing,
//! and reading a tensor's value while tracing is an error, because a branch
//! on it would be frozen into the graph.
//!
//! Graphs are compiled before their first replay: dead ops are dropped and
//! chains of elementwise ops are fused into generated kernels. The traced
//! form stays available as a serializable [`GraphDef`] ([`Graph::def`]).
//!
//! The tracer is an observer of [`crate::tensor::observe`], beside
//! `autodiff`'s tapes; replays run each recorded
//! [`crate::ops::Op`] on its device's [`crate::runtime::Backend`]. Keras'
//! `fit` (`nn`) traces its train step through [`Traced`].

pub(crate) mod compile;
mod def;
pub(crate) mod fused;
mod graph;
mod precision;
mod symbolic;
pub(crate) mod trace;

pub(crate) use def::pad_amounts;
pub use def::{Dim, Feed, GraphDef, NodeDef, ValueDef, VariableDef};
pub use graph::{Graph, GraphStats, PlanStats};
pub use symbolic::{ConcreteFunction, TensorSpec};
pub use trace::{TraceScope, host_input};

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Shapes, dtypes and devices of a call's arguments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature(Vec<(Vec<usize>, DType, String)>);

impl Signature {
    /// The signature of `args`: what picks (or triggers tracing of) a graph.
    pub fn of(args: &[Tensor]) -> Signature {
        Signature(
            args.iter()
                .map(|t| (t.shape().to_vec(), t.dtype(), t.device().to_string()))
                .collect(),
        )
    }
}

/// Retraces beyond this many signatures print a warning, as TF does.
const RETRACE_WARNING: usize = 5;

/// The graphs of one step, one per argument signature: what a [`Function`]
/// keeps, for callers that cannot hand their closure over for good (Keras'
/// `fit` traces `Model::train_step`, which borrows the model).
pub struct Traced {
    name: String,
    graphs: HashMap<Signature, Graph>,
    traces: usize,
    warned: bool,
    /// With a capacity: the signatures, least recently used first; the
    /// oldest graph is dropped when a new one would pass the capacity.
    lru: Option<(usize, std::collections::VecDeque<Signature>)>,
}

impl Traced {
    /// No graphs yet; `name` identifies the step in retracing warnings and
    /// errors.
    pub fn new(name: &str) -> Traced {
        Traced {
            name: name.into(),
            graphs: HashMap::new(),
            traces: 0,
            warned: false,
            lru: None,
        }
    }

    /// Keeps at most `capacity` graphs, dropping the least recently used
    /// (for graphs that serve every shape, where a new shape is expected
    /// and is no reason to warn).
    pub(crate) fn bounded(name: &str, capacity: usize) -> Traced {
        let mut t = Traced::new(name);
        t.lru = Some((capacity.max(1), std::collections::VecDeque::new()));
        t.warned = true;
        t
    }

    /// Replays the graph of `args`' signature, or traces `f` on `args` to
    /// make it (running `f` once, eagerly, while recording).
    pub fn call(&mut self, args: &[Tensor], f: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>) -> Result<Vec<Tensor>> {
        self.call_observed(args, f, &mut |_, _| Ok(()))
    }

    /// [`Traced::call`], calling `ready(i, value)` when output `i` is
    /// computed: during a replay in the graph's order (see
    /// [`Graph::run_observed`]), after a trace for every output in turn.
    pub fn call_observed(
        &mut self,
        args: &[Tensor],
        f: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
        ready: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Vec<Tensor>> {
        let all = |out: Vec<Tensor>, ready: &mut dyn FnMut(usize, &Tensor) -> Result<()>| {
            for (i, t) in out.iter().enumerate() {
                ready(i, t)?;
            }
            Ok(out)
        };
        // Inside another trace, the ops belong to the outer graph.
        if trace::active() {
            return all(f(args)?, ready);
        }
        let sig = Signature::of(args);
        if let Some((_, order)) = &mut self.lru {
            if let Some(i) = order.iter().position(|s| s == &sig) {
                if let Some(s) = order.remove(i) {
                    order.push_back(s);
                }
            }
        }
        if let Some(g) = self.graphs.get_mut(&sig) {
            return g.run_observed(args, ready);
        }
        self.traces += 1;
        if self.traces > RETRACE_WARNING && !self.warned {
            self.warned = true;
            log::warn!(
                "{} was traced {} times, once per new argument signature; \
                 retracing is expensive, so pass arguments of stable shapes (pad or drop the last batch)",
                self.name,
                self.traces
            );
        }
        let (out, graph) = trace::trace(args, f)?;
        if let Some((cap, order)) = &mut self.lru {
            while order.len() >= *cap {
                match order.pop_front() {
                    Some(old) => {
                        self.graphs.remove(&old);
                    }
                    None => break,
                }
            }
            order.push_back(sig.clone());
        }
        self.graphs.insert(sig, graph);
        all(out, ready)
    }

    /// Times a step has been traced (once per new signature).
    pub fn trace_count(&self) -> usize {
        self.traces
    }

    /// The graph traced for `args`' signature, if any.
    pub fn graph(&self, args: &[Tensor]) -> Option<&Graph> {
        self.graphs.get(&Signature::of(args))
    }
}

/// A traced function (`tf.function`).
pub struct Function<F> {
    f: F,
    traced: Traced,
    signature: Option<Vec<TensorSpec>>,
    concrete: Option<ConcreteFunction>,
}

/// Wraps `f` as a traced function (`@tf.function`).
pub fn function<F>(f: F) -> Function<F>
where
    F: FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
{
    Function {
        f,
        traced: Traced::new("function"),
        signature: None,
        concrete: None,
    }
}

impl<F> Function<F>
where
    F: FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
{
    /// Names the function in warnings and errors.
    pub fn named(mut self, name: &str) -> Self {
        self.traced.name = name.into();
        self
    }

    /// Fixes the arguments' specs (`tf.function(input_signature=...)`):
    /// dimensions left `None` are unknown, and one graph serves every size
    /// of them without tracing again (see [`ConcreteFunction`]). Calls with
    /// arguments that do not fit the specs are errors.
    pub fn input_signature(mut self, specs: Vec<TensorSpec>) -> Self {
        self.signature = Some(specs);
        self.concrete = None;
        self
    }

    /// The graph for the input signature, traced on `device` the first
    /// time (`tf.function.get_concrete_function()`); `None` without a
    /// signature.
    pub fn concrete_function(&mut self, device: &crate::runtime::Device) -> Result<Option<&mut ConcreteFunction>> {
        let Some(specs) = &self.signature else { return Ok(None) };
        if self.concrete.is_none() {
            let f = &mut self.f;
            self.traced.traces += 1;
            self.concrete = Some(ConcreteFunction::trace(&self.traced.name, specs, device, |a| f(a))?);
        }
        Ok(self.concrete.as_mut())
    }

    /// Times the closure has been traced (once per new signature; once in
    /// all with an input signature).
    pub fn trace_count(&self) -> usize {
        self.traced.trace_count()
    }

    /// The graph traced for `args`' signature, if any.
    pub fn graph(&self, args: &[Tensor]) -> Option<&Graph> {
        self.traced.graph(args)
    }

    /// Runs the function: replays the graph of `args`' signature, tracing
    /// the closure first when the signature is new.
    pub fn call(&mut self, args: &[Tensor]) -> Result<Vec<Tensor>> {
        if let Some(specs) = &self.signature {
            if args.len() != specs.len() {
                return Err(Error::arg(
                    "function",
                    format!(
                        "{} takes {} arguments, got {}",
                        self.traced.name,
                        specs.len(),
                        args.len()
                    ),
                ));
            }
            for (i, (s, a)) in specs.iter().zip(args).enumerate() {
                s.check("function", &format!("{} argument {i}", self.traced.name), a)?;
            }
            let device = match args.first() {
                Some(a) => a.device().clone(),
                None => crate::runtime::config::default_device()?,
            };
            let Some(c) = self.concrete_function(&device)? else {
                return Err(Error::arg("function", "no input signature"));
            };
            return c.call(args);
        }
        let f = &mut self.f;
        self.traced.call(args, |a| f(a))
    }
}

/// Checks a replay's arguments against the signature a graph was traced for.
pub(crate) fn check_args(name: &str, sig: &Signature, args: &[Tensor]) -> Result<()> {
    let got = Signature::of(args);
    if &got != sig {
        return Err(Error::InvalidArgument {
            op: "function",
            msg: format!("{name} was traced for {:?} but called with {:?}", sig.0, got.0),
        });
    }
    Ok(())
}
