//! `wgflow_model_server`: TensorFlow Serving's REST and gRPC APIs over
//! SavedModels loaded with [`crate::io::saved_model`], on any wgflow device.
//!
//! A drop-in for `tensorflow_model_server`: the same flags ([`Options`]),
//! URLs, JSON, protobufs, version folders and status codes, so existing
//! clients (`tensorflow-serving-api`, `curl`, readiness probes, Prometheus)
//! work unchanged.
//!
//! - `manager`: models, version folders polled, hot swap (load new, then
//!   unload old), failed loads reported in the version's status;
//! - `servable`: one loaded version, warmed up; `batch`: server-side
//!   batching; `tensor`: request tensors on the host (JSON, `TensorProto`);
//! - `rest` (the API as a function) and `http` (hyper); `grpc` (tonic);
//! - `config` and `textproto`: TF Serving's text-format config files;
//!   `metrics`: Prometheus; `json`: RapidJSON's grammar (NaN, Infinity).

pub mod batch;
pub mod config;
pub mod grpc;
mod http;
pub mod json;
pub mod manager;
pub mod metrics;
pub mod rest;
pub mod servable;
pub mod status;
pub mod tensor;
pub mod textproto;

use crate::runtime::Device;
use config::{BatchingParameters, ModelConfig, MonitoringConfig, VersionPolicy};
use manager::Manager;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `tensorflow_model_server`'s flags, with its names and defaults.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "wgflow_model_server",
    version,
    about = "TensorFlow Serving's REST and gRPC APIs over SavedModels, on any WebGPU adapter or the CPU.\n\
             The device is chosen as everywhere in wgflow: WGFLOW_DEVICE=cpu|gpu:N, WGFLOW_VISIBLE_DEVICES, \
             WGFLOW_MEMORY_LIMIT_MB."
)]
pub struct Options {
    /// TCP port for the gRPC API (PredictionService, ModelService); 0 turns gRPC off.
    #[arg(long = "port", default_value_t = 8500)]
    pub port: u16,
    /// TCP port for the REST API; 0 (the default) turns REST off. Must differ from --port.
    #[arg(long = "rest_api_port", default_value_t = 0)]
    pub rest_api_port: u16,
    /// Threads serving REST and gRPC connections (0: 4 x the CPUs, TF Serving's default).
    #[arg(long = "rest_api_num_threads", default_value_t = 0)]
    pub rest_api_num_threads: usize,
    /// Deadline of a REST request, from its first byte to its answer (504 past it).
    #[arg(long = "rest_api_timeout_in_ms", default_value_t = 30000)]
    pub rest_api_timeout_in_ms: u64,
    /// Send CORS headers (Access-Control-Allow-Origin: *) and answer OPTIONS preflights.
    #[arg(long = "rest_api_enable_cors_support", num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub rest_api_enable_cors_support: bool,
    /// Largest request body (REST, after gzip) or message (gRPC, after gzip) accepted, in bytes, and
    /// the most a gRPC request's tensors may take once decoded (wgflow's flag; 413 / RESOURCE_EXHAUSTED
    /// past it).
    #[arg(long = "rest_api_max_request_bytes", default_value_t = 64 << 20)]
    pub max_request_bytes: usize,
    /// The model's name in URLs and ModelSpecs (with --model_base_path).
    #[arg(long = "model_name", default_value = "default")]
    pub model_name: String,
    /// The folder of numbered SavedModel version folders (1/, 2/, ...).
    #[arg(long = "model_base_path")]
    pub model_base_path: Option<PathBuf>,
    /// Several models: a text-format ModelServerConfig (`model_config_list { config { ... } }`),
    /// with version policies latest/all/specific and version_labels. Overrides --model_name.
    #[arg(long = "model_config_file")]
    pub model_config_file: Option<PathBuf>,
    /// Re-read --model_config_file every N seconds (0: read once).
    #[arg(long = "model_config_file_poll_wait_seconds", default_value_t = 0)]
    pub model_config_file_poll_wait_seconds: u64,
    /// Poll the base paths for new versions every N seconds (0: once at startup).
    #[arg(long = "file_system_poll_wait_seconds", default_value_t = 1)]
    pub file_system_poll_wait_seconds: i64,
    /// Merge concurrent requests into device batches.
    #[arg(long = "enable_batching", num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_batching: bool,
    /// A text-format BatchingParameters (max_batch_size, batch_timeout_micros,
    /// max_enqueued_batches, num_batch_threads, allowed_batch_sizes).
    #[arg(long = "batching_parameters_file")]
    pub batching_parameters_file: Option<PathBuf>,
    /// A text-format MonitoringConfig: `prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }`.
    #[arg(long = "monitoring_config_file")]
    pub monitoring_config_file: Option<PathBuf>,
    /// Accepted for compatibility: wgflow always lets a label name a version not loaded yet
    /// (requests through it get 404 until the version is available).
    #[arg(long = "allow_version_labels_for_unavailable_models", num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_version_labels_for_unavailable_models: bool,
    /// Run each signature once on load (at batch 1 and each allowed batch size).
    #[arg(long = "enable_model_warmup", num_args = 0..=1, default_missing_value = "true", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_model_warmup: bool,
    /// The MetaGraphDef tags to load.
    #[arg(long = "saved_model_tags", default_value = "serve")]
    pub saved_model_tags: String,
}

