//! Launch code of the convolution family: 2-D convolution of NHWC
//! activations with HWIO filters (`Op::Conv2d`) and its input and filter
//! gradients (`Op::Conv2dInputGrad`, `Op::Conv2dFilterGrad`), grouped and
//! depthwise included.
//!
//! One kernel, `conv` (shaders/common.wgsl, gemm.wgsl and conv.wgsl, built
//! for f32 and f16), with two plans:
//! * implicit GEMM (GPUs): the tiled GEMM core of gemm.wgsl (entry `gemm`,
//!   64x64 output tiles, or `gemm_reg` where the register path is on) with
//!   conv.wgsl's loaders, which gather patches while loading tiles, so no
//!   patch matrix is ever stored. `mode` selects the product: 0 forward,
//!   1 input gradient, 2 filter gradient. Groups are batch entries of the
//!   grid's z dimension, launched in chunks of at most 65535. The filter
//!   gradient's long sum over `N*OH*OW` is split into `splits` slices
//!   (enough for about 256 tiles) added afterwards by
//!   `reduce::sum_slices`.
//! * im2col (CPU adapters such as llvmpipe, or wherever
//!   [`GemmVariant`](super::GemmVariant) selects the register path): entry
//!   `im2col` writes the patch matrix, then one strided batched GEMM per
//!   group runs through `matmul.rs`'s `GemmLaunch`; the input gradient is a
//!   GEMM into patches summed back by `col2im`. Used only while the patch
//!   matrix fits in one binding; otherwise the implicit plan runs.
//!
//! On GPUs, a convolution large enough to be autotuned (see `tune`) times
//! both plans, as cuDNN's algorithm search does: the implicit GEMM's
//! kernels and, where the patch matrix fits one binding and 1 GiB, the
//! im2col plan, whose GEMMs are tuned as matmuls and so reach the matmul's
//! kernels (the wide and cooperative ones); the fastest that agrees with
//! the reference is kept for the shape class.
//!
//! Where cooperative matrices are on (f16 on adapters that have them, see
//! [`GemmVariant::Cooperative`](super::GemmVariant::Cooperative)), the
//! implicit plan runs gemm_coop.wgsl's `gemm_coop` over the same loaders
//! (kernel `conv_coop`), and the im2col plan's GEMMs take the matmul's
//! cooperative kernels (`gemm_coop_wide` where it runs).
//!
//! Empty inputs, outputs or windows give zeros with a fill.
//!
//! Geometry (output size, padding, groups) comes from
//! [`crate::core::op::conv`]; shape and gradient rules are in
//! `ops::conv`, the reference kernels in [`crate::runtime::cpu`]
//! (`cpu/conv.rs`).

