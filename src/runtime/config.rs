//! `tf.config` for wgflow: physical devices, visible devices, memory growth
//! and limits, and the runtime that turns them into logical devices.
//!
//! Settings come from the environment (`WGFLOW_VISIBLE_DEVICES`,
//! `WGFLOW_DEVICE`, `WGFLOW_FORCE_GPU_ALLOW_GROWTH`, `WGFLOW_MEMORY_LIMIT_MB`,
//! `WGFLOW_GEMM` (checked here, read by the GEMM launches),
//! `WGFLOW_LOGICAL_DEVICES`)
//! and from the `set_*` functions, which win over the environment and must be
//! called before the runtime initializes (the first device lookup or tensor).
//! With the default selection every usable adapter's logical GPU is created
//! when the runtime initializes, as TensorFlow does, so that an adapter that
//! lists compute support but cannot open a device (NVIDIA's GL through
//! headless EGL, for one) is left out with a notice instead of breaking every
//! device lookup. GPUs chosen explicitly are created on first use, and one
//! that cannot open reports its error there.

use super::Device;
use super::wgpu::{GpuDevice, GpuOptions};
use crate::core::error::{Error, Result};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// An adapter wgpu found, or the CPU reference device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysicalDevice {
    /// Index among the physical GPUs (what `WGFLOW_VISIBLE_DEVICES` takes);
    /// `None` for the CPU.
    pub index: Option<usize>,
    /// `"GPU"` or `"CPU"`, as in `tf.config.list_physical_devices`.
    pub device_type: &'static str,
    /// The adapter's name as the driver reports it; what name substrings in
    /// `WGFLOW_VISIBLE_DEVICES` match against (with the backend).
    pub name: String,
    /// wgpu's adapter type: DiscreteGpu, IntegratedGpu, VirtualGpu, Cpu, Other.
    pub adapter_type: String,
    /// The graphics API wgpu drives it through: Vulkan, Metal, Dx12 or Gl
    /// (`native` for the CPU).
    pub backend: String,
    /// Driver name, or its version string where the name is empty; may be
    /// empty.
    pub driver: String,
    /// The adapter runs compute shaders (every WebGPU adapter does; some GL ones don't).
    pub compute: bool,
    /// The adapter has `SHADER_F16`: f16 tensors compute in f16 (otherwise
    /// they compute in f32, cast around the f32 kernels).
    pub shader_f16: bool,
    /// Invocations per subgroup, when the adapter has subgroup operations
    /// with one fixed size (wgflow then uses kernels that need them).
    pub subgroup_size: Option<u32>,
    /// f16 GEMMs (matmul and the convolutions') run on cooperative matrices
    /// (tensor cores: `Features::EXPERIMENTAL_COOPERATIVE_MATRIX`).
    pub cooperative_matrix: bool,
}

impl PhysicalDevice {
    /// Which GEMM kernels matmul and the convolutions use on this device
    /// by default (`WGFLOW_GEMM` overrides), and why not cooperative
    /// matrices where they are not used.
    pub fn gemm_kernels(&self) -> String {
        let Some(i) = self.index else {
            return "the gemm crate (AVX-512, AVX2+FMA or NEON kernels chosen at run time)".into();
        };
        let by_default = self.default_gemm_kernels(i);
        let Some(v) = crate::runtime::wgpu::forced_gemm() else {
            return by_default;
        };
        use crate::runtime::wgpu::GemmVariant as V;
        let coop = matches!(v, V::Cooperative | V::CooperativeWide | V::CooperativeStaged);
        let missing = physical()
            .adapters
            .get(i)
            .and_then(|a| crate::runtime::wgpu::coop_missing(a, &a.get_info()));
        match missing {
            Some(m) if coop => format!(
                "forced by WGFLOW_GEMM={}: f16 matmuls and convolutions fail here (needs {m}), other dtypes \
                 take tiled; unforced: {by_default}",
                v.name()
            ),
            _ => format!("forced by WGFLOW_GEMM={}; unforced: {by_default}", v.name()),
        }
    }

