//! What every HTTP-facing part shares: the accept loop with its limits, the `/live/{stream}/{file}` path
//! rule, and response helpers.
//!
//! A node serves HTTP/1.1 and HTTP/2 (cleartext, prior knowledge or upgrade-free) on one listener that its
//! caller binds, so tests own the port. Paths are parsed strictly: each segment is percent-decoded and must
//! then be a valid [`StreamName`] / [`ObjectName`], so `..`, `%2e%2e`, empty segments (absolute paths),
//! slashes and NUL never reach the cache. Connections are [`SendfileStream`]s, which send large cached bodies
//! (and ranges of them) without copying them. [`cors`] makes replies readable by browser players, [`range`]
//! reads `Range` headers.
//!
//! Every connection is bounded ([`crate::config::HttpConfig`]): [`admission`] caps connections per node and
//! per client address and turns the rest away with a bare 503; [`watchdog`] closes a connection whose head
//! takes too long or that sits idle; [`framing`] finds heads that frame their body two ways (both
//! `Content-Length` and `Transfer-Encoding`), which get 400; [`streamed`] lets a handler send a body as it
//! is produced (server-sent events). How long an upload's body may stall is the
//! handler's (the origin's ingest), since only it reads bodies. Refusals and timeouts are counted
//! ([`crate::telemetry::Bounds`]) and logged at most once per interval, however many there are.

pub mod admission;
pub mod cors;
pub mod framing;
pub mod range;
pub mod sendfile;
pub mod streamed;
pub mod watchdog;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::HttpConfig;
use crate::id::{ObjectName, StreamName};
use crate::telemetry::{Bounds, SharedLogGate};
use admission::{Admission, Caps};
use framing::Framing;
pub use sendfile::SendfileStream;
use watchdog::{Activity, Timeouts, Watched};

/// The response type every handler returns.
pub type Reply = Response<Full<Bytes>>;

/// A request handler: one per server, shared by all connections.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Never fails: every error is a status.
    fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> impl Future<Output = Reply> + Send + 'static;
}

