//! `lightpath demo`: a whole mesh in one process on loopback, with a live stream already flowing.
//!
//! Every node of the topology (by default `topology/demo.toml`) runs here with certificates from a CA made
//! for this run. A built-in publisher loops a short pre-encoded H.264 clip (CMAF, one frame per chunk,
//! shipped in `assets/demo-cmaf/` and compiled into the binary, so no ffmpeg is needed) into the origin
//! exactly as `ffmpeg -f dash -ldash 1 -streaming 1 -method PUT` would: the init segment, then each 2 s
//! segment as one chunked PUT whose chunks leave at the pace they play, their decode times moved on at each
//! wrap so the timeline runs on. The origin cuts parts from them, so the stream is Low-Latency HLS at every
//! edge (and plain HLS for players that ignore parts). The first control replica also runs a director
//! ([`crate::director`]) on 127.0.0.1:48090 (`--director` moves it), whose URL is printed first: it
//! redirects each viewer to the nearest healthy edge. Each edge's own playlist URL is printed too; it runs
//! until Ctrl-C.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::ca::{create_ca, issue, Identity};
use crate::config::{AdminConfig, DirectorConfig, EdgeConfig, IngestConfig, LinksConfig};
use crate::hls::dash::segment_name;
use crate::hls::fmp4::{shift_decode_time, Chunk, Chunks, InitInfo};
use crate::id::StreamName;
use crate::listen::Listeners;
use crate::node::NodeParams;
use crate::routing::ProbeConfig;
use crate::topology::{Address, Role, Topology};

/// The demo stream's name.
pub const STREAM: &str = "demo";
const INIT: &[u8] = include_bytes!("../assets/demo-cmaf/init-stream0.m4s");
const CLIP: [&[u8]; 4] = [
    include_bytes!("../assets/demo-cmaf/chunk-stream0-00001.m4s"),
    include_bytes!("../assets/demo-cmaf/chunk-stream0-00002.m4s"),
    include_bytes!("../assets/demo-cmaf/chunk-stream0-00003.m4s"),
    include_bytes!("../assets/demo-cmaf/chunk-stream0-00004.m4s"),
];
/// Runs the demo mesh, with its director on `director`, until `shutdown` completes.
pub async fn run(
    topology_path: PathBuf,
    director: std::net::SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let topology = Arc::new(Topology::load(&topology_path).map_err(|e| anyhow::anyhow!("{e}"))?);
    let ca = create_ca("lightpath demo CA")?;
    let key = format!("demo-{:016x}", rand::random::<u64>());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut nodes = Vec::new();
    for spec in &topology.nodes {
        let (identity, listeners) = identity_and_listeners(&ca, &spec.id, &spec.mesh, &spec.http)?;
        let params = NodeParams {
            id: spec.id.clone(),
            topology: topology.clone(),
            identity,
            cache_bytes: 64 << 20,
            ingest: IngestConfig { any_stream_key: Some(key.clone()), ..IngestConfig::default() },
            edge: EdgeConfig::default(),
            // The demo's regions are apart by the topology's latencies.
            links: LinksConfig { emulate: true },
            admin: AdminConfig::default(),
            probes: ProbeConfig::default(),
            http: Default::default(),
            quic: Default::default(),
        };
        let mut stop = stop_rx.clone();
        nodes.push(tokio::spawn(crate::node::run(params, listeners, async move {
            let _ = stop.changed().await;
        })));
    }
    let mut director_url = None;
    for (i, control) in topology.controls.iter().enumerate() {
        let (identity, listeners) = identity_and_listeners(&ca, &control.id, &control.mesh, &control.http)?;
        // The first replica also runs the director, in the first edge's region.
        let director = match topology.nodes.iter().find(|n| n.has_role(Role::Edge)).filter(|_| i == 0) {
            Some(edge) => {
                let config = DirectorConfig {
                    listen: Some(director),
                    region: Some(edge.region.clone()),
                    ..DirectorConfig::default()
                };
                director_url = Some(format!("http://{director}/live/{STREAM}/index.m3u8"));
                Some(crate::director::DirectorOptions::bind(config, Default::default()).await?)
            }
            None => None,
        };
        let mut stop = stop_rx.clone();
        nodes.push(tokio::spawn(crate::control::run(
            control.id.clone(),
            topology.clone(),
            identity,
            listeners,
            crate::control::ReplicaOptions { director, ..Default::default() },
            async move {
                let _ = stop.changed().await;
            },
        )));
    }
    let Some(origin) = topology.nodes.iter().find(|n| n.has_role(Role::Origin)) else {
        bail!("{} has no origin node", topology_path.display());
    };
    let origin_http = literal(&origin.http)?;
    let stream = StreamName::new(STREAM).expect("valid name");
    let publisher = tokio::spawn(publish_loop(origin_http, stream, key));

    println!("lightpath demo: {} nodes running; stream {STREAM:?} is live at {}", topology.nodes.len(), origin.id);
    if let Some(url) = &director_url {
        println!("  director (sends each viewer to the nearest healthy edge; open this one): {url}");
    }
    for edge in topology.nodes.iter().filter(|n| n.has_role(Role::Edge)) {
        println!("  {} ({}): http://{}/live/{STREAM}/index.m3u8", edge.id, edge.region, edge.http);
    }
    for control in &topology.controls {
        println!(
            "  control plane {}: dashboard http://{}/dashboard  (API: /api/routes, /api/nodes, /api/links, /api/streams)",
            control.id, control.http
        );
    }
    println!("  metrics: http://{}/metrics   (Ctrl-C stops)", origin.http);

    shutdown.await;
    publisher.abort();
    let _ = stop_tx.send(true);
    for node in nodes {
        node.await.context("a node task failed")??;
    }
    Ok(())
}

