//! Dijkstra from one source, by index ([`ShortestPaths`]) and by name ([`RouteTable`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::graph::{Cost, Graph, NodeIx};
use crate::id::NodeId;

const UNREACHABLE: Cost = Cost::MAX;
const NO_HOP: u32 = u32::MAX;

/// Shortest-path costs and first hops from one source to every node of a graph, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortestPaths {
    source: NodeIx,
    cost: Vec<Cost>,
    first_hop: Vec<u32>,
}

impl ShortestPaths {
    pub fn source(&self) -> NodeIx {
        self.source
    }

    /// The cost of the shortest path to `dest` (0 to the source itself), or `None` when unreachable.
    pub fn cost(&self, dest: NodeIx) -> Option<Cost> {
        self.cost.get(dest.index()).copied().filter(|&c| c != UNREACHABLE)
    }

    /// The source's neighbour that starts the shortest path to `dest` (lowest id among equal-cost paths), or
    /// `None` for the source itself and for unreachable nodes.
    pub fn first_hop(&self, dest: NodeIx) -> Option<NodeIx> {
        self.first_hop.get(dest.index()).copied().filter(|&h| h != NO_HOP).map(NodeIx)
    }
}

impl Graph {
    /// Shortest paths from `source` to every node: Dijkstra with a binary heap, O((V + E) log V).
    ///
    /// # Panics
    ///
    /// When `source` is not from this graph.
    pub fn shortest_paths(&self, source: NodeIx) -> ShortestPaths {
        let rank = self.rank();
        let s = source.0;
        let mut cost = vec![UNREACHABLE; self.len()];
        let mut first_hop = vec![NO_HOP; self.len()];
        let mut heap = BinaryHeap::from([Reverse((0, s))]);
        cost[s as usize] = 0;
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > cost[u as usize] {
                continue; // superseded by a cheaper entry
            }
            // Every predecessor of `u` on a shortest path is strictly cheaper (costs are >= 1), so it has been
            // popped and `first_hop[u]` is final: the lowest-ranked first hop over all of `u`'s shortest paths.
            for link in &self.links[u as usize] {
                let v = link.to as usize;
                let through = d + link.cost;
                let hop = if u == s { link.to } else { first_hop[u as usize] };
                if through < cost[v] {
                    cost[v] = through;
                    first_hop[v] = hop;
                    heap.push(Reverse((through, link.to)));
                } else if through == cost[v] && rank[hop as usize] < rank[first_hop[v] as usize] {
                    first_hop[v] = hop;
                }
            }
        }
        ShortestPaths { source, cost, first_hop }
    }
}

/// Where to send traffic for a destination, and what the whole path costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The neighbour to forward to.
    pub via: NodeId,
    /// The cost of the shortest path from the table's node to the destination.
    pub cost: Cost,
}

/// One node's routes: the next hop toward every reachable destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    routes: BTreeMap<NodeId, NextHop>,
}

impl RouteTable {
    /// Shortest paths from `source` over `graph`. Among equal-cost paths the next hop is the neighbour with
    /// the lowest id, so every node computing over the same graph forwards consistently and without loops.
    /// An unknown `source` has an empty table; the source itself has no entry.
    pub fn compute(graph: &Graph, source: &NodeId) -> RouteTable {
        match graph.index_of(source) {
            Some(s) => Self::from_paths(graph, &graph.shortest_paths(s)),
            None => Self::default(),
        }
    }

    /// The table for paths already computed over `graph`.
    pub fn from_paths(graph: &Graph, paths: &ShortestPaths) -> RouteTable {
        let routes = (0..graph.len() as u32)
            .map(NodeIx)
            .filter_map(|dest| {
                let (via, cost) = (paths.first_hop(dest)?, paths.cost(dest)?);
                Some((graph.id(dest).clone(), NextHop { via: graph.id(via).clone(), cost }))
            })
            .collect();
        RouteTable { routes }
    }

    pub fn next_hop(&self, dest: &NodeId) -> Option<&NextHop> {
        self.routes.get(dest)
    }

    /// Every route, by destination id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &NextHop)> {
        self.routes.iter()
    }

    /// How many destinations are reachable.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
