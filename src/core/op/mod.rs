//! The [`Op`] enum: every operation wgflow runs, with its attributes. This
//! is the vocabulary shared by every layer above: `ops` gives each
//! op its shape rule and gradient, the runtimes (`runtime::cpu`,
//! `runtime::wgpu`) their kernels, the [`crate::GradientTape`] and
//! the tracer of `function` record it, and a
//! `function::GraphDef` serializes it.
//!
//! Most users never build an `Op`: the functions of `ops` do. It is
//! public for `ops::apply` (TensorFlow's `tf.raw_ops`) and for
//! reading graphs.
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

/// Evaluates `$body` with `$k` bound to `$v` as a constant (a `const`,
/// which closures do not capture, so it survives rayon's layers) for each
/// listed variant of `$ty`, so that the per-element `match` of an op's
/// rule on it folds away and the CPU kernels' loops vectorize; other
/// variants bind `$k` to the value and keep the runtime dispatch.
macro_rules! with_const {
    ($ty:ident, $v:expr, |$k:ident| $body:expr, [$($var:ident),* $(,)?]) => {
        match $v {
            $($ty::$var => {
                #[allow(non_upper_case_globals)]
                const $k: $ty = $ty::$var;
                $body
            })*
            #[allow(unreachable_patterns)]
            $k => $body,
        }
    };
}
pub(crate) use with_const;

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
    /// Elementwise float math on one input.
    Unary(unary::UnaryOp),
    /// Inputs (x, y = f(x), dy): dy * f'(x).
    UnaryGrad(unary::UnaryOp),
    /// Inputs (a, b) of one dtype, broadcast against each other.
    Binary(binary::BinaryOp),
    /// Inputs (a, b) of one dtype, broadcast; a bool result.
    Compare(binary::CmpOp),
    /// Inputs (cond bool, a, b), all three broadcast: `a` where `cond`, else `b`.
    Where,
    /// Conversion to the dtype (`tf.cast` semantics: float to int truncates).
    Cast(DType),
    /// The same elements in a new shape of equal size; shares storage.
    Reshape(Vec<usize>),
    /// Transpose: output dimension `i` is input dimension `perm[i]`.
    Permute(Vec<usize>),
    /// Broadcast to the given shape (a copy).
    BroadcastTo(Vec<usize>),
    /// The block at offsets `begin` of extents `size`, one entry per dimension.
    Slice {
        /// First index in each dimension.
        begin: Vec<usize>,
        /// Extent in each dimension; `begin + size` must not pass the shape.
        size: Vec<usize>,
    },
    /// All inputs joined along `axis`; the other dimensions must agree.
    Concat {
        /// The (normalized) axis to join along.
        axis: usize,
    },
    /// Inputs (params, indices int32): rows of `params` along `axis`; the
    /// output shape is `params[..axis] + indices + params[axis + 1..]`.
    Gather {
        /// The (normalized) axis of `params` that indices select along.
        axis: usize,
    },
    /// int8 weights, four to an i32 word (low byte first), times a scale
    /// per row: inputs packed `[rows, ceil(cols / 4)]` i32 and scales
    /// `[rows]` f32; output `[rows, cols]` f32. What a SavedModel with int8
    /// weights reads its kernels through.
    DequantizeInt8 {
        /// Values per row.
        cols: usize,
    },
    /// Input int32 indices of shape `s`: output `s + [depth]`, `on` at each
    /// index and `off` elsewhere (an index outside `[0, depth)` gives a row
    /// of `off`).
    OneHot {
        /// Length of the new last axis.
        depth: usize,
        /// Value at the index.
        on: f64,
        /// Value everywhere else.
        off: f64,
        /// Output dtype.
        dtype: DType,
    },
    /// Zeros of `shape` with the input placed at offsets `before` (slice's gradient).
    Pad {
        /// Offset of the input inside the output, per dimension.
        before: Vec<usize>,
        /// Output shape.
        shape: Vec<usize>,
    },
    /// Inputs (indices, dy): gather's gradient, summing dy rows into the
    /// gathered positions of an axis of size `dim`.
    GatherGrad {
        /// The gather's axis.
        axis: usize,
        /// Size of that axis in the gather's `params`.
        dim: usize,
    },
    /// Inputs (a, b): batched matrix product with broadcast batch dimensions.
    MatMul {
        /// Use `a`'s last two axes transposed (`transpose_a`).
        ta: bool,
        /// Use `b`'s last two axes transposed (`transpose_b`).
        tb: bool,
    },
    /// Inputs (a `[..., M, K]` f32, packed `[N, ceil(K / 4)]` i32, scales
    /// `[N]` f32): `a @ w^T` with `w = dequantize_int8(packed, scales, K)`,
    /// the weights expanded inside the GEMM kernel, never stored as f32.
    /// Compiled functions read int8 weights through it (see
    /// [`Op::DequantizeInt8`]).
    MatMulInt8,
    /// Inputs (x NHWC, filter HWIO): 2-D convolution.
    Conv2d(conv::Conv2d),
    /// Inputs (x NHWC, packed `[O, ceil(KH * KW * CG / 4)]` i32, scales `[O]`
    /// f32): `conv2d` with the HWIO filter of the given shape `[KH, KW, CG,
    /// O]` whose output channel `o` is row `o` of
    /// `dequantize_int8(packed, scales, KH * KW * CG)`, expanded inside the
    /// convolution kernel.
    Conv2dInt8(conv::Conv2d, Vec<usize>),
    /// Gradient of conv2d with respect to its input, of the given shape.
    Conv2dInputGrad(conv::Conv2d, Vec<usize>),
    /// Gradient of conv2d with respect to its filter, of the given shape.
    Conv2dFilterGrad(conv::Conv2d, Vec<usize>),
    /// Input x NHWC: max or average pooling over 2-D windows.
    Pool(pool::Pool2d),
    /// Inputs (x, dy): gradient of the pool with respect to x.
    PoolGrad(pool::Pool2d),
    /// A reduction over `axes` (sum, mean, max, min, prod).
    Reduce {
        /// Which reduction.
        op: reduce::ReduceOp,
        /// Normalized, sorted axes to reduce.
        axes: Vec<usize>,
        /// Keep the reduced axes as size 1 instead of dropping them.
        keepdims: bool,
    },
    /// Int32 index of the largest (or smallest) element along `axis`; the
    /// first one on ties.
    ArgReduce {
        /// `true` for argmax, `false` for argmin.
        max: bool,
        /// The (normalized) axis, which must not be empty.
        axis: usize,
    },
    /// Softmax or log-softmax along `axis`.
    Softmax {
        /// The (normalized) axis the probabilities sum to 1 along.
        axis: usize,
        /// Log-softmax instead of softmax.
        log: bool,
    },
    /// Inputs (logits `[N, C]`, labels `[N]` int32): per-example loss `[N]`.
    SparseXent,
    /// Same inputs: d loss / d logits = softmax(logits) - one_hot(labels).
    SparseXentGrad,
    /// A fused optimizer step: inputs (variable, gradient, slots...), outputs
    /// (new variable, new slots...).
    Optimizer(optim::Update),
    /// No inputs: `shape` filled with `value`.
    Fill {
        /// Output shape.
        shape: Vec<usize>,
        /// Every element's value, converted to `dtype`.
        value: f64,
        /// Output dtype.
        dtype: DType,
    },
    /// No inputs: seeded random values.
    Random(creation::Random),
    /// The input's values, through which no gradient flows (shares storage).
    StopGradient,
}

