//! Launch code of the fused optimizer steps (`Op::Optimizer`): one launch
//! per variable reads the variable, its gradient and slots and writes the
//! new variable and slots into new buffers, which the optimizer then
//! assigns.
//!
//! One kernel, `optimizer` (shaders/common.wgsl, optimizer_rules.wgsl and
//! optimizer.wgsl, built for f32 and f16), one entry per rule: `sgd`,
//! `sgd_momentum`, `adam`, `rmsprop`, `rmsprop_momentum` (the momentum-free
//! entries bind no velocity slot). The constants (momentum, betas, rho,
//! epsilon, weight decay, clip norm) are uniforms; the learning rate and
//! Adam's bias-corrected rate come from a small tensor instead, because
//! they change every step and a traced graph replays the same launch. With
//! clipping on (Keras' `clipnorm`), the gradient's L2 norm is bound too and
//! the gradient is scaled by `min(1, clip / norm)`; without it the gradient
//! stands in for that binding. One invocation per element, 256 per
//! workgroup; on CPU adapters with 64-bit integers eight per invocation
//! through `vec4<u64>` views where n and the offsets allow (`optimizer_wide`,
//! entries named with an 8: the same rules lane by lane).
//!
//! `nn::optimizers` builds the `Update`s; the rules' attributes and
//! Keras' formulas are in [`crate::core::op::optim`], the op in
//! `ops::optim`, the reference kernels in [`crate::runtime::cpu`]
//! (`cpu/optim.rs`).

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, ParamBlock, ParamsLayout, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::optim::*;
use crate::runtime::Operand;

pub static OPTIM: Kernel = Kernel::new(
    "optimizer",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/optimizer_rules.wgsl"),
        include_str!("../../../shaders/optimizer_params.wgsl"),
        include_str!("../../../shaders/optimizer.wgsl"),
    ],
    &[KType::F32, KType::F16],
    &[ParamsLayout::of::<OptimParams>()],
);

/// `OPTIM`'s entries eight f32 elements per invocation (shaders/wide.wgsl,
/// optimizer_wide.wgsl), for CPU adapters with 64-bit integers.
pub static OPTIM_WIDE: Kernel = Kernel::new(
    "optimizer_wide",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/optimizer_rules.wgsl"),
        include_str!("../../../shaders/optimizer_params.wgsl"),
        include_str!("../../../shaders/wide.wgsl"),
        include_str!("../../../shaders/optimizer_wide.wgsl"),
    ],
    &[KType::F32],
    &[ParamsLayout::of::<OptimParams>()],
);

params! {
    /// shaders/optimizer.wgsl's `Params`.
    pub struct OptimParams = "Params" {
        n: u32,
        /// bit 0: clipping; bit 1: Nesterov momentum
        flags: u32,
        _p0: u32,
        _p1: u32,
        _lr: f32,
        /// sgd: momentum; adam: beta1; rmsprop: rho
        c1: f32,
        /// adam: beta2; rmsprop: momentum
        c2: f32,
        eps: f32,
        _alpha: f32,
        weight_decay: f32,
        clip: f32,
        _p2: u32,
    }
}

impl OptimParams {
    fn of(u: &Update, n: usize) -> OptimParams {
        let (c1, c2, eps, weight_decay, nesterov) = match u.rule {
            Rule::Sgd { momentum, nesterov } => (momentum, 0.0, 0.0, 0.0, nesterov),
            Rule::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => (beta1, beta2, eps, weight_decay, false),
            Rule::RmsProp { rho, momentum, eps } => (rho, momentum, eps, 0.0, false),
        };
        OptimParams {
            n: n as u32,
            flags: (nesterov as u32) << 1 | u.clip.is_some() as u32,
            c1,
            c2,
            eps,
            weight_decay,
            clip: u.clip.unwrap_or(0.0),
            ..OptimParams::default()
        }
    }
}

/// (new variable, new slots...) from (variable, gradient, slots..., hyper,
/// and the gradient norm with clipping).
pub(crate) fn gpu(u: &Update, g: &Gpu, x: &[Operand], dtype: DType) -> Result<Vec<GpuBuf>> {
    let n = x[0].numel();
    let k = u.slots();
    let bytes = (n * dtype.size()) as u64;
    let outs: Vec<GpuBuf> = (0..=k).map(|_| g.alloc(u.name(), bytes)).collect::<Result<_>>()?;
    // Bindings: var, grad, slots read, norm, var out, slots out, hyper.
    let mut bufs: Vec<&GpuBuf> = vec![x[0].gpu_buf(), x[1].gpu_buf()];
    bufs.extend((0..k).map(|i| x[2 + i].gpu_buf()));
    // Without clipping the norm binding still exists; the gradient stands in.
    bufs.push(if u.clip.is_some() {
        x[3 + k].gpu_buf()
    } else {
        x[1].gpu_buf()
    });
    bufs.extend(outs.iter());
    bufs.push(x[2 + k].gpu_buf());
    // Eight per invocation where n and the views (all but the norm and
    // the rates, read as f32) allow.
    let views: Vec<&GpuBuf> = bufs
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 2 + k && i != bufs.len() - 1)
        .map(|(_, b)| *b)
        .collect();
    let wide = dtype == DType::F32 && g.elements_per_invocation(n, dtype, &views) == 8;
    let (kernel, entry, per) = if wide {
        (&OPTIM_WIDE, u.wide_entry(), 8)
    } else {
        (&OPTIM, u.entry(), 1)
    };
    g.launch(&Launch {
        kernel,
        entry,
        ty: ktype(dtype),
        consts: &[],
        params: ParamBlock::of(&OptimParams::of(u, n)),
        bufs: &bufs,
        groups: grid(n / per, 256),
    })?;
    Ok(outs)
}
