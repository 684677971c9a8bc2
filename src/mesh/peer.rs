//! One QUIC connection per neighbour pair: dialing with backoff, accepting with identity checks, and the
//! session that moves frames and objects between the connection and the mesh driver.
//!
//! Of each neighbour pair, the node with the smaller id dials and the other accepts, so a pair never holds
//! two connections. The dialer re-resolves the peer's address and redials with exponential backoff and
//! jitter whenever the connection ends; a restarted node therefore rejoins by itself. The acceptor learns
//! who dialed from the client certificate, which must chain to the mesh CA and name a topology neighbour.
//!
//! Each object arrives on its own unidirectional stream: a header frame, then the body. The session reads
//! the header, asks the driver whom to forward the object to, and passes the body on while it arrives
//! (cut-through, [`Fanout`]); the object enters the cache when its length matches the header. A slow or
//! stalled peer holds up neither the upstream nor the other peers; each copy counts against its peer's
//! [`Outbox`](super::outbox::Outbox) budget, and a peer without room gets the whole object through its
//! outbox instead, where the oldest waiting objects are skipped first. A copy whose upstream fails, is reset
//! or carries the wrong length is reset downstream, never finished, so no node stores a cut-short object as
//! complete.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use rand::Rng;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::fanout::{self, Fanout};
use super::{Event, Forwarding, Shared};
use crate::cache::{Inserted, Object};
use crate::id::NodeId;
use crate::quic::{self, read_frame, write_frame, Backoff, Refused, StreamCredit};
use crate::relay::{ConnId, ObjectKey};
use crate::topology::Address;
use crate::wire::{self, Frame, ObjectHeader, Probe, PROTOCOL_VERSION};

/// Largest object body a peer may send.
pub const MAX_OBJECT: u64 = 64 << 20;
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps a connection to `peer` up for as long as the node runs. Each failed attempt is one log line with
/// its reason; attempts back off ([`Backoff::mesh`]), further when the peer refuses this node or presents
/// the wrong certificate, and start over once a session was established.
pub(super) async fn dial_loop(shared: Arc<Shared>, peer: NodeId, addr: Address) {
    let mut backoff = Backoff::mesh();
    loop {
        let wait = match quic::dial(&shared.endpoint, &peer, &addr, HELLO_TIMEOUT).await {
            Ok(conn) => {
                let remote = conn.remote_address();
                match greet(&shared, &peer, &conn, true).await {
                    Ok(greeted) => {
                        let started = tokio::time::Instant::now();
                        tracing::info!(%peer, %remote, "mesh peer connected");
                        if let Err(e) = session(shared.clone(), peer.clone(), conn, greeted).await {
                            tracing::warn!(%peer, error = %format!("{e:#}"), "mesh session ended");
                        }
                        // A session that lasted was a success; one that ends at once keeps backing off.
                        if started.elapsed() > Duration::from_secs(10) {
                            backoff.reset();
                        }
                        backoff.after_failure(false)
                    }
                    Err(e) => {
                        let wait = backoff.after_failure(true);
                        let retry_in_ms = wait.as_millis() as u64;
                        tracing::warn!(%peer, %remote, retry_in_ms, "mesh peer {peer} at {remote} {e:#}");
                        wait
                    }
                }
            }
            Err(e) if e.is_final() => return,
            Err(e) => match e.refused() {
                Some(refused) => {
                    let wait = backoff.after_failure(true);
                    let retry_in_ms = wait.as_millis() as u64;
                    let at = e.target().map_or_else(|| addr.to_string(), |t| t.to_string());
                    tracing::warn!(%peer, %addr, retry_in_ms, "mesh peer {peer} at {at} {refused}");
                    wait
                }
                None => {
                    let wait = backoff.after_failure(false);
                    let retry_in_ms = wait.as_millis() as u64;
                    tracing::warn!(%peer, %addr, error = %e, retry_in_ms, "mesh dial failed");
                    wait
                }
            },
        };
        sleep_about(wait).await;
    }
}

/// Sleeps `wait` give or take half, so that nodes that lost a peer together do not redial in step.
async fn sleep_about(wait: Duration) {
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    tokio::time::sleep(wait.mul_f64(jitter)).await;
}

