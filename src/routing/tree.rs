//! Route trees: every node's next hop and loop-free backup toward one destination.
//!
//! Links are undirected, so one Dijkstra *from* a destination `d` gives every node's distance *to* `d`, and
//! with it every node's next hop toward `d`: the neighbour with the lowest id among those that start a
//! shortest path (the same choice [`RouteTable::compute`](super::RouteTable::compute) makes from the node's
//! side). Those next hops form a tree rooted at `d`: the tree a stream from origin `d` flows down. The control
//! plane needs every node's route toward each origin, so it computes one [`RouteTree`] per origin instead of
//! one Dijkstra per node.
//!
//! # Backups
//!
//! A backup next hop is what a node switches to on its own, at once, when its primary next hop stops
//! answering, before the control plane has recomputed anything. For node `s` with primary `p`, a neighbour
//! `n != p` qualifies when **`n`'s own route toward `d` does not pass through `s`**: in the tree, `n` is not in
//! `s`'s subtree. Forwarding one hop to `n` and then along the primaries then reaches `d` without coming back,
//! and without the link `s`—`p`. This is RFC 5286's loop-free alternate condition made exact for this mesh:
//! RFC 5286's inequality `dist(n, d) < dist(n, s) + dist(s, d)` guarantees it for *any* of `n`'s equal-cost
//! paths, because a router does not know which one `n` uses; here every node's choice is in the same tree, so
//! every RFC 5286 alternate qualifies and so do some equal-cost ones the inequality rejects. The check stays
//! exact when next hops are not shortest (the damped trees of [`RouteDamper`](super::RouteDamper)), where the
//! inequality would not be enough. It relies on every node forwarding by tables from the same computation,
//! which is how the control plane pushes them; a node that computes its own table alone
//! ([`RouteTable::compute`](super::RouteTable::compute)) uses the inequality.
//!
//! Among qualifying neighbours, a **node-protecting** one, whose route also avoids `p` (not in `p`'s
//! subtree), is preferred, so that a failed neighbour node, not only a failed link, is routed around; then the
//! lowest cost through it (link plus its route); then the lowest id. When `p` is the destination itself no
//! alternate can avoid it, and every qualifying neighbour counts as protecting.
//!
//! When no neighbour qualifies the node has no backup, even if the graph stays connected without the primary
//! link (the way around then starts with a neighbour whose route passes through the node itself, so it needs
//! other nodes to change their routes too). Such a node loses traffic toward `d` until the control plane
//! recomputes, which it does within a second of the failure report.
//!
//! # Incremental updates
//!
//! [`MeshRoutes`](super::MeshRoutes) keeps one tree per destination and, when one link changes, updates only
//! what the change can reach: a cost increase or failure of a tree link re-runs Dijkstra inside the subtree
//! below it, seeded from the nodes around it; a decrease or a new link propagates improvements outward from
//! its ends; a change to a link outside the tree only re-picks the backups of its two ends. Backups are
//! re-picked only next to nodes whose route changed. The result is identical to a fresh
//! [`RouteTree::compute`] (a property test checks it).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::graph::{Cost, Graph, NodeIx};
use super::paths::{NextHop, Route, RouteTable};
use crate::id::NodeId;

pub(super) const UNREACHABLE: Cost = Cost::MAX;
pub(super) const NO_HOP: u32 = u32::MAX;
const NOT_IN_TREE: u32 = u32::MAX;

/// Every node's next hop and backup toward one destination, by index.
///
/// Next hops are the shortest-path ones, ties to the lowest id (the same as [`RouteTable::compute`]). A node's
/// backup is a neighbour, other than its next hop, whose own route does not pass through the node; one whose
/// route also avoids the next hop (node-protecting) is preferred, then the cheapest, then the lowest id.
/// Why this is RFC 5286's loop-free alternate condition, made exact, is explained in `src/routing/tree.rs`.
#[derive(Debug, Clone)]
pub struct RouteTree {
    dest: NodeIx,
    /// Each node's next hop (its parent in the tree), `NO_HOP` for the destination and unreachable nodes.
    next: Vec<u32>,
    /// The cost of each node's route along `next` to the destination; `UNREACHABLE` when it has none.
    cost: Vec<Cost>,
    backup: Vec<u32>,
    /// The cost through the backup: the link to it plus its route.
    backup_cost: Vec<Cost>,
    /// Preorder position of each node in the tree (`NOT_IN_TREE` for unreachable nodes); a subtree is the
    /// contiguous run `enter[r] .. enter[r] + size[r]` of `order`.
    enter: Vec<u32>,
    size: Vec<u32>,
    order: Vec<u32>,
}

