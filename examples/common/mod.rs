//! What the examples share: a logger for wgflow's notices.

use std::io::Write;

/// Shows wgflow's notices (`log` records of the `wgflow` target: a GPU left
/// out, the CPU fallback, retracing) on stderr as one `wgflow: ...` line
/// each, at `info` and up; other crates (wgpu, naga) only at `warn` and up.
/// `RUST_LOG` (env_logger's syntax, e.g. `RUST_LOG=wgflow=warn`) changes it.
pub fn init_logging() {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .filter_module("wgflow", log::LevelFilter::Info)
        .parse_default_env()
        .format(|buf, r| {
            let krate = r.target().split("::").next().unwrap_or_default();
            if krate == "wgflow" {
                writeln!(buf, "wgflow: {}", r.args())
            } else {
                writeln!(buf, "{krate} {}: {}", r.level(), r.args())
            }
        })
        .init();
}