/// Accepts incoming mesh connections until the endpoint closes. Which ones get a handshake is
/// [`quic::Handshakes`]'s; refusals after it (not a neighbour, a wrong hello) are rate-limited like failed
/// handshakes, since anyone holding a mesh certificate could repeat them.
pub(super) async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let Some((incoming, slot)) = shared.handshakes.admit(incoming) else { continue };
        let shared = shared.clone();
        tokio::spawn(
            async move {
                let remote = incoming.remote_address();
                let Some(conn) = shared.handshakes.complete(incoming, slot).await else { return };
                let Some(peer) = identify(&shared, &conn) else {
                    shared.handshakes.failed(remote, "presented a certificate that names no neighbour of this node");
                    conn.close(1u32.into(), b"not a neighbour");
                    return;
                };
                let greeted = match greet(&shared, &peer, &conn, false).await {
                    Ok(greeted) => greeted,
                    Err(e) => {
                        tracing::warn!(%peer, %remote, "rejected mesh connection: {peer} at {remote} {e:#}");
                        return;
                    }
                };
                tracing::info!(%peer, %remote, "mesh peer accepted");
                if let Err(e) = session(shared, peer.clone(), conn, greeted).await {
                    tracing::warn!(%peer, error = %format!("{e:#}"), "mesh session ended");
                }
            }
            .in_current_span(),
        );
    }
}

fn identify(shared: &Shared, conn: &quinn::Connection) -> Option<NodeId> {
    let certs = conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    crate::ca::peer_node_id(certs.first()?, shared.neighbours.keys())
}

/// Why a connection that completed its handshake did not become a session.
#[derive(Debug, thiserror::Error)]
enum GreetError {
    /// The peer refused this node, or said the wrong hello.
    #[error("{0}")]
    Refused(Refused),
    /// The hello exchange failed otherwise (timed out, connection lost).
    #[error("failed the hello exchange: {0:#}")]
    Failed(anyhow::Error),
}

/// A connection whose hello exchange succeeded: its control stream, and what was read past the hello.
struct Greeted {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
}

/// The hello exchange on a fresh connection: each side names itself, and the name must be the one its
/// certificate gave (`peer`).
async fn greet(shared: &Shared, peer: &NodeId, conn: &quinn::Connection, dialer: bool) -> Result<Greeted, GreetError> {
    let exchanged = async {
        let (mut send, mut recv) = if dialer {
            let (mut send, recv) = conn.open_bi().await?;
            write_frame(&mut send, &Frame::Hello { node: shared.me.clone(), protocol: PROTOCOL_VERSION }).await?;
            (send, recv)
        } else {
            tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await.context("no hello")??
        };
        let mut buf = BytesMut::new();
        let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, &mut buf))
            .await
            .context("no hello in time")??;
        match hello {
            Some(Frame::Hello { node, protocol }) if node == *peer && protocol == PROTOCOL_VERSION => {}
            Some(Frame::Hello { node, protocol }) => {
                conn.close(2u32.into(), b"bad hello");
                let what = format!("named {node} protocol {protocol}, expected {peer} protocol {PROTOCOL_VERSION}");
                return Ok(Err(GreetError::Refused(Refused::Hello(what))));
            }
            other => bail!("expected hello, got {other:?}"),
        }
        if !dialer {
            write_frame(&mut send, &Frame::Hello { node: shared.me.clone(), protocol: PROTOCOL_VERSION }).await?;
        }
        Ok(Ok(Greeted { send, recv, buf }))
    };
    match exchanged.await {
        Ok(greeted) => greeted,
        // A peer that refuses this node closes the connection with its reason.
        Err(e) => match conn.close_reason().as_ref().and_then(quic::refusal) {
            Some(refused) => Err(GreetError::Refused(refused)),
            None => Err(GreetError::Failed(e)),
        },
    }
}

