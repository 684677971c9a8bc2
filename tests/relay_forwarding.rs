//! A relay forwards an object while it arrives (cut-through), forwards it once however many copies come in,
//! and never passes a cut-short object on as complete.
//!
//! The relay and an edge are real [`Mesh`] nodes in this process. The origin and a second downstream
//! neighbour, `probe`, are raw quinn endpoints that speak the mesh protocol (hello, announce, subscribe, probe
//! echoes, one unidirectional stream per object), so the test decides when each of the origin's bytes goes out
//! and sees every stream the relay opens toward `probe`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use lightpath::ca::{create_ca, issue, CaFiles, Identity};
use lightpath::cache::Cache;
use lightpath::id::{NodeId, ObjectName, StreamName};
use lightpath::mesh::{Mesh, MeshOptions};
use lightpath::quic::transport;
use lightpath::topology::Topology;
use lightpath::wire::{self, Frame, ObjectHeader, Probe, PROTOCOL_VERSION};

/// Generous: only a hang should hit it.
const WAIT: Duration = Duration::from_secs(10);
const BIG: usize = 1 << 20;

/// A neighbour of the relay played by the test: one mesh connection, its control stream, probe echoes.
struct FakeNode {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: quinn::SendStream,
    frames: quinn::RecvStream,
    buf: BytesMut,
}

impl FakeNode {
    /// Dials the relay as `id` (a smaller id than "relay", so dialing is this side's part) and says hello.
    async fn connect(ca: &CaFiles, id: &str, socket: std::net::UdpSocket, relay: std::net::SocketAddr) -> Result<Self> {
        let files = issue(ca, &NodeId::new(id)?, 1)?;
        let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
        let mut client = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(
            identity.client_config()?,
        )?));
        client.transport_config(Arc::new(transport(lightpath::config::QuicConfig::default().max_object_streams)));
        let runtime = quinn::default_runtime().context("no runtime")?;
        let mut endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;
        endpoint.set_default_client_config(client);
        let conn = endpoint.connect(relay, "relay")?.await?;
        let (control, frames) = conn.open_bi().await?;
        let mut node = Self { endpoint, conn, control, frames, buf: BytesMut::new() };
        node.send(Frame::Hello { node: NodeId::new(id)?, protocol: PROTOCOL_VERSION }).await?;
        match node.next_frame().await? {
            Frame::Hello { node, .. } if node.as_str() == "relay" => {}
            other => bail!("expected the relay's hello, got {other:?}"),
        }
        // Answer the relay's probes, or it declares the link down and routes around it.
        let conn = node.conn.clone();
        tokio::spawn(async move {
            while let Ok(datagram) = conn.read_datagram().await {
                if let Ok(Probe::Request { seq }) = Probe::decode(&datagram) {
                    let _ = conn.send_datagram(Bytes::copy_from_slice(&Probe::Reply { seq }.encode()));
                }
            }
        });
        Ok(node)
    }

    async fn send(&mut self, frame: Frame) -> Result<()> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        self.control.write_all(&out).await?;
        Ok(())
    }

    async fn next_frame(&mut self) -> Result<Frame> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = wire::decode_from(&mut self.buf)? {
                    return Ok(frame);
                }
                match self.frames.read_chunk(wire::MAX_FRAME, true).await? {
                    Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                    None => bail!("control stream closed"),
                }
            }
        })
        .await
        .context("no control frame in time")?
    }

    /// Skips control frames until the relay subscribes to `stream`.
    async fn subscribed(&mut self, stream: &StreamName) -> Result<()> {
        loop {
            if matches!(self.next_frame().await?, Frame::Subscribe { stream: s } if &s == stream) {
                return Ok(());
            }
        }
    }

    /// Opens an object stream and writes the header and the first `first` bytes of `body` (whose declared
    /// length is `len`).
    async fn start_object(&self, header: &ObjectHeader, body: &[u8]) -> Result<quinn::SendStream> {
        let mut send = self.conn.open_uni().await?;
        let mut head = Vec::new();
        Frame::Object(header.clone()).encode(&mut head);
        send.write_all(&head).await?;
        send.write_all(body).await?;
        Ok(send)
    }

    /// The next object stream the relay opens toward this node: its header and the stream, positioned at the
    /// body (the bytes read past the header are returned too).
    async fn next_object(&self) -> Result<(ObjectHeader, quinn::RecvStream, Vec<u8>)> {
        let mut recv = tokio::time::timeout(WAIT, self.conn.accept_uni()).await.context("no object stream")??;
        let mut buf = BytesMut::new();
        loop {
            if let Some(frame) = wire::decode_from(&mut buf)? {
                let Frame::Object(header) = frame else { bail!("object stream starts with {frame:?}") };
                return Ok((header, recv, buf.to_vec()));
            }
            match tokio::time::timeout(WAIT, recv.read_chunk(wire::MAX_FRAME, true)).await?? {
                Some(chunk) => buf.extend_from_slice(&chunk.bytes),
                None => bail!("object stream ended inside its header"),
            }
        }
    }

    fn close(&self) {
        self.conn.close(0u32.into(), b"test over");
        self.endpoint.close(0u32.into(), b"test over");
    }
}

