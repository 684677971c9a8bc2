//! Dialing a lightpath peer (a mesh neighbour or a control replica): resolve its address, start a
//! connection from the local endpoint, and wait a bounded time for the handshake.
//!
//! One attempt per call; the callers redial with their own backoff, and ask [`DialError::is_final`] whether
//! there is any point.

use std::net::SocketAddr;
use std::time::Duration;

use crate::id::NodeId;
use crate::topology::Address;

/// Why a dial did not give a connection.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The address did not resolve (DNS failed, or the name has no address); a later attempt may succeed.
    #[error("resolving {addr}: {error}")]
    Resolve {
        /// The address as the topology writes it.
        addr: Address,
        /// What the resolver said.
        error: std::io::Error,
    },
    /// The address resolved, but to no socket address at all.
    #[error("{addr} resolved to nothing")]
    NoAddress {
        /// The address as the topology writes it.
        addr: Address,
    },
    /// The local endpoint is closing (the node or replica is stopping): no dial on it can succeed again.
    #[error("the local endpoint is stopping")]
    EndpointStopping,
    /// quinn refused to start the connection (an unusable server name or address, no client config).
    #[error("connecting to {target}: {error}")]
    Connect {
        /// The socket address dialed.
        target: SocketAddr,
        /// quinn's reason.
        error: quinn::ConnectError,
    },
    /// The handshake did not complete in time: the peer is down, unreachable, or far too slow.
    #[error("handshake with {target} timed out after {timeout:?}")]
    HandshakeTimedOut {
        /// The socket address dialed.
        target: SocketAddr,
        /// How long the dial waited.
        timeout: Duration,
    },
    /// The handshake failed: the peer refused the connection or its TLS identity, or the connection was
    /// lost during it.
    #[error("handshake with {target}: {error}")]
    Handshake {
        /// The socket address dialed.
        target: SocketAddr,
        /// quinn's reason.
        error: quinn::ConnectionError,
    },
}

impl DialError {
    /// Whether redialing is pointless: the endpoint is stopping. Every other failure may pass (a peer that
    /// restarts, a name that resolves again, a link that heals).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::EndpointStopping)
    }

    /// The socket address dialed, once the name resolved.
    pub fn target(&self) -> Option<SocketAddr> {
        match self {
            Self::Connect { target, .. } | Self::HandshakeTimedOut { target, .. } | Self::Handshake { target, .. } => {
                Some(*target)
            }
            _ => None,
        }
    }

    /// Whether the peer was reached and the handshake failed over who one side is (a certificate refused
    /// either way), with the reason in words. Such a failure does not pass by itself.
    pub fn refused(&self) -> Option<super::Refused> {
        match self {
            Self::Handshake { error, .. } => super::refusal(error),
            _ => None,
        }
    }
}

/// Dials `peer` at `addr` from `endpoint` (with its default client config) and waits up to `timeout` for
/// the handshake. The certificate the peer presents must name `peer`. Of the addresses `addr` resolves
/// to, the first of the endpoint's own IP family is dialed, else the first.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    peer: &NodeId,
    addr: &Address,
    timeout: Duration,
) -> Result<quinn::Connection, DialError> {
    let addrs = addr.resolve().await.map_err(|error| DialError::Resolve { addr: addr.clone(), error })?;
    let ipv4 = endpoint.local_addr().map(|l| l.is_ipv4()).unwrap_or(true);
    let target = *addrs
        .iter()
        .find(|a| a.is_ipv4() == ipv4)
        .or(addrs.first())
        .ok_or_else(|| DialError::NoAddress { addr: addr.clone() })?;
    let connecting = endpoint.connect(target, peer.as_str()).map_err(|error| match error {
        quinn::ConnectError::EndpointStopping => DialError::EndpointStopping,
        error => DialError::Connect { target, error },
    })?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(DialError::Handshake { target, error }),
        Err(_) => Err(DialError::HandshakeTimedOut { target, timeout }),
    }
}
