//! Cut-through fan-out: an object arriving from upstream goes on to its downstream subscribers while it
//! arrives, each copy on its own unidirectional stream, at the cost of one QUIC write per copy per batch of
//! arrived bytes.
//!
//! The session that reads the upstream stream ([`super::peer`]) hands each batch of chunks it read to
//! [`Fanout::arrived`] and says when the object ended. The fan-out writes every copy itself, without a task
//! or a channel per copy: a batch is gathered into one buffer (one copy of the bytes, whatever the number of
//! peers) and written with one non-blocking `write_chunks` per copy, all of them sharing it. Arrived bytes
//! are handed down in batches of at least [`FLUSH_BYTES`], or once the oldest of them waited
//! [`FLUSH_AFTER`], or when the object ends, so that a downstream connection is woken once per batch and
//! sends full packets, not once per few packets that came in. Relaying a fast upstream to hundreds of peers,
//! most of a relay's time went to those wake-ups. Latency stays that of cut-through: a copy starts at most
//! `FLUSH_AFTER` after the bytes arrived, and the end of an object goes down at once.
//!
//! A copy that QUIC cannot take at once (its peer's flow-control window or stream limit is full) moves to a
//! task of its own, which catches up from the object's shared [`Arrival`] as the peer takes it, so that a slow
//! peer holds up neither the upstream nor the other copies. Every copy counts against its peer's
//! [`Outbox`] budget until it ended. A copy whose upstream failed, was reset or carried the wrong length is
//! reset downstream, never finished, so no node stores a cut-short object as complete.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tracing::Instrument as _;

use super::outbox::Outbox;
use crate::id::NodeId;
use crate::wire::{Frame, ObjectHeader};

/// Arrived bytes wait for at least this many more before they are handed to the copies.
pub(super) const FLUSH_BYTES: usize = 64 << 10;
/// ... or for at most this long after the first of them arrived.
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(2);

/// Application error code of an object stream reset because its upstream copy failed or was cut short.
const UPSTREAM_FAILED: u32 = 1;

/// What has arrived of an object, for the copies that write from their own task.
#[derive(Default)]
struct Arrival {
    state: Mutex<Arrived>,
    /// Woken when more arrived or the object ended.
    more: Notify,
}

#[derive(Default)]
struct Arrived {
    /// The body's chunks handed down since the first copy moved to a task, in order.
    chunks: Vec<Bytes>,
    /// `Some(true)` once the object is complete, `Some(false)` once it was cut short.
    end: Option<bool>,
}

impl Arrival {
    fn lock(&self) -> std::sync::MutexGuard<'_, Arrived> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the object is going: to `peer` over `conn`, within `outbox`'s budget.
pub(crate) struct Target {
    pub peer: NodeId,
    pub conn: quinn::Connection,
    pub outbox: Arc<Outbox>,
}

/// A copy the fan-out writes itself: its stream is open and holds everything handed down so far.
struct Copy {
    peer: NodeId,
    send: quinn::SendStream,
    outbox: Arc<Outbox>,
}

/// One arriving object's downstream copies.
pub(super) struct Fanout {
    me: NodeId,
    header: ObjectHeader,
    arrival: Arc<Arrival>,
    /// Copies written here, each holding every chunk of `arrival`.
    copies: Vec<Copy>,
    /// Whether any copy was moved to its own task (it then waits on `arrival`).
    tasks: bool,
    /// Chunks read but not handed down yet, and their size. They go down gathered into one buffer: quinn
    /// looks a packet's data up by walking a stream's unacknowledged chunks, so copies written as the
    /// upstream's packet-sized chunks (hundreds per object) cost every packet sent of them a walk of hundreds.
    unflushed: Vec<Bytes>,
    unflushed_bytes: usize,
    /// When the oldest of `unflushed` arrived.
    since: Option<tokio::time::Instant>,
    /// Reused for each copy's write (quinn advances the chunks it is given).
    scratch: Vec<Bytes>,
    /// Whether the object ended (complete) and the copies were told.
    finished: bool,
}

impl Fanout {
    /// Opens a copy of the object `header` introduces toward each target that has room for it in its budget;
    /// returns the fan-out and the targets without room (they lag, and get the whole object later).
    pub(super) fn start(me: &NodeId, header: &ObjectHeader, targets: Vec<Target>) -> (Self, Vec<Arc<Outbox>>) {
        let mut head = Vec::with_capacity(128);
        Frame::Object(header.clone()).encode(&mut head);
        let head = Bytes::from(head);
        let mut fanout = Self {
            me: me.clone(),
            header: header.clone(),
            arrival: Arc::default(),
            copies: Vec::with_capacity(targets.len()),
            tasks: false,
            unflushed: Vec::new(),
            unflushed_bytes: 0,
            since: None,
            scratch: Vec::new(),
            finished: false,
        };
        let mut lagging = Vec::new();
        for Target { peer, conn, outbox } in targets {
            if !outbox.reserve(header.len) {
                lagging.push(outbox);
                continue;
            }
            // Opening a stream waits only when the peer's stream limit is reached.
            match conn.open_uni().now_or_never() {
                Some(Ok(send)) => {
                    let _ = send.set_priority(priority(header));
                    fanout.write(Copy { peer, send, outbox }, std::slice::from_ref(&head), 0);
                }
                Some(Err(e)) => {
                    fanout.failed(&peer, &e.into());
                    outbox.release(header.len);
                }
                None => fanout.spawn(CopyTask::Open { conn, head: head.clone() }, peer, outbox, 0),
            }
        }
        (fanout, lagging)
    }

