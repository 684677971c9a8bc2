//! The time limits of one HTTP connection: how long a client may take over a request head, and how long a
//! connection may sit idle between requests.
//!
//! hyper has a header timeout of its own, but it starts when hyper begins to wait for a head, so it also
//! cuts a keep-alive connection that is merely idle between requests, at the same moment: a player polling
//! a playlist every 6 s would need a header timeout longer than that, and a slowloris client would get as
//! long. The watchdog tells the two apart, as Varnish and nginx do: the header timeout counts from a head's
//! first byte (found by [`RequestFraming`], which reads the connection's bytes as hyper does) to its blank
//! line; the idle timeout from the end of the last request or the last byte sent, whichever is later.
//! While a request is in flight (a viewer waits for a segment, a publisher uploads one) neither runs: how
//! long an upload may stall is the ingest's body timeout, and a viewer's wait is bounded by the edge.
//!
//! On HTTP/2 only requests count as activity: the frames both sides exchange on an idle connection
//! (pings, settings, window updates) would otherwise keep it open for ever.
//!
//! [`Activity`] is what the connection's I/O ([`Watched`]) and its requests report; [`cut_at`] is the pure
//! decision; [`Activity::expired`] waits for it. This module closes nothing itself: the server drops the
//! connection when `expired` returns.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::framing::{Framing, RequestFraming};

/// A connection's time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a head's first byte to its end.
    pub header: Duration,
    /// With no request in flight and nothing sent.
    pub idle: Duration,
}

/// Which limit cut a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// A head took longer than the header timeout.
    Header,
    /// The connection sat idle longer than the idle timeout.
    Idle,
}

impl TimeoutKind {
    /// Its label in `lightpath_timeouts_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::Header => "header",
            TimeoutKind::Idle => "idle",
        }
    }
}

/// What the watchdog knows of a connection at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// Requests handed to the handler and not answered yet.
    pub in_flight: usize,
    /// When the head being received started, if one is.
    pub head_since: Option<Instant>,
    /// The last request's end or the last byte sent, whichever is later.
    pub quiet_since: Instant,
}

/// When the connection is to be cut, and for what; `None` while a request is in flight.
pub fn cut_at(phase: &Phase, timeouts: &Timeouts) -> Option<(Instant, TimeoutKind)> {
    if phase.in_flight > 0 {
        return None;
    }
    match phase.head_since {
        Some(since) => Some((since + timeouts.header, TimeoutKind::Header)),
        None => Some((phase.quiet_since + timeouts.idle, TimeoutKind::Idle)),
    }
}

#[derive(Debug)]
struct State {
    framing: RequestFraming,
    /// Framing verdicts of heads received and not yet handed to the handler, in order.
    verdicts: VecDeque<Framing>,
    phase: Phase,
}