    /// [`Self::gemm_kernels`] without a forced variant, for adapter `i`.
    fn default_gemm_kernels(&self, i: usize) -> String {
        let base = if self.adapter_type == "Cpu" {
            if self.subgroup_size == Some(8) {
                "matmul_sg: register blocks sharing A through subgroups, or matmul_reg: register blocks, \
                 autotuned (matmul, convolutions' patch matrices)"
            } else {
                "matmul_reg: register blocks (matmul, convolutions' patch matrices)"
            }
        } else {
            "gemm: 64x64 tiles, or matmul_wide: 128x128 tiles (untuned: for matmuls of >= 256 tiles), \
             autotuned with matmul_wide_warp (4x8 invocations per subgroup) and matmul_wide_db[_warp] \
             (double-buffered) where workgroups hold 32 KiB"
        };
        use crate::runtime::wgpu::GemmChecks;
        let checks = match (crate::runtime::wgpu::gemm_checks(), self.backend == "Vulkan") {
            (GemmChecks::Off, true) => "; GEMM kernels built without wgpu's runtime checks",
            (GemmChecks::Auto, true) => "; each GEMM kernel tuned with and without wgpu's runtime checks",
            _ => "",
        };
        let base = format!("{base}{checks}");
        let Some(a) = physical().adapters.get(i) else {
            return base;
        };
        let info = a.get_info();
        match crate::runtime::wgpu::coop_fragment(a, &info) {
            Ok(side) if crate::runtime::wgpu::coop_opt_in(&info, side == 8) => format!(
                "{base}; f16 on cooperative matrices ({side}x{side}x{side} f16 x f16 + f32: gemm_coop) only with \
                 WGFLOW_GEMM=cooperative: {}",
                if self.adapter_type == "Cpu" {
                    "this CPU adapter emulates them, slower than the other kernels"
                } else {
                    "not yet proven on an Apple GPU"
                }
            ),
            Ok(16) => format!(
                "f16: cooperative matrices (16x16x16 f16 x f16 + f32): matmuls gemm_coop_wide (128x128 tiles; \
                 gemm_coop where workgroups are smaller) or gemm_coop_staged (128x128 tiles staged as vectors, \
                 where workgroups hold 44 KiB), convolutions gemm_coop, autotuned against the others; f32: {base}"
            ),
            Ok(_) => format!(
                "f16: cooperative matrices (8x8x8 f16 x f16 + f32): matmuls and convolutions gemm_coop \
                 (64x64 tiles, 16 subgroups), autotuned against the others; f32: {base}"
            ),
            Err(m) => format!("{base}; no cooperative matrices (needs {m})"),
        }
    }

    /// How the elementwise kernels (unary, binary, comparisons, a compiled
    /// graph's generated kernels) read and write their elements here.
    pub fn elementwise_kernels(&self) -> String {
        let Some(i) = self.index else {
            return "loops specialized per op, compiled to SIMD, split over threads (rayon)".into();
        };
        let int64 = physical()
            .adapters
            .get(i)
            .is_some_and(|a| a.features().contains(wgpu::Features::SHADER_INT64));
        if self.adapter_type == "Cpu" && int64 {
            "8 32-bit elements per invocation as vec4<u64> (64-bit integers halve llvmpipe's loads), \
             else 4 as vec4s, where lengths allow"
                .into()
        } else {
            "4 elements per invocation as vec4s, where lengths allow".into()
        }
    }

    /// `/physical_device:GPU:0`, as TensorFlow names it.
    pub fn tf_name(&self) -> String {
        match self.index {
            Some(i) => format!("/physical_device:GPU:{i}"),
            None => "/physical_device:CPU:0".into(),
        }
    }
}

impl fmt::Display for PhysicalDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(_) => write!(
                f,
                "{:<24} {} | {} | {} | driver {}{}{}{}{}",
                self.tf_name(),
                self.name,
                self.backend,
                self.adapter_type,
                if self.driver.is_empty() { "?" } else { &self.driver },
                if self.shader_f16 { " | shader-f16" } else { "" },
                match self.subgroup_size {
                    Some(n) => format!(" | subgroups of {n}"),
                    None => String::new(),
                },
                if self.cooperative_matrix {
                    " | cooperative matrices"
                } else {
                    ""
                },
                if self.compute { "" } else { " | NO COMPUTE (unusable)" }
            ),
            None => write!(f, "{:<24} {}", self.tf_name(), self.name),
        }
    }
}

