//! Routing v1: link-state shortest paths over measured link costs.
//!
//! A [`Graph`] is the link-state picture (nodes and undirected links weighted by latency, in
//! microseconds), fed by `handle_*` calls as links come up, change cost or fail. [`RouteTable::compute`]
//! runs Dijkstra from one node and gives its next hop toward every reachable destination: the mesh uses it
//! toward a stream's origin, and the subscriptions that follow these next hops form each stream's tree.
//! [`Graph::shortest_paths`] is the same computation by index, for callers (the simulator, backup next hops)
//! that need distances and first hops without building a table of names.
//!
//! This module is pure: no clock, no sockets, no I/O. It does not measure or smooth latencies, compute
//! backup next hops or damp route changes (hysteresis); those build on it.
//!
//! Hop-by-hop forwarding is loop-free when every node computes over the same graph: link costs are at least
//! 1, so a node's next hop on a shortest path toward `d` is strictly closer to `d` than the node itself,
//! whatever path that next hop then picks. Ties between equal-cost paths go to the first hop with the lowest
//! node id, which depends only on the graph, not on the order it was built in, so replicas that see the
//! same links push the same tables.

mod graph;
mod paths;
pub mod probe;

pub use graph::{Cost, Graph, NodeIx, MAX_LINK_COST};
pub use paths::{NextHop, RouteTable, ShortestPaths};

#[cfg(test)]
mod tests;
