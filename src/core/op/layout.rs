//! Data movement and dtype conversion: cast, reshape, transpose, broadcast_to,
//! slice, concat, gather, one_hot (kernels: shaders/layout.wgsl, shaders/cast.wgsl).
//! Their attributes are fields of [`Op`]; this file holds the
//! strided views the kernels read them through.
//!
//! Results are always contiguous: transpose, slice and broadcast copy, as
//! TensorFlow's kernels do; reshape shares storage.
//!
//! Part of [`crate::core::op`]; the public functions are in
//! `ops::layout`.

use super::Op;
use crate::core::error::Error;
use crate::core::shape::strides;

/// Kernels index at most 8 dimensions after merging contiguous ones.
pub(crate) const MAX_RANK: usize = 8;

/// The error a bad gather index gives on either device.
pub(crate) fn index_error(value: i32, limit: u32) -> Error {
    Error::arg("gather", format!("index {value} is out of range [0, {limit})"))
}

/// (strides over the output shape, offset) for reading `x` as this op's output.
pub(crate) fn view(op: &Op, sh: &[usize], out: &[usize]) -> (Vec<usize>, usize) {
    let st = strides(sh);
    match op {
        Op::Permute(p) => (p.iter().map(|&d| st[d]).collect(), 0),
        Op::BroadcastTo(to) => (crate::core::shape::broadcast_strides(sh, to), 0),
        Op::Slice { begin, .. } => (st.clone(), begin.iter().zip(&st).map(|(b, s)| b * s).sum()),
        _ => (strides(out), 0),
    }
}
