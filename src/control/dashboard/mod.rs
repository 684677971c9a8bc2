//! The live operator dashboard a control replica serves: the page and its event stream.
//!
//! `GET /dashboard` is one HTML page with plain JavaScript and SVG (`page.html`, `dashboard.js`), and
//! `/dashboard/world.json` the map it draws: Natural Earth's countries at 1:110m as TopoJSON, from the
//! `world-atlas` package (see `NOTICE` beside it, served at `/dashboard/NOTICE`). All of it is compiled into
//! the binary and the page loads nothing from elsewhere (its `Content-Security-Policy` says so), so it works
//! on a replica with no Internet access.
//!
//! The page takes everything it shows from `GET /api/events`, server-sent events: on connect the replica's
//! current picture (the operator API's regions, nodes, links, measured graph, routes and streams, as one
//! JSON `mesh` event), then a new one whenever the picture changes. The replica's driver publishes a
//! picture on a `watch` channel only when it differs from the last, so events are as frequent as the
//! control plane's recomputations (every 100 ms at most) and carry no repeats; each stream also waits
//! [`COALESCE`] after an event, so a burst of changes goes out as one. A failure the control plane learns
//! reaches an open page one recomputation and at most one coalescing wait later.
//!
//! Every open stream is bounded: at most `dashboard.max_event_streams` at once (503 beyond); each has a
//! queue of [`QUEUE_CHUNKS`] chunks between its task and hyper, which takes a chunk only when the
//! connection can send it, so a reader that falls that far behind is cut off (and its browser reconnects,
//! to the newest picture) instead of being buffered for; a comment line every `dashboard.keepalive_ms`
//! keeps proxies from closing a quiet stream and lets the page notice a replica that died.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::config::DashboardConfig;
use crate::http::{refuse, Reply, Side};
use crate::telemetry::{Bounds, SharedLogGate};

/// How long an event stream waits after an event before it sends the next: changes in that time go out
/// as one event.
pub const COALESCE: Duration = Duration::from_millis(250);
/// Chunks (events or keep-alives) that may wait for a slow reader before it is cut off.
pub const QUEUE_CHUNKS: usize = 8;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("dashboard.js");
const WORLD: &str = include_str!("countries-110m.json");
const NOTICE: &str = include_str!("NOTICE");

/// The page's own policy: scripts, data and the event stream from this replica only.
const CSP: &str =
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:";

/// A static part of the dashboard at `path` (under `/dashboard`), if there is one.
pub fn asset(path: &str) -> Option<Reply> {
    let (body, content_type) = match path {
        "/dashboard" | "/dashboard/" => (PAGE, "text/html; charset=utf-8"),
        "/dashboard/dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/dashboard/world.json" => (WORLD, "application/json"),
        "/dashboard/NOTICE" => (NOTICE, "text/plain; charset=utf-8"),
        _ => return None,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(resp)
}

/// The replica's event streams: where pictures come from, and the bound on open streams.
pub struct EventStreams {
    pictures: watch::Receiver<Bytes>,
    slots: Arc<Semaphore>,
    config: DashboardConfig,
    bounds: Arc<Bounds>,
    slow_log: Arc<SharedLogGate>,
}

impl EventStreams {
    /// Streams of the pictures `pictures` receives (compact JSON, one line), within `config`'s bound;
    /// `node` labels the counters.
    pub fn new(pictures: watch::Receiver<Bytes>, config: DashboardConfig, node: &str) -> Self {
        Self {
            pictures,
            slots: Arc::new(Semaphore::new(config.max_event_streams)),
            config,
            bounds: Arc::new(Bounds::new(node)),
            slow_log: Arc::new(SharedLogGate::default()),
        }
    }

    /// Answers `GET /api/events` from `client`: a stream of `mesh` events, or 503 when every slot is taken.
    pub fn open(&self, client: Option<SocketAddr>) -> Reply {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.bounds.limit_hit("dashboard.max_event_streams");
            let mut reply = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                Side::Downstream,
                format!(
                    "too many dashboard event streams open (dashboard.max_event_streams = {})",
                    self.config.max_event_streams
                ),
            );
            reply.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return reply;
        };
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let feed = Feed {
            pictures: self.pictures.clone(),
            chunks: tx,
            keepalive: self.config.keepalive(),
            client,
            bounds: self.bounds.clone(),
            slow_log: self.slow_log.clone(),
            _slot: slot,
        };
        self.bounds.connections("event_stream", self.open_streams());
        let slots = self.slots.clone();
        let (bounds, max) = (self.bounds.clone(), self.config.max_event_streams);
        tokio::spawn(async move {
            feed.run().await;
            // The slot is back once the feed is dropped.
            bounds.connections("event_stream", max - slots.available_permits());
        });
        let mut reply = crate::http::streamed::reply(StatusCode::OK, "text/event-stream", rx);
        reply.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
        reply
    }

    fn open_streams(&self) -> usize {
        self.config.max_event_streams - self.slots.available_permits()
    }
}

/// One open event stream: the task that writes its chunks.
struct Feed {
    pictures: watch::Receiver<Bytes>,
    chunks: mpsc::Sender<Bytes>,
    keepalive: Duration,
    client: Option<SocketAddr>,
    bounds: Arc<Bounds>,
    slow_log: Arc<SharedLogGate>,
    _slot: OwnedSemaphorePermit,
}

