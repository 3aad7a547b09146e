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
pub(crate) mod trace;

pub use def::{Feed, GraphDef, NodeDef, ValueDef, VariableDef};
pub use graph::{Graph, GraphStats, PlanStats};
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
        }
    }

    /// Replays the graph of `args`' signature, or traces `f` on `args` to
    /// make it (running `f` once, eagerly, while recording).
    pub fn call(&mut self, args: &[Tensor], f: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>) -> Result<Vec<Tensor>> {
        // Inside another trace, the ops belong to the outer graph.
        if trace::active() {
            return f(args);
        }
        let sig = Signature::of(args);
        if let Some(g) = self.graphs.get_mut(&sig) {
            return g.run(args);
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
        self.graphs.insert(sig, graph);
        Ok(out)
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
}

/// Wraps `f` as a traced function (`@tf.function`).
pub fn function<F>(f: F) -> Function<F>
where
    F: FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
{
    Function {
        f,
        traced: Traced::new("function"),
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

    /// Times the closure has been traced (once per new signature).
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
