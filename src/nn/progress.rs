//! Keras' per-epoch progress bar:
//! `469/469 [==============================] - 12s 26ms/step - loss: 0.3012 - accuracy: 0.9102`.
//! On a terminal the line redraws in place (at most a few times a second,
//! since each redraw reads the metrics back from the device); otherwise only
//! the final line of each epoch is printed.
//!
//! [`crate::nn::model::Model::fit`] draws it when `FitArgs::verbose` is set,
//! from the same logs it hands to [`crate::nn::callbacks`].

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// `keras.utils.Progbar` for one epoch of `total` steps (unknown for a
/// dataset without cardinality).
pub struct Progress {
    total: Option<usize>,
    start: Instant,
    last: Instant,
    live: bool,
    verbose: bool,
}

fn fmt_logs(logs: &[(String, f64)]) -> String {
    logs.iter().map(|(k, v)| format!(" - {k}: {v:.4}")).collect()
}

fn bar(step: usize, total: usize) -> String {
    let w = 30;
    let done = if total == 0 { w } else { step * w / total };
    let mut s = "=".repeat(done.min(w));
    if done < w {
        s.push('>');
        s += &".".repeat(w - done - 1);
    }
    s
}

impl Progress {
    /// Starts the epoch's clock. With `verbose` off nothing is printed; with
    /// it on, the bar redraws live only when stdout is a terminal.
    pub fn new(total: Option<usize>, verbose: bool) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            start: now,
            last: now,
            live: verbose && std::io::stdout().is_terminal(),
            verbose,
        }
    }

    /// Whether `update` would redraw now (callers read metrics only then).
    pub fn due(&self) -> bool {
        self.live && self.last.elapsed() >= Duration::from_millis(250)
    }

    /// Redraws the live line at `step` with an ETA and `logs`; a no-op when
    /// not drawing live.
    pub fn update(&mut self, step: usize, logs: &[(String, f64)]) {
        if !self.live {
            return;
        }
        self.last = Instant::now();
        let per = self.start.elapsed().as_secs_f64() / step.max(1) as f64;
        let line = match self.total {
            Some(t) => {
                let eta = per * t.saturating_sub(step) as f64;
                format!("{step}/{t} [{}] - ETA: {:.0}s{}", bar(step, t), eta, fmt_logs(logs))
            }
            None => format!("{step} steps - {:.0}ms/step{}", per * 1e3, fmt_logs(logs)),
        };
        print!("\r{line}\x1b[K");
        let _ = std::io::stdout().flush();
    }

    /// Prints the epoch's final line: `steps`, total time, time per step and
    /// the epoch's `logs` (validation included).
    pub fn finish(&mut self, steps: usize, logs: &[(String, f64)]) {
        if !self.verbose {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64();
        let per = secs / steps.max(1) as f64;
        let t = self.total.unwrap_or(steps);
        let time = if per >= 1.0 {
            format!("{per:.1}s/step")
        } else {
            format!("{:.0}ms/step", per * 1e3)
        };
        let line = format!(
            "{steps}/{t} [{}] - {:.0}s {time}{}",
            bar(steps, t),
            secs,
            fmt_logs(logs)
        );
        if self.live {
            println!("\r{line}\x1b[K");
        } else {
            println!("{line}");
        }
    }
}
