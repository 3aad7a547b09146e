//! Ops. Every op that produces a tensor from tensors passes through
//! [`exec`]: it checks devices, applies the op family's shape rule, runs the
//! CPU reference or the GPU kernel, optionally cross-checks the GPU against
//! the CPU (`WGFLOW_CROSS_CHECK=1`), and is the one place where autodiff and
//! tracing record ops.
//!
//! One file per family holds the shape rule (`infer`), the CPU reference
//! (`cpu`), the GPU dispatch (`gpu`) and the tolerance of GPU against CPU.
//!
//! f16: the CPU reference computes f16 ops in f32 and rounds the result; a
//! GPU without `SHADER_F16` does the same with GPU casts, so f16 tensors work
//! on every adapter and compute in f16 where the adapter can.

pub mod binary;
pub mod conv;
pub mod creation;
pub mod layout;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;

use crate::device::Device;
use crate::device::gpu::{KType, Kernel};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use creation::{arange, full, ones, random_normal, random_uniform, truncated_normal, zeros};

/// An op and its attributes: what the tape records and a trace replays.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Unary(unary::UnaryOp),
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
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(u) => u.name(),
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
        }
    }

    fn family(&self) -> Family {
        match self {
            Op::Unary(_) => Family::Unary,
            Op::Binary(_) | Op::Compare(_) | Op::Where => Family::Binary,
            Op::Cast(_)
            | Op::Reshape(_)
            | Op::Permute(_)
            | Op::BroadcastTo(_)
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Gather { .. }
            | Op::OneHot { .. } => Family::Layout,
            Op::MatMul { .. } => Family::MatMul,
            Op::Conv2d(_) | Op::Conv2dInputGrad(..) | Op::Conv2dFilterGrad(..) => Family::Conv,
            Op::Pool(_) | Op::PoolGrad(_) => Family::Pool,
            Op::Reduce { .. } | Op::ArgReduce { .. } => Family::Reduce,
            Op::Softmax { .. } | Op::SparseXent | Op::SparseXentGrad => Family::Softmax,
        }
    }

    /// Output shape and dtype, or the error for these operands.
    pub(crate) fn infer(&self, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
        match self.family() {
            Family::Unary => unary::infer(self, x),
            Family::Binary => binary::infer(self, x),
            Family::Layout => layout::infer(self, x),
            Family::MatMul => matmul::infer(self, x),
            Family::Conv => conv::infer(self, x),
            Family::Pool => pool::infer(self, x),
            Family::Reduce => reduce::infer(self, x),
            Family::Softmax => softmax::infer(self, x),
        }
    }

    fn run_native(
        &self,
        x: &[&Tensor],
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if let Op::Reshape(_) = self {
            return Ok(Tensor::from_storage(
                x[0].0.storage.clone(),
                shape.to_vec(),
                dtype,
                device.clone(),
            ));
        }
        match device {
            Device::Cpu => {
                let data = match self.family() {
                    Family::Unary => unary::cpu(self, x, shape, dtype),
                    Family::Binary => binary::cpu(self, x, shape, dtype),
                    Family::Layout => layout::cpu(self, x, shape, dtype),
                    Family::MatMul => matmul::cpu(self, x, shape, dtype),
                    Family::Conv => conv::cpu(self, x, shape, dtype),
                    Family::Pool => pool::cpu(self, x, shape, dtype),
                    Family::Reduce => reduce::cpu(self, x, shape, dtype),
                    Family::Softmax => softmax::cpu(self, x, shape, dtype),
                }?;
                Ok(Tensor::from_cpu(data, shape.to_vec()))
            }
            Device::Gpu(g) => {
                let buf = match self.family() {
                    Family::Unary => unary::gpu(self, g, x, shape, dtype),
                    Family::Binary => binary::gpu(self, g, x, shape, dtype),
                    Family::Layout => layout::gpu(self, g, x, shape, dtype),
                    Family::MatMul => matmul::gpu(self, g, x, shape, dtype),
                    Family::Conv => conv::gpu(self, g, x, shape, dtype),
                    Family::Pool => pool::gpu(self, g, x, shape, dtype),
                    Family::Reduce => reduce::gpu(self, g, x, shape, dtype),
                    Family::Softmax => softmax::gpu(self, g, x, shape, dtype),
                }?;
                Ok(Tensor::from_gpu(buf, shape.to_vec(), dtype, device))
            }
        }
    }

    /// Runs the op, computing f16 in f32 where the device has no f16 arithmetic.
    fn run(&self, x: &[&Tensor], shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let has_f16 = dtype == DType::F16 || x.iter().any(|t| t.dtype() == DType::F16);
        let native =
            matches!(self, Op::Cast(_) | Op::Reshape(_)) || !has_f16 || device.f16_arithmetic();
        if native {
            return self.run_native(x, shape, dtype, device);
        }
        let up: Vec<Tensor> = x
            .iter()
            .map(|t| {
                if t.dtype() == DType::F16 {
                    cast_raw(t, DType::F32)
                } else {
                    Ok((*t).clone())
                }
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = up.iter().collect();
        let out_dtype = if dtype == DType::F16 {
            DType::F32
        } else {
            dtype
        };
        let out = self.run_native(&refs, shape, out_dtype, device)?;
        if dtype == DType::F16 {
            cast_raw(&out, DType::F16)
        } else {
            Ok(out)
        }
    }

    /// How far the GPU result may be from the CPU reference for these inputs.
    pub fn tolerance(&self, x: &[&Tensor], dtype: DType) -> Tol {
        let t = match self.family() {
            Family::Unary => unary::tolerance(self),
            Family::Binary => binary::TOL,
            Family::Layout => Tol::EXACT,
            Family::MatMul => matmul::tolerance(self, x),
            Family::Conv => conv::tolerance(self, x),
            Family::Pool => pool::TOL,
            Family::Reduce => reduce::tolerance(self, x),
            Family::Softmax => softmax::TOL,
        };
        if dtype == DType::F16 || x.iter().any(|t| t.dtype() == DType::F16) {
            t.f16()
        } else {
            t
        }
    }
}

#[derive(Clone, Copy)]
enum Family {
    Unary,
    Binary,
    Layout,
    MatMul,
    Conv,
    Pool,
    Reduce,
    Softmax,
}

/// |gpu - cpu| <= atol + rtol * |cpu| element by element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

impl Tol {
    pub const EXACT: Tol = Tol {
        atol: 0.0,
        rtol: 0.0,
    };
    pub const fn new(atol: f64, rtol: f64) -> Tol {
        Tol { atol, rtol }
    }
    /// Loosened for f16 storage (11-bit significand, eps 500 times f32's
    /// for the errors that scale) and f16 arithmetic.
    pub fn f16(self) -> Tol {
        Tol {
            atol: (self.atol * 500.0).max(4e-3),
            rtol: self.rtol.max(8e-3),
        }
    }
    /// Largest |a - e| and whether every element is within tolerance. NaNs
    /// must match NaNs; infinities must match exactly.
    pub fn check(&self, got: &[f64], want: &[f64]) -> (f64, bool) {
        let mut max = 0.0f64;
        let mut ok = got.len() == want.len();
        for (&g, &w) in got.iter().zip(want) {
            if w.is_nan() || g.is_nan() {
                ok &= w.is_nan() && g.is_nan();
                continue;
            }
            if w.is_infinite() || g.is_infinite() {
                ok &= g == w;
                continue;
            }
            let e = (g - w).abs();
            max = max.max(e);
            ok &= e <= self.atol + self.rtol * w.abs();
        }
        (max, ok)
    }
}

fn cross_check_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("WGFLOW_CROSS_CHECK").is_ok_and(|v| v == "1"))
}

