//! From reports to route tables: the wire side of the control plane's computation.
//!
//! The computation itself is [`Planner`]'s (`src/routing/planner.rs`): the measured graph from the reports
//! alone, one shortest-path tree per origin of the topology with loop-free backups, the damper, and a version
//! per node's table (the time of its last change, so a restarted replica's tables supersede what nodes hold).
//! [`Plan`] hands it the reports that changed, turns its tables into [`Routes`] frames, and draws the
//! operator API's picture.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::id::{NodeId, StreamName};
use crate::relay::Takedown;
use crate::routing::{DampingConfig, LinkMetrics, Planner};
use crate::topology::{Role, Topology};
use crate::wire::{LinkReport, Report, Route, Routes, StreamPhase, StreamReport};

/// Tunables of the computation.
#[derive(Debug, Clone, Default)]
pub struct PlanSettings {
    /// When a better route is worth a switch.
    pub damping: DampingConfig,
}

/// The control plane's current tables.
pub struct Plan {
    planner: Planner,
    /// The links of each report the planner has, to hand it only the reports that changed.
    fed: BTreeMap<NodeId, Vec<LinkReport>>,
    tables: BTreeMap<NodeId, Routes>,
}

impl Plan {
    pub fn new(topology: &Topology, settings: PlanSettings) -> Self {
        let nodes: Vec<NodeId> = topology.nodes.iter().map(|n| n.id.clone()).collect();
        let origins: Vec<NodeId> =
            topology.nodes.iter().filter(|n| n.has_role(Role::Origin)).map(|n| n.id.clone()).collect();
        // The defaults are valid; a bad custom config falls back to them.
        let planner = Planner::new(&nodes, &origins, settings.damping).unwrap_or_else(|_| {
            Planner::new(&nodes, &origins, DampingConfig::default()).expect("default damping is valid")
        });
        Self { planner, fed: BTreeMap::new(), tables: BTreeMap::new() }
    }

    /// What one report says of a link: its metrics, or `None` when the reporting end declares it down.
    fn end_view(link: &LinkReport) -> Option<LinkMetrics> {
        link.up.then(|| LinkMetrics {
            rtt: Duration::from_micros(link.rtt_us),
            jitter: Duration::from_micros(link.jitter_us),
            loss: f64::from(link.loss_ppm) / 1e6,
        })
    }

    /// Brings the tables up to date with the latest reports (a node missing from `reports` no longer
    /// reports); returns the nodes whose table changed.
    pub fn update(&mut self, reports: &BTreeMap<NodeId, Report>, now_ms: u64) -> Vec<NodeId> {
        let gone: Vec<NodeId> = self.fed.keys().filter(|n| !reports.contains_key(*n)).cloned().collect();
        for node in gone {
            self.planner.handle_report_gone(&node);
            self.planner.handle_draining(&node, false);
            self.fed.remove(&node);
        }
        for (node, report) in reports {
            self.planner.handle_draining(node, report.draining);
            if self.fed.get(node) != Some(&report.links) {
                self.planner.handle_report(node, report.links.iter().map(|l| (&l.peer, Self::end_view(l))));
                self.fed.insert(node.clone(), report.links.clone());
            }
        }
        self.planner.plan(Duration::from_millis(now_ms));
        let changed: Vec<NodeId> = self.planner.changed().cloned().collect();
        for node in &changed {
            let table = self.planner.table(node).expect("a changed table exists");
            let routes = table
                .table
                .routes()
                .map(|(dest, r)| Route {
                    dest: dest.clone(),
                    via: r.primary.via.clone(),
                    backup: r.backup.as_ref().map(|b| b.via.clone()),
                })
                .collect();
            self.tables.insert(node.clone(), Routes { version: table.version, routes });
        }
        changed
    }

    /// Whether a better route is being held back until it has lasted: the tables may change with no new
    /// report, so the replica must plan again.
    pub fn is_holding(&self) -> bool {
        self.planner.is_holding()
    }

    /// A node's current table.
    pub fn routes(&self, node: &NodeId) -> Option<&Routes> {
        self.tables.get(node)
    }

