//! Elementwise binary ops with NumPy broadcasting, comparisons and `where`
//! (kernel: shaders/binary.wgsl).
//!
//! Operands must share a dtype, as in TensorFlow (no implicit promotion).
//! Integer arithmetic wraps on overflow and `x / 0` gives `x`, which is what

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::binary::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub static BINARY: Kernel = Kernel {
    name: "binary",
    sources: &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/elementwise.wgsl"),
        include_str!("../../../shaders/binary.wgsl"),
    ],
    types: &[KType::F32, KType::F16, KType::I32, KType::U32],
};

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let n = numel(out);
    let contiguous = strides(out);
    // Operand strides over the output in the kernel's order: a, b, condition.
    let ops: Vec<Operand> = match op {
        Op::Where => vec![x[1], x[2], x[0]],
        _ => vec![x[0], x[1]],
    };
    let mut st: Vec<Vec<usize>> = ops.iter().map(|t| broadcast_strides(t.shape(), out)).collect();
    // A full operand is laid out like the output; one whose shape ends the
    // output's repeats with its own length (see the shader's fast modes).
    let suffix = |t: &Operand| !t.shape().is_empty() && out.ends_with(without_leading_ones(t.shape()));
    let full = |t: &Operand| t.numel() == n;
    let mode = if st.iter().all(|s| {
        out.iter()
            .zip(s.iter().zip(&contiguous))
            .all(|(&d, (a, b))| d == 1 || a == b)
    }) {
        0
    } else if ops.len() == 2 && full(&ops[0]) && suffix(&ops[1]) {
        2
    } else if ops.len() == 2 && full(&ops[1]) && suffix(&ops[0]) {
        3
    } else {
        1
    };
    let period = match mode {
        2 => ops[1].numel(),
        3 => ops[0].numel(),
        _ => 0,
    };
    while st.len() < 3 {
        st.push(vec![0; out.len()]);
    }
    let (sh, st) = collapse(out, &st);
    if sh.len() > 8 {
        return Err(Error::shape(
            op.name(),
            &[out],
            "broadcasting over more than 8 non-contiguous dimensions",
        ));
    }
    let code = match op {
        Op::Binary(b) => *b as u32,
        Op::Compare(c) => *c as u32,
        _ => 0,
    };
    let mut params = vec![n as u32, sh.len() as u32, mode, code, period as u32, 0, 0, 0];
    for v in [&sh, &st[0], &st[1], &st[2]] {
        let mut w = [0u32; 8];
        for (i, &d) in v.iter().enumerate() {
            w[i] = d as u32;
        }
        params.extend_from_slice(&w);
    }
    let y = g.alloc(op.name(), (n * dtype.size()) as u64)?;
    let (entry, ty, bufs): (&'static str, KType, Vec<&GpuBuf>) = match op {
        Op::Binary(_) => ("binary", ktype(dtype), vec![x[0].gpu_buf(), x[1].gpu_buf(), &y]),
        Op::Compare(_) => ("cmp", ktype(x[0].dtype()), vec![x[0].gpu_buf(), x[1].gpu_buf(), &y]),
        Op::Where => (
            "where_",
            ktype(dtype),
            vec![x[1].gpu_buf(), x[2].gpu_buf(), &y, x[0].gpu_buf()],
        ),
        _ => unreachable!(),
    };
    g.launch(&Launch {
        kernel: &BINARY,
        entry,
        ty,
        consts: &[],
        params: &params,
        bufs: &bufs,
        groups: grid(n, 256),
    })?;
    Ok(y)
}
