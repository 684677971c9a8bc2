//! Route flap damping: keeping routes still while measurements wobble.
//!
//! Link costs come from probes and move a little all the time. Recomputed from scratch every second, the
//! shortest-path next hop of a node with two routes of similar cost would follow the noise, and every switch
//! moves that node's subscriptions (make-before-break, but still work and a burst of duplicate objects). The
//! control plane therefore passes each recomputation through one [`RouteDamper`], which it keeps across
//! recomputations, and pushes the damper's tables instead of the fresh ones.
//!
//! For every (node, destination) the damper holds the next hop it last gave out and keeps it unless:
//!
//! - **it is no longer usable**: the link to it is down, it no longer reaches the destination, or keeping it
//!   would close a forwarding loop (below). The node switches to the fresh shortest-path next hop at once;
//! - **the fresh best route is better by a clear margin, continuously, for the hold time**: cheaper than the
//!   route through the held next hop by at least `absolute_margin` *and* by `relative_margin` of it, at every
//!   recomputation for at least `hold` (2 ms, 10 % and 2 s by default). The node then switches to the fresh
//!   best next hop;
//! - **a link of the held route was shown to lose packets**: when the fresh best route is clearly better
//!   because the link to the held next hop now carries a loss verdict ([`RouteDamper::handle_link_loss`]),
//!   the node switches at once, without the hold. The hold is there for noise, and a loss verdict is not
//!   noise: the node's estimator only gives one on statistical evidence (see `LOSS_EVIDENCE` in
//!   `src/routing/probe.rs`), so waiting out the hold would only leave the stream on a lossy link for two
//!   seconds more. A link whose loss verdict ends is not special: moving back to it waits the hold;
//! - **it was forced off its route and a better one has been stable for `repair_hold`** (5 s by default): a
//!   node whose next hop failed (or would have closed a loop) took the best route left, which it then holds
//!   like any other. When the failed link or node is repaired, the route through it is usually better, but
//!   often by less than the margins, and without this rule the repaired part would carry nothing until some
//!   other change. So a node that was forced off its route switches to the fresh best once that has been
//!   cheaper, by any amount, at every recomputation for `repair_hold`: the repair must be the best path and
//!   stable (a flapping link resets the clock each time it goes). The switch ends the forced state. It is
//!   one rule for the live control plane and the simulator, which both run this damper.
//!
//! # Loop-freedom
//!
//! Held next hops are kept only as long as the damped next hops toward each destination stay acyclic, which
//! is exactly what loop-free forwarding needs. A fresh shortest-path next hop is strictly closer to the
//! destination (link costs are at least 1), so fresh next hops alone cannot form a cycle: any cycle contains a
//! held next hop, and the damper drops one held next hop per cycle (the one dearest relative to its node's
//! fresh best) until none is left. Every node with a route then has a next hop that leads, without coming
//! back, to a node without one: the destination. The damped next hops form a tree again, and backups are
//! re-picked against that tree (see [`RouteTree`]), so they stay loop-free with the damped primaries; a
//! backup that still qualifies and protects as well as the best candidate is kept, for the same reason as
//! primaries.
//!
//! The textbook rule, keeping a next hop `n` of `s` only while it is *downstream*
//! (`dist(n, d) < dist(s, d)` under current costs), is also loop-free, and needs no global view. It is not
//! used because noise defeats it: two neighbours whose distances to `d` differ by less than the measurement
//! noise swap sides of that inequality from one round to the next, and each swap forces a switch. Over 20
//! random meshes of 10 to 60 nodes with ±10 % noise re-measured every second for ten minutes, the downstream
//! rule made 333 switches, 257 of them forced by the inequality, and let 25 of 3,136 (node, destination) pairs
//! change twice within a minute; the acyclicity rule made 31 switches and let none (over 300 such meshes, 2 of
//! 41,084 pairs, both in one mesh). The control plane sees the whole graph, so the exact rule costs only one
//! linear pass per destination.
//!
//! # Versions
//!
//! [`RouteDamper::version`] counts the changes to the damped routes: it increments when a recomputation
//! changes some node's next hop or backup (or a route appears or disappears), and only then; the tables are a
//! snapshot taken at that change, so a version names exact contents and a control plane pushes a table only
//! when the version moves. Costs in the tables are those of the recomputation that last changed them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use super::graph::{Cost, Graph, NodeIx};
use super::paths::RouteTable;
use super::tree::{tables_from_trees, RouteTree, NO_HOP};
use crate::id::NodeId;