    /// The operator API's picture: regions, nodes (with their state), links as each end reports them, the
    /// measured graph (each configured link: up in it, declared down, or not measured yet), routes and
    /// streams. The dashboard draws the same picture.
    pub fn view(
        &self,
        topology: &Topology,
        reports: &BTreeMap<NodeId, Report>,
        connected: &BTreeSet<NodeId>,
        takedowns: &BTreeMap<StreamName, Takedown>,
    ) -> serde_json::Value {
        let graph = self.planner.graph();
        let declared_down: BTreeSet<&NodeId> =
            reports.values().flat_map(|r| r.links.iter().filter(|l| !l.up).map(|l| &l.peer)).collect();
        let nodes: Vec<_> = topology
            .nodes
            .iter()
            .map(|n| {
                let in_graph = graph.index_of(&n.id).is_some_and(|ix| graph.neighbours(ix).next().is_some());
                let state = NodeState::of(reports.contains_key(&n.id), in_graph, declared_down.contains(&n.id));
                json!({
                    "id": n.id, "region": n.region, "roles": n.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "connected": connected.contains(&n.id), "reporting": reports.contains_key(&n.id),
                    "state": state, "failed": state != NodeState::Up,
                    "draining": reports.get(&n.id).is_some_and(|r| r.draining),
                })
            })
            .collect();
        let regions: Vec<_> =
            topology.regions.iter().map(|r| json!({"name": r.name, "lat": r.lat, "lon": r.lon})).collect();
        let end = |from: &NodeId, to: &NodeId| reports.get(from)?.links.iter().find(|l| &l.peer == to);
        let measured: Vec<_> = topology
            .links
            .iter()
            .map(|l| {
                let ends: Vec<&LinkReport> = [end(&l.a, &l.b), end(&l.b, &l.a)].into_iter().flatten().collect();
                let measuring = ends.iter().filter(|e| e.up);
                let state = if graph.link_cost(&l.a, &l.b).is_some() {
                    LinkState::Up
                } else if ends.iter().any(|e| !e.up) {
                    LinkState::Down
                } else {
                    LinkState::Unmeasured
                };
                json!({
                    "a": l.a, "b": l.b, "state": state, "configured_ms": l.latency_ms,
                    "rtt_ms": measuring.clone().map(|e| e.rtt_us).max().map(|us| us as f64 / 1000.0),
                    "loss": measuring.map(|e| e.loss_ppm).max().map(|ppm| f64::from(ppm) / 1e6),
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
        let streams = streams_view(topology, reports, takedowns);
        json!({
            "regions": regions, "nodes": nodes, "links": links, "graph": measured, "routes": routes, "streams": streams,
        })
    }
}

/// A node as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum NodeState {
    /// It reports, and is in the measured graph or nobody says otherwise.
    Up,
    /// It has not reported lately (or ever): stopped, crashed, or cut off from every replica.
    Silent,
    /// It still reports, but a neighbour declares their link down and none of its links is in the graph:
    /// traffic cannot reach it.
    Unreachable,
}

impl NodeState {
    fn of(reporting: bool, in_graph: bool, declared_down: bool) -> NodeState {
        match (reporting, in_graph, declared_down) {
            (false, _, _) => NodeState::Silent,
            (true, false, true) => NodeState::Unreachable,
            _ => NodeState::Up,
        }
    }
}

/// A configured link as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum LinkState {
    /// In the measured graph: routes may use it.
    Up,
    /// An end declares it down (its probes stopped coming back).
    Down,
    /// No end reports it yet.
    Unmeasured,
}

/// Each stream as the reports show it: its owner and epoch (the newest any node reports), its state (live,
/// ended, or taken down by the operator), the tree that carries it, and its viewers per edge and per region.
fn streams_view(
    topology: &Topology,
    reports: &BTreeMap<NodeId, Report>,
    takedowns: &BTreeMap<StreamName, Takedown>,
) -> Vec<serde_json::Value> {
    #[derive(Default)]
    struct Seen<'a> {
        owner: Option<&'a StreamReport>,
        tree: Vec<serde_json::Value>,
        viewers: BTreeMap<&'a str, u32>,
        regions: BTreeMap<String, u32>,
    }
    let mut streams: BTreeMap<&StreamName, Seen> = BTreeMap::new();
    for r in reports.values() {
        for s in &r.streams {
            let seen = streams.entry(&s.stream).or_default();
            if seen.owner.is_none_or(|o| (s.epoch, s.phase) > (o.epoch, o.phase)) {
                seen.owner = Some(s);
            }
            if s.upstream.is_some() || s.origin == r.node {
                seen.tree.push(json!({"node": r.node, "upstream": s.upstream}));
            }
            if s.viewers > 0 {
                seen.viewers.insert(r.node.as_str(), s.viewers);
                let region = topology.node(&r.node).map_or_else(String::new, |n| n.region.to_string());
                *seen.regions.entry(region).or_default() += s.viewers;
            }
        }
    }
    for stream in takedowns.keys() {
        streams.entry(stream).or_default();
    }
    streams
        .into_iter()
        .map(|(stream, seen)| {
            let taken_down = takedowns.get(stream).filter(|t| t.active);
            let state = match (taken_down, seen.owner) {
                (Some(_), _) => StreamPhase::TakenDown,
                // Lifted here; a node's report of the takedown is older.
                (None, Some(o)) if o.phase == StreamPhase::TakenDown && takedowns.contains_key(stream) => {
                    StreamPhase::Live
                }
                (None, Some(o)) => o.phase,
                (None, None) => StreamPhase::Ended,
            };
            json!({
                "stream": stream,
                "origin": seen.owner.map(|o| o.origin.as_str()),
                "epoch": seen.owner.map(|o| o.epoch),
                "state": state,
                "takedown_reason": taken_down.map(|t| t.reason.as_str()),
                "tree": seen.tree,
                "viewers": seen.viewers.values().sum::<u32>(),
                "viewers_by_edge": seen.viewers,
                "viewers_by_region": seen.regions,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = "[[regions]]\nname = \"eu\"\nlat = 53.3\nlon = -6.3\n\n\
        [[nodes]]\nid = \"origin\"\nregion = \"eu\"\nroles = [\"origin\"]\nmesh = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\n\n\
        [[nodes]]\nid = \"relay\"\nregion = \"eu\"\nroles = [\"relay\"]\nmesh = \"127.0.0.1:3\"\nhttp = \"127.0.0.1:4\"\n\n\
        [[nodes]]\nid = \"edge\"\nregion = \"eu\"\nroles = [\"edge\"]\nmesh = \"127.0.0.1:5\"\nhttp = \"127.0.0.1:6\"\n\n\
        [[links]]\na = \"origin\"\nb = \"relay\"\nlatency_ms = 5.0\n\n\
        [[links]]\na = \"relay\"\nb = \"edge\"\nlatency_ms = 5.0\n";

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn report(node: &str, links: &[(&str, bool)]) -> (NodeId, Report) {
        let links = links
            .iter()
            .map(|(peer, up)| LinkReport { peer: id(peer), rtt_us: 10_000, jitter_us: 0, loss_ppm: 0, up: *up })
            .collect();
        (id(node), Report { node: id(node), links, streams: vec![], takedowns: vec![], draining: false })
    }

    fn view(plan: &mut Plan, topology: &Topology, reports: &[(NodeId, Report)]) -> serde_json::Value {
        let reports: BTreeMap<NodeId, Report> = reports.iter().cloned().collect();
        plan.update(&reports, 1_000);
        plan.view(topology, &reports, &reports.keys().cloned().collect(), &BTreeMap::new())
    }

    fn states<'a>(v: &'a serde_json::Value, list: &str, key: &str) -> Vec<(String, &'a str)> {
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[key].as_str().unwrap_or_default().to_owned(), e["state"].as_str().unwrap()))
            .collect()
    }

    #[test]
    fn a_relay_its_neighbours_declare_down_is_unreachable_then_silent() {
        let topology = Topology::parse(TOPOLOGY, "test").unwrap();
        let mut plan = Plan::new(&topology, PlanSettings::default());

        // Nothing reported yet: every node silent, every link unmeasured.
        let v = view(&mut plan, &topology, &[]);
        assert_eq!(
            states(&v, "nodes", "id"),
            [("origin".into(), "silent"), ("relay".into(), "silent"), ("edge".into(), "silent")]
        );
        assert_eq!(states(&v, "graph", "a"), [("origin".into(), "unmeasured"), ("relay".into(), "unmeasured")]);
        assert_eq!(v["regions"][0]["name"], "eu");

        let healthy = [
            report("origin", &[("relay", true)]),
            report("relay", &[("origin", true), ("edge", true)]),
            report("edge", &[("relay", true)]),
        ];
        let v = view(&mut plan, &topology, &healthy);
        assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "up" && n["failed"] == false), "{v:#}");
        assert_eq!(states(&v, "graph", "a"), [("origin".into(), "up"), ("relay".into(), "up")]);
        assert_eq!(v["graph"][0]["rtt_ms"], 10.0);

        // The relay dies: its last report still stands, but both neighbours declare their links down.
        let killed = [report("origin", &[("relay", false)]), healthy[1].clone(), report("edge", &[("relay", false)])];
        let v = view(&mut plan, &topology, &killed);
        assert_eq!(
            states(&v, "nodes", "id"),
            [("origin".into(), "up"), ("relay".into(), "unreachable"), ("edge".into(), "up")]
        );
        assert_eq!(v["nodes"][1]["failed"], true);
        assert_eq!(states(&v, "graph", "a"), [("origin".into(), "down"), ("relay".into(), "down")]);

        // Its report goes stale and the replica forgets it.
        let v = view(&mut plan, &topology, &[killed[0].clone(), killed[2].clone()]);
        assert_eq!(v["nodes"][1]["state"], "silent");

        // One link down, the other up: the relay is still reachable.
        let half = [report("origin", &[("relay", false)]), healthy[1].clone(), healthy[2].clone()];
        let v = view(&mut plan, &topology, &half);
        assert_eq!(v["nodes"][1]["state"], "up");
        assert_eq!(states(&v, "graph", "a"), [("origin".into(), "down"), ("relay".into(), "up")]);
    }
}
