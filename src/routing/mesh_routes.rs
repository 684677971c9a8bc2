//! The control plane's routing state: the link-state graph plus one [`RouteTree`] per destination, kept up
//! to date link change by link change.
//!
//! [`compute_all`](super::compute_all) recomputes everything from a graph; [`MeshRoutes`] owns the graph and
//! updates only the trees a change can affect (see [`RouteTree`]'s incremental updates), which is what a
//! control plane receiving one link report at a time, or the simulator replaying a fault, wants. Either way the
//! trees are the same as a fresh computation over the same graph.

use std::collections::BTreeMap;

use super::graph::{Cost, Graph, NodeIx};
use super::paths::RouteTable;
use super::tree::{tables_from_trees, RouteTree};
use crate::id::NodeId;

/// Past this many link changes at once, [`MeshRoutes::handle_links_ix`] computes the trees afresh: at 1,000
/// and 10,000 nodes a fresh tree costs about as much as 100-130 median incremental updates (`cargo bench
/// --bench routing`), and an update's mean is well above its median.
pub const AFRESH_AFTER: usize = 64;

/// A graph and every node's routes toward a fixed set of destinations (the origins).
#[derive(Debug, Clone)]
pub struct MeshRoutes {
    graph: Graph,
    /// One tree per destination, in destination id order.
    trees: Vec<RouteTree>,
}

