//! Logs and metrics for every command.
//!
//! Logs go through `tracing` to stderr, human-readable by default or one JSON object per line. Metrics go
//! through the `metrics` crate into one process-wide Prometheus recorder; every node serves its text at
//! `/metrics`. Every series carries a `node` label, so a process that runs several nodes (the demo) still
//! tells them apart.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the log subscriber (level from `RUST_LOG`, `info` by default). Safe to call twice.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain `key=value` text that grep finds.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder can only be present in unit tests that install their own; then ours just
        // renders nothing, which those tests do not read.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
