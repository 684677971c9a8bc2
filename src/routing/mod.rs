//! Routing: from probe measurements to damped, loop-free route tables with backups.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`LinkEstimator`] (`probe`): one per neighbour link on every node. Schedules the QUIC-datagram probes
//!   (fast while the link carries traffic to this end, slow otherwise), smooths their round trips into RTT
//!   and jitter, counts loss over a window, and declares the link down when probes stop coming back.
//! - [`LinkMetrics::cost`] (`metric`): the routing metric, one-way latency plus a jitter margin plus a loss
//!   penalty, in microseconds.
//! - [`Graph`]: the link-state picture (nodes and undirected links weighted by cost), fed by `handle_*` calls
//!   as links come up, change cost or fail.
//! - Path computation. [`RouteTable::compute`] runs Dijkstra from one node (and its neighbours, for backups)
//!   and gives its next hop toward every reachable destination; the mesh uses it for its own table.
//!   [`RouteTree::compute`] runs Dijkstra from one destination and gives *every* node's next hop and backup
//!   toward it, so [`compute_all`] builds every node's table toward the origins with one Dijkstra per origin,
//!   and [`MeshRoutes`] keeps those trees up to date link change by link change.
//! - [`RouteDamper`] (`damper`): hysteresis across recomputations, so that routes follow clear, sustained
//!   gains and not measurement noise, while staying loop-free; it versions the damped routes.
//! - [`Planner`] (`planner`): the control plane's whole computation in one type, from the nodes' link
//!   reports through [`graph_link`], [`MeshRoutes`] and a [`RouteDamper`] to a versioned table per node,
//!   updated for what changed since its last round. The live control replica and the simulator both run it.
//!
//! This module is pure: no clock, no sockets, no I/O. Time is a [`std::time::Duration`] since an epoch the
//! caller picks, passed into every call that needs it. The control plane, the nodes (local failover to
//! backups) and the simulator all drive the same types.
//!
//! Hop-by-hop forwarding is loop-free when every node computes over the same graph: link costs are at least
//! 1, so a node's next hop on a shortest path toward `d` is strictly closer to `d` than the node itself,
//! whatever path that next hop then picks. Ties between equal-cost paths go to the first hop with the lowest
//! [`NodeId`](crate::id::NodeId), which depends only on the graph, not on the order it was built in, so
//! replicas that see the same links push the same tables. Backups and damped next hops keep the property;
//! their modules say how.

mod damper;
mod graph;
mod mesh_routes;
mod metric;
mod paths;
mod planner;
mod probe;
mod tree;

pub use damper::{DampingConfig, DampingConfigError, RouteDamper};
pub use graph::{Cost, Graph, NodeIx, MAX_LINK_COST};
pub use mesh_routes::MeshRoutes;
pub use metric::{graph_link, LinkMetrics, LOSS_PENALTY};
pub use paths::{NextHop, Route, RouteTable, ShortestPaths};
pub use planner::{Planner, Round, VersionedTable, DRAINING_PENALTY};
pub use probe::{
    duration, nanos, next_tick, LinkEstimator, Nanos, ProbeConfig, ProbeConfigError, LOSS_EVIDENCE, LOSS_FLOOR,
};
pub use tree::{compute_all, RouteTree};

#[cfg(test)]
mod tests;
