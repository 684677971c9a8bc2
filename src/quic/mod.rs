//! QUIC plumbing shared by mesh peers and the control plane: the transport settings, frames on streams,
//! dialing.
//!
//! A mesh node talks QUIC to its neighbours ([`crate::mesh`]) and to the control replicas
//! ([`crate::control`]), and a replica accepts those same connections. What both sides must agree on lives
//! here, so that neither imports the other: [`transport`], the settings of every lightpath connection;
//! [`read_frame`] and [`write_frame`], which move [`crate::wire`] frames over a stream; and [`dial`], which
//! resolves an address and completes a handshake, with a [`DialError`] that says whether redialing makes
//! sense; [`refusal`], which reads a refused handshake into words, and the [`Backoff`] between attempts;
//! [`handshakes`], which decides which incoming connections get a handshake at all (Retry for unproven
//! addresses, a cap on handshakes at once).
//!
//! What it does not do: it decides nothing about when to dial or what to say. Hello exchanges and sessions
//! belong to the callers; the TLS identities come from [`crate::ca`].

mod dial;
mod frame;
pub mod handshakes;
pub mod refusal;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ca::Identity;

pub use dial::{dial, DialError};
pub use frame::{read_frame, write_frame, FrameError};
pub use handshakes::Handshakes;
pub use refusal::{refusal, Backoff, Refused};

/// How much one object stream may have in flight unread: 4 MiB. A live object is a segment of 1 to 6 s or
/// a part of a fraction of that; at 8 Mbit/s (a high-end 1080p rendition) a 4 s segment is 4 MB, so one
/// window takes most segments in one round trip and the largest in two, while cut-through relays read each
/// stream as it arrives, so the window is rarely full. The old 16 MiB only let one stream hold more of a
/// connection's window, never made an object arrive sooner.
pub const STREAM_WINDOW: u32 = 4 << 20;
/// How much one connection may have in flight unread, over all its streams: 16 MiB, the bandwidth-delay
/// product of 1 Gbit/s over a 130 ms round trip (an inter-continental mesh link). This, not the streams'
/// windows, bounds what a peer can make a node buffer: 16 MiB per neighbour where the old 64 MiB window let
/// a few neighbours hold hundreds of MiB.
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// The QUIC transport settings of lightpath connections (mesh links and control sessions), with at most
/// `object_streams` object streams open from a peer at once (`quic.max_object_streams`).
///
/// That count is also a memory bound: quinn keeps a receive state for every stream a peer may open and,
/// when a stream ends, hands its state (with the reassembly queue it grew to) to the stream number that
/// the end makes permissible, `object_streams` further on. So a connection ends up holding one state per
/// permitted stream, each as large as the largest backlog of packets it ever queued; with one stream per
/// object, it grows with every object until all are in use. 1,024 permitted streams made an edge's
/// memory creep for half an hour (BENCHMARKS.md, "Soak").
pub fn transport(object_streams: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(5).try_into().expect("5 s fits")));
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    t.max_concurrent_uni_streams(object_streams.into());
    t.stream_receive_window(STREAM_WINDOW.into());
    t.receive_window(CONNECTION_WINDOW.into());
    // What this node buffers for one peer unacknowledged: the same as it lets a peer send it.
    t.send_window(u64::from(CONNECTION_WINDOW));
    // Ask the peer to acknowledge within 2 ms rather than QUIC's default 25 ms (both ends are lightpath
    // nodes, which speak the ACK frequency extension). A lost tail of a burst is found by the probe timeout,
    // which waits for the peer's ACK delay on top of the RTT: 25 ms made every such loss cost a hop 26-28 ms
    // on loopback.
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.max_ack_delay(Some(Duration::from_millis(2)));
    t.ack_frequency_config(Some(ack));
    t
}

/// The QUIC server side of `identity` (mutual TLS: clients must show a certificate of the mesh's CA) with
/// `transport`, which is [`transport`] but in tests of the transport itself.
pub fn server_config(identity: &Identity, transport: Arc<quinn::TransportConfig>) -> Result<quinn::ServerConfig> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)
        .context("TLS server config unusable for QUIC")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// The QUIC client side of `identity`, as [`server_config`] the server side.
pub fn client_config(identity: &Identity, transport: Arc<quinn::TransportConfig>) -> Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?)
        .context("TLS client config unusable for QUIC")?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}
