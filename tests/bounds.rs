//! Hostile traffic against real node processes, and what a viewer or publisher still gets: heads sent a
//! byte at a time cut at the header timeout, connection floods held to their caps per node and per address
//! (a bare 503) while other addresses are served, stalled uploads cut with 408 and never stored, ambiguous
//! framing refused with 400, and a QUIC Initial flood that neither grows the node's memory nor stops a
//! stream.
//!
//! Clients bind addresses of their own in 127.0.x.0/24 (loopback has all of 127.0.0.0/8), so that one
//! "address" can flood while another watches.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn origin_edge(ip_base: u8, extra: &str) -> Cluster {
    Cluster::new(
        ip_base,
        &[NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "edge", roles: &["edge"] }],
        &[("origin", "edge", 2.0)],
        extra,
    )
}

/// A TCP connection to `to` from `from` (port chosen by the kernel).
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Reads until the peer closes (or resets) the connection, at most `limit`; what was read, or `None` if it
/// stayed open.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed.ok().map(|_| got)
}

/// A plain GET of `path` from address `from`, on a fresh connection: the status, or 0 when the connection
/// closed without one.
async fn get_from(from: IpAddr, to: SocketAddr, path: &str) -> u16 {
    let mut tcp = connect_from(from, to).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let reply = read_until_closed(&mut tcp, Duration::from_secs(10)).await.expect("the reply never ended");
    status_of(&reply)
}