struct Physical {
    adapters: Vec<wgpu::Adapter>,
    list: Vec<PhysicalDevice>,
}

fn physical() -> &'static Physical {
    static P: OnceLock<Physical> = OnceLock::new();
    P.get_or_init(|| {
        let backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12 | wgpu::Backends::GL;
        let mut adapters = super::quiet::probe(|| {
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            pollster::block_on(instance.enumerate_adapters(backends))
        });
        // Real GPUs before software ones, native APIs before GL, so gpu:0 is the best choice.
        let rank = |a: &wgpu::Adapter| {
            let i = a.get_info();
            let t = match i.device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            };
            let b = match i.backend {
                wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
                _ => 1,
            };
            (t, b)
        };
        adapters.sort_by_key(rank);
        let list = adapters
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let info = a.get_info();
                let cooperative_matrix = crate::runtime::wgpu::coop_missing(a, &info).is_none();
                PhysicalDevice {
                    index: Some(i),
                    device_type: "GPU",
                    name: info.name,
                    adapter_type: format!("{:?}", info.device_type),
                    backend: format!("{:?}", info.backend),
                    driver: if info.driver.is_empty() {
                        info.driver_info
                    } else {
                        info.driver
                    },
                    compute: a
                        .get_downlevel_capabilities()
                        .flags
                        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS),
                    shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
                    subgroup_size: (a.features().contains(wgpu::Features::SUBGROUP)
                        && info.subgroup_min_size == info.subgroup_max_size)
                        .then_some(info.subgroup_min_size),
                    cooperative_matrix,
                }
            })
            .collect();
        Physical { adapters, list }
    })
}

fn cpu_physical() -> PhysicalDevice {
    PhysicalDevice {
        index: None,
        device_type: "CPU",
        name: "wgflow CPU reference".into(),
        adapter_type: "Cpu".into(),
        backend: "native".into(),
        driver: String::new(),
        compute: true,
        shader_f16: false,
        subgroup_size: None,
        cooperative_matrix: false,
    }
}

/// Every adapter wgpu finds (in `gpu:N` preference order), then the CPU device.
/// Does not initialize the runtime.
pub fn list_physical_devices() -> Vec<PhysicalDevice> {
    let mut v = physical().list.clone();
    v.push(cpu_physical());
    v
}

/// Settings that shape the runtime; each field is `None` when neither the
/// environment nor a `set_*` call chose it.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The `WGFLOW_VISIBLE_DEVICES` syntax: comma list of physical indices or
    /// name substrings; empty hides every GPU.
    pub visible: Option<String>,
    /// `gpu:N` or `cpu`.
    pub default: Option<String>,
    /// Memory growth (`WGFLOW_FORCE_GPU_ALLOW_GROWTH`); on when unset.
    pub growth: Option<bool>,
    /// Bytes.
    pub memory_limit: Option<u64>,
    /// Logical GPUs carved out of physical ones: (physical index, the
    /// memory limit of each logical GPU in MiB), as
    /// `WGFLOW_LOGICAL_DEVICES=0:512,512;1:1024` writes it.
    pub logical: Option<Vec<(usize, Vec<u64>)>>,
}

/// One logical GPU of a physical one (`tf.config.LogicalDeviceConfiguration`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogicalDeviceConfiguration {
    /// The memory its pool may hold, in MiB.
    pub memory_limit_mb: u64,
}

