//! Why the edge refuses a viewer's request, as a type: each cause knows the status the viewer sees, the
//! side that failed, and whether a retry makes sense.

use std::time::Duration;

use http::{header, HeaderValue, StatusCode};

use crate::http::{refuse, Reply, Side};
use crate::id::{NodeId, ObjectName, StreamName};

/// How long a viewer is told to wait before asking again for a stream whose origin is unreachable.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(2);

/// How long a viewer refused by a draining edge is told to wait: a player retrying through the director by
/// then is sent to another edge.
const DRAINING_RETRY: Duration = Duration::from_secs(5);

/// Why a viewer's `GET` or `HEAD` was not answered with the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// No origin announced the stream and nothing of it is cached here: 404.
    #[error("no stream {stream}")]
    NoStream {
        /// The stream asked for.
        stream: StreamName,
    },
    /// The stream's origin is known but this edge has no path to it: 503 with `Retry-After`.
    #[error(
        "the origin of stream {stream} ({}) is unreachable from this edge; retry shortly",
        .origin.as_ref().map_or("", NodeId::as_str)
    )]
    OriginUnreachable {
        /// The stream asked for.
        stream: StreamName,
        /// Its origin, when the stream's announcement is known.
        origin: Option<NodeId>,
    },
    /// The object is not cached and did not arrive within the edge's wait (`edge.wait_ms`): 404.
    #[error("{stream}/{name} did not arrive within {} ms", .waited.as_millis())]
    NotArrived {
        /// The stream asked for.
        stream: StreamName,
        /// The object asked for.
        name: ObjectName,
        /// How long the request waited for it.
        waited: Duration,
    },
    /// A media segment numbered more than [`AHEAD`](super::expect::AHEAD) beyond the newest one of its
    /// counter that this edge holds, and listed in no cached playlist (`seg99999.ts` while the stream is at
    /// `seg120.ts`): it would not arrive within any wait, so it is 404 at once.
    #[error("{stream}/{name} is beyond the live edge (newest: {newest}); not waiting for it")]
    BeyondLiveEdge {
        /// The stream asked for.
        stream: StreamName,
        /// The object asked for.
        name: ObjectName,
        /// The newest cached segment of the same counter.
        newest: String,
    },
    /// A media segment older than the newest of its counter, not cached and listed in no cached playlist:
    /// it aged out of the live window or its publisher deleted it, and will not come back: 404 at once.
    #[error("{stream}/{name} has left the live window (newest: {newest})")]
    LeftLiveWindow {
        /// The stream asked for.
        stream: StreamName,
        /// The object asked for.
        name: ObjectName,
        /// The newest cached segment of the same counter.
        newest: String,
    },
    /// This node has neither the edge nor the origin role: 404.
    #[error("this node serves no viewers")]
    NoViewers,
    /// A playlist request whose `_HLS_msn`, `_HLS_part` or `_HLS_skip` is malformed: 400.
    #[error("{stream}/{name}: {error}")]
    BadReload {
        /// The stream asked for.
        stream: StreamName,
        /// The playlist asked for.
        name: ObjectName,
        /// What is wrong with the query.
        error: crate::hls::ll::ReloadError,
    },
    /// A blocking reload for a segment more than two beyond the playlist's newest: 400, as the HLS
    /// specification asks.
    #[error("{stream}/{name}: _HLS_msn={msn} is more than two segments beyond the newest ({newest:?})")]
    ReloadTooFar {
        /// The stream asked for.
        stream: StreamName,
        /// The playlist asked for.
        name: ObjectName,
        /// The segment asked for.
        msn: u64,
        /// The newest complete segment listed.
        newest: Option<u64>,
    },
    /// A blocking reload whose part did not come within three target durations (or `edge.block_ms`): 503.
    #[error("{stream}/{name}: the part asked for did not come within {} ms", .waited.as_millis())]
    ReloadTimedOut {
        /// The stream asked for.
        stream: StreamName,
        /// The playlist asked for.
        name: ObjectName,
        /// How long the request was held.
        waited: Duration,
    },
    /// `edge.max_blocked` blocking reloads are held already: 503 with `Retry-After`.
    #[error("{0} blocking playlist reloads are held already (edge.max_blocked)")]
    TooManyBlocked(u32),
    /// An operator took the stream down: 451 with the operator's reason.
    #[error("stream {stream} is taken down: {reason}")]
    TakenDown {
        /// The stream asked for.
        stream: StreamName,
        /// The operator's reason.
        reason: String,
    },
    /// An operator is draining this edge and it does not carry the stream: serving it would start a new
    /// subscription here. 503 with `Retry-After`, so that the viewer goes to another edge (the director no
    /// longer sends anyone here).
    #[error("this edge is draining and takes no new stream ({stream}); use another edge")]
    Draining {
        /// The stream asked for.
        stream: StreamName,
    },
}

