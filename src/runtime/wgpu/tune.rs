//! GEMM autotuning: the first product of each shape class on a device
//! times every kernel that can run it there and keeps the fastest for the
//! rest of the process (TensorFlow does the same with cuDNN's algorithms).
//!
//! A shape class is the op, dtype, the power-of-two ceilings of m, n, k and
//! the batch, the transposes and whether the operands load as `vec4`s: the
//! layout features the kernels' speed depends on. Products under
//! [`MIN_FLOPS`] are not timed (launch overhead would decide), and nothing
//! is tuned while a kernel is forced (`WGFLOW_GEMM`, `force_gemm_variant`)
//! or op determinism is on ([`crate::config::enable_op_determinism`]),
//! since then every process must pick the same kernel: different kernels
//! sum in different orders, so the last bits of a result may differ.
//!
//! The candidates run on the product's own operands and output (each
//! writes all of it, the chosen one last), outside any graph recording,
//! after the device has finished earlier work; each is timed with the
//! wall clock around a submission it waits for, the best of a few runs,
//! a run repeating the launch until it lasts about 2 ms (so that on a fast
//! GPU the kernels, not the submission, decide).

use super::{ExecContext, Gpu, GpuDevice};
use crate::core::dtype::DType;
use crate::core::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Products of fewer floating-point operations (2 m n k per batch entry)
/// take the heuristic's kernel untimed.
pub(crate) const MIN_FLOPS: u64 = 1 << 28;

/// Timed runs per candidate (the best counts), fewer once a run is slow.
const RUNS: usize = 3;
/// A candidate run slower than this is timed once.
const SLOW_S: f64 = 0.25;
/// Timed runs after the first last about this long (several launches)...
const BATCH_S: f64 = 2e-3;
/// ...of at most this many launches.
const MAX_REPS: usize = 64;

static DETERMINISM: AtomicBool = AtomicBool::new(false);

/// `WGFLOW_DETERMINISTIC_OPS`, read once (`config` turns a malformed value
/// into an error at the first device lookup).
static DETERMINISM_ENV: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    parse_flag(&std::env::var("WGFLOW_DETERMINISTIC_OPS").unwrap_or_default()) == Some(true)
});

/// `1`/`true` and `0`/`false`/empty; `None` for anything else.
pub fn parse_flag(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "true" => Some(true),
        "" | "0" | "false" => Some(false),
        _ => None,
    }
}

/// Turns op determinism on for the process (no way back, as in TensorFlow).
pub(crate) fn enable_determinism() {
    DETERMINISM.store(true, Ordering::Relaxed);
}

/// Whether op determinism is on (by call or by `WGFLOW_DETERMINISTIC_OPS`).
pub(crate) fn determinism() -> bool {
    DETERMINISM.load(Ordering::Relaxed) || *DETERMINISM_ENV
}

/// What a product's speed depends on (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GemmClass {
    op: &'static str,
    dtype: DType,
    /// Ceiling powers of two of m, n, k, batch.
    lg: [u8; 4],
    ta: bool,
    tb: bool,
    vec_a: bool,
    vec_b: bool,
}

impl GemmClass {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        op: &'static str,
        dtype: DType,
        [m, n, k, batch]: [usize; 4],
        (ta, tb): (bool, bool),
        (vec_a, vec_b): (bool, bool),
    ) -> GemmClass {
        let lg = |v: usize| v.max(1).next_power_of_two().trailing_zeros() as u8;
        GemmClass {
            op,
            dtype,
            lg: [lg(m), lg(n), lg(k), lg(batch)],
            ta,
            tb,
            vec_a,
            vec_b,
        }
    }
}

/// A class's choice and what each candidate took (best run, seconds).
#[derive(Clone, Debug)]
pub(crate) struct Tuned {
    pub entry: &'static str,
    pub times: Vec<(&'static str, f64)>,
}

impl Tuned {
    /// `"matmul_wide (autotuned: gemm 3.10 ms, matmul_wide 2.20 ms)"`.
    pub(crate) fn describe(&self) -> String {
        let times: Vec<String> = self
            .times
            .iter()
            .map(|(e, s)| format!("{e} {:.3} ms", s * 1e3))
            .collect();
        format!("{} (autotuned: {})", self.entry, times.join(", "))
    }
}

/// A device's tuned classes.
#[derive(Default)]
pub(crate) struct Tuner {
    classes: std::sync::Mutex<HashMap<GemmClass, Arc<Tuned>>>,
}

impl Tuner {
    pub(crate) fn get(&self, class: &GemmClass) -> Option<Arc<Tuned>> {
        self.classes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(class)
            .cloned()
    }

