//! The control planner: the nodes' link reports in, damped and versioned route tables out.
//!
//! A [`Planner`] is the whole of the control plane's computation, with no I/O and no clock. The live control
//! replica (`src/control/`) feeds it the reports nodes send; the simulator feeds it what its simulated nodes'
//! estimators measure; both take its routes. What happens to a report, in order:
//!
//! 1. **Reports.** Each node reports each of its links: its measurements ([`LinkMetrics`]) or that it
//!    declares the link down. [`Planner::handle_report`] replaces what a node said, [`Planner::handle_link_report`]
//!    what it said of one link, [`Planner::handle_report_gone`] forgets a node that stopped reporting.
//! 2. **The measured graph.** A link is in the graph when an end reports it and neither declares it down, at
//!    the cost [`graph_link`] gives (the worse end's, in microseconds), plus [`DRAINING_PENALTY`] when an end
//!    is being drained ([`Planner::handle_draining`]). The rule reads the current
//!    reports and nothing else: not what the graph held before, not when the planner started. Replicas that
//!    hold the same reports therefore build the same graph and push the same routes, and the simulator, which
//!    runs one planner, decides as every live replica does. Noise stays out of the graph because nodes
//!    report new metrics only on a clear change ([`LinkEstimator::report`](super::LinkEstimator::report)).
//!    Only links whose reports changed are looked at.
//! 3. **Trees.** One shortest-path [`RouteTree`] per destination (the origins), each updated link change by
//!    link change ([`MeshRoutes`]).
//! 4. **Damping.** One [`RouteDamper`] keeps routes still unless a better one is clearly and durably better,
//!    or the one held broke, or its link was shown to lose packets (the planner tells it which links' costs
//!    carry a loss verdict). Most rounds in a large mesh move some costs and no route; the damper tells those
//!    apart in one pass, without rebuilding its trees.
//! 5. **Versioned tables.** Every node in the picture (reporting, or at the end of a measured link) has a
//!    table. Its version is the time of its last change in milliseconds, and always more than the version
//!    before, so a restarted replica's tables supersede what the nodes hold.
//!
//! **Draining.** A node an operator drains is not a relay for new routes: every link that touches it costs
//! [`DRAINING_PENALTY`] more, a penalty larger than any real path, so a shortest path crosses a draining
//! node only when no other path exists. Routes that ran through it move to another path as the damper lets
//! them (a clear, lasting gain), and the nodes below move their subscriptions make-before-break. When the
//! draining node is the only way, the route stays through it: draining never cuts a stream that has nowhere
//! else to go. Paths that end at the draining node (it is an origin) or start there pay the same penalty
//! on every choice, so the node's own routes do not change. The simulator runs this very rule.
//!
//! [`Planner::plan`] runs steps 2 to 5 over what changed since the last round. A round in which no link
//! changed and the damper holds no switch back can change nothing, and is skipped.
//!
//! It does not decide when a report is too old (the replica forgets a node that stopped reporting and says
//! so with [`Planner::handle_report_gone`]), nor send anything: the replica pushes the tables that changed,
//! the simulator schedules its own push.

use std::time::Duration;

use super::damper::{DampingConfig, DampingConfigError, RouteDamper};
use super::graph::{Cost, Graph, NodeIx, MAX_LINK_COST};
use super::mesh_routes::MeshRoutes;
use super::metric::{graph_link, LinkMetrics};
use super::paths::{NextHop, Route, RouteTable};
use super::tree::{RouteTree, NO_HOP};
use crate::id::NodeId;

/// What a link to or from a node being drained costs on top of its measured cost, in microseconds: about
/// 71 minutes, more than any real path, so that a route crosses a draining node only when it must, yet
/// small enough that paths through several draining nodes still compare (a link stays within
/// [`MAX_LINK_COST`]).
pub const DRAINING_PENALTY: Cost = 1 << 32;

/// What one [`Planner::plan`] round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// No link changed and the damper holds no switch back: nothing could change, nothing was computed.
    Skipped,
    /// The routes were recomputed and stayed as they were.
    Unchanged,
    /// The damped routes changed: a new [`Planner::version`].
    Changed,
}

/// A node's route table as the planner last gave it out.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedTable {
    /// The time of the table's last change, in milliseconds since the caller's epoch; more than any version
    /// the node's table had before.
    pub version: u64,
    /// The node's next hop and backup toward each destination it reaches, with their costs as of that change.
    pub table: RouteTable,
}