use super::memory::GpuBuf;
use super::tune::Choice;
use super::{Gpu, GpuDevice, KType, Kernel, Launch, ParamBlock, ParamsLayout, chunks, grid, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::conv::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

const CONV_SRC: [&str; 5] = [
    include_str!("../../../shaders/common.wgsl"),
    include_str!("../../../shaders/gemm.wgsl"),
    include_str!("../../../shaders/gemm_scalar.wgsl"),
    include_str!("../../../shaders/conv_patch.wgsl"),
    include_str!("../../../shaders/conv.wgsl"),
];
const CONV_COOP_SRC: [&str; 7] = [
    CONV_SRC[0],
    CONV_SRC[1],
    CONV_SRC[2],
    CONV_SRC[3],
    CONV_SRC[4],
    include_str!("../../../shaders/gemm_coop_tile.wgsl"),
    include_str!("../../../shaders/gemm_coop.wgsl"),
];
const CONV_COOP8_SRC: [&str; 7] = [
    CONV_SRC[0],
    CONV_SRC[1],
    CONV_SRC[2],
    CONV_SRC[3],
    CONV_SRC[4],
    include_str!("../../../shaders/gemm_coop_tile.wgsl"),
    include_str!("../../../shaders/gemm_coop8.wgsl"),
];
const CONV_PARAMS: &[ParamsLayout] = &[ParamsLayout::of::<ConvParams>()];
const COOP: &[&str] = &["wgpu_cooperative_matrix"];

pub static CONV: Kernel = Kernel::new("conv", &CONV_SRC, &[KType::F32, KType::F16], CONV_PARAMS);

/// CONV's implicit GEMM on cooperative matrices: entry `gemm_coop`
/// (shaders/gemm_coop.wgsl), f16 only, for adapters that have them.
pub static CONV_COOP: Kernel = Kernel::enabling("conv_coop", &CONV_COOP_SRC, &[KType::F16], CONV_PARAMS, COOP);

/// CONV_COOP's twin on 8x8x8 cooperative matrices (gemm_coop8.wgsl),
/// built in its place where the device's are (`GpuDevice::coop8`).
pub(crate) static CONV_COOP8: Kernel =
    Kernel::enabling("conv_coop8", &CONV_COOP8_SRC, &[KType::F16], CONV_PARAMS, COOP);
pub(crate) static CONV_COOP8_UNCHECKED: Kernel = Kernel::unchecked(
    "conv_coop8_unchecked",
    &CONV_COOP8_SRC,
    &[KType::F16],
    CONV_PARAMS,
    COOP,
);

// The implicit GEMMs built without wgpu's runtime checks (see
// `Kernel::checked`): their workgroup-array indexes are gemm.wgsl's and
// gemm_coop_tile.wgsl's, in range by construction, and every loop ends.
static CONV_UNCHECKED: Kernel =
    Kernel::unchecked("conv_unchecked", &CONV_SRC, &[KType::F32, KType::F16], CONV_PARAMS, &[]);
static CONV_COOP_UNCHECKED: Kernel =
    Kernel::unchecked("conv_coop_unchecked", &CONV_COOP_SRC, &[KType::F16], CONV_PARAMS, COOP);

/// The module of an implicit GEMM's `choice` (`gemm_coop` or the tiled
/// entry), checked or not.
pub(crate) fn implicit_module(c: Choice) -> &'static Kernel {
    match (c.entry == "gemm_coop", c.unchecked) {
        (false, false) => &CONV,
        (false, true) => &CONV_UNCHECKED,
        (true, false) => &CONV_COOP,
        (true, true) => &CONV_COOP_UNCHECKED,
    }
}

/// The forward convolution with an int8 filter (`Op::Conv2dInt8`) as an
/// implicit GEMM: conv.wgsl's patches with conv_int8.wgsl's filter, whose
/// values are expanded while tiles load.
pub static CONV_INT8: Kernel = Kernel::new(
    "conv_int8",
    &[
        include_str!("../../../shaders/common.wgsl"),
        include_str!("../../../shaders/int8.wgsl"),
        include_str!("../../../shaders/gemm.wgsl"),
        include_str!("../../../shaders/gemm_scalar.wgsl"),
        include_str!("../../../shaders/conv_patch.wgsl"),
        include_str!("../../../shaders/conv_int8.wgsl"),
    ],
    &[KType::F32],
    &[ParamsLayout::of::<ConvParams>()],
);

params! {
    /// shaders/conv.wgsl's `Params`.
    pub struct ConvParams = "Params" {
        n: u32,
        h: u32,
        w: u32,
        c: u32,
        oh: u32,
        ow: u32,
        o: u32,
        kh: u32,
        kw: u32,
        cg: u32,
        og: u32,
        splits: u32,
        sh: u32,
        sw: u32,
        dh: u32,
        dw: u32,
        pt: u32,
        pl: u32,
        kc: u32,
        ktotal: u32,
        gm: u32,
        gn: u32,
        b0: u32,
        mode: u32,
        tx0: u32,
        ty0: u32,
        words: u32,
        _pad: u32,
    }
}

