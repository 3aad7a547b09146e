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
//! A candidate is an entry point built with wgpu's runtime checks or,
//! on Vulkan, also without them ([`super::GemmChecks`]).
//!
//! The candidates run on the product's own operands and output (each
//! writes all of it, and the caller then launches the choice), outside any graph recording,
//! after the device has finished earlier work; each is timed with the
//! wall clock around a submission it waits for, the best of a few runs,
//! a run repeating the launch until it lasts about 2 ms (so that on a fast
//! GPU the kernels, not the submission, decide).
//!
//! Before it is timed, each candidate's result is compared with the
//! reference's (the plain tiled or register kernel's checked build, run
//! first even where only unchecked builds are tuned):
//! one that disagrees beyond rounding is left out with a warning, so that
//! a kernel a driver miscompiles never becomes a class's choice.

use super::memory::GpuBuf;
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
    /// The builds tuned ([`super::GemmChecks`]): a class tuned with both
    /// is not the choice where one is forced.
    checks: super::GemmChecks,
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
            checks: super::gemm_checks(),
        }
    }
}

/// A GEMM kernel a product can run: an entry point, built with wgpu's
/// runtime checks or without them (see [`super::Kernel::checked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    pub entry: &'static str,
    pub unchecked: bool,
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.entry)?;
        if self.unchecked {
            f.write_str(" unchecked")?;
        }
        Ok(())
    }
}

/// A class's choice and what each candidate took (best run, seconds).
#[derive(Clone, Debug)]
pub(crate) struct Tuned {
    pub choice: Choice,
    pub times: Vec<(Choice, f64)>,
}

impl Tuned {
    /// `"matmul_wide (autotuned: gemm 3.10 ms, matmul_wide 2.20 ms)"`; an
    /// unchecked build reads `"matmul_wide unchecked"`.
    pub(crate) fn describe(&self) -> String {
        let times: Vec<String> = self
            .times
            .iter()
            .map(|(e, s)| format!("{e} {:.3} ms", s * 1e3))
            .collect();
        format!("{} (autotuned: {})", self.choice, times.join(", "))
    }
}

