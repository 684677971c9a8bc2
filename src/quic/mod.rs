//! QUIC plumbing shared by mesh peers and the control plane: the transport settings, frames on streams,
//! dialing.
//!
//! A mesh node talks QUIC to its neighbours ([`crate::mesh`]) and to the control replicas
//! ([`crate::control`]), and a replica accepts those same connections. What both sides must agree on lives
//! here, so that neither imports the other: [`transport`], the settings of every lightpath connection;
//! [`read_frame`] and [`write_frame`], which move [`crate::wire`] frames over a stream; and [`dial`], which
//! resolves an address and completes a handshake, with a [`DialError`] that says whether redialing makes
//! sense; [`refusal`], which reads a refused handshake into words, and the [`Backoff`] between attempts.
//!
//! What it does not do: it decides nothing about when to dial or what to say. Hello exchanges and sessions
//! belong to the callers; the TLS identities come from [`crate::ca`].

mod dial;
mod frame;
pub mod refusal;

use std::time::Duration;

pub use dial::{dial, DialError};
pub use frame::{read_frame, write_frame, FrameError};
pub use refusal::{refusal, Backoff, Refused};

/// The QUIC transport settings of lightpath connections (mesh links and control sessions).
pub fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(5).try_into().expect("5 s fits")));
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    t.max_concurrent_uni_streams(4096u32.into());
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    // Ask the peer to acknowledge within 2 ms rather than QUIC's default 25 ms (both ends are lightpath
    // nodes, which speak the ACK frequency extension). A lost tail of a burst is found by the probe timeout,
    // which waits for the peer's ACK delay on top of the RTT: 25 ms made every such loss cost a hop 26-28 ms
    // on loopback.
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.max_ack_delay(Some(Duration::from_millis(2)));
    t.ack_frequency_config(Some(ack));
    t
}
