//! The bottom layer: element types, shapes, the error type and the `Op`
//! enum with its attributes. Everything else in wgflow builds on these;
//! nothing here knows about devices, tensors or files.

pub mod dtype;
pub mod error;
pub mod float;
pub mod op;
pub mod shape;
