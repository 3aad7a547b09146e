//! Launch code of the softmax family: softmax and log-softmax along an axis
//! (`Op::Softmax`) and sparse softmax cross-entropy from logits with its
//! gradient (`Op::SparseXent`, `Op::SparseXentGrad`).
//!
//! One kernel, `softmax` (shaders/common.wgsl, status.wgsl and
//! softmax.wgsl, built for f32 and f16; max and sum are taken in f32). The
//! input is viewed as `[rows, r, inner]` around the axis. On a GPU a
//! softmax over the last axis runs a workgroup of 256 per row
//! (`softmax_rows`, a workgroup tree for the max and the sum); on CPU
//! adapters such as llvmpipe, and for any other axis, one invocation per
//! `(row, inner)` pair (`softmax_cols`): barriers cost a CPU adapter more
//! than the serial loop. The cross-entropy entries likewise run a
//! workgroup per row of `[batch, classes]` logits on a GPU (`xent_rows`,
//! `xent_grad_rows`), an invocation per row on CPU adapters (`xent_cols`,
//! `xent_grad_cols`: the workgroup form took 4 ms of llvmpipe's 33 ms MLP
//! step for [128, 10] logits, each).
//!
//! A label outside `[0, classes)` cannot fail the launch: the kernel writes
//! it to the device's status words (this thread's slot), and the next
//! readback returns the `InvalidArgument` the CPU reference gives at once.
//!
//! Shape and gradient rules are in `ops::softmax`, the row view and
//! the label error in [`crate::core::op::softmax`], the reference kernels
//! in [`crate::runtime::cpu`] (`cpu/softmax.rs`).

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, ParamBlock, ParamsLayout, fold, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::softmax::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub static SOFTMAX: Kernel = Kernel::new(
    "softmax",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/status.wgsl"),
        include_str!("../../../shaders/softmax.wgsl"),
    ],
    &[KType::F32, KType::F16],
    &[ParamsLayout::of::<SoftmaxParams>()],
);

params! {
    /// shaders/softmax.wgsl's `Params`.
    pub struct SoftmaxParams = "Params" {
        rows: u32,
        r: u32,
        inner: u32,
        n_out: u32,
        slot: u32,
        log: u32,
        _p1: u32,
        _p2: u32,
    }
}

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let n = numel(out);
    let mut y = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    if n == 0 {
        return Ok(y);
    }
    let ty = ktype(dtype);
    match op {
        Op::Softmax { axis, log } => {
            let (rows, r, inner) = view(x[0].shape(), *axis);
            let (entry, groups) = if inner == 1 && !g.cpu_style() {
                ("softmax_rows", fold(rows))
            } else {
                ("softmax_cols", grid(rows * inner, 256))
            };
            g.launch(&Launch {
                kernel: &SOFTMAX,
                entry,
                ty,
                consts: &[],
                params: ParamBlock::of(&SoftmaxParams {
                    rows: rows as u32,
                    r: r as u32,
                    inner: inner as u32,
                    n_out: (rows * inner) as u32,
                    log: *log as u32,
                    ..SoftmaxParams::default()
                }),
                bufs: &[x[0].gpu_buf(), &y],
                groups,
            })?;
        }
        _ => {
            let rec = g.status_record()?;
            let (rows, r) = (x[0].shape()[0], x[0].shape()[1]);
            let (entry, groups) = match (op, g.cpu_style()) {
                (Op::SparseXent, false) => ("xent_rows", fold(rows)),
                (_, false) => ("xent_grad_rows", fold(rows)),
                (Op::SparseXent, true) => ("xent_cols", grid(rows, 256)),
                (_, true) => ("xent_grad_cols", grid(rows, 256)),
            };
            g.launch(&Launch {
                kernel: &SOFTMAX,
                entry,
                ty,
                consts: &[],
                params: ParamBlock::of(&SoftmaxParams {
                    rows: rows as u32,
                    r: r as u32,
                    inner: 1,
                    n_out: rows as u32,
                    slot: rec.index,
                    ..SoftmaxParams::default()
                }),
                bufs: &[x[0].gpu_buf(), &y, x[1].gpu_buf(), &rec.buf],
                groups,
            })?;
            y.depend_on(&rec);
        }
    }
    Ok(y)
}
