//! Which incoming QUIC connections get a handshake, for a mesh node's and a control replica's endpoint.
//!
//! Only neighbours and control replicas ever connect, a few at a time; anything beyond is a flood. A
//! handshake costs the server a TLS exchange, a connection's state until it times out, and packets sent
//! back (a certificate chain: up to three times what the client sent). So, before any of that:
//!
//! - an Initial from an address that has not proven it receives our packets gets a Retry (one small
//!   packet, no state kept): Initials replayed or sent from forged addresses never start a handshake, and
//!   the node never sends more than it received ([`QuicConfig::validate_addresses`]);
//! - at most [`QuicConfig::max_handshakes`] handshakes run at once; a validated address beyond that is
//!   refused at once (CONNECTION_REFUSED).
//!
//! A handshake that fails (a certificate from another CA, say) is counted and logged at most once per
//! interval with the number held back, so a flood of them costs no log storm. [`decide`] is the pure rule;
//! [`Handshakes`] applies it to quinn's [`quinn::Incoming`]. What to do with a connection once its
//! handshake succeeded is the caller's (its identity check, its hello).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::QuicConfig;
use crate::telemetry::{Bounds, SharedLogGate};

/// What to do with an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Answer with a Retry: the address must prove it receives our packets.
    Retry,
    /// Refuse it: too many handshakes run already.
    Refuse,
    /// Start its handshake.
    Accept,
}

/// The rule: validate unproven addresses first (when configured, and when the Initial is not already the
/// answer to a Retry), then hold handshakes under the cap.
pub fn decide(config: &QuicConfig, validated: bool, may_retry: bool, in_progress: usize) -> Admit {
    if config.validate_addresses && !validated && may_retry {
        Admit::Retry
    } else if in_progress >= config.max_handshakes {
        Admit::Refuse
    } else {
        Admit::Accept
    }
}

/// One endpoint's handshake admission, with its counters and its log gates.
pub struct Handshakes {
    config: QuicConfig,
    running: Arc<Semaphore>,
    bounds: Bounds,
    node: String,
    /// What the endpoint's connections are, for log lines: "mesh", "node" (at a control replica).
    what: &'static str,
    refused_log: SharedLogGate,
    failed_log: SharedLogGate,
}

/// A handshake's place among those running; dropping it frees the place.
pub type HandshakeSlot = OwnedSemaphorePermit;

impl Handshakes {
    pub fn new(config: QuicConfig, node: &str, what: &'static str) -> Self {
        Self {
            what,
            running: Arc::new(Semaphore::new(config.max_handshakes)),
            config,
            bounds: Bounds::new(node),
            node: node.to_owned(),
            refused_log: SharedLogGate::default(),
            failed_log: SharedLogGate::default(),
        }
    }

    /// Answers `incoming` with a Retry or a refusal, or gives it back with its slot to run its handshake
    /// in (hold the slot until the handshake ends).
    pub fn admit(&self, incoming: quinn::Incoming) -> Option<(quinn::Incoming, HandshakeSlot)> {
        let in_progress = self.config.max_handshakes - self.running.available_permits();
        match decide(&self.config, incoming.remote_address_validated(), incoming.may_retry(), in_progress) {
            Admit::Retry => {
                self.bounds.refused("address_unvalidated");
                // Fails only when the Initial already answered a Retry, which `may_retry` ruled out.
                let _ = incoming.retry();
                None
            }
            Admit::Refuse => self.refuse(incoming),
            Admit::Accept => match self.running.clone().try_acquire_owned() {
                Ok(slot) => Some((incoming, slot)),
                Err(_) => self.refuse(incoming), // the last place went in between
            },
        }
    }

    fn refuse(&self, incoming: quinn::Incoming) -> Option<(quinn::Incoming, HandshakeSlot)> {
        self.bounds.refused("handshakes_full");
        self.bounds.limit_hit("quic.max_handshakes");
        if let Some(held_back) = self.refused_log.pass() {
            let remote = incoming.remote_address();
            let max = self.config.max_handshakes;
            let what = self.what;
            tracing::warn!(node = %self.node, %remote, held_back, "refused {what} connection: {max} handshakes run already (quic.max_handshakes)");
        }
        incoming.refuse();
        None
    }

    /// Runs an admitted handshake to its end, freeing its slot: the connection, or `None` when it failed (the
    /// failure counted and logged as [`Handshakes::failed`]).
    pub async fn complete(&self, incoming: quinn::Incoming, slot: HandshakeSlot) -> Option<quinn::Connection> {
        let remote = incoming.remote_address();
        let handshake = incoming.await;
        drop(slot);
        match handshake {
            Ok(conn) => Some(conn),
            Err(e) => {
                let why = super::refusal(&e).map_or_else(|| e.to_string(), |r| r.to_string());
                self.failed(remote, &format!("handshake failed: {why}"));
                None
            }
        }
    }

    /// A handshake from `remote` failed, for `why`: counted, and logged unless a line went out within the
    /// interval.
    pub fn failed(&self, remote: SocketAddr, why: &str) {
        self.bounds.refused("handshake_failed");
        if let Some(held_back) = self.failed_log.pass() {
            let what = self.what;
            tracing::warn!(node = %self.node, %remote, held_back, "rejected {what} connection: {remote} {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unproven_addresses_get_a_retry_and_proven_ones_a_place_under_the_cap() {
        let config = QuicConfig { max_handshakes: 2, ..QuicConfig::default() };
        assert_eq!(decide(&config, false, true, 0), Admit::Retry);
        // Even at the cap: a Retry costs nothing, and keeps forged addresses out of the count.
        assert_eq!(decide(&config, false, true, 2), Admit::Retry);
        assert_eq!(decide(&config, true, false, 1), Admit::Accept);
        assert_eq!(decide(&config, true, false, 2), Admit::Refuse);
        // An answer to a Retry whose token did not validate cannot be retried again.
        assert_eq!(decide(&config, false, false, 0), Admit::Accept);
        let open = QuicConfig { validate_addresses: false, ..config };
        assert_eq!(decide(&open, false, true, 0), Admit::Accept);
        assert_eq!(decide(&open, false, true, 2), Admit::Refuse);
    }
}
