//! Which neighbour a stream is received from.

use super::Relay;
use crate::id::{NodeId, StreamName};

/// A next hop and its backup toward one origin, from the control plane's table or the configured routes.
/// `N` names a neighbour.
#[derive(Debug, Clone, Copy)]
pub struct Hops<N> {
    pub via: N,
    pub backup: Option<N>,
}

/// The upstream a stream should use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream<T> {
    /// A usable neighbour on the routes.
    Chosen(T),
    /// No usable neighbour: the current upstream stays, since its connection lives (a node does not give up
    /// its only upstream because its probes are late), but it may not deliver.
    Kept(T),
    /// Nothing to receive the stream from.
    None,
}

impl<T> Upstream<T> {
    /// The neighbour to be subscribed to, chosen or kept.
    pub fn peer(self) -> Option<T> {
        match self {
            Upstream::Chosen(p) | Upstream::Kept(p) => Some(p),
            Upstream::None => None,
        }
    }
}

/// Chooses the upstream toward an origin: the control plane's next hop, else its backup, else the configured
/// routes' next hop, else their backup, among the neighbours `candidate` accepts. When none is accepted,
/// `current` is kept if `keep` accepts it.
pub fn choose<N: Copy>(
    table: Option<Hops<N>>,
    configured: Option<Hops<N>>,
    current: Option<N>,
    mut candidate: impl FnMut(N) -> bool,
    keep: impl FnOnce(N) -> bool,
) -> Upstream<N> {
    let chosen = [table, configured]
        .into_iter()
        .flatten()
        .flat_map(|h| [Some(h.via), h.backup])
        .flatten()
        .find(|n| candidate(*n));
    match (chosen, current.filter(|c| keep(*c))) {
        (Some(n), _) => Upstream::Chosen(n),
        (None, Some(c)) => Upstream::Kept(c),
        (None, None) => Upstream::None,
    }
}

impl Relay {
    /// The neighbour `stream` should be received from now (`Upstream::None` when this node is its origin,
    /// nobody announced it, or no neighbour qualifies). A neighbour qualifies when it is connected, its link
    /// is up, it is not downstream of this node for the stream, and it has not said the stream is
    /// unavailable through it. Without one, the current upstream is kept while its connection lives and it
    /// is not downstream of this node.
    pub fn upstream_for(&self, stream: &StreamName) -> Upstream<NodeId> {
        let Some(reg) = self.registry.owner(stream) else { return Upstream::None };
        let origin = &reg.origin;
        if *origin == self.me {
            return Upstream::None;
        }
        let sub = self.subs.get(stream);
        let downstream = |p: &NodeId| sub.is_some_and(|s| s.down.contains(p));
        let passed_over = |p: &NodeId| sub.is_some_and(|s| s.passed_over.contains_key(p));
        let table = self.tables.in_force.as_ref().and_then(|(_, t)| t.routes.iter().find(|r| &r.dest == origin));
        let table = table.map(|r| Hops { via: &r.via, backup: r.backup.as_ref() });
        let current = sub.and_then(|s| s.upstream.as_ref());
        let candidate = |p: &NodeId| p != &self.me && self.is_usable(p) && !downstream(p) && !passed_over(p);
        // The table alone first: the configured routes are computed only when it has no usable hop (the same
        // choice as with both, since the table's hops come first).
        if let Upstream::Chosen(p) = choose(table, None, current, candidate, |_| false) {
            return Upstream::Chosen(p.clone());
        }
        let configured = self.fallback_route(origin);
        match choose(
            table,
            configured.as_ref().map(|r| Hops { via: &r.primary.via, backup: r.backup.as_ref().map(|b| &b.via) }),
            current,
            candidate,
            |p| self.peers.contains(p) && !downstream(p),
        ) {
            Upstream::Chosen(p) => Upstream::Chosen(p.clone()),
            Upstream::Kept(p) => Upstream::Kept(p.clone()),
            Upstream::None => Upstream::None,
        }
    }
}
