//! Tensor creation: constants, fills, ranges and seeded random values.
//!
//! Random values are generated on the host with a counter-based generator
//! (SplitMix64), so a seed gives the same tensor on every device.

use super::layout::{LAYOUT, SmallParams, fill_bits, wtype};
use super::memory::GpuBuf;
use super::{Gpu, Launch, ParamBlock, grid};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::runtime::cpu::CpuData;

/// `n` copies of `value` in new GPU memory.
pub(crate) fn fill_gpu(g: &Gpu, n: usize, value: f64, dtype: DType) -> Result<GpuBuf> {
    if dtype == DType::F16 && !g.f16 {
        // Packed halves cannot be written one by one without f16 support.
        return g.upload("fill", &CpuData::from_f64(dtype, &vec![value; n]).to_bytes());
    }
    let out = g.alloc("fill", (n * dtype.size()) as u64)?;
    g.launch(&Launch {
        kernel: &LAYOUT,
        entry: "fill",
        ty: wtype(dtype),
        consts: &[],
        params: ParamBlock::of(&SmallParams {
            a: n as u32,
            b: fill_bits(value, dtype),
            c: 0,
            d: 0,
        }),
        bufs: &[&out],
        groups: grid(n, 256),
    })?;
    Ok(out)
}