/// How much better, and for how long, a route must be before a [`RouteDamper`] switches to it.
#[derive(Debug, Clone, PartialEq)]
pub struct DampingConfig {
    /// The least gain, as a fraction of the held route's cost, that counts as clearly better.
    pub relative_margin: f64,
    /// The least gain, in microseconds, that counts as clearly better.
    pub absolute_margin: Cost,
    /// How long a route must stay clearly better before the switch.
    pub hold: Duration,
    /// How long a route must stay better, by any amount, before a node that was forced off its route (its
    /// next hop failed) switches to it: how soon a repaired link or node is used again.
    pub repair_hold: Duration,
}

impl Default for DampingConfig {
    fn default() -> Self {
        Self {
            relative_margin: 0.10,
            absolute_margin: 2_000,
            hold: Duration::from_secs(2),
            repair_hold: Duration::from_secs(5),
        }
    }
}

/// Why a [`DampingConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DampingConfigError {
    /// `relative_margin` is not a fraction from 0.0 to 1.0 (a margin of 1.0 or more, or NaN, would never let
    /// a route switch except by force).
    #[error("relative_margin must be at least 0 and below 1, not {0}")]
    RelativeMargin(f64),
}

impl DampingConfig {
    /// Whether going from cost `held` to `new` is a clear change: by at least `absolute_margin` and by
    /// `relative_margin` of the larger of the two. A node reports new measurements of a link only on such a
    /// change ([`LinkEstimator::report`](super::LinkEstimator::report)), so that noise leaves the control
    /// plane's graph, and its recomputation, untouched.
    pub fn is_clear_change(&self, held: Cost, new: Cost) -> bool {
        let change = held.abs_diff(new);
        change >= self.absolute_margin && change as f64 >= self.relative_margin * held.max(new) as f64
    }

    /// Checks the configuration for contradictions.
    pub fn validate(self) -> Result<Self, DampingConfigError> {
        if !(0.0..1.0).contains(&self.relative_margin) {
            return Err(DampingConfigError::RelativeMargin(self.relative_margin));
        }
        Ok(self)
    }
}

/// What the damper remembers about one (node, destination), by node index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// The next hop given out: `NO_HOP` when the node had no route, `GONE` when its next hop is no longer in
    /// the graph.
    via: u32,
    backup: u32,
    /// Since when a fresh route has been clearly better than `via`'s (or, when `forced`, better at all),
    /// without interruption.
    beaten_since: Option<Duration>,
    /// `via` was taken because the node's previous next hop failed: the node returns to a repaired route
    /// after `repair_hold` (see the module docs).
    forced: bool,
}

const NOTHING: Held = Held { via: NO_HOP, backup: NO_HOP, beaten_since: None, forced: false };
const GONE: u32 = NO_HOP - 1;

