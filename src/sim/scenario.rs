//! Scenario files (`simulations/*.toml`): a topology (a file, or generated from one), link impairments, probe
//! and control-plane settings, a workload, a fault schedule, a seed and the outcome the scenario expects.
//!
//! Parsing is serde with `deny_unknown_fields`, so a misspelt key is an error that names it;
//! [`Scenario::validate`] then checks what serde cannot (node names against the topology, times inside the
//! run) and names the field of every problem. Generated parts (a `[generate]` topology, a
//! `[workload.generate]` stream set, `[random_faults]`) are expanded at load time from the file's own seed, so
//! `--seed` changes the jitter and loss drawn during the run, not the mesh or the workload.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::generate::Generate;
use super::SimError;
use crate::config::ProbesConfig;
use crate::id::{NodeId, StreamName};
use crate::topology::{Role, Topology};

/// One simulation run's description, as read from its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The topology file, relative to the scenario file; with `[generate]`, the base the mesh is generated
    /// from.
    pub topology: PathBuf,
    /// A mesh generated from `topology` instead of `topology` itself.
    #[serde(default)]
    pub generate: Option<Generate>,
    /// Simulated time, in seconds.
    pub duration_s: u64,
    /// The RNG seed (jitter, loss; and, from the file only, what is generated); `--seed` overrides it for the
    /// run.
    pub seed: u64,
    /// Impairments every link has, on top of its topology latency.
    #[serde(default)]
    pub links: LinkDefaults,
    /// How the nodes probe their links.
    #[serde(default)]
    pub probes: ProbesConfig,
    /// How often the control plane recomputes and how long its tables take to reach the nodes.
    #[serde(default)]
    pub control: Control,
    /// The live streams and who watches them.
    pub workload: Workload,
    /// What happens when, in time order or not.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Faults drawn at random (from the file's seed), added to `faults`.
    #[serde(default)]
    pub random_faults: Option<RandomFaults>,
    /// What the scenario promises; tests check it.
    #[serde(default)]
    pub expect: Expect,
}

/// Link impairments shared by every link.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkDefaults {
    /// Each one-way crossing adds a delay drawn uniformly from `0..jitter_ms`.
    pub jitter_ms: f64,
    /// Fraction of packets each one-way crossing loses, 0.0 to 1.0.
    pub loss: f64,
    /// Each link's capacity in each direction, in Mbit/s; objects queue behind each other on a link that is
    /// busy. 0 means unlimited (no serialization delay, no queueing).
    pub bandwidth_mbps: f64,
}

impl Default for LinkDefaults {
    fn default() -> Self {
        Self { jitter_ms: 1.0, loss: 0.0, bandwidth_mbps: 0.0 }
    }
}

/// The control plane's timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    /// How often it recomputes from the latest reports, in ms (the live control plane: 1,000).
    pub recompute_ms: u64,
    /// From a recomputation to its tables being in force at every node, in ms.
    pub push_delay_ms: u64,
}

impl Default for Control {
    fn default() -> Self {
        Self { recompute_ms: 1_000, push_delay_ms: 50 }
    }
}

/// The streams the origins emit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// When the origins start emitting, in seconds: the time the probes and the first route tables need.
    #[serde(default = "default_start_s")]
    pub start_s: u64,
    /// An object delivered later than this after its origin emitted it counts as late, in ms.
    #[serde(default = "default_late_ms")]
    pub late_ms: u64,
    /// The streams.
    #[serde(default)]
    pub streams: Vec<StreamSpec>,
    /// Streams drawn at random (from the file's seed), added to `streams`.
    #[serde(default)]
    pub generate: Option<GeneratedStreams>,
}

fn default_start_s() -> u64 {
    5
}

fn default_late_ms() -> u64 {
    1_000
}

