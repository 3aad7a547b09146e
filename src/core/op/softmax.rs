//! Softmax, log-softmax and sparse softmax cross-entropy from logits
//! (kernel: shaders/softmax.wgsl). Their attributes are fields of
//! [`Op::Softmax`](super::Op::Softmax); this file holds the row view and the
//! label error both devices give.
//!
//! Part of [`crate::core::op`]; the public functions and gradient rules are
//! in `ops::softmax`.

use crate::core::error::Error;

/// The error an out-of-range label gives on either device.
pub(crate) fn label_error(value: i32, classes: u32) -> Error {
    Error::arg(
        "sparse_softmax_cross_entropy_with_logits",
        format!("label {value} is out of range [0, {classes})"),
    )
}

/// [rows, r, inner] view of a softmax along `axis`.
pub(crate) fn view(sh: &[usize], axis: usize) -> (usize, usize, usize) {
    (sh[..axis].iter().product(), sh[axis], sh[axis + 1..].iter().product())
}
