//! `Variable`: a named, mutable slot holding a tensor, as `tf.Variable`.
//! Reading a trainable variable inside a [`crate::GradientTape`] makes the
//! tape watch it; assignments replace the tensor (the old one stays valid
//! for whoever still holds it) and are never recorded.
//!
//! Reads and assignments are reported through [`super::observe`], which is
//! how tapes and the tracer of `function` see them;
//! `assign_add` / `assign_sub` live with the ops in `ops`.

use super::Tensor;
use super::observe::{self, Read};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::runtime::Device;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

struct Inner {
    id: u64,
    name: String,
    trainable: bool,
    /// Set by a layer made not trainable (Keras' `layer.trainable =
    /// False`): a trainable variable that is frozen is not trained.
    frozen: AtomicBool,
    value: RwLock<Tensor>,
}

/// A named, mutable holder of a [`Tensor`] (`tf.Variable`): model weights,
/// optimizer slots, metric state.
///
/// Clones are handles to the same variable. The shape, dtype and device are
/// fixed at creation: [`assign`](Variable::assign) checks them.
#[derive(Clone)]
pub struct Variable(Arc<Inner>);

impl Variable {
    /// A trainable variable holding `value`.
    pub fn new(value: Tensor, name: &str) -> Variable {
        Variable::with_trainable(value, name, true)
    }

    /// A variable holding `value`; `trainable: false` (`tf.Variable(...,
    /// trainable=False)`) keeps tapes from watching it unless asked
    /// ([`GradientTape::watch_variable`](crate::GradientTape::watch_variable)).
    pub fn with_trainable(value: Tensor, name: &str, trainable: bool) -> Variable {
        static ID: AtomicU64 = AtomicU64::new(1);
        Variable(Arc::new(Inner {
            id: ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            trainable,
            frozen: AtomicBool::new(false),
            value: RwLock::new(value.detached()),
        }))
    }

    /// A process-unique identity, shared by clones of this handle.
    pub fn id(&self) -> u64 {
        self.0.id
    }
    /// The name given at creation; wgflow does not make names unique.
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// Whether tapes watch the variable when it is read with
    /// [`value`](Variable::value): created trainable and not frozen.
    pub fn trainable(&self) -> bool {
        self.0.trainable && !self.frozen()
    }
    /// Whether a layer froze the variable ([`Variable::set_frozen`]).
    pub fn frozen(&self) -> bool {
        self.0.frozen.load(Ordering::Relaxed)
    }
    /// Freezes the variable (or thaws it), as Keras' `layer.trainable =
    /// False` does to a layer's weights: a frozen variable is neither
    /// watched nor trained. Shared by every handle; models compiled before
    /// keep their traced steps until compiled again, as in Keras.
    pub fn set_frozen(&self, frozen: bool) {
        self.0.frozen.store(frozen, Ordering::Relaxed);
    }

    /// The current value (`read_value`); active tapes watch it when the
    /// variable is trainable.
    pub fn value(&self) -> Tensor {
        let t = self.peek_raw();
        observe::read(self, &t, Read::Value);
        t
    }

    /// The current value without notifying tapes (a trace still records the read).
    pub(crate) fn peek(&self) -> Tensor {
        let t = self.peek_raw();
        observe::read(self, &t, Read::Peek);
        t
    }

    /// The current value, reported to nothing (graph replays).
    pub(crate) fn peek_raw(&self) -> Tensor {
        self.0.value.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the value without checks or reports (graph replays).
    pub(crate) fn assign_raw(&self, t: Tensor) {
        self.replace_raw(t);
    }

    /// [`Variable::assign_raw`], giving back the old value.
    pub(crate) fn replace_raw(&self, t: Tensor) -> Tensor {
        std::mem::replace(&mut *self.0.value.write().unwrap_or_else(|p| p.into_inner()), t)
    }

    /// Shape of the held value (fixed for the variable's life).
    pub fn shape(&self) -> Vec<usize> {
        self.peek().shape().to_vec()
    }
    /// Dtype of the held value.
    pub fn dtype(&self) -> DType {
        self.peek().dtype()
    }
    /// Device of the held value.
    pub fn device(&self) -> Device {
        self.peek().device().clone()
    }
    /// Number of elements of the held value.
    pub fn numel(&self) -> usize {
        self.peek().numel()
    }

    /// Replaces the value; shape, dtype and device must match.
    pub fn assign(&self, t: &Tensor) -> Result<()> {
        let cur = self.peek();
        if t.shape() != cur.shape() || t.dtype() != cur.dtype() {
            return Err(Error::shape(
                "assign",
                &[cur.shape(), t.shape()],
                format!(
                    "variable {} holds {} {:?}, not {} {:?}",
                    self.name(),
                    cur.dtype(),
                    cur.shape(),
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        if t.device() != cur.device() {
            return Err(Error::DeviceMismatch {
                op: "assign",
                devices: vec![cur.device().to_string(), t.device().to_string()],
            });
        }
        let held = t.detached();
        observe::assign(self, t, &held);
        *self.0.value.write().unwrap_or_else(|p| p.into_inner()) = held;
        Ok(())
    }
}

impl fmt::Debug for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.peek();
        write!(
            f,
            "Variable('{}', shape={:?}, dtype={}, device={})",
            self.name(),
            t.shape(),
            t.dtype(),
            t.device()
        )
    }
}