/// Reads from `recv` until `body` holds at least `want` bytes.
async fn read_at_least(recv: &mut quinn::RecvStream, body: &mut Vec<u8>, want: usize) -> Result<()> {
    while body.len() < want {
        match tokio::time::timeout(WAIT, recv.read_chunk(usize::MAX, true)).await.context("stalled")?? {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => bail!("stream ended after {} bytes", body.len()),
        }
    }
    Ok(())
}

fn header(stream: &StreamName, name: &str, seq: u64, len: usize) -> Result<ObjectHeader> {
    Ok(ObjectHeader {
        stream: stream.clone(),
        name: ObjectName::new(name)?,
        version: seq,
        seq,
        content_type: "video/mp2t".into(),
        duration_ms: 0,
        born_unix_ms: 1_700_000_000_000 + seq,
        len: len as u64,
    })
}

/// A relay, a real edge and two played neighbours: origin -> relay -> {edge, probe}.
struct Lab {
    relay: Mesh,
    edge: Mesh,
    origin: FakeNode,
    probe: FakeNode,
    stream: StreamName,
}

impl Lab {
    async fn start() -> Result<Self> {
        let ca = create_ca("relay forwarding test CA")?;
        let ids = ["origin", "relay", "edge", "probe"];
        let mut sockets = Vec::new();
        let mut topology = String::from("[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n");
        for id in ids {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let role = if id == "probe" { "edge" } else { id };
            topology.push_str(&format!(
                "\n[[nodes]]\nid = \"{id}\"\nregion = \"lab\"\nroles = [\"{role}\"]\nmesh = \"{}\"\nhttp = \"{http}\"\n",
                udp.local_addr()?
            ));
            sockets.push(udp);
        }
        for peer in ["origin", "edge", "probe"] {
            topology.push_str(&format!("\n[[links]]\na = \"{peer}\"\nb = \"relay\"\nlatency_ms = 1.0\n"));
        }
        let topology = Topology::parse(&topology, "test topology").map_err(|e| anyhow::anyhow!("{e}"))?;
        let [origin_socket, relay_socket, edge_socket, probe_socket]: [std::net::UdpSocket; 4] =
            sockets.try_into().map_err(|_| anyhow::anyhow!("four sockets"))?;
        let relay_addr = relay_socket.local_addr()?;
        let node = |id: &str, socket| -> Result<Mesh> {
            let id = NodeId::new(id)?;
            let files = issue(&ca, &id, 1)?;
            let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
            let cache = Cache::new(64 << 20, id.as_str());
            Mesh::start(id, &topology, &identity, socket, cache, None, MeshOptions::default())
        };
        let relay = node("relay", relay_socket)?;
        let edge = node("edge", edge_socket)?;
        let mut origin = FakeNode::connect(&ca, "origin", origin_socket, relay_addr).await?;
        let mut probe = FakeNode::connect(&ca, "probe", probe_socket, relay_addr).await?;

        let stream = StreamName::new("s")?;
        origin
            .send(Frame::Announce { stream: stream.clone(), origin: NodeId::new("origin")?, epoch: 1, backup: false })
            .await?;
        probe.send(Frame::Subscribe { stream: stream.clone() }).await?;
        edge.want(&stream);
        origin.subscribed(&stream).await?;
        let lab = Self { relay, edge, origin, probe, stream };
        // Both downstream subscriptions are in place once a first object reaches both.
        let mut waited = 0;
        loop {
            let warm = format!("warm{waited}.ts");
            let mut send = lab.origin.start_object(&header(&lab.stream, &warm, 1 + waited, 5)?, b"hello").await?;
            send.finish()?;
            let at_edge =
                lab.edge.cache().wait_for(&lab.stream, &ObjectName::new(&warm)?, Duration::from_secs(1)).await;
            let (h, mut recv, mut body) = lab.probe.next_object().await?;
            read_at_least(&mut recv, &mut body, 5).await?;
            ensure!(h.name.as_str() == warm && body == b"hello", "probe got {}: {body:?}", h.name);
            if at_edge.is_some() {
                return Ok(lab);
            }
            waited += 1;
            ensure!(waited < 20, "the edge never got a warm-up object");
        }
    }