/// One live stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// The stream's name.
    pub name: StreamName,
    /// The node it enters the mesh at.
    pub origin: NodeId,
    /// One object (a segment or an LL-HLS part) every `segment_ms`.
    pub segment_ms: u64,
    /// The stream's bitrate in kbit/s: each object is `bitrate × segment` long.
    #[serde(default = "default_bitrate_kbps")]
    pub bitrate_kbps: u64,
    /// The edges with viewers; every edge-role node but the origin when absent.
    #[serde(default)]
    pub edges: Option<Vec<NodeId>>,
}

fn default_bitrate_kbps() -> u64 {
    4_000
}

/// Many streams at once: origins taken in turn from the origin-role nodes, edges drawn from the edge-role
/// nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedStreams {
    /// How many streams.
    pub streams: usize,
    /// How many edges watch each stream (all edges when there are fewer).
    pub edges_per_stream: usize,
    /// One object every `segment_ms`.
    pub segment_ms: u64,
    /// Each stream's bitrate in kbit/s.
    #[serde(default = "default_bitrate_kbps")]
    pub bitrate_kbps: u64,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The link `a`—`b` stops carrying anything.
    LinkDown,
    /// The link `a`—`b` carries traffic again.
    LinkUp,
    /// The link `a`—`b` goes down and comes back every `period_s` until `until_s`.
    Flap,
    /// Node `a` stops: it forwards, answers and reports nothing.
    NodeCrash,
    /// Node `a` starts again, with fresh link estimators.
    NodeRecover,
    /// An operator drains node `a`: the control plane routes around it where another path exists.
    Drain,
    /// Node `a` is back in service.
    Undrain,
    /// The link `a`—`b`'s one-way latency becomes `value` ms.
    Latency,
    /// The link `a`—`b` loses the share `value` (0 to 1) of its packets each way.
    Loss,
    /// Every link between `region` and the rest of the mesh goes down.
    Partition,
    /// Every link between `region` and the rest of the mesh comes back.
    Heal,
    /// The control plane stops: no recomputation, no new tables; nodes keep theirs.
    ControlDown,
    /// The control plane is back.
    ControlUp,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::LinkDown => "link_down",
            FaultKind::LinkUp => "link_up",
            FaultKind::Flap => "flap",
            FaultKind::NodeCrash => "node_crash",
            FaultKind::NodeRecover => "node_recover",
            FaultKind::Drain => "drain",
            FaultKind::Undrain => "undrain",
            FaultKind::Latency => "latency",
            FaultKind::Loss => "loss",
            FaultKind::Partition => "partition",
            FaultKind::Heal => "heal",
            FaultKind::ControlDown => "control_down",
            FaultKind::ControlUp => "control_up",
        }
    }

    fn needs_link(self) -> bool {
        matches!(self, FaultKind::LinkDown | FaultKind::LinkUp | FaultKind::Flap | FaultKind::Latency | FaultKind::Loss)
    }

    fn needs_node(self) -> bool {
        matches!(self, FaultKind::NodeCrash | FaultKind::NodeRecover | FaultKind::Drain | FaultKind::Undrain)
    }

    fn needs_region(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::Heal)
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, in seconds (fractions allowed).
    pub at_s: f64,
    pub kind: FaultKind,
    /// The node (`node_crash`, `node_recover`, `drain`, `undrain`) or one end of the link (link faults).
    #[serde(default)]
    pub a: Option<NodeId>,
    /// The other end of the link (link faults only).
    #[serde(default)]
    pub b: Option<NodeId>,
    /// The region (`partition`, `heal`).
    #[serde(default)]
    pub region: Option<String>,
    /// The new one-way latency in ms (`latency`), or the share of packets lost each way, 0 to 1 (`loss`).
    #[serde(default)]
    pub value: Option<f64>,
    /// How long the link stays down, then up, in seconds (`flap` only).
    #[serde(default)]
    pub period_s: Option<f64>,
    /// When the flapping ends with the link up, in seconds (`flap` only).
    #[serde(default)]
    pub until_s: Option<f64>,
}