    /// Whether any copy is still going.
    pub(super) fn is_empty(&self) -> bool {
        self.copies.is_empty() && !self.tasks
    }

    /// When the bytes read and not handed down yet must go at the latest ([`FLUSH_AFTER`]); `None` when
    /// there are none.
    pub(super) fn flush_at(&self) -> Option<tokio::time::Instant> {
        self.since.map(|t| t + FLUSH_AFTER)
    }

    /// A batch of the body's chunks arrived; they go down once enough waited ([`FLUSH_BYTES`]).
    pub(super) fn arrived(&mut self, chunks: &[Bytes]) {
        if self.is_empty() {
            return;
        }
        if self.since.is_none() && !chunks.is_empty() {
            self.since = Some(tokio::time::Instant::now());
        }
        for chunk in chunks {
            self.unflushed_bytes += chunk.len();
            self.unflushed.push(chunk.clone());
        }
        if self.unflushed_bytes >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Hands every waiting chunk to the copies.
    pub(super) fn flush(&mut self) {
        if self.unflushed.is_empty() {
            return;
        }
        let mut gathered = BytesMut::with_capacity(self.unflushed_bytes);
        for chunk in self.unflushed.drain(..) {
            gathered.extend_from_slice(&chunk);
        }
        let batch = [gathered.freeze()];
        self.unflushed_bytes = 0;
        self.since = None;
        // Only copies in tasks read the arrival, and only what came after they were moved there: until one
        // is, nothing is kept beside the body.
        let next = {
            let mut arrival = self.arrival.lock();
            if self.tasks {
                arrival.chunks.extend(batch.iter().cloned());
            }
            arrival.chunks.len()
        };
        if self.tasks {
            self.arrival.more.notify_waiters();
        }
        let copies = std::mem::take(&mut self.copies);
        for copy in copies {
            self.write(copy, &batch, next);
        }
    }

    /// The object is complete: every copy ends its stream after the last chunk.
    pub(super) fn finish(mut self) {
        self.flush();
        self.end(true);
        self.finished = true;
        for mut copy in std::mem::take(&mut self.copies) {
            match copy.send.finish() {
                Ok(()) => sent(&self.me, &copy.peer, &self.header),
                Err(e) => self.failed(&copy.peer, &e.into()),
            }
            copy.outbox.release(self.header.len);
        }
    }

    /// Tells the copies' tasks how the object ended.
    fn end(&self, complete: bool) {
        self.arrival.lock().end = Some(complete);
        if self.tasks {
            self.arrival.more.notify_waiters();
        }
    }

    /// Writes `chunks` (which end at chunk `next` of the arrival) to `copy` without waiting: what QUIC does
    /// not take now is written by a task of the copy's own.
    fn write(&mut self, mut copy: Copy, chunks: &[Bytes], next: usize) {
        self.scratch.clear();
        self.scratch.extend(chunks.iter().cloned());
        match copy.send.write_chunks(&mut self.scratch).now_or_never() {
            Some(Ok(written)) if written.chunks == self.scratch.len() => self.copies.push(copy),
            Some(Ok(written)) => {
                let rest = self.scratch.drain(written.chunks..).collect();
                self.spawn(CopyTask::Write { send: copy.send, rest }, copy.peer, copy.outbox, next);
            }
            Some(Err(e)) => {
                let _ = copy.send.reset(UPSTREAM_FAILED.into());
                self.failed(&copy.peer, &e.into());
                copy.outbox.release(self.header.len);
            }
            None => {
                let rest = std::mem::take(&mut self.scratch);
                self.spawn(CopyTask::Write { send: copy.send, rest }, copy.peer, copy.outbox, next);
            }
        }
    }

    /// Moves a copy to its own task, which goes on from chunk `next` of the arrival once `task` is done.
    fn spawn(&mut self, task: CopyTask, peer: NodeId, outbox: Arc<Outbox>, next: usize) {
        self.tasks = true;
        let (me, header, arrival) = (self.me.clone(), self.header.clone(), self.arrival.clone());
        tokio::spawn(
            async move {
                match task.run(&header, &arrival, next).await {
                    Ok(true) => sent(&me, &peer, &header),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%peer, stream = %header.stream, object = %header.name, error = %e, "could not forward an object"),
                }
                outbox.release(header.len);
            }
            .in_current_span(),
        );
    }

