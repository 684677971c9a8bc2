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

pub mod credit;
mod dial;
mod frame;
pub mod handshakes;
pub mod refusal;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ca::Identity;

pub use credit::StreamCredit;
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

/// The QUIC transport settings of lightpath connections (mesh links and control sessions). A peer may
/// open [`credit::INITIAL`] object streams at once to begin with (fewer if `object_streams`,
/// `quic.max_object_streams`, is lower); the receiver raises that as the peer uses it, up to
/// `object_streams` ([`StreamCredit`]), because every stream permitted costs memory for the connection's life.
pub fn transport(object_streams: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(5).try_into().expect("5 s fits")));
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    t.max_concurrent_uni_streams(credit::INITIAL.min(object_streams).into());
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

/// The endpoint settings of a node or replica holding `identity`: QUIC's defaults, with the key of its
/// stateless resets derived from the identity's private key instead of drawn at random.
///
/// A process killed and started again at once (a crash and its supervisor's restart, `kill -9` and a
/// deploy) comes back on the same address, but without the state of its connections. Its peers' packets
/// on those connections then reach a process that does not know them. With a random key its stateless
/// resets carry tokens the peers never saw, so they ignore them and hold the dead connection until its idle
/// timeout (5 s), neither side dialing anew: a stream through a restarted relay stopped for those 5 s. With
/// the key derived from the identity, the restarted process's resets carry the very tokens its previous run
/// gave out (RFC 9000, section 10.3.2), so each peer drops the dead connection at its next packet (a probe,
/// within 100 ms on a busy link) and dials again. The key stays secret with the private key, as the tokens
/// must. A node restarted with a new key (its certificate re-issued) cannot reset its old connections: its
/// peers then wait out the idle timeout, as before.
pub fn endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, identity.key.secret_der());
    let derive = |label: &[u8]| ring::hmac::sign(&secret, label);
    let reset = derive(b"lightpath stateless reset key, v1");
    let mut config =
        quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref())));
    // An endpoint sends a reset only for a connection id it could have issued, which it checks with the key of
    // its id generator: that key must outlive the process too.
    let ids = derive(b"lightpath connection id key, v1");
    let ids = u64::from_le_bytes(ids.as_ref()[..8].try_into().expect("an HMAC-SHA256 tag has 32 bytes"));
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(ids)));
    config
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

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Instant;

    use tokio::runtime::Runtime;

    use super::*;
    use crate::ca::{create_ca, issue, CaFiles};
    use crate::id::NodeId;

    fn identity(ca: &CaFiles, node: &str) -> Identity {
        let files = issue(ca, &NodeId::new(node).unwrap(), 1).unwrap();
        Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem).unwrap()
    }

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    /// An endpoint of `identity` on `socket`, made as a node makes its mesh endpoint, driven by `rt`.
    fn endpoint(rt: &Runtime, identity: &Identity, socket: UdpSocket) -> quinn::Endpoint {
        let _in = rt.enter();
        let transport = Arc::new(transport(crate::config::QuicConfig::default().max_object_streams));
        let server = server_config(identity, transport.clone()).unwrap();
        let runtime = quinn::default_runtime().unwrap();
        let mut endpoint = quinn::Endpoint::new(endpoint_config(identity), Some(server), socket, runtime).unwrap();
        endpoint.set_default_client_config(client_config(identity, transport).unwrap());
        endpoint
    }

    /// The edge's connection to the endpoint at `addr` and the accepting side's.
    fn connect(
        (edge_rt, edge): (&Runtime, &quinn::Endpoint),
        (rt, to): (&Runtime, &quinn::Endpoint),
        addr: SocketAddr,
    ) -> (quinn::Connection, quinn::Connection) {
        let to = to.clone();
        let accepting = rt.spawn(async move { to.accept().await.unwrap().await.unwrap() });
        let conn = edge_rt.block_on(async { edge.connect(addr, "relay").unwrap().await.unwrap() });
        (conn, edge_rt.block_on(accepting).unwrap())
    }

    /// The edge connects to a process of the node `first` at some address, which then dies without a word (its
    /// runtime stops: no CONNECTION_CLOSE goes out), and a process of `second` (the same node with the same
    /// key and certificate, or another) takes the address. The edge sends on the old connection (a datagram
    /// here; a probe in the mesh): how does the connection end, and how soon?
    fn restarted(ca: &CaFiles, first: &Identity, second: &Identity) -> (quinn::ConnectionError, Duration) {
        let edge_rt = runtime();
        let edge = endpoint(&edge_rt, &identity(ca, "edge"), UdpSocket::bind("127.0.0.1:0").unwrap());
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let dying_rt = runtime();
        let dying = endpoint(&dying_rt, first, socket);
        let (conn, accepted) = connect((&edge_rt, &edge), (&dying_rt, &dying), addr);

        dying_rt.shutdown_timeout(Duration::from_secs(5)); // its workers stopped: nothing more is sent
        drop((dying, accepted)); // their driver is gone: the socket closes and nothing is sent
        let rt = runtime();
        let deadline = Instant::now() + Duration::from_secs(10);
        let restarted = loop {
            match UdpSocket::bind(addr) {
                Ok(socket) => break endpoint(&rt, second, socket),
                Err(e) => assert!(Instant::now() < deadline, "the address stayed taken: {e}"),
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let sent = Instant::now();
        // The edge may have sent on its own meanwhile (an acknowledgement, say) and had its answer already: the
        // datagram then finds the connection ended, which `closed` tells the same way.
        let _ = conn.send_datagram(bytes::Bytes::from_static(&[0; 200]));
        let error =
            edge_rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), conn.closed()).await.unwrap() });
        let took = sent.elapsed();
        if error == quinn::ConnectionError::Reset {
            connect((&edge_rt, &edge), (&rt, &restarted), addr); // and the edge can dial the new process
        }
        (error, took)
    }

    #[test]
    fn a_peer_restarted_on_its_address_resets_the_old_connection_at_once() {
        // The reset carries the token the first process gave out, so the edge drops the connection at its next
        // packet, not after the 5 s idle timeout.
        let ca = create_ca("quic test CA").unwrap();
        let relay = identity(&ca, "relay");
        let (error, took) = restarted(&ca, &relay, &relay);
        assert_eq!(error, quinn::ConnectionError::Reset, "the old connection ended otherwise");
        assert!(took < Duration::from_secs(4), "the reset took {took:?}");
    }

    #[test]
    fn another_identity_on_the_address_cannot_reset_the_connection() {
        // Another key's resets carry tokens the edge never saw: it holds the connection to its idle timeout.
        let ca = create_ca("quic test CA").unwrap();
        let (error, _) = restarted(&ca, &identity(&ca, "relay"), &identity(&ca, "mallory"));
        assert_eq!(error, quinn::ConnectionError::TimedOut);
    }
}
