//! Launch code of the matmul family (`Op::MatMul`): batched `a @ b` with
//! broadcast batch dimensions and transpose flags, and the strided batched
//! GEMM (`GemmLaunch`) that `conv.rs` reuses.
//!
//! Two kernels: `matmul` (shaders/gemm.wgsl and matmul.wgsl) and
//! `matmul_subgroup` (the same plus matmul_subgroup.wgsl), a module of its
//! own so that adapters without `Features::SUBGROUP` never compile it; both
//! are built for f32 and f16 and accumulate in f32. The entry point follows
//! [`GemmVariant`](super::GemmVariant) (see
//! [`force_gemm_variant`](super::force_gemm_variant)):
//! * GPUs: `gemm`, 64x64 output tiles through workgroup memory, or
//!   `matmul_wide`, 128x128 tiles, once a product has at least 256 of them;
//! * CPU adapters such as llvmpipe: the register kernels, which spread
//!   columns over SIMD lanes and keep the sums in registers:
//!   `matmul_sg` (16x64 blocks) where subgroups have 8 lanes, else
//!   `matmul_reg` (4x128 blocks). For a narrow output (fewer than 64
//!   columns and more rows than columns) they compute `C^T = B^T A^T`
//!   instead; what is still at most 16 columns wide runs `matmul_sg`'s
//!   16x16 form (`matmul_sg_narrow`); and a single product whose grid would be under 32 workgroups
//!   with `K >= 4096` splits the sum into up to 64 slices added by
//!   `reduce::sum_slices`;
//! * f16 on adapters with cooperative matrices (tensor cores): the modules
//!   `matmul_coop_wide` (`gemm_coop_wide`, 128x128 tiles, and its
//!   `gemm_coop_direct` for products whose every tile lies inside the
//!   operands) and, where workgroups are too small for it, `matmul_coop`
//!   (`gemm_coop`, 64x64 tiles); autotuning also times
//!   `matmul_coop_staged` (`gemm_coop_staged`: tiles staged through
//!   workgroup memory as vectors).
//!
//! Under `Auto`, products of at least `tune::MIN_FLOPS` where the device
//! has more than one kernel ([`candidates`]) take the one `tune` timed
//! fastest for their shape class instead.
//!
//! Batch entries are the grid's z dimension, launched in chunks of at most
//! 65535. A single matrix is shared by every batch entry (batch stride 0)
//! and a full batch is read in place; an operand whose batch dimensions
//! only partly broadcast is first materialized with the layout family's
//! strided copy. Operands are loaded as `vec4` where their strides allow.
//! `K == 0` gives zeros with a fill.
//!
//! Shape and gradient rules are in `ops::matmul`, the dimension
//! rules in [`crate::core::op::matmul`], the reference kernels
//! (the `gemm` crate) in [`crate::runtime::cpu`] (`cpu/matmul.rs`).

use super::memory::GpuBuf;
use super::tune::{self, Choice, GemmClass, Tuned};
use super::{GemmChecks, Gpu, GpuDevice, KType, Kernel, Launch, ParamBlock, ParamsLayout, chunks, ktype};
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::op::matmul::*;
use crate::core::op::*;
use crate::core::shape::*;
use crate::runtime::Operand;

const GEMM_SRC: [&str; 2] = [
    include_str!("../../../shaders/gemm.wgsl"),
    include_str!("../../../shaders/matmul.wgsl"),
];
const WIDE_DB_SRC: [&str; 3] = [
    GEMM_SRC[0],
    GEMM_SRC[1],
    include_str!("../../../shaders/matmul_wide_db.wgsl"),
];
const SG_SRC: [&str; 3] = [
    GEMM_SRC[0],
    GEMM_SRC[1],
    include_str!("../../../shaders/matmul_subgroup.wgsl"),
];
const COOP_SRC: [&str; 4] = [
    GEMM_SRC[0],
    GEMM_SRC[1],
    include_str!("../../../shaders/gemm_coop_tile.wgsl"),
    include_str!("../../../shaders/gemm_coop.wgsl"),
];
const COOP8_SRC: [&str; 4] = [
    GEMM_SRC[0],
    GEMM_SRC[1],
    include_str!("../../../shaders/gemm_coop_tile.wgsl"),
    include_str!("../../../shaders/gemm_coop8.wgsl"),
];
const COOP_WIDE_SRC: [&str; 3] = [
    GEMM_SRC[0],
    GEMM_SRC[1],
    include_str!("../../../shaders/gemm_coop_wide.wgsl"),
];
const COOP_STAGED_SRC: [&str; 4] = [
    GEMM_SRC[0],
    GEMM_SRC[1],
    include_str!("../../../shaders/coop_frag16.wgsl"),
    include_str!("../../../shaders/gemm_coop_staged.wgsl"),
];
const COOP_STAGED8_SRC: [&str; 4] = [
    GEMM_SRC[0],
    GEMM_SRC[1],
    include_str!("../../../shaders/coop_frag8.wgsl"),
    include_str!("../../../shaders/gemm_coop_staged.wgsl"),
];
const BOTH: &[KType] = &[KType::F32, KType::F16];
const MATMUL_PARAMS: &[ParamsLayout] = &[ParamsLayout::of::<MatmulParams>()];
const COOP: &[&str] = &["wgpu_cooperative_matrix"];

