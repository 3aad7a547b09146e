//! Batched matmul with broadcast batch dimensions and transpose flags
//! (kernels: shaders/gemm.wgsl, the tiled core, with shaders/matmul.wgsl):
//! the dimension arithmetic the kernels share; the attributes are
//! [`Op::MatMul`](super::Op::MatMul)'s flags.
//!
//! a: `[..., M, K]` (or `[..., K, M]` with `transpose_a`), b: `[..., K, N]`
//! (or `[..., N, K]` with `transpose_b`); the batch dimensions broadcast. The
//! GPU runs one strided batched GEMM when each operand's batch is either
//! absent or the whole output batch, and materializes a partial broadcast
//! first otherwise.
//!
//! Part of [`crate::core::op`]; `matmul` and its gradient rule are in
//! `ops::matmul`.

use crate::core::shape::numel;

/// (M, N, K of a, K of b).
pub(crate) fn dims(ta: bool, tb: bool, a: &[usize], b: &[usize]) -> (usize, usize, usize, usize) {
    let (ra, rb) = (a.len(), b.len());
    let (m, ka) = if ta {
        (a[ra - 1], a[ra - 2])
    } else {
        (a[ra - 2], a[ra - 1])
    };
    let (kb, n) = if tb {
        (b[rb - 1], b[rb - 2])
    } else {
        (b[rb - 2], b[rb - 1])
    };
    (m, n, ka, kb)
}

/// Per-operand batch strides over the output batch, or None when the
/// broadcast is partial and the operand must be materialized.
pub(crate) fn batch_stride(batch: &[usize], out_batch: &[usize], mat: usize) -> Option<usize> {
    if numel(batch) <= 1 {
        Some(0)
    } else if numel(batch) == numel(out_batch) {
        // It broadcasts to out_batch without growing: the same layout.
        Some(mat)
    } else {
        None
    }
}
