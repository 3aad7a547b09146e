//! `WGFLOW_PROFILE=1`: time every op by name. Each op then waits for the
//! device to finish it, so the times are real but the run is slower than an
//! unprofiled one; use it to find which ops dominate.
//!
//! Timing wraps the eager ops of [`crate::ops`] and each node of a
//! compiled `function::Graph`'s replays (a fused kernel under
//! `fused[...]`, its ops in order).

use crate::core::error::Result;
use crate::runtime::Device;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static TABLE: Mutex<Option<HashMap<String, (u64, f64)>>> = Mutex::new(None);

/// Whether `WGFLOW_PROFILE=1` was set (read once, at the first op).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("WGFLOW_PROFILE").is_ok_and(|v| v == "1"))
}

pub(crate) fn time<T>(name: &str, device: &Device, f: impl FnOnce() -> Result<T>) -> Result<T> {
    device.synchronize()?;
    let t = Instant::now();
    let r = f()?;
    device.synchronize()?;
    let s = t.elapsed().as_secs_f64();
    let mut g = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let table = g.get_or_insert_with(HashMap::new);
    let e = match table.get_mut(name) {
        Some(e) => e,
        None => table.entry(name.to_string()).or_insert((0, 0.0)),
    };
    e.0 += 1;
    e.1 += s;
    Ok(r)
}

/// The table so far, slowest ops first; empty unless profiling is on.
pub fn report() -> String {
    let g = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(t) = g.as_ref() else { return String::new() };
    let mut rows: Vec<_> = t.iter().collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    let total: f64 = rows.iter().map(|r| r.1.1).sum();
    let mut out = format!("{:<40} {:>8} {:>12} {:>6}\n", "op", "calls", "total ms", "%");
    for (name, (n, s)) in rows {
        out += &format!(
            "{name:<40} {n:>8} {:>12.2} {:>6.1}\n",
            s * 1e3,
            100.0 * s / total.max(1e-12)
        );
    }
    out
}

/// Clears the table.
pub fn reset() {
    *TABLE.lock().unwrap_or_else(|p| p.into_inner()) = None;
}
