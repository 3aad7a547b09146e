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
//! `leaky_relu`'s `alpha`. One invocation per element, or per four through
//! vec4 views (`main4`, `grad4`) where the count is a multiple of 4; 256 per
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

/// `UNARY`'s entries eight f32 elements per invocation through `vec4<u64>`
/// views (shaders/wide.wgsl, unary_wide.wgsl), for CPU adapters with
/// 64-bit integers.
pub static UNARY_WIDE: Kernel = Kernel::new(
    "unary_wide",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/elementwise.wgsl"),
        include_str!("../../../shaders/unary.wgsl"),
        include_str!("../../../shaders/wide.wgsl"),
        include_str!("../../../shaders/unary_wide.wgsl"),
    ],
    &[KType::F32],
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
    let y = g.alloc(op.name(), (crate::core::shape::numel(out) * dtype.size()) as u64)?;
    encode(op, g, x, out, dtype, &y)?;
    Ok(y)
}

/// Encodes `op` writing `y` (allocated for `out`).
pub(crate) fn encode(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType, y: &GpuBuf) -> Result<()> {
    let (Op::Unary(u) | Op::UnaryGrad(u)) = *op else {
        unreachable!()
    };
    let n = crate::core::shape::numel(out);
    let alpha = if let UnaryOp::LeakyRelu(a) = u { a } else { 0.0 };
    // Eight or four elements per invocation through vec4<u64> or vec4
    // views where n and the buffers' offsets allow.
    let bufs: Vec<&GpuBuf> = match op {
        Op::Unary(_) => vec![x[0].gpu_buf(), y],
        _ => vec![x[0].gpu_buf(), y, x[1].gpu_buf(), x[2].gpu_buf()],
    };
    let per = g.elements_per_invocation(n, dtype, &bufs);
    let kernel = if per == 8 { &UNARY_WIDE } else { &UNARY };
    let entry = match (op, per) {
        (Op::Unary(_), 8) => "main8",
        (Op::Unary(_), 4) => "main4",
        (Op::Unary(_), _) => "main",
        (_, 8) => "grad8",
        (_, 4) => "grad4",
        _ => "grad",
    };
    // The op as a constant, so that each op's kernel is straight-line code;
    // gradients of zero derivatives take it as a uniform instead, where a
    // compiler would fold dy * 0 to 0 (shaders/unary.wgsl).
    let op_const = [
        ("OP", u.code() as f64),
        ("UNIFORM_GRAD", u.zero_derivative() as u32 as f64),
    ];
    g.launch(&Launch {
        kernel,
        entry,
        ty: ktype(dtype),
        consts: if matches!(op, Op::Unary(_)) {
            &op_const[..1]
        } else {
            &op_const
        },
        params: ParamBlock::of(&UnaryParams {
            n: n as u32,
            alpha,
            op: u.code(),
            _p: 0,
        }),
        bufs: &bufs,
        groups: grid(n / per, 256),
    })
}