/// Parses `WGFLOW_LOGICAL_DEVICES`: `P:MB[,MB...]` per physical GPU `P`,
/// separated by `;`.
pub fn parse_logical(spec: &str) -> Result<Vec<(usize, Vec<u64>)>> {
    let bad = |why: String| {
        Error::selection(
            format!("WGFLOW_LOGICAL_DEVICES={spec:?}: {why}"),
            vec!["P:MB[,MB...][;P:MB...], e.g. 0:512,512 for two 512 MiB logical GPUs on GPU 0".into()],
        )
    };
    let mut out: Vec<(usize, Vec<u64>)> = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (p, mbs) = part
            .split_once(':')
            .ok_or_else(|| bad(format!("{part:?} has no ':' between the GPU and its limits")))?;
        let p: usize = p
            .trim()
            .parse()
            .map_err(|_| bad(format!("{p:?} is not a physical GPU index")))?;
        if out.iter().any(|(q, _)| *q == p) {
            return Err(bad(format!("GPU {p} is configured twice")));
        }
        let mut limits = Vec::new();
        for m in mbs.split(',').map(str::trim) {
            let mb: u64 = m
                .parse()
                .ok()
                .filter(|&m| m > 0 && m <= u64::MAX >> 20)
                .ok_or_else(|| bad(format!("{m:?} is not a positive number of MiB")))?;
            limits.push(mb);
        }
        out.push((p, limits));
    }
    if out.is_empty() {
        return Err(bad("no GPU configured".into()));
    }
    Ok(out)
}

impl Settings {
    /// Reads the `WGFLOW_*` variables. Malformed values are errors.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok();
        let growth = match var("WGFLOW_FORCE_GPU_ALLOW_GROWTH").as_deref().map(str::trim) {
            None => None,
            Some("true") | Some("1") => Some(true),
            Some("false") | Some("0") => Some(false),
            Some(v) => {
                return Err(Error::selection(
                    format!("WGFLOW_FORCE_GPU_ALLOW_GROWTH={v:?} is not a boolean"),
                    vec!["true".into(), "false".into()],
                ));
            }
        };
        let memory_limit = match var("WGFLOW_MEMORY_LIMIT_MB") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&m| m > 0)
                    .ok_or_else(|| {
                        Error::selection(
                            format!("WGFLOW_MEMORY_LIMIT_MB={v:?} is not a positive whole number of MiB"),
                            vec!["e.g. 512".into()],
                        )
                    })?
                    .checked_mul(1 << 20)
                    .ok_or_else(|| {
                        Error::selection(
                            format!("WGFLOW_MEMORY_LIMIT_MB={v:?} is more bytes than a u64 holds"),
                            vec!["e.g. 512".into()],
                        )
                    })?,
            ),
        };
        let logical = match var("WGFLOW_LOGICAL_DEVICES") {
            None => None,
            Some(v) => Some(parse_logical(&v)?),
        };
        // Read where GEMMs launch; checked here so that a typo fails the
        // first device lookup instead of passing unnoticed.
        // (variable, whether a value is valid, what it must be, valid values)
        type Setting = (&'static str, fn(&str) -> bool, &'static str, &'static str);
        let settings: [Setting; 3] = [
            (
                "WGFLOW_DETERMINISTIC_OPS",
                |v| super::wgpu::tune::parse_flag(v).is_some(),
                "a boolean",
                "1, true, 0, false",
            ),
            (
                "WGFLOW_GEMM",
                |v| super::wgpu::GemmVariant::parse(v).is_some(),
                "a GEMM kernel",
                super::wgpu::GemmVariant::NAMES,
            ),
            (
                "WGFLOW_GEMM_CHECKS",
                |v| super::wgpu::GemmChecks::parse(v).is_some(),
                "a setting",
                super::wgpu::GemmChecks::NAMES,
            ),
        ];
        for (name, valid, what, names) in settings {
            if let Some(v) = var(name).filter(|v| !valid(v)) {
                return Err(Error::arg(
                    name,
                    format!("{v:?} is not {what}; valid values: [{names}]"),
                ));
            }
        }
        Ok(Settings {
            visible: var("WGFLOW_VISIBLE_DEVICES"),
            default: var("WGFLOW_DEVICE"),
            growth,
            memory_limit,
            logical,
        })
    }

    fn overlay(self, over: &Settings) -> Settings {
        Settings {
            visible: over.visible.clone().or(self.visible),
            default: over.default.clone().or(self.default),
            growth: over.growth.or(self.growth),
            memory_limit: over.memory_limit.or(self.memory_limit),
            logical: over.logical.clone().or(self.logical),
        }
    }
}

fn valid_gpus(list: &[PhysicalDevice]) -> Vec<String> {
    list.iter()
        .filter(|p| p.index.is_some())
        .map(|p| format!("{} = {} [{}]", p.index.unwrap(), p.name, p.backend))
        .collect()
}

