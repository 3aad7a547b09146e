//! The ops layer: the public op functions (`tf.math`, `tf.nn`, `tf.linalg`
//! equivalents, also as methods on [`Tensor`]), their shape and gradient
//! rules, and `exec`.
//!
//! Every op that produces a tensor from tensors passes through the crate's
//! internal `exec` (public as [`apply`]): it checks devices, applies the op
//! family's shape rule, runs the kernel on the operands' [`Device`] (the
//! [`crate::runtime::Backend`]), optionally cross-checks the GPU against the
//! CPU (`WGFLOW_CROSS_CHECK=1`), and reports the op to the observers of
//! [`crate::tensor::observe`], the one place where `autodiff` and
//! `function` record ops.
//!
//! One file per family holds the shape rule (`infer`), the gradient rule
//! (`grad`), the tolerance of GPU against CPU and the public functions; the
//! op's attributes and element semantics are in [`crate::core::op`], its
//! kernels in [`crate::runtime::cpu`] and [`crate::runtime::wgpu`].
//!
//! f16: the CPU reference computes f16 ops in f32 and rounds the result; a
//! GPU without `SHADER_F16` does the same with GPU casts, so f16 tensors work
//! on every adapter and compute in f16 where the adapter can. bf16 ops
//! compute in f32 and round to nearest even on every device (TensorFlow's
//! CPU kernels do the same; WGSL has no bf16).

pub mod binary;
pub mod conv;
pub mod creation;
pub mod image;
pub mod layout;
pub mod matmul;
pub mod optim;
pub mod pool;
pub mod profile;
pub mod reduce;
pub mod softmax;
pub mod unary;
mod variable;

pub use crate::core::op::{Family, Op};
#[cfg(feature = "testing")]
pub use crate::runtime::wgpu::kernels;

use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::runtime::{Device, ExecContext, Operand};
use crate::tensor::{Tensor, observe};

pub use creation::{arange, full, ones, random_normal, random_uniform, truncated_normal, zeros};

impl Op {
    /// Output shape and dtype, or the error for these operands.
    pub(crate) fn infer(&self, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
        let (shape, dtype) = self.infer_rule(x)?;
        crate::core::shape::checked_numel(self.name(), &shape, dtype.size())?;
        Ok((shape, dtype))
    }

    fn infer_rule(&self, x: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
        match self.family() {
            Family::Unary => unary::infer(self, x),
            Family::Binary => binary::infer(self, x),
            Family::Layout => layout::infer(self, x),
            Family::MatMul => matmul::infer(self, x),
            Family::Conv => conv::infer(self, x),
            Family::Pool => pool::infer(self, x),
            Family::Reduce => reduce::infer(self, x),
            Family::Softmax => softmax::infer(self, x),
            Family::Optim => optim::infer(self, x),
            Family::Creation => creation::infer(self),
        }
    }

    /// Gradients of the inputs from the gradients of the outputs (`None`:
    /// no gradient flows, as for comparisons, indices and labels). `need[i]`
    /// false: input `i`'s gradient is not wanted, and the products and
    /// convolutions skip computing it (the first convolution's input
    /// gradient, a model's largest, is never used).
    pub(crate) fn grad(
        &self,
        x: &[&Tensor],
        y: &[Tensor],
        dy: &[Option<Tensor>],
        need: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let Some(g) = &dy[0] else {
            return Ok(vec![None; x.len()]);
        };
        match self.family() {
            Family::Unary => unary::grad(self, x, &y[0], g),
            Family::Binary => binary::grad(self, x, &y[0], g),
            Family::Layout => layout::grad(self, x, &y[0], g),
            Family::MatMul => matmul::grad(self, x, &y[0], g, need),
            Family::Conv => conv::grad(self, x, &y[0], g, need),
            Family::Pool => pool::grad(self, x, &y[0], g),
            Family::Reduce => reduce::grad(self, x, &y[0], g),
            Family::Softmax => softmax::grad(self, x, &y[0], g),
            Family::Optim | Family::Creation => Ok(vec![None; x.len()]),
        }
    }

    fn run_native(
        &self,
        x: &[&Tensor],
        shape: &[usize],
        dtype: DType,
        device: &Device,
        ctx: &ExecContext,
    ) -> Result<Vec<Tensor>> {
        if let Op::Reshape(_) | Op::StopGradient = self {
            return Ok(vec![Tensor::from_storage(
                x[0].0.storage.clone(),
                shape.to_vec(),
                dtype,
                device.clone(),
            )]);
        }
        let operands: Vec<Operand> = x.iter().map(|t| t.operand()).collect();
        let out = device.run(self, &operands, shape, dtype, ctx)?;
        Ok(out
            .into_iter()
            .map(|s| Tensor::from_storage(s, shape.to_vec(), dtype, device.clone()))
            .collect())
    }