/// Two trees are equal when they route alike: same destination, next hops, backups and costs.
impl PartialEq for RouteTree {
    fn eq(&self, other: &Self) -> bool {
        self.dest == other.dest
            && self.next == other.next
            && self.cost == other.cost
            && self.backup == other.backup
            && self.backup_cost == other.backup_cost
    }
}

impl Eq for RouteTree {}

impl RouteTree {
    /// Shortest-path next hops and backups of every node of `graph` toward `dest`: one Dijkstra, then one pass
    /// over the links, O((V + E) log V).
    ///
    /// # Panics
    ///
    /// When `dest` is not from this graph.
    pub fn compute(graph: &Graph, dest: NodeIx) -> RouteTree {
        let n = graph.len();
        let mut tree = RouteTree::unreachable(dest, n);
        tree.cost = distances_to(graph, dest);
        let rank = graph.rank();
        for x in 0..n as u32 {
            tree.next[x as usize] = tree.pick_next(graph, rank, x);
        }
        tree.index_subtrees();
        tree.pick_backups(graph, 0..n as u32, None);
        tree
    }

    /// The tree given by arbitrary next hops (the damper's), which must be acyclic and lead to `dest`; costs
    /// are those of the routes they give. Backups are re-picked against these next hops; a node's entry in
    /// `keep_backup` that still qualifies, and protects at least as well as the best candidate, is kept.
    pub(super) fn from_next_hops(graph: &Graph, dest: NodeIx, next: Vec<u32>, keep_backup: &[u32]) -> RouteTree {
        let n = graph.len();
        let mut tree = RouteTree::unreachable(dest, n);
        tree.next = next;
        tree.index_subtrees();
        tree.cost[dest.index()] = 0;
        for i in 1..tree.order.len() {
            let x = tree.order[i];
            let parent = tree.next[x as usize];
            let link = graph.link_cost_ix(x, parent).expect("a next hop is a neighbour");
            tree.cost[x as usize] = tree.cost[parent as usize] + link;
        }
        tree.pick_backups(graph, 0..n as u32, Some(keep_backup));
        tree
    }

    fn unreachable(dest: NodeIx, n: usize) -> RouteTree {
        RouteTree {
            dest,
            next: vec![NO_HOP; n],
            cost: vec![UNREACHABLE; n],
            backup: vec![NO_HOP; n],
            backup_cost: vec![UNREACHABLE; n],
            enter: vec![NOT_IN_TREE; n],
            size: vec![0; n],
            order: Vec::new(),
        }
    }

    /// The destination every route in this tree leads to.
    pub fn destination(&self) -> NodeIx {
        self.dest
    }