/// Makes every op give bitwise the same result from run to run and
/// process to process on the same device (`tf.config.experimental.enable_op_determinism`):
/// GEMM kernels are then chosen by shape alone instead of being autotuned
/// (timed per shape class on first use). There is no way back; the
/// environment variable `WGFLOW_DETERMINISTIC_OPS=1` does the same from
/// the start. wgflow's kernels are otherwise deterministic (no atomic sums).
pub fn enable_op_determinism() {
    super::wgpu::tune::enable_determinism();
}

/// Whether op determinism is on ([`enable_op_determinism`] or
/// `WGFLOW_DETERMINISTIC_OPS=1`).
pub fn is_op_determinism_enabled() -> bool {
    super::wgpu::tune::determinism()
}

/// Resolves a `WGFLOW_VISIBLE_DEVICES` value against the physical GPUs:
/// the physical indices that become `gpu:0`, `gpu:1`, ... in that order.
pub fn resolve_visible(list: &[PhysicalDevice], spec: Option<&str>) -> Result<Vec<usize>> {
    let gpus: Vec<&PhysicalDevice> = list.iter().filter(|p| p.index.is_some()).collect();
    let Some(spec) = spec else {
        return Ok(gpus.iter().filter(|p| p.compute).map(|p| p.index.unwrap()).collect());
    };
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let idx = if let Ok(i) = item.parse::<usize>() {
            if i >= gpus.len() {
                return Err(Error::selection(
                    format!(
                        "WGFLOW_VISIBLE_DEVICES: GPU index {i} is out of range ({} physical GPUs)",
                        gpus.len()
                    ),
                    valid_gpus(list),
                ));
            }
            i
        } else {
            let needle = item.to_lowercase();
            let hits: Vec<usize> = gpus
                .iter()
                .filter(|p| format!("{} {}", p.name, p.backend).to_lowercase().contains(&needle) && p.compute)
                .map(|p| p.index.unwrap())
                .filter(|i| !out.contains(i))
                .collect();
            match hits.first() {
                // A name takes the first matching adapter not yet chosen, so
                // "llvmpipe,llvmpipe" picks two different adapters.
                Some(&i) => i,
                None => {
                    return Err(Error::selection(
                        format!("WGFLOW_VISIBLE_DEVICES: no unused GPU matches {item:?}"),
                        valid_gpus(list),
                    ));
                }
            }
        };
        if !gpus[idx].compute {
            return Err(Error::selection(
                format!("GPU {idx} ({}) cannot run compute shaders", gpus[idx].name),
                valid_gpus(list),
            ));
        }
        if out.contains(&idx) {
            return Err(Error::selection(
                format!("WGFLOW_VISIBLE_DEVICES lists GPU {idx} twice"),
                valid_gpus(list),
            ));
        }
        out.push(idx);
    }
    Ok(out)
}

/// Resolves `WGFLOW_DEVICE` over the visible GPUs (`software[i]`: whether
/// `gpu:i` is a software adapter, wgpu's `DeviceType::Cpu`: llvmpipe,
/// SwiftShader, WARP): `Some(n)` for `gpu:n`, `None` for the CPU. Unset, it
/// is the first real GPU, else the CPU device: a software rasterizer is
/// slower than the CPU device on the same cores, so it is used only when
/// chosen.
pub fn resolve_default(spec: Option<&str>, software: &[bool]) -> Result<Option<usize>> {
    let visible = software.len();
    let valid = || {
        let mut v: Vec<String> = (0..visible).map(|i| format!("gpu:{i}")).collect();
        v.push("cpu".into());
        v
    };
    match spec {
        None => Ok(software.iter().position(|&soft| !soft)),
        Some(s) => match parse_spec(s) {
            Some(None) => Ok(None),
            Some(Some(n)) if n < visible => Ok(Some(n)),
            _ => Err(Error::selection(
                format!("WGFLOW_DEVICE={:?} names no visible device", s.trim().to_lowercase()),
                valid(),
            )),
        },
    }
}