impl Default for Options {
    fn default() -> Self {
        <Options as clap::Parser>::parse_from(["wgflow_model_server"])
    }
}

/// What the request handlers share.
pub struct App {
    /// The models.
    pub manager: Arc<Manager>,
    /// The flags.
    pub options: Options,
    /// Prometheus, when configured.
    pub monitoring: Option<MonitoringConfig>,
    /// REST bodies in flight, in KiB (see [`App::body_permits`]).
    bodies: Arc<tokio::sync::Semaphore>,
}

impl App {
    /// The shared state of a server with these models and flags.
    pub fn new(manager: Arc<Manager>, options: Options, monitoring: Option<MonitoringConfig>) -> App {
        let units = body_units(options.max_request_bytes.saturating_mul(4).max(MIN_BODIES_IN_FLIGHT));
        App {
            manager,
            options,
            monitoring,
            bodies: Arc::new(tokio::sync::Semaphore::new(units as usize)),
        }
    }

    /// A share of the REST bodies in flight for a body of up to `bytes`
    /// (at most `--rest_api_max_request_bytes`): together they may take 4 x
    /// the flag (at least 64 MiB), so that many large bodies read and
    /// parsed at once cannot exhaust the memory; a request waits for its
    /// share. `None` once the semaphore is closed.
    pub async fn body_permits(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let want = body_units(bytes.min(self.options.max_request_bytes)).max(1);
        Arc::clone(&self.bodies).acquire_many_owned(want).await.ok()
    }

    /// The model label of a request's metrics: its model's name when the
    /// model is configured, else [`metrics::UNKNOWN_MODEL`] (names chosen by
    /// clients would grow the metrics without bound).
    pub(crate) fn metrics_model<'a>(&self, model: &'a str) -> &'a str {
        if self.manager.knows(model) {
            model
        } else {
            metrics::UNKNOWN_MODEL
        }
    }
}

/// The least the REST bodies in flight may take together.
const MIN_BODIES_IN_FLIGHT: usize = 64 << 20;

/// `bytes` in KiB, rounded up, in what a semaphore counts.
fn body_units(bytes: usize) -> u32 {
    let kib = bytes.div_ceil(1024);
    u32::try_from(kib)
        .unwrap_or(u32::MAX)
        .min(u32::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u32::MAX))
}

/// Set to `true` once when the server is to stop.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// The models the flags name.
fn models(o: &Options) -> Result<Vec<ModelConfig>, String> {
    let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    match (&o.model_config_file, &o.model_base_path) {
        (Some(f), _) => {
            let mut list = config::read_model_config(f)?;
            for m in &mut list {
                m.base_path = absolute(&m.base_path);
            }
            if list.is_empty() {
                return Err(format!("{}: model_config_list has no config", f.display()));
            }
            Ok(list)
        }
        (None, Some(base)) => Ok(vec![ModelConfig {
            name: o.model_name.clone(),
            base_path: absolute(base),
            policy: VersionPolicy::default(),
            labels: Default::default(),
        }]),
        (None, None) => {
            Err("Both server_options.model_base_path and server_options.model_config_file are empty!".into())
        }
    }
}