fn status_of(reply: &[u8]) -> u16 {
    String::from_utf8_lossy(reply).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_at_the_header_timeout_and_viewers_still_served() {
    let mut mesh = origin_edge(113, "[http]\nheader_timeout_ms = 1000\nidle_timeout_ms = 3000\n");
    mesh.start_all();
    mesh.wait_healthy().await;
    let edge = mesh.http("edge");
    let attacker: IpAddr = "127.0.113.50".parse().unwrap();
    // 100 heads, each trickling a byte every 200 ms: never finished, always "active".
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut tcp = connect_from(attacker, edge).await.unwrap();
        tcp.write_all(b"GET /live/s/index.m3u8 HTTP/1.1\r\n").await.unwrap();
        slow.push(tcp);
    }
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut cut = 0;
        for round in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cut = 0;
            for tcp in &mut slow {
                if tcp.write_all(format!("X-{round}: a\r\n").as_bytes()).await.is_err() {
                    cut += 1;
                    continue;
                }
                let mut buf = [0u8; 64];
                // A closed connection reads as EOF (or a reset) at once.
                if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await {
                    cut += 1;
                }
            }
            if cut == slow.len() || round > 100 {
                break;
            }
        }
        cut
    });
    // Meanwhile a viewer from another address is served.
    let viewer: IpAddr = "127.0.113.60".parse().unwrap();
    assert_eq!(get_from(viewer, edge, "/healthz").await, 200);
    let cut = trickle.await.unwrap();
    let took = started.elapsed();
    assert_eq!(cut, 100, "only {cut} of 100 slow heads were closed in {took:?}");
    // The header timeout is 1 s from each head's first byte; 10x covers a busy machine.
    assert!(took < Duration::from_secs(10), "slow heads lived {took:?}");
    let timeouts = mesh.metric("edge", "lightpath_timeouts_total", &[("kind", "header")]).await;
    assert!(timeouts >= 100.0, "{timeouts} header timeouts counted");

    // An idle keep-alive connection outlives the header timeout and is closed at the idle timeout.
    let mut idle = connect_from(viewer, edge).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 200);
    let since = Instant::now();
    assert!(read_until_closed(&mut idle, Duration::from_secs(30)).await.is_some(), "idle connection never closed");
    let lived = since.elapsed();
    assert!(lived > Duration::from_millis(2500), "closed after {lived:?}, before the idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_are_held_to_their_caps_and_other_addresses_served() {
    let mut mesh = origin_edge(114, "[http]\nmax_connections = 60\nmax_connections_per_address = 25\n");
    mesh.start_all();
    mesh.wait_healthy().await;
    let edge = mesh.http("edge");
    let flooder: IpAddr = "127.0.114.50".parse().unwrap();
    // One address opens 40 idle connections: 25 are held, the other 15 get a 503 and are closed.
    let mut held = Vec::new();
    let mut turned_away = 0;
    for _ in 0..40 {
        let mut tcp = connect_from(flooder, edge).await.unwrap();
        match read_until_closed(&mut tcp, Duration::from_millis(300)).await {
            Some(reply) => {
                let text = String::from_utf8_lossy(&reply).into_owned();
                assert!(text.starts_with("HTTP/1.1 503") && text.contains("Retry-After: 1"), "{text:?}");
                turned_away += 1;
            }
            None => held.push(tcp),
        }
    }
    assert_eq!((held.len(), turned_away), (25, 15));
    // Another address is served while the first holds its cap.
    let viewer: IpAddr = "127.0.114.60".parse().unwrap();
    assert_eq!(get_from(viewer, edge, "/healthz").await, 200);
    // A second flooding address fills the node: 35 more, of which 60 - 25 - (the viewer's, closed) fit.
    let second: IpAddr = "127.0.114.51".parse().unwrap();
    for _ in 0..25 {
        held.push(connect_from(second, edge).await.unwrap());
    }
    let third: IpAddr = "127.0.114.52".parse().unwrap();
    for _ in 0..10 {
        held.push(connect_from(third, edge).await.unwrap());
    }
    // The node is full: a request from yet another address gets the 503, not a hang.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = get_from("127.0.114.61".parse().unwrap(), edge, "/healthz").await;
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "a full node still answers {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the flood goes, viewers are served again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_from(viewer, edge, "/healthz").await != 200 {
        assert!(Instant::now() < deadline, "the node did not recover from the flood");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = "lightpath_connections_refused_total";
    assert!(mesh.metric("edge", refused, &[("reason", "address_full")]).await >= 15.0);
    assert!(mesh.metric("edge", refused, &[("reason", "node_full")]).await >= 1.0);
    assert!(mesh.metric("edge", "lightpath_limits_hit_total", &[("limit", "http.max_connections")]).await >= 1.0);
    // One line per interval, not one per refusal.
    let lines = mesh.log("edge").lines().filter(|l| l.contains("http connection turned away")).count();
    assert!((1..=3).contains(&lines), "{lines} log lines for the refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_cut_and_ambiguous_framing_refused() {
    let mut mesh = origin_edge(115, "[http]\nbody_timeout_ms = 1000\n");
    mesh.start("origin");
    mesh.wait_healthy().await;
    let origin = mesh.http("origin");

    // An upload that declares 100,000 bytes and stops after 60,000.
    let mut tcp = TcpStream::connect(origin).await.unwrap();
    let head = format!(
        "PUT /live/s/stalled.ts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[7u8; 60_000]).await.unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.expect("no reply").unwrap();
        assert!(n > 0, "closed without a reply");
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(status_of(&reply), 408, "{}", String::from_utf8_lossy(&reply));
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nothing of it was stored.
    let got = client().get(format!("http://{origin}/live/s/stalled.ts")).send().await.unwrap();
    assert_eq!(got.status(), 404);
    assert!(mesh.metric("origin", "lightpath_timeouts_total", &[("kind", "body")]).await >= 1.0);

    // Content-Length with Transfer-Encoding, in either order, and differing lengths: 400, nothing stored.
    let put = |framing: &str| {
        format!("PUT /live/s/smuggled.ts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n{framing}\r\n5\r\nhello\r\n0\r\n\r\n")
    };
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        assert_eq!(raw_status(origin, put(framing).as_bytes()).await, 400, "{framing:?}");
    }
    let got = client().get(format!("http://{origin}/live/s/smuggled.ts")).send().await.unwrap();
    assert_eq!(got.status(), 404);
    // The same upload framed one way is stored.
    assert_eq!(raw_status(origin, put("Transfer-Encoding: chunked\r\n").as_bytes()).await, 201);
    let got = client().get(format!("http://{origin}/live/s/smuggled.ts")).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), &b"hello"[..]);
}

/// A QUIC client configuration that trusts any server and presents no certificate: a stranger to the mesh.
fn stranger() -> quinn::ClientConfig {
    #[derive(Debug)]
    struct AnyServer(std::sync::Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = Vec::new();
    quinn::ClientConfig::new(std::sync::Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()))
}