/// `cpu` / `cpu:0` -> `Some(None)`, `gpu:N` (or `gpuN`, `gpu`) ->
/// `Some(Some(N))`, anything else `None`.
fn parse_spec(spec: &str) -> Option<Option<usize>> {
    let s = spec.trim().to_lowercase();
    if s == "cpu" || s == "cpu:0" {
        return Some(None);
    }
    s.strip_prefix("gpu:")
        .or_else(|| s.strip_prefix("gpu"))
        .and_then(|n| if n.is_empty() { Some(0) } else { n.parse::<usize>().ok() })
        .map(Some)
}

/// The device a name gives: `gpu:N` (a visible logical GPU) or `cpu`.
pub fn device(spec: &str) -> Result<Device> {
    match parse_spec(spec) {
        Some(None) => Ok(Device::Cpu),
        Some(Some(n)) => gpu(n),
        None => Err(Error::selection(
            format!("{spec:?} is not a device name"),
            vec!["gpu:N".into(), "cpu".into()],
        )),
    }
}

pub(crate) struct Runtime {
    /// Physical index of each logical GPU, in `gpu:N` order (repeated for
    /// the logical GPUs of one physical GPU).
    visible: Vec<usize>,
    /// Each logical GPU's own memory limit (bytes), where configured.
    limits: Vec<Option<u64>>,
    gpus: Vec<OnceLock<std::result::Result<Arc<GpuDevice>, Error>>>,
    default: Option<usize>,
    growth: bool,
    limit: Option<u64>,
}

static PENDING: Mutex<Settings> = Mutex::new(Settings {
    visible: None,
    default: None,
    growth: None,
    memory_limit: None,
    logical: None,
});

/// The logical GPUs of the visible physical ones: (physical index, limit).
fn expand(
    visible: &[usize],
    logical: Option<&[(usize, Vec<u64>)]>,
    limit: Option<u64>,
) -> Result<Vec<(usize, Option<u64>)>> {
    if let Some(l) = logical {
        if let Some((p, _)) = l.iter().find(|(p, _)| !visible.contains(p)) {
            let valid: Vec<String> = visible.iter().map(|v| format!("physical GPU {v}")).collect();
            return Err(Error::selection(
                format!("logical devices configured for physical GPU {p}, which is not visible"),
                valid,
            ));
        }
    }
    let mut out = Vec::new();
    for &phys in visible {
        match logical.and_then(|l| l.iter().find(|(p, _)| *p == phys)) {
            Some((_, mbs)) => out.extend(mbs.iter().map(|mb| (phys, Some(mb << 20)))),
            None => out.push((phys, limit)),
        }
    }
    Ok(out)
}
static RUNTIME: OnceLock<std::result::Result<Runtime, Error>> = OnceLock::new();

pub(crate) fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            let over = PENDING.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let s = Settings::from_env()?.overlay(&over);
            let list = &physical().list;
            let (growth, limit) = (s.growth.unwrap_or(true), s.memory_limit);
            let logical = expand(
                &resolve_visible(list, s.visible.as_deref())?,
                s.logical.as_deref(),
                limit,
            )?;
            let mut gpus: Vec<OnceLock<_>> = Vec::new();
            let (mut visible, mut limits) = (Vec::new(), Vec::new());
            if s.visible.is_some() {
                gpus = logical.iter().map(|_| OnceLock::new()).collect();
                (visible, limits) = logical.into_iter().unzip();
            } else {
                let mut broken: Vec<usize> = Vec::new();
                for (phys, limit) in logical {
                    if broken.contains(&phys) {
                        continue;
                    }
                    let opts = GpuOptions { growth, limit };
                    match open_gpu(visible.len(), phys, opts) {
                        Ok(d) => {
                            visible.push(phys);
                            limits.push(limit);
                            gpus.push(OnceLock::from(Ok(Arc::new(d))));
                        }
                        Err(e) => {
                            // Its other logical GPUs go too.
                            broken.push(phys);
                            while visible.last() == Some(&phys) {
                                visible.pop();
                                limits.pop();
                                gpus.pop();
                            }
                            let p = &list[phys];
                            let why = match e {
                                Error::Gpu { msg, .. } => msg,
                                e => e.to_string(),
                            };
                            log::warn!("leaving out {} ({}, {}): {why}", p.tf_name(), p.name, p.backend);
                        }
                    }
                }
            }
            let software: Vec<bool> = visible.iter().map(|&p| list[p].adapter_type == "Cpu").collect();
            let default = resolve_default(s.default.as_deref(), &software)?;
            if visible.is_empty() {
                log::info!("no visible GPU; running on the CPU reference device");
            } else if default.is_none() && s.default.is_none() {
                let p = &list[visible[0]];
                log::info!(
                    "gpu:0 is {} ({}), a software adapter on the CPU: the default device is the CPU device; choose the adapter with WGFLOW_DEVICE=gpu:0",
                    p.name,
                    p.backend
                );
            }
            Ok(Runtime {
                gpus,
                visible,
                limits,
                default,
                growth,
                limit,
            })
        })
        .as_ref()
        .map_err(|e| e.clone())
}