pub static MATMUL: Kernel = Kernel::new("matmul", &GEMM_SRC, BOTH, MATMUL_PARAMS);

/// MATMUL plus `matmul_sg`, which needs `Features::SUBGROUP`: a module of
/// its own so that adapters without subgroups never compile it.
pub static MATMUL_SG: Kernel = Kernel::new("matmul_subgroup", &SG_SRC, BOTH, MATMUL_PARAMS);

/// MATMUL plus `matmul_wide_db` (see
/// [`GemmVariant::WideDouble`](super::GemmVariant::WideDouble)), a module
/// of its own so that its 32 KiB of workgroup memory count for it alone.
pub static MATMUL_WIDE_DB: Kernel = Kernel::new("matmul_wide_db", &WIDE_DB_SRC, BOTH, MATMUL_PARAMS);

/// MATMUL's operand functions with the tensor-core entry point `gemm_coop`
/// (f16 only): a module of its own so that adapters without
/// `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` never compile it.
pub static MATMUL_COOP: Kernel = Kernel::enabling("matmul_coop", &COOP_SRC, &[KType::F16], MATMUL_PARAMS, COOP);

/// MATMUL_COOP's twin on 8x8x8 cooperative matrices (gemm_coop8.wgsl),
/// built in its place where the device's are (`GpuDevice::coop8`).
pub(crate) static MATMUL_COOP8: Kernel =
    Kernel::enabling("matmul_coop8", &COOP8_SRC, &[KType::F16], MATMUL_PARAMS, COOP);
pub(crate) static MATMUL_COOP8_UNCHECKED: Kernel =
    Kernel::unchecked("matmul_coop8_unchecked", &COOP8_SRC, &[KType::F16], MATMUL_PARAMS, COOP);

/// MATMUL's operand functions with the 128x128-tile tensor-core entry
/// point `gemm_coop_wide` (f16 only; see
/// [`GemmVariant::CooperativeWide`](super::GemmVariant::CooperativeWide)).
pub static MATMUL_COOP_WIDE: Kernel =
    Kernel::enabling("matmul_coop_wide", &COOP_WIDE_SRC, &[KType::F16], MATMUL_PARAMS, COOP);

/// MATMUL's operand functions with the tensor-core entry point
/// `gemm_coop_staged` on 16x16x16 matrices (f16 only; see
/// [`GemmVariant::CooperativeStaged`](super::GemmVariant::CooperativeStaged)).
pub static MATMUL_COOP_STAGED: Kernel = Kernel::enabling(
    "matmul_coop_staged",
    &COOP_STAGED_SRC,
    &[KType::F16],
    MATMUL_PARAMS,
    COOP,
);

/// MATMUL_COOP_STAGED's twin on 8x8x8 matrices (the same kernel with
/// coop_frag8.wgsl's prelude), built in its place where the device's are.
pub(crate) static MATMUL_COOP_STAGED8: Kernel = Kernel::enabling(
    "matmul_coop_staged8",
    &COOP_STAGED8_SRC,
    &[KType::F16],
    MATMUL_PARAMS,
    COOP,
);
pub(crate) static MATMUL_COOP_STAGED8_UNCHECKED: Kernel = Kernel::unchecked(
    "matmul_coop_staged8_unchecked",
    &COOP_STAGED8_SRC,
    &[KType::F16],
    MATMUL_PARAMS,
    COOP,
);

// The same six built without wgpu's runtime checks (see
// `Kernel::checked` and `GemmChecks`).
static MATMUL_UNCHECKED: Kernel = Kernel::unchecked("matmul_unchecked", &GEMM_SRC, BOTH, MATMUL_PARAMS, &[]);
static MATMUL_WIDE_DB_UNCHECKED: Kernel =
    Kernel::unchecked("matmul_wide_db_unchecked", &WIDE_DB_SRC, BOTH, MATMUL_PARAMS, &[]);
static MATMUL_SG_UNCHECKED: Kernel = Kernel::unchecked("matmul_subgroup_unchecked", &SG_SRC, BOTH, MATMUL_PARAMS, &[]);
static MATMUL_COOP_UNCHECKED: Kernel =
    Kernel::unchecked("matmul_coop_unchecked", &COOP_SRC, &[KType::F16], MATMUL_PARAMS, COOP);
static MATMUL_COOP_WIDE_UNCHECKED: Kernel = Kernel::unchecked(
    "matmul_coop_wide_unchecked",
    &COOP_WIDE_SRC,
    &[KType::F16],
    MATMUL_PARAMS,
    COOP,
);

static MATMUL_COOP_STAGED_UNCHECKED: Kernel = Kernel::unchecked(
    "matmul_coop_staged_unchecked",
    &COOP_STAGED_SRC,
    &[KType::F16],
    MATMUL_PARAMS,
    COOP,
);

