//! Launch code of the elementwise binary family: arithmetic with NumPy
//! broadcasting, comparisons and `where` (`Op::Binary`, `Op::Compare`,
//! `Op::Where`).
//!
//! One kernel, `binary` (shaders/common.wgsl, elementwise.wgsl and
//! binary.wgsl, built for f32, f16, i32 and u32), with entry points
//! `binary` (the op code selects the arithmetic), `cmp` (compiled for the
//! operands' type, writes a u32 mask) and `where_` (the condition is bound
//! last), and `binary4` / `cmp4` / `where4`, which take four elements per
//! invocation through vec4 views where the layout allows (and their
//! eight-wide forms in `BINARY_WIDE`). 256 invocations per workgroup.
//!
//! Each operand's strides over the output (0 on broadcast dimensions) are
//! computed here and adjacent dimensions collapsed, so that at most 8
//! non-contiguous dimensions reach the shader; more is a shape error. The
//! `mode` field lets the kernel skip index math: 0 when every operand is laid
//! out like the output, 2 / 3 when one is and the other repeats with period
//! `period` (a bias over the last dimensions), 4 / 5 when each value of the
//! other repeats `period` times (a column), 6 / 7 when the other is one
//! value, 1 otherwise. The same plan serves every adapter.
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

/// `BINARY`'s `binary` and `cmp` eight elements per invocation through
/// `vec4<u64>` views (shaders/wide.wgsl, binary_wide.wgsl), for 32-bit
/// element types on CPU adapters with 64-bit integers.
pub static BINARY_WIDE: Kernel = Kernel::new(
    "binary_wide",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/elementwise.wgsl"),
        include_str!("../../../shaders/binary.wgsl"),
        include_str!("../../../shaders/wide.wgsl"),
        include_str!("../../../shaders/binary_wide.wgsl"),
    ],
    &[KType::F32, KType::I32, KType::U32],
    &[ParamsLayout::of::<BinaryParams>()],
);

/// Rows per invocation of `binary8_rows` and `cmp8_rows` (the override
/// ROWS of shaders/binary_wide.wgsl).
const ROW_RUN: usize = 8;

params! {
    /// shaders/binary.wgsl's `Params`; shape and strides as WGSL's
    /// `array<vec4<u32>, 2>` (rank <= 8).
    pub struct BinaryParams = "Params" {
        n: u32,
        rank: u32,
        period: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
        _p3: u32,
        _p4: u32,
        shape: [u32; 8],
        sa: [u32; 8],
        sb: [u32; 8],
        sc: [u32; 8],
    }
}

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let mut y = g.alloc(op.name(), (numel(out) * dtype.size()) as u64)?;
    if let Op::Binary(b) = op
        && let Some((code, _)) = crate::core::op::binary::int_check(*b)
        && dtype == DType::I32
        && numel(out) > 0
    {
        y.depend_on(&check_ints(g, x[1], code)?);
    }
    encode(op, g, x, out, dtype, &y)?;
    Ok(y)
}