    /// How many nodes the tree covers (the graph's size when it was computed).
    pub fn len(&self) -> usize {
        self.next.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// The cost of `from`'s route to the destination (0 for the destination), `None` when it has none.
    pub fn cost(&self, from: NodeIx) -> Option<Cost> {
        self.cost.get(from.index()).copied().filter(|&c| c != UNREACHABLE)
    }

    /// `from`'s next hop toward the destination; `None` for the destination itself and unreachable nodes.
    pub fn next_hop(&self, from: NodeIx) -> Option<NodeIx> {
        self.next.get(from.index()).copied().filter(|&h| h != NO_HOP).map(NodeIx)
    }

    /// `from`'s backup next hop and the cost through it, when a neighbour qualifies.
    pub fn backup(&self, from: NodeIx) -> Option<(NodeIx, Cost)> {
        let at = from.index();
        self.backup.get(at).copied().filter(|&h| h != NO_HOP).map(|h| (NodeIx(h), self.backup_cost[at]))
    }

    /// Whether `x`'s route passes through `r` (or `x` is `r`).
    fn in_subtree(&self, r: u32, x: u32) -> bool {
        let (er, ex) = (self.enter[r as usize], self.enter[x as usize]);
        er != NOT_IN_TREE && ex != NOT_IN_TREE && er <= ex && ex < er + self.size[r as usize]
    }

    /// The lowest-ranked neighbour that starts a shortest path from `x`, given final distances.
    fn pick_next(&self, graph: &Graph, rank: &[u32], x: u32) -> u32 {
        let dist = self.cost[x as usize];
        if x == self.dest.0 || dist == UNREACHABLE {
            return NO_HOP;
        }
        let mut best = NO_HOP;
        for link in &graph.links[x as usize] {
            let through = self.cost[link.to as usize];
            if through != UNREACHABLE
                && through + link.cost == dist
                && (best == NO_HOP || rank[link.to as usize] < rank[best as usize])
            {
                best = link.to;
            }
        }
        best
    }

    /// Numbers the tree in preorder from the destination, so that subtree membership is an interval test.
    fn index_subtrees(&mut self) {
        let n = self.next.len();
        // Children in compressed rows: the children of `p` are `kids[start[p]..start[p + 1]]`.
        let mut start = vec![0u32; n + 1];
        for &p in &self.next {
            if p != NO_HOP {
                start[p as usize + 1] += 1;
            }
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut kids = vec![0u32; start[n] as usize];
        for (x, &p) in self.next.iter().enumerate() {
            if p != NO_HOP {
                kids[fill[p as usize] as usize] = x as u32;
                fill[p as usize] += 1;
            }
        }
        self.enter.clear();
        self.enter.resize(n, NOT_IN_TREE);
        self.size.clear();
        self.size.resize(n, 0);
        self.order.clear();
        let mut stack = vec![self.dest.0];
        while let Some(x) = stack.pop() {
            self.enter[x as usize] = self.order.len() as u32;
            self.order.push(x);
            stack.extend_from_slice(&kids[start[x as usize] as usize..start[x as usize + 1] as usize]);
        }
        for &x in self.order.iter().rev() {
            self.size[x as usize] += 1;
            let p = self.next[x as usize];
            if p != NO_HOP {
                self.size[p as usize] += self.size[x as usize];
            }
        }
    }

    /// Re-picks the backups of `nodes`; returns whether any changed.
    fn pick_backups(&mut self, graph: &Graph, nodes: impl IntoIterator<Item = u32>, keep: Option<&[u32]>) -> bool {
        let rank = graph.rank();
        let mut changed = false;
        for s in nodes {
            let kept = keep.and_then(|k| k.get(s as usize)).copied().unwrap_or(NO_HOP);
            let (hop, cost) = self.pick_backup(graph, rank, s, kept);
            let at = s as usize;
            if self.backup[at] != hop || self.backup_cost[at] != cost {
                self.backup[at] = hop;
                self.backup_cost[at] = cost;
                changed = true;
            }
        }
        changed
    }

    /// `s`'s best backup (see the module docs), or `kept` when it still qualifies and protects as well.
    fn pick_backup(&self, graph: &Graph, rank: &[u32], s: u32, kept: u32) -> (u32, Cost) {
        let primary = self.next[s as usize];
        if primary == NO_HOP {
            return (NO_HOP, UNREACHABLE);
        }
        // (unprotected, cost through, rank, hop): the smallest wins.
        let mut best: Option<(bool, Cost, u32, u32)> = None;
        let mut kept_key = None;
        for link in &graph.links[s as usize] {
            let n = link.to;
            let route = self.cost[n as usize];
            if n == primary || route == UNREACHABLE || self.in_subtree(s, n) {
                continue;
            }
            let protecting = primary == self.dest.0 || !self.in_subtree(primary, n);
            let key = (!protecting, link.cost + route, rank[n as usize], n);
            if n == kept {
                kept_key = Some(key);
            }
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        let chosen = match (kept_key, best) {
            (Some(k), Some(b)) if k.0 <= b.0 => k,
            (_, b) => match b {
                Some(b) => b,
                None => return (NO_HOP, UNREACHABLE),
            },
        };
        (chosen.3, chosen.1)
    }

    /// Extends the tree to `n` nodes: the new ones have no route (they have no links yet).
    pub(super) fn grow(&mut self, n: usize) {
        if self.next.len() < n {
            for v in [&mut self.next, &mut self.backup] {
                v.resize(n, NO_HOP);
            }
            for v in [&mut self.cost, &mut self.backup_cost] {
                v.resize(n, UNREACHABLE);
            }
            self.enter.resize(n, NOT_IN_TREE);
            self.size.resize(n, 0);
        }
    }

    /// Brings the tree up to date after the link `a`—`b` changed cost, appeared or failed in `graph` (which
    /// already holds the change; nodes it added are appended). Returns whether any route, backup or cost in
    /// the tree changed. Only for shortest-path trees from [`RouteTree::compute`].
    pub(super) fn handle_link_change(&mut self, graph: &Graph, a: NodeIx, b: NodeIx) -> bool {
        let n = graph.len();
        self.grow(n);
        let (a, b) = (a.0, b.0);
        let rank = graph.rank();
        let link = graph.link_cost_ix(a, b);
        // Nodes whose distance changed, and nodes whose next hop must be re-picked.
        let mut moved: Vec<u32> = Vec::new();
        let mut repick: Vec<u32> = vec![a, b];
        let mut heap = BinaryHeap::new();

        // Worse or gone: a tree link got dearer or failed. Only the subtree below it depended on it; re-run
        // Dijkstra inside that subtree, seeded from its neighbours outside (whose distances do not change).
        let tree_link = if self.next[a as usize] == b {
            Some((a, b))
        } else if self.next[b as usize] == a {
            Some((b, a))
        } else {
            None
        };
        if let Some((child, parent)) = tree_link {
            let old = self.cost[child as usize] - self.cost[parent as usize];
            if link.is_none_or(|c| c > old) {
                let (from, len) = (self.enter[child as usize] as usize, self.size[child as usize] as usize);
                let members = self.order[from..from + len].to_vec();
                let old_cost: Vec<Cost> = members.iter().map(|&x| self.cost[x as usize]).collect();
                for &x in &members {
                    self.cost[x as usize] = UNREACHABLE;
                }
                for &x in &members {
                    let mut best = UNREACHABLE;
                    for l in &graph.links[x as usize] {
                        let through = self.cost[l.to as usize];
                        if through != UNREACHABLE && !self.in_subtree(child, l.to) {
                            best = best.min(through + l.cost);
                        }
                    }
                    if best != UNREACHABLE {
                        self.cost[x as usize] = best;
                        heap.push(Reverse((best, x)));
                    }
                }
                while let Some(Reverse((d, x))) = heap.pop() {
                    if d > self.cost[x as usize] {
                        continue;
                    }
                    for l in &graph.links[x as usize] {
                        let y = l.to as usize;
                        if d + l.cost < self.cost[y] && self.in_subtree(child, l.to) {
                            self.cost[y] = d + l.cost;
                            heap.push(Reverse((d + l.cost, l.to)));
                        }
                    }
                }
                for (&x, &old) in members.iter().zip(&old_cost) {
                    if self.cost[x as usize] != old {
                        moved.push(x);
                    }
                }
                repick.extend_from_slice(&members);
            }
        }

        // Better or new: propagate the improvement outward from the link's ends.
        if let Some(c) = link {
            for (u, v) in [(a, b), (b, a)] {
                let through = self.cost[v as usize];
                if through != UNREACHABLE && through + c < self.cost[u as usize] {
                    self.cost[u as usize] = through + c;
                    heap.push(Reverse((through + c, u)));
                }
            }
            let mut improved = Vec::new();
            while let Some(Reverse((d, x))) = heap.pop() {
                if d > self.cost[x as usize] {
                    continue;
                }
                improved.push(x);
                for l in &graph.links[x as usize] {
                    let y = l.to as usize;
                    if d + l.cost < self.cost[y] {
                        self.cost[y] = d + l.cost;
                        heap.push(Reverse((d + l.cost, l.to)));
                    }
                }
            }
            // A neighbour of an improved node may now have an equal-cost path through it (a new tie).
            for &x in &improved {
                repick.extend(graph.links[x as usize].iter().map(|l| l.to));
            }
            repick.extend_from_slice(&improved);
            moved.extend(improved);
        }

        let mut rerouted = Vec::new();
        for &x in &repick {
            let hop = self.pick_next(graph, rank, x);
            if hop != self.next[x as usize] {
                self.next[x as usize] = hop;
                rerouted.push(x);
            }
        }
        if rerouted.is_empty() && moved.is_empty() {
            // Nothing moved: only the two ends' backups, over the changed link, can change.
            return self.pick_backups(graph, [a, b], None);
        }
        // A backup of `s` depends on its next hop, on its neighbours' costs, and on whether its neighbours'
        // routes pass through `s` or its next hop: it can change only next to a node whose route changed,
        // that is a node whose cost changed or that lies below a node whose next hop changed.
        let mut changed_route = vec![false; n];
        for &x in &moved {
            changed_route[x as usize] = true;
        }
        if !rerouted.is_empty() {
            self.index_subtrees();
            // In preorder, so that a subtree inside one already marked is skipped.
            rerouted.sort_unstable_by_key(|&r| self.enter[r as usize]);
            let mut marked_until = 0;
            for r in rerouted {
                let (from, len) = (self.enter[r as usize], self.size[r as usize]);
                if from == NOT_IN_TREE {
                    changed_route[r as usize] = true;
                } else if from >= marked_until {
                    for &x in &self.order[from as usize..(from + len) as usize] {
                        changed_route[x as usize] = true;
                    }
                    marked_until = from + len;
                }
            }
        }
        let mut affected = vec![false; n];
        affected[a as usize] = true;
        affected[b as usize] = true;
        for x in (0..n).filter(|&x| changed_route[x]) {
            affected[x] = true;
            for l in &graph.links[x] {
                affected[l.to as usize] = true;
            }
        }
        self.pick_backups(graph, (0..n as u32).filter(|&x| affected[x as usize]), None);
        true
    }
}

/// Every node's shortest distance to `dest` (links are undirected): Dijkstra from `dest`.
fn distances_to(graph: &Graph, dest: NodeIx) -> Vec<Cost> {
    let mut cost = vec![UNREACHABLE; graph.len()];
    let mut heap = BinaryHeap::with_capacity(graph.len());
    cost[dest.index()] = 0;
    heap.push(Reverse((0, dest.0)));
    while let Some(Reverse((d, u))) = heap.pop() {
        if d > cost[u as usize] {
            continue;
        }
        for link in &graph.links[u as usize] {
            let through = d + link.cost;
            if through < cost[link.to as usize] {
                cost[link.to as usize] = through;
                heap.push(Reverse((through, link.to)));
            }
        }
    }
    cost
}

/// Every node's route table toward the destinations of `trees`, by node id: the name-keyed form the control
/// plane pushes. Every node of `graph` gets a table, empty when it reaches none of the destinations.
/// `ids` are the graph's node ids by index.
pub(super) fn tables_from_trees(ids: &[NodeId], trees: &[RouteTree]) -> BTreeMap<NodeId, RouteTable> {
    let id = |ix: NodeIx| &ids[ix.index()];
    let mut by_dest: Vec<&RouteTree> = trees.iter().collect();
    by_dest.sort_by(|x, y| id(x.dest).cmp(id(y.dest)));
    let mut routes: Vec<Vec<(NodeId, Route)>> = vec![Vec::new(); ids.len()];
    for tree in by_dest {
        let dest = id(tree.dest);
        for (s, table) in routes.iter_mut().enumerate().take(tree.len()) {
            let s = NodeIx(s as u32);
            let (Some(via), Some(cost)) = (tree.next_hop(s), tree.cost(s)) else { continue };
            let primary = NextHop { via: id(via).clone(), cost };
            let backup = tree.backup(s).map(|(via, cost)| NextHop { via: id(via).clone(), cost });
            table.push((dest.clone(), Route { primary, backup }));
        }
    }
    routes.into_iter().enumerate().map(|(s, routes)| (ids[s].clone(), RouteTable::from_sorted(routes))).collect()
}

/// Every node's route table (next hop and backup) toward each of `destinations`, by node id: one Dijkstra per
/// destination, however many nodes. Destinations unknown to `graph` are skipped. The same graph always gives
/// the same tables, whatever order its links were added in and whatever order `destinations` come in.
pub fn compute_all(graph: &Graph, destinations: &[NodeId]) -> BTreeMap<NodeId, RouteTable> {
    let mut dests: Vec<NodeIx> = destinations.iter().filter_map(|d| graph.index_of(d)).collect();
    dests.sort_unstable();
    dests.dedup();
    let trees: Vec<RouteTree> = dests.into_iter().map(|d| RouteTree::compute(graph, d)).collect();
    tables_from_trees(graph.ids(), &trees)
}
