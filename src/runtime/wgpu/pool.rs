//! Max and average pooling 2-D over NHWC, and their gradients
//! (kernel: shaders/pool.wgsl).

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub static POOL: Kernel = Kernel {
    name: "pool",
    sources: &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/pool.wgsl"),
    ],
    types: &[KType::F32, KType::F16],
};

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let (Op::Pool(p) | Op::PoolGrad(p)) = op else {
        unreachable!()
    };
    let n = numel(out);
    let y = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    let params = p.params(x[0].shape(), n)?;
    let (entry, bufs): (&'static str, Vec<&GpuBuf>) = match op {
        Op::Pool(_) => ("forward", vec![x[0].gpu_buf(), &y]),
        _ => ("backward", vec![x[0].gpu_buf(), &y, x[1].gpu_buf()]),
    };
    g.launch(&Launch {
        kernel: &POOL,
        entry,
        ty: ktype(dtype),
        consts: &[],
        params: &params,
        bufs: &bufs,
        groups: grid(n, 256),
    })?;
    Ok(y)
}
