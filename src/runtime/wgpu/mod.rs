//! A logical GPU: a wgpu device and queue, its memory pool, its pipeline
//! cache and the stream of pending work.
//!
//! Ops are encoded into one open compute pass; the pass's command buffer is
//! submitted when a readback needs the results, when the per-batch uniform
//! arena is full, or on `synchronize()`. Per-dispatch parameters (shapes,
//! strides, scalars) are collected in a CPU copy of the arena and written with
//! one `write_buffer` per batch; each dispatch binds its 256-byte window with
//! a dynamic offset, so parameter upload costs no buffer creation.
//!
//! A user's eager elementwise f32 ops do not enter the pass at once: they
//! wait in the device's list and are fused when anything else touches the
//! stream (see `fusion.rs`).
//!
//! Bind-group layouts are not written by hand: they come from naga's
//! reflection of the entry point (which globals it uses, uniform or storage,
//! read-only or not), so a shader and its layout cannot disagree.
//!
//! Each WGSL uniform struct has a `#[repr(C)]` twin on the host, declared
//! with `params!` next to its kernel: same field names, same types. A
//! kernel lists its twins ([`Kernel::params`]); `tests/shaders.rs` checks
//! every twin's name, fields, offsets and size against naga's layout of the
//! shader's struct, and a launch whose parameter block is not the entry
//! point's struct is an error when its pipeline is bound.

/// Declares the host twin of a WGSL uniform struct: `#[repr(C)]`, `Pod`,
/// with its WGSL name and field offsets for the layout test.
macro_rules! params {
    ($(#[$m:meta])* $vis:vis struct $name:ident = $wgsl:literal {
        $($(#[$fm:meta])* $f:ident: $t:ty),* $(,)?
    }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fm])* pub $f: $t),*
        }
        impl $crate::runtime::wgpu::Params for $name {
            const NAME: &'static str = stringify!($name);
            const WGSL: &'static str = $wgsl;
            const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($f), std::mem::offset_of!($name, $f))),*];
        }
    };
}

pub mod memory;

mod binary;
mod conv;
mod creation;
mod fusion;
pub(crate) mod generated;
mod layout;
mod matmul;
mod optim;
mod pool;
mod reduce;
mod softmax;
pub(crate) mod transfer;
pub(crate) mod tune;
mod unary;

use self::memory::{Alloc, BufferSource, GpuBuf, MemoryInfo, Pool, StatusRecord};
use super::cpu::CpuData;
use super::{Backend, Operand, Storage};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use crate::core::op::{Family, Op};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// IEEE 754 helpers on f32 (NaN and infinity tests by bits, NaN-propagating
/// max and min, C's pow, division by zero) that every kernel may call.
const IEEE: &str = include_str!("../../../shaders/types/ieee.wgsl");

/// Element type a kernel variant is compiled for; the prelude declares `T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KType {
    /// `f32` tensors (float64 never reaches a GPU kernel).
    F32,
    /// `f16` tensors on adapters with `SHADER_F16`; accumulates in f32.
    F16,
    /// `i32` tensors.
    I32,
    /// 32-bit words: booleans (0/1), and bit-exact copies of any 32-bit dtype.
    U32,
}

impl KType {
    /// The WGSL prepended to a kernel's sources (`shaders/types/*.wgsl`):
    /// the aliases `T` and `Acc` and the helpers whose body differs by type.
    pub fn prelude(self) -> &'static str {
        match self {
            KType::F32 => include_str!("../../../shaders/types/f32.wgsl"),
            KType::F16 => include_str!("../../../shaders/types/f16.wgsl"),
            KType::I32 => include_str!("../../../shaders/types/i32.wgsl"),
            KType::U32 => include_str!("../../../shaders/types/u32.wgsl"),
        }
    }
    /// The WGSL type name, also the suffix of pipeline and error labels
    /// (`matmul<f16>`).
    pub fn name(self) -> &'static str {
        match self {
            KType::F32 => "f32",
            KType::F16 => "f16",
            KType::I32 => "i32",
            KType::U32 => "u32",
        }
    }
}

/// A kernel's uniform parameter block on the host: the `#[repr(C)]` twin
/// of the WGSL struct named `WGSL` (declare one with `params!`).
pub trait Params: bytemuck::Pod {
    /// The host type's name.
    const NAME: &'static str;
    /// The WGSL struct's name.
    const WGSL: &'static str;
    /// (field name, byte offset) in declaration order.
    const FIELDS: &'static [(&'static str, usize)];
}

/// What the layout test and the launch check know of a [`Params`] type.
#[derive(Clone, Copy, Debug)]
pub struct ParamsLayout {
    /// The host type's name.
    pub rust: &'static str,
    /// The WGSL struct's name.
    pub wgsl: &'static str,
    /// `size_of` the host type, which must equal the WGSL struct's size.
    pub size: usize,
    /// (field name, byte offset) in declaration order.
    pub fields: &'static [(&'static str, usize)],
}

impl ParamsLayout {
    /// The layout of `P`, usable in a `const` kernel table.
    pub const fn of<P: Params>() -> ParamsLayout {
        ParamsLayout {
            rust: P::NAME,
            wgsl: P::WGSL,
            size: std::mem::size_of::<P>(),
            fields: P::FIELDS,
        }
    }
}

/// A launch's parameter bytes and the WGSL struct they fill.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ParamBlock<'a> {
    pub bytes: &'a [u8],
    pub wgsl: &'static str,
}

impl<'a> ParamBlock<'a> {
    /// No parameters (a kernel without a uniform).
    pub const NONE: ParamBlock<'static> = ParamBlock { bytes: &[], wgsl: "" };

    pub fn of<P: Params>(p: &'a P) -> ParamBlock<'a> {
        ParamBlock {
            bytes: bytemuck::bytes_of(p),
            wgsl: P::WGSL,
        }
    }
}

/// A WGSL kernel family: its source files (concatenated after the type
/// prelude, so a file may call functions another part defines), the
/// element types it is built for and the host twins of its uniform structs.
///
/// Generated kernels (a compiled graph's fused kernels) own their last
/// source part (`generated`); the pipelines built for one are dropped once
/// the kernel is (see `GpuDevice::pipeline`), so names must not repeat.
pub struct Kernel {
    /// Unique name; pipelines are cached under it and errors cite it.
    pub name: Cow<'static, str>,
    /// WGSL files (`include_str!` of `shaders/*.wgsl`), in concatenation order.
    pub sources: &'static [&'static str],
    /// Source generated at run time, appended after `sources`.
    pub generated: Option<Arc<str>>,
    /// The element types a variant is built and validated for.
    pub types: &'static [KType],
    /// The host twins of the uniform structs its entry points take,
    /// checked against naga's layout by `tests/shaders.rs`.
    pub params: &'static [ParamsLayout],
    /// WGSL `enable` directives beyond the type prelude's (they must come
    /// before every declaration): `"wgpu_cooperative_matrix"`.
    pub enables: &'static [&'static str],
    /// Whether wgpu adds its runtime checks (index clamps on workgroup and
    /// function arrays and storage buffers, loop counters that bound every
    /// loop). `false` only for GEMM kernels whose indexes are in range by
    /// construction (storage reads guarded or clamped in the kernel) and
    /// whose loops end: their inner loops then compile as written (see
    /// [`GemmChecks`]); they run only on Vulkan, where the driver's robust
    /// buffer access adds a guard of its own.
    pub(crate) checked: bool,
}

impl Kernel {
    /// A kernel of fixed sources.
    pub const fn new(
        name: &'static str,
        sources: &'static [&'static str],
        types: &'static [KType],
        params: &'static [ParamsLayout],
    ) -> Kernel {
        Kernel::enabling(name, sources, types, params, &[])
    }

    /// A kernel of fixed sources that needs `enable` directives beyond
    /// its type prelude's.
    pub const fn enabling(
        name: &'static str,
        sources: &'static [&'static str],
        types: &'static [KType],
        params: &'static [ParamsLayout],
        enables: &'static [&'static str],
    ) -> Kernel {
        Kernel::unchecked(name, sources, types, params, enables).with_checks()
    }

    /// A GEMM kernel built without wgpu's runtime checks (see
    /// [`Kernel::checked`]): the unchecked twin of a checked kernel of the
    /// same sources.
    pub(crate) const fn unchecked(
        name: &'static str,
        sources: &'static [&'static str],
        types: &'static [KType],
        params: &'static [ParamsLayout],
        enables: &'static [&'static str],
    ) -> Kernel {
        Kernel {
            name: Cow::Borrowed(name),
            sources,
            generated: None,
            types,
            params,
            enables,
            checked: false,
        }
    }

    const fn with_checks(mut self) -> Kernel {
        self.checked = true;
        self
    }

    /// The full WGSL of the `ty` variant: the `enables`, the type prelude,
    /// then `sources`, then `generated`.
    pub fn source(&self, ty: KType) -> String {
        let mut s = String::new();
        for e in self.enables {
            s.push_str(&format!("enable {e};\n"));
        }
        s.push_str(ty.prelude());
        s.push('\n');
        s.push_str(IEEE);
        for part in self.sources.iter().copied().chain(self.generated.as_deref()) {
            s.push('\n');
            s.push_str(part);
        }
        s
    }

    /// Parses and validates one variant with naga; returns the module and its info.
    pub fn validate(&self, ty: KType) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
        let src = self.source(ty);
        let module = naga::front::wgsl::parse_str(&src).map_err(|e| Error::ShaderCompilation {
            kernel: format!("{}<{}>", self.name, ty.name()),
            msg: e.emit_to_string(&src),
        })?;
        let info = self.revalidate(ty, &module)?;
        Ok((module, info))
    }

    /// Validates a (possibly transformed) module of this kernel.
    pub fn revalidate(&self, ty: KType, module: &naga::Module) -> Result<naga::valid::ModuleInfo> {
        // pack2x16float / unpack2x16float (the f16 cast) need FLOAT16_IN_FLOAT32;
        // every wgpu backend but some GLES drivers has it.
        let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if ty == KType::F16 {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        // Subgroup operations, cooperative matrices and 64-bit integers
        // validate everywhere; only adapters with `Features::SUBGROUP` (and
        // `EXPERIMENTAL_COOPERATIVE_MATRIX`, `SHADER_INT64`) are given the
        // kernels that use them.
        caps |= naga::valid::Capabilities::SUBGROUP
            | naga::valid::Capabilities::COOPERATIVE_MATRIX
            | naga::valid::Capabilities::SHADER_INT64;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all())
            .validate(module)
            .map_err(|e| Error::ShaderCompilation {
                kernel: format!("{}<{}>", self.name, ty.name()),
                msg: error_chain(&e, e.emit_to_string(&self.source(ty))),
            })
    }
}

