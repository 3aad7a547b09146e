//! Launch code of the elementwise unary family (`Op::Unary`) and of its
//! gradients (`Op::UnaryGrad`).
//!
//! One kernel, `unary` (shaders/common.wgsl, elementwise.wgsl and
//! unary.wgsl, built for f32 and f16; the math runs in f32 and rounds once
//! on store). Entry `main` computes `y = f(x)`; entry `grad` computes
//! `dx = dy * f'(x)` and is also given `y = f(x)`, through which some
//! derivatives are cheaper. `main`'s op code is an override constant (a
//! pipeline per op: llvmpipe runs a switch on a uniform through every case);
//! `grad`'s is a uniform (see shaders/unary.wgsl for why), as is
//! `leaky_relu`'s `alpha`. One invocation per element, 256 per
//! workgroup, the same on every adapter.
//!
//! Shape and gradient rules are in `ops::unary`, the op codes and
//! element semantics in [`crate::core::op::unary`], the reference kernels in
//! [`crate::runtime::cpu`] (`cpu/unary.rs`).

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, ParamBlock, ParamsLayout, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::unary::*;
use crate::core::op::*;
use crate::runtime::Operand;

pub static UNARY: Kernel = Kernel::new(
    "unary",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/elementwise.wgsl"),
        include_str!("../../../shaders/unary.wgsl"),
    ],
    &[KType::F32, KType::F16],
    &[ParamsLayout::of::<UnaryParams>()],
);

params! {
    /// shaders/unary.wgsl's `Params`.
    pub struct UnaryParams = "Params" {
        n: u32,
        alpha: f32,
        op: u32,
        _p: u32,
    }
}

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let (Op::Unary(u) | Op::UnaryGrad(u)) = *op else {
        unreachable!()
    };
    let n = crate::core::shape::numel(out);
    let y = g.alloc(u.name(), (n * dtype.size()) as u64)?;
    let alpha = if let UnaryOp::LeakyRelu(a) = u { a } else { 0.0 };
    let (entry, bufs): (&'static str, Vec<&GpuBuf>) = match op {
        Op::Unary(_) => ("main", vec![x[0].gpu_buf(), &y]),
        _ => ("grad", vec![x[0].gpu_buf(), &y, x[1].gpu_buf(), x[2].gpu_buf()]),
    };
    let op_const = [("OP", u.code() as f64)];
    g.launch(&Launch {
        kernel: &UNARY,
        entry,
        ty: ktype(dtype),
        consts: if entry == "main" { &op_const } else { &[] },
        params: ParamBlock::of(&UnaryParams {
            n: n as u32,
            alpha,
            op: u.code(),
            _p: 0,
        }),
        bufs: &bufs,
        groups: grid(n, 256),
    })?;
    Ok(y)
}