    /// Runs the op (the shape rule has already run), computing 16-bit floats
    /// in f32 where the device has no arithmetic for them (bf16 everywhere,
    /// f16 without `SHADER_F16`). `ctx` carries a graph replay's planned
    /// buffers and launch parameters (eager ops pass
    /// `ExecContext::eager()`).
    pub(crate) fn run(
        &self,
        x: &[&Tensor],
        shape: &[usize],
        dtype: DType,
        device: &Device,
        ctx: &ExecContext,
    ) -> Result<Vec<Tensor>> {
        if dtype == DType::F64 && device.is_gpu() {
            return Err(Error::dtype(
                self.name(),
                &[dtype],
                format!("float64 exists only on the CPU device, not on {device}"),
            ));
        }
        let widen = |d: DType| device.computes_in(d) != d;
        // Creation ops write their attribute's dtype directly (halves are
        // built on the host where the device cannot write them).
        let native = matches!(self, Op::Cast(_) | Op::Reshape(_) | Op::StopGradient)
            || self.family() == Family::Creation
            || !(widen(dtype) || x.iter().any(|t| widen(t.dtype())));
        if native {
            return self.run_native(x, shape, dtype, device, ctx);
        }
        let up: Vec<Tensor> = x
            .iter()
            .map(|t| {
                if widen(t.dtype()) {
                    cast_raw(t, DType::F32)
                } else {
                    Ok((*t).clone())
                }
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = up.iter().collect();
        let out_dtype = if widen(dtype) { DType::F32 } else { dtype };
        let out = self.run_native(&refs, shape, out_dtype, device, ctx)?;
        // The f32 temporaries go back to a replaying graph's arena (the
        // inputs' own handles are shared, so they stay).
        up.into_iter().for_each(Tensor::recycle);
        if !widen(dtype) {
            return Ok(out);
        }
        let half = out.iter().map(|t| cast_raw(t, dtype)).collect();
        out.into_iter().for_each(Tensor::recycle);
        half
    }

    /// How far the GPU result may be from the CPU reference for these inputs.
    pub fn tolerance(&self, x: &[&Tensor], dtype: DType) -> Tol {
        let t = match self.family() {
            Family::Unary => unary::tolerance(self),
            Family::Binary => binary::TOL,
            // Gather's gradient sums in f32; the rest only moves data.
            Family::Layout if matches!(self, Op::GatherGrad { .. }) => Tol::new(1e-6, 1e-5),
            Family::Layout => Tol::EXACT,
            Family::MatMul => matmul::tolerance(self, x),
            Family::Conv => conv::tolerance(self, x),
            Family::Pool => pool::TOL,
            Family::Reduce => reduce::tolerance(self, x),
            Family::Softmax => softmax::TOL,
            Family::Optim => optim::TOL,
            Family::Creation => Tol::EXACT,
        };
        let has = |d: DType| dtype == d || x.iter().any(|t| t.dtype() == d);
        if has(DType::BF16) {
            t.bf16()
        } else if has(DType::F16) {
            t.f16()
        } else {
            t
        }
    }
}

/// How close a GPU result must be to the CPU reference:
/// `|gpu - cpu| <= atol + rtol * |cpu|` element by element (`np.allclose`'s
/// rule), used by `WGFLOW_CROSS_CHECK` and the conformance suite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    /// Absolute tolerance.
    pub atol: f64,
    /// Tolerance relative to the reference value.
    pub rtol: f64,
}

impl Tol {
    /// Bit-for-bit agreement (data movement, fills).
    pub const EXACT: Tol = Tol { atol: 0.0, rtol: 0.0 };
    /// A tolerance of `atol + rtol * |cpu|`.
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
    /// Loosened for bf16 results: every device computes bf16 ops in f32
    /// from the same bf16 inputs, so f32's tolerance holds before the
    /// result is rounded, and the rounding adds up to two bf16 ulps (2^-7
    /// of the value each) where the f32 results straddle a rounding
    /// boundary. Exact ops stay exact.
    pub fn bf16(self) -> Tol {
        if self == Tol::EXACT {
            return self;
        }
        Tol {
            atol: self.atol,
            rtol: self.rtol + 1.6e-2,
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

pub(crate) fn cross_check_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("WGFLOW_CROSS_CHECK").is_ok_and(|v| v == "1"))
}

/// An op given the wrong number of inputs (possible through [`apply`]) is an
/// error naming the op and the shapes it got.
fn check_arity(op: &Op, x: &[&Tensor]) -> Result<()> {
    let want = op.arity();
    if x.is_empty() {
        return Err(Error::arg(
            op.name(),
            "an op needs input tensors to run on their device; ops without inputs \
             (fill, random) run through ops::full, ops::random_normal, ...",
        ));
    }
    if want.contains(&x.len()) {
        return Ok(());
    }
    let shapes: Vec<&[usize]> = x.iter().map(|t| t.shape()).collect();
    let n = if want.end() == &usize::MAX {
        format!("at least {}", want.start())
    } else if want.start() == want.end() {
        want.start().to_string()
    } else {
        format!("{} to {}", want.start(), want.end())
    };
    Err(Error::shape(
        op.name(),
        &shapes,
        format!("takes {n} inputs, got {}", x.len()),
    ))
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
            return Err(Error::dtype(op, &[t.dtype()], "float64 exists only on the CPU device"));
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
    Ok(exec_multi(op, x)?.swap_remove(0))
}

/// `exec` for ops without inputs (creation), on `device`.
pub(crate) fn exec_on(op: Op, device: &Device) -> Result<Tensor> {
    let (shape, dtype) = op.infer(&[])?;
    let out = op.run(&[], &shape, dtype, device, &ExecContext::eager())?;
    observe::op(&op, &[], &out);
    out.into_iter()
        .next()
        .ok_or_else(|| Error::arg(op.name(), "the kernel returned no output"))
}

/// `exec` for ops with several outputs (the fused optimizer steps).
pub(crate) fn exec_multi(op: Op, x: &[&Tensor]) -> Result<Vec<Tensor>> {
    check_arity(&op, x)?;
    let device = same_device(op.name(), x)?;
    let (shape, dtype) = op.infer(x)?;
    let out = if profile::enabled() {
        profile::time(op.name(), &device, || {
            op.run(x, &shape, dtype, &device, &ExecContext::eager())
        })?
    } else {
        // Elementwise ops may wait to be fused with the next ones (the
        // profile times each op alone).
        op.run(x, &shape, dtype, &device, &ExecContext::lazy())?
    };
    if device.is_gpu() && cross_check_enabled() {
        observe::internal_reads(|| cross_check(&op, x, &out))?;
    }
    observe::op(&op, x, &out);
    Ok(out)
}

fn cross_check(op: &Op, x: &[&Tensor], out: &[Tensor]) -> Result<()> {
    let host: Vec<Tensor> = x.iter().map(|t| t.to_device(&Device::Cpu)).collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = host.iter().collect();
    let want = op.run(
        &refs,
        out[0].shape(),
        out[0].dtype(),
        &Device::Cpu,
        &ExecContext::eager(),
    )?;
    for (w, o) in want.iter().zip(out) {
        let (max, ok) = op.tolerance(x, o.dtype()).check(&o.to_f64_vec()?, &w.to_f64_vec()?);
        if !ok {
            let tol = op.tolerance(x, o.dtype());
            return Err(Error::CrossCheck {
                op: op.name().to_string(),
                shapes: x.iter().map(|t| t.shape().to_vec()).collect(),
                max_abs_err: max,
                tolerance: format!("atol {:e} + rtol {:e}", tol.atol, tol.rtol),
            });
        }
    }
    Ok(())
}

/// Sums `g` over the dimensions that broadcasting added or stretched, so
/// that it has `shape` again: the gradient rule of every broadcast.
pub(crate) fn sum_to(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let lead = g.rank() - shape.len();
    let axes: Vec<isize> = (0..g.rank())
        .filter(|&d| d < lead || (shape[d - lead] == 1 && g.shape()[d] != 1))
        .map(|d| d as isize)
        .collect();
    let s = if axes.is_empty() {
        g.clone()
    } else {
        reduce::reduce_sum(g, Some(&axes), true)?
    };
    layout::reshape(&s, &shape.iter().map(|&d| d as isize).collect::<Vec<_>>())
}

/// A cast that bypasses recording (used inside other ops).
pub(crate) fn cast_raw(t: &Tensor, to: DType) -> Result<Tensor> {
    if t.dtype() == to {
        return Ok(t.clone());
    }
    Ok(Op::Cast(to)
        .run_native(&[t], t.shape(), to, t.device(), &ExecContext::eager())?
        .swap_remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::binary::BinaryOp;

    #[test]
    fn cross_check_names_the_op_and_shapes() {
        let Ok(d) = crate::runtime::config::gpu(0) else {
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
        assert!(cross_check(&Op::Binary(BinaryOp::Add), &[&a, &a], &[right]).is_ok());
        let wrong = Tensor::from_vec(vec![2.0f32, 4.0, 7.0], &[3], &d).unwrap();
        match cross_check(&Op::Binary(BinaryOp::Add), &[&a, &a], &[wrong]) {
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
        assert!(t.check(&[f64::NAN, f64::INFINITY], &[f64::NAN, f64::INFINITY]).1);
        assert!(!t.check(&[1.0], &[f64::NAN]).1);
        assert!(!t.check(&[f64::NEG_INFINITY], &[f64::INFINITY]).1);
        assert!(!t.check(&[1.0], &[1.0, 2.0]).1);
        assert!(t.check(&[1.0 + 1e-7], &[1.0]).1);
    }
}
