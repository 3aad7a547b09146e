//! What the examples share: a logger for wgflow's notices.

use std::io::Write;

/// Shows wgflow's notices (`log` records of the `wgflow` target: a GPU left
/// out, the CPU fallback, retracing) on stderr as one `wgflow: ...` line
/// each, at `info` and up. Other crates' records (wgpu's and naga's) stay
/// off: what matters of them reaches the program as `wgflow::Error`s, and
/// their adapter probing logs driver fallbacks that are not failures.
/// `RUST_LOG` (env_logger's syntax, e.g. `RUST_LOG=wgflow=warn,wgpu_hal=warn`)
/// changes it.
pub fn init_logging() {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Off)
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