impl Fault {
    /// What the fault hits, for people: `a-b`, the node, the region, or `control`.
    pub fn target(&self) -> String {
        match (&self.a, &self.b, &self.region) {
            (Some(a), Some(b), _) => format!("{a}-{b}"),
            (Some(a), None, _) => a.to_string(),
            (None, _, Some(region)) => region.clone(),
            _ => "control".into(),
        }
    }

    /// The time in µs.
    pub fn at_us(&self) -> u64 {
        (self.at_s * 1e6).round() as u64
    }
}

/// Faults drawn at random over the run: link failures, node crashes and congested links, each repaired after
/// `repair_s`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFaults {
    /// How many links fail (each at a random time, on a random link).
    #[serde(default)]
    pub link_failures: usize,
    /// How many relay or edge nodes crash (never an origin).
    #[serde(default)]
    pub node_crashes: usize,
    /// How many links congest: their latency is multiplied by `congestion_factor`, then restored.
    #[serde(default)]
    pub congestions: usize,
    /// How much slower a congested link is.
    #[serde(default = "default_congestion_factor")]
    pub congestion_factor: f64,
    /// How long a failed link or crashed node stays so, in seconds.
    pub repair_s: f64,
    /// Faults fall in `from_s .. duration_s - repair_s`.
    #[serde(default = "default_random_from_s")]
    pub from_s: f64,
}

fn default_random_from_s() -> f64 {
    60.0
}

fn default_congestion_factor() -> f64 {
    3.0
}

/// The outcome a scenario states, checked by its test.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expect {
    /// Every fault's reroute time is at most this, in ms.
    pub reroute_within_ms: u64,
}

impl Default for Expect {
    fn default() -> Self {
        Self { reroute_within_ms: 2_000 }
    }
}

/// The longest run: 30 days (simulated time is kept in microseconds).
const MAX_DURATION_S: u64 = 30 * 86_400;
/// The longest latency, jitter, segment, delay or interval a scenario may give: a minute, beyond any link.
const MAX_MS: u64 = 60_000;
/// The highest bitrate of one stream: 1 Gbit/s.
const MAX_BITRATE_KBPS: u64 = 1_000_000;
/// A link's capacity, when limited: from 1 Mbit/s (below it a run of a day's objects queues past the
/// simulator's clock) to 1 Tbit/s.
const BANDWIDTH_MBPS: std::ops::RangeInclusive<f64> = 1.0..=1_000_000.0;
/// The shortest period of anything that repeats (probes, recomputations, flaps), in ms: one of microseconds
/// would schedule millions of events a second.
const MIN_PERIOD_MS: u64 = 10;
/// The largest mesh a scenario may generate; the scale scenario has 9,996 nodes and about 40,000 links.
const MAX_NODES: u64 = 100_000;
const MAX_LINKS: u64 = 2_000_000;
/// At most this many streams, and (stream, edge) pairs, each of which the simulator tracks.
const MAX_STREAMS: usize = 10_000;
const MAX_PAIRS: u64 = 10_000_000;
/// At most this many faults drawn at random, of each kind.
const MAX_RANDOM_FAULTS: usize = 100_000;
/// At most this many link changes scheduled by all flaps together (each is an event held from its flap's
/// start).
const MAX_FLAP_CHANGES: u64 = 1_000_000;
/// The most a congested link's latency may be multiplied by.
const MAX_CONGESTION_FACTOR: f64 = 100.0;

