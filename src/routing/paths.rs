//! Dijkstra from one source, by index ([`ShortestPaths`]) and by name ([`RouteTable`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

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

/// Where to send traffic for a destination, and what the path through there costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The neighbour to forward to.
    pub via: NodeId,
    /// The cost of the path through `via`: the link to it plus `via`'s route to the destination. For a
    /// primary next hop from [`RouteTable::compute`] or [`compute_all`](super::compute_all), the shortest path
    /// cost.
    pub cost: Cost,
}

/// One destination's entry in a [`RouteTable`]: the next hop, and the loop-free backup next hop to switch to
/// at once if the primary stops answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub primary: NextHop,
    /// A neighbour other than `primary.via` whose route to the destination does not come back through this
    /// node; `None` when no neighbour qualifies.
    pub backup: Option<NextHop>,
}

/// One node's routes: the next hop (and backup) toward every reachable destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    routes: BTreeMap<NodeId, Route>,
}

impl RouteTable {
    /// Shortest paths from `source` over `graph`, with backups. Among equal-cost paths the next hop is the
    /// neighbour with the lowest id, so every node computing over the same graph forwards consistently and
    /// without loops. An unknown `source` has an empty table; the source itself has no entry.
    ///
    /// Backups follow RFC 5286 from the source's own view: one Dijkstra from the source and one from each
    /// neighbour, then, toward `d` with primary `p`, a neighbour `n != p` qualifies when
    /// `dist(n, d) < dist(n, source) + dist(source, d)` (none of `n`'s shortest paths comes back through the
    /// source). Node-protecting ones (`dist(n, d) < dist(n, p) + dist(p, d)`, or `p` is `d`) come first, then
    /// the lowest `cost(source, n) + dist(n, d)`, then the lowest id. [`compute_all`](super::compute_all),
    /// which knows every node's route, uses the exact form of this condition and may find a backup where this
    /// finds none; see [`RouteTree`](super::RouteTree).
    pub fn compute(graph: &Graph, source: &NodeId) -> RouteTable {
        let Some(s) = graph.index_of(source) else { return Self::default() };
        let from_source = graph.shortest_paths(s);
        let mut table = Self::from_paths(graph, &from_source);
        let rank = graph.rank();
        let from_neighbour: HashMap<NodeIx, (Cost, ShortestPaths)> =
            graph.neighbours(s).map(|(n, link)| (n, (link, graph.shortest_paths(n)))).collect();
        for (dest, route) in table.routes.iter_mut() {
            let d = graph.index_of(dest).expect("routes lead to known nodes");
            let p = graph.index_of(&route.primary.via).expect("next hops are known nodes");
            let dist_sd = route.primary.cost;
            let dist_pd = from_neighbour[&p].1.cost(d).expect("the primary reaches the destination");
            // (unprotected, cost through, rank, hop): the smallest wins.
            let mut best: Option<(bool, Cost, u32, NodeIx)> = None;
            for (&n, (link, from_n)) in &from_neighbour {
                let (Some(dist_nd), Some(dist_ns)) = (from_n.cost(d), from_source.cost(n)) else { continue };
                if n == p || dist_nd >= dist_ns + dist_sd {
                    continue;
                }
                let protecting = p == d || from_n.cost(p).is_some_and(|dist_np| dist_nd < dist_np + dist_pd);
                let key = (!protecting, link + dist_nd, rank[n.index()], n);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
            route.backup = best.map(|(_, cost, _, n)| NextHop { via: graph.id(n).clone(), cost });
        }
        table
    }

    /// The table for paths already computed over `graph`, without backups.
    pub fn from_paths(graph: &Graph, paths: &ShortestPaths) -> RouteTable {
        let routes = (0..graph.len() as u32)
            .map(NodeIx)
            .filter_map(|dest| {
                let (via, cost) = (paths.first_hop(dest)?, paths.cost(dest)?);
                let primary = NextHop { via: graph.id(via).clone(), cost };
                Some((graph.id(dest).clone(), Route { primary, backup: None }))
            })
            .collect();
        RouteTable { routes }
    }

    /// A table from routes already sorted by destination.
    pub(super) fn from_sorted(routes: Vec<(NodeId, Route)>) -> RouteTable {
        RouteTable { routes: routes.into_iter().collect() }
    }

    pub fn next_hop(&self, dest: &NodeId) -> Option<&NextHop> {
        self.routes.get(dest).map(|r| &r.primary)
    }

    /// The backup next hop toward `dest`, if some neighbour qualifies.
    pub fn backup(&self, dest: &NodeId) -> Option<&NextHop> {
        self.routes.get(dest)?.backup.as_ref()
    }

    /// The whole entry toward `dest`: next hop and backup.
    pub fn route(&self, dest: &NodeId) -> Option<&Route> {
        self.routes.get(dest)
    }

    /// Every route's next hop, by destination id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &NextHop)> {
        self.routes.iter().map(|(d, r)| (d, &r.primary))
    }

    /// Every route (next hop and backup), by destination id.
    pub fn routes(&self) -> impl Iterator<Item = (&NodeId, &Route)> {
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
