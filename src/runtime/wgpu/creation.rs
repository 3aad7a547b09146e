//! Tensor creation: constants, fills, ranges and seeded random values.
//!
//! Random values are generated on the host with a counter-based generator
//! (SplitMix64), so a seed gives the same tensor on every device.

use super::layout::{LAYOUT, wtype};
use super::memory::GpuBuf;
use super::{Gpu, Launch, grid};
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
    let bits = match dtype {
        DType::I32 => (value as i32) as u32,
        DType::Bool => (value != 0.0) as u32,
        _ => (value as f32).to_bits(),
    };
    g.launch(&Launch {
        kernel: &LAYOUT,
        entry: "fill",
        ty: wtype(dtype),
        consts: &[],
        params: &[n as u32, bits, 0, 0],
        bufs: &[&out],
        groups: grid(n, 256),
    })?;
    Ok(out)
}