fn same_device(op: &'static str, x: &[&Tensor]) -> Result<Device> {
    let d = x[0].device();
    if x.iter().any(|t| t.device() != d) {
        return Err(Error::DeviceMismatch {
            op,
            devices: x.iter().map(|t| t.device().to_string()).collect(),
        });
    }
    if d.is_gpu() {
        if let Some(t) = x.iter().find(|t| t.dtype() == DType::F64) {
            return Err(Error::dtype(
                op,
                &[t.dtype()],
                "float64 exists only on the CPU device",
            ));
        }
    }
    Ok(d.clone())
}

/// Runs `op` on `x` exactly as the named functions do (`tf.raw_ops` style).
/// The conformance suite drives every kernel through this.
pub fn apply(op: Op, x: &[&Tensor]) -> Result<Tensor> {
    exec(op, x)
}

/// The single entry point of every op (see the module docs).
pub(crate) fn exec(op: Op, x: &[&Tensor]) -> Result<Tensor> {
    let device = same_device(op.name(), x)?;
    let (shape, dtype) = op.infer(x)?;
    let out = op.run(x, &shape, dtype, &device)?;
    if device.is_gpu() && cross_check_enabled() {
        cross_check(&op, x, &out)?;
    }
    Ok(out)
}

fn cross_check(op: &Op, x: &[&Tensor], out: &Tensor) -> Result<()> {
    let host: Vec<Tensor> = x
        .iter()
        .map(|t| t.to_device(&Device::Cpu))
        .collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = host.iter().collect();
    let want = op
        .run(&refs, out.shape(), out.dtype(), &Device::Cpu)?
        .to_f64_vec()?;
    let got = out.to_f64_vec()?;
    let tol = op.tolerance(x, out.dtype());
    let (max, ok) = tol.check(&got, &want);
    if !ok {
        return Err(Error::CrossCheck {
            op: op.name().to_string(),
            shapes: x.iter().map(|t| t.shape().to_vec()).collect(),
            max_abs_err: max,
            tolerance: format!("atol {:e} + rtol {:e}", tol.atol, tol.rtol),
        });
    }
    Ok(())
}