/// The newest media sequence number of the edge's playlist of `stream`, once it has one.
async fn newest_segment(edge: SocketAddr, stream: &str) -> Option<u64> {
    let text = client().get(format!("http://{edge}/live/{stream}/index.m3u8")).send().await.ok()?.text().await.ok()?;
    let first: u64 = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?.trim().parse().ok()?;
    let segments = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count() as u64;
    (segments > 0).then(|| first + segments - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_initial_flood_neither_grows_memory_nor_stops_a_stream() {
    require("ffmpeg");
    let mut mesh = origin_edge(116, "");
    mesh.start_all();
    mesh.wait_healthy().await;
    let (origin, edge) = (mesh.http("origin"), mesh.http("edge"));
    let mut publisher = publish(origin, "live1", 60, false, &mesh.dir.path().join("ffmpeg.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while newest_segment(edge, "live1").await.is_none() {
        assert!(Instant::now() < deadline, "the stream never reached the edge");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss = || mesh.metric("edge", "lightpath_process_resident_bytes", &[]);
    let before = rss().await;

    // 3,000 connection attempts, each a fresh connection ID, from 10 endpoints on another address; each
    // waits at most 2 s for its handshake, which fails (no client certificate, at best).
    let target = mesh.node("edge").mesh;
    let mut attempts = tokio::task::JoinSet::new();
    for e in 0..10u16 {
        let mut endpoint = quinn::Endpoint::client(format!("127.0.116.{}:0", 50 + e).parse().unwrap()).unwrap();
        endpoint.set_default_client_config(stranger());
        attempts.spawn(async move {
            let mut pending = tokio::task::JoinSet::new();
            for _ in 0..300 {
                if let Ok(connecting) = endpoint.connect(target, "edge") {
                    pending.spawn(tokio::time::timeout(Duration::from_secs(2), connecting));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let mut established = 0;
            while let Some(done) = pending.join_next().await {
                if matches!(done, Ok(Ok(Ok(_)))) {
                    established += 1;
                }
            }
            endpoint.close(0u32.into(), b"");
            established
        });
    }
    let mut established = 0;
    while let Some(done) = attempts.join_next().await {
        established += done.unwrap();
    }
    // A client may count its side of a handshake complete before the node's refusal of its (missing)
    // certificate arrives; the node never accepts it.
    eprintln!("{established} handshakes the flooder thought complete");
    assert!(!mesh.log("edge").contains("mesh peer accepted"), "a stranger was accepted");
    let during = rss().await;

    // The stream still flows: new segments reach the edge after the flood.
    let at_flood_end = newest_segment(edge, "live1").await.expect("the edge lost the stream");
    let deadline = Instant::now() + Duration::from_secs(15);
    while newest_segment(edge, "live1").await.unwrap_or(0) < at_flood_end + 2 {
        assert!(Instant::now() < deadline, "no new segment reached the edge after the flood");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = rss().await;
    let mib = |b: f64| b / (1 << 20) as f64;
    eprintln!("edge RSS: {:.1} MiB before, {:.1} during, {:.1} after", mib(before), mib(during), mib(after));
    assert!(after - before < (64 << 20) as f64, "RSS grew by {:.1} MiB", mib(after - before));
    assert!(during - before < (64 << 20) as f64, "RSS grew by {:.1} MiB during the flood", mib(during - before));
    // The heap's own figures: bytes in use, within what the allocator holds resident, within the RSS.
    let heap = mesh.metric("edge", "lightpath_heap_allocated_bytes", &[]).await;
    let held = mesh.metric("edge", "lightpath_heap_resident_bytes", &[]).await;
    assert!(heap > (1 << 20) as f64 && heap <= held && held <= after * 1.1, "heap {heap}, held {held}, RSS {after}");
    let retried =
        mesh.metric("edge", "lightpath_connections_refused_total", &[("reason", "address_unvalidated")]).await;
    assert!(retried >= 1000.0, "only {retried} attempts were answered with a Retry");
    // Failed handshakes are logged at a bounded rate, not once per attempt.
    let lines = mesh.log("edge").lines().filter(|l| l.contains("rejected mesh connection")).count();
    assert!(lines <= 5, "{lines} log lines for the flood");
    let _ = publisher.kill();
    let _ = publisher.wait();
}
