//! The `Op` enum: every operation wgflow runs, with its attributes. This is
//! the vocabulary shared by every layer above: `ops` gives each op its shape
//! rule and gradient, the runtimes (`runtime::cpu`, `runtime::wgpu`) their
//! kernels, the tape and the tracer record it, and a graph serializes it.
//!
//! Each family's attribute types sit in a file of their own, together with
//! the per-element reference semantics (the CPU reference and the fused
//! kernels' CPU twin both call them).

pub mod binary;
pub mod conv;
pub mod creation;
pub mod layout;
pub mod matmul;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;

pub use binary::{BinaryOp, CmpOp};
pub use conv::{Conv2d, Padding};
pub use creation::{Distribution, Random};
pub use optim::{Rule, Update};
pub use pool::Pool2d;
pub use reduce::ReduceOp;
pub use unary::UnaryOp;

use crate::core::dtype::DType;

/// An op and its attributes: what the tape records and a trace replays.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Op {
    Unary(unary::UnaryOp),
    /// Inputs (x, y = f(x), dy): dy * f'(x).
    UnaryGrad(unary::UnaryOp),
    Binary(binary::BinaryOp),
    Compare(binary::CmpOp),
    Where,
    Cast(DType),
    Reshape(Vec<usize>),
    Permute(Vec<usize>),
    BroadcastTo(Vec<usize>),
    Slice {
        begin: Vec<usize>,
        size: Vec<usize>,
    },
    Concat {
        axis: usize,
    },
    Gather {
        axis: usize,
    },
    OneHot {
        depth: usize,
        on: f64,
        off: f64,
        dtype: DType,
    },
    /// Zeros of `shape` with the input placed at offsets `before` (slice's gradient).
    Pad {
        before: Vec<usize>,
        shape: Vec<usize>,
    },
    /// Inputs (indices, dy): gather's gradient, summing dy rows into the
    /// gathered positions of an axis of size `dim`.
    GatherGrad {
        axis: usize,
        dim: usize,
    },
    MatMul {
        ta: bool,
        tb: bool,
    },
    Conv2d(conv::Conv2d),
    /// Gradient of conv2d with respect to its input, of the given shape.
    Conv2dInputGrad(conv::Conv2d, Vec<usize>),
    /// Gradient of conv2d with respect to its filter, of the given shape.
    Conv2dFilterGrad(conv::Conv2d, Vec<usize>),
    Pool(pool::Pool2d),
    /// Inputs (x, dy): gradient of the pool with respect to x.
    PoolGrad(pool::Pool2d),
    Reduce {
        op: reduce::ReduceOp,
        axes: Vec<usize>,
        keepdims: bool,
    },
    ArgReduce {
        max: bool,
        axis: usize,
    },
    Softmax {
        axis: usize,
        log: bool,
    },
    /// Inputs (logits [N, C], labels [N] int32): per-example loss [N].
    SparseXent,
    /// Same inputs: d loss / d logits = softmax(logits) - one_hot(labels).
    SparseXentGrad,
    /// A fused optimizer step: inputs (variable, gradient, slots...), outputs
    /// (new variable, new slots...).
    Optimizer(optim::Update),
    /// No inputs: `shape` filled with `value`.
    Fill {
        shape: Vec<usize>,
        value: f64,
        dtype: DType,
    },
    /// No inputs: seeded random values.
    Random(creation::Random),
    /// The input's values, through which no gradient flows (shares storage).
    StopGradient,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(u) => u.name(),
            Op::UnaryGrad(u) => u.grad_name(),
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Where => "where",
            Op::Cast(_) => "cast",
            Op::Reshape(_) => "reshape",
            Op::Permute(_) => "transpose",
            Op::BroadcastTo(_) => "broadcast_to",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Gather { .. } => "gather",
            Op::OneHot { .. } => "one_hot",
            Op::Pad { .. } => "pad",
            Op::GatherGrad { .. } => "gather_grad",
            Op::MatMul { .. } => "matmul",
            Op::Conv2d(_) => "conv2d",
            Op::Conv2dInputGrad(..) => "conv2d_backprop_input",
            Op::Conv2dFilterGrad(..) => "conv2d_backprop_filter",
            Op::Pool(p) => p.name(),
            Op::PoolGrad(p) => p.grad_name(),
            Op::Reduce { op, .. } => op.name(),
            Op::ArgReduce { max, .. } => {
                if *max {
                    "argmax"
                } else {
                    "argmin"
                }
            }
            Op::Softmax { log, .. } => {
                if *log {
                    "log_softmax"
                } else {
                    "softmax"
                }
            }
            Op::SparseXent => "sparse_softmax_cross_entropy_with_logits",
            Op::SparseXentGrad => "sparse_softmax_cross_entropy_grad",
            Op::Optimizer(u) => u.name(),
            Op::Fill { .. } => "fill",
            Op::Random(_) => "random",
            Op::StopGradient => "stop_gradient",
        }
    }

    /// The family whose files define this op.
    pub fn family(&self) -> Family {
        match self {
            Op::Unary(_) | Op::UnaryGrad(_) => Family::Unary,
            Op::Binary(_) | Op::Compare(_) | Op::Where => Family::Binary,
            Op::Cast(_)
            | Op::Reshape(_)
            | Op::Permute(_)
            | Op::BroadcastTo(_)
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Gather { .. }
            | Op::OneHot { .. }
            | Op::Pad { .. }
            | Op::GatherGrad { .. }
            | Op::StopGradient => Family::Layout,
            Op::MatMul { .. } => Family::MatMul,
            Op::Conv2d(_) | Op::Conv2dInputGrad(..) | Op::Conv2dFilterGrad(..) => Family::Conv,
            Op::Pool(_) | Op::PoolGrad(_) => Family::Pool,
            Op::Reduce { .. } | Op::ArgReduce { .. } => Family::Reduce,
            Op::Softmax { .. } | Op::SparseXent | Op::SparseXentGrad => Family::Softmax,
            Op::Optimizer(_) => Family::Optim,
            Op::Fill { .. } | Op::Random(_) => Family::Creation,
        }
    }
}

/// The op families: one file each in `ops`, `runtime::cpu` and `runtime::wgpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Unary,
    Binary,
    Layout,
    MatMul,
    Conv,
    Pool,
    Reduce,
    Softmax,
    Optim,
    Creation,
}
