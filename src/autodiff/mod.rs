//! `GradientTape`: records ops on watched tensors and replays their gradient
//! rules backwards (`tf.GradientTape`).
//!
//! A tape is an observer ([`crate::tensor::observe`]) registered on its thread while
//! it lives: `ops::exec` reports every op, and the tape keeps an entry when
//! one of the op's inputs is tracked (watched, read from a trainable
//! variable, or computed from tracked tensors). `gradient` walks the entries in reverse, calling each op's
//! gradient rule; those rules are ordinary ops, so outer tapes record them
//! (higher-order gradients) while the tape computing them is paused. A traced
//! function's tracer (`function`) is another observer of the
//! same events. The gradient rules themselves live with each op family in
//! [`crate::ops`]; Keras' `fit` (`nn`) drives a tape per step.

use crate::core::error::{Error, Result};
use crate::core::op::Op;
use crate::tensor::observe::{self, Observer, Read, Registration};
use crate::tensor::{Tensor, Variable};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

struct Entry {
    op: Op,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

#[derive(Default)]
struct State {
    entries: RefCell<Vec<Entry>>,
    tracked: RefCell<HashSet<u64>>,
    /// variable id -> ids of the tensors read from it while recording
    reads: RefCell<HashMap<u64, Vec<u64>>>,
    recording: Cell<bool>,
    persistent: bool,
    used: Cell<bool>,
}

impl Observer for State {
    fn records_gradients(&self) -> bool {
        true
    }

    fn op(&self, op: &Op, inputs: &[&Tensor], outputs: &[Tensor]) {
        // No gradient flows through stop_gradient: its output stays untracked.
        if !self.recording.get() || matches!(op, Op::StopGradient) {
            return;
        }
        if inputs.iter().any(|t| self.tracked.borrow().contains(&t.id())) {
            let mut tr = self.tracked.borrow_mut();
            for o in outputs {
                tr.insert(o.id());
            }
            self.entries.borrow_mut().push(Entry {
                op: op.clone(),
                inputs: inputs.iter().map(|t| (*t).clone()).collect(),
                outputs: outputs.to_vec(),
            });
        }
    }

    /// Reads of trainable variables through `Variable::value` are watched.
    fn read(&self, var: &Variable, t: &Tensor, how: Read) {
        if !self.recording.get() || how != Read::Value || !var.trainable() {
            return;
        }
        self.tracked.borrow_mut().insert(t.id());
        let mut reads = self.reads.borrow_mut();
        let ids = reads.entry(var.id()).or_default();
        if !ids.contains(&t.id()) {
            ids.push(t.id());
        }
    }
}

/// Runs `f` with every tape on this thread paused.
pub fn without_recording<T>(f: impl FnOnce() -> T) -> T {
    observe::without_gradients(f)
}

pub use crate::ops::layout::stop_gradient;

/// `tf.GradientTape`. Recording starts at creation and stops when the tape
/// is dropped; a non-persistent tape can compute gradients once.
///
/// Tapes are per thread. Trainable variables read with
/// [`Variable::value`] inside the tape's life are watched automatically;
/// other tensors need [`watch`](GradientTape::watch).
///
/// ```
/// use wgflow::{Device, GradientTape, Tensor, Variable};
/// let cpu = Device::cpu();
/// let w = Variable::new(Tensor::from_vec(vec![3.0f32], &[1], &cpu)?, "w");
/// let tape = GradientTape::new();
/// let y = w.value().square()?; // y = w²
/// let g = tape.gradient(&y, &[&w])?;
/// assert_eq!(g[0].as_ref().unwrap().to_vec::<f32>()?, vec![6.0]);
/// # Ok::<(), wgflow::Error>(())
/// ```
pub struct GradientTape {
    state: Rc<State>,
    _registration: Registration,
}

impl GradientTape {
    /// A tape that records from now until it is dropped, and computes
    /// gradients once.
    pub fn new() -> GradientTape {
        GradientTape::create(false)
    }

    /// A tape whose `gradient` may be called more than once.
    pub fn persistent() -> GradientTape {
        GradientTape::create(true)
    }

    fn create(persistent: bool) -> GradientTape {
        let state = Rc::new(State {
            persistent,
            ..State::default()
        });
        state.recording.set(true);
        let _registration = observe::register(state.clone());
        GradientTape { state, _registration }
    }