/// The kernel (module) that holds `c`'s entry point, checked or not.
fn module(c: Choice) -> &'static Kernel {
    match (c.entry, c.unchecked) {
        ("matmul_wide_db" | "matmul_wide_db_warp", false) => &MATMUL_WIDE_DB,
        ("matmul_wide_db" | "matmul_wide_db_warp", true) => &MATMUL_WIDE_DB_UNCHECKED,
        ("matmul_sg" | "matmul_sg_narrow", false) => &MATMUL_SG,
        ("matmul_sg" | "matmul_sg_narrow", true) => &MATMUL_SG_UNCHECKED,
        ("gemm_coop", false) => &MATMUL_COOP,
        ("gemm_coop", true) => &MATMUL_COOP_UNCHECKED,
        ("gemm_coop_wide" | "gemm_coop_direct", false) => &MATMUL_COOP_WIDE,
        ("gemm_coop_wide" | "gemm_coop_direct", true) => &MATMUL_COOP_WIDE_UNCHECKED,
        ("gemm_coop_staged", false) => &MATMUL_COOP_STAGED,
        ("gemm_coop_staged", true) => &MATMUL_COOP_STAGED_UNCHECKED,
        (_, false) => &MATMUL,
        (_, true) => &MATMUL_UNCHECKED,
    }
}

/// `entry` as an untuned product runs it on `g`: unchecked only where
/// `WGFLOW_GEMM_CHECKS=off` (or a test) says so and `g` allows it
/// ([`GpuDevice::unchecked_gemm`]).
fn untuned(g: &GpuDevice, entry: &'static str) -> Choice {
    Choice {
        entry,
        unchecked: super::gemm_checks() == GemmChecks::Off && g.unchecked_gemm(),
    }
}

/// Products with int8 weights (`Op::MatMulInt8`, and `Op::Conv2dInt8`'s
/// patch matrices): the GEMM core's `gemm` with matmul_int8.wgsl's
/// loaders, which expand the weights while loading tiles, or on CPU
/// adapters its `gemm_reg_int8`, which reads them a word at a time.
pub static MATMUL_INT8: Kernel = Kernel::new(
    "matmul_int8",
    &[
        include_str!("../../../shaders/int8.wgsl"),
        include_str!("../../../shaders/gemm.wgsl"),
        include_str!("../../../shaders/gemm_scalar.wgsl"),
        include_str!("../../../shaders/matmul_int8.wgsl"),
    ],
    &[KType::F32],
    &[ParamsLayout::of::<Int8Params>()],
);

params! {
    /// shaders/matmul_int8.wgsl's `Params`.
    pub struct Int8Params = "Params" {
        m: u32,
        n: u32,
        k: u32,
        b0: u32,
        lda: u32,
        ldc: u32,
        sa: u32,
        sc: u32,
        rows: u32,
        words: u32,
        tx0: u32,
        ty0: u32,
    }
}

/// One batched product `C[b] = A[b] W_b^T` with int8 weight rows: `A[b]`
/// is `[m, k]` at `b * sa` (row stride `lda`), `W_b` the `n` rows from row
/// `b * rows` of `wq` / `scales`, `C[b]` at `b * sc` (row stride `ldc`).
pub(crate) struct Int8Gemm<'a> {
    pub a: &'a GpuBuf,
    pub wq: &'a GpuBuf,
    pub scales: &'a GpuBuf,
    pub c: &'a GpuBuf,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub lda: usize,
    pub ldc: usize,
    pub sa: usize,
    pub sc: usize,
    pub rows: usize,
}

impl Int8Gemm<'_> {
    pub(crate) fn launch(&self, g: &Gpu) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return Ok(());
        }
        let (entry, tiles) = gemm_grid(g, self.m, self.n, self.batch);
        let entry = if entry == "gemm_reg" { "gemm_reg_int8" } else { entry };
        for ([x0, y0, b0], groups) in chunks(tiles) {
            let u = |v: usize| v as u32;
            let params = Int8Params {
                m: u(self.m),
                n: u(self.n),
                k: u(self.k),
                b0: u(b0),
                lda: u(self.lda),
                ldc: u(self.ldc),
                sa: u(self.sa),
                sc: u(self.sc),
                rows: u(self.rows),
                words: u(self.k.div_ceil(4)),
                tx0: u(x0),
                ty0: u(y0),
            };
            g.launch(&Launch {
                kernel: &MATMUL_INT8,
                entry,
                ty: KType::F32,
                consts: &[],
                params: ParamBlock::of(&params),
                bufs: &[self.a, self.wq, self.c, self.scales],
                groups,
            })?;
        }
        Ok(())
    }
}

params! {
    /// shaders/matmul.wgsl's `Params` (flags are 0 / 1).
    pub struct MatmulParams = "Params" {
        m: u32,
        n: u32,
        k: u32,
        b0: u32,
        lda: u32,
        ldb: u32,
        ldc: u32,
        ta: u32,
        sa: u32,
        sb: u32,
        sc: u32,
        tb: u32,
        am: u32,
        ak: u32,
        bk: u32,
        bn: u32,
        vec_a: u32,
        vec_b: u32,
        tc: u32,
        kc: u32,
        tx0: u32,
        ty0: u32,
    }
}

/// One strided batched GEMM launch description.
pub(crate) struct GemmLaunch<'a> {
    pub a: &'a GpuBuf,
    pub b: &'a GpuBuf,
    pub c: &'a GpuBuf,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub ta: bool,
    pub tb: bool,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub sa: usize,
    pub sb: usize,
    pub sc: usize,
}