impl ConvParams {
    /// The geometry of `g`; the GEMM fields (splits on) are zero.
    fn of(g: &Geom) -> ConvParams {
        let u = |v: usize| v as u32;
        ConvParams {
            n: u(g.n),
            h: u(g.h),
            w: u(g.w),
            c: u(g.c),
            oh: u(g.oh),
            ow: u(g.ow),
            o: u(g.o),
            kh: u(g.kh),
            kw: u(g.kw),
            cg: u(g.cg),
            og: u(g.og),
            splits: 1,
            sh: u(g.sh),
            sw: u(g.sw),
            dh: u(g.dh),
            dw: u(g.dw),
            pt: u(g.pt),
            pl: u(g.pl),
            ..ConvParams::default()
        }
    }
}

/// Whether the patch matrix of a float convolution of geometry `g` fits
/// one binding, so that it can run as explicit patch matrices and strided
/// GEMMs.
pub(crate) fn cols_fit(gd: &GpuDevice, g: &Geom, dtype: DType) -> bool {
    cols_bytes(g, dtype) <= gd.max_binding()
}

/// The bytes of a convolution's patch matrices (saturating).
fn cols_bytes(g: &Geom, dtype: DType) -> u64 {
    [g.g, g.n, g.oh, g.ow, g.kh, g.kw, g.cg, dtype.size()]
        .into_iter()
        .fold(1u64, |a, v| a.saturating_mul(v as u64))
}

/// The most scratch memory the autotuner lets the im2col plan take on
/// GPUs (TensorFlow bounds cuDNN's algorithm workspaces the same way):
/// beyond it, the implicit GEMM runs without one.
const WORKSPACE: u64 = 1 << 30;

/// Whether the autotuner times the im2col plan for a convolution of
/// geometry `g`: its patch matrix fits one binding and [`WORKSPACE`].
pub(crate) fn im2col_candidate(gd: &GpuDevice, g: &Geom, dtype: DType) -> bool {
    cols_fit(gd, g, dtype) && cols_bytes(g, dtype) <= WORKSPACE
}

/// Whether a float convolution of geometry `g` runs as explicit patch
/// matrices and strided GEMMs without being tuned: on register-path
/// adapters, while the patch matrix fits one binding. (Elsewhere that plan
/// is one of the autotuner's candidates.)
pub(crate) fn im2col_plan(gd: &GpuDevice, g: &Geom, dtype: DType) -> bool {
    gd.conv_im2col() && cols_fit(gd, g, dtype)
}

/// The autotuner's name for the im2col plan among the implicit GEMM's
/// entries (`conv::im2col + matmul::...`).
pub(crate) const IM2COL: &str = "im2col";

/// What a convolution whose tuned class chose `t` runs: its choice, or,
/// where that is the im2col plan and this convolution cannot take it
/// (`candidate` false, see [`im2col_candidate`]; the class is shared by
/// sizes on either side), the fastest implicit GEMM timed.
pub(crate) fn tuned_choice(t: &super::tune::Tuned, candidate: bool) -> Choice {
    if t.choice.entry != IM2COL || candidate {
        return t.choice;
    }
    t.times
        .iter()
        .filter(|(c, _)| c.entry != IM2COL)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(
            Choice {
                entry: "gemm",
                unchecked: false,
            },
            |&(c, _)| c,
        )
}