/// One node's route toward one destination, by node index (`NO_HOP` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hop {
    via: u32,
    cost: Cost,
    backup: u32,
    backup_cost: Cost,
}

impl Hop {
    const NONE: Hop = Hop { via: NO_HOP, cost: 0, backup: NO_HOP, backup_cost: 0 };

    fn of(tree: &RouteTree, s: NodeIx) -> Hop {
        let (via, cost) = match (tree.next_hop(s), tree.cost(s)) {
            (Some(via), Some(cost)) => (via.index() as u32, cost),
            _ => (NO_HOP, 0),
        };
        let (backup, backup_cost) = match tree.backup(s) {
            Some((b, c)) if via != NO_HOP => (b.index() as u32, c),
            _ => (NO_HOP, 0),
        };
        Hop { via, cost, backup, backup_cost }
    }

    /// Whether two routes send traffic alike (costs aside).
    fn routes_like(&self, other: &Hop) -> bool {
        self.via == other.via && self.backup == other.backup
    }
}

/// What a node was last given: one [`Hop`] per destination, in destination id order.
#[derive(Debug, Clone)]
struct Published {
    version: u64,
    hops: Vec<Hop>,
}

/// The control plane's computation, from link reports to versioned route tables (see the module docs).
#[derive(Debug, Clone)]
pub struct Planner {
    /// The measured graph and the fresh shortest-path trees over it.
    routes: MeshRoutes,
    damper: RouteDamper,
    /// Per node index: what it reports of each of its links, by peer index, in peer order: the link's
    /// metrics, or `None` when it declares the link down.
    ends: Vec<Vec<(u32, Option<LinkMetrics>)>>,
    /// Per node index: whether it reports.
    reporting: Vec<bool>,
    /// Per node index: whether an operator is draining it.
    draining: Vec<bool>,
    /// Links (by their ends' indices) whose reports changed since the last round; may repeat.
    dirty: Vec<(u32, u32)>,
    /// Some node started or stopped reporting since the last round (it may now get a table).
    reporters_changed: bool,
    /// Per node index: the table it was last given.
    published: Vec<Option<Published>>,
    /// The nodes whose table changed in the last round.
    changed: Vec<u32>,
}

impl Planner {
    /// A planner that routes toward `destinations`, over `nodes` and any node reports name later (indexed in
    /// that order: the `n`-th of `nodes` is [`NodeIx::new(n)`](NodeIx::new)), damping with `damping`. No link
    /// is known until reported.
    pub fn new(
        nodes: &[NodeId],
        destinations: &[NodeId],
        damping: DampingConfig,
    ) -> Result<Planner, DampingConfigError> {
        let damper = RouteDamper::new(damping)?;
        let mut graph = Graph::new();
        for node in nodes {
            graph.add_node(node);
        }
        let routes = MeshRoutes::new(graph, destinations);
        let n = routes.graph().len();
        Ok(Planner {
            routes,
            damper,
            ends: vec![Vec::new(); n],
            reporting: vec![false; n],
            draining: vec![false; n],
            dirty: Vec::new(),
            reporters_changed: false,
            published: vec![None; n],
            changed: Vec::new(),
        })
    }

    /// The measured graph as of the last round.
    pub fn graph(&self) -> &Graph {
        self.routes.graph()
    }

    /// Counts the changes to the damped routes; 0 before the first route.
    pub fn version(&self) -> u64 {
        self.damper.version()
    }

    /// The damped trees as of [`version`](Self::version), one per destination in destination id order,
    /// indexed like [`graph`](Self::graph) (a node added since has no route in them).
    pub fn trees(&self) -> &[RouteTree] {
        self.damper.trees()
    }

    /// Whether a round with no new reports could still change the routes (the damper holds a switch back
    /// until its hold time has passed).
    pub fn is_holding(&self) -> bool {
        self.damper.is_holding()
    }