impl GemmLaunch<'_> {
    pub(crate) fn launch(&self, g: &Gpu, dtype: DType) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return Ok(());
        }
        if let Some(t) = self.tuned(g, dtype)? {
            return self.run(g, dtype, t.choice);
        }
        g.with_coop(dtype, "matmul", |coop| {
            if coop {
                self.run(g, dtype, untuned(g, coop_entry(g, self.direct())?))
            } else {
                self.run(g, dtype, untuned(g, plain_entry(g, self.m, self.n, self.batch)?))
            }
        })
    }

    /// The autotuned kernel for this product, where it is tuned (see `tune`).
    fn tuned(&self, g: &Gpu, dtype: DType) -> Result<Option<std::sync::Arc<Tuned>>> {
        if !tune::tunable(g.gemm_forced(), tune::flops([self.m, self.n, self.k, self.batch])) {
            return Ok(None);
        }
        let run = |c, eager: &Gpu| self.run(eager, dtype, c);
        let candidates = candidates(g, dtype, self.direct())?;
        tune::pick(g, self.class(dtype), &candidates, (self.c, dtype), run)
    }

    /// Runs the product on `choice`'s kernel.
    fn run(&self, g: &Gpu, dtype: DType, choice: Choice) -> Result<()> {
        let entry = choice.entry;
        if !matches!(entry, "matmul_sg" | "matmul_reg") {
            return self.dispatch(g, dtype, choice, false, 0);
        }
        // The register kernels spread columns over SIMD lanes, 64 or 128 per
        // workgroup: for a narrow C they compute C^T = B^T A^T instead.
        let flip = self.n < 64 && self.m > self.n;
        let t = if flip { self.transposed() } else { self.clone_plan() };
        let choice = Choice {
            entry: register_form(entry, self.m, self.n),
            ..choice
        };
        let entry = choice.entry;
        // A small C with a long sum runs on too few workgroups: split the
        // sum over batch entries and add the slices (single products only).
        let groups = reg_grid(entry, t.m, t.n).iter().product::<usize>();
        let contiguous = if flip { self.ldc == self.n } else { t.ldc == t.n };
        if self.batch == 1 && groups < 32 && t.k >= 4096 && contiguous {
            let splits = t.k.div_ceil(2048).min(64);
            let kc = t.k.div_ceil(splits);
            let part = g.alloc("matmul", (splits * self.m * self.n * dtype.size()) as u64)?;
            let plan = GemmLaunch {
                c: &part,
                batch: splits,
                sc: self.m * self.n,
                ..t
            };
            plan.dispatch(g, dtype, choice, flip, kc)?;
            return super::reduce::sum_slices(g, &part, self.c, splits, self.m * self.n, dtype);
        }
        t.dispatch(g, dtype, choice, flip, 0)
    }

    /// Whether this product can run `gemm_coop_direct` (see [`direct`]).
    fn direct(&self) -> bool {
        direct(
            [self.m, self.n, self.k],
            (self.ta, self.tb),
            [self.lda, self.ldb],
            [self.sa, self.sb],
        )
    }

    /// Whether A and B load as `vec4`s.
    fn vec_flags(&self) -> (bool, bool) {
        vec_flags(
            [self.m, self.n, self.k],
            (self.ta, self.tb),
            [self.lda, self.ldb],
            [self.sa, self.sb],
        )
    }

    fn class(&self, dtype: DType) -> GemmClass {
        GemmClass::new(
            class_op(dtype, self.direct()),
            dtype,
            [self.m, self.n, self.k, self.batch],
            (self.ta, self.tb),
            self.vec_flags(),
        )
    }

    fn clone_plan(&self) -> GemmLaunch<'_> {
        GemmLaunch { ..*self }
    }

    /// The plan for C^T = B^T A^T (same C buffer, stored transposed).
    fn transposed(&self) -> GemmLaunch<'_> {
        GemmLaunch {
            a: self.b,
            b: self.a,
            c: self.c,
            m: self.n,
            n: self.m,
            k: self.k,
            batch: self.batch,
            ta: !self.tb,
            tb: !self.ta,
            lda: self.ldb,
            ldb: self.lda,
            ldc: self.ldc,
            sa: self.sb,
            sb: self.sa,
            sc: self.sc,
        }
    }

    fn dispatch(&self, g: &Gpu, dtype: DType, choice: Choice, tc: bool, kc: usize) -> Result<()> {
        // Shape classes keep direct and other products apart, so this is
        // only a guard: gemm_coop_direct reads every tile unguarded.
        let entry = if choice.entry == "gemm_coop_direct" && !self.direct() {
            "gemm_coop_wide"
        } else {
            choice.entry
        };
        let kernel = module(Choice { entry, ..choice });
        let (vec_a, vec_b) = self.vec_flags();
        let (am, ak) = if self.ta { (1, self.lda) } else { (self.lda, 1) };
        let (bk, bn) = if self.tb { (1, self.ldb) } else { (self.ldb, 1) };
        // The register kernel reads A as scalars: no a4 view.
        let register = matches!(entry, "matmul_reg" | "matmul_sg" | "matmul_sg_narrow");
        let bufs = bound(entry, self.a, self.b, self.c);
        // Tiles along n and m: the grid, split into launches that stay
        // within the workgroup limit per dimension (the kernels add the
        // piece's first tile, and the batch offset, to `workgroup_id`).
        let tiles = if register {
            reg_grid(entry, self.m, self.n)
        } else if entry == "gemm_coop_staged" {
            // Eight fragments a side: 128 on 16x16x16 matrices, 64 on 8x8x8.
            let side = if g.coop8 { 64 } else { 128 };
            [self.n.div_ceil(side), self.m.div_ceil(side)]
        } else if matches!(
            entry,
            "matmul_wide"
                | "matmul_wide_warp"
                | "matmul_wide_db"
                | "matmul_wide_db_warp"
                | "gemm_coop_wide"
                | "gemm_coop_direct"
        ) {
            [self.n.div_ceil(128), self.m.div_ceil(128)]
        } else {
            // gemm and gemm_coop: 64x64 tiles.
            [self.n.div_ceil(64), self.m.div_ceil(64)]
        };
        for ([x0, y0, b0], groups) in chunks([tiles[0], tiles[1], self.batch]) {
            let u = |v: usize| v as u32;
            let params = MatmulParams {
                m: u(self.m),
                n: u(self.n),
                k: u(self.k),
                b0: u(b0),
                lda: u(self.lda),
                ldb: u(self.ldb),
                ldc: u(self.ldc),
                ta: self.ta as u32,
                sa: u(self.sa),
                sb: u(self.sb),
                sc: u(self.sc),
                tb: self.tb as u32,
                am: u(am),
                ak: u(ak),
                bk: u(bk),
                bn: u(bn),
                vec_a: vec_a as u32,
                vec_b: vec_b as u32,
                tc: tc as u32,
                kc: u(kc),
                tx0: u(x0),
                ty0: u(y0),
            };
            g.launch(&Launch {
                kernel,
                entry,
                ty: ktype(dtype),
                consts: &[],
                params: ParamBlock::of(&params),
                bufs: &bufs,
                groups,
            })?;
        }
        Ok(())
    }
}

