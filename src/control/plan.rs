//! From reports to route tables: the control plane's computation, with no I/O and no clock of its own.
//!
//! The measured graph holds a link when at least one end reports it up and neither end reports it down; its
//! cost ([`LinkMetrics::graph_cost`], whole milliseconds) is the worse of the two ends' measurements, so both
//! directions agree ([`graph_link`]). An unchanged graph is not recomputed unless the damper holds a switch
//! back. One shortest-path tree per origin of the topology gives every node its next hop and
//! a loop-free backup toward that origin ([`RouteTree`]); a [`RouteDamper`] then holds routes still unless a
//! new one is clearly and durably better (hysteresis), or the old one broke. A node's table version is the
//! time of its last change, so a restarted replica's tables always supersede what nodes hold.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::id::NodeId;
use crate::routing::{graph_link, Cost, DampingConfig, Graph, LinkMetrics, RouteDamper, RouteTree};
use crate::topology::{Role, Topology};
use crate::wire::{LinkReport, Report, Route, Routes};

/// Tunables of the computation.
#[derive(Debug, Clone, Default)]
pub struct PlanSettings {
    /// When a better route is worth a switch.
    pub damping: DampingConfig,
}

/// The control plane's current tables.
pub struct Plan {
    origins: Vec<NodeId>,
    damper: RouteDamper,
    /// The links of the last graph and their costs, to tell an unchanged graph.
    links: BTreeMap<(NodeId, NodeId), Cost>,
    /// The nodes of the last graph.
    nodes: BTreeSet<NodeId>,
    tables: BTreeMap<NodeId, Routes>,
}

impl Plan {
    pub fn new(topology: &Topology, settings: PlanSettings) -> Self {
        let origins = topology.nodes.iter().filter(|n| n.has_role(Role::Origin)).map(|n| n.id.clone()).collect();
        // The defaults are valid; a bad custom config falls back to them.
        let damper = RouteDamper::new(settings.damping)
            .unwrap_or_else(|_| RouteDamper::new(DampingConfig::default()).expect("default damping is valid"));
        Self { origins, damper, links: BTreeMap::new(), nodes: BTreeSet::new(), tables: BTreeMap::new() }
    }

    /// What one report says of a link: its metrics, or `None` when the reporting end declares it down.
    fn end_view(link: &LinkReport) -> Option<LinkMetrics> {
        link.up.then(|| LinkMetrics {
            rtt: Duration::from_micros(link.rtt_us),
            jitter: Duration::from_micros(link.jitter_us),
            loss: f64::from(link.loss_ppm) / 1e6,
        })
    }

    /// The measured links of these reports, by node pair, with their costs ([`graph_link`]). Computed from the
    /// reports alone, so that replicas that hold the same reports build the same graph and push the same
    /// tables, whenever each of them started.
    fn measured_links(&self, reports: &BTreeMap<NodeId, Report>) -> BTreeMap<(NodeId, NodeId), Cost> {
        let mut ends: BTreeMap<(NodeId, NodeId), Vec<Option<LinkMetrics>>> = BTreeMap::new();
        for report in reports.values() {
            for l in &report.links {
                let key = if report.node < l.peer {
                    (report.node.clone(), l.peer.clone())
                } else {
                    (l.peer.clone(), report.node.clone())
                };
                ends.entry(key).or_default().push(Self::end_view(l));
            }
        }
        ends.into_iter().filter_map(|(key, ends)| Some((key, graph_link(ends)?))).collect()
    }

    fn graph_of<'a>(nodes: impl IntoIterator<Item = &'a NodeId>, links: &BTreeMap<(NodeId, NodeId), Cost>) -> Graph {
        let mut graph = Graph::new();
        for node in nodes {
            graph.add_node(node);
        }
        for ((a, b), &cost) in links {
            graph.handle_link(a, b, cost);
        }
        graph
    }

    /// Recomputes every table from the latest reports; returns the nodes whose table changed. When the graph
    /// is the last one and the damper holds nothing back, the tables cannot change and nothing is computed.
    pub fn update(&mut self, reports: &BTreeMap<NodeId, Report>, now_ms: u64) -> Vec<NodeId> {
        let links = self.measured_links(reports);
        let nodes: BTreeSet<NodeId> = reports.keys().cloned().collect();
        let same_graph = links == self.links && nodes == self.nodes;
        if same_graph && !self.damper.is_holding() && !self.tables.is_empty() {
            return Vec::new();
        }
        let graph = Self::graph_of(reports.keys(), &links);
        (self.links, self.nodes) = (links, nodes);
        let trees: Vec<RouteTree> =
            self.origins.iter().filter_map(|o| graph.index_of(o)).map(|d| RouteTree::compute(&graph, d)).collect();
        if !self.damper.handle_routes(Duration::from_millis(now_ms), &graph, &trees) && !self.tables.is_empty() {
            return Vec::new();
        }
        let mut changed = Vec::new();
        for node in graph.nodes() {
            let routes: Vec<Route> = self
                .damper
                .tables()
                .get(node)
                .map(|t| {
                    t.routes()
                        .map(|(dest, r)| Route {
                            dest: dest.clone(),
                            via: r.primary.via.clone(),
                            backup: r.backup.as_ref().map(|b| b.via.clone()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let old = self.tables.get(node);
            if old.is_some_and(|o| o.routes == routes) {
                continue;
            }
            let version = old.map_or(now_ms, |o| (o.version + 1).max(now_ms));
            self.tables.insert(node.clone(), Routes { version, routes });
            changed.push(node.clone());
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