impl Scenario {
    /// Reads a scenario and the topology it names (or generates), expands what is generated, and checks them
    /// together.
    pub fn load(path: &Path) -> Result<(Scenario, Topology), SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Read { path: path.display().to_string(), message: e.to_string() })?;
        let scenario: Scenario = toml::from_str(&text)
            .map_err(|e| SimError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        let invalid =
            |(field, message): (String, String)| SimError::Invalid { path: path.display().to_string(), field, message };
        let topo_path = path.parent().unwrap_or(Path::new(".")).join(&scenario.topology);
        let mut topology = Topology::load(&topo_path).map_err(|e| SimError::Topology(e.to_string()))?;
        if let Some(generate) = &scenario.generate {
            generate.validate().map_err(|(f, m)| invalid((format!("generate.{f}"), m)))?;
            let (nodes, links) = generate.size_bound(&topology);
            if nodes > MAX_NODES || links > MAX_LINKS {
                return Err(invalid((
                    "generate.nodes_per_region".into(),
                    format!(
                        "would make {nodes} nodes and up to {links} links from {} regions; at most {MAX_NODES} nodes \
                         and {MAX_LINKS} links",
                        topology.regions.len()
                    ),
                )));
            }
            topology = generate.build(&topology, scenario.seed);
        }
        let scenario = scenario.expand(&topology).map_err(invalid)?.validate(&topology).map_err(invalid)?;
        Ok((scenario, topology))
    }

    /// Adds the generated streams and random faults to the listed ones.
    fn expand(mut self, topology: &Topology) -> Result<Self, (String, String)> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x005e_ed0f_5ce7_a210);
        if let Some(spec) = self.workload.generate.clone() {
            let field = |f: &str| format!("workload.generate.{f}");
            let origins: Vec<&NodeId> =
                topology.nodes.iter().filter(|n| n.has_role(Role::Origin)).map(|n| &n.id).collect();
            let edges: Vec<&NodeId> = topology.nodes.iter().filter(|n| n.has_role(Role::Edge)).map(|n| &n.id).collect();
            if origins.is_empty() {
                return Err((field("streams"), "the topology has no origin-role node".into()));
            }
            if spec.streams == 0 || spec.edges_per_stream == 0 {
                return Err((field("streams"), "streams and edges_per_stream must be more than 0".into()));
            }
            if spec.streams + self.workload.streams.len() > MAX_STREAMS {
                return Err((field("streams"), format!("{} streams in all; at most {MAX_STREAMS}", spec.streams)));
            }
            for i in 0..spec.streams {
                let origin = origins[i % origins.len()].clone();
                let mut watching: Vec<NodeId> = edges
                    .choose_multiple(&mut rng, spec.edges_per_stream.min(edges.len()))
                    .map(|&e| e.clone())
                    .collect();
                watching.sort();
                let name = StreamName::new(format!("gen-{i:04}")).map_err(|e| (field("streams"), e.to_string()))?;
                self.workload.streams.push(StreamSpec {
                    name,
                    origin,
                    segment_ms: spec.segment_ms,
                    bitrate_kbps: spec.bitrate_kbps,
                    edges: Some(watching),
                });
            }
        }
        if let Some(spec) = self.random_faults.clone() {
            let field = |f: &str| format!("random_faults.{f}");
            let last = self.duration_s as f64 - spec.repair_s;
            if !(spec.repair_s > 0.0 && spec.from_s >= 0.0 && spec.from_s < last) {
                return Err((
                    field("repair_s"),
                    format!(
                        "faults from {} s, repaired after {} s, do not fit in {} s",
                        spec.from_s, spec.repair_s, self.duration_s
                    ),
                ));
            }
            for (name, count) in [
                ("link_failures", spec.link_failures),
                ("node_crashes", spec.node_crashes),
                ("congestions", spec.congestions),
            ] {
                if count > MAX_RANDOM_FAULTS {
                    return Err((field(name), format!("must be at most {MAX_RANDOM_FAULTS}, not {count}")));
                }
            }
            let crashable: Vec<&NodeId> =
                topology.nodes.iter().filter(|n| !n.has_role(Role::Origin)).map(|n| &n.id).collect();
            if topology.links.is_empty() && spec.link_failures + spec.congestions > 0 {
                return Err((field("link_failures"), "the topology has no link".into()));
            }
            if crashable.is_empty() && spec.node_crashes > 0 {
                return Err((field("node_crashes"), "the topology has no node but origins".into()));
            }
            let round = |t: f64| (t * 1000.0).round() / 1000.0;
            let fault = |at_s: f64, kind, a: &NodeId, b: Option<&NodeId>| Fault {
                at_s,
                kind,
                a: Some(a.clone()),
                b: b.cloned(),
                region: None,
                value: None,
                period_s: None,
                until_s: None,
            };
            for _ in 0..spec.link_failures {
                let at = round(rng.gen_range(spec.from_s..last));
                let link = &topology.links[rng.gen_range(0..topology.links.len())];
                self.faults.push(fault(at, FaultKind::LinkDown, &link.a, Some(&link.b)));
                self.faults.push(fault(round(at + spec.repair_s), FaultKind::LinkUp, &link.a, Some(&link.b)));
            }
            if !(spec.congestion_factor > 0.0 && spec.congestion_factor <= MAX_CONGESTION_FACTOR) {
                return Err((
                    field("congestion_factor"),
                    format!("must be more than 0 and at most {MAX_CONGESTION_FACTOR}, not {}", spec.congestion_factor),
                ));
            }
            for _ in 0..spec.congestions {
                let at = round(rng.gen_range(spec.from_s..last));
                let link = &topology.links[rng.gen_range(0..topology.links.len())];
                let mut slow = fault(at, FaultKind::Latency, &link.a, Some(&link.b));
                slow.value = Some(link.latency_ms * spec.congestion_factor);
                let mut back = fault(round(at + spec.repair_s), FaultKind::Latency, &link.a, Some(&link.b));
                back.value = Some(link.latency_ms);
                self.faults.push(slow);
                self.faults.push(back);
            }
            for _ in 0..spec.node_crashes {
                let at = round(rng.gen_range(spec.from_s..last));
                let node = crashable[rng.gen_range(0..crashable.len())];
                self.faults.push(fault(at, FaultKind::NodeCrash, node, None));
                self.faults.push(fault(round(at + spec.repair_s), FaultKind::NodeRecover, node, None));
            }
        }
        Ok(self)
    }

    /// Checks what serde cannot: names against `topology`, times and figures in range. The error names the
    /// field. The ranges keep every figure within what the simulator's microsecond clock and its queues hold,
    /// so no scenario wraps a time or schedules events without bound.
    pub fn validate(self, topology: &Topology) -> Result<Self, (String, String)> {
        let known = |field: String, n: &NodeId| -> Result<(), (String, String)> {
            match topology.node(n) {
                Some(_) => Ok(()),
                None => Err((field, format!("\"{n}\" is not a node of the topology"))),
            }
        };
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        if !(1..=MAX_DURATION_S).contains(&self.duration_s) {
            return fail(
                "duration_s",
                format!("must be from 1 to {MAX_DURATION_S} s (30 days), not {}", self.duration_s),
            );
        }
        let ms_in_range = |field: &str, ms: u64| match ms <= MAX_MS {
            true => Ok(()),
            false => Err((field.to_owned(), format!("must be at most {MAX_MS} ms, not {ms}"))),
        };
        ms_in_range("workload.late_ms", self.workload.late_ms)?;
        ms_in_range("control.recompute_ms", self.control.recompute_ms)?;
        ms_in_range("control.push_delay_ms", self.control.push_delay_ms)?;
        if self.workload.start_s >= self.duration_s {
            return fail("workload.start_s", format!("must be before the end ({} s)", self.duration_s));
        }
        if !(0.0..=1.0).contains(&self.links.loss) {
            return fail("links.loss", format!("must be from 0.0 to 1.0, not {}", self.links.loss));
        }
        if !(0.0..=MAX_MS as f64).contains(&self.links.jitter_ms) {
            return fail("links.jitter_ms", format!("must be from 0 to {MAX_MS} ms, not {}", self.links.jitter_ms));
        }
        if !(self.links.bandwidth_mbps == 0.0 || BANDWIDTH_MBPS.contains(&self.links.bandwidth_mbps)) {
            return fail(
                "links.bandwidth_mbps",
                format!(
                    "must be 0 (unlimited) or from {} to {} Mbit/s, not {}",
                    BANDWIDTH_MBPS.start(),
                    BANDWIDTH_MBPS.end(),
                    self.links.bandwidth_mbps
                ),
            );
        }
        if let Err(problems) = self.probes.validate() {
            let field = problems.first().map_or("probes".to_owned(), |e| e.field.clone());
            return fail(&field, problems.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; "));
        }
        if let Err(e) = self.probes.config().validate() {
            return fail("probes", e.to_string());
        }
        for (field, ms) in [
            ("probes.fast_ms", self.probes.fast_ms),
            ("probes.slow_ms", self.probes.slow_ms),
            ("control.recompute_ms", self.control.recompute_ms),
        ] {
            if ms < MIN_PERIOD_MS {
                return fail(field, format!("must be at least {MIN_PERIOD_MS} ms, not {ms}"));
            }
        }
        if self.workload.streams.is_empty() {
            return fail("workload.streams", "needs at least one stream (listed or generated)".into());
        }
        if self.workload.streams.len() > MAX_STREAMS {
            return fail("workload.streams", format!("{} streams; at most {MAX_STREAMS}", self.workload.streams.len()));
        }
        let mut names = std::collections::HashSet::new();
        let mut pairs = 0u64;
        for (i, s) in self.workload.streams.iter().enumerate() {
            let at = format!("workload.streams[{i}]");
            if !names.insert(&s.name) {
                return fail(&format!("{at}.name"), format!("\"{}\" is the name of an earlier stream", s.name));
            }
            known(format!("{at}.origin"), &s.origin)?;
            if topology.node(&s.origin).is_some_and(|n| !n.has_role(Role::Origin)) {
                return fail(&format!("{at}.origin"), format!("\"{}\" does not have the origin role", s.origin));
            }
            if !(1..=MAX_MS).contains(&s.segment_ms) {
                return fail(
                    &format!("{at}.segment_ms"),
                    format!("must be from 1 to {MAX_MS} ms, not {}", s.segment_ms),
                );
            }
            if !(1..=MAX_BITRATE_KBPS).contains(&s.bitrate_kbps) {
                return fail(
                    &format!("{at}.bitrate_kbps"),
                    format!("must be from 1 to {MAX_BITRATE_KBPS} kbit/s, not {}", s.bitrate_kbps),
                );
            }
            if s.edges.as_ref().is_some_and(Vec::is_empty) {
                return fail(
                    &format!("{at}.edges"),
                    "is empty: name the edges that watch, or leave it out for all".into(),
                );
            }
            let mut watching = std::collections::HashSet::new();
            for (j, e) in s.edges.iter().flatten().enumerate() {
                known(format!("{at}.edges[{j}]"), e)?;
                if !watching.insert(e) {
                    return fail(&format!("{at}.edges[{j}]"), format!("\"{e}\" is listed twice"));
                }
                if topology.node(e).is_some_and(|n| !n.has_role(Role::Edge)) {
                    return fail(&format!("{at}.edges[{j}]"), format!("\"{e}\" does not have the edge role"));
                }
            }
            pairs += s.edges.as_ref().map_or(topology.nodes.len(), Vec::len) as u64;
            if pairs > MAX_PAIRS {
                return fail(
                    &format!("{at}.edges"),
                    format!("the streams' (stream, edge) pairs pass {MAX_PAIRS} here, more than the simulator holds"),
                );
            }
        }
        let mut flap_changes = 0u64;
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("faults[{i}]");
            if !(f.at_s >= 0.0 && f.at_s < self.duration_s as f64) {
                return fail(&format!("{at}.at_s"), format!("must be from 0 to {} s, not {}", self.duration_s, f.at_s));
            }
            let kind = f.kind.as_str();
            match (&f.a, f.kind.needs_link() || f.kind.needs_node()) {
                (Some(a), true) => known(format!("{at}.a"), a)?,
                (None, true) => return fail(&format!("{at}.a"), format!("a {kind} needs a")),
                (Some(_), false) => return fail(&format!("{at}.a"), format!("a {kind} takes no a")),
                (None, false) => {}
            }
            match (&f.b, f.kind.needs_link()) {
                (Some(b), true) => {
                    known(format!("{at}.b"), b)?;
                    let a = f.a.as_ref().expect("checked above");
                    if !topology.links.iter().any(|l| (&l.a == a && &l.b == b) || (&l.a == b && &l.b == a)) {
                        return fail(&format!("{at}.b"), format!("the topology has no link {a}—{b}"));
                    }
                }
                (None, true) => return fail(&format!("{at}.b"), format!("a {kind} needs both ends a and b")),
                (Some(_), false) => return fail(&format!("{at}.b"), format!("a {kind} names no b")),
                (None, false) => {}
            }
            match (&f.region, f.kind.needs_region()) {
                (Some(r), true) if topology.regions.iter().any(|x| &x.name == r) => {}
                (Some(r), true) => {
                    return fail(&format!("{at}.region"), format!("\"{r}\" is not a region of the topology"))
                }
                (None, true) => return fail(&format!("{at}.region"), format!("a {kind} needs region")),
                (Some(_), false) => return fail(&format!("{at}.region"), format!("a {kind} takes no region")),
                (None, false) => {}
            }
            match (f.kind, f.value) {
                (FaultKind::Latency, Some(v)) if v > 0.0 && v <= MAX_MS as f64 => {}
                (FaultKind::Latency, _) => {
                    return fail(
                        &format!("{at}.value"),
                        format!("a latency fault needs value, the new latency in ms (above 0, at most {MAX_MS})"),
                    )
                }
                (FaultKind::Loss, Some(v)) if (0.0..=1.0).contains(&v) => {}
                (FaultKind::Loss, _) => {
                    return fail(
                        &format!("{at}.value"),
                        "a loss fault needs value, the share of packets lost each way (0 to 1)".into(),
                    )
                }
                (_, Some(_)) => {
                    return fail(&format!("{at}.value"), "only a latency or loss fault takes a value".into())
                }
                (_, None) => {}
            }
            // A flap faster than the probes cannot be seen, and one of microseconds would schedule millions of
            // events.
            let min_period_s = self.probes.fast_ms.max(MIN_PERIOD_MS) as f64 / 1000.0;
            match (f.kind, f.period_s, f.until_s) {
                (FaultKind::Flap, Some(p), Some(u))
                    if p >= min_period_s && u > f.at_s && u <= self.duration_s as f64 =>
                {
                    flap_changes += ((u - f.at_s) / p).ceil() as u64;
                    if flap_changes > MAX_FLAP_CHANGES {
                        return fail(
                            &format!("{at}.until_s"),
                            format!(
                                "the flaps change their links more than {MAX_FLAP_CHANGES} times in all by here \
                                 (a longer period_s or an earlier until_s)"
                            ),
                        );
                    }
                }
                (FaultKind::Flap, _, _) => {
                    return fail(
                        &format!("{at}.period_s"),
                        format!(
                            "a flap needs period_s (at least the fast probe interval, {min_period_s} s) and until_s \
                             (after at_s, within the run)"
                        ),
                    )
                }
                (_, None, None) => {}
                _ => return fail(&format!("{at}.period_s"), "only a flap takes period_s and until_s".into()),
            }
        }
        Ok(self)
    }

    /// Every stream's edges with viewers: the listed ones, or every edge-role node but the origin.
    pub fn edges_of(&self, stream: &StreamSpec, topology: &Topology) -> Vec<NodeId> {
        match &stream.edges {
            Some(edges) => edges.iter().filter(|e| **e != stream.origin).cloned().collect(),
            None => topology
                .nodes
                .iter()
                .filter(|n| n.has_role(Role::Edge) && n.id != stream.origin)
                .map(|n| n.id.clone())
                .collect(),
        }
    }
}
