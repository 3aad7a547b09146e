//! Launch code of the creation family's fills (`Op::Fill`, and the zeros,
//! identities and padding other families start from).
//!
//! A fill is the `fill` entry of the layout kernel (shaders/layout.wgsl),
//! one invocation per element, 256 per workgroup, writing the value's bits
//! as 32-bit words or, for f16, halves. On adapters without `SHADER_F16`
//! packed halves cannot be written one by one, so an f16 fill (and every
//! bf16 fill) is built on the host and uploaded instead.
//!
//! Random tensors (`Op::Random`) run no kernel: their values come from the
//! host's counter-based generator in [`crate::core::op::creation`], so a
//! seed gives the same tensor on every device, and are uploaded by
//! `GpuDevice`'s backend. Shape rules and the public functions are in
//! `ops::creation`, the reference kernels in
//! [`crate::runtime::cpu`] (`cpu/creation.rs`).

use super::layout::{LAYOUT, SmallParams, fill_bits, wtype};
use super::memory::GpuBuf;
use super::{Gpu, Launch, ParamBlock, grid};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::runtime::cpu::CpuData;

/// Bytes up to which a fill is built on the host and copied in.
const SMALL_FILL: usize = 64;

/// `n` copies of `value` in new GPU memory.
pub(crate) fn fill_gpu(g: &Gpu, n: usize, value: f64, dtype: DType) -> Result<GpuBuf> {
    // Packed halves cannot be written one by one without f16 support
    // (bf16 has none anywhere). A few values (a scalar operand) are copied
    // in, which unlike a launch lets waiting elementwise ops keep waiting
    // for the ones that read them (see `fusion`).
    if (dtype == DType::F16 && !g.f16) || dtype == DType::BF16 || n * dtype.size() <= SMALL_FILL {
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
