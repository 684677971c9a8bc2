//! The link-state graph: node ids interned to dense indices, with an adjacency list per node.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::id::NodeId;

/// A link cost in microseconds.
pub type Cost = u64;

/// Link costs are clamped to `1..=MAX_LINK_COST`: at least 1 so that every hop brings a packet strictly
/// closer to its destination (loop-freedom), at most 2^40 µs (about 12 days) so that path costs cannot
/// overflow on any graph of fewer than 2^24 nodes.
pub const MAX_LINK_COST: Cost = 1 << 40;

/// A node's index in its [`Graph`]. Nodes are never removed, so an index stays valid for the graph's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIx(pub(super) u32);

impl NodeIx {
    /// The node added `index`-th to its graph (counting from 0). For callers that add nodes in an order of
    /// their own and index their own vectors the same way; using it on another graph is a logic error that
    /// indexing may panic on.
    pub fn new(index: u32) -> NodeIx {
        NodeIx(index)
    }

    /// The index as a `usize`, for indexing per-node vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Link {
    pub(super) to: u32,
    pub(super) cost: Cost,
}

/// The link-state picture: nodes and undirected weighted links.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    ids: Vec<NodeId>,
    index: HashMap<NodeId, u32>,
    pub(super) links: Vec<Vec<Link>>,
    /// Each node's position in `NodeId` order, so that tie-breaks do not depend on insertion order. Built on
    /// first use after nodes change.
    rank: OnceLock<Vec<u32>>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` if it is unknown; returns its index either way.
    pub fn add_node(&mut self, n: &NodeId) -> NodeIx {
        if let Some(&ix) = self.index.get(n) {
            return NodeIx(ix);
        }
        let ix = u32::try_from(self.ids.len()).expect("more than 2^32 nodes");
        self.ids.push(n.clone());
        self.index.insert(n.clone(), ix);
        self.links.push(Vec::new());
        self.rank = OnceLock::new();
        NodeIx(ix)
    }

    /// Adds (or updates the cost of) the undirected link a—b; adds unknown nodes. The cost is clamped to
    /// `1..=MAX_LINK_COST`; a link from a node to itself is ignored.
    pub fn handle_link(&mut self, a: &NodeId, b: &NodeId, cost: Cost) {
        let (a, b) = (self.add_node(a), self.add_node(b));
        self.handle_link_ix(a, b, cost);
    }

    /// [`handle_link`](Self::handle_link) between known nodes, by index.
    ///
    /// # Panics
    ///
    /// When `a` or `b` is not from this graph.
    pub fn handle_link_ix(&mut self, a: NodeIx, b: NodeIx, cost: Cost) {
        let (a, b) = (a.0, b.0);
        if a == b {
            return;
        }
        let cost = cost.clamp(1, MAX_LINK_COST);
        for (from, to) in [(a, b), (b, a)] {
            let links = &mut self.links[from as usize];
            match links.iter_mut().find(|l| l.to == to) {
                Some(link) => link.cost = cost,
                None => links.push(Link { to, cost }),
            }
        }
    }

    /// Removes the link a—b (a failure); no-op when absent.
    pub fn handle_link_down(&mut self, a: &NodeId, b: &NodeId) {
        if let (Some(a), Some(b)) = (self.index_of(a), self.index_of(b)) {
            self.handle_link_down_ix(a, b);
        }
    }

    /// [`handle_link_down`](Self::handle_link_down) by index.
    ///
    /// # Panics
    ///
    /// When `a` or `b` is not from this graph.
    pub fn handle_link_down_ix(&mut self, a: NodeIx, b: NodeIx) {
        self.links[a.index()].retain(|l| l.to != b.0);
        self.links[b.index()].retain(|l| l.to != a.0);
    }

    /// Removes every link of `n` (the node failed); the node itself stays known, unreachable.
    pub fn handle_node_down(&mut self, n: &NodeId) {
        if let Some(n) = self.index_of(n) {
            for link in std::mem::take(&mut self.links[n.index()]) {
                self.links[link.to as usize].retain(|l| l.to != n.0);
            }
        }
    }

    /// Every known node, in the order they were added (their indices).
    pub fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.ids.iter()
    }

    /// Every known node's id, by index.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn index_of(&self, n: &NodeId) -> Option<NodeIx> {
        self.index.get(n).map(|&ix| NodeIx(ix))
    }

    /// The id of the node at `ix`.
    ///
    /// # Panics
    ///
    /// When `ix` is not from this graph.
    pub fn id(&self, ix: NodeIx) -> &NodeId {
        &self.ids[ix.index()]
    }

    /// The current cost of the link a—b, if it is up.
    pub fn link_cost(&self, a: &NodeId, b: &NodeId) -> Option<Cost> {
        let (a, b) = (self.index_of(a)?, self.index_of(b)?);
        self.links[a.index()].iter().find(|l| l.to == b.0).map(|l| l.cost)
    }

    /// The cost of the link a—b by index, if it is up.
    pub(super) fn link_cost_ix(&self, a: u32, b: u32) -> Option<Cost> {
        self.links[a as usize].iter().find(|l| l.to == b).map(|l| l.cost)
    }

    /// The neighbours of `n` and the cost of the link to each, in no particular order.
    pub fn neighbours(&self, n: NodeIx) -> impl Iterator<Item = (NodeIx, Cost)> + '_ {
        self.links[n.index()].iter().map(|l| (NodeIx(l.to), l.cost))
    }

    /// Each node's position when the nodes are sorted by id.
    pub(super) fn rank(&self) -> &[u32] {
        self.rank.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.ids.len() as u32).collect();
            order.sort_unstable_by(|&a, &b| self.ids[a as usize].cmp(&self.ids[b as usize]));
            let mut rank = vec![0; order.len()];
            for (pos, ix) in order.into_iter().enumerate() {
                rank[ix as usize] = pos as u32;
            }
            rank
        })
    }
}