/// The entry point a strided GEMM of `m x n` outputs over `batch` entries
/// of `dtype` runs on `g` now: on cooperative matrices `gemm_coop_wide`,
/// its `gemm_coop_direct` (`direct`: see [`direct`]) or `gemm_coop`; else
/// `gemm` or `matmul_wide` (tiled, GPUs), `matmul_sg` or `matmul_reg`
/// (register blocks, CPU adapters). Forcing a kernel the adapter lacks is
/// an error.
pub(crate) fn gemm_entry(g: &GpuDevice, [m, n, batch]: [usize; 3], direct: bool, dtype: DType) -> Result<&'static str> {
    if g.gemm_coop(dtype, "matmul")? {
        return coop_entry(g, direct);
    }
    plain_entry(g, m, n, batch)
}

/// The cooperative-matrix entry point where one runs: `gemm_coop` where
/// forced (`GemmVariant::Cooperative`) or where `gemm_coop_wide` cannot
/// run, else the wide one, as `gemm_coop_direct` for `direct` products (on
/// the H200 they beat `gemm_coop` 2.5x to 7x from 1024^3 up).
fn coop_entry(g: &GpuDevice, direct: bool) -> Result<&'static str> {
    if super::gemm_override() == super::GemmVariant::CooperativeStaged {
        g.gemm_coop_staged()?;
        return Ok("gemm_coop_staged");
    }
    if super::gemm_override() != super::GemmVariant::Cooperative && g.gemm_coop_wide()? {
        return Ok(if direct { "gemm_coop_direct" } else { "gemm_coop_wide" });
    }
    Ok("gemm_coop")
}

/// Whether a product can run `gemm_coop_direct`: every 128x128 tile
/// inside C, row-major operands whose rows and batch strides are 16-byte
/// aligned (8 f16s) and k a multiple of 16, so that fragments load
/// straight from the operands.
fn direct([m, n, k]: [usize; 3], (ta, tb): (bool, bool), [lda, ldb]: [usize; 2], [sa, sb]: [usize; 2]) -> bool {
    let eight = |v: usize| v % 8 == 0;
    !ta && !tb && m % 128 == 0 && n % 128 == 0 && k % 16 == 0 && [lda, ldb, sa, sb].into_iter().all(eight)
}

/// The op of a matmul's shape class: f16 products that can run
/// `gemm_coop_direct` are tuned apart from those that cannot, so that
/// each class's choice runs every product of it.
fn class_op(dtype: DType, direct: bool) -> &'static str {
    if dtype == DType::F16 && direct {
        "matmul (direct tiles)"
    } else {
        "matmul"
    }
}

/// [`gemm_entry`] among the kernels without cooperative matrices.
fn plain_entry(g: &GpuDevice, m: usize, n: usize, batch: usize) -> Result<&'static str> {
    use super::GemmVariant::*;
    match super::gemm_override() {
        WideDouble | WideDoubleWarp => {
            g.gemm_wide_double()?;
            let warp = super::gemm_override() == WideDoubleWarp;
            return Ok(if warp { "matmul_wide_db_warp" } else { "matmul_wide_db" });
        }
        WideWarp => return Ok("matmul_wide_warp"),
        _ => {}
    }
    if !g.gemm_register() {
        let tiles = m.div_ceil(128) * n.div_ceil(128) * batch;
        return Ok(if g.gemm_wide(tiles) { "matmul_wide" } else { "gemm" });
    }
    Ok(if g.gemm_subgroup()? { "matmul_sg" } else { "matmul_reg" })
}