    fn held(&self, node: &Mesh, name: &str) -> bool {
        node.cache().get(&self.stream, &ObjectName::new(name).unwrap()).is_some()
    }

    fn close(&self) {
        self.origin.close();
        self.probe.close();
        self.relay.close();
        self.edge.close();
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_forwards_an_object_before_it_has_all_of_it() -> Result<()> {
    let lab = Lab::start().await?;
    let body = pattern(BIG);
    let mut send = lab.origin.start_object(&header(&lab.stream, "big.ts", 100, BIG)?, &body[..BIG / 2]).await?;

    // Half the object is out of the origin and the rest is held back: the probe gets that half already.
    let (h, mut recv, mut got) = lab.probe.next_object().await?;
    assert_eq!(h.name.as_str(), "big.ts");
    read_at_least(&mut recv, &mut got, BIG / 2).await?;
    assert_eq!(got, body[..BIG / 2], "the forwarded half differs");
    assert!(!lab.held(&lab.relay, "big.ts"), "the relay stored an incomplete object");

    send.write_all(&body[BIG / 2..]).await?;
    send.finish()?;
    let rest = tokio::time::timeout(WAIT, recv.read_to_end(BIG)).await??;
    got.extend_from_slice(&rest);
    assert!(got == body, "the probe got {} bytes, not the object", got.len());
    let at_edge = lab.edge.cache().wait_for(&lab.stream, &ObjectName::new("big.ts")?, WAIT).await;
    assert!(at_edge.context("the edge never got the object")?.body == body, "the edge holds other bytes");
    assert!(lab.relay.cache().get(&lab.stream, &ObjectName::new("big.ts")?).is_some_and(|o| o.body == body));
    lab.close();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_short_objects_are_reset_downstream_and_stored_nowhere() -> Result<()> {
    let lab = Lab::start().await?;
    let body = pattern(BIG);

    // 1. The origin resets its stream halfway.
    let mut send = lab.origin.start_object(&header(&lab.stream, "reset.ts", 100, BIG)?, &body[..BIG / 2]).await?;
    let (h, mut recv, mut got) = lab.probe.next_object().await?;
    assert_eq!(h.name.as_str(), "reset.ts");
    read_at_least(&mut recv, &mut got, 1).await?;
    send.reset(7u32.into())?;
    let end = tokio::time::timeout(WAIT, recv.read_to_end(BIG)).await?;
    assert!(
        matches!(end, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))),
        "the probe's copy was not reset: {end:?}"
    );

    // 2. The origin finishes its stream short of the declared length.
    let mut send = lab.origin.start_object(&header(&lab.stream, "short.ts", 101, BIG)?, &body[..BIG / 2]).await?;
    send.finish()?;
    // The relay may see the short end, and reset, before the probe has read even the header.
    let mut recv = tokio::time::timeout(WAIT, lab.probe.conn.accept_uni()).await??;
    let end = tokio::time::timeout(WAIT, recv.read_to_end(2 * BIG)).await?;
    assert!(
        matches!(end, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))),
        "the probe's copy was not reset: {end:?}"
    );

    // A whole object after them arrives everywhere; the cut-short ones are stored nowhere.
    let mut send = lab.origin.start_object(&header(&lab.stream, "after.ts", 102, 1000)?, &body[..1000]).await?;
    send.finish()?;
    let (h, mut recv, mut got) = lab.probe.next_object().await?;
    assert_eq!(h.name.as_str(), "after.ts");
    read_at_least(&mut recv, &mut got, 1000).await?;
    let at_edge = lab.edge.cache().wait_for(&lab.stream, &ObjectName::new("after.ts")?, WAIT).await;
    assert!(at_edge.is_some(), "the edge never got the object after the cut-short ones");
    for name in ["reset.ts", "short.ts"] {
        assert!(!lab.held(&lab.relay, name), "the relay stored {name}");
        assert!(!lab.held(&lab.edge, name), "the edge stored {name}");
    }
    lab.close();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_of_an_object_is_not_forwarded_again() -> Result<()> {
    let lab = Lab::start().await?;
    let body = pattern(BIG);
    let dup = header(&lab.stream, "dup.ts", 100, BIG)?;

    // Two copies on their way at once (as from an old and a new upstream), then one in the cache already.
    let mut first = lab.origin.start_object(&dup, &body[..BIG / 2]).await?;
    let (h, mut recv, mut got) = lab.probe.next_object().await?;
    assert_eq!(h.name.as_str(), "dup.ts");
    let mut second = lab.origin.start_object(&dup, &body[..BIG / 2]).await?;
    second.write_all(&body[BIG / 2..]).await?;
    second.finish()?;
    first.write_all(&body[BIG / 2..]).await?;
    first.finish()?;
    read_at_least(&mut recv, &mut got, BIG).await?;
    let at_edge = lab.edge.cache().wait_for(&lab.stream, &ObjectName::new("dup.ts")?, WAIT).await;
    assert!(at_edge.is_some_and(|o| o.body == body), "the edge never got the object whole");
    let mut third = lab.origin.start_object(&dup, &body).await?;
    third.finish()?;

    // The next stream the probe sees is the next object, not another copy.
    let mut send = lab.origin.start_object(&header(&lab.stream, "next.ts", 101, 1000)?, &body[..1000]).await?;
    send.finish()?;
    let (h, _, _) = lab.probe.next_object().await?;
    assert_eq!(h.name.as_str(), "next.ts", "the relay forwarded a second copy of dup.ts");
    lab.close();
    Ok(())
}