/// An error's message followed by its causes.
fn error_chain(e: &dyn std::error::Error, mut msg: String) -> String {
    let mut cause = e.source();
    while let Some(c) = cause {
        msg += &format!("\n  caused by: {c}");
        cause = c.source();
    }
    msg
}

/// The description of a wgpu error (its Display is only the kind).
fn describe(e: &wgpu::Error) -> String {
    match e {
        wgpu::Error::Validation { description, .. } | wgpu::Error::Internal { description, .. } => description.clone(),
        e => e.to_string(),
    }
}

/// Which GEMM kernel matmul and convolutions use (see shaders/gemm.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmVariant {
    /// On CPU adapters (llvmpipe, SwiftShader, WARP) `Subgroup` for matmuls
    /// where the adapter has 8-lane subgroups, else `Register`; elsewhere
    /// `Wide` for matmuls of at least 256 128x128 tiles, else `Tiled`.
    /// Products of at least 2^28 flops where there is a choice take the
    /// kernel timed fastest for their shape class on first use, unless
    /// op determinism is on (`config::enable_op_determinism`).
    Auto,
    /// Workgroup-memory tiles: the kernel for GPUs.
    Tiled,
    /// Register blocks without workgroup memory: the kernel for CPU adapters.
    Register,
    /// `Register`'s layout sharing A through subgroup broadcasts: the matmul
    /// kernel for CPU adapters with 8-lane subgroups (others use `Register`).
    Subgroup,
    /// 128x128 workgroup-memory tiles (matmul only; convolutions use `Tiled`):
    /// what GPUs use for products with enough tiles to fill them.
    Wide,
    /// `Wide` with its workgroup tiles double-buffered (one barrier per step
    /// of k; shaders/matmul_wide_db.wgsl), for adapters whose workgroups
    /// hold 256 invocations and 32 KiB of workgroup memory: matmul only
    /// (convolutions use `Tiled`), autotuned against the others on GPUs
    /// for large products. Forced on an adapter without the room, an error.
    WideDouble,
    /// `Wide` with each subgroup of 32 invocations on a 4x8 block of its
    /// 16x16 invocations (`matmul_wide_warp`): fewer workgroup-memory reads
    /// per step of k where subgroups have 32 lanes; autotuned against the
    /// others on GPUs for large products.
    WideWarp,
    /// `WideDouble` with `WideWarp`'s layout (`matmul_wide_db_warp`).
    WideDoubleWarp,
    /// Cooperative matrices (tensor cores; shaders/gemm_coop.wgsl, 64x64
    /// tiles): f16 operands with f32 sums, on adapters with
    /// `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` listing a 16x16x16
    /// configuration of f16 operands with f32 sums, and 32-invocation
    /// subgroups; or its twin shaders/gemm_coop8.wgsl where the adapter
    /// lists 8x8x8 (Apple GPUs through Metal, lavapipe from Mesa 25.1),
    /// with workgroups of 16 subgroups of its one size. `Auto` picks it for
    /// f16 convolutions there (and for f16 matmuls where `CooperativeWide`
    /// cannot run), autotuned against the others for large ones; on CPU
    /// adapters (which emulate them) and for gemm_coop8 on Metal (until
    /// proven on an Apple GPU) only when forced. Forced, other
    /// dtypes take `Tiled`; on an adapter without them it is an error
    /// naming what is missing.
    Cooperative,
    /// `Cooperative` with 128x128 tiles (shaders/gemm_coop_wide.wgsl;
    /// matmul only, convolutions use `Cooperative`), for adapters with
    /// 16x16x16 cooperative matrices that also hold 256 invocations and 28
    /// KiB of workgroup memory per workgroup: what `Auto` picks for f16
    /// matmuls there, autotuned against the others for large ones.
    CooperativeWide,
    /// `Cooperative` with 128x128 tiles staged through double-buffered
    /// workgroup memory as vectors (shaders/gemm_coop_staged.wgsl; matmul
    /// only, convolutions use `Cooperative`), for adapters with 16x16x16
    /// cooperative matrices and 32-invocation subgroups whose workgroups
    /// hold 44 KiB of workgroup memory, or 8x8x8 ones with 8-invocation
    /// subgroups (64x64 tiles; lavapipe): `Auto` times it against the
    /// others for large f16 matmuls.
    CooperativeStaged,
}

/// Whether GEMM kernels run with wgpu's runtime checks:
/// `WGFLOW_GEMM_CHECKS`.
///
/// Without them, naga leaves out the clamp on every array index and the
/// counter it adds to every loop, which keep a driver from compiling the
/// inner loops of a GEMM as written. The kernels guard or clamp their own
/// storage reads; unchecked builds run only on Vulkan (whose bindings stay
/// under 4 GiB and whose drivers add robust buffer access), elsewhere
/// every setting means checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmChecks {
    /// On Vulkan adapters autotuning times each GEMM kernel both ways and
    /// keeps the faster (on llvmpipe the unchecked `matmul_sg` is about
    /// 1.3x faster); products that are not tuned (small ones, forced
    /// kernels, op determinism) and other backends run checked.
    Auto,
    /// Every GEMM kernel checked.
    On,
    /// Every GEMM kernel (matmul's, the convolutions' implicit GEMMs) runs
    /// its unchecked build, on Vulkan.
    Off,
}

impl GemmChecks {
    /// The values [`GemmChecks::parse`] takes, for messages.
    pub const NAMES: &'static str = "auto, on, off";

    /// Parses `WGFLOW_GEMM_CHECKS`'s values (see [`GemmChecks::NAMES`]).
    pub fn parse(s: &str) -> Option<GemmChecks> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => GemmChecks::Auto,
            "on" | "1" | "true" => GemmChecks::On,
            "off" | "0" | "false" => GemmChecks::Off,
            _ => return None,
        })
    }
}

impl GemmVariant {
    /// The values [`GemmVariant::parse`] takes, for messages.
    pub const NAMES: &'static str = "auto, tiled, wide, wide_double, wide_warp, wide_double_warp, register, subgroup, cooperative, \
         cooperative_wide, cooperative_staged";

    /// Parses `WGFLOW_GEMM`'s values (see [`GemmVariant::NAMES`]).
    pub fn parse(s: &str) -> Option<GemmVariant> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => GemmVariant::Auto,
            "tiled" => GemmVariant::Tiled,
            "register" => GemmVariant::Register,
            "subgroup" => GemmVariant::Subgroup,
            "wide" => GemmVariant::Wide,
            "wide_double" | "wide_db" => GemmVariant::WideDouble,
            "wide_warp" => GemmVariant::WideWarp,
            "wide_double_warp" | "wide_db_warp" => GemmVariant::WideDoubleWarp,
            "cooperative" | "coop" => GemmVariant::Cooperative,
            "cooperative_wide" | "coop_wide" => GemmVariant::CooperativeWide,
            "cooperative_staged" | "coop_staged" => GemmVariant::CooperativeStaged,
            _ => return None,
        })
    }

    /// The name `WGFLOW_GEMM` gives the variant.
    pub fn name(self) -> &'static str {
        match self {
            GemmVariant::Auto => "auto",
            GemmVariant::Tiled => "tiled",
            GemmVariant::Register => "register",
            GemmVariant::Subgroup => "subgroup",
            GemmVariant::Wide => "wide",
            GemmVariant::WideDouble => "wide_double",
            GemmVariant::WideWarp => "wide_warp",
            GemmVariant::WideDoubleWarp => "wide_double_warp",
            GemmVariant::Cooperative => "cooperative",
            GemmVariant::CooperativeWide => "cooperative_wide",
            GemmVariant::CooperativeStaged => "cooperative_staged",
        }
    }
}

/// The GEMM variant forced for this thread or by `WGFLOW_GEMM`, if any.
pub(crate) fn forced_gemm() -> Option<GemmVariant> {
    Some(gemm_override()).filter(|&v| v != GemmVariant::Auto)
}

/// The uniform parameters of a compiled graph's launches, in launch order,
/// written once into a buffer the graph keeps: replays bind them there
/// instead of copying them into the batch's arena.
pub(crate) struct GraphParams {
    buf: Arc<wgpu::Buffer>,
    blocks: Vec<Vec<u8>>,
    pool: Arc<Mutex<Pool>>,
}

impl Drop for GraphParams {
    fn drop(&mut self) {
        // Bind groups are cached by buffer address; forget the ones naming this.
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).generation += 1;
    }
}

enum ParamMode {
    Off,
    Record(Vec<Vec<u8>>),
    Replay(Arc<GraphParams>, usize),
}

/// How one call into the runtime executes, passed explicitly down to the
/// kernels' launches: eagerly (pool memory, parameters copied into the
/// batch's arena), or as part of a compiled graph's run, which offers the
/// output buffers its memory plan assigned and records or replays the
/// uniform parameters of its launches.
pub struct ExecContext {
    planned: RefCell<Vec<GpuBuf>>,
    params: RefCell<ParamMode>,
    /// Elementwise ops may wait to be fused with the next ones (see `fusion`).
    defer: bool,
}