/// Opens adapter `phys` as `gpu:ordinal`. `WGFLOW_TEST_BROKEN_ADAPTERS`
/// (name or backend substrings, comma-separated) makes the matching
/// adapters fail here, so the tests can check how a broken adapter is left out
/// on machines where every adapter works.
fn open_gpu(ordinal: usize, phys: usize, opts: GpuOptions) -> Result<GpuDevice> {
    let p = &physical().list[phys];
    if let Ok(broken) = std::env::var("WGFLOW_TEST_BROKEN_ADAPTERS") {
        let id = format!("{} {}", p.name, p.backend).to_lowercase();
        if broken
            .split(',')
            .any(|b| !b.trim().is_empty() && id.contains(&b.trim().to_lowercase()))
        {
            return Err(Error::Gpu {
                device: format!("gpu:{ordinal} ({})", p.name),
                msg: "request_device failed: WGFLOW_TEST_BROKEN_ADAPTERS".into(),
            });
        }
    }
    GpuDevice::new(ordinal, &physical().adapters[phys], opts)
}

fn before_init(setting: &'static str, f: impl FnOnce(&mut Settings)) -> Result<()> {
    let mut p = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    if RUNTIME.get().is_some() {
        return Err(Error::AlreadyInitialized { setting });
    }
    f(&mut p);
    Ok(())
}

fn gpu_index(setting: &'static str, d: &PhysicalDevice) -> Result<usize> {
    let list = &physical().list;
    match d.index {
        Some(i) if i < list.len() => Ok(i),
        _ => Err(Error::selection(
            format!("{setting}: {} is not a physical GPU", d.tf_name()),
            valid_gpus(list),
        )),
    }
}

/// Chooses and orders the visible GPUs, like `tf.config.set_visible_devices`.
/// An empty slice hides every GPU.
pub fn set_visible_devices(devices: &[PhysicalDevice]) -> Result<()> {
    let mut spec = Vec::new();
    for d in devices {
        spec.push(gpu_index("set_visible_devices", d)?.to_string());
    }
    resolve_visible(&physical().list, Some(&spec.join(",")))?;
    before_init("set_visible_devices", |s| s.visible = Some(spec.join(",")))
}

/// The device ops use when none is given: `gpu:N` or `cpu`.
pub fn set_default_device(spec: &str) -> Result<()> {
    before_init("set_default_device", |s| s.default = Some(spec.to_string()))
}

/// Memory growth on (buffers created on demand) or off (the limit reserved up
/// front). Applies to every GPU: wgflow has one pool policy per process.
pub fn set_memory_growth(device: &PhysicalDevice, enable: bool) -> Result<()> {
    gpu_index("set_memory_growth", device)?;
    before_init("set_memory_growth", |s| s.growth = Some(enable))
}

/// Caps the memory a GPU's pool may hold, in MiB (a logical device's `memory_limit`).
pub fn set_memory_limit(device: &PhysicalDevice, megabytes: u64) -> Result<()> {
    gpu_index("set_memory_limit", device)?;
    if megabytes == 0 {
        return Err(Error::selection("set_memory_limit: the limit must be positive", vec![]));
    }
    let Some(bytes) = megabytes.checked_mul(1 << 20) else {
        return Err(Error::selection(
            format!("set_memory_limit: {megabytes} MiB is more bytes than a u64 holds"),
            vec![],
        ));
    };
    before_init("set_memory_limit", |s| s.memory_limit = Some(bytes))
}

