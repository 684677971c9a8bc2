//! Scenario files (`simulations/*.toml`): a topology, link impairments, a workload, a fault schedule, a seed
//! and the outcome the scenario expects.
//!
//! Parsing is serde with `deny_unknown_fields`, so a misspelt key is an error that names it;
//! [`Scenario::validate`] then checks what serde cannot (node names against the topology, times inside the
//! run) and names the field of every problem.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SimError;
use crate::id::{NodeId, StreamName};
use crate::topology::Topology;

/// One simulation run's description, as read from its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The topology file, relative to the scenario file.
    pub topology: PathBuf,
    /// Simulated time, in seconds.
    pub duration_s: u64,
    /// The RNG seed (jitter, loss); `--seed` overrides it.
    pub seed: u64,
    /// Impairments every link has, on top of its topology latency.
    #[serde(default)]
    pub links: LinkDefaults,
    /// The live streams and who watches them.
    pub workload: Workload,
    /// What happens when, in time order or not.
    #[serde(default)]
    pub faults: Vec<Fault>,
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
}

impl Default for LinkDefaults {
    fn default() -> Self {
        Self { jitter_ms: 1.0, loss: 0.0 }
    }
}

/// The streams the origins emit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// When the origins start emitting, in seconds: the time the probes and the first route tables need.
    #[serde(default = "default_start_s")]
    pub start_s: u64,
    /// The streams.
    pub streams: Vec<StreamSpec>,
}

fn default_start_s() -> u64 {
    5
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
    /// The edges with viewers; every edge-role node but the origin when absent.
    #[serde(default)]
    pub edges: Option<Vec<NodeId>>,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The link `a`—`b` stops carrying anything.
    LinkDown,
    /// The link `a`—`b` carries traffic again.
    LinkUp,
    /// Node `a` stops: it forwards, answers and reports nothing.
    NodeCrash,
    /// The link `a`—`b`'s one-way latency becomes `value` ms.
    Latency,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::LinkDown => "link_down",
            FaultKind::LinkUp => "link_up",
            FaultKind::NodeCrash => "node_crash",
            FaultKind::Latency => "latency",
        }
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, in seconds (fractions allowed).
    pub at_s: f64,
    pub kind: FaultKind,
    /// The node (`node_crash`) or one end of the link.
    pub a: NodeId,
    /// The other end of the link (link faults only).
    #[serde(default)]
    pub b: Option<NodeId>,
    /// The new one-way latency in ms (`latency` only).
    #[serde(default)]
    pub value: Option<f64>,
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

impl Scenario {
    /// Reads a scenario and the topology it names, and checks them together.
    pub fn load(path: &Path) -> Result<(Scenario, Topology), SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Read { path: path.display().to_string(), message: e.to_string() })?;
        let scenario: Scenario = toml::from_str(&text)
            .map_err(|e| SimError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        let topo_path = path.parent().unwrap_or(Path::new(".")).join(&scenario.topology);
        let topology = Topology::load(&topo_path).map_err(|e| SimError::Topology(e.to_string()))?;
        let scenario = scenario.validate(&topology).map_err(|(field, message)| SimError::Invalid {
            path: path.display().to_string(),
            field,
            message,
        })?;
        Ok((scenario, topology))
    }

    /// Checks what serde cannot: names against `topology`, times and figures in range. The error names the
    /// field.
    pub fn validate(self, topology: &Topology) -> Result<Self, (String, String)> {
        let known = |field: String, n: &NodeId| -> Result<(), (String, String)> {
            match topology.node(n) {
                Some(_) => Ok(()),
                None => Err((field, format!("\"{n}\" is not a node of the topology"))),
            }
        };
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        if self.duration_s == 0 {
            return fail("duration_s", "must be more than 0".into());
        }
        if self.workload.start_s >= self.duration_s {
            return fail("workload.start_s", format!("must be before the end ({} s)", self.duration_s));
        }
        if !(0.0..=1.0).contains(&self.links.loss) {
            return fail("links.loss", format!("must be from 0.0 to 1.0, not {}", self.links.loss));
        }
        if !(self.links.jitter_ms >= 0.0 && self.links.jitter_ms.is_finite()) {
            return fail("links.jitter_ms", format!("must be at least 0, not {}", self.links.jitter_ms));
        }
        if self.workload.streams.is_empty() {
            return fail("workload.streams", "needs at least one stream".into());
        }
        for (i, s) in self.workload.streams.iter().enumerate() {
            let at = format!("workload.streams[{i}]");
            known(format!("{at}.origin"), &s.origin)?;
            if s.segment_ms == 0 {
                return fail(&format!("{at}.segment_ms"), "must be more than 0".into());
            }
            for (j, e) in s.edges.iter().flatten().enumerate() {
                known(format!("{at}.edges[{j}]"), e)?;
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("faults[{i}]");
            if !(f.at_s >= 0.0 && f.at_s < self.duration_s as f64) {
                return fail(&format!("{at}.at_s"), format!("must be from 0 to {} s, not {}", self.duration_s, f.at_s));
            }
            known(format!("{at}.a"), &f.a)?;
            match (f.kind, &f.b) {
                (FaultKind::NodeCrash, Some(_)) => return fail(&format!("{at}.b"), "a node_crash names only a".into()),
                (FaultKind::NodeCrash, None) => {}
                (_, None) => return fail(&format!("{at}.b"), format!("a {} needs both ends a and b", f.kind.as_str())),
                (_, Some(b)) => {
                    known(format!("{at}.b"), b)?;
                    if !topology.links.iter().any(|l| (l.a == f.a && &l.b == b) || (&l.a == b && l.b == f.a)) {
                        return fail(&format!("{at}.b"), format!("the topology has no link {}—{b}", f.a));
                    }
                }
            }
            match (f.kind, f.value) {
                (FaultKind::Latency, Some(v)) if v > 0.0 && v.is_finite() => {}
                (FaultKind::Latency, _) => {
                    return fail(
                        &format!("{at}.value"),
                        "a latency fault needs value, the new latency in ms (> 0)".into(),
                    )
                }
                (_, Some(_)) => return fail(&format!("{at}.value"), "only a latency fault takes a value".into()),
                (_, None) => {}
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
                .filter(|n| n.has_role(crate::topology::Role::Edge) && n.id != stream.origin)
                .map(|n| n.id.clone())
                .collect(),
        }
    }
}