/// Hysteresis between route recomputations, kept by the control plane across them.
///
/// Each (node, destination) keeps the next hop it was given until that next hop fails (its link is down or it
/// no longer reaches the destination), would close a forwarding loop, or the fresh best route has been
/// clearly better ([`DampingConfig`]) at every recomputation for the hold time. Backups are re-picked against
/// the damped next hops. The version increments exactly when some next hop or backup changes. Why
/// loop-freedom is checked as acyclicity rather than with the downstream inequality is explained in
/// `src/routing/damper.rs`.
#[derive(Debug, Clone)]
pub struct RouteDamper {
    config: DampingConfig,
    version: u64,
    /// The node ids of the graph the held routes refer to, by index.
    ids: Vec<NodeId>,
    /// Per destination, per node index.
    held: BTreeMap<NodeId, Vec<Held>>,
    /// Whether some held next hop is being beaten (a switch may come at a later recomputation of the same
    /// graph).
    holding: bool,
    /// The damped trees as of the last change, over `ids`.
    damped: Vec<RouteTree>,
    /// `damped` as tables by node id, built on first use.
    tables: OnceLock<BTreeMap<NodeId, RouteTable>>,
    /// The links whose cost carries a loss verdict, by their ends' ids (the lower first): leaving them does
    /// not wait for the hold.
    lossy: BTreeSet<(NodeId, NodeId)>,
    /// The graph's links at the last full round, as each node's neighbour count followed by the neighbours:
    /// while they and every next hop stay the same, so does every backup (see [`Self::keeps_every_route`]).
    shape: Vec<u32>,
    /// Tests compare the one-pass round against the full one.
    #[cfg(test)]
    pub(super) full_rounds_only: bool,
}

impl RouteDamper {
    /// A damper that holds nothing yet (version 0, no tables), after validating `config`.
    pub fn new(config: DampingConfig) -> Result<Self, DampingConfigError> {
        let config = config.validate()?;
        Ok(Self {
            config,
            version: 0,
            ids: Vec::new(),
            held: BTreeMap::new(),
            holding: false,
            damped: Vec::new(),
            tables: OnceLock::new(),
            lossy: BTreeSet::new(),
            shape: Vec::new(),
            #[cfg(test)]
            full_rounds_only: false,
        })
    }

    pub fn config(&self) -> &DampingConfig {
        &self.config
    }

    /// Counts the changes to the damped routes; 0 before the first route.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every node's damped route table, by node id, as of [`version`](Self::version).
    pub fn tables(&self) -> &BTreeMap<NodeId, RouteTable> {
        self.tables.get_or_init(|| tables_from_trees(&self.ids, &self.damped))
    }

    /// The damped trees as of [`version`](Self::version), one per destination in the order the recomputation
    /// that changed them gave them, indexed like its graph. The same routes as [`tables`](Self::tables),
    /// without building a table per node.
    pub fn trees(&self) -> &[RouteTree] {
        &self.damped
    }

    /// Whether the cost of the link between `a` and `b` carries a loss verdict (an end reports loss on it,
    /// which its estimator gives only on evidence): a node whose held next hop is across such a link, and
    /// whose fresh best route is clearly better, switches without waiting for the hold.
    pub fn handle_link_loss(&mut self, a: &NodeId, b: &NodeId, lossy: bool) {
        let key = if a <= b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
        if lossy {
            self.lossy.insert(key);
        } else {
            self.lossy.remove(&key);
        }
    }

    /// Whether the link between the nodes at `a` and `b` of `graph` carries a loss verdict.
    fn is_lossy(&self, graph: &Graph, a: NodeIx, b: NodeIx) -> bool {
        if self.lossy.is_empty() {
            return false;
        }
        let (a, b) = (graph.id(a), graph.id(b));
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        self.lossy.iter().any(|(x, y)| x == a && y == b)
    }