impl ExecContext {
    /// An eager op: nothing planned.
    pub fn eager() -> ExecContext {
        ExecContext {
            planned: RefCell::new(Vec::new()),
            params: RefCell::new(ParamMode::Off),
            defer: false,
        }
    }

    /// A user's eager op: elementwise f32 ops on a GPU may wait to be
    /// fused with the ops that follow (see `runtime::wgpu::fusion`).
    pub fn lazy() -> ExecContext {
        ExecContext {
            defer: true,
            ..ExecContext::eager()
        }
    }

    /// A graph run that records the parameters of every launch (the first run).
    pub(crate) fn recording() -> ExecContext {
        ExecContext {
            params: RefCell::new(ParamMode::Record(Vec::new())),
            ..ExecContext::eager()
        }
    }

    /// A graph run whose launches bind `params` where theirs are the
    /// recorded ones (the n-th launch against the n-th record; any other
    /// goes to the arena).
    pub(crate) fn replaying(params: Arc<GraphParams>) -> ExecContext {
        ExecContext {
            params: RefCell::new(ParamMode::Replay(params, 0)),
            ..ExecContext::eager()
        }
    }

    /// Offers `bufs` to the next op's allocations (each taken at most once,
    /// by the first request of its size); the ones it leaves are dropped by
    /// the next offer.
    pub(crate) fn offer(&self, bufs: Vec<GpuBuf>) {
        *self.planned.borrow_mut() = bufs;
    }

    /// The parameters recorded so far (a recording run).
    pub(crate) fn recorded(self) -> Vec<Vec<u8>> {
        match self.params.into_inner() {
            ParamMode::Record(w) => w,
            _ => Vec::new(),
        }
    }

    fn take_planned(&self, size: u64) -> Option<GpuBuf> {
        let mut p = self.planned.borrow_mut();
        let i = p.iter().position(|b| b.size == size)?;
        Some(p.remove(i))
    }

    /// Where the parameters of a launch with `params` come from: the graph's
    /// buffer and offset, when replaying a recorded launch.
    fn params_for(&self, params: &[u8]) -> Option<(Arc<GraphParams>, u32)> {
        match &mut *self.params.borrow_mut() {
            ParamMode::Off => None,
            ParamMode::Record(w) => {
                w.push(params.to_vec());
                None
            }
            ParamMode::Replay(g, next) => {
                let i = *next;
                *next += 1;
                (g.blocks.get(i).map(Vec::as_slice) == Some(params))
                    .then(|| (g.clone(), (i as u64 * PARAM_BYTES) as u32))
            }
        }
    }
}

/// A GPU as one call's kernels see it: the device and the call's
/// [`ExecContext`]. Allocations take planned buffers first; launches bind
/// a graph's parameters where it has them.
pub(crate) struct Gpu<'a> {
    dev: &'a GpuDevice,
    ctx: &'a ExecContext,
}

impl std::ops::Deref for Gpu<'_> {
    type Target = GpuDevice;
    fn deref(&self) -> &GpuDevice {
        self.dev
    }
}

impl Gpu<'_> {
    /// Memory for an op's output (a planned buffer of this size, else the pool's).
    pub(crate) fn alloc(&self, op: &'static str, bytes: u64) -> Result<GpuBuf> {
        if bytes > 0 {
            if let Some(b) = self.ctx.take_planned(bytes.div_ceil(4) * 4) {
                return Ok(b);
            }
        }
        self.dev.alloc(op, bytes)
    }

    /// Encodes a launch into the pending pass, binding the graph's
    /// parameters where the context has them.
    pub(crate) fn launch(&self, l: &Launch) -> Result<()> {
        self.dev.launch_with(l, self.ctx.params_for(l.params.bytes))
    }
}

thread_local! {
    static GEMM_OVERRIDE: std::cell::Cell<GemmVariant> = const { std::cell::Cell::new(GemmVariant::Auto) };
    static CHECKS_OVERRIDE: std::cell::Cell<GemmChecks> = const { std::cell::Cell::new(GemmChecks::Auto) };
    static STYLE_OVERRIDE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    static PRETEND_COOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static FAIL_AFTER: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Makes the launch from this thread after the next `n` fail, once (`None`
/// cancels), as a driver refusing its kernel would (`ShaderCompilation`):
/// tests use it to prove that work cut short is reported or redone, never
/// left half-done in silence.
#[cfg(feature = "testing")]
pub fn fail_launch_after(n: Option<u64>) {
    FAIL_AFTER.with(|c| c.set(n));
}

/// The injected failure of `fail_launch_after`, if this launch is the one.
fn injected_failure(kernel: &str) -> Result<()> {
    FAIL_AFTER.with(|c| match c.get() {
        Some(0) => {
            c.set(None);
            Err(Error::ShaderCompilation {
                kernel: kernel.to_string(),
                msg: "refused (injected by fail_launch_after)".into(),
            })
        }
        Some(n) => {
            c.set(Some(n - 1));
            Ok(())
        }
        None => Ok(()),
    })
}

/// Makes GEMMs launched from this thread take `gemm_coop` as if every
/// adapter had cooperative matrices (`true`), so that a test can see a
/// device that cannot build it fall back.
#[cfg(feature = "testing")]
pub fn pretend_cooperative_matrix(on: bool) {
    PRETEND_COOP.with(|c| c.set(on));
}

/// Forces the kernels that have a GPU variant (workgroup cooperation) and a
/// CPU-adapter variant to pick one for ops launched from this thread:
/// `Some(true)` the CPU-adapter ones, `Some(false)` the GPU ones, `None` by
/// adapter. Tests use it to run both on one adapter. (GEMMs: `force_gemm_variant`.)
#[cfg(feature = "testing")]
pub fn force_cpu_style_kernels(v: Option<bool>) {
    STYLE_OVERRIDE.with(|c| c.set(v));
}

/// The GEMM kernel forced for this thread, else by `WGFLOW_GEMM`, else `Auto`.
fn gemm_override() -> GemmVariant {
    match GEMM_OVERRIDE.with(|c| c.get()) {
        GemmVariant::Auto => *GEMM_ENV,
        v => v,
    }
}

/// Whether a cooperative-matrix GEMM kernel is forced.
fn coop_forced() -> bool {
    matches!(
        gemm_override(),
        GemmVariant::Cooperative | GemmVariant::CooperativeWide | GemmVariant::CooperativeStaged
    )
}

/// `WGFLOW_GEMM`, read once (`config` turns an unknown value into an error
/// at the first device lookup, before any GEMM launches).
static GEMM_ENV: std::sync::LazyLock<GemmVariant> = std::sync::LazyLock::new(|| {
    GemmVariant::parse(&std::env::var("WGFLOW_GEMM").unwrap_or_default()).unwrap_or(GemmVariant::Auto)
});

/// Forces a GEMM kernel for ops launched from this thread (tests and
/// benchmarks use it to run both kernels on one adapter).
#[cfg(feature = "testing")]
pub fn force_gemm_variant(v: GemmVariant) {
    GEMM_OVERRIDE.with(|c| c.set(v));
}

/// Forces GEMM kernels launched from this thread to run with wgpu's runtime
/// checks (`On`) or without (`Off`); `Auto` leaves it to `WGFLOW_GEMM_CHECKS`
/// and autotuning. Tests use it to prove both builds.
#[cfg(feature = "testing")]
pub fn force_gemm_checks(v: GemmChecks) {
    CHECKS_OVERRIDE.with(|c| c.set(v));
}

/// The GEMM checks in force for this thread: forced for it, else by
/// `WGFLOW_GEMM_CHECKS`, else `Auto`.
pub fn gemm_checks() -> GemmChecks {
    match CHECKS_OVERRIDE.with(|c| c.get()) {
        GemmChecks::Auto => *CHECKS_ENV,
        v => v,
    }
}

/// `WGFLOW_GEMM_CHECKS`, read once (`config` turns an unknown value into an
/// error at the first device lookup).
static CHECKS_ENV: std::sync::LazyLock<GemmChecks> = std::sync::LazyLock::new(|| {
    GemmChecks::parse(&std::env::var("WGFLOW_GEMM_CHECKS").unwrap_or_default()).unwrap_or(GemmChecks::Auto)
});

/// Turns the upload staging ring off (`false`: every upload goes through
/// wgpu's `write_buffer`) or back on, for the whole process: benchmarks
/// compare the two in one run.
#[cfg(feature = "testing")]
pub fn force_upload_ring(on: bool) {
    transfer::RING_ON.store(on, Ordering::Relaxed);
}

/// Window of the uniform arena each dispatch gets.
pub(crate) const PARAM_BYTES: u64 = 256;
/// Dispatches per submitted batch (arena slots).
const SLOTS: u64 = 512;

#[derive(Clone, Copy, Debug)]
enum Slot {
    Params,
    Storage,
}

pub(crate) struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// (binding, kind), sorted by binding.
    slots: Vec<(u32, Slot)>,
    /// The entry point's uniform struct: name and size in bytes.
    params: Option<(String, usize)>,
    /// A generated kernel's source, while the kernel lives.
    alive: Option<Weak<str>>,
}

impl Pipeline {
    fn param_bytes(&self) -> usize {
        self.params.as_ref().map_or(0, |p| p.1)
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    kernel: Cow<'static, str>,
    entry: &'static str,
    ty: KType,
    consts: Vec<(&'static str, u64)>,
}

/// One kernel launch. `bufs[i]` binds to `@binding(i + 1)`; binding 0 is the
/// parameter uniform.
pub(crate) struct Launch<'a> {
    pub kernel: &'a Kernel,
    pub entry: &'static str,
    pub ty: KType,
    pub consts: &'a [(&'static str, f64)],
    pub params: ParamBlock<'a>,
    pub bufs: &'a [&'a GpuBuf],
    pub groups: [u32; 3],
}