/// What one connection did, as its I/O and its requests report it.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    /// Wakes [`Activity::expired`] when the deadline may have moved earlier.
    changed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        let phase = Phase { in_flight: 0, head_since: None, quiet_since: Instant::now() };
        let state = State { framing: RequestFraming::new(), verdicts: VecDeque::new(), phase };
        Arc::new(Self { state: Mutex::new(state), changed: Notify::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived from the client.
    fn received(&self, bytes: &[u8]) {
        let mut state = self.lock();
        let State { framing, verdicts, phase } = &mut *state;
        let was_in_head = framing.in_head();
        framing.feed(bytes, verdicts);
        let now = Instant::now();
        match (was_in_head, framing.in_head()) {
            (false, true) => {
                phase.head_since = Some(now);
                drop(state);
                self.changed.notify_one(); // the header deadline is sooner than the idle one
            }
            (true, false) => {
                phase.head_since = None;
                // The request goes to the handler next; until it does, the connection is not idle.
                phase.quiet_since = now;
            }
            _ => {}
        }
    }

    /// Bytes went to the client.
    fn sent(&self) {
        let mut state = self.lock();
        if !state.framing.http2() {
            state.phase.quiet_since = Instant::now();
        }
    }

    /// A request reached the handler: it is in flight until the returned guard drops. Gives the framing
    /// verdict of its head (always [`Framing::Clear`] on HTTP/2, whose frames carry their lengths).
    pub fn request(self: &Arc<Self>) -> (InFlight, Framing) {
        let mut state = self.lock();
        state.phase.in_flight += 1;
        let framing = state.verdicts.pop_front().unwrap_or(Framing::Clear);
        (InFlight(self.clone()), framing)
    }

    /// Waits until the connection passes one of its limits, and says which.
    pub async fn expired(&self, timeouts: Timeouts) -> TimeoutKind {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so that a change in between still wakes us.
            changed.as_mut().enable();
            let cut = cut_at(&self.lock().phase, &timeouts);
            match cut {
                Some((at, kind)) if at <= Instant::now() => return kind,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A request in flight; its end (when the handler's answer goes to hyper) is the drop.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.phase.in_flight -= 1;
        state.phase.quiet_since = Instant::now();
        drop(state);
        self.0.changed.notify_one();
    }
}

/// A connection's I/O, reporting what it receives and sends to its [`Activity`].
pub struct Watched<S> {
    io: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(io: S, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let received = &buf.filled()[before..];
        if !received.is_empty() {
            self.activity.received(received);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let sent = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        if sent > 0 {
            self.activity.sent();
        }
        Poll::Ready(Ok(sent))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let sent = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, bufs))?;
        if sent > 0 {
            self.activity.sent();
        }
        Poll::Ready(Ok(sent))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Timeouts = Timeouts { header: Duration::from_secs(10), idle: Duration::from_secs(30) };

    #[test]
    fn heads_have_the_header_timeout_idle_connections_the_idle_one_requests_none() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let idle = Phase { in_flight: 0, head_since: None, quiet_since: t0 };
        assert_eq!(cut_at(&idle, &LIMITS), Some((t0 + s(30), TimeoutKind::Idle)));
        let head = Phase { head_since: Some(t0 + s(20)), ..idle };
        assert_eq!(cut_at(&head, &LIMITS), Some((t0 + s(30), TimeoutKind::Header)));
        let busy = Phase { in_flight: 2, ..head };
        assert_eq!(cut_at(&busy, &LIMITS), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() {
        let activity = Activity::new();
        let start = Instant::now();
        let watch = {
            let activity = activity.clone();
            tokio::spawn(async move { (activity.expired(LIMITS).await, start.elapsed()) })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        for b in b"GET / HTTP/1.1\r\nX-Slow: " {
            activity.received(&[*b]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (kind, after) = watch.await.unwrap();
        assert_eq!(kind, TimeoutKind::Header);
        assert_eq!(after, Duration::from_secs(15), "5 s idle, then 10 s for the head from its first byte");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_hold_the_connection_and_their_end_restarts_the_idle_clock() {
        let activity = Activity::new();
        activity.received(b"GET / HTTP/1.1\r\n\r\n");
        let (request, framing) = activity.request();
        assert_eq!(framing, Framing::Clear);
        let start = Instant::now();
        let watch = {
            let activity = activity.clone();
            tokio::spawn(async move { (activity.expired(LIMITS).await, start.elapsed()) })
        };
        tokio::time::sleep(Duration::from_secs(100)).await;
        drop(request);
        tokio::time::sleep(Duration::from_secs(20)).await;
        activity.sent(); // the tail of the reply goes out
        let (kind, after) = watch.await.unwrap();
        assert_eq!((kind, after), (TimeoutKind::Idle, Duration::from_secs(150)));
    }

    #[tokio::test(start_paused = true)]
    async fn ambiguous_heads_are_reported_to_their_request() {
        let activity = Activity::new();
        activity.received(
            b"GET /a HTTP/1.1\r\n\r\nPUT /b HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(activity.request().1, Framing::Clear);
        assert!(matches!(activity.request().1, Framing::Ambiguous(_)));
    }
}
