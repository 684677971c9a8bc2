//! Topology files: the regions, nodes and configured links of a mesh.
//!
//! A topology file (TOML, see `topology/demo.toml`) is the operator's description of the mesh: where the
//! regions are, which node runs which roles (origin, relay, edge) at which mesh and HTTP addresses, and which
//! node pairs are linked, with a configured one-way latency. [`Topology::load`] reads and checks it, reporting
//! every problem at once with the field it is about. Nodes use it to find their neighbours, the control plane
//! and the simulator to build their initial link-state picture; the measured latencies that routes are made
//! from come later, from probes. This module does no routing and no networking: addresses are only resolved
//! when a caller asks ([`Address::resolve`]).

mod address;
mod check;
pub mod graphml;
mod validate;

use std::path::Path;

pub use address::{Address, AddressError};
pub(crate) use check::{join_path, one_line, parse_table, unknown_key};
pub use check::{CheckError, CheckErrors};

use crate::id::NodeId;

/// A mesh as a topology file describes it. Build one with [`Topology::load`] or [`Topology::parse`], which
/// check it; the fields are public for reading, and a topology assembled by hand is not checked.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    /// The regions that nodes are placed in.
    pub regions: Vec<Region>,
    /// The nodes, in file order.
    pub nodes: Vec<NodeSpec>,
    /// The configured links; undirected, and the mesh may be partial.
    pub links: Vec<LinkSpec>,
    /// The control-plane replicas nodes report to (none: nodes route on the configured latencies).
    pub controls: Vec<ControlSpec>,
}

/// A control-plane replica: its id (the name its certificate carries), the QUIC address nodes connect to,
/// and the HTTP address of its operator API.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSpec {
    /// The replica's id; distinct from every node id.
    pub id: NodeId,
    /// QUIC address nodes report to.
    pub mesh: Address,
    /// HTTP address of the operator API.
    pub http: Address,
}

/// A named place on the map. Every field is required: a region without coordinates cannot be drawn or
/// used to estimate distances.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// The region's name, unique in the file (e.g. `eu-west`, `eastus`).
    pub name: String,
    /// Latitude in degrees, -90 to 90.
    pub lat: f64,
    /// Longitude in degrees, -180 to 180.
    pub lon: f64,
}

/// What a node does in the mesh.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts publishers' uploads (HTTP PUT) and is the root of their streams' trees.
    Origin,
    /// Forwards and caches objects between neighbours.
    Relay,
    /// Serves viewers over HTTP.
    Edge,
}

impl Role {
    /// The role as written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Origin => "origin",
            Role::Relay => "relay",
            Role::Edge => "edge",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node of the mesh. Every field is required: a node has no sensible default id, place or address.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's id, unique in the file; its certificate carries it as its DNS name.
    pub id: NodeId,
    /// The name of the region the node is in.
    pub region: String,
    /// The node's roles, at least one, each once.
    pub roles: Vec<Role>,
    /// The QUIC address its neighbours connect to.
    pub mesh: Address,
    /// The HTTP address: ingest for origins, viewers for edges, `/metrics` for all.
    pub http: Address,
}

impl NodeSpec {
    /// Whether the node has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A configured link between two nodes. Links are undirected: one entry serves both directions.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One end.
    pub a: NodeId,
    /// The other end.
    pub b: NodeId,
    /// The configured one-way latency in milliseconds, finite and above 0. Routes use measured latency once
    /// probes have some; this is the starting point and what the demo's impairment layer emulates.
    pub latency_ms: f64,
}

impl LinkSpec {
    /// The other end of the link as seen from `id`, if `id` is an end.
    pub fn other_end(&self, id: &NodeId) -> Option<&NodeId> {
        if &self.a == id {
            Some(&self.b)
        } else if &self.b == id {
            Some(&self.a)
        } else {
            None
        }
    }
}

impl Topology {
    /// Reads and validates a topology file; every problem at once.
    pub fn load(path: &Path) -> Result<Topology, CheckErrors> {
        let source = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &source),
            Err(e) => {
                let mut errors = CheckErrors::new(source);
                errors.push("", format!("cannot read the file: {e}"));
                Err(errors)
            }
        }
    }

    /// Same from text; `source` names the file in messages.
    pub fn parse(text: &str, source: &str) -> Result<Topology, CheckErrors> {
        validate::parse(text, source)
    }

    /// The node with id `id`.
    ///
    /// A linear scan: fine for loading and checking; code on a hot path keeps its own index.
    pub fn control(&self, id: &NodeId) -> Option<&ControlSpec> {
        self.controls.iter().find(|c| &c.id == id)
    }

    /// The node with this id, if any.
    pub fn node(&self, id: &NodeId) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    /// The region named `name`.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// The nodes with the origin role.
    pub fn origins(&self) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes.iter().filter(|n| n.has_role(Role::Origin))
    }

    /// The node's neighbours with the link's configured one-way latency in ms.
    ///
    /// Scans every link: fine for a node finding its few neighbours; the simulator and the control plane
    /// build an adjacency list once instead.
    pub fn neighbours<'a>(&'a self, id: &'a NodeId) -> impl Iterator<Item = (&'a NodeSpec, f64)> + 'a {
        self.links.iter().filter_map(move |l| Some((self.node(l.other_end(id)?)?, l.latency_ms)))
    }

    /// A one-line summary such as `4 nodes, 3 links, 3 regions`.
    pub fn summary(&self) -> String {
        format!("{} nodes, {} links, {} regions", self.nodes.len(), self.links.len(), self.regions.len())
    }
}

/// Light in fibre covers about 200 km per ms (two thirds of its speed in vacuum).
pub const FIBRE_KM_PER_MS: f64 = 200.0;
const EARTH_RADIUS_KM: f64 = 6_371.0;

/// The great-circle distance in km between two points given in degrees (haversine, on a sphere of the
/// Earth's mean radius): the floor under any fibre path between them.
pub fn great_circle_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Checks a topology file for `lightpath check topology FILE`: a one-line summary when it is good, else
/// every problem.
pub fn check_topology(path: &Path) -> Result<String, CheckErrors> {
    Topology::load(path).map(|t| format!("ok: {}", t.summary()))
}