struct Stream {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    params: Vec<u8>,
    slots: u64,
    /// Upload ring buffers the open batch copies from.
    staged: Vec<transfer::Stage>,
    /// The last submission (reads wait for theirs alone).
    last: Option<wgpu::SubmissionIndex>,
}

/// A logical GPU (`gpu:N`): one wgpu device and queue opened on an adapter,
/// with its memory pool, pipeline and bind-group caches, and the open batch
/// of encoded work. Reached through [`Device::Gpu`](crate::runtime::Device::Gpu);
/// created by [`config`](crate::runtime::config) when the runtime initializes.
pub struct GpuDevice {
    pub(crate) label: String,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    /// `SHADER_F16` is enabled: f16 kernels compute in f16.
    pub(crate) f16: bool,
    /// `SUBGROUP` is enabled and every subgroup has 8 invocations.
    pub(crate) subgroup8: bool,
    /// `SHADER_INT64` is enabled (the elementwise kernels' wide entries).
    pub(crate) int64: bool,
    /// Why `gemm_coop` cannot run here (`None`: it can).
    pub(crate) coop_missing: Option<String>,
    /// The cooperative matrices here are 8x8x8: `gemm_coop` launches build
    /// its twin (`matmul_coop8`, `conv_coop8`) with 16 subgroups per
    /// workgroup, and `gemm_coop_wide` (16x16x16) does not run.
    pub(crate) coop8: bool,
    /// Why `gemm_coop` failed to build here, once it has.
    coop_failed: Mutex<Option<String>>,
    /// Why `gemm_coop_wide` failed to build here, once it has (matmuls
    /// then take `gemm_coop`).
    coop_wide_failed: Mutex<Option<String>>,
    /// The GEMM kernels autotuned per shape class.
    pub(crate) tuner: tune::Tuner,
    /// Memory growth is off: tensors are sub-allocated from shared slabs.
    slabs: bool,
    pool: Arc<Mutex<Pool>>,
    stream: Mutex<Stream>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
    /// (pool generation, bind groups by pipeline and bound buffer ranges)
    #[allow(clippy::type_complexity)]
    bind_groups: Mutex<(u64, HashMap<Vec<(usize, u64, u64)>, wgpu::BindGroup>)>,
    staging: Mutex<Vec<wgpu::Buffer>>,
    /// The upload ring (see `transfer`).
    uploads: Mutex<Vec<transfer::Stage>>,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    empty: Arc<wgpu::Buffer>,
    arena: wgpu::Buffer,
    dispatches: AtomicU64,
    submits: AtomicU64,
    bind_groups_made: AtomicU64,
    params_copied: AtomicU64,
    pub(crate) reads: AtomicU64,
    /// Elementwise ops waiting to be encoded, in the order they were
    /// called (see `fusion`).
    waiting: Mutex<Vec<fusion::Node>>,
    /// Held while a thread encodes the waiting ops.
    flushing: Mutex<()>,
}

struct Source {
    device: wgpu::Device,
    label: String,
    max: u64,
}

impl BufferSource for Source {
    fn create(&self, bytes: u64) -> Result<Option<wgpu::Buffer>> {
        if bytes > self.max {
            return Err(Error::TooLargeForBinding {
                op: "allocate",
                bytes,
                limit: self.max,
            });
        }
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgflow pool"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v {
            return Err(Error::Gpu {
                device: self.label.clone(),
                msg: describe(&e),
            });
        }
        Ok(if o.is_some() { None } else { Some(buffer) })
    }
}

pub(crate) struct GpuOptions {
    pub growth: bool,
    pub limit: Option<u64>,
}

/// Why an adapter cannot run `gemm_coop`, or `None` when it can (see
/// [`coop_fragment`]).
pub(crate) fn coop_missing(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo) -> Option<String> {
    coop_fragment(adapter, info).err()
}

/// The side of the cooperative matrices `gemm_coop` runs on here, or why
/// it cannot run. It needs `EXPERIMENTAL_COOPERATIVE_MATRIX`, `SHADER_F16`
/// and `SUBGROUP` with one subgroup size, and then either 16x16x16 f16 x
/// f16 + f32 with 32-invocation subgroups (shaders/gemm_coop.wgsl gives
/// each of four subgroups a quadrant; NVIDIA's tensor cores), or 8x8x8
/// with workgroups of 16 subgroups (its twin gemm_coop8.wgsl: Apple's
/// simdgroup matrices, lavapipe from Mesa 25.1).
pub(crate) fn coop_fragment(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo) -> std::result::Result<u32, String> {
    use wgpu::{CooperativeScalarType as S, Features as F};
    let f = adapter.features();
    if !f.contains(F::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return Err("Features::EXPERIMENTAL_COOPERATIVE_MATRIX".into());
    }
    if !f.contains(F::SHADER_F16) {
        return Err("Features::SHADER_F16".into());
    }
    let (lo, hi) = (info.subgroup_min_size, info.subgroup_max_size);
    if !f.contains(F::SUBGROUP) || lo != hi || lo == 0 {
        return Err(format!(
            "Features::SUBGROUP with one subgroup size (it has {lo}..={hi})"
        ));
    }
    let listed = adapter.cooperative_matrix_properties();
    let fits = |side: u32| {
        listed
            .iter()
            .any(|p| (p.m_size, p.n_size, p.k_size) == (side, side, side) && p.ab_type == S::F16 && p.cr_type == S::F32)
    };
    if fits(16) && lo == 32 {
        return Ok(16);
    }
    let limits = adapter.limits();
    let wg = lo.saturating_mul(16);
    let wide_enough = wg <= limits.max_compute_invocations_per_workgroup && wg <= limits.max_compute_workgroup_size_x;
    if fits(8) && wide_enough {
        return Ok(8);
    }
    Err(if fits(16) && !fits(8) {
        format!("Features::SUBGROUP with 32-invocation subgroups (it has {lo}) for its 16x16x16 cooperative matrices")
    } else if fits(8) {
        format!("workgroups of 16 subgroups ({wg} invocations) for its 8x8x8 cooperative matrices")
    } else {
        "a 16x16x16 or 8x8x8 f16 x f16 + f32 cooperative-matrix configuration".into()
    })
}

/// Whether cooperative matrices (`coop8`: 8x8x8 ones) run only when forced
/// on this adapter (see `GpuDevice::coop_opt_in`).
pub(crate) fn coop_opt_in(info: &wgpu::AdapterInfo, coop8: bool) -> bool {
    info.device_type == wgpu::DeviceType::Cpu || (coop8 && info.backend == wgpu::Backend::Metal)
}

/// The 8x8x8 twin of a module holding `gemm_coop` (see
/// [`GpuDevice::coop8`]).
fn coop8_twin(kernel: &str) -> Option<&'static Kernel> {
    Some(match kernel {
        "matmul_coop" => &matmul::MATMUL_COOP8,
        "matmul_coop_unchecked" => &matmul::MATMUL_COOP8_UNCHECKED,
        "conv_coop" => &conv::CONV_COOP8,
        "conv_coop_unchecked" => &conv::CONV_COOP8_UNCHECKED,
        "matmul_coop_staged" => &matmul::MATMUL_COOP_STAGED8,
        "matmul_coop_staged_unchecked" => &matmul::MATMUL_COOP_STAGED8_UNCHECKED,
        _ => return None,
    })
}