impl Feed {
    async fn run(mut self) {
        let mut id = 0u64;
        // Browsers reconnect after `retry` ms when a stream ends (a slow reader cut off, a replica restart).
        let first = self.pictures.borrow_and_update().clone();
        if !self.send(Bytes::from_static(b"retry: 1000\n\n")) || !self.send(event(&mut id, &first)) {
            return;
        }
        loop {
            let chunk = tokio::select! {
                changed = self.pictures.changed() => match changed {
                    Ok(()) => event(&mut id, &self.pictures.borrow_and_update().clone()),
                    Err(_) => return, // the replica is stopping
                },
                _ = tokio::time::sleep(self.keepalive) => Bytes::from_static(b": keep-alive\n\n"),
                _ = self.chunks.closed() => return,
            };
            if !self.send(chunk) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(COALESCE) => {}
                _ = self.chunks.closed() => return,
            }
        }
    }

    /// Queues a chunk; false when the stream is over (the client left, or reads too slowly and is cut off).
    fn send(&self, chunk: Bytes) -> bool {
        match self.chunks.try_send(chunk) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bounds.refused("event_stream_slow_reader");
                if let Some(held_back) = self.slow_log.pass() {
                    let client = self.client.map(|c| c.to_string()).unwrap_or_default();
                    tracing::info!(%client, queued = QUEUE_CHUNKS, held_back, "dashboard event stream cut off: the client reads too slowly");
                }
                false
            }
        }
    }
}

/// One `mesh` event carrying `picture` (one line of JSON).
fn event(id: &mut u64, picture: &Bytes) -> Bytes {
    *id += 1;
    let mut out = Vec::with_capacity(picture.len() + 40);
    out.extend_from_slice(format!("id: {id}\nevent: mesh\ndata: ").as_bytes());
    out.extend_from_slice(picture);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(max: usize) -> (watch::Sender<Bytes>, EventStreams) {
        let (tx, rx) = watch::channel(Bytes::from_static(b"{\"n\":0}"));
        let config = DashboardConfig { max_event_streams: max, keepalive_ms: 1000 };
        (tx, EventStreams::new(rx, config, "test"))
    }

    /// The body's chunks as the server would send them.
    fn chunks(reply: Reply) -> mpsc::Receiver<Bytes> {
        let activity = crate::http::watchdog::Activity::new();
        let (in_flight, _) = activity.request();
        match crate::http::streamed::into_sent(reply, in_flight).into_body() {
            crate::http::streamed::Body::Streamed { chunks, .. } => chunks,
            crate::http::streamed::Body::Whole(_) => panic!("an event stream came back whole"),
        }
    }

    fn text(chunk: Option<Bytes>) -> String {
        String::from_utf8(chunk.expect("the stream ended").to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_starts_with_the_picture_then_sends_each_change_once_coalesced() {
        let (tx, streams) = streams(4);
        let reply = streams.open(None);
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.headers()[header::CONTENT_TYPE], "text/event-stream");
        let mut rx = chunks(reply);
        assert_eq!(text(rx.recv().await), "retry: 1000\n\n");
        assert_eq!(text(rx.recv().await), "id: 1\nevent: mesh\ndata: {\"n\":0}\n\n");
        // A change goes out at once; the next two, within the coalescing wait, go out as one event after it.
        tx.send_replace(Bytes::from_static(b"{\"n\":1}"));
        assert_eq!(text(rx.recv().await), "id: 2\nevent: mesh\ndata: {\"n\":1}\n\n");
        tx.send_replace(Bytes::from_static(b"{\"n\":2}"));
        tx.send_replace(Bytes::from_static(b"{\"n\":3}"));
        let before = tokio::time::Instant::now();
        assert_eq!(text(rx.recv().await), "id: 3\nevent: mesh\ndata: {\"n\":3}\n\n");
        assert!(before.elapsed() <= COALESCE);
        // Nothing new: a keep-alive comment.
        assert_eq!(text(rx.recv().await), ": keep-alive\n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn streams_past_the_bound_get_503_and_a_closed_one_frees_its_slot() {
        let (_tx, streams) = streams(2);
        let a = chunks(streams.open(None));
        let _b = chunks(streams.open(None));
        let refused = streams.open(None);
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
        drop(a);
        // The feed notices at its next wake-up and gives its slot back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while streams.open_streams() == 2 {
            assert!(tokio::time::Instant::now() < deadline, "the closed stream kept its slot");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(streams.open(None).status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_falls_behind_is_cut_off_not_buffered_for() {
        let (tx, streams) = streams(4);
        let mut rx = chunks(streams.open(None));
        // Nobody reads: changes and keep-alives pile up until the queue is full, then the stream ends.
        for n in 0..(QUEUE_CHUNKS as u64 * 4) {
            tx.send_replace(Bytes::from(format!("{{\"n\":{n}}}")));
            tokio::time::sleep(COALESCE * 2).await;
        }
        let mut got = 0;
        while rx.recv().await.is_some() {
            got += 1;
        }
        assert_eq!(got, QUEUE_CHUNKS, "the stream held more than its queue for a reader that did not read");
        assert!(tx.receiver_count() == 1, "the feed still holds the pictures after cutting the reader off");
    }
}