    /// Whether a recomputation over the same graph could still change the routes: some node keeps a next hop
    /// that a fresh route clearly beats, and switches once that has lasted the hold time. When this is false
    /// and the graph has not changed, a recomputation is known to change nothing and can be skipped.
    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// A recomputation at `now`: `fresh` holds the shortest-path trees (from [`RouteTree::compute`] or
    /// [`MeshRoutes`](super::MeshRoutes)) over `graph`, one per destination. Destinations missing from `fresh`
    /// are dropped. Returns whether the damped routes changed (and the version with them).
    ///
    /// `graph` may be the same graph as last time, grown or changed, or a new one built from the same reports:
    /// held routes are matched by node id.
    ///
    /// # Panics
    ///
    /// When a tree was not computed over `graph` (its size does not match).
    pub fn handle_routes(&mut self, now: Duration, graph: &Graph, fresh: &[RouteTree]) -> bool {
        self.follow(graph);
        #[cfg(test)]
        let shortcut = !self.full_rounds_only;
        #[cfg(not(test))]
        let shortcut = true;
        if shortcut && self.keeps_every_route(now, graph, fresh) {
            return false;
        }
        self.shape = shape_of(graph);
        let mut changed = false;
        let mut held = BTreeMap::new();
        let mut damped = Vec::with_capacity(fresh.len());
        for tree in fresh {
            assert_eq!(tree.len(), graph.len(), "route tree computed over another graph");
            let dest = graph.id(tree.destination()).clone();
            let before = self.held.remove(&dest).unwrap_or_else(|| vec![NOTHING; graph.len()]);
            let (tree, now_held, tree_changed) = self.damp(now, graph, tree, &before);
            changed |= tree_changed;
            damped.push(tree);
            held.insert(dest, now_held);
        }
        // Destinations that are gone.
        changed |= self.held.values().flatten().any(|h| h.via != NO_HOP);
        self.held = held;
        self.holding = self.held.values().flatten().any(|h| h.beaten_since.is_some());
        if changed {
            self.version += 1;
            self.damped = damped;
            self.tables = OnceLock::new();
        }
        changed
    }

    /// The common round in a large mesh, decided in one pass: some costs moved, no link came or went, and
    /// every node keeps the next hop it holds (its fresh best, or one that is not clearly beaten for the hold
    /// time yet). Then nothing the damper gives out changes: the next hops are those of the last round, which
    /// were acyclic; and a backup depends, besides costs, only on which links exist and on the damped next
    /// hops, since the backup held is kept while it qualifies and protects as well as the best candidate,
    /// and both are matters of the tree's shape. When that is so this records the hold timers and returns
    /// true; otherwise it changes nothing and returns false, and the full round runs. The outcome is the full
    /// round's either way (a property test compares them).
    fn keeps_every_route(&mut self, now: Duration, graph: &Graph, fresh: &[RouteTree]) -> bool {
        if fresh.len() != self.held.len() || !same_shape(&self.shape, graph) {
            return false;
        }
        // (destination, node, beaten since) for the hold timers that move.
        let mut timers = Vec::new();
        for (t, tree) in fresh.iter().enumerate() {
            assert_eq!(tree.len(), graph.len(), "route tree computed over another graph");
            let Some(before) = self.held.get(graph.id(tree.destination())) else { return false };
            for (s, h) in before.iter().enumerate() {
                let s = NodeIx(s as u32);
                let Some(best) = tree.next_hop(s) else {
                    if h.via == NO_HOP {
                        continue;
                    }
                    return false;
                };
                if h.via == best.0 {
                    if h.beaten_since.is_some() {
                        timers.push((t, s, None));
                    }
                    continue;
                }
                if h.via == NO_HOP || h.via == GONE {
                    return false;
                }
                match self.hold(now, graph, tree, s, *h) {
                    Some((since, _)) if since == h.beaten_since => {}
                    Some((since, _)) => timers.push((t, s, since)),
                    None => return false,
                }
            }
        }
        for (t, s, since) in timers {
            let held = self.held.get_mut(graph.id(fresh[t].destination())).expect("checked above");
            held[s.index()].beaten_since = since;
        }
        self.holding = self.held.values().flatten().any(|h| h.beaten_since.is_some());
        true
    }