impl GpuDevice {
    pub(crate) fn new(ordinal: usize, adapter: &wgpu::Adapter, opts: GpuOptions) -> Result<Self> {
        let info = adapter.get_info();
        let label = format!("gpu:{ordinal}");
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP);
        let subgroup8 = subgroups && info.subgroup_min_size == 8 && info.subgroup_max_size == 8;
        let int64 = adapter.features().contains(wgpu::Features::SHADER_INT64);
        let fragment = coop_fragment(adapter, &info);
        let mut coop_missing = fragment.as_ref().err().cloned();
        let coop8 = fragment == Ok(8);
        let limits = adapter.limits();
        let open = |coop: bool| {
            let mut wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_INT64;
            if coop {
                wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            }
            let desc = wgpu::DeviceDescriptor {
                label: Some("wgflow"),
                required_features: adapter.features() & wanted,
                required_limits: limits.clone(),
                // SAFETY: the one experimental feature requested is
                // cooperative matrices, used only by gemm_coop, which the
                // conformance suite checks against the CPU device on
                // adapters that have it.
                experimental_features: if coop {
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                ..Default::default()
            };
            pollster::block_on(adapter.request_device(&desc))
        };
        let opened = match open(coop_missing.is_none()) {
            // An adapter that lists cooperative matrices but refuses a
            // device with them still serves without them.
            Err(e) if coop_missing.is_none() => {
                log::warn!(
                    "{label} ({}): no device with cooperative matrices ({e}); opening one without",
                    info.name
                );
                coop_missing = Some(format!("a device with cooperative matrices (request_device: {e})"));
                open(false)
            }
            r => r,
        };
        let (device, queue) = opened.map_err(|e| Error::Gpu {
            device: format!("{label} ({})", info.name),
            msg: format!("request_device failed: {e}"),
        })?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let errs = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            errs.lock().unwrap_or_else(|p| p.into_inner()).push(describe(&e));
        }));
        let lost = Arc::new(Mutex::new(None));
        let l = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                *l.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {msg}"));
            }
        });
        let max_bind = limits.max_storage_buffer_binding_size;
        let max_buf = limits.max_buffer_size.min(max_bind);
        let source = Arc::new(Source {
            device: device.clone(),
            label: label.clone(),
            max: max_buf,
        });
        let align = limits.min_storage_buffer_offset_alignment as u64;
        let pool = Pool::new(label.clone(), opts.growth, opts.limit, align, max_buf, source)?;
        let empty = Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgflow empty"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }));
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgflow params"),
            size: SLOTS * PARAM_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuDevice {
            slabs: !opts.growth,
            label,
            info,
            device,
            queue,
            limits,
            f16,
            subgroup8,
            int64,
            coop_missing,
            coop8,
            coop_failed: Mutex::new(None),
            coop_wide_failed: Mutex::new(None),
            tuner: tune::Tuner::default(),
            pool: Arc::new(Mutex::new(pool)),
            stream: Mutex::new(Stream {
                encoder: None,
                pass: None,
                params: Vec::new(),
                slots: 0,
                staged: Vec::new(),
                last: None,
            }),
            pipelines: Mutex::new(HashMap::new()),
            bind_groups: Mutex::new((0, HashMap::new())),
            staging: Mutex::new(Vec::new()),
            uploads: Mutex::new(Vec::new()),
            errors,
            lost,
            empty,
            arena,
            dispatches: AtomicU64::new(0),
            submits: AtomicU64::new(0),
            bind_groups_made: AtomicU64::new(0),
            params_copied: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            waiting: Mutex::new(Vec::new()),
            flushing: Mutex::new(()),
        })
    }

    /// A status record for one launch that can find a bad value: bind
    /// `rec.buf`, pass `rec.index` as the kernel's slot, and make the
    /// launch's output depend on it (`GpuBuf::depend_on`).
    pub(crate) fn status_record(&self) -> Result<Arc<StatusRecord>> {
        let (rec, zero) = StatusRecord::new(&self.pool)?;
        if zero {
            // Freed before the open batch: every command naming it is submitted,
            // and this write lands before the open batch runs.
            self.queue.write_buffer(&rec.buf.buffer, rec.offset(), &[0u8; 16]);
        }
        Ok(rec)
    }

    /// Makes `out` depend on the status records its inputs carry. Past
    /// [`MAX_PENDING_STATUS`] unread records (work that is never read back),
    /// reads them back now so that the lists stay short.
    pub(crate) fn depend<'a>(&self, out: &mut GpuBuf, inputs: impl IntoIterator<Item = &'a GpuBuf>) -> Result<()> {
        for b in inputs {
            for r in &b.status {
                out.depend_on(r);
            }
        }
        if out.pending_status() > MAX_PENDING_STATUS {
            self.readback(None, &out.status)?;
        }
        out.prune_status();
        Ok(())
    }

    /// The adapter's name as wgpu reports it (`"llvmpipe (LLVM 17.0.6, 256 bits)"`).
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// A software adapter (llvmpipe, SwiftShader, WARP): it runs invocations
    /// as SIMD lanes of CPU threads, where barriers and divergent branches
    /// are dear, so kernels with workgroup cooperation have simpler variants.
    pub(crate) fn cpu_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether GEMM kernels may run their builds without wgpu's runtime
    /// checks here: on Vulkan only, whose storage bindings are under 4 GiB
    /// (so every k a kernel loops to fits its u32 counters) and whose
    /// drivers add robust buffer access to the kernels' own guards.
    pub(crate) fn unchecked_gemm(&self) -> bool {
        self.info.backend == wgpu::Backend::Vulkan
    }

    /// Whether kernels launched now take their CPU-adapter variant.
    pub(crate) fn cpu_style(&self) -> bool {
        STYLE_OVERRIDE.with(|c| c.get()).unwrap_or_else(|| self.cpu_adapter())
    }

    /// Whether elementwise kernels launched now on 32-bit elements may take
    /// eight per invocation through `vec4<u64>` views (shaders/wide.wgsl):
    /// CPU-adapter kernels where 64-bit integers are enabled.
    pub(crate) fn wide_elementwise(&self) -> bool {
        self.int64 && self.cpu_style()
    }

    /// Elements per invocation of an elementwise kernel over `n` elements
    /// of `dtype` in `bufs` (each laid out like the output): 8 through
    /// `vec4<u64>` views for 32-bit types where [`Self::wide_elementwise`]
    /// allows, 4 through vec4 views, 1 otherwise. A view needs n a multiple
    /// of its width and every binding to start on a boundary of its
    /// vector's size (32 or at most 16 bytes).
    pub(crate) fn elements_per_invocation(&self, n: usize, dtype: DType, bufs: &[&GpuBuf]) -> usize {
        let aligned = |to: u64| bufs.iter().all(|b| b.offset % to == 0);
        if n % 8 == 0 && dtype.size() == 4 && self.wide_elementwise() && aligned(32) {
            8
        } else if n % 4 == 0 && aligned(16) {
            4
        } else {
            1
        }
    }

    /// Whether a GEMM of `dtype` for `op` launched now uses cooperative
    /// matrices (`gemm_coop`, or for matmuls `gemm_coop_wide`): by default
    /// for f16 where the adapter can. Forced where the adapter
    /// cannot, it is an error naming what is missing; forced for another
    /// dtype, that GEMM takes the tiled kernel.
    pub(crate) fn gemm_coop(&self, dtype: DType, op: &'static str) -> Result<bool> {
        let forced = coop_forced();
        let failed = self.coop_failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pretend = PRETEND_COOP.with(|c| c.get());
        let missing = self.coop_missing.as_ref().filter(|_| !pretend);
        // The wide kernel forced where matrices are 8x8x8: refused for
        // every dtype, as any forced kernel that cannot run.
        let narrow = (self.coop8 && gemm_override() == GemmVariant::CooperativeWide)
            .then(|| "16x16x16 cooperative matrices (it has 8x8x8)".to_string());
        match missing.or(failed.as_ref()).or(narrow.as_ref()) {
            Some(m) if forced => Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "GemmVariant::{:?} forced, but {} lacks {m}",
                    gemm_override(),
                    self.label_name()
                ),
            }),
            Some(_) => Ok(false),
            None => {
                let by_default = gemm_override() == GemmVariant::Auto && (pretend || !self.coop_opt_in());
                Ok(dtype == DType::F16 && (forced || by_default))
            }
        }
    }

    /// Cooperative matrices that run only when forced
    /// (`WGFLOW_GEMM=cooperative`): `gemm_coop8` on Metal (Apple's simdgroup
    /// matrices) until the conformance suite has passed on an Apple GPU
    /// (its SPIR-V path is proven on lavapipe, naga's Metal output is not),
    /// and any on a CPU adapter, which emulates them: lavapipe 26 ran a
    /// 512^3 f16 matmul 4x slower on them than on `matmul_sg`.
    fn coop_opt_in(&self) -> bool {
        coop_opt_in(&self.info, self.coop8)
    }

    /// Whether `gemm_coop_wide` can run where `gemm_coop` does: workgroups
    /// of 256 invocations with 28 KiB of workgroup memory. Forced where it
    /// cannot, it is an error.
    pub(crate) fn gemm_coop_wide(&self) -> Result<bool> {
        let l = &self.limits;
        let missing = if self.coop8 {
            Some("16x16x16 cooperative matrices (it has 8x8x8)".to_string())
        } else if l.max_compute_invocations_per_workgroup < 256
            || l.max_compute_workgroup_size_x < 256
            || l.max_compute_workgroup_storage_size < 28 << 10
        {
            Some("workgroups of 256 invocations with 28 KiB of workgroup memory".to_string())
        } else {
            self.coop_wide_failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        match missing {
            Some(m) if gemm_override() == GemmVariant::CooperativeWide => Err(Error::InvalidArgument {
                op: "matmul",
                msg: format!(
                    "GemmVariant::CooperativeWide forced, but {} lacks {m}",
                    self.label_name()
                ),
            }),
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }

    /// Whether `gemm_coop_staged` can run where `gemm_coop` does: four
    /// subgroups per workgroup (32 invocations each on 16x16x16 matrices,
    /// 8 on 8x8x8 ones) and the workgroup memory of two buffers of each
    /// tile. Forced where it cannot, it is an error.
    pub(crate) fn gemm_coop_staged(&self) -> Result<bool> {
        let (lanes, bytes) = if self.coop8 { (8, 13 << 10) } else { (32, 44 << 10) };
        let l = &self.limits;
        let missing = if self.info.subgroup_min_size != lanes {
            Some(format!(
                "{lanes}-invocation subgroups for its {} cooperative matrices (it has {})",
                if self.coop8 { "8x8x8" } else { "16x16x16" },
                self.info.subgroup_min_size
            ))
        } else if l.max_compute_workgroup_storage_size < bytes {
            Some(format!("{} KiB of workgroup memory per workgroup", bytes >> 10))
        } else {
            None
        };
        match missing {
            Some(m) if gemm_override() == GemmVariant::CooperativeStaged => Err(Error::InvalidArgument {
                op: "matmul",
                msg: format!(
                    "GemmVariant::CooperativeStaged forced, but {} lacks {m}",
                    self.label_name()
                ),
            }),
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }

    /// Drops `gemm_coop_wide` on this device for good, with a warning:
    /// `kernel` failed to build with `msg`. Matmuls take `gemm_coop`.
    pub(crate) fn drop_coop_wide(&self, kernel: &str, msg: &str) {
        log::warn!(
            "{}: {kernel} failed to build ({msg}); f16 matmuls use gemm_coop",
            self.label_name()
        );
        *self.coop_wide_failed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("a gemm_coop_wide that builds ({kernel}: {msg})"));
    }

    /// Runs a GEMM plan: `launch(true)` where [`GpuDevice::gemm_coop`]
    /// chooses `gemm_coop`, else `launch(false)`. Chosen by default and
    /// failing to build (a driver refusing the kernel), it is dropped on
    /// this device for good, with a warning, and the plan runs without it.
    pub(crate) fn with_coop(
        &self,
        dtype: DType,
        op: &'static str,
        mut launch: impl FnMut(bool) -> Result<()>,
    ) -> Result<()> {
        if !self.gemm_coop(dtype, op)? {
            return launch(false);
        }
        match launch(true) {
            // The wide kernel alone failed: matmuls go on with gemm_coop.
            Err(Error::ShaderCompilation { kernel, msg })
                if kernel.starts_with(&*matmul::MATMUL_COOP_WIDE.name) && gemm_override() == GemmVariant::Auto =>
            {
                self.drop_coop_wide(&kernel, &msg);
                self.with_coop(dtype, op, launch)
            }
            Err(Error::ShaderCompilation { kernel, msg }) if !coop_forced() => {
                self.drop_coop(&kernel, &msg);
                launch(false)
            }
            r => r,
        }
    }

    /// Drops `gemm_coop` on this device for good, with a warning: `kernel`
    /// failed to build with `msg`.
    pub(crate) fn drop_coop(&self, kernel: &str, msg: &str) {
        log::warn!(
            "{}: {kernel} failed to build ({msg}); f16 GEMMs use the kernels without cooperative matrices",
            self.label_name()
        );
        *self.coop_failed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("a gemm_coop that builds ({kernel}: {msg})"));
    }

    /// Whether a GEMM kernel is forced (by `WGFLOW_GEMM` or for this thread):
    /// then nothing is autotuned.
    pub(crate) fn gemm_forced(&self) -> bool {
        gemm_override() != GemmVariant::Auto
    }

    /// Whether f16 GEMMs can run on cooperative matrices (tensor cores)
    /// here: the adapter lists them (see [`GemmVariant::Cooperative`]) and
    /// the device was opened with them. They do by default, except on CPU
    /// adapters (emulated, slower than the other kernels) and the 8x8x8
    /// ones of Metal (not yet proven on an Apple GPU), where they run only
    /// when forced.
    pub fn cooperative_matrix(&self) -> bool {
        self.coop_missing.is_none() && self.coop_failed.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// The side of the cooperative matrices f16 GEMMs run on here (16:
    /// 16x16x16, which `GemmVariant::CooperativeWide` needs; 8: 8x8x8),
    /// `None` where [`cooperative_matrix`](Self::cooperative_matrix) is false.
    pub fn cooperative_matrix_side(&self) -> Option<u32> {
        self.cooperative_matrix().then_some(if self.coop8 { 8 } else { 16 })
    }

    /// The GEMM kernel (`kernel::entry`) a matmul or float convolution with
    /// inputs of these shapes runs here now; `None` for other ops.
    pub(crate) fn gemm_kernel(&self, op: &Op, shapes: &[&[usize]], dtype: DType) -> Option<String> {
        matmul::gemm_kernel(self, op, shapes, dtype)
    }

    /// `gpu:N (adapter name)`.
    fn label_name(&self) -> String {
        format!("{} ({})", self.label, self.info.name)
    }

    /// Whether GEMMs launched now use the register-blocked kernel.
    pub(crate) fn gemm_register(&self) -> bool {
        match gemm_override() {
            GemmVariant::Auto => self.cpu_adapter(),
            v => v == GemmVariant::Register || v == GemmVariant::Subgroup,
        }
    }

    /// Whether convolutions take the im2col plan without tuning (patch
    /// matrices and the register kernels' strided GEMMs, see `conv.rs`):
    /// where the register path is on, with CPU-adapter kernels (which
    /// `force_cpu_style_kernels` can turn off, so that a CPU adapter runs
    /// and tunes the GPUs' plans).
    pub(crate) fn conv_im2col(&self) -> bool {
        match gemm_override() {
            GemmVariant::Auto => self.cpu_style(),
            v => v == GemmVariant::Register || v == GemmVariant::Subgroup,
        }
    }

    /// Whether a register-path matmul uses the subgroup kernel; forcing it
    /// on an adapter without 8-lane subgroups is an error, not a fallback.
    pub(crate) fn gemm_subgroup(&self) -> Result<bool> {
        match gemm_override() {
            GemmVariant::Subgroup if !self.subgroup8 => Err(Error::InvalidArgument {
                op: "matmul",
                msg: format!(
                    "GemmVariant::Subgroup forced on {}, which has no 8-lane subgroups",
                    self.label
                ),
            }),
            v => Ok(self.subgroup8 && matches!(v, GemmVariant::Auto | GemmVariant::Subgroup)),
        }
    }

    /// Whether `matmul_wide_db` can run here (workgroups of 256 invocations
    /// with 32 KiB of workgroup memory); forced where it cannot, an error
    /// naming what is missing.
    pub(crate) fn gemm_wide_double(&self) -> Result<bool> {
        let l = &self.limits;
        let fits = l.max_compute_invocations_per_workgroup >= 256
            && l.max_compute_workgroup_size_x >= 16
            && l.max_compute_workgroup_size_y >= 16
            && l.max_compute_workgroup_storage_size >= 32 << 10;
        let v = gemm_override();
        if !fits && matches!(v, GemmVariant::WideDouble | GemmVariant::WideDoubleWarp) {
            return Err(Error::InvalidArgument {
                op: "matmul",
                msg: format!(
                    "GemmVariant::{v:?} forced, but {} lacks workgroups of 256 invocations with 32 KiB of workgroup memory",
                    self.label_name()
                ),
            });
        }
        Ok(fits)
    }

    /// Whether a tiled matmul of `tiles` 128x128 output tiles uses the wide kernel.
    pub(crate) fn gemm_wide(&self, tiles: usize) -> bool {
        match gemm_override() {
            // Fewer tiles than that would leave a large GPU's cores idle.
            GemmVariant::Auto => tiles >= 256,
            v => v == GemmVariant::Wide,
        }
    }

    pub(crate) fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    fn check_alive(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(Error::DeviceLost {
                device: format!("{} ({})", self.label, self.info.name),
                reason,
            });
        }
        Ok(())
    }

    fn take_error(&self) -> Result<()> {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_empty() {
            return Ok(());
        }
        let msg = e.drain(..).collect::<Vec<_>>().join("; ");
        Err(Error::Gpu {
            device: format!("{} ({})", self.label, self.info.name),
            msg,
        })
    }

    pub(crate) fn memory_info(&self) -> MemoryInfo {
        // Waiting ops hold the results dropped since: encoded, they free
        // them, as a dropped tensor's memory is free in TensorFlow. An
        // error is the next submission's to report.
        if let Err(e) = self.flush_deferred() {
            self.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.to_string());
        }
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).info()
    }

    pub(crate) fn reset_peak(&self) {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).reset_peak()
    }

    pub(crate) fn counters(&self) -> super::Counters {
        super::Counters {
            dispatches: self.dispatches.load(Ordering::Relaxed),
            submits: self.submits.load(Ordering::Relaxed),
            bind_groups: self.bind_groups_made.load(Ordering::Relaxed),
            params_copied: self.params_copied.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
        }
    }

    /// Memory for an op's output. `op` names the op in a too-large error.
    pub(crate) fn alloc(&self, op: &'static str, bytes: u64) -> Result<GpuBuf> {
        Ok(self.alloc_tagged(op, bytes)?.buf)
    }

    fn alloc_tagged(&self, op: &'static str, bytes: u64) -> Result<Alloc> {
        self.check_alive()?;
        if bytes > self.max_binding() {
            return Err(Error::TooLargeForBinding {
                op,
                bytes,
                limit: self.max_binding(),
            });
        }
        let alloc = || Pool::alloc_with(&self.pool, bytes, &self.empty, false, &|| self.settle());
        let got = match alloc() {
            // Waiting ops hold buffers that may be freed unwritten.
            Err(Error::OutOfMemory { .. }) if self.flush_deferred_freed()? => alloc(),
            got => got,
        };
        got.map_err(|e| match e {
            Error::TooLargeForBinding { bytes, limit, .. } => Error::TooLargeForBinding { op, bytes, limit },
            e => e,
        })
    }

    /// Copies host bytes into new device memory.
    pub(crate) fn upload(&self, op: &'static str, bytes: &[u8]) -> Result<GpuBuf> {
        self.check_alive()?;
        let n = bytes.len() as u64;
        if n > self.max_binding() {
            return Err(Error::TooLargeForBinding {
                op,
                bytes: n,
                limit: self.max_binding(),
            });
        }
        let Alloc { buf, freed_in } = Pool::alloc_with(&self.pool, n, &self.empty, true, &|| self.settle())?;
        if buf.is_empty() {
            return Ok(buf);
        }
        if self.upload_staged(&buf, bytes)? {
            return Ok(buf);
        }
        // write_buffer runs before the open batch's commands: memory freed
        // inside that batch may still be read by them, so submit them first.
        let open = self.pool.lock().unwrap_or_else(|p| p.into_inner()).batch;
        if freed_in == Some(open) {
            self.flush()?;
        }
        if bytes.len() % 4 == 0 {
            self.queue.write_buffer(&buf.buffer, buf.offset, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            self.queue.write_buffer(&buf.buffer, buf.offset, &padded);
        }
        Ok(buf)
    }

    fn pipeline(&self, l: &Launch) -> Result<Arc<Pipeline>> {
        if self.coop8
            && let Some(twin) = coop8_twin(&l.kernel.name)
        {
            let mut consts = l.consts.to_vec();
            // gemm_coop8's workgroup size (gemm_coop_staged's is fixed).
            if l.entry == "gemm_coop" {
                consts.push(("WG", f64::from(16 * self.info.subgroup_min_size)));
            }
            return self.pipeline(&Launch {
                kernel: twin,
                consts: &consts,
                ..*l
            });
        }
        let key = PipelineKey {
            kernel: l.kernel.name.clone(),
            entry: l.entry,
            ty: l.ty,
            consts: l.consts.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
        };
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(self.build_pipeline(l)?);
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        // Generated kernels come and go (a bounded cache owns them): drop
        // the pipelines of those gone, and with them the cached bind groups,
        // which are keyed by pipeline address.
        let before = pipelines.len();
        pipelines.retain(|_, p| p.alive.as_ref().is_none_or(|w| w.strong_count() > 0));
        if pipelines.len() < before {
            self.bind_groups.lock().unwrap_or_else(|p| p.into_inner()).1.clear();
        }
        pipelines.insert(key, p.clone());
        Ok(p)
    }

    fn build_pipeline(&self, l: &Launch) -> Result<Pipeline> {
        let name = format!("{}::{}<{}>", l.kernel.name, l.entry, l.ty.name());
        let (mut module, mut info) = l.kernel.validate(l.ty)?;
        if self.slabs {
            // Tensors carved from one slab share a wgpu buffer, and WebGPU
            // forbids a read-only and a writable binding of one buffer in a
            // dispatch, while writable bindings may repeat. So with slabs every
            // storage variable is made writable in the IR (the kernel still
            // only reads it), and the module validated again.
            for (_, g) in module.global_variables.iter_mut() {
                if let naga::AddressSpace::Storage { access } = &mut g.space {
                    *access |= naga::StorageAccess::LOAD | naga::StorageAccess::STORE;
                }
            }
            info = l.kernel.revalidate(l.ty, &module)?;
        }
        let ep = module
            .entry_points
            .iter()
            .position(|e| e.name == l.entry)
            .ok_or_else(|| Error::ShaderCompilation {
                kernel: name.clone(),
                msg: "no such entry point".into(),
            })?;
        let used = info.get_entry_point(ep);
        let mut slots = Vec::new();
        let mut entries = Vec::new();
        let mut params = None;
        for (h, g) in module.global_variables.iter() {
            let Some(b) = &g.binding else { continue };
            if used[h].is_empty() {
                continue;
            }
            let ty = match g.space {
                naga::AddressSpace::Uniform => {
                    let ty = &module.types[g.ty];
                    let size = ty.inner.size(module.to_ctx()) as u64;
                    params = Some((ty.name.clone().unwrap_or_default(), size as usize));
                    slots.push((b.binding, Slot::Params));
                    wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: std::num::NonZeroU64::new(size),
                    }
                }
                naga::AddressSpace::Storage { access } => {
                    slots.push((b.binding, Slot::Storage));
                    wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: !access.contains(naga::StorageAccess::STORE),
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    }
                }
                _ => continue,
            };
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: b.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty,
                count: None,
            });
        }
        slots.sort_by_key(|s| s.0);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&name),
            entries: &entries,
        });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        // The module naga already parsed and validated goes to wgpu as IR.
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(&name),
            source: wgpu::ShaderSource::Naga(std::borrow::Cow::Owned(module)),
        };
        let sm = if l.kernel.checked {
            self.device.create_shader_module(desc)
        } else {
            let mut checks = wgpu::ShaderRuntimeChecks::checked();
            checks.bounds_checks = false;
            checks.force_loop_bounding = false;
            // SAFETY: only the GEMM kernels are built unchecked
            // (`Kernel::unchecked`), and they run so only on Vulkan
            // (`GpuDevice::unchecked_gemm`). Every workgroup- and
            // function-array index in them is in range by construction
            // (tile offsets below the tile's size; the cooperative kernels'
            // subgroup ids below 4 or 8, as they launch only where
            // subgroups have 32 invocations, or 16 in gemm_coop8's
            // workgroups of 16 subgroups, and gemm_coop_staged only where
            // its workgroup holds four subgroups), their storage reads are
            // guarded or clamped, and every loop counts up to a bound it
            // reaches: k or a constant, k below 2^31 as Vulkan's bindings
            // stay under 4 GiB. The driver's robust buffer access stays.
            unsafe { self.device.create_shader_module_trusted(desc, checks) }
        };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&name),
            layout: Some(&pl),
            module: &sm,
            entry_point: Some(l.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: l.consts,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::ShaderCompilation {
                kernel: name,
                msg: describe(&e),
            });
        }
        Ok(Pipeline {
            pipeline,
            layout,
            slots,
            params,
            alive: l.kernel.generated.as_ref().map(Arc::downgrade),
        })
    }

    /// Encodes one kernel launch into the open batch.
    pub(crate) fn launch(&self, l: &Launch) -> Result<()> {
        self.launch_with(l, None)
    }

    /// A launch whose parameters are bound from `graph` (buffer, offset) when given.
    fn launch_with(&self, l: &Launch, graph: Option<(Arc<GraphParams>, u32)>) -> Result<()> {
        self.check_alive()?;
        self.flush_deferred()?;
        injected_failure(&l.kernel.name)?;
        if l.groups.contains(&0) {
            return Ok(());
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if l.groups.iter().any(|&g| g > max) {
            return Err(Error::Gpu {
                device: self.label.clone(),
                msg: format!("{}::{}: grid {:?} exceeds {max}", l.kernel.name, l.entry, l.groups),
            });
        }
        let p = self.pipeline(l)?;
        if let Some((wgsl, size)) = &p.params {
            if l.params.bytes.len() != *size || l.params.wgsl != wgsl {
                return Err(Error::ShaderCompilation {
                    kernel: format!("{}::{}<{}>", l.kernel.name, l.entry, l.ty.name()),
                    msg: format!(
                        "the host passes parameters for struct {:?} ({} bytes), the shader declares {wgsl} ({size} bytes)",
                        l.params.wgsl,
                        l.params.bytes.len()
                    ),
                });
            }
        }
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        if s.slots == SLOTS {
            self.flush_locked(&mut s)?;
        }
        let slot = s.slots;
        s.slots += 1;
        let at = (slot * PARAM_BYTES) as usize;
        s.params.resize(at + PARAM_BYTES as usize, 0);
        let uniform = p.params.is_some();
        let (params_buf, offset) = match &graph {
            Some((g, off)) if uniform => (&*g.buf, *off),
            _ => {
                if uniform {
                    self.params_copied.fetch_add(1, Ordering::Relaxed);
                    s.params[at..at + p.param_bytes()].copy_from_slice(l.params.bytes);
                }
                (&self.arena, at as u32)
            }
        };
        let bg = self.bind_group(l, &p, params_buf)?;
        let offsets: &[u32] = if uniform { &[offset] } else { &[] };
        let pass = self.open_pass(&mut s);
        pass.set_pipeline(&p.pipeline);
        pass.set_bind_group(0, &bg, offsets);
        pass.dispatch_workgroups(l.groups[0], l.groups[1], l.groups[2]);
        self.dispatches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The bind group of a launch, from the cache when the same buffers were
    /// bound to the same pipeline before: creating one costs a descriptor
    /// allocation, which on some drivers (lavapipe) maps memory each time.
    fn bind_group(&self, l: &Launch, p: &Arc<Pipeline>, params: &wgpu::Buffer) -> Result<wgpu::BindGroup> {
        let uniform = if p.params.is_some() {
            params as *const wgpu::Buffer as u64
        } else {
            0
        };
        let key: Vec<(usize, u64, u64)> = std::iter::once((Arc::as_ptr(p) as usize, uniform, 0))
            .chain(
                l.bufs
                    .iter()
                    .map(|b| (Arc::as_ptr(&b.buffer) as usize, b.offset, b.size)),
            )
            .collect();
        let generation = self.pool.lock().unwrap_or_else(|p| p.into_inner()).generation;
        {
            let mut c = self.bind_groups.lock().unwrap_or_else(|p| p.into_inner());
            // Buffers were destroyed since: the cached groups may name them.
            if c.0 != generation || c.1.len() > 8192 {
                c.1.clear();
                c.0 = generation;
            }
            if let Some(bg) = c.1.get(&key) {
                return Ok(bg.clone());
            }
        }
        // Storage buffers bind in the order of the bindings the entry uses.
        let mut bufs = l.bufs.iter();
        let mismatch = |what: &str| Error::Gpu {
            device: self.label.clone(),
            msg: format!("{}::{}: {what}", l.kernel.name, l.entry),
        };
        let mut entries = Vec::with_capacity(p.slots.len());
        for &(binding, kind) in &p.slots {
            let resource = match kind {
                Slot::Params => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: params,
                    offset: 0,
                    size: std::num::NonZeroU64::new(PARAM_BYTES),
                }),
                Slot::Storage => wgpu::BindingResource::Buffer(
                    bufs.next()
                        .ok_or_else(|| mismatch("too few buffers for its bindings"))?
                        .binding(),
                ),
            };
            entries.push(wgpu::BindGroupEntry { binding, resource });
        }
        if bufs.next().is_some() {
            return Err(mismatch("more buffers than bindings"));
        }
        self.bind_groups_made.fetch_add(1, Ordering::Relaxed);
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.layout,
            entries: &entries,
        });
        self.bind_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .insert(key, bg.clone());
        Ok(bg)
    }

    fn open_pass<'s>(&self, s: &'s mut Stream) -> &'s mut wgpu::ComputePass<'static> {
        let Stream { encoder, pass, .. } = s;
        pass.get_or_insert_with(|| {
            let enc = encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime()
        })
    }

    fn flush_locked(&self, s: &mut Stream) -> Result<()> {
        self.submit_locked(s, false);
        self.take_error()
    }

    /// Submits the open batch, if any (or, with `boundary`, always starts a
    /// new batch number); returns the batch number now open.
    fn submit_locked(&self, s: &mut Stream, boundary: bool) -> u64 {
        s.pass = None;
        let submitted = if let Some(enc) = s.encoder.take() {
            if s.slots > 0 {
                self.queue
                    .write_buffer(&self.arena, 0, &s.params[..(s.slots * PARAM_BYTES) as usize]);
            }
            Self::unmap_stages(s);
            s.last = Some(self.queue.submit([enc.finish()]));
            self.recycle_stages(s);
            self.submits.fetch_add(1, Ordering::Relaxed);
            s.slots = 0;
            s.params.clear();
            true
        } else {
            false
        };
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if submitted || boundary {
            pool.batch += 1;
        }
        pool.batch
    }

    /// The pool is out of room: submits the open batch and waits for the
    /// GPU to finish all submitted work; returns the batch number below
    /// which every batch is done (memory freed in those batches can be
    /// destroyed). Errors of the work stay for the readbacks to report.
    fn settle(&self) -> Result<u64> {
        self.flush_deferred()?;
        let done = {
            let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
            self.submit_locked(&mut s, true)
        };
        self.wait()?;
        Ok(done)
    }

    /// Writes a graph's recorded launch parameters into a buffer of its own.
    pub(crate) fn graph_params(&self, blocks: Vec<Vec<u8>>) -> GraphParams {
        let mut data = vec![0u8; blocks.len().max(1) * PARAM_BYTES as usize];
        for (i, b) in blocks.iter().enumerate() {
            let at = i * PARAM_BYTES as usize;
            data[at..at + b.len()].copy_from_slice(b);
        }
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgflow graph parameters"),
            size: data.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // A new buffer no pending command reads: no ordering to keep.
        self.queue.write_buffer(&buf, 0, &data);
        GraphParams {
            buf: Arc::new(buf),
            blocks,
            pool: self.pool.clone(),
        }
    }

    /// Makes room for `launches` more launches in the open batch, submitting
    /// it first if they would not fit: a graph replay then never straddles two
    /// submissions, and every batch holds the same whole replays.
    pub(crate) fn reserve(&self, launches: usize) -> Result<()> {
        self.flush_deferred()?;
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        if launches as u64 <= SLOTS && s.slots + launches as u64 > SLOTS {
            self.flush_locked(&mut s)?;
        }
        Ok(())
    }

    /// Submits the pending batch without waiting for it.
    pub(crate) fn flush(&self) -> Result<()> {
        self.flush_deferred()?;
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        self.flush_locked(&mut s)
    }

    /// Submits pending work and waits for the GPU to finish it.
    pub(crate) fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.wait()?;
        self.take_error()
    }

    /// Waits for the GPU to finish the submitted work.
    fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu {
                device: self.label.clone(),
                msg: e.to_string(),
            })
    }

    /// Reads `buf` back (after everything pending that writes it). A bad
    /// value found by a launch it depends on (see `StatusRecord`) is the
    /// error, on every read, from any thread.
    pub(crate) fn read(&self, buf: &GpuBuf) -> Result<Vec<u8>> {
        self.readback(Some(buf), &[])
    }

    /// Copies `data` (if any) and the unread records of `status` to the
    /// host in one submission, and records what those say.
    fn readback(&self, data: Option<&GpuBuf>, status: &[Arc<StatusRecord>]) -> Result<Vec<u8>> {
        let bufs: Vec<&GpuBuf> = data.into_iter().collect();
        let read = self.start_read(&bufs, status)?;
        Ok(self.finish_read(read)?.pop().unwrap_or_default())
    }
}