/// The kernels a strided GEMM of `dtype` can run on `g`, for autotuning:
/// `gemm_coop` where it would run by default, then the tiled kernels on
/// GPUs or the register kernels on CPU adapters; each built with wgpu's
/// runtime checks and, on Vulkan (where the driver's robust buffer access
/// guards storage buffers), also without them, as [`GemmChecks`] says.
pub(crate) fn candidates(g: &GpuDevice, dtype: DType, direct: bool) -> Result<Vec<Choice>> {
    let mut c = Vec::new();
    if g.gemm_coop(dtype, "matmul")? {
        c.push("gemm_coop");
        if g.gemm_coop_wide()? {
            c.push(if direct { "gemm_coop_direct" } else { "gemm_coop_wide" });
        }
        if g.gemm_coop_staged()? {
            c.push("gemm_coop_staged");
        }
    }
    if !g.cpu_adapter() {
        c.extend(["gemm", "matmul_wide", "matmul_wide_warp"]);
        if g.gemm_wide_double()? {
            c.extend(["matmul_wide_db", "matmul_wide_db_warp"]);
        }
    } else if g.subgroup8 {
        c.extend(["matmul_sg", "matmul_reg"]);
    } else {
        c.push("matmul_reg");
    }
    Ok(builds(g, c))
}

/// Each of `entries` as the GEMM builds to tune on `g`: checked, and
/// where `g` allows it ([`GpuDevice::unchecked_gemm`]) also unchecked,
/// unless [`GemmChecks`] fixes one.
pub(crate) fn builds(g: &GpuDevice, entries: Vec<&'static str>) -> Vec<Choice> {
    let builds: &[bool] = match super::gemm_checks() {
        _ if !g.unchecked_gemm() => &[false],
        GemmChecks::On => &[false],
        GemmChecks::Off => &[true],
        GemmChecks::Auto => &[false, true],
    };
    entries
        .into_iter()
        .flat_map(|entry| builds.iter().map(move |&unchecked| Choice { entry, unchecked }))
        .collect()
}

/// The GEMM kernel `op` (a matmul or a float convolution) with inputs of
/// these shapes runs on `g` now, as `kernel::entry` (`Graph::describe`
/// shows it); `None` for other ops.
pub(crate) fn gemm_kernel(g: &GpuDevice, op: &Op, shapes: &[&[usize]], dtype: DType) -> Option<String> {
    // A strided GEMM's (kernel, entry): the tuned choice with its times,
    // else the heuristic's, marked where the first run will tune it.
    #[allow(clippy::type_complexity)]
    let strided = |[m, n, k, batch]: [usize; 4], t: (bool, bool), ld: [usize; 2], s: [usize; 2]| {
        let direct = direct([m, n, k], t, ld, s);
        let class = GemmClass::new(
            class_op(dtype, direct),
            dtype,
            [m, n, k, batch],
            t,
            vec_flags([m, n, k], t, ld, s),
        );
        let (choice, detail) = match g.tuner.get(&class) {
            Some(tuned) => (Some(tuned.choice), tuned.describe()),
            None => {
                let choice = gemm_entry(g, [m, n, batch], direct, dtype).ok().map(|e| untuned(g, e));
                let pending = match candidates(g, dtype, direct) {
                    Ok(c) if c.len() > 1 && tune::tunable(g.gemm_forced(), tune::flops([m, n, k, batch])) => {
                        " (autotuned on first run)"
                    }
                    _ => "",
                };
                let detail = match choice {
                    Some(c) => format!("{c}{pending}"),
                    None => "error: forced kernel unavailable".to_string(),
                };
                (choice, detail)
            }
        };
        let kernel = choice.map_or("matmul", |c| module(c).name.as_ref());
        let detail = match choice.map(|c| register_form(c.entry, m, n)) {
            Some("matmul_sg_narrow") => format!("{detail}, in its 16-column form matmul_sg_narrow"),
            _ => detail,
        };
        (kernel, detail)
    };
    match op {
        Op::MatMul { ta, tb } => {
            let (a, b) = (shapes.first()?, shapes.get(1)?);
            if a.len() < 2 || b.len() < 2 {
                return None;
            }
            let (m, n, k, _) = dims(*ta, *tb, a, b);
            let batch = numel(&a[..a.len() - 2]).max(numel(&b[..b.len() - 2]));
            // As `gpu` lays operands out: rows of their last dimension,
            // whole matrices per batch entry.
            let (kernel, detail) = strided(
                [m, n, k, batch],
                (*ta, *tb),
                [a[a.len() - 1], b[b.len() - 1]],
                [m * k, k * n],
            );
            Some(format!("{kernel}::{detail}"))
        }
        Op::Conv2d(_) | Op::Conv2dInputGrad(..) | Op::Conv2dFilterGrad(..) => {
            let geom = crate::core::op::conv::geom_of(op, &[shapes.first()?, shapes.get(1)?]).ok()?;
            // Patch matrices and strided GEMMs.
            let im2col = || {
                let ([m, n, k], t, [lda, ldb, _], [sa, sb, _]) = super::conv::im2col_gemm(op, &geom);
                strided([m, n, k, geom.g], t, [lda, ldb], [sa, sb]).1
            };
            if super::conv::im2col_plan(g, &geom, dtype) {
                return Some(format!("conv::im2col + matmul::{}", im2col()));
            }
            let (_, [gm, gn, k], splits) = super::conv::implicit_gemm(op, &geom);
            let class = super::conv::implicit_class(op.name(), dtype, [gm, gn, k, geom.g * splits]);
            if let Some(t) = g.tuner.get(&class) {
                let candidate = super::conv::im2col_candidate(g, &geom, dtype);
                let module = |c| &super::conv::implicit_module(c).name;
                return Some(match super::conv::tuned_choice(&t, candidate) {
                    c if c.entry == super::conv::IM2COL => {
                        format!("conv::im2col + matmul::{}; plan {}", im2col(), t.describe())
                    }
                    c if c == t.choice => format!("{}::{}", module(c), t.describe()),
                    c => format!(
                        "{}::{c} (its patch matrix too large for the class's choice: {})",
                        module(c),
                        t.describe()
                    ),
                });
            }
            let entry = match g.gemm_coop(dtype, op.name()) {
                Err(_) => return Some("error: forced kernel unavailable".to_string()),
                Ok(true) => "gemm_coop",
                Ok(false) => gemm_grid(g, 64, 64, 1).0,
            };
            let c = untuned(g, entry);
            Some(format!("{}::{c}", super::conv::implicit_module(c).name))
        }
        _ => None,
    }
}