impl EdgeError {
    /// The status the viewer sees.
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::NoStream { .. }
            | EdgeError::NotArrived { .. }
            | EdgeError::BeyondLiveEdge { .. }
            | EdgeError::LeftLiveWindow { .. }
            | EdgeError::NoViewers => StatusCode::NOT_FOUND,
            EdgeError::BadReload { .. } | EdgeError::ReloadTooFar { .. } => StatusCode::BAD_REQUEST,
            EdgeError::OriginUnreachable { .. }
            | EdgeError::ReloadTimedOut { .. }
            | EdgeError::TooManyBlocked(_)
            | EdgeError::Draining { .. } => StatusCode::SERVICE_UNAVAILABLE,
            EdgeError::TakenDown { .. } => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
        }
    }

    /// Whether asking again makes sense, and after how long (sent as `Retry-After`). `None` when the same
    /// request would fail the same way: the stream does not exist, the node serves no viewers, or the
    /// object already had the whole wait to arrive, or will never arrive (a player moves on with its next
    /// playlist).
    pub fn retry(&self) -> Option<Duration> {
        match self {
            EdgeError::OriginUnreachable { .. } => Some(UNREACHABLE_RETRY),
            EdgeError::Draining { .. } => Some(DRAINING_RETRY),
            EdgeError::ReloadTimedOut { .. } | EdgeError::TooManyBlocked(_) => Some(Duration::from_secs(1)),
            EdgeError::BadReload { .. } | EdgeError::ReloadTooFar { .. } => None,
            EdgeError::NoStream { .. }
            | EdgeError::NotArrived { .. }
            | EdgeError::BeyondLiveEdge { .. }
            | EdgeError::LeftLiveWindow { .. }
            | EdgeError::NoViewers
            | EdgeError::TakenDown { .. } => None,
        }
    }

    /// Which side failed: the viewer asked for something this node does not have, or the mesh did not
    /// bring what it should have.
    pub fn side(&self) -> Side {
        match self {
            EdgeError::NoStream { .. }
            | EdgeError::BeyondLiveEdge { .. }
            | EdgeError::LeftLiveWindow { .. }
            | EdgeError::NoViewers
            | EdgeError::BadReload { .. }
            | EdgeError::ReloadTooFar { .. }
            | EdgeError::TakenDown { .. } => Side::Downstream,
            EdgeError::OriginUnreachable { .. } | EdgeError::NotArrived { .. } | EdgeError::ReloadTimedOut { .. } => {
                Side::Upstream
            }
            EdgeError::TooManyBlocked(_) | EdgeError::Draining { .. } => Side::Internal,
        }
    }

    /// The viewer's reply: the status, the cause as one line of text, and `Retry-After` when a retry makes
    /// sense. The reply carries the cause for the log.
    pub fn into_reply(self) -> Reply {
        let (status, side, retry) = (self.status(), self.side(), self.retry());
        let mut resp = refuse(status, side, self);
        if let Some(after) = retry {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::http::Refusal;

    fn stream() -> StreamName {
        StreamName::new("shop1").unwrap()
    }

    fn every_cause() -> [EdgeError; 8] {
        [
            EdgeError::NoStream { stream: stream() },
            EdgeError::OriginUnreachable { stream: stream(), origin: Some(NodeId::new("origin-eu").unwrap()) },
            EdgeError::NotArrived {
                stream: stream(),
                name: ObjectName::new("seg7.ts").unwrap(),
                waited: Duration::from_millis(6000),
            },
            EdgeError::NoViewers,
            EdgeError::BeyondLiveEdge {
                stream: stream(),
                name: ObjectName::new("seg99999.ts").unwrap(),
                newest: "seg120.ts".into(),
            },
            EdgeError::LeftLiveWindow {
                stream: stream(),
                name: ObjectName::new("seg3.ts").unwrap(),
                newest: "seg120.ts".into(),
            },
            EdgeError::TakenDown { stream: stream(), reason: "rights holder's request".into() },
            EdgeError::Draining { stream: stream() },
        ]
    }

    #[test]
    fn each_cause_has_its_status_retry_and_side() {
        let expected = [
            (StatusCode::NOT_FOUND, None, Side::Downstream),
            (StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(2)), Side::Upstream),
            (StatusCode::NOT_FOUND, None, Side::Upstream),
            (StatusCode::NOT_FOUND, None, Side::Downstream),
            (StatusCode::NOT_FOUND, None, Side::Downstream),
            (StatusCode::NOT_FOUND, None, Side::Downstream),
            (StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, None, Side::Downstream),
            (StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(5)), Side::Internal),
        ];
        for (e, (status, retry, side)) in every_cause().into_iter().zip(expected) {
            assert_eq!((e.status(), e.retry(), e.side()), (status, retry, side), "{e}");
        }
    }

    #[test]
    fn replies_are_what_viewers_saw_before_the_type() {
        let bodies = [
            "no stream shop1\n",
            "the origin of stream shop1 (origin-eu) is unreachable from this edge; retry shortly\n",
            "shop1/seg7.ts did not arrive within 6000 ms\n",
            "this node serves no viewers\n",
            "shop1/seg99999.ts is beyond the live edge (newest: seg120.ts); not waiting for it\n",
            "shop1/seg3.ts has left the live window (newest: seg120.ts)\n",
            "stream shop1 is taken down: rights holder's request\n",
            "this edge is draining and takes no new stream (shop1); use another edge\n",
        ];
        for (e, body) in every_cause().into_iter().zip(bodies) {
            let status = e.status();
            let retry = e.retry();
            let reply = e.clone().into_reply();
            assert_eq!(reply.status(), status);
            assert_eq!(reply.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
            let retry_after = reply.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(retry_after, retry.map(|d| d.as_secs().to_string()), "{e}");
            assert_eq!(reply.headers().len(), 1 + retry.is_some() as usize, "{e}");
            let refusal = reply.extensions().get::<Refusal>().expect("the reply names its cause for the log");
            assert_eq!((refusal.side, refusal.cause.to_string()), (e.side(), e.to_string()));
            let sent = futures_util::FutureExt::now_or_never(reply.into_body().collect()).unwrap().unwrap();
            assert_eq!(sent.to_bytes(), body.as_bytes());
        }
    }

    #[test]
    fn an_unknown_origin_shows_as_empty_parentheses() {
        let e = EdgeError::OriginUnreachable { stream: stream(), origin: None };
        assert_eq!(e.to_string(), "the origin of stream shop1 () is unreachable from this edge; retry shortly");
    }
}