    /// Re-indexes the held routes for `graph`'s node indices.
    fn follow(&mut self, graph: &Graph) {
        let n = graph.len();
        if self.ids == graph.ids() {
            return;
        }
        // The damped trees are indexed by the current ids: fix the tables they give before the ids move.
        self.tables();
        if self.ids.len() <= n && self.ids.iter().zip(graph.nodes()).all(|(a, b)| a == b) {
            // The same graph, grown: new nodes hold nothing.
            if self.ids.len() < n {
                self.ids.extend(graph.nodes().skip(self.ids.len()).cloned());
                for held in self.held.values_mut() {
                    held.resize(n, NOTHING);
                }
            }
            return;
        }
        let map: Vec<u32> = self.ids.iter().map(|id| graph.index_of(id).map_or(GONE, |ix| ix.0)).collect();
        let translate = |x: u32| if x == NO_HOP || x == GONE { x } else { map[x as usize] };
        for held in self.held.values_mut() {
            let mut moved = vec![NOTHING; n];
            for (old, h) in held.iter().enumerate() {
                if map[old] != GONE {
                    moved[map[old] as usize] = Held {
                        via: translate(h.via),
                        backup: translate(h.backup),
                        beaten_since: h.beaten_since,
                        forced: h.forced,
                    };
                }
            }
            *held = moved;
        }
        self.ids = graph.nodes().cloned().collect();
    }

    /// Damps one destination's tree. Returns the damped tree, what to hold now, and whether any next hop or
    /// backup differs from `before`.
    fn damp(&self, now: Duration, graph: &Graph, fresh: &RouteTree, before: &[Held]) -> (RouteTree, Vec<Held>, bool) {
        let n = graph.len();
        let mut next = vec![NO_HOP; n];
        let mut since = vec![None; n];
        // Whether the node holds its next hop because an earlier one was taken from it.
        let mut forced = vec![false; n];
        let kept_backup: Vec<u32> = before.iter().map(|h| h.backup).collect();
        // How much dearer each kept next hop is than the fresh best (0 on the fresh best).
        let mut excess: Vec<Cost> = vec![0; n];
        for s in (0..n as u32).map(NodeIx) {
            let Some(best) = fresh.next_hop(s) else { continue };
            next[s.index()] = best.0;
            let h = before[s.index()];
            if h.via == best.0 {
                forced[s.index()] = h.forced;
                continue;
            }
            if h.via == NO_HOP {
                continue;
            }
            if h.via == GONE || !self.usable(graph, fresh, s, NodeIx(h.via)) {
                forced[s.index()] = true;
                continue;
            }
            if let Some((beaten_since, extra)) = self.hold(now, graph, fresh, s, h) {
                next[s.index()] = h.via;
                since[s.index()] = beaten_since;
                excess[s.index()] = extra;
                forced[s.index()] = h.forced;
            }
        }
        break_cycles(graph, fresh, &mut next, &mut since, &mut forced, &excess);
        let tree = RouteTree::from_next_hops(graph, fresh.destination(), next, &kept_backup);
        let held: Vec<Held> = (0..n as u32)
            .map(NodeIx)
            .map(|s| Held {
                via: tree.next_hop(s).map_or(NO_HOP, |v| v.0),
                backup: tree.backup(s).map_or(NO_HOP, |(b, _)| b.0),
                beaten_since: since[s.index()],
                forced: forced[s.index()],
            })
            .collect();
        let changed = held.iter().zip(before).any(|(now, was)| now.via != was.via || now.backup != was.backup);
        (tree, held, changed)
    }

    /// Whether `s`'s next hop `current` still leads toward the tree's destination: the link to it is up and
    /// it reaches the destination.
    fn usable(&self, graph: &Graph, fresh: &RouteTree, s: NodeIx, current: NodeIx) -> bool {
        graph.link_cost_ix(s.0, current.0).is_some() && fresh.cost(current).is_some() && fresh.cost(s).is_some()
    }