pub(crate) fn gpu(op: &Op, gd: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    if let Op::Conv2dInt8(_, fs) = op {
        return gpu_int8(op, gd, x, fs, out);
    }
    let g = geom_of(op, &[x[0].shape(), x[1].shape()])?;
    let n_out = numel(out);
    let pix = g.n * g.oh * g.ow;
    let kg = g.kh * g.kw * g.cg;
    if n_out == 0 || pix == 0 || kg == 0 {
        return super::creation::fill_gpu(gd, n_out, 0.0, dtype);
    }
    let y = gd.alloc(op.name(), (n_out * dtype.size()) as u64)?;
    if im2col_plan(gd, &g, dtype) {
        gpu_im2col(op, gd, x, &g, dtype, &y)?;
        return Ok(y);
    }
    let (mode, [gm, gn, ktotal], splits) = implicit_gemm(op, &g);
    let kc = ktotal.div_ceil(splits);
    let batches = g.g * splits;
    // The implicit GEMM, into `y` (through the slices' sum where split;
    // the slices' buffer only for this plan, from the pool).
    let implicit = |gd: &Gpu, coop: bool, unchecked: bool| -> Result<()> {
        let partial = if splits > 1 {
            Some(gd.alloc(op.name(), (splits * n_out * dtype.size()) as u64)?)
        } else {
            None
        };
        let dst = partial.as_ref().unwrap_or(&y);
        let (entry, tiles) = if coop {
            // 64x64 tiles, like gemm's.
            ("gemm_coop", [gn.div_ceil(64), gm.div_ceil(64), batches])
        } else {
            super::matmul::gemm_grid(gd, gm, gn, batches)
        };
        let kernel = implicit_module(Choice { entry, unchecked });
        for ([x0, y0, b0], groups) in chunks(tiles) {
            let u = |v: usize| v as u32;
            gd.launch(&Launch {
                kernel,
                entry,
                ty: ktype(dtype),
                consts: &[],
                params: ParamBlock::of(&ConvParams {
                    splits: u(splits),
                    kc: u(kc),
                    ktotal: u(ktotal),
                    gm: u(gm),
                    gn: u(gn),
                    b0: u(b0),
                    mode: u(mode),
                    tx0: u(x0),
                    ty0: u(y0),
                    ..ConvParams::of(&g)
                }),
                bufs: &[x[0].gpu_buf(), x[1].gpu_buf(), dst],
                groups,
            })?;
        }
        if let Some(p) = &partial {
            super::reduce::sum_slices(gd, p, &y, splits, n_out, dtype)?;
        }
        Ok(())
    };
    let run = |gd: &Gpu, c: Choice| match c.entry {
        IM2COL => gpu_im2col(op, gd, x, &g, dtype, &y),
        entry => implicit(gd, entry == "gemm_coop", c.unchecked),
    };
    let candidate = im2col_candidate(gd, &g, dtype);
    match tuned(
        gd,
        op.name(),
        dtype,
        [gm, gn, ktotal, batches],
        candidate,
        &y,
        |c, eager| run(eager, c),
    )? {
        Some(t) => run(gd, tuned_choice(&t, candidate))?,
        None => {
            let unchecked = super::gemm_checks() == super::GemmChecks::Off && gd.unchecked_gemm();
            gd.with_coop(dtype, op.name(), |coop| implicit(gd, coop, unchecked))?
        }
    }
    Ok(y)
}

/// The autotuned plan of a convolution whose implicit GEMM has `dims` (m,
/// n, k, batch), where there is a choice to tune (see `tune`): the
/// implicit GEMM on `gemm_coop` or the tiled kernel (each in the builds
/// [`super::matmul::builds`] lists), or, where it is a `candidate` (see
/// [`im2col_candidate`]), the im2col plan, whose strided GEMMs are tuned as matmuls (so that they
/// reach the matmul's kernels, cooperative ones included).
/// `run(choice, eager)` runs one into `out` on the eager `Gpu` it is given.
fn tuned(
    gd: &Gpu,
    op: &'static str,
    dtype: DType,
    dims: [usize; 4],
    candidate: bool,
    out: &GpuBuf,
    run: impl Fn(Choice, &Gpu) -> Result<()>,
) -> Result<Option<std::sync::Arc<super::tune::Tuned>>> {
    if !super::tune::tunable(gd.gemm_forced(), super::tune::flops(dims)) {
        return Ok(None);
    }
    let mut entries = Vec::new();
    if gd.gemm_coop(dtype, op)? {
        entries.push("gemm_coop");
    }
    entries.push(super::matmul::gemm_grid(gd, dims[0], dims[1], dims[3]).0);
    let mut candidates = super::matmul::builds(gd, entries);
    if candidate {
        candidates.push(Choice {
            entry: IM2COL,
            unchecked: false,
        });
    }
    let class = implicit_class(op, dtype, dims);
    super::tune::pick(gd, class, &candidates, (out, dtype), run)
}