impl Drop for GpuDevice {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Unread status records a value may carry before they are read back
/// without waiting for a readback of the value (see `GpuDevice::depend`).
const MAX_PENDING_STATUS: usize = 16;

/// Kernels cannot fail an op while it runs; they write a code and the bad
/// value into their launch's status record, and a readback of a value that
/// depends on it turns it into the error the CPU reference gives at once.
fn status_error(s: [u32; 4]) -> Error {
    let value = s[1] as i32;
    match s[0] {
        1 => crate::core::op::layout::index_error(value, s[2]),
        2 => crate::core::op::softmax::label_error(value, s[2]),
        3 | 4 => crate::core::op::binary::int_error(s[0]),
        c => Error::Gpu {
            device: String::new(),
            msg: format!("unknown kernel status code {c}"),
        },
    }
}

/// A shape or stride list of rank <= 8 as the kernels' `array<vec4<u32>, 2>`
/// (read with common.wgsl's `at8`), zero-padded.
pub(crate) fn dims8(v: &[usize]) -> [u32; 8] {
    let mut w = [0u32; 8];
    for (w, &d) in w.iter_mut().zip(v) {
        *w = d as u32;
    }
    w
}

/// Workgroups per grid dimension that every adapter allows (WebGPU's
/// default `max_compute_workgroups_per_dimension`).
pub(crate) const MAX_GROUPS: usize = 65535;

/// `groups` workgroups, folded into y when x would pass [`MAX_GROUPS`].
/// Kernels rebuild the linear index with `num_workgroups`.
pub(crate) fn fold(groups: usize) -> [u32; 3] {
    if groups <= MAX_GROUPS {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(MAX_GROUPS);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

/// Workgroups for `n` threads in groups of `wg`, folded into y when x would
/// pass 65535 (WebGPU's default `max_compute_workgroups_per_dimension`).
pub fn grid(n: usize, wg: u32) -> [u32; 3] {
    fold(n.div_ceil(wg as usize))
}

/// A grid of `groups` workgroups per dimension (tile kernels that read
/// `workgroup_id` as coordinates) split into launches of at most
/// [`MAX_GROUPS`] per dimension: each piece's first workgroup per dimension
/// (the kernel adds it to `workgroup_id`) and its size.
pub(crate) fn chunks(groups: [usize; 3]) -> impl Iterator<Item = ([usize; 3], [u32; 3])> {
    let split = |n: usize| {
        (0..n)
            .step_by(MAX_GROUPS)
            .map(move |o| (o, (n - o).min(MAX_GROUPS) as u32))
    };
    split(groups[2]).flat_map(move |(z0, nz)| {
        split(groups[1]).flat_map(move |(y0, ny)| split(groups[0]).map(move |(x0, nx)| ([x0, y0, z0], [nx, ny, nz])))
    })
}

/// Every WGSL kernel family, for validation and tooling.
#[cfg(feature = "testing")]
pub fn kernels() -> [&'static Kernel; 25] {
    [
        &optim::OPTIM,
        &optim::OPTIM_WIDE,
        &unary::UNARY,
        &unary::UNARY_WIDE,
        &binary::BINARY,
        &binary::BINARY_WIDE,
        &layout::LAYOUT,
        &layout::CAST,
        &layout::DEQUANT,
        &matmul::MATMUL,
        &matmul::MATMUL_SG,
        &matmul::MATMUL_WIDE_DB,
        &matmul::MATMUL_COOP,
        &matmul::MATMUL_COOP_WIDE,
        &matmul::MATMUL_COOP_STAGED,
        &matmul::MATMUL_COOP_STAGED8,
        &conv::CONV_COOP,
        &matmul::MATMUL_COOP8,
        &conv::CONV_COOP8,
        &matmul::MATMUL_INT8,
        &conv::CONV,
        &conv::CONV_INT8,
        &pool::POOL,
        &reduce::REDUCE,
        &softmax::SOFTMAX,
    ]
}

/// Kernel element type for arithmetic on `dtype` (booleans are 0/1 words).
/// f64 and bf16 never reach an arithmetic kernel: f64 stays on the CPU, and
/// `ops::run` computes bf16 on f32 casts.
pub(crate) fn ktype(dtype: DType) -> KType {
    match dtype {
        DType::F32 | DType::F64 | DType::BF16 => KType::F32,
        DType::F16 => KType::F16,
        DType::I32 => KType::I32,
        DType::Bool => KType::U32,
    }
}

impl Backend for GpuDevice {
    fn run(&self, op: &Op, x: &[Operand], shape: &[usize], dtype: DType, ctx: &ExecContext) -> Result<Vec<Storage>> {
        if self.deferrable(op, x, shape, dtype, ctx) {
            return Ok(vec![self.defer(op, x, shape)?]);
        }
        let g = &Gpu { dev: self, ctx };
        let inputs = || {
            x.iter().filter_map(|o| match o.storage {
                Storage::Gpu(b) => Some(&**b),
                Storage::Cpu(_) => None,
            })
        };
        let mut buf = match op.family() {
            Family::Unary => unary::gpu(op, g, x, shape, dtype),
            Family::Binary => binary::gpu(op, g, x, shape, dtype),
            Family::Layout => layout::gpu(op, g, x, shape, dtype),
            Family::MatMul => matmul::gpu(op, g, x, shape, dtype),
            Family::Conv => conv::gpu(op, g, x, shape, dtype),
            Family::Pool => pool::gpu(op, g, x, shape, dtype),
            Family::Reduce => reduce::gpu(op, g, x, shape, dtype),
            Family::Softmax => softmax::gpu(op, g, x, shape, dtype),
            Family::Creation => match op {
                Op::Fill { shape, value, dtype } => {
                    creation::fill_gpu(g, crate::core::shape::numel(shape), *value, *dtype)
                }
                Op::Random(r) => g.upload("random", &CpuData::from_f64(r.dtype, &r.values()).to_bytes()),
                _ => unreachable!("not a creation op"),
            },
            Family::Optim => {
                let Op::Optimizer(u) = op else { unreachable!() };
                let mut outs = optim::gpu(u, g, x, dtype)?;
                for b in &mut outs {
                    self.depend(b, inputs())?;
                }
                return Ok(outs.into_iter().map(|b| Storage::Gpu(Arc::new(b))).collect());
            }
        }?;
        self.depend(&mut buf, inputs())?;
        Ok(vec![Storage::Gpu(Arc::new(buf))])
    }

    fn upload(&self, op: &'static str, data: &CpuData) -> Result<Storage> {
        Ok(Storage::Gpu(Arc::new(GpuDevice::upload(self, op, &data.to_bytes())?)))
    }

    fn read(&self, s: &Storage, dtype: DType, n: usize) -> Result<CpuData> {
        match s {
            Storage::Gpu(b) => Ok(CpuData::from_bytes(dtype, n, &GpuDevice::read(self, b)?)),
            Storage::Cpu(_) => Err(Error::arg("read", "host storage read through a GPU backend")),
        }
    }
}