    /// Whether `s` may keep the next hop `held.via` (not the fresh best) toward the tree's destination: `Some`
    /// with the time it has been beaten since (if it has) and how much dearer it is than the best, or `None`
    /// to switch to the fresh best now (it fails, or has been beaten long enough: clearly for `hold`, or at
    /// all for `repair_hold` when the node was forced onto it).
    fn hold(
        &self,
        now: Duration,
        graph: &Graph,
        fresh: &RouteTree,
        s: NodeIx,
        held: Held,
    ) -> Option<(Option<Duration>, Cost)> {
        let current = NodeIx(held.via);
        let link = graph.link_cost_ix(s.0, current.0)?;
        let (best, rest) = (fresh.cost(s)?, fresh.cost(current)?);
        let through_current = link + rest;
        let gain = through_current.saturating_sub(best);
        let clearly_better =
            gain >= self.config.absolute_margin && gain as f64 >= self.config.relative_margin * through_current as f64;
        if !(clearly_better || (held.forced && gain > 0)) {
            return Some((None, gain));
        }
        let since = held.beaten_since.unwrap_or(now);
        let wait = if clearly_better && self.is_lossy(graph, s, current) {
            Duration::ZERO
        } else if clearly_better {
            self.config.hold
        } else {
            self.config.repair_hold
        };
        if now.saturating_sub(since) >= wait {
            None
        } else {
            Some((Some(since), gain))
        }
    }
}

/// `graph`'s links as [`RouteDamper::shape`] holds them.
fn shape_of(graph: &Graph) -> Vec<u32> {
    let mut shape = Vec::with_capacity(graph.len() + graph.links.iter().map(Vec::len).sum::<usize>());
    for links in &graph.links {
        shape.push(links.len() as u32);
        shape.extend(links.iter().map(|l| l.to));
    }
    shape
}

/// Whether `graph` has the links `shape` holds (in the same order).
fn same_shape(shape: &[u32], graph: &Graph) -> bool {
    let mut at = 0;
    for links in &graph.links {
        let Some(&count) = shape.get(at) else { return false };
        if count as usize != links.len() || shape.len() < at + 1 + links.len() {
            return false;
        }
        if !links.iter().zip(&shape[at + 1..]).all(|(l, &to)| l.to == to) {
            return false;
        }
        at += 1 + links.len();
    }
    at == shape.len()
}

/// Makes the next hops toward `fresh`'s destination acyclic: while following them can come back to a node,
/// the node on that cycle whose kept next hop is dearest (relative to its fresh best; lowest id on a tie)
/// switches to its fresh best. Fresh best next hops alone cannot form a cycle (each is strictly closer to the
/// destination), so every cycle has a kept next hop to drop, and each round of this loop drops at least one.
fn break_cycles(
    graph: &Graph,
    fresh: &RouteTree,
    next: &mut [u32],
    since: &mut [Option<Duration>],
    forced: &mut [bool],
    excess: &[Cost],
) {
    const NEW: u8 = 0;
    const ON_WALK: u8 = 1;
    const DONE: u8 = 2;
    let rank = graph.rank();
    loop {
        let mut state = vec![NEW; next.len()];
        let mut dropped = false;
        for start in 0..next.len() {
            let mut walk = Vec::new();
            let mut at = start as u32;
            while at != NO_HOP && state[at as usize] == NEW {
                state[at as usize] = ON_WALK;
                walk.push(at);
                at = next[at as usize];
            }
            if at != NO_HOP && state[at as usize] == ON_WALK {
                // `at` closes a cycle: the walk from its first visit on.
                let from = walk.iter().position(|&x| x == at).expect("on the walk");
                let &worst = walk[from..]
                    .iter()
                    .filter(|&&x| Some(NodeIx(next[x as usize])) != fresh.next_hop(NodeIx(x)))
                    .max_by_key(|&&x| (excess[x as usize], std::cmp::Reverse(rank[x as usize])))
                    .expect("a cycle holds a kept next hop");
                next[worst as usize] = fresh.next_hop(NodeIx(worst)).expect("kept only where a route exists").0;
                since[worst as usize] = None;
                // Taken off its route by others' changes (a failure elsewhere, usually): it returns to a
                // repaired one as a node whose next hop failed does.
                forced[worst as usize] = true;
                dropped = true;
            }
            for x in walk {
                state[x as usize] = DONE;
            }
        }
        if !dropped {
            return;
        }
    }
}