/// A device's tuned classes.
#[derive(Default)]
pub(crate) struct Tuner {
    classes: std::sync::Mutex<HashMap<GemmClass, Arc<Tuned>>>,
    /// Candidates whose pipeline failed to build here, by op and dtype:
    /// left out of every later class rather than built again (a driver's
    /// refusal costs a compilation each time).
    broken: std::sync::Mutex<Vec<(&'static str, DType, Choice)>>,
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

    fn broken(&self, class: &GemmClass, c: Choice) -> bool {
        let broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        broken.contains(&(class.op, class.dtype, c))
    }

    fn mark_broken(&self, class: &GemmClass, c: Choice) {
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        broken.push((class.op, class.dtype, c));
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
/// timed through `run(choice, eager)`, which launches it on the product's
/// own buffers (its output `out`, of `dtype`) through `eager`, a `Gpu`
/// outside the caller's graph recording (whose launches then stay as they
/// would be untuned); `None` with fewer than two candidates. A candidate
/// that fails to build or run, or whose result disagrees with the
/// reference's ([`reference`]), is left out (one that fails to build, from
/// every later class of its op and dtype too), and a cooperative-matrix
/// kernel that fails to build is dropped on the device (as
/// [`GpuDevice::with_coop`] does); `None` when none runs, so that the
/// heuristic's kernel reports the error.
pub(crate) fn pick(
    g: &Gpu,
    class: GemmClass,
    candidates: &[Choice],
    (out, dtype): (&GpuBuf, DType),
    run: impl Fn(Choice, &Gpu) -> Result<()>,
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
    let run = |c| run(c, &eager);
    // Earlier work stays out of the timings.
    dev.synchronize()?;
    // The reference runs first, and the others' results must match its
    // (it is timed only where it is a candidate itself).
    let Some(reference) = reference(candidates) else {
        return Ok(None);
    };
    let mut order = vec![(reference, candidates.contains(&reference))];
    order.extend(candidates.iter().filter(|&&c| c != reference).map(|&c| (c, true)));
    let mut expected: Option<Vec<f32>> = None;
    // Entries whose cooperative-matrix module the device dropped.
    let mut dropped: Vec<&'static str> = Vec::new();
    let mut alive = Vec::new();
    for (c, timed) in order {
        if dropped.contains(&c.entry) || dev.tuner.broken(&class, c) {
            continue;
        }
        // The first run builds the pipeline: untimed.
        match run(c).and_then(|_| dev.synchronize()) {
            Ok(()) => {}
            // Without the reference nothing is verified: nothing is chosen,
            // and the heuristic's kernel runs (and reports what failed).
            Err(err) if expected.is_none() => {
                log::debug!(
                    "{}: tuning {class:?} abandoned, its reference {c} failed: {err}",
                    dev.label
                );
                return Ok(None);
            }
            // An unchecked build that fails is only left out (below).
            Err(Error::ShaderCompilation { kernel, msg }) if c.entry == "gemm_coop" && !c.unchecked => {
                dev.drop_coop(&kernel, &msg);
                dropped.push(c.entry);
                continue;
            }
            Err(Error::ShaderCompilation { kernel, msg })
                if matches!(c.entry, "gemm_coop_wide" | "gemm_coop_direct") && !c.unchecked =>
            {
                dev.drop_coop_wide(&kernel, &msg);
                dropped.extend(["gemm_coop_wide", "gemm_coop_direct"]);
                continue;
            }
            Err(err) => {
                log::debug!("{}: {c} left out of tuning {class:?}: {err}", dev.label);
                if matches!(err, Error::ShaderCompilation { .. }) {
                    dev.tuner.mark_broken(&class, c);
                }
                continue;
            }
        }
        // A read that fails reports the device's error (at most 32 MiB
        // are read, see VERIFY_BYTES).
        let got = read_floats(dev, out, dtype)?;
        match &expected {
            None => expected = Some(got),
            Some(want) => {
                if let Err(why) = agrees(want, &got, dtype) {
                    log::warn!(
                        "{}: GEMM kernel {c} disagrees with {reference} on {class:?} ({why}): left out",
                        dev.label
                    );
                    continue;
                }
            }
        }
        if timed {
            alive.push((c, f64::INFINITY));
        }
    }
    // An unchecked build that ran before its module was dropped goes too.
    alive.retain(|(c, _)| !dropped.contains(&c.entry));
    let Some(&(first, _)) = alive.first() else {
        return Ok(None);
    };
    // A run of a fast product on a fast GPU is mostly submission and the
    // wait: time several launches in one submission so that the kernels
    // decide (as many as make the fastest candidate's run about 2 ms).
    let time = |c: Choice, reps: usize| -> Result<f64> {
        let t0 = Instant::now();
        for _ in 0..reps {
            run(c)?;
        }
        dev.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() / reps as f64)
    };
    let mut reps = 1;
    for r in 0..RUNS {
        for (c, best) in alive.iter_mut() {
            *best = best.min(time(*c, reps)?);
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
    let choice = alive
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(first, |&(c, _)| c);
    let tuned = Tuned { choice, times: alive };
    log::debug!("{}: {class:?} -> {}", dev.label, tuned.describe());
    Ok(Some(dev.tuner.put(class, tuned)))
}

/// What the candidates are checked against: the checked build of the
/// plain kernel among them (the tiled `gemm` or a register kernel), which
/// is conformance-proven on every adapter; `None` where there is none.
fn reference(candidates: &[Choice]) -> Option<Choice> {
    candidates
        .iter()
        .find(|c| matches!(c.entry, "gemm" | "gemm_reg" | "matmul_reg"))
        .map(|c| Choice {
            entry: c.entry,
            unchecked: false,
        })
}

/// The bytes of a candidate's result that are compared: all of an output
/// up to this size, else its first and last halves of it (the last tiles
/// are the ragged ones), so that tuning a huge product does not read it all.
const VERIFY_BYTES: u64 = 32 << 20;

/// `out` (or its ends, see [`VERIFY_BYTES`]) read back as f32s (f16 widened).
fn read_floats(dev: &GpuDevice, out: &GpuBuf, dtype: DType) -> Result<Vec<f32>> {
    let parts = if out.size <= VERIFY_BYTES {
        vec![out.range(0, out.size)]
    } else {
        let half = VERIFY_BYTES / 2;
        // Copies start at multiples of 4 bytes, which hold whole elements.
        let tail = (out.size - half) / 4 * 4;
        vec![out.range(0, half), out.range(tail, out.size - tail)]
    };
    let parts: Vec<&GpuBuf> = parts.iter().collect();
    let bytes = dev.finish_read(dev.start_read(&parts, &[])?)?.concat();
    Ok(match dtype {
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    })
}

/// Whether `got` matches `want` up to the rounding two GEMM kernels that
/// sum in different orders may differ by: within 1e-3 (f32) or 1e-2 (f16)
/// of the largest finite |want|, the same infinities where `want` has
/// them, and anything where `want` has a NaN. Else what differs, for the
/// warning. (The last f16 value may be the padding of an odd count, which
/// no kernel writes: it does not set the scale.)
fn agrees(want: &[f32], got: &[f32], dtype: DType) -> std::result::Result<(), String> {
    if want.len() != got.len() {
        return Err(format!("{} values against {}", got.len(), want.len()));
    }
    let scaled = if dtype == DType::F16 {
        want.len().saturating_sub(1)
    } else {
        want.len()
    };
    let scale = want[..scaled]
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()));
    let tol = scale * if dtype == DType::F16 { 1e-2 } else { 1e-3 };
    for (i, (&w, &x)) in want.iter().zip(got).enumerate() {
        let ok = if w.is_nan() {
            true
        } else if w.is_finite() {
            (x - w).abs() <= tol
        } else {
            x == w
        };
        if !ok {
            return Err(format!(
                "element {i}: {x} where the reference gives {w}, largest |value| {scale}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_agree_up_to_rounding_only() {
        let want = [1.0, -200.0, 0.0, f32::NAN, f32::INFINITY];
        // Different summation orders: within 1e-3 of the largest |value|.
        assert!(agrees(&want, &[1.1, -200.1, 0.15, 7.0, f32::INFINITY], DType::F32).is_ok());
        // A wrong element, a non-finite one where the reference is finite,
        // a wrong infinity, a short result.
        for got in [
            [1.0, -200.0, 0.3, 0.0, f32::INFINITY],
            [f32::NAN, -200.0, 0.0, 0.0, f32::INFINITY],
            [1.0, -200.0, 0.0, 0.0, f32::NEG_INFINITY],
        ] {
            assert!(agrees(&want, &got, DType::F32).is_err(), "{got:?}");
        }
        assert!(agrees(&want, &want[..4], DType::F32).is_err());
        // f16 results round once more: 1e-2 of the largest |value|.
        assert!(agrees(&[100.0, 1.0], &[100.5, 1.9], DType::F16).is_ok());
        assert!(agrees(&[100.0, 1.0], &[100.0, 2.1], DType::F16).is_err());
        // All zeros: any garbage shows.
        assert!(agrees(&[0.0, 0.0], &[0.0, 1e-30], DType::F32).is_err());
        let checked = |entry| Choice {
            entry,
            unchecked: false,
        };
        let un = |entry| Choice { entry, unchecked: true };
        assert_eq!(
            reference(&[checked("gemm_coop"), checked("gemm")]),
            Some(checked("gemm"))
        );
        // Where only unchecked builds are tuned (WGFLOW_GEMM_CHECKS=off),
        // the reference is still the checked one.
        assert_eq!(reference(&[un("gemm_coop"), un("gemm")]), Some(checked("gemm")));
        assert_eq!(
            reference(&[un("matmul_sg"), un("matmul_reg")]),
            Some(checked("matmul_reg"))
        );
        assert_eq!(reference(&[checked("gemm_coop")]), None);
        assert_eq!(un("gemm").to_string(), "gemm unchecked");
    }
}