/// A peer may open 16 object streams at once to begin with, and more as it uses them, up to
/// `quic.max_object_streams` (128): objects cut through as a publisher uploads them stay open for their
/// whole duration, one per live stream, so a link carrying many streams needs many open at once. 100 held
/// open together all get a stream, and each reaches the edge once finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_its_object_streams_open_is_granted_more() -> Result<()> {
    let lab = Lab::start().await?;
    let count = 100u64;
    let mut open = Vec::new();
    for k in 0..count {
        let head = header(&lab.stream, &format!("long{k}.ts"), 1000 + k, 10)?;
        let send = tokio::time::timeout(WAIT, lab.origin.start_object(&head, b"half"))
            .await
            .with_context(|| format!("the relay granted no stream for object {k} with {} open", open.len()))??;
        open.push(send);
    }
    for mut send in open {
        send.write_all(b"-rest!").await?;
        send.finish()?;
    }
    for k in 0..count {
        let name = ObjectName::new(format!("long{k}.ts"))?;
        let at_edge = lab.edge.cache().wait_for(&lab.stream, &name, WAIT).await;
        ensure!(at_edge.is_some_and(|o| o.body[..] == b"half-rest!"[..]), "the edge never got {name} whole");
    }
    lab.close();
    Ok(())
}
