//! From reports to route tables: the control plane's computation, with no I/O and no clock of its own.
//!
//! The measured graph holds a link when at least one end reports it up and neither end reports it down; its
//! cost is the worse of the two ends' measurements, so both directions agree. Every node gets, toward every
//! origin of the topology, the first hop of its shortest path and a loop-free alternate (RFC 5286): a
//! neighbour `N` other than the primary with `dist(N, D) < cost(N, S) + dist(S, D)`, so that traffic sent to
//! it never comes back. A node's table version is the time of its last change, so that a restarted replica's
//! tables always supersede what nodes hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::json;

use crate::id::NodeId;
use crate::routing::{Cost, Graph, RouteTable};
use crate::topology::{Role, Topology};
use crate::wire::{Report, Route, Routes};

/// Tunables of the computation.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// Extra cost per part-per-million of loss, in microseconds (1% loss costs 10 ms by default).
    pub loss_penalty_us_per_ppm: u64,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self { loss_penalty_us_per_ppm: 1 }
    }
}

/// The control plane's current tables.
pub struct Plan {
    settings: PlanSettings,
    origins: Vec<NodeId>,
    tables: BTreeMap<NodeId, Routes>,
}

impl Plan {
    pub fn new(topology: &Topology, settings: PlanSettings) -> Self {
        let origins = topology.nodes.iter().filter(|n| n.has_role(Role::Origin)).map(|n| n.id.clone()).collect();
        Self { settings, origins, tables: BTreeMap::new() }
    }

    /// The cost of a measured link: one-way latency plus the loss penalty, in whole milliseconds (at least
    /// one). Sub-millisecond differences are measurement noise to a WAN overlay; rounding them away keeps
    /// equal links equal, so ties go to the lowest node id instead of to the noise.
    pub fn link_cost(&self, rtt_us: u64, loss_ppm: u32) -> Cost {
        let us = rtt_us / 2 + u64::from(loss_ppm) * self.settings.loss_penalty_us_per_ppm;
        ((us + 500) / 1000 * 1000).max(1000)
    }

    /// The measured link-state graph of these reports.
    pub fn graph(&self, reports: &BTreeMap<NodeId, Report>) -> Graph {
        let mut links: BTreeMap<(NodeId, NodeId), (bool, Cost)> = BTreeMap::new();
        for report in reports.values() {
            for l in &report.links {
                let key = if report.node < l.peer {
                    (report.node.clone(), l.peer.clone())
                } else {
                    (l.peer.clone(), report.node.clone())
                };
                let cost = self.link_cost(l.rtt_us, l.loss_ppm);
                let entry = links.entry(key).or_insert((true, cost));
                entry.0 &= l.up;
                entry.1 = entry.1.max(cost);
            }
        }
        let mut graph = Graph::new();
        for node in reports.keys() {
            graph.add_node(node);
        }
        for ((a, b), (up, cost)) in links {
            if up {
                graph.handle_link(&a, &b, cost);
            }
        }
        graph
    }

    /// Recomputes every table from the latest reports; returns the nodes whose table changed.
    pub fn update(&mut self, reports: &BTreeMap<NodeId, Report>, now_ms: u64) -> Vec<NodeId> {
        let graph = self.graph(reports);
        let fresh = tables(&graph, &self.origins);
        let mut changed = Vec::new();
        for (node, routes) in fresh {
            let old = self.tables.get(&node);
            if old.is_some_and(|o| o.routes == routes) {
                continue;
            }
            let version = old.map_or(now_ms, |o| (o.version + 1).max(now_ms));
            self.tables.insert(node.clone(), Routes { version, routes });
            changed.push(node);
        }
        changed
    }

    /// A node's current table.
    pub fn routes(&self, node: &NodeId) -> Option<&Routes> {
        self.tables.get(node)
    }

    /// The operator API's picture: nodes, links, routes and streams.
    pub fn view(
        &self,
        topology: &Topology,
        reports: &BTreeMap<NodeId, Report>,
        connected: &BTreeSet<NodeId>,
    ) -> serde_json::Value {
        let nodes: Vec<_> = topology
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id, "region": n.region, "roles": n.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "connected": connected.contains(&n.id), "reporting": reports.contains_key(&n.id),
                })
            })
            .collect();
        let links: Vec<_> = reports
            .values()
            .flat_map(|r| {
                r.links.iter().map(move |l| {
                    json!({
                        "from": r.node, "to": l.peer, "up": l.up,
                        "rtt_ms": l.rtt_us as f64 / 1000.0, "jitter_ms": l.jitter_us as f64 / 1000.0,
                        "loss": l.loss_ppm as f64 / 1e6,
                    })
                })
            })
            .collect();
        let routes: serde_json::Map<String, serde_json::Value> = self
            .tables
            .iter()
            .map(|(node, t)| {
                let entries: Vec<_> =
                    t.routes.iter().map(|r| json!({"origin": r.dest, "next_hop": r.via, "backup": r.backup})).collect();
                (node.to_string(), json!({"version": t.version, "routes": entries}))
            })
            .collect();
        let mut streams: BTreeMap<String, (String, Vec<serde_json::Value>)> = BTreeMap::new();
        for r in reports.values() {
            for s in &r.streams {
                let entry = streams.entry(s.stream.to_string()).or_insert_with(|| (s.origin.to_string(), Vec::new()));
                entry.1.push(json!({"node": r.node, "upstream": s.upstream}));
            }
        }
        let streams: Vec<_> = streams
            .into_iter()
            .map(|(stream, (origin, tree))| json!({"stream": stream, "origin": origin, "tree": tree}))
            .collect();
        json!({"nodes": nodes, "links": links, "routes": routes, "streams": streams})
    }
}

/// Every node's routes toward every origin: the shortest path's first hop, and a loop-free alternate.
fn tables(graph: &Graph, origins: &[NodeId]) -> BTreeMap<NodeId, Vec<Route>> {
    // dist(X, D) for every X is one Dijkstra from D: links are undirected.
    let toward: HashMap<&NodeId, _> =
        origins.iter().filter_map(|o| Some((o, graph.shortest_paths(graph.index_of(o)?)))).collect();
    let mut out = BTreeMap::new();
    for node in graph.nodes() {
        let table = RouteTable::compute(graph, node);
        let Some(s) = graph.index_of(node) else { continue };
        let mut routes = Vec::new();
        for origin in origins {
            let (Some(hop), Some(dist)) = (table.next_hop(origin), toward.get(origin)) else { continue };
            let Some(d_s) = graph.index_of(node).and_then(|ix| dist.cost(ix)) else { continue };
            let backup = graph
                .neighbours(s)
                .filter(|(n, _)| graph.id(*n) != &hop.via)
                .filter_map(|(n, c)| {
                    let d_n = dist.cost(n)?;
                    // Loop-free: N's own shortest path toward D does not come back through this node.
                    (d_n < c + d_s).then_some((c + d_n, graph.id(n).clone()))
                })
                .min()
                .map(|(_, n)| n);
            routes.push(Route { dest: origin.clone(), via: hop.via.clone(), backup });
        }
        out.insert(node.clone(), routes);
    }
    out
}