    fn put(&self, class: GemmClass, t: Tuned) -> Arc<Tuned> {
        let t = Arc::new(t);
        self.classes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(class, t.clone());
        t
    }
}

/// 2 m n k batch, saturating.
pub(crate) fn flops(dims: [usize; 4]) -> u64 {
    dims.into_iter().fold(2u64, |a, v| a.saturating_mul(v as u64))
}

/// Whether a product of `flops` may be tuned (checked before its
/// candidates are listed: most launches stop here); it is, where it has
/// more than one candidate.
pub(crate) fn tunable(forced: bool, flops: u64) -> bool {
    !forced && !determinism() && flops >= MIN_FLOPS
}

/// The kernel for `class` on `g`: the cached choice, else each candidate
/// timed through `run(entry, eager)`, which launches it on the product's
/// own buffers through `eager`, a `Gpu` outside the caller's graph
/// recording (whose launches then stay as they would be untuned); `None`
/// with fewer than two candidates. A candidate that fails to build or run is left out, and a
/// cooperative-matrix kernel that fails to build is dropped on the device
/// (as [`GpuDevice::with_coop`] does); `None` when none runs, so that the
/// heuristic's kernel reports the error.
pub(crate) fn pick(
    g: &Gpu,
    class: GemmClass,
    candidates: &[&'static str],
    run: impl Fn(&'static str, &Gpu) -> Result<()>,
) -> Result<Option<Arc<Tuned>>> {
    if candidates.len() < 2 {
        return Ok(None);
    }
    let dev: &GpuDevice = g;
    if let Some(t) = dev.tuner.get(&class) {
        return Ok(Some(t));
    }
    let ctx = ExecContext::eager();
    let eager = Gpu { dev, ctx: &ctx };
    let run = |e| run(e, &eager);
    // Earlier work stays out of the timings.
    dev.synchronize()?;
    let mut alive = Vec::new();
    for &e in candidates {
        // The first run builds the pipeline: untimed.
        match run(e).and_then(|_| dev.synchronize()) {
            Ok(()) => alive.push((e, f64::INFINITY)),
            Err(Error::ShaderCompilation { kernel, msg }) if e == "gemm_coop" => {
                dev.drop_coop(&kernel, &msg);
            }
            Err(Error::ShaderCompilation { kernel, msg }) if matches!(e, "gemm_coop_wide" | "gemm_coop_direct") => {
                dev.drop_coop_wide(&kernel, &msg);
            }
            Err(err) => log::debug!("{}: {e} left out of tuning {class:?}: {err}", dev.label),
        }
    }
    let Some(&(first, _)) = alive.first() else {
        return Ok(None);
    };
    // A run of a fast product on a fast GPU is mostly submission and the
    // wait: time several launches in one submission so that the kernels
    // decide (as many as make the fastest candidate's run about 2 ms).
    let time = |e: &'static str, reps: usize| -> Result<f64> {
        let t0 = Instant::now();
        for _ in 0..reps {
            run(e)?;
        }
        dev.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() / reps as f64)
    };
    let mut reps = 1;
    for r in 0..RUNS {
        for (e, best) in alive.iter_mut() {
            *best = best.min(time(e, reps)?);
        }
        let fastest = alive.iter().map(|&(_, t)| t).fold(f64::INFINITY, f64::min);
        if r == 0 {
            if fastest > SLOW_S {
                break;
            }
            reps = ((BATCH_S / fastest).ceil() as usize).clamp(1, MAX_REPS);
            if reps > 1 {
                // Single launches measured the submission as much as the kernel.
                alive.iter_mut().for_each(|(_, t)| *t = f64::INFINITY);
            }
        }
    }
    let entry = alive
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(first, |&(e, _)| e);
    let tuned = Tuned { entry, times: alive };
    log::debug!("{}: {class:?} -> {}", dev.label, tuned.describe());
    Ok(Some(dev.tuner.put(class, tuned)))
}
