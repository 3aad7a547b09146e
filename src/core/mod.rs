//! The bottom layer: element types ([`dtype`]), shape arithmetic
//! ([`shape`]), the error type ([`error`]) and the [`op::Op`] enum with its
//! attributes and per-element semantics ([`op`], [`float`]).
//!
//! Everything else in wgflow builds on these; nothing here knows about
//! devices, tensors or files. The layer above is `runtime`, whose
//! kernels implement each [`op::Op`]; `ops` gives the ops their
//! shape and gradient rules.

pub mod dtype;
pub mod error;
pub mod float;
pub mod op;
pub mod shape;
