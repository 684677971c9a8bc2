//! `[director]`: a control replica's viewer steering (HTTP redirects and DNS answers to the best edge).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sections::problem;
use crate::id::NodeId;
use crate::topology::{CheckError, Role, Topology};

/// The scheme of the URLs the director redirects viewers to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeScheme {
    /// `http://` (the default).
    #[default]
    Http,
    /// `https://`, for edges that serve viewers over TLS (`[edge.tls]`).
    Https,
}

impl EdgeScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeScheme::Http => "http",
            EdgeScheme::Https => "https",
        }
    }
}

/// Viewer steering. Off unless `listen` or `dns_listen` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectorConfig {
    /// The address of the HTTP director, which answers `GET /live/{stream}/{file}` with a 302 to the best
    /// edge. Off when absent.
    pub listen: Option<SocketAddr>,
    /// The region of viewers that no coverage zone holds: a topology region, required when the director is
    /// on. Put the director where most such viewers are, as they reached it.
    pub region: Option<String>,
    /// The coverage-zone file (one `NETWORK/LENGTH REGION` a line; see the README), relative to the config
    /// file's folder. Without one, every viewer is taken to be in `region`.
    pub coverage_zones: Option<PathBuf>,
    /// Viewers an edge may serve before the director sends new ones elsewhere (default 10000).
    pub default_capacity: u32,
    /// Per-edge viewer capacity, instead of `default_capacity`, by node id (e.g. `{ edge-ap = 500 }`).
    pub capacity: BTreeMap<NodeId, u32>,
    /// How often the director checks each edge's `/healthz`, in ms (default 200; 50 to 10000). An edge
    /// that fails a check is not chosen until one passes, so a dead edge leaves within about this interval
    /// plus `health_timeout_ms`.
    pub health_interval_ms: u64,
    /// How long a health check may take before it counts as failed, in ms (default 500; 50 to 10000).
    pub health_timeout_ms: u64,
    /// The scheme of the edge URLs viewers are sent to (`http`, the default, or `https`).
    pub edge_scheme: EdgeScheme,
    /// The UDP address of the DNS server answering for `dns_name` with the best edge's address. Off when
    /// absent.
    pub dns_listen: Option<SocketAddr>,
    /// The host name viewers resolve (e.g. `live.example.com`); required with `dns_listen`.
    pub dns_name: Option<String>,
    /// The TTL of DNS answers, in s (default 30; 1 to 30: a resolver must ask again soon after an edge
    /// dies or fills).
    pub dns_ttl_s: u32,
}

impl Default for DirectorConfig {
    fn default() -> Self {
        Self {
            listen: None,
            region: None,
            coverage_zones: None,
            default_capacity: 10_000,
            capacity: BTreeMap::new(),
            health_interval_ms: 200,
            health_timeout_ms: 500,
            edge_scheme: EdgeScheme::Http,
            dns_listen: None,
            dns_name: None,
            dns_ttl_s: 30,
        }
    }
}

impl DirectorConfig {
    /// The longest TTL accepted (s).
    pub const MAX_TTL_S: u32 = 30;

    /// Whether any part of the director is on.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.dns_listen.is_some()
    }

    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }

    pub fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.health_timeout_ms)
    }

    /// The capacity of `edge`.
    pub fn capacity_of(&self, edge: &NodeId) -> u32 {
        self.capacity.get(edge).copied().unwrap_or(self.default_capacity)
    }

    /// The same section with a relative `coverage_zones` taken from `base` (the config file's folder).
    pub fn resolve(self, base: &Path) -> Self {
        Self { coverage_zones: self.coverage_zones.map(|p| base.join(p)), ..self }
    }

    /// The checks of the section, and against the topology when there is one: every problem, each naming
    /// its field. The coverage-zone file is read here too, so a bad line stops a start.
    pub fn problems(&self, topology: Option<&Topology>) -> Vec<CheckError> {
        let mut problems = Vec::new();
        if !self.enabled() {
            return problems;
        }
        for (field, ms) in [
            ("director.health_interval_ms", self.health_interval_ms),
            ("director.health_timeout_ms", self.health_timeout_ms),
        ] {
            if !(50..=10_000).contains(&ms) {
                problems.push(problem(field, format!("{ms} ms is out of range (50 to 10000)")));
            }
        }
        if self.default_capacity == 0 {
            problems.push(problem("director.default_capacity", "0 would send no viewer to any edge"));
        }
        for (edge, capacity) in &self.capacity {
            if *capacity == 0 {
                problems.push(problem(format!("director.capacity.{edge}"), "0 would send no viewer to it"));
            }
        }
        if !(1..=Self::MAX_TTL_S).contains(&self.dns_ttl_s) {
            problems.push(problem("director.dns_ttl_s", format!("{} is out of range (1 to 30 s)", self.dns_ttl_s)));
        }
        match (&self.dns_listen, &self.dns_name) {
            (Some(_), None) => {
                problems.push(problem("director.dns_name", "missing: the name the DNS server answers for"))
            }
            (_, Some(name)) if crate::director::dns::valid_name(name).is_err() => problems.push(problem(
                "director.dns_name",
                format!("{name:?} is not a host name (letters, digits, '-', labels apart by '.')"),
            )),
            _ => {}
        }
        for (field, addr) in [("director.listen", self.listen), ("director.dns_listen", self.dns_listen)] {
            if addr.is_some_and(|a| a.port() == 0) {
                problems.push(problem(field, "port 0 would bind a random port that viewers cannot know"));
            }
        }
        let Some(region) = &self.region else {
            problems.push(problem("director.region", "missing: the region of viewers outside every coverage zone"));
            return problems;
        };
        let Some(topology) = topology else {
            return problems;
        };
        if topology.region(region).is_none() {
            problems.push(problem("director.region", format!("{region:?} is not a region of the topology")));
        }
        for edge in self.capacity.keys() {
            if !topology.node(edge).is_some_and(|n| n.has_role(Role::Edge)) {
                problems.push(problem(format!("director.capacity.{edge}"), "not an edge of the topology"));
            }
        }
        if !topology.nodes.iter().any(|n| n.has_role(Role::Edge)) {
            problems.push(problem("director", "the topology has no edge to send viewers to"));
        }
        if let Some(file) = &self.coverage_zones {
            if let Err(e) = crate::director::load_zones(file, topology) {
                problems.push(problem("director.coverage_zones", e.to_string()));
            }
        }
        problems
    }
}
