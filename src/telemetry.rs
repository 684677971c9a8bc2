//! Logs and metrics for every command.
//!
//! Logs go through `tracing` to stderr, human-readable by default or one JSON object per line. Metrics go
//! through the `metrics` crate into one process-wide Prometheus recorder; every node serves its text at
//! `/metrics`. Every series carries a `node` label, so a process that runs several nodes (the demo) still
//! tells them apart.
//!
//! Refusals under hostile traffic go through here too: [`LogGate`] keeps a flood from becoming a log storm
//! (at most one line per interval, saying how many it held back), and [`Bounds`] counts what the limits
//! turned away (`lightpath_connections_refused_total`, `lightpath_timeouts_total`,
//! `lightpath_limits_hit_total`). [`record_memory`] sets `lightpath_process_resident_bytes` from
//! `/proc/self/statm` when `/metrics` is read, and in the `lightpath` binary, whose allocator is jemalloc,
//! the heap's bytes in use and resident (`lightpath_heap_allocated_bytes`, `lightpath_heap_resident_bytes`):
//! a resident set that grows while the heap in use does not is memory the allocator keeps, not a leak.
//! [`record_certificate_expiry`] exports when the certificate a node presents expires
//! (`lightpath_certificate_expiry_timestamp_seconds`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// Lets through at most one log line per `every` for one kind of event, and counts the ones held back, so
/// that a flood (a connection storm, a burst of forged QUIC Initials) costs a line per interval instead of a
/// line per packet. Pure: the time is passed in.
#[derive(Debug, Clone)]
pub struct LogGate {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl LogGate {
    /// How often the limits' refusals may log: a line every ten seconds tells an operator that a flood goes
    /// on and how big it is, without filling a disk.
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

    pub fn new(every: Duration) -> Self {
        Self { every, last: None, held: 0 }
    }

    /// Whether an event at `now` may log; if so, with how many events were held back since the last line.
    pub fn pass(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// [`LogGate`] behind a lock, for events that many tasks report.
#[derive(Debug)]
pub struct SharedLogGate(Mutex<LogGate>);

impl SharedLogGate {
    pub fn new(every: Duration) -> Self {
        Self(Mutex::new(LogGate::new(every)))
    }

    /// [`LogGate::pass`] at the current time.
    pub fn pass(&self) -> Option<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pass(Instant::now())
    }
}

impl Default for SharedLogGate {
    fn default() -> Self {
        Self::new(LogGate::DEFAULT_EVERY)
    }
}

/// The counters of one server's limits, labelled with its node.
#[derive(Debug, Clone)]
pub struct Bounds {
    node: String,
}

impl Bounds {
    pub fn new(node: &str) -> Self {
        Self { node: node.to_owned() }
    }

    /// A connection (HTTP or QUIC) turned away, by `reason` (`node_full`, `address_full`,
    /// `handshakes_full`, ...).
    pub fn refused(&self, reason: &'static str) {
        metrics::counter!("lightpath_connections_refused_total", "node" => self.node.clone(), "reason" => reason)
            .increment(1);
    }

    /// A connection or a request cut for taking too long, by `kind` (`header`, `idle`, `body`).
    pub fn timed_out(&self, kind: &'static str) {
        metrics::counter!("lightpath_timeouts_total", "node" => self.node.clone(), "kind" => kind).increment(1);
    }

    /// A configured limit reached, by its config field (`http.max_connections`, `quic.max_handshakes`, ...).
    pub fn limit_hit(&self, limit: &'static str) {
        metrics::counter!("lightpath_limits_hit_total", "node" => self.node.clone(), "limit" => limit).increment(1);
    }

    /// The connections a server holds now.
    pub fn connections(&self, kind: &'static str, open: usize) {
        metrics::gauge!("lightpath_connections", "node" => self.node.clone(), "kind" => kind).set(open as f64);
    }
}

/// The process's resident memory in bytes, from `/proc/self/statm` (its second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages = parse_statm_resident(&statm)?;
    Some(pages * rustix::param::page_size() as u64)
}

/// The resident page count of a `/proc/PID/statm` line.
fn parse_statm_resident(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// Whether this process allocates with jemalloc ([`heap_is_jemalloc`]), so that jemalloc's figures are its
/// heap's. Processes that run nodes on another allocator (tests, benchmarks) export no heap figures.
static JEMALLOC: AtomicBool = AtomicBool::new(false);

/// Says that this process's global allocator is jemalloc: the `lightpath` binary's `main` calls it.
pub fn heap_is_jemalloc() {
    JEMALLOC.store(true, Ordering::Relaxed);
}

/// The heap's bytes in use by the program and resident for it, per jemalloc (`stats.allocated`,
/// `stats.resident`, refreshed by advancing its epoch); `None` unless jemalloc is the allocator.
fn heap_bytes() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    if !JEMALLOC.load(Ordering::Relaxed) {
        return None;
    }
    epoch::advance().ok()?;
    Some((stats::allocated::read().ok()? as u64, stats::resident::read().ok()? as u64))
}

/// Sets `lightpath_process_resident_bytes{node}`, and the heap's figures where [`heap_bytes`] has them
/// (read when `/metrics` is served).
pub fn record_memory(node: &str) {
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("lightpath_process_resident_bytes", "node" => node.to_owned()).set(bytes as f64);
    }
    if let Some((allocated, resident)) = heap_bytes() {
        metrics::gauge!("lightpath_heap_allocated_bytes", "node" => node.to_owned()).set(allocated as f64);
        metrics::gauge!("lightpath_heap_resident_bytes", "node" => node.to_owned()).set(resident as f64);
    }
}

/// Sets `lightpath_certificate_expiry_timestamp_seconds{node}`: when the certificate this node or replica
/// presents to its peers expires (Unix seconds), so that monitoring warns before peers start refusing it.
pub fn record_certificate_expiry(node: &str, identity: &crate::ca::Identity) {
    match identity.not_after_unix() {
        Some(secs) => metrics::gauge!("lightpath_certificate_expiry_timestamp_seconds", "node" => node.to_owned())
            .set(secs as f64),
        None => tracing::warn!(node, "the node certificate's expiry could not be read; it is not exported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_once_per_interval_with_what_it_held_back() {
        let t0 = Instant::now();
        let mut gate = LogGate::new(Duration::from_secs(10));
        assert_eq!(gate.pass(t0), Some(0));
        let held = (1..=500).filter(|i| gate.pass(t0 + Duration::from_millis(i * 10)).is_some()).count();
        assert_eq!(held, 0, "nothing more within the interval");
        assert_eq!(gate.pass(t0 + Duration::from_secs(10)), Some(500));
        assert_eq!(gate.pass(t0 + Duration::from_secs(11)), None);
        assert_eq!(gate.pass(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn statm_gives_resident_pages() {
        assert_eq!(parse_statm_resident("61234 8714 2012 563 0 9210 0\n"), Some(8714));
        assert_eq!(parse_statm_resident(""), None);
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