    fn failed(&self, peer: &NodeId, e: &anyhow::Error) {
        tracing::warn!(%peer, stream = %self.header.stream, object = %self.header.name, error = %e, "could not forward an object");
    }
}

impl Drop for Fanout {
    /// Dropped before [`Fanout::finish`] (the upstream failed): every copy is reset.
    fn drop(&mut self) {
        if self.finished || self.is_empty() {
            return;
        }
        self.end(false);
        for mut copy in std::mem::take(&mut self.copies) {
            // quinn would finish a dropped stream cleanly; a copy cut short is reset instead. Already closed
            // (the connection went away) is as good as reset.
            let _ = copy.send.reset(UPSTREAM_FAILED.into());
            copy.outbox.release(self.header.len);
        }
    }
}

/// Where a copy's own task starts.
enum CopyTask {
    /// The stream is not open yet: open it and write the header first.
    Open { conn: quinn::Connection, head: Bytes },
    /// These chunks were not taken yet.
    Write { send: quinn::SendStream, rest: Vec<Bytes> },
}

impl CopyTask {
    /// Writes the copy to its end from chunk `next` of `arrival` on. Returns whether it was finished (false:
    /// the upstream failed and the copy was reset).
    async fn run(self, header: &ObjectHeader, arrival: &Arrival, mut next: usize) -> Result<bool> {
        let (mut send, mut rest) = match self {
            CopyTask::Open { conn, head } => {
                let send = conn.open_uni().await?;
                send.set_priority(priority(header))?;
                (send, vec![head])
            }
            CopyTask::Write { send, rest } => (send, rest),
        };
        let written = async {
            loop {
                send.write_all_chunks(&mut rest).await?;
                let more = arrival.more.notified();
                tokio::pin!(more);
                more.as_mut().enable();
                let end = {
                    let arrived = arrival.lock();
                    rest.clear();
                    rest.extend(arrived.chunks[next..].iter().cloned());
                    next = arrived.chunks.len();
                    arrived.end
                };
                if rest.is_empty() {
                    match end {
                        Some(true) => {
                            send.finish()?;
                            return Ok(true);
                        }
                        Some(false) => return Ok(false),
                        None => more.await,
                    }
                }
            }
        }
        .await;
        if !matches!(written, Ok(true)) {
            let _ = send.reset(UPSTREAM_FAILED.into());
        }
        written
    }
}

/// Counts a copy that went down whole.
fn sent(me: &NodeId, peer: &NodeId, header: &ObjectHeader) {
    let labels = [("node", me.to_string()), ("peer", peer.to_string()), ("stream", header.stream.to_string())];
    metrics::counter!("lightpath_mesh_objects_sent_total", &labels).increment(1);
    metrics::counter!("lightpath_mesh_bytes_sent_total", &labels).increment(header.len);
}

/// Newest first across all streams: priority follows the origin's clock (wraps every ~24 days, which only
/// briefly inverts the order of the objects in flight at that instant).
pub(super) fn priority(header: &ObjectHeader) -> i32 {
    (header.born_unix_ms % (1 << 31)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{create_ca, issue, CaFiles, Identity};
    use crate::id::{ObjectName, StreamName};
    use crate::wire;

    const BODY: usize = 256 << 10;

    fn endpoint(ca: &CaFiles, node: &str, transport: quinn::TransportConfig) -> quinn::Endpoint {
        let files = issue(ca, &NodeId::new(node).unwrap(), 1).unwrap();
        let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem).unwrap();
        let transport = Arc::new(transport);
        let server = crate::quic::server_config(&identity, transport.clone()).unwrap();
        let mut endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(crate::quic::client_config(&identity, transport).unwrap());
        endpoint
    }

    /// The relay's endpoint and its connections to a peer that takes all at once and to one whose stream
    /// window (16 KiB) holds a copy up; the peers' ends of both.
    async fn relay_and_peers() -> (quinn::Endpoint, Vec<quinn::Connection>, Vec<quinn::Connection>) {
        let ca = create_ca("fanout test CA").unwrap();
        let relay =
            endpoint(&ca, "relay", crate::quic::transport(crate::config::QuicConfig::default().max_object_streams));
        let mut narrow = crate::quic::transport(crate::config::QuicConfig::default().max_object_streams);
        narrow.stream_receive_window(16_384u32.into());
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for (name, transport) in [
            ("fast", crate::quic::transport(crate::config::QuicConfig::default().max_object_streams)),
            ("narrow", narrow),
        ] {
            let peer = endpoint(&ca, name, transport);
            let accepting = tokio::spawn({
                let peer = peer.clone();
                async move { peer.accept().await.unwrap().await.unwrap() }
            });
            ours.push(relay.connect(peer.local_addr().unwrap(), name).unwrap().await.unwrap());
            theirs.push(accepting.await.unwrap());
        }
        (relay, ours, theirs)
    }

    fn header(len: usize) -> ObjectHeader {
        ObjectHeader {
            stream: StreamName::new("s").unwrap(),
            name: ObjectName::new("seg1.m4s").unwrap(),
            version: 1,
            seq: 1,
            content_type: "video/mp4".into(),
            duration_ms: 1000,
            born_unix_ms: 1,
            len: len as u64,
        }
    }

    fn targets(conns: &[quinn::Connection]) -> Vec<Target> {
        let me = NodeId::new("relay").unwrap();
        conns
            .iter()
            .enumerate()
            .map(|(i, conn)| {
                let peer = NodeId::new(format!("peer-{i}")).unwrap();
                Target { outbox: Outbox::new(1 << 20, &me, &peer), conn: conn.clone(), peer }
            })
            .collect()
    }

    /// Hands `body` to `fanout` in 4 KiB chunks, as a reader would, with a flush after each 16 KiB.
    fn feed(fanout: &mut Fanout, body: &Bytes) {
        for (i, chunk) in body.chunks(4096).enumerate() {
            fanout.arrived(&[body.slice_ref(chunk)]);
            if i % 4 == 3 {
                fanout.flush();
            }
        }
    }

    /// What a peer read of the next object stream: the header and the body, or the error that ended it.
    async fn receive(conn: &quinn::Connection) -> Result<(ObjectHeader, Vec<u8>), quinn::ReadToEndError> {
        let mut recv = tokio::time::timeout(Duration::from_secs(10), conn.accept_uni()).await.unwrap().unwrap();
        let all = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(BODY + 1024)).await.unwrap()?;
        let mut buf = BytesMut::from(&all[..]);
        let Some(Frame::Object(header)) = wire::decode_from(&mut buf).unwrap() else { panic!("no header frame") };
        Ok((header, buf.to_vec()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_copy_arrives_whole_and_a_held_up_one_holds_up_nobody() {
        let (_relay, ours, theirs) = relay_and_peers().await;
        let body: Bytes = (0..BODY).map(|i| (i * 7 + i / 4096) as u8).collect::<Vec<u8>>().into();
        let (mut fanout, lagging) = Fanout::start(&NodeId::new("relay").unwrap(), &header(BODY), targets(&ours));
        assert!(lagging.is_empty());
        // The whole body goes in and the object ends before either peer reads anything: the narrow peer's
        // 16 KiB window cannot take it, and the reader does not wait for it.
        feed(&mut fanout, &body);
        fanout.finish();
        for conn in &theirs {
            let (h, got) = receive(conn).await.expect("a whole copy");
            assert_eq!(h, header(BODY));
            assert!(got == body[..], "a peer got {} other bytes", got.len());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_object_cut_short_is_reset_on_every_copy() {
        let (_relay, ours, theirs) = relay_and_peers().await;
        let body: Bytes = vec![7u8; BODY].into();
        let (mut fanout, _) = Fanout::start(&NodeId::new("relay").unwrap(), &header(BODY), targets(&ours));
        feed(&mut fanout, &body.slice(..BODY / 2));
        drop(fanout);
        for conn in &theirs {
            let ended = receive(conn).await;
            assert!(
                matches!(ended, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))),
                "a copy of a cut-short object ended otherwise than reset: {:?}",
                ended.map(|(_, b)| b.len())
            );
        }
    }
}
