//! Launch code of the elementwise binary family: arithmetic with NumPy
//! broadcasting, comparisons and `where` (`Op::Binary`, `Op::Compare`,
//! `Op::Where`).
//!
//! One kernel, `binary` (shaders/common.wgsl, elementwise.wgsl and
//! binary.wgsl, built for f32, f16, i32 and u32), with three entry points:
//! `binary` (the op code selects the arithmetic), `cmp` (compiled for the
//! operands' type, writes a u32 mask) and `where_` (the condition is bound
//! last). One invocation per output element, 256 per workgroup.
//!
//! Each operand's strides over the output (0 on broadcast dimensions) are
//! computed here and adjacent dimensions collapsed, so that at most 8
//! non-contiguous dimensions reach the shader; more is a shape error. The
//! `mode` field lets the kernel skip index math: 0 when every operand is laid
//! out like the output, 2 / 3 when one is and the other repeats with period
//! `period` (a bias over the last dimensions), 1 otherwise. The same plan
//! serves every adapter.
//!
//! Shape and dtype rules are in `ops::binary`, the op codes in
//! [`crate::core::op::binary`], the reference kernels in
//! [`crate::runtime::cpu`] (`cpu/binary.rs`).

use super::memory::GpuBuf;
use super::{Gpu, KType, Kernel, Launch, ParamBlock, ParamsLayout, dims8, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::binary::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

pub static BINARY: Kernel = Kernel::new(
    "binary",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/elementwise.wgsl"),
        include_str!("../../../shaders/binary.wgsl"),
    ],
    &[KType::F32, KType::F16, KType::I32, KType::U32],
    &[ParamsLayout::of::<BinaryParams>()],
);

params! {
    /// shaders/binary.wgsl's `Params`; shape and strides as WGSL's
    /// `array<vec4<u32>, 2>` (rank <= 8).
    pub struct BinaryParams = "Params" {
        n: u32,
        rank: u32,
        mode: u32,
        op: u32,
        period: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
        shape: [u32; 8],
        sa: [u32; 8],
        sb: [u32; 8],
        sc: [u32; 8],
    }
}

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
    let params = BinaryParams {
        n: n as u32,
        rank: sh.len() as u32,
        mode,
        op: code,
        period: period as u32,
        shape: dims8(&sh),
        sa: dims8(&st[0]),
        sb: dims8(&st[1]),
        sc: dims8(&st[2]),
        ..BinaryParams::default()
    };
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
        params: ParamBlock::of(&params),
        bufs: &bufs,
        groups: grid(n, 256),
    })?;
    Ok(y)
}
