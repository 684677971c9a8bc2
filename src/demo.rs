//! `lightpath demo`: a whole mesh in one process on loopback, with a live stream already flowing.
//!
//! Every node of the topology (by default `topology/demo.toml`) runs here with certificates from a CA made
//! for this run. A built-in publisher loops a short pre-encoded H.264 clip (shipped in `assets/demo-clip/`
//! and compiled into the binary, so no ffmpeg is needed) into the origin over HTTP PUT, exactly as a real
//! publisher would: a new segment every two seconds, a sliding playlist, `EXT-X-DISCONTINUITY` at each wrap.
//! The first control replica also runs a director ([`crate::director`]) on 127.0.0.1:48090, whose
//! URL is printed first: it redirects each viewer to the nearest healthy edge. Each edge's own playlist URL
//! is printed too; it runs until Ctrl-C.

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
use crate::hls::{LivePlaylist, Segment};
use crate::id::StreamName;
use crate::listen::Listeners;
use crate::node::NodeParams;
use crate::routing::ProbeConfig;
use crate::topology::{Address, Role, Topology};

/// The demo stream's name.
pub const STREAM: &str = "demo";
const CLIP: [&[u8]; 4] = [
    include_bytes!("../assets/demo-clip/clip0.ts"),
    include_bytes!("../assets/demo-clip/clip1.ts"),
    include_bytes!("../assets/demo-clip/clip2.ts"),
    include_bytes!("../assets/demo-clip/clip3.ts"),
];
const SEGMENT_SECONDS: u64 = 2;
/// Where the demo's director listens.
const DIRECTOR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 48090);

/// Runs the demo mesh until `shutdown` completes.
pub async fn run(topology_path: PathBuf, shutdown: impl Future<Output = ()>) -> Result<()> {
    let topology = Arc::new(Topology::load(&topology_path).map_err(|e| anyhow::anyhow!("{e}"))?);
    let ca = create_ca("lightpath demo CA")?;
    let key = format!("demo-{:016x}", rand::random::<u64>());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut nodes = Vec::new();
    for spec in &topology.nodes {
        let (identity, listeners) = identity_and_listeners(&ca, &spec.id, &spec.mesh, &spec.http).await?;
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
        let (identity, listeners) = identity_and_listeners(&ca, &control.id, &control.mesh, &control.http).await?;
        // The first replica also runs the director, in the first edge's region.
        let director = match topology.nodes.iter().find(|n| n.has_role(Role::Edge)).filter(|_| i == 0) {
            Some(edge) => {
                let config = DirectorConfig {
                    listen: Some(DIRECTOR),
                    region: Some(edge.region.clone()),
                    ..DirectorConfig::default()
                };
                director_url = Some(format!("http://{DIRECTOR}/live/{STREAM}/index.m3u8"));
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
            "  control plane {}: http://{}/api/routes  (also /api/nodes, /api/links, /api/streams)",
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
async fn identity_and_listeners(
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
        http: tokio::net::TcpListener::bind(http).await.with_context(|| format!("binding {http} for {id}"))?,
    };
    Ok((identity, listeners))
}

fn literal(addr: &Address) -> Result<std::net::SocketAddr> {
    addr.socket_addr().with_context(|| format!("the demo binds literal addresses; {addr} is a host name"))
}

/// Publishes the looped clip as a live stream, forever.
async fn publish_loop(origin: std::net::SocketAddr, stream: StreamName, key: String) {
    let mut playlist = LivePlaylist::new(6, SEGMENT_SECONDS as u32);
    let mut tick = tokio::time::interval(Duration::from_secs(SEGMENT_SECONDS));
    for n in 0u64.. {
        tick.tick().await;
        let clip = (n % CLIP.len() as u64) as usize;
        let uri = format!("seg{n}.ts");
        let segment = Segment { uri: uri.clone(), duration: SEGMENT_SECONDS as f64, discontinuity: n > 0 && clip == 0 };
        let path = format!("/live/{stream}/{uri}");
        if let Err(e) = put(origin, &path, &key, Bytes::from_static(CLIP[clip])).await {
            tracing::warn!(error = %format!("{e:#}"), "demo publisher: segment upload failed");
            continue;
        }
        playlist.push(segment);
        let path = format!("/live/{stream}/index.m3u8");
        if let Err(e) = put(origin, &path, &key, Bytes::from(playlist.render())).await {
            tracing::warn!(error = %format!("{e:#}"), "demo publisher: playlist upload failed");
        }
    }
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
