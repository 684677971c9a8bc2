//! The simulator: the real routing code driven by a discrete-event engine instead of a network.
//!
//! `lightpath sim SCENARIO.toml` reads a [`Scenario`] (a topology, given or [`generate`]d; link impairments;
//! probe and control-plane timing; a workload; a fault schedule; a seed), runs it on a single-threaded event
//! queue in simulated time (microseconds, no clock), and returns a [`Summary`]: delivery latency, loss and
//! lateness by strategy (the overlay, the static shortest-path tree of t = 0, direct origin-to-edge
//! delivery) overall and per stream, path stretch against the optimum, bytes per link and origin egress, and
//! each fault's reroute time; [`plot`] draws the latency CDF and a timeline around each fault.
//!
//! What it models, with the real types: every simulated node is a [`Relay`](crate::relay::Relay), the live
//! node's own state machine, so the simulator runs the node's decisions, not a copy of them: its probes and
//! one [`LinkEstimator`](crate::routing::LinkEstimator) per connection, its link verdicts, its upstream
//! choice with local failover to the backup, make-before-break, `Unavailable` pass-over, and its reports.
//! The control plane is the live replica's [`Planner`](crate::routing::Planner), fed those reports, whose
//! tables reach the relays after a push delay. Probes and control frames cross simulated links; objects go
//! from origins down the subscription trees the relays built, as they stand when the object is emitted,
//! queueing on links of limited bandwidth. `engine` says how each event works.
//!
//! What it simplifies:
//!
//! - An object's path is decided when the origin emits it, along the subscriptions in force at that moment
//!   (a failure during its flight is not seen), instead of hop by hop as events; caches are not modelled, so
//!   an object lost on a broken path is lost, never fetched again from a cache, and a new subscriber gets
//!   the objects emitted after it subscribed (no live window).
//! - Announcements are not flooded: a node learns a stream's origin from the first node that subscribes to
//!   it through it (and an edge when its viewers arrive), which is all the flood would have told it by then.
//!   Viewers are at every watching edge from its first route table on (or from the workload's start).
//! - A link's delay is its latency, plus uniform jitter, plus the object's sending time and queueing when
//!   the link's bandwidth is limited; an object that loses a packet takes one more round trip (QUIC
//!   retransmits); a lost probe is simply lost; a control frame is never lost (QUIC resends it), it waits
//!   while its link is down and dies with its connection.
//! - A link is heard (proof of life for its verdict, as a live node counts every packet) when a probe, a
//!   probe reply or an object crosses it, or an object's acknowledgement: one object per segment, where a
//!   live link carries its data continuously.
//! - Reports reach the control plane at once and tables reach the nodes whose table changed
//!   `control.push_delay_ms` after the recomputation, whatever the distance. There is one control plane. A
//!   link that comes back on a new connection is connected at once, without the live node's dial backoff.
//! - Every node starts probing at t = 0 (a mesh booted at once), so probe schedules stay in step; faults fall
//!   at any moment of them.
//! - A probe on a link that cannot fail meanwhile is computed when its node is next driven, not as an event
//!   of its own (`engine` says when that holds); the neighbour hears it, as proof of life, from then on.
//!
//! Like `routing`, this module is pure: no tokio, no sockets, no system clock. Seeded RNGs draw every random
//! figure (one for the run, one per link end for its probes), events at the same time run in the order they
//! were scheduled, and the probes that run late on several threads reach only their own node's state, so a
//! scenario and a seed always give the same summary, byte for byte, on any number of threads.

mod engine;
pub mod generate;
mod histogram;
pub mod plot;
mod queue;
mod scenario;
mod summary;

use std::path::Path;

pub use engine::{Micros, Outcome, Strategy, Tally, STRATEGIES};
pub use histogram::{Histogram, Percentiles};
pub use scenario::{Expect, Fault, FaultKind, LinkDefaults, Scenario, StreamSpec, Workload};
pub use summary::{Delivery, FaultSummary, Strategies, StreamSummary, Summary, Traffic};

use crate::topology::Topology;

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The scenario file could not be read.
    #[error("{path}: cannot read the file: {message}")]
    Read { path: String, message: String },
    /// The scenario is not valid TOML or does not have the expected fields (the message names the field).
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// The topology the scenario names is not valid.
    #[error("the scenario's topology: {0}")]
    Topology(String),
    /// A field's value contradicts the topology or the rest of the scenario.
    #[error("{path}: {field}: {message}")]
    Invalid { path: String, field: String, message: String },
    /// The results could not be written.
    #[error("{path}: cannot write the results: {message}")]
    Write { path: String, message: String },
}

/// How many threads a simulation uses unless told: one per processor this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs an already loaded scenario with `seed` on `threads` threads (the outcome does not depend on how
/// many); `name` labels the summary. `progress`, when given, is called with (simulated now, simulated end)
/// about every simulated second.
pub fn run(
    name: &str,
    scenario: &Scenario,
    topology: &Topology,
    seed: u64,
    threads: usize,
    progress: Option<&mut dyn FnMut(Micros, Micros)>,
) -> (Summary, Outcome) {
    let engine = engine::Engine::new(scenario, topology, seed).with_threads(threads);
    // The simulated nodes' relays log their decisions as live nodes do; thousands of them would bury the
    // summary.
    let outcome = tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || match progress {
        Some(progress) => engine.with_progress(progress).run(),
        None => engine.run(),
    });
    (Summary::new(name, seed, scenario, &outcome), outcome)
}

/// Loads the scenario at `path`, runs it (with `seed` instead of the scenario's when given, on `threads`
/// threads) and, when `out` is given, writes `out/summary.json`, `out/latency-cdf.svg` and `out/fault-N.svg`
/// for the first faults.
pub fn run_file(
    path: &Path,
    seed: Option<u64>,
    threads: usize,
    out: Option<&Path>,
    progress: Option<&mut dyn FnMut(Micros, Micros)>,
) -> Result<Summary, SimError> {
    let (scenario, topology) = Scenario::load(path)?;
    let name = path.file_stem().map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
    let (summary, outcome) = run(&name, &scenario, &topology, seed.unwrap_or(scenario.seed), threads, progress);
    if let Some(dir) = out {
        let write = |file: &Path, text: &str| {
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(file, text))
                .map_err(|e| SimError::Write { path: file.display().to_string(), message: e.to_string() })
        };
        write(&dir.join("summary.json"), &summary.to_json())?;
        let faults: Vec<String> = summary.faults.iter().map(|f| format!("{} {}", f.kind, f.target)).collect();
        for (file, svg) in plot::plots(&name, &outcome, &faults) {
            write(&dir.join(file), &svg)?;
        }
    }
    Ok(summary)
}
