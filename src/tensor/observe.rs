//! Observers: how the layers above the tensors watch them without being
//! called from below. `ops` reports every op it ran (through
//! [`op`]), [`Variable`] reports its reads and assignments, and a readback
//! asks whether it is allowed. [`crate::GradientTape`] (in
//! `autodiff`) and the tracer of `function` register
//! themselves here for as long as they record; nothing in `tensor` or `ops`
//! knows what they do with the events.
//!
//! Observers are per thread, like TensorFlow's tapes and its function
//! tracing.

use super::{Tensor, Variable};
use crate::core::error::Result;
use crate::core::op::Op;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// How a variable was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// `Variable::value`: the user's read (tapes watch trainable variables read this way).
    Value,
    /// A read wgflow makes for itself (shape queries, optimizer updates):
    /// a trace records it, tapes do not watch it.
    Peek,
}

/// Something that watches ops and variables on this thread.
pub trait Observer {
    /// Whether this observer records gradients: such observers are paused by
    /// [`without_gradients`].
    fn records_gradients(&self) -> bool {
        false
    }
    /// `op` ran on `inputs` and produced `outputs`.
    fn op(&self, _op: &Op, _inputs: &[&Tensor], _outputs: &[Tensor]) {}
    /// `var` was read and gave `value`.
    fn read(&self, _var: &Variable, _value: &Tensor, _how: Read) {}
    /// `var` was assigned `value`; it now holds `held`, another handle of the
    /// same storage.
    fn assign(&self, _var: &Variable, _value: &Tensor, _held: &Tensor) {}
    /// Whether the host may read `t`'s values now.
    fn check_read(&self, _t: &Tensor) -> Result<()> {
        Ok(())
    }
}

thread_local! {
    static OBSERVERS: RefCell<Vec<Rc<dyn Observer>>> = const { RefCell::new(Vec::new()) };
    static GRADIENTS_PAUSED: Cell<u32> = const { Cell::new(0) };
    static INTERNAL_READ: Cell<bool> = const { Cell::new(false) };
}

/// Keeps an observer registered; dropping it unregisters the observer.
pub struct Registration(Rc<dyn Observer>);

impl Drop for Registration {
    fn drop(&mut self) {
        OBSERVERS.with(|o| o.borrow_mut().retain(|x| !Rc::ptr_eq(x, &self.0)));
    }
}

/// Registers `o` on this thread until the returned registration is dropped.
pub fn register(o: Rc<dyn Observer>) -> Registration {
    OBSERVERS.with(|v| v.borrow_mut().push(o.clone()));
    Registration(o)
}

/// Whether any observer is registered on this thread (a cheap test that
/// lets the hot path skip building events nobody reads).
pub fn any() -> bool {
    OBSERVERS.with(|o| !o.borrow().is_empty())
}

fn each(f: impl Fn(&dyn Observer)) {
    // Observers only record: they never register, unregister or run ops
    // from a callback, so iterating under the borrow is safe.
    let paused = GRADIENTS_PAUSED.with(Cell::get) > 0;
    OBSERVERS.with(|o| {
        for x in o.borrow().iter() {
            if paused && x.records_gradients() {
                continue;
            }
            f(&**x);
        }
    });
}

/// Reports an op to every observer (`ops::exec` calls it).
pub fn op(op: &Op, inputs: &[&Tensor], outputs: &[Tensor]) {
    if any() {
        each(|o| o.op(op, inputs, outputs));
    }
}

pub(crate) fn read(var: &Variable, value: &Tensor, how: Read) {
    if any() {
        each(|o| o.read(var, value, how));
    }
}

pub(crate) fn assign(var: &Variable, value: &Tensor, held: &Tensor) {
    if any() {
        each(|o| o.assign(var, value, held));
    }
}

/// Asks the observers whether `t` may be read now (wgflow's own reads inside
/// [`internal_reads`] always may).
pub(crate) fn check_read(t: &Tensor) -> Result<()> {
    if !any() || INTERNAL_READ.with(Cell::get) {
        return Ok(());
    }
    OBSERVERS.with(|o| o.borrow().iter().try_for_each(|x| x.check_read(t)))
}

/// Runs `f` with every gradient-recording observer on this thread paused
/// (`autodiff::without_recording`).
pub fn without_gradients<T>(f: impl FnOnce() -> T) -> T {
    GRADIENTS_PAUSED.with(|p| p.set(p.get() + 1));
    struct Resume;
    impl Drop for Resume {
        fn drop(&mut self) {
            GRADIENTS_PAUSED.with(|p| p.set(p.get() - 1));
        }
    }
    let _r = Resume;
    f()
}

/// Runs `f`, in which wgflow's own reads of values are allowed even where an
/// observer would refuse them (`WGFLOW_CROSS_CHECK` compares results while a
/// step is being traced).
pub fn internal_reads<T>(f: impl FnOnce() -> T) -> T {
    let before = INTERNAL_READ.with(|r| r.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INTERNAL_READ.with(|r| r.set(self.0));
        }
    }
    let _r = Restore(before);
    f()
}