impl MeshRoutes {
    /// Routes over `graph` toward `destinations`; a destination unknown to the graph is added to it as a node
    /// without links (unreachable until its links come up). Duplicates are ignored.
    pub fn new(mut graph: Graph, destinations: &[NodeId]) -> Self {
        let mut dests: Vec<NodeIx> = destinations.iter().map(|d| graph.add_node(d)).collect();
        dests.sort_by(|a, b| graph.id(*a).cmp(graph.id(*b)));
        dests.dedup();
        let trees = dests.into_iter().map(|d| RouteTree::compute(&graph, d)).collect();
        Self { graph, trees }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// One tree per destination, in destination id order.
    pub fn trees(&self) -> &[RouteTree] {
        &self.trees
    }

    /// The tree toward `dest`, if it is one of the destinations.
    pub fn tree(&self, dest: &NodeId) -> Option<&RouteTree> {
        let d = self.graph.index_of(dest)?;
        self.trees.iter().find(|t| t.destination() == d)
    }

    /// Every node's route table toward the destinations, by node id.
    pub fn tables(&self) -> BTreeMap<NodeId, RouteTable> {
        tables_from_trees(self.graph.ids(), &self.trees)
    }

    /// Adds `n` if it is unknown, without links (unreachable until its links come up); returns its index
    /// either way.
    pub fn add_node(&mut self, n: &NodeId) -> NodeIx {
        let ix = self.graph.add_node(n);
        for tree in &mut self.trees {
            tree.grow(self.graph.len());
        }
        ix
    }

    /// The link a—b came up or changed cost (see [`Graph::handle_link`]). Returns how many destinations'
    /// routes changed.
    pub fn handle_link(&mut self, a: &NodeId, b: &NodeId, cost: Cost) -> usize {
        if a == b || self.graph.link_cost(a, b) == Some(cost.clamp(1, super::MAX_LINK_COST)) {
            return 0;
        }
        let (a, b) = (self.add_node(a), self.add_node(b));
        self.graph.handle_link_ix(a, b, cost);
        self.update(a, b)
    }

    /// The link a—b failed. Returns how many destinations' routes changed.
    pub fn handle_link_down(&mut self, a: &NodeId, b: &NodeId) -> usize {
        match (self.graph.index_of(a), self.graph.index_of(b)) {
            (Some(a), Some(b)) if self.graph.link_cost_ix(a.0, b.0).is_some() => {
                self.graph.handle_link_down_ix(a, b);
                self.update(a, b)
            }
            _ => 0,
        }
    }

    /// [`handle_link`](Self::handle_link) between known nodes, by index. Returns whether the graph changed
    /// (the link is new or its cost moved), which can change the routes even where no tree does.
    ///
    /// # Panics
    ///
    /// When `a` or `b` is not from this graph.
    pub fn handle_link_ix(&mut self, a: NodeIx, b: NodeIx, cost: Cost) -> bool {
        self.handle_ix(a, b, Some(cost))
    }

    /// [`handle_link_down`](Self::handle_link_down) by index. Returns whether the graph changed (the link
    /// was up).
    ///
    /// # Panics
    ///
    /// When `a` or `b` is not from this graph.
    pub fn handle_link_down_ix(&mut self, a: NodeIx, b: NodeIx) -> bool {
        self.handle_ix(a, b, None)
    }

    /// Link changes that arrive together (a control round's reports), by index: `Some(cost)` for a link up
    /// or changed, `None` for a link down. While they are few, the trees follow them one by one; once they
    /// are more than [`AFRESH_AFTER`], every change goes into the graph and the trees are computed afresh,
    /// which costs about as much as that many incremental updates (a mesh that starts, a region cut off).
    /// The trees are the same either way. Returns whether the graph changed.
    ///
    /// # Panics
    ///
    /// When a node is not from this graph.
    pub fn handle_links_ix(&mut self, changes: &[(NodeIx, NodeIx, Option<Cost>)]) -> bool {
        if changes.len() <= AFRESH_AFTER {
            return changes.iter().fold(false, |changed, &(a, b, cost)| self.handle_ix(a, b, cost) | changed);
        }
        let changed = changes.iter().fold(false, |changed, &(a, b, cost)| self.set_link_ix(a, b, cost) | changed);
        if changed {
            for tree in &mut self.trees {
                *tree = RouteTree::compute(&self.graph, tree.destination());
            }
        }
        changed
    }

    /// One link change into the graph, then the trees: whether the graph changed.
    fn handle_ix(&mut self, a: NodeIx, b: NodeIx, cost: Option<Cost>) -> bool {
        let changed = self.set_link_ix(a, b, cost);
        if changed {
            self.update(a, b);
        }
        changed
    }

    /// One link change into the graph only, the trees left as they are: `Some(cost)` up or changed, `None`
    /// down. Returns whether the graph changed (a link to itself, the cost it has, or a link it does not
    /// have going down change nothing).
    fn set_link_ix(&mut self, a: NodeIx, b: NodeIx, cost: Option<Cost>) -> bool {
        let held = self.graph.link_cost_ix(a.0, b.0);
        match cost {
            Some(cost) if a != b && held != Some(cost.clamp(1, super::MAX_LINK_COST)) => {
                self.graph.handle_link_ix(a, b, cost);
                true
            }
            None if held.is_some() => {
                self.graph.handle_link_down_ix(a, b);
                true
            }
            _ => false,
        }
    }

    /// Node `n` failed: every link of it is down. Returns how many destinations' routes changed.
    pub fn handle_node_down(&mut self, n: &NodeId) -> usize {
        let Some(ix) = self.graph.index_of(n) else { return 0 };
        let neighbours: Vec<NodeId> = self.graph.neighbours(ix).map(|(m, _)| self.graph.id(m).clone()).collect();
        let mut changed = vec![false; self.trees.len()];
        for m in &neighbours {
            self.graph.handle_link_down(n, m);
            let (a, b) = (ix, self.graph.index_of(m).expect("a neighbour is known"));
            for (tree, changed) in self.trees.iter_mut().zip(&mut changed) {
                *changed |= tree.handle_link_change(&self.graph, a, b);
            }
        }
        changed.iter().filter(|&&c| c).count()
    }

    fn update(&mut self, a: NodeIx, b: NodeIx) -> usize {
        self.trees.iter_mut().map(|tree| tree.handle_link_change(&self.graph, a, b)).filter(|&changed| changed).count()
    }
}