/// A cast that bypasses recording (used inside other ops).
pub(crate) fn cast_raw(t: &Tensor, to: DType) -> Result<Tensor> {
    if t.dtype() == to {
        return Ok(t.clone());
    }
    Op::Cast(to).run_native(&[t], t.shape(), to, t.device())
}

/// Every WGSL kernel family, for validation and tooling.
pub fn kernels() -> [&'static Kernel; 9] {
    [
        &unary::UNARY,
        &binary::BINARY,
        &layout::LAYOUT,
        &layout::CAST,
        &matmul::MATMUL,
        &conv::CONV,
        &pool::POOL,
        &reduce::REDUCE,
        &softmax::SOFTMAX,
    ]
}

/// Kernel element type for arithmetic on `dtype` (booleans are 0/1 words).
pub(crate) fn ktype(dtype: DType) -> KType {
    match dtype {
        DType::F32 | DType::F64 => KType::F32,
        DType::F16 => KType::F16,
        DType::I32 => KType::I32,
        DType::Bool => KType::U32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::binary::BinaryOp;

    #[test]
    fn cross_check_names_the_op_and_shapes() {
        let Ok(d) = crate::config::gpu(0) else {
            assert_eq!(
                std::env::var("WGFLOW_ALLOW_NO_GPU").as_deref(),
                Ok("1"),
                "no GPU adapter"
            );
            eprintln!("SKIPPED: no GPU adapter (WGFLOW_ALLOW_NO_GPU=1)");
            return;
        };
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &d).unwrap();
        let right = a.add(&a).unwrap();
        assert!(cross_check(&Op::Binary(BinaryOp::Add), &[&a, &a], &right).is_ok());
        let wrong = Tensor::from_vec(vec![2.0f32, 4.0, 7.0], &[3], &d).unwrap();
        match cross_check(&Op::Binary(BinaryOp::Add), &[&a, &a], &wrong) {
            Err(Error::CrossCheck {
                op,
                shapes,
                max_abs_err,
                ..
            }) => {
                assert_eq!(op, "add");
                assert_eq!(shapes, vec![vec![3], vec![3]]);
                assert_eq!(max_abs_err, 1.0);
            }
            other => panic!("expected a cross-check error, got {other:?}"),
        }
    }

    #[test]
    fn tolerance_checks_nan_and_infinity() {
        let t = Tol::new(1e-6, 1e-6);
        assert!(
            t.check(&[f64::NAN, f64::INFINITY], &[f64::NAN, f64::INFINITY])
                .1
        );
        assert!(!t.check(&[1.0], &[f64::NAN]).1);
        assert!(!t.check(&[f64::NEG_INFINITY], &[f64::INFINITY]).1);
        assert!(!t.check(&[1.0], &[1.0, 2.0]).1);
        assert!(t.check(&[1.0 + 1e-7], &[1.0]).1);
    }
}
