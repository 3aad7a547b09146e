//! `wgflow_model_server`: a drop-in for `tensorflow_model_server` (TF
//! Serving's flags, REST and gRPC APIs) running SavedModels on wgflow's
//! devices. `--help` lists the flags; the README shows a session.

use clap::Parser;
use std::io::Write;

/// Log lines as TF Serving prints them: level letter, time, message.
struct Logger {
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (s, us) = (t.as_secs(), t.subsec_micros());
        let l = match r.level() {
            log::Level::Error => 'E',
            log::Level::Warn => 'W',
            log::Level::Info => 'I',
            _ => 'D',
        };
        let line = format!(
            "{l}{:02}:{:02}:{:02}.{us:06} {}] {}\n",
            (s / 3600) % 24,
            (s / 60) % 60,
            s % 60,
            r.target(),
            r.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn main() {
    let level = match std::env::var("WGFLOW_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("error") => log::LevelFilter::Error,
        _ => log::LevelFilter::Info,
    };
    let logger = Box::leak(Box::new(Logger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    let options = wgflow::serving::Options::parse();
    if let Err(e) = wgflow::serving::run(options) {
        eprintln!("Failed to start server. Error: {e}");
        std::process::exit(255);
    }
}
