//! A server's bound sockets: the UDP socket of its QUIC endpoint and the TCP listener of its HTTP side.
//!
//! A mesh node ([`crate::node::run`]) and a control replica ([`crate::control::run`]) both start from
//! [`Listeners`] that their caller bound, so that tests and the demo bind `127.0.0.1:0` or literal loopback
//! addresses and own the ports, and `main` binds what a config names ([`Listeners::bind`]). The type lives
//! in a room of its own, not in `node`, because the control plane takes it too and must not depend on the
//! node that is its client. It binds and nothing else: no accepting, no serving.

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpSocket};

/// How many connections the kernel may hold complete but not yet accepted: 4,096 (the kernel's usual
/// `somaxconn`, which caps it). A flood that the listener turns away (a 503 and close) still arrives in bursts
/// faster than one accept loop takes them; with tokio's default of 1,024 the queue overflowed and a viewer's
/// connection attempt was dropped, to be retried by its kernel only a second later.
pub const HTTP_BACKLOG: u32 = 4096;

/// Binds an HTTP listener with [`HTTP_BACKLOG`].
pub fn bind_http(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As std and tokio do for listeners: a restarted node rebinds its port at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_BACKLOG)
}

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
        let http = bind_http(http_addr).with_context(|| format!("binding the HTTP listener {http_addr}"))?;
        Ok(Self { mesh, http })
    }
}
