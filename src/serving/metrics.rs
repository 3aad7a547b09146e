//! The server's counters, in Prometheus' text format under TF Serving's
//! names (`/tensorflow/serving/request_count` is exported as
//! `:tensorflow:serving:request_count`, `/` becoming `:`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Latency buckets in microseconds (TF Serving's: 10 µs × 1.8^i, 33 of them).
fn latency_bounds() -> &'static [f64] {
    static B: OnceLock<Vec<f64>> = OnceLock::new();
    B.get_or_init(|| (0..33).map(|i| 10.0 * 1.8f64.powi(i)).collect())
}

/// Batch size buckets.
const BATCH_BOUNDS: &[f64] = &[1., 2., 4., 8., 16., 32., 64., 128., 256., 512., 1024.];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        if let Some(i) = bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let mut cum = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            cum += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    /// (model, status) -> count.
    requests: BTreeMap<(String, String), u64>,
    /// (model, API, entrypoint) -> latency in µs.
    latency: BTreeMap<(String, String, String), Histogram>,
    /// model -> rows per batch, and padded rows.
    batch: BTreeMap<String, (Histogram, Histogram)>,
    /// (model, version) -> load latency in µs.
    loads: BTreeMap<(String, String), u64>,
}

/// The model label of requests for models that are not configured (and of
/// requests that name none).
pub const UNKNOWN_MODEL: &str = "";

/// The process' counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The one registry (TensorFlow's monitoring counters are process-wide too).
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One finished request: its model (empty when unknown), API
    /// (`predict`, `GetModelMetadata`, ...), entry point (`REST`, `GRPC`),
    /// status code name and latency.
    pub fn request(&self, model: &str, api: &str, entrypoint: &str, status: &str, micros: f64) {
        let mut m = self.lock();
        *m.requests.entry((model.to_string(), status.to_string())).or_default() += 1;
        m.latency
            .entry((model.to_string(), api.to_string(), entrypoint.to_string()))
            .or_default()
            .observe(latency_bounds(), micros);
    }

    /// One device batch: rows of requests and rows after padding.
    pub fn batch_size(&self, model: &str, rows: usize, padded: usize) {
        let mut m = self.lock();
        let e = m.batch.entry(model.to_string()).or_default();
        e.0.observe(BATCH_BOUNDS, rows as f64);
        e.1.observe(BATCH_BOUNDS, padded as f64);
    }

    /// A version finished loading after `micros`.
    pub fn load(&self, model: &str, version: u64, micros: u64) {
        self.lock()
            .loads
            .insert((model.to_string(), version.to_string()), micros);
    }

    /// Prometheus' text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# TYPE :tensorflow:serving:request_count counter\n");
        for ((model, status), n) in &m.requests {
            let _ = writeln!(
                out,
                ":tensorflow:serving:request_count{{model_name=\"{}\",status=\"{}\"}} {n}",
                esc(model),
                esc(status)
            );
        }
        out.push_str("# TYPE :tensorflow:serving:request_latency histogram\n");
        for ((model, api, entry), h) in &m.latency {
            let labels = format!(
                "model_name=\"{}\",API=\"{}\",entrypoint=\"{}\"",
                esc(model),
                esc(api),
                esc(entry)
            );
            h.write(
                &mut out,
                ":tensorflow:serving:request_latency",
                &labels,
                latency_bounds(),
            );
        }
        out.push_str("# TYPE :tensorflow:serving:batching_session:input_batch_size histogram\n");
        for (model, (rows, _)) in &m.batch {
            let labels = format!("model_name=\"{}\"", esc(model));
            rows.write(
                &mut out,
                ":tensorflow:serving:batching_session:input_batch_size",
                &labels,
                BATCH_BOUNDS,
            );
        }
        out.push_str("# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram\n");
        for (model, (_, padded)) in &m.batch {
            let labels = format!("model_name=\"{}\"", esc(model));
            padded.write(
                &mut out,
                ":tensorflow:serving:batching_session:processed_batch_size",
                &labels,
                BATCH_BOUNDS,
            );
        }
        out.push_str("# TYPE :tensorflow:cc:saved_model:load_latency counter\n");
        for ((model, version), us) in &m.loads {
            let _ = writeln!(
                out,
                ":tensorflow:cc:saved_model:load_latency{{model_path=\"{}\",version=\"{}\"}} {us}",
                esc(model),
                esc(version)
            );
        }
        out
    }
}