/// Whether A and B of a GEMM of `(m, n, k)` with these transposes, leading
/// dimensions and batch strides load as `vec4`s.
fn vec_flags(
    [m, n, k]: [usize; 3],
    (ta, tb): (bool, bool),
    [lda, ldb]: [usize; 2],
    [sa, sb]: [usize; 2],
) -> (bool, bool) {
    let four = |v: usize| v % 4 == 0;
    let vec_a = four(lda) && four(sa) && (if ta { four(m) } else { four(k) });
    let vec_b = four(ldb) && four(sb) && (if tb { four(k) } else { four(n) });
    (vec_a, vec_b)
}

/// The buffers `entry` binds, in binding order: each entry point's layout
/// holds only the bindings it uses (matmul.wgsl's 1 a, 2 b, 3 c, 4 a as
/// vec4s, 5 b as vec4s; the register kernels' 4 is B again).
fn bound<T: Copy>(entry: &str, a: T, b: T, c: T) -> Vec<T> {
    match entry {
        "matmul_reg" | "matmul_sg" => vec![a, b, c, b],
        // gemm_coop reads through a_at / b_at only, gemm_coop_direct its
        // fragments straight from a and b; matmul_sg_narrow reads B as scalars.
        "gemm_coop" | "gemm_coop_direct" | "matmul_sg_narrow" => vec![a, b, c],
        _ => vec![a, b, c, a, b],
    }
}