/// What a connection over the caps gets: the least a client can read as "come back later".
const TURNED_AWAY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// How many turned-away connections may linger at once (see [`turn_away`]); beyond, they are closed at
/// once. Their descriptors come out of `http.reserved_fds`.
const MAX_LINGERING: usize = 64;
/// How long a turned-away connection lingers at most.
const LINGER: Duration = Duration::from_secs(1);
/// How long the accept loop waits after a failed accept (out of descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One server's limits and their counters, shared by its connections.
struct Limits {
    timeouts: Timeouts,
    admission: Admission,
    lingering: Arc<Semaphore>,
    bounds: Bounds,
    node: String,
    /// One gate per kind of event that a flood repeats.
    turned_log: SharedLogGate,
    accept_log: SharedLogGate,
    timeout_log: SharedLogGate,
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown` completes, within `config`'s limits; `node`
/// labels the counters and log lines. `sealed_cache_bytes` is the bound of the cache whose bodies the node
/// keeps in sealed memory files (0 if none): their descriptors are not the listener's to take.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: &HttpConfig,
    node: &str,
    sealed_cache_bytes: u64,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, handler, config, node, sealed_cache_bytes, None, shutdown).await
}

/// [`serve`] over TLS: each connection's handshake (bounded by `http.header_timeout_ms`, like a request
/// head) comes first, then HTTP/2 or HTTP/1.1 as ALPN chose, within the same limits. Bodies are copied
/// through TLS rather than sent from their files.
pub async fn serve_tls<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    tls: Arc<rustls::ServerConfig>,
    config: &HttpConfig,
    node: &str,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_with(listener, handler, config, node, 0, Some(acceptor), shutdown).await
}

async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: &HttpConfig,
    node: &str,
    sealed_cache_bytes: u64,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let fd_limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    let sealed = crate::cache::sealed::fd_budget(fd_limit, sealed_cache_bytes);
    let cap = admission::connection_cap(config.max_connections, config.reserved_fds, fd_limit, sealed);
    if cap < config.max_connections {
        tracing::info!(
            node,
            cap,
            fd_limit,
            max_connections = config.max_connections,
            sealed,
            "http: connections capped below http.max_connections by the open-file limit (`sealed` are for cached \
             bodies, http.reserved_fds for the rest of the node)"
        );
    }
    let caps = Caps { node: cap, address: config.max_connections_per_address.min(cap) };
    let limits = Arc::new(Limits {
        timeouts: Timeouts { header: config.header_timeout(), idle: config.idle_timeout() },
        admission: Admission::new(caps),
        lingering: Arc::new(Semaphore::new(MAX_LINGERING)),
        bounds: Bounds::new(node),
        node: node.to_owned(),
        turned_log: SharedLogGate::default(),
        accept_log: SharedLogGate::default(),
        timeout_log: SharedLogGate::default(),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning, and say so once in a
                    // while rather than at every attempt.
                    if let Some(held_back) = limits.accept_log.pass() {
                        tracing::warn!(node = %limits.node, error = %e, held_back, "http accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let seat = match limits.admission.admit(remote.ip()) {
            Ok(seat) => seat,
            Err(turned) => {
                limits.bounds.refused(turned.reason());
                limits.bounds.limit_hit(turned.limit());
                if let Some(held_back) = limits.turned_log.pass() {
                    tracing::warn!(node = %limits.node, %remote, reason = %turned, held_back, "http connection turned away");
                }
                match limits.lingering.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(turn_away(stream, permit));
                    }
                    Err(_) => drop(stream), // too many lingering already: close at once
                }
                continue;
            }
        };
        limits.bounds.connections("http", limits.admission.held());
        let _ = stream.set_nodelay(true);
        let (handler, limits, tls) = (handler.clone(), limits.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(SendfileStream::new(stream), Protocol::Http1, remote, handler, &limits).await,
                // Boxed: a plain connection's task need not be as large as a TLS one's.
                Some(acceptor) => {
                    match Box::pin(tokio::time::timeout(limits.timeouts.header, acceptor.accept(stream))).await {
                        Ok(Ok(tls)) => {
                            let protocol = match tls.get_ref().1.alpn_protocol() {
                                Some(b"h2") => Protocol::Http2,
                                _ => Protocol::Http1,
                            };
                            Box::pin(connection(tls, protocol, remote, handler, &limits)).await
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            limits.bounds.timed_out("tls_handshake");
                            if let Some(held_back) = limits.timeout_log.pass() {
                                tracing::info!(node = %limits.node, %remote, timeout = "tls_handshake", held_back, "http connection closed: timed out");
                            }
                        }
                    }
                }
            }
            drop(seat);
            limits.bounds.connections("http", limits.admission.held());
        });
    }
}

/// The token of an `Authorization: Bearer TOKEN` header, trimmed, if the request has one.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ")?.trim())
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The refusal of an operator request without `Authorization: Bearer {token}`; `None` when it has it.
pub fn admin_refusal(headers: &http::HeaderMap, token: &str) -> Option<Reply> {
    if bearer(headers).is_some_and(|t| same_secret(t, token)) {
        return None;
    }
    Some(refuse(StatusCode::UNAUTHORIZED, Side::Downstream, "the admin API needs Authorization: Bearer ADMIN_TOKEN"))
}

/// The HTTP version a connection speaks: HTTP/1.1 on plain sockets (players and caches do not send
/// HTTP/2 without TLS), and what ALPN chose on TLS ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Serves one admitted connection until it ends or passes a time limit.
async fn connection<H: Handler, S>(
    stream: S,
    protocol: Protocol,
    remote: std::net::SocketAddr,
    handler: Arc<H>,
    limits: &Limits,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            let (in_flight, framing) = activity.request();
            req.extensions_mut().insert(Client(remote));
            let handler = handler.clone();
            async move {
                let reply = match framing {
                    Framing::Clear => handler.handle(req).await,
                    Framing::Ambiguous(why) => {
                        let mut reply = refuse(
                            StatusCode::BAD_REQUEST,
                            Side::Downstream,
                            format!("ambiguous request framing: {why}"),
                        );
                        reply.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                        tracing::info!(%remote, method = %req.method(), path = %req.uri().path(), status = 400, reason = why, "request refused");
                        reply
                    }
                };
                Ok::<_, Infallible>(streamed::into_sent(reply, in_flight))
            }
        })
    };
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let result = match protocol {
        Protocol::Http1 => {
            // ffmpeg ends a chunked upload by shutting down its sending side, then reads the reply; the
            // request must survive that half-close. hyper's own header timeout would also close idle
            // keep-alive connections at the same moment; the watchdog times heads and idleness apart instead.
            let served = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .header_read_timeout(None)
                .serve_connection(io, service);
            watch(served, &activity, remote, limits).await
        }
        // Boxed: an HTTP/2 connection's state is several times an HTTP/1.1 one's, and most connections
        // (every plain one) are HTTP/1.1.
        Protocol::Http2 => {
            // HTTP/2 pings find a vanished client while its requests wait (for a segment on its way, say).
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(limits.timeouts.header))
                .keep_alive_timeout(limits.timeouts.header)
                .serve_connection(io, service);
            Box::pin(watch(served, &activity, remote, limits)).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "http connection ended with an error");
    }
}

/// Runs a served connection until it ends or its watchdog finds a time limit passed (which is logged
/// here and ends it with `Ok`).
async fn watch(
    served: impl Future<Output = Result<(), hyper::Error>>,
    activity: &Activity,
    remote: std::net::SocketAddr,
    limits: &Limits,
) -> Result<(), hyper::Error> {
    tokio::select! {
        result = served => result,
        kind = activity.expired(limits.timeouts) => {
            limits.bounds.timed_out(kind.as_str());
            if let Some(held_back) = limits.timeout_log.pass() {
                tracing::info!(node = %limits.node, %remote, timeout = kind.as_str(), held_back, "http connection closed: timed out");
            }
            Ok(())
        }
    }
}

/// Answers a connection over the caps with [`TURNED_AWAY`] and closes it. Closing a socket with unread
/// bytes resets it, and a reset can discard the 503 before the client reads it: so the request the client
/// sent is read (and dropped) until it closes its side, for at most [`LINGER`].
async fn turn_away(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    // A fresh socket's send buffer is empty: the whole reply fits without waiting.
    let _ = stream.try_write(TURNED_AWAY);
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 2048];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The address a request came from, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client(pub std::net::SocketAddr);

/// Why a `/live/...` path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is not under `/live/`: 404.
    #[error("no such resource")]
    NotLive,
    /// The path is under `/live/` but malformed or unsafe: 400.
    #[error("bad path: {0}")]
    Bad(String),
}

impl PathError {
    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            PathError::NotLive => StatusCode::NOT_FOUND,
            PathError::Bad(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Parses `/live/{stream}/{file}` from a raw (still percent-encoded) request path.
pub fn live_path(raw: &str) -> Result<(StreamName, ObjectName), PathError> {
    let Some(rest) = raw.strip_prefix("/live/") else {
        return Err(PathError::NotLive);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [stream, file] = parts[..] else {
        return Err(PathError::Bad(format!("expected /live/STREAM/FILE, got {raw:?}")));
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| PathError::Bad(format!("{s:?} is not UTF-8 once decoded")))
    };
    let stream = StreamName::new(decode(stream)?).map_err(|e| PathError::Bad(e.to_string()))?;
    let file = ObjectName::new(decode(file)?).map_err(|e| PathError::Bad(e.to_string()))?;
    Ok((stream, file))
}

/// Reads `/publish/{key}/{stream}/{file}`, the upload path for encoders that cannot send a header (ffmpeg's
/// dash muxer has no `-headers`): the key, and the path as `/live/{stream}/{file}`. The key is
/// percent-decoded. `None` for any other path.
pub fn publish_path(raw: &str) -> Option<(String, String)> {
    let (key, rest) = raw.strip_prefix("/publish/")?.split_once('/')?;
    let key = percent_encoding::percent_decode_str(key).decode_utf8().ok()?.into_owned();
    Some((key, format!("/live/{rest}")))
}

/// A request path fit for a log line: the key of a `/publish/{key}/...` path replaced.
pub fn loggable_path(raw: &str) -> std::borrow::Cow<'_, str> {
    match publish_path(raw) {
        Some((_, live)) => format!("/publish/(key)/{}", live.trim_start_matches("/live/")).into(),
        None => raw.into(),
    }
}

/// A plain-text reply with `status` and a one-line reason.
pub fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    let mut body = body.into();
    body.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Which side of a request failed, as pingora's error source says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: a request that cannot be served as asked (a bad path, a stream nobody publishes, a
    /// wrong key, a node without that role).
    Downstream,
    /// What this node depends on to answer: the mesh, the origin, a peer's address.
    Upstream,
    /// This node itself.
    Internal,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        })
    }
}

/// Why a reply refuses its request: the side that failed and the cause. It travels in the reply's
/// extensions, which are never sent, so that the line that logs a refusal names its cause without reading
/// the body back.
#[derive(Clone)]
pub struct Refusal {
    /// Which side failed.
    pub side: Side,
    /// The cause, as the log shows it (the body says the same to the client).
    pub cause: Arc<dyn fmt::Display + Send + Sync>,
}

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refusal").field("side", &self.side).field("cause", &format_args!("{}", self.cause)).finish()
    }
}

/// A plain-text refusal: the reply [`text`] makes of `cause`, carrying a [`Refusal`] for the log.
pub fn refuse(status: StatusCode, side: Side, cause: impl fmt::Display + Send + Sync + 'static) -> Reply {
    let mut resp = text(status, cause.to_string());
    resp.extensions_mut().insert(Refusal { side, cause: Arc::new(cause) });
    resp
}

/// `lightpath_http_requests_total{node,method,status}`, with its counters looked up once per (method,
/// status) rather than on every request (the label strings and the registry lookup showed up in the edge's
/// small-object throughput).
pub struct RequestCounts {
    node: String,
    counters: std::sync::Mutex<std::collections::HashMap<(http::Method, u16), metrics::Counter>>,
}

impl RequestCounts {
    pub fn new(node: &str) -> Self {
        Self { node: node.to_owned(), counters: Default::default() }
    }

    /// Counts one reply.
    pub fn count(&self, method: &http::Method, status: StatusCode) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .entry((method.clone(), status.as_u16()))
            .or_insert_with(|| {
                metrics::counter!(
                    "lightpath_http_requests_total",
                    "node" => self.node.clone(),
                    "method" => method.as_str().to_owned(),
                    "status" => status.as_str().to_owned()
                )
            })
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_paths_carry_a_key_that_logs_never_show() {
        assert_eq!(
            publish_path("/publish/k%20y/s/init-stream0.m4s"),
            Some(("k y".into(), "/live/s/init-stream0.m4s".into()))
        );
        assert_eq!(publish_path("/live/s/a.ts"), None);
        assert_eq!(loggable_path("/publish/secret/s/a.m4s"), "/publish/(key)/s/a.m4s");
        assert_eq!(loggable_path("/live/s/a.ts"), "/live/s/a.ts");
    }

    #[test]
    fn live_paths_are_strict() {
        let (s, f) = live_path("/live/shop1/seg%2D1.ts").unwrap();
        assert_eq!((s.as_str(), f.as_str()), ("shop1", "seg-1.ts"));
        for bad in [
            "/live/a/..",
            "/live/a/%2e%2e",
            "/live/a/%2E%2E",
            "/live/../etc",
            "/live//etc",
            "/live/a/b/c",
            "/live/a/x%00y",
            "/live/a/%2fetc%2fpasswd",
            "/live/a/.hidden",
            "/live/a/",
            "/live/a/%ff",
        ] {
            assert!(matches!(live_path(bad), Err(PathError::Bad(_))), "{bad} accepted");
        }
        assert_eq!(live_path("/etc/passwd"), Err(PathError::NotLive));
    }

    /// Answers every request with one body, as the edge answers from its cache.
    struct OneBody(Bytes);

    impl Handler for OneBody {
        async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Reply {
            let body = if req.method() == http::Method::HEAD { Bytes::new() } else { self.0.clone() };
            let mut resp = Response::new(Full::new(body));
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(self.0.len()));
            resp
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_bodies_are_served_whole_to_many_keep_alive_viewers() {
        let data: Vec<u8> = (0..(1 << 20) + 7).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let body = crate::cache::sealed::seal(&data, usize::MAX).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/live/s/seg.ts", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, Arc::new(OneBody(body)), &HttpConfig::default(), "test", 0, async {
                let _ = stopped.await;
            })
            .await
        });
        let before = SendfileStream::all_sent_from_sealed();
        // Eight connections, reused by 64 requests in flight at once.
        let client = reqwest::Client::builder().pool_max_idle_per_host(8).build().unwrap();
        let requests: Vec<_> = (0..64)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let resp = client.get(&url).send().await.unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    assert_eq!(resp.content_length(), Some((1 << 20) + 7));
                    resp.bytes().await.unwrap()
                })
            })
            .collect();
        for request in requests {
            assert!(request.await.unwrap() == data[..], "a viewer got different bytes");
        }
        let head = client.head(&url).send().await.unwrap();
        assert_eq!(head.headers()[header::CONTENT_LENGTH], ((1 << 20) + 7).to_string().as_str());
        assert!(head.bytes().await.unwrap().is_empty());
        let sent = SendfileStream::all_sent_from_sealed() - before;
        // Each response's last bytes may be copied once the rest of its body is shorter than a sealed slice.
        let at_least = 64 * (data.len() - crate::cache::sealed::MIN_SEALED_BYTES) as u64;
        assert!(sent >= at_least, "only {sent} bytes went with sendfile, expected {at_least}");
        let _ = stop.send(());
        server.await.unwrap();
    }
}