impl Op {
    /// The op's TensorFlow-style name (`"add"`, `"conv2d_backprop_input"`,
    /// `"reduce_sum"`): what errors, profiles and graph dumps print.
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
            Op::DequantizeInt8 { .. } => "dequantize_int8",
            Op::Pad { .. } => "pad",
            Op::GatherGrad { .. } => "gather_grad",
            Op::MatMul { .. } => "matmul",
            Op::MatMulInt8 => "matmul_int8",
            Op::Conv2d(_) => "conv2d",
            Op::Conv2dInt8(..) => "conv2d_int8",
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

    /// How many inputs the op takes (a fused optimizer step's exact count
    /// depends on its rule and is checked by its shape rule).
    pub fn arity(&self) -> std::ops::RangeInclusive<usize> {
        match self {
            Op::Fill { .. } | Op::Random(_) => 0..=0,
            Op::Unary(_)
            | Op::Cast(_)
            | Op::Reshape(_)
            | Op::Permute(_)
            | Op::BroadcastTo(_)
            | Op::Slice { .. }
            | Op::OneHot { .. }
            | Op::Pad { .. }
            | Op::Pool(_)
            | Op::Reduce { .. }
            | Op::ArgReduce { .. }
            | Op::Softmax { .. }
            | Op::StopGradient => 1..=1,
            Op::Binary(_)
            | Op::Compare(_)
            | Op::Gather { .. }
            | Op::GatherGrad { .. }
            | Op::DequantizeInt8 { .. }
            | Op::MatMul { .. }
            | Op::Conv2d(_)
            | Op::Conv2dInputGrad(..)
            | Op::Conv2dFilterGrad(..)
            | Op::PoolGrad(_)
            | Op::SparseXent
            | Op::SparseXentGrad => 2..=2,
            Op::UnaryGrad(_) | Op::Where | Op::MatMulInt8 | Op::Conv2dInt8(..) => 3..=3,
            Op::Concat { .. } => 1..=usize::MAX,
            Op::Optimizer(_) => 3..=6,
        }
    }