/// The form a register kernel takes for an m x n product: `matmul_sg`'s
/// 16-column form where the output, after `run`'s flip to `C^T` for narrow
/// outputs, is still at most 16 columns wide.
fn register_form(entry: &'static str, m: usize, n: usize) -> &'static str {
    let cols = if n < 64 && m > n { m } else { n };
    if entry == "matmul_sg" && cols <= 16 {
        "matmul_sg_narrow"
    } else {
        entry
    }
}

/// Workgroups along n and m of a register-path matmul kernel.
fn reg_grid(entry: &str, m: usize, n: usize) -> [usize; 2] {
    if entry == "matmul_sg_narrow" {
        [n.div_ceil(16), m.div_ceil(16)]
    } else if entry == "matmul_sg" {
        [n.div_ceil(64), m.div_ceil(16)]
    } else {
        [n.div_ceil(128), m.div_ceil(4)]
    }
}

/// Entry point and grid (tiles along n, m, batch) of a GEMM of m x n
/// outputs over `nz` batches, before splitting by the workgroup limit.
pub(crate) fn gemm_grid(g: &GpuDevice, m: usize, n: usize, nz: usize) -> (&'static str, [usize; 3]) {
    if g.gemm_register() {
        ("gemm_reg", [n.div_ceil(64), m.div_ceil(4), nz])
    } else {
        ("gemm", [n.div_ceil(64), m.div_ceil(64), nz])
    }
}

pub(crate) fn gpu(op: &Op, g: &Gpu, x: &[Operand], out: &[usize], dtype: DType) -> Result<GpuBuf> {
    let Op::MatMul { ta, tb } = *op else {
        return gpu_int8(g, x, out);
    };
    let (a, b) = (x[0], x[1]);
    let (m, n, k, _) = dims(ta, tb, a.shape(), b.shape());
    let ob = out[..out.len() - 2].to_vec();
    let nb = numel(&ob);
    if k == 0 {
        // An empty sum: zeros.
        return super::creation::fill_gpu(g, nb * m * n, 0.0, dtype);
    }
    let c = g.alloc("matmul", (nb * m * n * dtype.size()) as u64)?;
    // Operands whose batch only partly broadcasts are materialized.
    let mut held = Vec::new();
    let mut operand = |t: &Operand| -> Result<(usize, usize)> {
        let r = t.rank();
        let mat = t.shape()[r - 2] * t.shape()[r - 1];
        match batch_stride(&t.shape()[..r - 2], &ob, mat) {
            Some(s) => Ok((s, usize::MAX)),
            None => {
                let mut full = ob.clone();
                full.extend_from_slice(&t.shape()[r - 2..]);
                let buf = g.alloc("matmul", (numel(&full) * dtype.size()) as u64)?;
                let st = broadcast_strides(t.shape(), &full);
                super::layout::copy(g, t.gpu_buf(), &buf, dtype, &full, &st, 0, &strides(&full), 0)?;
                held.push(buf);
                Ok((mat, held.len() - 1))
            }
        }
    };
    let (sa, ia) = operand(&a)?;
    let (sb, ib) = operand(&b)?;
    let abuf = if ia == usize::MAX { a.gpu_buf() } else { &held[ia] };
    let bbuf = if ib == usize::MAX { b.gpu_buf() } else { &held[ib] };
    GemmLaunch {
        a: abuf,
        b: bbuf,
        c: &c,
        m,
        n,
        k,
        batch: nb,
        ta,
        tb,
        lda: a.shape()[a.rank() - 1],
        ldb: b.shape()[b.rank() - 1],
        ldc: n,
        sa,
        sb,
        sc: m * n,
    }
    .launch(g, dtype)?;
    Ok(c)
}

/// `matmul_int8`: every row of `a` (its leading dimensions flattened) times
/// the transposed int8 weights, in one launch.
fn gpu_int8(g: &Gpu, x: &[Operand], out: &[usize]) -> Result<GpuBuf> {
    let k = x[0].shape().last().copied().unwrap_or(0);
    let n = out.last().copied().unwrap_or(0);
    let m = numel(&out[..out.len() - 1]);
    if k == 0 {
        return super::creation::fill_gpu(g, m * n, 0.0, DType::F32);
    }
    let c = g.alloc("matmul_int8", (m * n * DType::F32.size()) as u64)?;
    Int8Gemm {
        a: x[0].gpu_buf(),
        wq: x[1].gpu_buf(),
        scales: x[2].gpu_buf(),
        c: &c,
        m,
        n,
        k,
        batch: 1,
        lda: k,
        ldc: n,
        sa: 0,
        sc: 0,
        rows: 0,
    }
    .launch(g)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gemm_coop_direct reads every tile unchecked: only products it can
    /// run qualify, and they are tuned apart from those that cannot.
    #[test]
    fn direct_products_are_a_class_of_their_own() {
        let ok = |m, n, k, t, ld, s| direct([m, n, k], t, ld, s);
        assert!(ok(128, 256, 64, (false, false), [64, 256], [0, 0]));
        assert!(ok(4096, 4096, 4096, (false, false), [4096, 4096], [4096 * 4096, 0]));
        assert!(!ok(128, 256, 72, (false, false), [72, 256], [0, 0]), "k % 16");
        assert!(!ok(128, 136, 64, (false, false), [64, 136], [0, 0]), "n % 128");
        assert!(!ok(130, 256, 64, (false, false), [64, 256], [0, 0]), "m % 128");
        assert!(!ok(128, 256, 64, (true, false), [128, 256], [0, 0]), "transposed A");
        assert!(!ok(128, 256, 64, (false, true), [64, 64], [0, 0]), "transposed B");
        assert!(!ok(128, 256, 64, (false, false), [68, 256], [0, 0]), "lda % 8");
        assert!(!ok(128, 256, 64, (false, false), [64, 256], [4, 0]), "sa % 8");
        assert_ne!(class_op(DType::F16, true), class_op(DType::F16, false));
        assert_eq!(class_op(DType::F32, true), class_op(DType::F32, false));
    }

    /// Every entry point the host dispatches gets as many buffers as its
    /// layout has storage bindings (a mismatch fails every launch, and
    /// only a device that runs the kernel would show it).
    #[test]
    fn each_entry_gets_its_bindings() {
        let kernels: [(&Kernel, KType, &[&str]); 8] = [
            (
                &MATMUL,
                KType::F32,
                &["gemm", "matmul_wide", "matmul_wide_warp", "matmul_reg"],
            ),
            (&MATMUL_WIDE_DB, KType::F32, &["matmul_wide_db", "matmul_wide_db_warp"]),
            (&MATMUL_SG, KType::F32, &["matmul_sg", "matmul_sg_narrow"]),
            (&MATMUL_COOP, KType::F16, &["gemm_coop"]),
            (&MATMUL_COOP8, KType::F16, &["gemm_coop"]),
            (&MATMUL_COOP_WIDE, KType::F16, &["gemm_coop_wide", "gemm_coop_direct"]),
            (&MATMUL_COOP_STAGED, KType::F16, &["gemm_coop_staged"]),
            (&MATMUL_COOP_STAGED8, KType::F16, &["gemm_coop_staged"]),
        ];
        for (k, t, entries) in kernels {
            let (module, info) = k.validate(t).unwrap();
            for &e in entries {
                let ep = module.entry_points.iter().position(|p| p.name == e).unwrap();
                let used = info.get_entry_point(ep);
                let storage = module
                    .global_variables
                    .iter()
                    .filter(|(h, g)| {
                        g.binding.is_some()
                            && matches!(g.space, naga::AddressSpace::Storage { .. })
                            && !used[*h].is_empty()
                    })
                    .count();
                assert_eq!(bound(e, 1, 2, 3).len(), storage, "{}::{e}", k.name);
            }
        }
    }
}