    /// Tracks a tensor that is not a trainable variable (`tape.watch`).
    pub fn watch(&self, t: &Tensor) {
        self.state.tracked.borrow_mut().insert(t.id());
    }

    /// Tracks a variable even if it is not trainable; its reads from now on count.
    pub fn watch_variable(&self, v: &Variable) {
        let t = v.peek();
        self.state.tracked.borrow_mut().insert(t.id());
        self.state.reads.borrow_mut().entry(v.id()).or_default().push(t.id());
    }

    /// Runs `f` without recording on this tape (`tape.stop_recording()`).
    pub fn stop_recording<T>(&self, f: impl FnOnce() -> T) -> T {
        let was = self.state.recording.replace(false);
        let r = f();
        self.state.recording.set(was);
        r
    }

    /// d target / d variables; `None` where a variable does not affect the
    /// target. A non-scalar target is summed, as in TensorFlow. A second
    /// call on a non-persistent tape is [`Error::InvalidArgument`].
    pub fn gradient(&self, target: &Tensor, sources: &[&Variable]) -> Result<Vec<Option<Tensor>>> {
        let ids: Vec<Vec<u64>> = {
            let reads = self.state.reads.borrow();
            sources
                .iter()
                .map(|v| reads.get(&v.id()).cloned().unwrap_or_default())
                .collect()
        };
        self.backward(target, &ids)
    }

    /// d target / d tensors for watched (or intermediate) tensors.
    pub fn gradient_wrt(&self, target: &Tensor, sources: &[&Tensor]) -> Result<Vec<Option<Tensor>>> {
        let ids: Vec<Vec<u64>> = sources.iter().map(|t| vec![t.id()]).collect();
        self.backward(target, &ids)
    }

    fn backward(&self, target: &Tensor, sources: &[Vec<u64>]) -> Result<Vec<Option<Tensor>>> {
        if self.state.used.get() && !self.state.persistent {
            return Err(Error::arg(
                "GradientTape.gradient",
                "a non-persistent tape computes gradients once; use GradientTape::persistent()",
            ));
        }
        self.state.used.set(true);
        let was = self.state.recording.replace(false);
        let r = self.walk(target, sources);
        self.state.recording.set(was);
        if !self.state.persistent {
            // Like TF, a used tape lets go of the tensors it held.
            self.state.entries.borrow_mut().clear();
        }
        r
    }

    fn walk(&self, target: &Tensor, sources: &[Vec<u64>]) -> Result<Vec<Option<Tensor>>> {
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(target.id(), target.ones_like()?);
        let entries = self.state.entries.borrow();
        // Only entries between the sources and the target matter.
        let wanted: HashSet<u64> = sources.iter().flatten().copied().collect();
        let mut needed: HashSet<u64> = wanted.clone();
        let mut useful = vec![false; entries.len()];
        for (i, e) in entries.iter().enumerate() {
            if e.inputs.iter().any(|t| needed.contains(&t.id())) {
                useful[i] = true;
                needed.extend(e.outputs.iter().map(|t| t.id()));
            }
        }
        for (i, e) in entries.iter().enumerate().rev() {
            if !useful[i] {
                continue;
            }
            let dy: Vec<Option<Tensor>> = e.outputs.iter().map(|o| grads.get(&o.id()).cloned()).collect();
            if dy.iter().all(Option::is_none) {
                continue;
            }
            let x: Vec<&Tensor> = e.inputs.iter().collect();
            let need: Vec<bool> = e.inputs.iter().map(|t| needed.contains(&t.id())).collect();
            let dx = e.op.grad(&x, &e.outputs, &dy, &need)?;
            for (t, g) in e.inputs.iter().zip(dx) {
                let Some(g) = g else { continue };
                if !needed.contains(&t.id()) {
                    continue;
                }
                let sum = match grads.remove(&t.id()) {
                    Some(prev) => prev.add(&g)?,
                    None => g,
                };
                grads.insert(t.id(), sum);
            }
        }
        sources
            .iter()
            .map(|ids| {
                let mut acc: Option<Tensor> = None;
                for id in ids {
                    if let Some(g) = grads.get(id) {
                        acc = Some(match acc {
                            Some(a) => a.add(g)?,
                            None => g.clone(),
                        });
                    }
                }
                Ok(acc)
            })
            .collect()
    }
}

impl Default for GradientTape {
    fn default() -> Self {
        GradientTape::new()
    }
}
