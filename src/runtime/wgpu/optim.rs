//! Fused optimizer steps (kernel: shaders/optimizer.wgsl): one kernel per
//! variable reads the variable, gradient and slots and writes their new
//! values, as new tensors (the optimizer assigns them). `nn::optimizers`
//! builds the `Update`s; this file holds their math.

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::optim::*;
use crate::runtime::Operand;

pub static OPTIM: Kernel = Kernel {
    name: "optimizer",
    sources: &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/optimizer_rules.wgsl"),
        include_str!("../../../shaders/optimizer.wgsl"),
    ],
    types: &[KType::F32, KType::F16],
};

/// (new variable, new slots...) from (variable, gradient, slots..., hyper, [norm]).
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
    g.launch(&Launch {
        kernel: &OPTIM,
        entry: u.entry(),
        ty: ktype(dtype),
        consts: &[],
        params: &u.params(n),
        bufs: &bufs,
        groups: grid(n, 256),
    })?;
    Ok(outs)
}