/// Splits a physical GPU into logical GPUs, each with its own memory limit
/// and pool (`tf.config.set_logical_device_configuration`); they take
/// consecutive `gpu:N` numbers. Before the runtime initializes; the
/// environment form is `WGFLOW_LOGICAL_DEVICES=0:512,512`.
pub fn set_logical_device_configuration(device: &PhysicalDevice, configs: &[LogicalDeviceConfiguration]) -> Result<()> {
    let p = gpu_index("set_logical_device_configuration", device)?;
    if configs.is_empty() {
        return Err(Error::selection(
            "set_logical_device_configuration: give at least one LogicalDeviceConfiguration",
            vec!["LogicalDeviceConfiguration { memory_limit_mb: 512 }".into()],
        ));
    }
    if let Some(c) = configs
        .iter()
        .find(|c| c.memory_limit_mb == 0 || c.memory_limit_mb > u64::MAX >> 20)
    {
        return Err(Error::selection(
            format!(
                "set_logical_device_configuration: memory_limit_mb {} is not a positive number of MiB",
                c.memory_limit_mb
            ),
            vec!["e.g. 512".into()],
        ));
    }
    let mbs: Vec<u64> = configs.iter().map(|c| c.memory_limit_mb).collect();
    before_init("set_logical_device_configuration", |s| {
        let mut l = s.logical.take().unwrap_or_default();
        l.retain(|(q, _)| *q != p);
        l.push((p, mbs));
        s.logical = Some(l);
    })
}

/// The logical GPUs configured for a physical GPU (`None`: one, the whole GPU).
pub fn get_logical_device_configuration(device: &PhysicalDevice) -> Result<Option<Vec<LogicalDeviceConfiguration>>> {
    let p = gpu_index("get_logical_device_configuration", device)?;
    let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let s = Settings::from_env()?.overlay(&pending);
    Ok(s.logical.and_then(|l| {
        l.into_iter().find(|(q, _)| *q == p).map(|(_, mbs)| {
            mbs.into_iter()
                .map(|memory_limit_mb| LogicalDeviceConfiguration { memory_limit_mb })
                .collect()
        })
    }))
}

/// The visible GPUs then the CPU, initializing the runtime.
pub fn list_logical_devices() -> Result<Vec<Device>> {
    let rt = runtime()?;
    let mut v = Vec::new();
    for i in 0..rt.visible.len() {
        v.push(gpu(i)?);
    }
    v.push(Device::Cpu);
    Ok(v)
}

/// Number of visible GPUs (initializes the runtime, creates no device).
pub fn visible_gpu_count() -> Result<usize> {
    Ok(runtime()?.visible.len())
}

/// The physical device behind `gpu:n`.
pub fn physical_of(n: usize) -> Result<PhysicalDevice> {
    let rt = runtime()?;
    rt.visible
        .get(n)
        .map(|&i| physical().list[i].clone())
        .ok_or_else(|| no_gpu(n, rt))
}

fn no_gpu(n: usize, rt: &Runtime) -> Error {
    let mut valid: Vec<String> = (0..rt.visible.len()).map(|i| format!("gpu:{i}")).collect();
    valid.push("cpu".into());
    Error::selection(format!("gpu:{n} is not a visible device"), valid)
}

/// The logical device `gpu:n` (created at initialization, or on first use
/// when the visible GPUs were chosen explicitly).
pub fn gpu(n: usize) -> Result<Device> {
    let rt = runtime()?;
    let Some(&phys) = rt.visible.get(n) else {
        return Err(no_gpu(n, rt));
    };
    rt.gpus[n]
        .get_or_init(|| {
            open_gpu(
                n,
                phys,
                GpuOptions {
                    growth: rt.growth,
                    limit: rt.limits.get(n).copied().flatten().or(rt.limit),
                },
            )
            .map(Arc::new)
        })
        .clone()
        .map(Device::Gpu)
}

/// The default device: `WGFLOW_DEVICE`, else `gpu:0`, else the CPU.
pub fn default_device() -> Result<Device> {
    match runtime()?.default {
        Some(n) => gpu(n),
        None => Ok(Device::Cpu),
    }
}

/// Whether memory growth is on for the runtime's GPUs.
pub fn memory_growth() -> Result<bool> {
    Ok(runtime()?.growth)
}