/// The shape class of an implicit GEMM of `dims` (m, n, k, batch).
pub(crate) fn implicit_class(op: &'static str, dtype: DType, dims: [usize; 4]) -> super::tune::GemmClass {
    super::tune::GemmClass::new(op, dtype, dims, (false, false), (false, false))
}

/// Convolutions as explicit patch matrices and strided GEMMs, one batch
/// entry per group, into `y`: the plan for CPU adapters, whose GEMM kernel
/// is fastest on plain strided operands, and one the autotuner times on
/// GPUs.
fn gpu_im2col(op: &Op, gd: &Gpu, x: &[Operand], g: &Geom, dtype: DType, y: &GpuBuf) -> Result<()> {
    let pix = g.n * g.oh * g.ow;
    let kg = g.kh * g.kw * g.cg;
    let cols = gd.alloc(op.name(), (g.g * pix * kg * dtype.size()) as u64)?;
    let p = ConvParams::of(g);
    // im2col: an invocation per patch row; col2im: per input pixel and group.
    let launch = |entry: &'static str, n: usize, bufs: &[&GpuBuf]| {
        gd.launch(&Launch {
            kernel: &CONV,
            entry,
            ty: ktype(dtype),
            consts: &[],
            params: ParamBlock::of(&p),
            bufs,
            groups: grid(n, 256),
        })
    };
    let plan = im2col_gemm(op, g);
    // One GEMM per group: C_g = A_g x B_g with the given strides.
    let gemm = |a: &GpuBuf, b: &GpuBuf, c: &GpuBuf| {
        let ([m, n, k], (ta, tb), [lda, ldb, ldc], [sa, sb, sc]) = plan;
        super::matmul::GemmLaunch {
            a,
            b,
            c,
            m,
            n,
            k,
            batch: g.g,
            ta,
            tb,
            lda,
            ldb,
            ldc,
            sa,
            sb,
            sc,
        }
        .launch(gd, dtype)
    };
    let quad = (4 * dtype.size()) as u64;
    match op {
        Op::Conv2dInputGrad(..) => {
            gemm(x[0].gpu_buf(), x[1].gpu_buf(), &cols)?;
            // Channels in fours: vec4 loads, a quarter of the loads and
            // of the tap arithmetic (per vec4, not per channel).
            if g.cg % 4 == 0 && cols.offset % quad == 0 && y.offset % quad == 0 {
                launch("col2im4", g.n * g.h * g.w * g.c / 4, &[&cols, y])
            } else {
                launch("col2im", g.n * g.h * g.w * g.g, &[&cols, y])
            }
        }
        _ => {
            let src = x[0].gpu_buf();
            if g.cg % 4 == 0 && cols.offset % quad == 0 && src.offset % quad == 0 {
                launch("im2col4", g.g * pix, &[src, &cols])?;
            } else {
                launch("im2col", g.g * pix, &[src, &cols])?;
            }
            gemm(&cols, x[1].gpu_buf(), y)
        }
    }
}

/// The strided GEMM per group of an im2col plan: (m, n, k), transposes,
/// leading dimensions and batch strides of A, B and C.
#[allow(clippy::type_complexity)]
pub(crate) fn im2col_gemm(op: &Op, g: &Geom) -> ([usize; 3], (bool, bool), [usize; 3], [usize; 3]) {
    let pix = g.n * g.oh * g.ow;
    let kg = g.kh * g.kw * g.cg;
    match op {
        // y[pix, g*og + o] = cols_g [pix, kg] x f[kg, g*og + o]
        Op::Conv2d(_) => ([pix, g.og, kg], (false, false), [kg, g.o, g.o], [pix * kg, g.og, g.og]),
        // cols_g [pix, kg] = dy[pix, g*og..] x f_g^T, then summed back onto dx.
        Op::Conv2dInputGrad(..) => ([pix, kg, g.og], (false, true), [g.o, g.o, kg], [g.og, g.og, pix * kg]),
        // df[kg, g*og + o] = cols_g^T [kg, pix] x dy[pix, g*og + o]
        _ => ([kg, g.og, pix], (true, false), [kg, g.o, g.o], [pix * kg, g.og, g.og]),
    }
}

