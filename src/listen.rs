//! A server's bound sockets: the UDP socket of its QUIC endpoint and the TCP listener of its HTTP side.
//!
//! A mesh node ([`crate::node::run`]) and a control replica ([`crate::control::run`]) both start from
//! [`Listeners`] that their caller bound, so that tests and the demo bind `127.0.0.1:0` or literal loopback
//! addresses and own the ports, and `main` binds what a config names ([`Listeners::bind`]). The type lives
//! in a room of its own, not in `node`, because the control plane takes it too and must not depend on the
//! node that is its client. It binds and nothing else: no accepting, no serving.

use anyhow::{Context, Result};
use tokio::net::TcpListener;

/// A node's or a control replica's bound sockets.
pub struct Listeners {
    pub mesh: std::net::UdpSocket,
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the mesh and HTTP addresses a config names (a node's or a control replica's `mesh_bind` and
    /// `http_bind`: the `*_listen` overrides, or else the topology's literal addresses).
    pub async fn bind(
        mesh_addr: Option<std::net::SocketAddr>,
        http_addr: Option<std::net::SocketAddr>,
    ) -> Result<Self> {
        // A checked config always yields both addresses.
        let mesh_addr = mesh_addr.context("no mesh address to bind")?;
        let http_addr = http_addr.context("no HTTP address to bind")?;
        let mesh =
            std::net::UdpSocket::bind(mesh_addr).with_context(|| format!("binding the mesh socket {mesh_addr}"))?;
        let http =
            TcpListener::bind(http_addr).await.with_context(|| format!("binding the HTTP listener {http_addr}"))?;
        Ok(Self { mesh, http })
    }
}