    /// `node`'s whole report: what it says of each of its links (its metrics, or `None` when it declares the
    /// link down). It replaces what `node` reported before; a link it no longer mentions is no longer
    /// reported by it. A link named twice counts once, as first named.
    pub fn handle_report<'a>(
        &mut self,
        node: &NodeId,
        links: impl IntoIterator<Item = (&'a NodeId, Option<LinkMetrics>)>,
    ) {
        let n = self.index(node);
        let named: Vec<(&NodeId, Option<LinkMetrics>)> = links.into_iter().collect();
        let mut ends: Vec<(u32, Option<LinkMetrics>)> =
            named.into_iter().map(|(peer, m)| (self.index(peer), m)).collect();
        ends.sort_by_key(|&(peer, _)| peer);
        ends.dedup_by_key(|&mut (peer, _)| peer);
        let before = std::mem::replace(&mut self.ends[n as usize], ends);
        let after = &self.ends[n as usize];
        // Links whose end changed: in one report and not the other, or reported differently.
        let (mut i, mut j) = (0, 0);
        while i < before.len() || j < after.len() {
            let (x, y) = (before.get(i), after.get(j));
            match (x, y) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    if x.1 != y.1 {
                        self.dirty.push((n, x.0));
                    }
                    (i, j) = (i + 1, j + 1);
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    self.dirty.push((n, x.0));
                    i += 1;
                }
                (Some(x), None) => {
                    self.dirty.push((n, x.0));
                    i += 1;
                }
                (_, Some(y)) => {
                    self.dirty.push((n, y.0));
                    j += 1;
                }
                (None, None) => unreachable!("the loop stops first"),
            }
        }
        if !self.reporting[n as usize] {
            self.reporting[n as usize] = true;
            self.reporters_changed = true;
        }
    }

    /// `node` stopped reporting: nothing it said counts any more.
    pub fn handle_report_gone(&mut self, node: &NodeId) {
        let Some(n) = self.routes.graph().index_of(node) else { return };
        let n = n.index() as u32;
        for (peer, _) in std::mem::take(&mut self.ends[n as usize]) {
            self.dirty.push((n, peer));
        }
        if self.reporting[n as usize] {
            self.reporting[n as usize] = false;
            self.reporters_changed = true;
        }
    }

    /// `node` is being drained (`true`) or is back in service: from the next round, its links cost
    /// [`DRAINING_PENALTY`] more (see the module docs).
    pub fn handle_draining(&mut self, node: &NodeId, draining: bool) {
        let n = self.index(node);
        if std::mem::replace(&mut self.draining[n as usize], draining) == draining {
            return;
        }
        // Every link with an end at the node: those it reports, and those its peers report.
        let ix = NodeIx::new(n);
        let peers: Vec<u32> = self.ends[n as usize]
            .iter()
            .map(|&(p, _)| p)
            .chain(self.routes.graph().neighbours(ix).map(|(p, _)| p.index() as u32))
            .collect();
        for peer in peers {
            self.dirty.push((n, peer));
        }
    }

    /// Whether `node` is being drained.
    pub fn is_draining(&self, node: &NodeId) -> bool {
        self.routes.graph().index_of(node).is_some_and(|n| self.draining[n.index()])
    }

    /// What `node` says of its link to `peer`, by index: `Some(metrics)` for up with these metrics,
    /// `Some(None)` for down, `None` for nothing (it does not report the link). The rest of `node`'s report
    /// stays as it was. For a caller that tracks links by index, as the simulator does.
    ///
    /// # Panics
    ///
    /// When `node` or `peer` is not an index of [`graph`](Self::graph).
    pub fn handle_link_report(&mut self, node: NodeIx, peer: NodeIx, end: Option<Option<LinkMetrics>>) {
        let (n, p) = (node.index() as u32, peer.index() as u32);
        assert!((p as usize) < self.ends.len(), "unknown peer index {p}");
        let ends = &mut self.ends[n as usize];
        let at = ends.binary_search_by_key(&p, |&(peer, _)| peer);
        let changed = match (at, end) {
            (Ok(i), Some(end)) if ends[i].1 == end => false,
            (Ok(i), Some(end)) => {
                ends[i].1 = end;
                true
            }
            (Ok(i), None) => {
                ends.remove(i);
                true
            }
            (Err(i), Some(end)) => {
                ends.insert(i, (p, end));
                true
            }
            (Err(_), None) => false,
        };
        if changed {
            self.dirty.push((n, p));
        }
    }

    /// One round: brings the graph in line with the reports that changed, recomputes what that can change,
    /// damps, and versions the tables that changed, at `now` (since an epoch the caller picks, the same for
    /// every call; table versions are its milliseconds).
    pub fn plan(&mut self, now: Duration) -> Round {
        self.changed.clear();
        let mut changes: Vec<(NodeIx, NodeIx, Option<Cost>)> = Vec::new();
        for (a, b) in std::mem::take(&mut self.dirty).into_iter().filter(|(a, b)| a != b) {
            let ends = [self.end(a, b), self.end(b, a)];
            let lossy = ends.iter().flatten().flatten().any(|m| m.loss > 0.0);
            let graph = self.routes.graph();
            self.damper.handle_link_loss(graph.id(NodeIx::new(a)), graph.id(NodeIx::new(b)), lossy);
            let cost = graph_link(ends.into_iter().flatten());
            let cost = match self.draining[a as usize] || self.draining[b as usize] {
                true => cost.map(|c| c.saturating_add(DRAINING_PENALTY).min(MAX_LINK_COST)),
                false => cost,
            };
            changes.push((NodeIx::new(a), NodeIx::new(b), cost));
        }
        let graph_changed = self.routes.handle_links_ix(&changes);
        let reporters_changed = std::mem::take(&mut self.reporters_changed);
        if !graph_changed && !self.damper.is_holding() && self.damper.version() > 0 {
            if reporters_changed {
                self.publish(now);
            }
            return Round::Skipped;
        }
        let changed = self.damper.handle_routes(now, self.routes.graph(), self.routes.trees());
        // Even when the damped routes stay, a node may have come into the picture (its first link).
        self.publish(now);
        if changed {
            Round::Changed
        } else {
            Round::Unchanged
        }
    }

    /// The nodes whose table changed in the last round.
    pub fn changed(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.changed.iter().map(|&n| self.routes.graph().id(NodeIx::new(n)))
    }

    /// The table `node` was last given, if any.
    pub fn table(&self, node: &NodeId) -> Option<VersionedTable> {
        let n = self.routes.graph().index_of(node)?;
        let published = self.published[n.index()].as_ref()?;
        let id = |x: u32| self.routes.graph().id(NodeIx::new(x)).clone();
        let routes = self
            .routes
            .trees()
            .iter()
            .zip(&published.hops)
            .filter(|(_, hop)| hop.via != NO_HOP)
            .map(|(tree, hop)| {
                let primary = NextHop { via: id(hop.via), cost: hop.cost };
                let backup = (hop.backup != NO_HOP).then(|| NextHop { via: id(hop.backup), cost: hop.backup_cost });
                (id(tree.destination().index() as u32), Route { primary, backup })
            })
            .collect();
        Some(VersionedTable { version: published.version, table: RouteTable::from_sorted(routes) })
    }

    /// The index of `node`, added (without links) if it is new.
    fn index(&mut self, node: &NodeId) -> u32 {
        let n = self.routes.add_node(node).index();
        if n >= self.ends.len() {
            self.ends.resize(n + 1, Vec::new());
            self.reporting.resize(n + 1, false);
            self.draining.resize(n + 1, false);
            self.published.resize(n + 1, None);
        }
        n as u32
    }

    /// What `node` reports of its link to `peer`: `Some(metrics or None for down)`, or `None` when it does
    /// not report the link.
    fn end(&self, node: u32, peer: u32) -> Option<Option<LinkMetrics>> {
        let ends = &self.ends[node as usize];
        ends.binary_search_by_key(&peer, |&(p, _)| p).ok().map(|i| ends[i].1)
    }

    /// Versions the tables of the nodes in the picture whose damped routes differ from what they were last
    /// given.
    fn publish(&mut self, now: Duration) {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let graph = self.routes.graph();
        let trees = self.damper.trees();
        let mut hops = Vec::with_capacity(trees.len());
        for s in 0..graph.len() {
            let ix = NodeIx::new(s as u32);
            if !self.reporting[s] && graph.neighbours(ix).next().is_none() {
                continue;
            }
            hops.clear();
            hops.extend(trees.iter().map(|t| if s < t.len() { Hop::of(t, ix) } else { Hop::NONE }));
            let published = &mut self.published[s];
            match published {
                Some(p) if p.hops.len() == hops.len() && p.hops.iter().zip(&hops).all(|(a, b)| a.routes_like(b)) => {
                    continue
                }
                Some(p) => {
                    p.version = p.version.saturating_add(1).max(now_ms);
                    p.hops.clone_from(&hops);
                }
                None => *published = Some(Published { version: now_ms, hops: hops.clone() }),
            }
            self.changed.push(s as u32);
        }
    }
}
