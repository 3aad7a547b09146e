//! Softmax, log-softmax and sparse softmax cross-entropy from logits
//! (kernel: shaders/softmax.wgsl).

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
            let (entry, groups) = if inner == 1 && !g.cpu_adapter() {
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
            g.launch(&Launch {
                kernel: &SOFTMAX,
                entry: if let Op::SparseXent = op {
                    "xent_rows"
                } else {
                    "xent_grad_rows"
                },
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
                groups: fold(rows),
            })?;
            y.depend_on(&rec);
        }
    }
    Ok(y)
}