    /// The op's shape attribute, where it has one: reshape's target,
    /// broadcast_to's and fill's shape, slice's size, pad's output shape,
    /// the convolution gradients' output shape. A graph that serves several
    /// input shapes re-derives it per call (see `function::Dim`).
    pub fn shape_attr(&self) -> Option<&[usize]> {
        match self {
            Op::Reshape(s) | Op::BroadcastTo(s) => Some(s),
            Op::Fill { shape, .. } | Op::Pad { shape, .. } => Some(shape),
            Op::Slice { size, .. } => Some(size),
            Op::Conv2dInputGrad(_, s) | Op::Conv2dFilterGrad(_, s) => Some(s),
            Op::Random(r) => Some(&r.shape),
            _ => None,
        }
    }

    /// The op with its shape attribute replaced by `dims` (`None` for an op
    /// without one).
    pub fn with_shape_attr(&self, dims: Vec<usize>) -> Option<Op> {
        let mut op = self.clone();
        match &mut op {
            Op::Reshape(s) | Op::BroadcastTo(s) => *s = dims,
            Op::Fill { shape, .. } | Op::Pad { shape, .. } => *shape = dims,
            Op::Slice { size, .. } => *size = dims,
            Op::Conv2dInputGrad(_, s) | Op::Conv2dFilterGrad(_, s) => *s = dims,
            Op::Random(r) => r.shape = dims,
            _ => return None,
        }
        Some(op)
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
            | Op::DequantizeInt8 { .. }
            | Op::StopGradient => Family::Layout,
            Op::MatMul { .. } | Op::MatMulInt8 => Family::MatMul,
            Op::Conv2d(_) | Op::Conv2dInt8(..) | Op::Conv2dInputGrad(..) | Op::Conv2dFilterGrad(..) => Family::Conv,
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
    /// Elementwise float math and its gradients.
    Unary,
    /// Broadcast arithmetic, comparisons and `where`.
    Binary,
    /// Data movement and casts: reshape, transpose, slice, concat, gather…
    Layout,
    /// Batched matrix products.
    MatMul,
    /// 2-D convolution and its gradients.
    Conv,
    /// 2-D pooling and its gradients.
    Pool,
    /// Reductions and arg-reductions.
    Reduce,
    /// Softmax, log-softmax and sparse cross-entropy.
    Softmax,
    /// Fused optimizer steps.
    Optim,
    /// Fills and seeded random values (no inputs).
    Creation,
}
