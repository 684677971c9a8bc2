//! What a driver may read of a relay's state beyond its actions: the simulator's view of one node.
//!
//! A live node needs none of this (its shell acts on [`Action`](super::Action)s and the per-object answers);
//! the simulator, which moves objects and reports without running the node's data path, reads here the very
//! state the node's own decisions left: who a stream is forwarded to, what the node would report of each
//! link, which origin a stream belongs to. Nothing here changes a decision.

use std::ops::RangeInclusive;

use super::{ConnId, Relay};
use crate::id::{NodeId, StreamName};
use crate::routing::{LinkMetrics, Nanos};

impl Relay {
    /// The origin that announced `stream`, if any did.
    pub fn origin_of(&self, stream: &StreamName) -> Option<&NodeId> {
        self.registry.owner(stream).map(|r| &r.origin)
    }

    /// The connections to the connected neighbours subscribed to `stream` through this node: those a new
    /// object of the stream is forwarded to ([`Relay::handle_incoming`]), but for the one it came from.
    pub fn downstream(&self, stream: &StreamName) -> impl Iterator<Item = ConnId> + '_ {
        self.subs.get(stream).into_iter().flat_map(|s| &s.down).filter_map(|p| Some(self.peers.get(p)?.conn))
    }

    /// Whether a make-before-break of any stream is in progress (see [`Relay::switching_to`]).
    pub fn switching(&self) -> bool {
        !self.releases.is_empty()
    }

    /// The upstream `stream` was moved to while an old one still feeds it (a make-before-break in
    /// progress), if any: the simulator, which moves objects without the relays, tells the relay when an
    /// object from it arrives ([`Relay::handle_incoming`]), since that ends the make-before-break.
    pub fn switching_to(&self, stream: &StreamName) -> Option<&NodeId> {
        if self.releases.iter().all(|r| r.stream != *stream) {
            return None;
        }
        self.subs.get(stream)?.upstream.as_ref()
    }

    /// What [`Relay::report`] says of each connected link, by connection: its metrics, or `None` when the
    /// link is reported down (judged down, or not measured yet). Moves the estimators' reports on as
    /// `report` does. It changes only when the relay is driven (a `handle_*` call).
    pub fn link_ends(&mut self) -> impl Iterator<Item = (ConnId, Option<LinkMetrics>)> + '_ {
        self.peers.iter_mut().map(|p| {
            let (up, m) = p.report();
            (p.conn, m.filter(|_| up))
        })
    }

    /// Whether what [`Relay::link_ends`] says of the link on connection `conn` stays as it is while every
    /// probe on it is answered with a round trip within `rtt` and nothing it carries is lost: the link is
    /// judged up and its estimator's report holds
    /// ([`LinkEstimator::report_holds`](crate::routing::LinkEstimator::report_holds)).
    pub fn link_end_holds(&self, conn: ConnId, rtt: RangeInclusive<Nanos>) -> bool {
        self.peers.by_conn(conn).is_some_and(|p| p.up && p.estimator.report_holds(rtt))
    }
}