/// Runs one greeted connection: control frames and object streams until it closes.
async fn session(shared: Arc<Shared>, peer: NodeId, conn: quinn::Connection, greeted: Greeted) -> Result<()> {
    let Greeted { mut send, mut recv, mut buf } = greeted;
    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Frame>();
    let id = conn.stable_id() as ConnId;
    shared.event(Event::PeerUp { peer: peer.clone(), conn: conn.clone(), control: control_tx });
    let probes = tokio::spawn(answer_probes(shared.clone(), peer.clone(), conn.clone()).in_current_span());

    let writer = tokio::spawn(
        async move {
            while let Some(frame) = control_rx.recv().await {
                if write_frame(&mut send, &frame).await.is_err() {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    let objects = tokio::spawn(receive_objects(shared.clone(), peer.clone(), conn.clone()).in_current_span());
    let result = async {
        loop {
            match read_frame(&mut recv, &mut buf).await? {
                Some(frame) => shared.event(Event::Control { peer: peer.clone(), conn: id, frame }),
                None => bail!("control stream closed"),
            }
        }
    }
    .await;
    conn.close(0u32.into(), b"session over");
    writer.abort();
    objects.abort();
    probes.abort();
    shared.event(Event::PeerDown { peer, conn: id });
    result
}

/// Reads the link's probe datagrams: echoes the peer's requests at once, and passes the replies to our own
/// probes to the driver, stamped with the time they were read.
async fn answer_probes(shared: Arc<Shared>, peer: NodeId, conn: quinn::Connection) {
    let id = conn.stable_id() as ConnId;
    while let Ok(datagram) = conn.read_datagram().await {
        match Probe::decode(&datagram) {
            Ok(Probe::Request { seq }) => {
                let _ = conn.send_datagram(Bytes::copy_from_slice(&Probe::Reply { seq }.encode()));
            }
            Ok(Probe::Reply { seq }) => {
                shared.event(Event::ProbeReply { peer: peer.clone(), conn: id, seq, at: shared.now() });
            }
            Err(e) => tracing::debug!(%peer, error = %e, "ignored a malformed probe"),
        }
    }
}

/// Accepts the peer's object streams, each read by a task of its own, and grants the peer more streams at
/// once as it uses them ([`StreamCredit`]).
async fn receive_objects(shared: Arc<Shared>, peer: NodeId, conn: quinn::Connection) {
    let mut credit = StreamCredit::new(shared.max_object_streams);
    let open = Arc::new(AtomicU32::new(0));
    while let Ok(recv) = conn.accept_uni().await {
        let now = open.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(granted) = credit.opened(shared.now(), conn.rtt(), now) {
            conn.set_max_concurrent_uni_streams(granted.into());
            tracing::debug!(%peer, granted, "the peer may open more object streams at once");
        }
        let shared = shared.clone();
        let peer = peer.clone();
        let open = open.clone();
        tokio::spawn(
            async move {
                if let Err(e) = receive_object(&shared, &peer, recv).await {
                    tracing::warn!(%peer, error = %format!("{e:#}"), "dropped an object from a mesh peer");
                }
                open.fetch_sub(1, Ordering::Relaxed);
            }
            .in_current_span(),
        );
    }
}

/// Receives one object stream from `peer`. As soon as its header is in, the driver says whether the object
/// is new and, if so, which downstream subscribers get it; those get it as it arrives ([`Fanout`]), and the
/// object enters the cache once it is complete. A duplicate (held already, or on its way from another peer)
/// is read and stored only if it completes first, and never forwarded while it arrives.
async fn receive_object(shared: &Shared, peer: &NodeId, mut recv: quinn::RecvStream) -> Result<()> {
    let (header, first) = read_header(&mut recv).await?;
    if header.len > MAX_OBJECT {
        bail!("object {}/{} declares {} bytes, more than {MAX_OBJECT}", header.stream, header.name, header.len);
    }
    let (reply, answer) = oneshot::channel();
    shared.event(Event::Incoming { from: peer.clone(), header: header.clone(), reply });
    // Without an answer the node is stopping: store, forward nothing.
    let forwarding = answer.await.unwrap_or(Forwarding::Duplicate);
    let cut_through = matches!(forwarding, Forwarding::To(_));
    // Peers without room for a copy now get the whole object through their outbox once it is here.
    let (mut fanout, lagging) = match forwarding {
        Forwarding::To(targets) => {
            let (fanout, lagging) = Fanout::start(&shared.me, &header, targets);
            (Some(fanout), lagging)
        }
        Forwarding::Duplicate => (None, Vec::new()),
    };
    let key = ObjectKey::of(&header);
    let body = match relay_body(&mut recv, &header, first, fanout.as_mut()).await {
        Ok(body) => body,
        Err(e) => {
            // Dropping the fan-out resets its copies: nobody stores a partial object.
            drop(fanout);
            if cut_through {
                shared.event(Event::Passed { from: peer.clone(), key, complete: false });
            }
            return Err(e);
        }
    };
    let labels = [("node", shared.me.to_string()), ("peer", peer.to_string()), ("stream", header.stream.to_string())];
    metrics::counter!("lightpath_mesh_objects_received_total", &labels).increment(1);
    metrics::counter!("lightpath_mesh_bytes_received_total", &labels).increment(body.len() as u64);
    if let Some(fanout) = fanout {
        fanout.finish();
    }
    let object = Arc::new(Object::new(header, body));
    for outbox in lagging {
        outbox.push(object.clone());
    }
    if shared.cache.insert(object.clone()) == Inserted::New {
        shared.event(Event::Object { from: Some(peer.clone()), object });
    }
    if cut_through {
        shared.event(Event::Passed { from: peer.clone(), key, complete: true });
    }
    Ok(())
}

/// Reads an object stream's first frame, the object's header; returns it with the body bytes read past it.
async fn read_header(recv: &mut quinn::RecvStream) -> Result<(ObjectHeader, Bytes)> {
    let mut buf = BytesMut::new();
    loop {
        if let Some(frame) = wire::decode_from(&mut buf).map_err(|e| anyhow::anyhow!("bad object header: {e}"))? {
            let Frame::Object(header) = frame else { bail!("object stream starts with {frame:?}") };
            return Ok((header, buf.freeze()));
        }
        match recv.read_chunk(wire::MAX_FRAME, true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => bail!("object stream ended inside its header"),
        }
    }
}

/// Reads an object's body to its end, handing every batch of chunks to the downstream copies as it arrives
/// (they go down in batches: see [`Fanout`]), and returns the whole body once its length matches the
/// header's.
async fn relay_body(
    recv: &mut quinn::RecvStream,
    header: &ObjectHeader,
    first: Bytes,
    mut fanout: Option<&mut Fanout>,
) -> Result<Bytes> {
    let len = header.len as usize;
    let mut body = BytesMut::with_capacity(len.min(BODY_RESERVE_MAX));
    let mut chunks: [Bytes; 32] = Default::default();
    let mut n = 0;
    if !first.is_empty() {
        chunks[0] = first;
        n = 1;
    }
    loop {
        let batch = &chunks[..n];
        if body.len() + batch.iter().map(Bytes::len).sum::<usize>() > len {
            bail!("object {}/{} declares {len} bytes, carries more", header.stream, header.name);
        }
        for chunk in batch {
            body.extend_from_slice(chunk);
        }
        let read = match fanout.as_deref_mut() {
            Some(fanout) => {
                fanout.arrived(batch);
                match fanout.flush_at() {
                    // Bytes wait to go down: read on until they must.
                    Some(at) => match tokio::time::timeout_at(at, recv.read_chunks(&mut chunks)).await {
                        Ok(read) => read,
                        Err(_) => {
                            fanout.flush();
                            recv.read_chunks(&mut chunks).await
                        }
                    },
                    None => recv.read_chunks(&mut chunks).await,
                }
            }
            None => recv.read_chunks(&mut chunks).await,
        };
        match read? {
            Some(k) => n = k,
            None => break,
        }
    }
    if body.len() != len {
        bail!("object {}/{} declares {len} bytes, carries {}", header.stream, header.name, body.len());
    }
    Ok(body.freeze())
}

/// Most bytes reserved for a body before any arrived; a larger one grows as it comes.
const BODY_RESERVE_MAX: usize = 16 << 20;

/// Sends one whole object (ingested here, or from the cache) to a peer on its own unidirectional stream,
/// newest first by priority.
pub(super) async fn send_object(me: &NodeId, peer: &NodeId, conn: &quinn::Connection, object: &Object) -> Result<()> {
    let mut send = conn.open_uni().await?;
    send.set_priority(fanout::priority(&object.header))?;
    let mut head = Vec::with_capacity(128);
    Frame::Object(object.header.clone()).encode(&mut head);
    send.write_all(&head).await?;
    send.write_chunk(object.body.clone()).await?;
    send.finish()?;
    let labels = [("node", me.to_string()), ("peer", peer.to_string()), ("stream", object.header.stream.to_string())];
    metrics::counter!("lightpath_mesh_objects_sent_total", &labels).increment(1);
    metrics::counter!("lightpath_mesh_bytes_sent_total", &labels).increment(object.body.len() as u64);
    Ok(())
}
