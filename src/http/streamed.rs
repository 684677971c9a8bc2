//! Replies whose body is written while it is being sent: the control replica's server-sent events.
//!
//! Every handler returns a [`Reply`], a whole body. A handler that streams instead returns [`reply`]: an
//! empty body and, in its extensions, the receiving end of a bounded channel that a task of the handler's
//! fills. The server ([`super::serve`]) turns it into a [`Body::Streamed`] before hyper sees it, so no other
//! handler changes type. The producer owns the bound: hyper takes a chunk only when the connection can send
//! one, so a client that reads slowly leaves the channel full, and the producer, seeing `try_send` fail,
//! ends the stream rather than buffer for it (see `control::events`).
//!
//! A streamed request stays in flight (for the [`watchdog`](super::watchdog)) until its body ends: its
//! connection is neither idle nor waiting for a head while events flow, on HTTP/2 too, where only requests
//! count as activity.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use tokio::sync::mpsc;

use super::watchdog::InFlight;
use super::Reply;

/// The chunks of a streamed reply, in its extensions until the server takes them (an extension must be
/// `Clone`, hence the shared slot; only the server takes it, once).
#[derive(Clone)]
struct Chunks(Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>);

/// A reply with `status` and `content_type` whose body is every chunk sent on the channel `chunks`
/// receives, in order, ending when every sender is dropped. Not cached by anyone on the way.
pub fn reply(status: StatusCode, content_type: &'static str, chunks: mpsc::Receiver<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.extensions_mut().insert(Chunks(Arc::new(Mutex::new(Some(chunks)))));
    resp
}

/// The body the server hands hyper: a handler's whole body, or the chunks of a [`reply`].
pub enum Body {
    /// A whole body (every reply but a streamed one).
    Whole(Full<Bytes>),
    /// A streamed body; its request counts as in flight until the body ends.
    Streamed { chunks: mpsc::Receiver<Bytes>, _in_flight: InFlight },
}

/// Turns a handler's reply into what hyper sends. `in_flight` ends now for a whole body, with the body for
/// a streamed one.
pub fn into_sent(reply: Reply, in_flight: InFlight) -> Response<Body> {
    let chunks = reply.extensions().get::<Chunks>().and_then(|c| c.0.lock().unwrap_or_else(|e| e.into_inner()).take());
    match chunks {
        Some(chunks) => reply.map(|_| Body::Streamed { chunks, _in_flight: in_flight }),
        None => reply.map(Body::Whole),
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Whole(full) => Pin::new(full).poll_frame(cx),
            Body::Streamed { chunks, .. } => chunks.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Whole(full) => full.is_end_stream(),
            Body::Streamed { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(full) => full.size_hint(),
            Body::Streamed { .. } => SizeHint::default(),
        }
    }
}