/// Runs the server until SIGINT or SIGTERM; in-flight requests finish.
pub fn run(options: Options) -> Result<(), String> {
    if options.batching_parameters_file.is_some() && !options.enable_batching {
        return Err("server_options.batching_parameters_file is set without setting \
                    server_options.enable_batching to true."
            .into());
    }
    if options.port != 0 && options.port == options.rest_api_port {
        return Err(format!(
            "--rest_api_port={} must differ from --port={} (the gRPC port)",
            options.rest_api_port, options.port
        ));
    }
    if options.port == 0 && options.rest_api_port == 0 {
        return Err("both --port and --rest_api_port are 0: nothing to serve".into());
    }
    let tags: Vec<&str> = options.saved_model_tags.split(',').map(str::trim).collect();
    if tags != ["serve"] {
        return Err(format!(
            "--saved_model_tags={}: wgflow_model_server loads the 'serve' MetaGraphDef",
            options.saved_model_tags
        ));
    }
    let list = models(&options)?;
    let batching: Option<BatchingParameters> = match (&options.enable_batching, &options.batching_parameters_file) {
        (false, _) => None,
        (true, None) => Some(BatchingParameters::default()),
        (true, Some(f)) => Some(config::read_batching(f)?),
    };
    let monitoring = match &options.monitoring_config_file {
        Some(f) => Some(config::read_monitoring(f)?),
        None => None,
    };
    let device: Device = crate::runtime::config::default_device().map_err(|e| format!("choosing the device: {e}"))?;
    log::info!(
        "wgflow_model_server {}: device {device} ({})",
        env!("CARGO_PKG_VERSION"),
        device.name()
    );
    if let Some(b) = &batching {
        log::info!(
            "Batching on: max_batch_size {}, batch_timeout_micros {}, max_enqueued_batches {}, num_batch_threads {}, \
             allowed_batch_sizes {:?}",
            b.max_batch_size,
            b.batch_timeout_micros,
            b.max_enqueued_batches,
            b.num_batch_threads,
            b.allowed_batch_sizes
        );
    }
    let manager = Arc::new(Manager::new(list, device, batching, options.enable_model_warmup));
    manager.poll();

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let m = Arc::clone(&manager);
        let stop = Arc::clone(&stop);
        let every = options.file_system_poll_wait_seconds;
        let config_file = options.model_config_file.clone();
        let config_every = options.model_config_file_poll_wait_seconds;
        std::thread::Builder::new()
            .name("wgflow-poll".into())
            .spawn(move || poll_loop(&m, &stop, every, config_file, config_every))
            .map_err(|e| format!("starting the poll thread: {e}"))?
    };

    let threads = match options.rest_api_num_threads {
        0 => 4 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
    .clamp(1, 256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .max_blocking_threads(512)
        .thread_name("wgflow-serve")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let app = Arc::new(App::new(Arc::clone(&manager), options.clone(), monitoring));
    let result = rt.block_on(serve(app));
    stop.store(true, Ordering::SeqCst);
    let _ = poller.join();
    rt.shutdown_timeout(Duration::from_secs(1));
    log::info!("wgflow_model_server stopped");
    result
}

async fn serve(app: Arc<App>) -> Result<(), String> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if app.options.port != 0 {
        let l = tokio::net::TcpListener::bind(("0.0.0.0", app.options.port))
            .await
            .map_err(|e| format!("gRPC: cannot listen on 0.0.0.0:{}: {e}", app.options.port))?;
        log::info!("Running gRPC ModelServer at 0.0.0.0:{} ...", app.options.port);
        let (a, r) = (Arc::clone(&app), rx.clone());
        tasks.push(tokio::spawn(async move { grpc::run(l, a, r).await }));
    }
    if app.options.rest_api_port != 0 {
        let l = tokio::net::TcpListener::bind(("0.0.0.0", app.options.rest_api_port))
            .await
            .map_err(|e| format!("REST: cannot listen on 0.0.0.0:{}: {e}", app.options.rest_api_port))?;
        log::info!("Exporting HTTP/REST API at:localhost:{} ...", app.options.rest_api_port);
        if let Some(m) = app.monitoring.as_ref().filter(|m| m.prometheus_enable) {
            log::info!(
                "Prometheus metrics at http://localhost:{}{}",
                app.options.rest_api_port,
                m.prometheus_path
            );
        }
        let (a, r) = (Arc::clone(&app), rx.clone());
        tasks.push(tokio::spawn(async move {
            http::run(l, a, r).await;
            Ok(())
        }));
    }
    let signal = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(mut i), Ok(mut t)) => {
                    tokio::select! {
                        _ = i.recv() => "SIGINT",
                        _ = t.recv() => "SIGTERM",
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    "SIGINT"
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    };
    let name = signal.await;
    log::info!("{name}: stopping; finishing the requests in flight");
    let _ = tx.send(true);
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(format!("a server task failed: {e}")),
            Ok(Ok(())) => {}
        }
    }
    result
}

fn poll_loop(m: &Manager, stop: &AtomicBool, every: i64, config_file: Option<PathBuf>, config_every: u64) {
    let tick = Duration::from_millis(100);
    let mut since_poll = Duration::ZERO;
    let mut since_config = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        since_poll += tick;
        since_config += tick;
        if let (Some(f), true) = (&config_file, config_every > 0) {
            if since_config >= Duration::from_secs(config_every) {
                since_config = Duration::ZERO;
                match config::read_model_config(f) {
                    Ok(mut list) => {
                        for c in &mut list {
                            c.base_path = std::path::absolute(&c.base_path).unwrap_or_else(|_| c.base_path.clone());
                        }
                        m.reconfigure(list);
                    }
                    Err(e) => log::error!("re-reading the model config: {e}; keeping the current one"),
                }
            }
        }
        if every > 0 && since_poll >= Duration::from_secs(every as u64) {
            since_poll = Duration::ZERO;
            m.poll();
        }
    }
}