/// Encodes `op` writing `y` (allocated for `out`).
pub(crate) fn encode(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType, y: &GpuBuf) -> Result<()> {
    let n = numel(out);
    let contiguous = strides(out);
    // Operand strides over the output in the kernel's order: a, b, condition.
    let ops: Vec<Operand> = match op {
        Op::Where => vec![x[1], x[2], x[0]],
        _ => vec![x[0], x[1]],
    };
    let mut st: Vec<Vec<usize>> = ops.iter().map(|t| broadcast_strides(t.shape(), out)).collect();
    let mode = mode_of(&ops, &st, out, &contiguous);
    let period = match mode {
        2 => ops[1].numel(),
        3 => ops[0].numel(),
        4 => n / ops[1].numel().max(1),
        5 => n / ops[0].numel().max(1),
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
        period: period as u32,
        shape: dims8(&sh),
        sa: dims8(&st[0]),
        sb: dims8(&st[1]),
        sc: dims8(&st[2]),
        ..BinaryParams::default()
    };
    // Eight or four elements per invocation through vec4<u64> or vec4
    // views (`binary8`, `binary4`, `cmp8`, `cmp4`, `where8`, `where4`)
    // where every such vector of the output reads one vector or one value
    // of each operand; else `binary` and `cmp` take runs of BINARY_RUN (4)
    // elements in the broadcast modes 2 to 5, one element otherwise
    // (shaders/binary.wgsl).
    let (a, b) = (x[0].gpu_buf(), x[1].gpu_buf());
    let per = match op {
        // `where4` and `where8` when all three are laid out like the output.
        Op::Where if mode != 0 => 1,
        Op::Where => {
            let bufs = [x[0].gpu_buf(), x[1].gpu_buf(), x[2].gpu_buf(), y];
            g.elements_per_invocation(n, dtype, &bufs)
        }
        _ if mode == 1 => 1,
        _ => {
            let per = g.elements_per_invocation(n, x[0].dtype(), &[a, b, y]);
            if (2..=5).contains(&mode) && period % per != 0 {
                // A period of a multiple of 4 (not 8) still loads vec4s.
                if per == 8 && period % 4 == 0 { 4 } else { 1 }
            } else {
                per
            }
        }
    };
    // The vector views: of the operands, but where one is broadcast value
    // by value (modes 4 to 7) its view is not read, and may be shorter
    // than one vector, so the other operand stands in for it.
    let a_vec = if matches!(mode, 5 | 7) { b } else { a };
    let b_vec = if matches!(mode, 4 | 6) { a } else { b };
    let wide = [a, b, a_vec, b_vec, y];
    let (kernel, entry, bufs): (&Kernel, &'static str, Vec<&GpuBuf>) = match (op, per) {
        (Op::Binary(_), 8) => (&BINARY_WIDE, "binary8", wide.to_vec()),
        (Op::Binary(_), 4) => (&BINARY, "binary4", wide.to_vec()),
        (Op::Binary(_), _) => (&BINARY, "binary", vec![a, b, y]),
        (Op::Compare(_), 8) => (&BINARY_WIDE, "cmp8", wide.to_vec()),
        (Op::Compare(_), 4) => (&BINARY, "cmp4", wide.to_vec()),
        (Op::Compare(_), _) => (&BINARY, "cmp", vec![a, b, y]),
        // The condition binds last (bindings 5, 14 and 15).
        (Op::Where, _) => {
            let entry = match per {
                8 => "where8",
                4 => "where4",
                _ => "where_",
            };
            let kernel = if per == 8 { &BINARY_WIDE } else { &BINARY };
            (kernel, entry, vec![x[1].gpu_buf(), x[2].gpu_buf(), y, x[0].gpu_buf()])
        }
        _ => unreachable!(),
    };
    let ty = match op {
        Op::Compare(_) => ktype(x[0].dtype()),
        _ => ktype(dtype),
    };
    let per = if per == 1 && !matches!(op, Op::Where) && (2..=5).contains(&mode) {
        4
    } else {
        per
    };
    let mut invocations = n.div_ceil(per);
    // A row's eight-wide words each serve ROW_RUN rows (`binary8_rows`).
    // They read only the vector views.
    let (entry, bufs) = match entry {
        "binary8" | "cmp8" if matches!(mode, 2 | 3) => {
            let words = period / 8;
            invocations = words * (n / period).div_ceil(ROW_RUN);
            let entry = if entry == "binary8" {
                "binary8_rows"
            } else {
                "cmp8_rows"
            };
            (entry, vec![a, b, y])
        }
        e => (e, bufs),
    };
    let consts = [("OP", code as f64), ("MODE", mode as f64)];
    let rows_consts = [consts[0], consts[1], ("ROWS", ROW_RUN as f64)];
    g.launch(&Launch {
        kernel,
        entry,
        ty,
        consts: if entry.ends_with("_rows") {
            &rows_consts[..]
        } else {
            &consts[..]
        },
        params: ParamBlock::of(&params),
        bufs: &bufs,
        groups: grid(invocations, 256),
    })
}

/// Reports a zero divisor or negative exponent among `b`'s values, where
/// TensorFlow refuses the op, in a status record for the result to carry
/// (read back with it); shaders/layout.wgsl's `int_check`.
fn check_ints(g: &Gpu, b: Operand, code: u32) -> Result<std::sync::Arc<super::memory::StatusRecord>> {
    let rec = g.status_record()?;
    let m = b.numel();
    let params = super::layout::SmallParams {
        a: m as u32,
        b: code,
        c: rec.index,
        ..Default::default()
    };
    g.launch(&Launch {
        kernel: &super::layout::LAYOUT,
        entry: "int_check",
        ty: KType::U32,
        consts: &[],
        params: ParamBlock::of(&params),
        bufs: &[b.gpu_buf(), &rec.buf],
        groups: grid(m, 256),
    })?;
    Ok(rec)
}

/// The shader's fast mode for operands with strides `st` over `out` (see
/// shaders/binary.wgsl): 0 all laid out like the output; with two operands
/// where one is laid out like the output, 6/7 the other is one value, 2/3 it
/// repeats over the leading dimensions (a row, a bias), 4/5 each of its
/// values repeats over the trailing dimensions (a column); 1 otherwise.
fn mode_of(ops: &[Operand], st: &[Vec<usize>], out: &[usize], contiguous: &[usize]) -> u32 {
    let n = numel(out);
    let like_out = |s: &Vec<usize>| {
        out.iter()
            .zip(s.iter().zip(contiguous))
            .all(|(&d, (a, b))| d == 1 || a == b)
    };
    if st.iter().all(like_out) {
        return 0;
    }
    let [a, b] = ops else {
        return 1;
    };
    if n == 0 {
        return 1;
    }
    // Its shape ends the output's: it repeats with its own length.
    let row = |t: &Operand| !t.shape().is_empty() && out.ends_with(without_leading_ones(t.shape()));
    let column = |t: &Operand| is_column(t.shape(), out);
    let full = |t: &Operand| t.numel() == n;
    match (full(a), full(b)) {
        (true, _) if b.numel() == 1 => 6,
        (_, true) if a.numel() == 1 => 7,
        (true, _) if row(b) => 2,
        (_, true) if row(a) => 3,
        (true, _) if column(b) && b.numel() > 0 => 4,
        (_, true) if column(a) && a.numel() > 0 => 5,
        _ => 1,
    }
}