/// A certificate from the run's CA and the bound sockets of one node or control replica.
fn identity_and_listeners(
    ca: &crate::ca::CaFiles,
    id: &crate::id::NodeId,
    mesh: &Address,
    http: &Address,
) -> Result<(Identity, Listeners)> {
    let files = issue(ca, id, 1)?;
    let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
    let mesh = literal(mesh).with_context(|| format!("{id}"))?;
    let http = literal(http).with_context(|| format!("{id}"))?;
    let listeners = Listeners {
        mesh: std::net::UdpSocket::bind(mesh).with_context(|| format!("binding {mesh} for {id}"))?,
        // As a node binds it: a flash crowd at the demo's edge queues instead of having its handshakes dropped.
        http: crate::listen::bind_http(http).with_context(|| format!("binding {http} for {id}"))?,
    };
    Ok((identity, listeners))
}

fn literal(addr: &Address) -> Result<std::net::SocketAddr> {
    addr.socket_addr().with_context(|| format!("the demo binds literal addresses; {addr} is a host name"))
}

/// Publishes the looped clip as a live CMAF stream, forever.
async fn publish_loop(origin: std::net::SocketAddr, stream: StreamName, key: String) {
    let clip = match clip() {
        Ok(clip) => clip,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "demo publisher: the built-in clip does not read");
            return;
        }
    };
    let loop_ticks: u64 = clip.iter().flatten().map(|c| c.duration).sum();
    let timescale = InitInfo::parse(INIT).map(|i| i.timescale).unwrap_or(1000) as u64;
    loop {
        if let Err(e) = put(origin, &format!("/live/{stream}/init-stream0.m4s"), &key, Bytes::from_static(INIT)).await {
            tracing::warn!(error = %format!("{e:#}"), "demo publisher: init segment upload failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        break;
    }
    let start = tokio::time::Instant::now();
    let mut played: u64 = 0; // ticks
    for n in 0u64.. {
        let segment = &clip[(n % clip.len() as u64) as usize];
        let shift = n / clip.len() as u64 * loop_ticks;
        let path = format!("/live/{stream}/{}", segment_name("stream0", n + 1, 5));
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let upload = tokio::spawn(put_streaming(origin, path, key.clone(), rx));
        for chunk in segment {
            // A chunk leaves when it has been "encoded": once the clock passes its end.
            played += chunk.duration;
            tokio::time::sleep_until(start + Duration::from_millis(played * 1000 / timescale)).await;
            let Ok(bytes) = shift_decode_time(&chunk.bytes, shift) else { break };
            if tx.send(bytes).await.is_err() {
                break;
            }
        }
        drop(tx);
        match upload.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "demo publisher: segment upload failed"),
            Err(e) => tracing::warn!(error = %e, "demo publisher: segment upload task failed"),
        }
    }
}

/// The built-in clip's segments, each as its chunks.
fn clip() -> Result<Vec<Vec<Chunk>>> {
    let info = InitInfo::parse(INIT)?;
    CLIP.iter()
        .map(|segment| {
            let mut chunks = Chunks::new(info);
            let out = chunks.push(segment)?;
            chunks.finish()?;
            Ok(out)
        })
        .collect()
}

/// One chunked HTTP/1.1 PUT whose body is what `body` yields, sent as it comes.
async fn put_streaming(
    addr: std::net::SocketAddr,
    path: String,
    key: String,
    body: tokio::sync::mpsc::Receiver<Bytes>,
) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let frames = futures_util::stream::unfold(body, |mut rx| async move {
        let bytes = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes)), rx))
    });
    let req = http::Request::put(&path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
        .body(http_body_util::StreamBody::new(frames))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        bail!("PUT {path}: {status} {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(())
}

/// One HTTP/1.1 PUT, as a publisher sends it.
pub async fn put(addr: std::net::SocketAddr, path: &str, key: &str, body: Bytes) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::put(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Full::new(body))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        bail!("PUT {path}: {status} {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(())
}