/// An implicit-GEMM convolution's mode (0 forward, 1 input gradient, 2
/// filter gradient), m, n, k and the slices its sum is split into.
pub(crate) fn implicit_gemm(op: &Op, g: &Geom) -> (usize, [usize; 3], usize) {
    let pix = g.n * g.oh * g.ow;
    let kg = g.kh * g.kw * g.cg;
    let (mode, gm, gn, ktotal) = match op {
        Op::Conv2d(_) => (0, pix, g.og, kg),
        Op::Conv2dInputGrad(..) => (1, g.n * g.h * g.w, g.cg, g.kh * g.kw * g.og),
        _ => (2, kg, g.og, pix),
    };
    // Split long reductions so that enough workgroups run.
    let tiles = gm.div_ceil(64) * gn.div_ceil(64) * g.g;
    let splits = if mode == 2 {
        ktotal.div_ceil(512).min((256 / tiles).max(1)).max(1)
    } else {
        1
    };
    (mode, [gm, gn, ktotal], splits)
}

/// `conv2d_int8`: on register-path adapters (while the patch matrix fits
/// one binding) the patch matrix times the int8 rows through
/// `matmul.rs`'s [`Int8Gemm`](super::matmul::Int8Gemm), one batch entry per
/// group; elsewhere one implicit GEMM (`CONV_INT8`).
fn gpu_int8(op: &Op, gd: &Gpu, x: &[Operand], fs: &[usize], out: &[usize]) -> Result<GpuBuf> {
    let g = geom_of(op, &[x[0].shape(), fs])?;
    let n_out = numel(out);
    let pix = g.n * g.oh * g.ow;
    let kg = g.kh * g.kw * g.cg;
    let f32s = DType::F32.size();
    if n_out == 0 || pix == 0 || kg == 0 {
        return super::creation::fill_gpu(gd, n_out, 0.0, DType::F32);
    }
    let y = gd.alloc(op.name(), (n_out * f32s) as u64)?;
    let (wq, scales) = (x[1].gpu_buf(), x[2].gpu_buf());
    let cols_bytes = (g.g * pix * kg * f32s) as u64;
    if gd.gemm_register() && cols_bytes <= gd.max_binding() {
        let cols = gd.alloc(op.name(), cols_bytes)?;
        gd.launch(&Launch {
            kernel: &CONV,
            entry: "im2col",
            ty: KType::F32,
            consts: &[],
            params: ParamBlock::of(&ConvParams::of(&g)),
            bufs: &[x[0].gpu_buf(), &cols],
            groups: grid(g.g * pix, 256),
        })?;
        super::matmul::Int8Gemm {
            a: &cols,
            wq,
            scales,
            c: &y,
            m: pix,
            n: g.og,
            k: kg,
            batch: g.g,
            lda: kg,
            ldc: g.o,
            sa: pix * kg,
            sc: g.og,
            rows: g.og,
        }
        .launch(gd)?;
        return Ok(y);
    }
    let (entry, tiles) = super::matmul::gemm_grid(gd, pix, g.og, g.g);
    for ([x0, y0, b0], groups) in chunks(tiles) {
        let u = |v: usize| v as u32;
        gd.launch(&Launch {
            kernel: &CONV_INT8,
            entry,
            ty: KType::F32,
            consts: &[],
            params: ParamBlock::of(&ConvParams {
                kc: u(kg),
                ktotal: u(kg),
                gm: u(pix),
                gn: u(g.og),
                b0: u(b0),
                tx0: u(x0),
                ty0: u(y0),
                words: u(kg.div_ceil(4)),
                ..ConvParams::of(&g)
            }),
            bufs: &[x[0].gpu_buf(), wq, &y, scales],
            groups,
        })?;
    }
    Ok(y)
}
