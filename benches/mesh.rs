//! Mesh benchmarks: goodput, added latency per hop and first-viewer time of real nodes on 127.0.0.1.
//!
//! Three mesh nodes run in this process on one multi-thread tokio runtime: `origin -> relay -> edge`, each a
//! real [`Mesh`] (quinn endpoint, mutual TLS with certificates from a CA made for the run, its own
//! [`Cache`]), publishing through [`Ingest::publish`] at the origin and serving viewers over real HTTP at the
//! edge ([`lightpath::http::serve`] + [`Edge`]). A raw quinn connection between two endpoints with the same TLS
//! setup and the same [`transport`] config is the peer for goodput and latency, and gives the path RTT. A raw
//! quinn two-hop chain (sender -> a minimal relay that copies each incoming stream chunk by chunk onto a second
//! connection -> receiver) is what two TLS hops cost on this machine without any mesh code: the physical limit
//! of the two-hop mesh when all nodes share the same cores.
//!
//! `cargo bench --bench mesh` prints one table. It measures, in order:
//!
//! 1. goodput of 1 MiB objects, one QUIC unidirectional stream per object: raw quinn, the raw two-hop chain,
//!    one mesh hop (origin -> relay) and two hops (origin -> relay -> edge), in alternating rounds; then, on a
//!    second mesh and a second raw connection whose every link is capped by the mesh's own WAN emulation
//!    ([`lightpath::netem`], 200 Mbit/s by default), raw quinn, one and two mesh hops: the regime of a
//!    deployment, where the links and not the shared cores are the limit;
//! 2. added latency per hop for 200 KB objects published every 400 ms (a 4 Mbit/s stream): from the object
//!    being complete at the origin to it being complete in the relay's cache, and from there to the edge's,
//!    with the same object sent over the raw quinn connection between two objects of the stream as the peer;
//! 3. first-viewer time: a cold edge's first `GET index.m3u8` for a stream that is live at the origin and
//!    announced at the edge, to the first byte of the reply, with fresh streams.
//!
//! Sizes and counts can be changed with `MESH_BENCH_*` variables (see `Settings`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use hyper::body::Incoming;
use lightpath::ca::{create_ca, issue, CaFiles, Identity};
use lightpath::cache::Cache;
use lightpath::config::{CacheConfig, IngestConfig, QuicConfig};
use lightpath::edge::Edge;
use lightpath::hls::{LivePlaylist, Segment};
use lightpath::http::{live_path, text, Handler, Reply};
use lightpath::id::{NodeId, ObjectName, StreamName};
use lightpath::mesh::{Mesh, MeshOptions};
use lightpath::netem::{self, Impairment, Impairments};
use lightpath::origin::Ingest;
use lightpath::quic::transport;
use lightpath::topology::Topology;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the run measures; each can be overridden by an environment variable.
struct Settings {
    /// `MESH_BENCH_GOODPUT_OBJECTS`: 1 MiB objects per goodput round.
    goodput_objects: usize,
    /// `MESH_BENCH_GOODPUT_ROUNDS`: rounds of the three goodput variants, back to back (medians are reported,
    /// and each ratio is the median of the rounds' own ratios, so load that comes and goes cancels out).
    goodput_rounds: usize,
    /// `MESH_BENCH_LATENCY_OBJECTS`: objects of the 4 Mbit/s stream.
    latency_objects: usize,
    /// `MESH_BENCH_VIEWERS`: fresh streams for the first-viewer measurement.
    viewers: usize,
    /// `MESH_BENCH_CAP_MBIT`: the rate cap of every link of the capped mesh and raw connection, Mbit/s.
    cap_mbit: usize,
    /// `MESH_BENCH_CAPPED_OBJECTS`: 1 MiB objects per rate-capped goodput round.
    capped_objects: usize,
    /// `MESH_BENCH_CAPPED_ROUNDS`: rate-capped goodput rounds.
    capped_rounds: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let var = |name: &str, default: usize| -> Result<usize> {
            match std::env::var(name) {
                Ok(v) => v.parse().with_context(|| format!("{name}={v} is not a count")),
                Err(_) => Ok(default),
            }
        };
        let settings = Self {
            goodput_objects: var("MESH_BENCH_GOODPUT_OBJECTS", 128)?,
            goodput_rounds: var("MESH_BENCH_GOODPUT_ROUNDS", 5)?,
            latency_objects: var("MESH_BENCH_LATENCY_OBJECTS", 100)?,
            viewers: var("MESH_BENCH_VIEWERS", 20)?,
            cap_mbit: var("MESH_BENCH_CAP_MBIT", 200)?,
            capped_objects: var("MESH_BENCH_CAPPED_OBJECTS", 16)?,
            capped_rounds: var("MESH_BENCH_CAPPED_ROUNDS", 3)?,
        };
        // A round's objects must all fit in a node's cache, or some would be evicted before they are counted.
        let round_bytes = (settings.goodput_objects.max(settings.capped_objects) * MIB) as u64;
        ensure!(
            2 * round_bytes <= CACHE_BYTES,
            "MESH_BENCH_GOODPUT_OBJECTS and MESH_BENCH_CAPPED_OBJECTS may be at most {} (half the cache, {} MiB)",
            CACHE_BYTES / 2 / MIB as u64,
            CACHE_BYTES / MIB as u64
        );
        Ok(settings)
    }
}

const MIB: usize = 1 << 20;
/// One object of a 4 Mbit/s stream cut every 400 ms.
const LIVE_OBJECT_BYTES: usize = 200_000;
const LIVE_INTERVAL: Duration = Duration::from_millis(400);
/// Each node's cache bound: a node's default. A round's objects fit (see `Settings::from_env`); earlier
/// rounds are evicted as a live window is, so bodies reuse memory as they do in a running node.
const CACHE_BYTES: u64 = CacheConfig::DEFAULT_MAX_BYTES;
/// Each peer's send queue (`quic.peer_queue_bytes`) holds a whole round. A round is published at once, far
/// faster than a link carries it; with the default 16 MiB a node skips to the newest objects, as a live node
/// behind a slow peer must, and the skipped ones never arrive to be counted.
const PEER_QUEUE_BYTES: u64 = CACHE_BYTES / 2;
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; there are no filters to honour.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "error");
    }
    lightpath::telemetry::init_logging(lightpath::telemetry::LogFormat::Human);
    // Count into the same Prometheus recorder a node installs, so per-object counters cost what they cost there.
    lightpath::telemetry::metrics();
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> Result<()> {
    let started = Instant::now();
    let ca = create_ca("lightpath bench CA")?;
    let lab = Lab::start(&ca, None).await.context("starting the mesh")?;
    let raw = RawPath::start(&ca, 1, None).await.context("starting the raw quinn pair")?;
    let chain = RawPath::start(&ca, 2, None).await.context("starting the raw quinn chain")?;
    let rtt = raw.rtt().await?;

    let goodput = goodput(&lab, &raw, &chain, &settings).await.context("goodput")?;
    let capped = {
        let kbps = settings.cap_mbit as u64 * 1000;
        let lab = Lab::start(&ca, Some(kbps)).await.context("starting the rate-capped mesh")?;
        let raw = RawPath::start(&ca, 1, Some(kbps)).await.context("starting the rate-capped raw pair")?;
        let capped = capped_goodput(&lab, &raw, &settings).await.context("rate-capped goodput")?;
        lab.close();
        raw.close();
        capped
    };
    let latency = hop_latency(&lab, &raw, settings.latency_objects).await.context("latency per hop")?;
    let viewers = first_viewer(&lab, settings.viewers).await.context("first-viewer time")?;

    print_report(&settings, &rtt, &goodput, &capped, &latency, &viewers);
    println!("\n(total run time {:.1} s)", started.elapsed().as_secs_f64());
    lab.close();
    raw.close();
    chain.close();
    Ok(())
}

// ---- the mesh under test -------------------------------------------------------------------------------------

/// Three nodes, `origin - relay - edge`, and the origin's ingest and the edge's HTTP address.
struct Lab {
    origin: Mesh,
    relay: Mesh,
    edge: Mesh,
    ingest: Ingest,
    edge_http: SocketAddr,
    /// Keeps the unused HTTP ports of the origin and relay reserved.
    _listeners: Vec<TcpListener>,
}

impl Lab {
    /// Starts the three nodes; with `cap_kbps`, every link is rate-capped in both directions by the nodes' WAN
    /// emulation.
    async fn start(ca: &CaFiles, cap_kbps: Option<u64>) -> Result<Self> {
        let ids = ["origin", "relay", "edge"];
        let mut sockets = Vec::new();
        let mut listeners = Vec::new();
        let mut topology = String::from("[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n");
        for id in ids {
            let role = id; // each node's one role is its name
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let tcp = TcpListener::bind("127.0.0.1:0").await?;
            topology.push_str(&format!(
                "\n[[nodes]]\nid = \"{id}\"\nregion = \"lab\"\nroles = [\"{role}\"]\nmesh = \"{}\"\nhttp = \"{}\"\n",
                udp.local_addr()?,
                tcp.local_addr()?
            ));
            sockets.push(udp);
            listeners.push(tcp);
        }
        topology.push_str("\n[[links]]\na = \"origin\"\nb = \"relay\"\nlatency_ms = 1.0\n");
        topology.push_str("\n[[links]]\na = \"relay\"\nb = \"edge\"\nlatency_ms = 1.0\n");
        let topology = Topology::parse(&topology, "bench topology").map_err(|e| anyhow::anyhow!("{e}"))?;

        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr()).collect::<Result<_, _>>()?;
        let mut meshes = Vec::new();
        for (i, (id, socket)) in ids.iter().zip(sockets).enumerate() {
            let id = NodeId::new(*id)?;
            let files = issue(ca, &id, 1)?;
            let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
            let cache = Cache::new(CACHE_BYTES, id.as_str());
            let impairments = cap_kbps.map(|rate_kbps| {
                // origin - relay - edge: each node's neighbours are the nodes next to it in `ids`.
                let table = Impairments::default();
                for j in [i.wrapping_sub(1), i + 1].into_iter().filter(|j| *j < addrs.len()) {
                    table.set(addrs[j], Impairment { rate_kbps, ..Default::default() });
                }
                table
            });
            let options = MeshOptions {
                quic: QuicConfig { peer_queue_bytes: PEER_QUEUE_BYTES, ..QuicConfig::default() },
                ..MeshOptions::default()
            };
            meshes.push(Mesh::start(id, &topology, &identity, socket, cache, impairments, options)?);
        }
        let [origin, relay, edge]: [Mesh; 3] = meshes.try_into().map_err(|_| anyhow::anyhow!("three nodes"))?;
        let ingest = Ingest::new(
            origin.clone(),
            IngestConfig::default(),
            lightpath::config::HttpConfig::default().body_timeout(),
        );

        let edge_listener = listeners.pop().expect("three listeners");
        let edge_http = edge_listener.local_addr()?;
        let viewers = Arc::new(Viewers { edge: Edge::new(edge.clone(), Duration::from_secs(6)) });
        tokio::spawn(async move {
            let limits = lightpath::config::HttpConfig::default();
            lightpath::http::serve(edge_listener, viewers, &limits, "edge", 0, std::future::pending::<()>()).await
        });

        let lab = Self { origin, relay, edge, ingest, edge_http, _listeners: listeners };
        // The mesh is up once a stream published at the origin reaches the edge.
        let warmup = StreamName::new("warmup")?;
        lab.edge.want(&warmup);
        lab.ingest.publish(warmup.clone(), ObjectName::new("hello.bin")?, Bytes::from_static(b"hello")).await?;
        lab.edge
            .cache()
            .wait_for(&warmup, &ObjectName::new("hello.bin")?, Duration::from_secs(20))
            .await
            .context("the mesh did not come up within 20 s")?;
        Ok(lab)
    }

    /// Makes `node` want `stream` and waits until a first object published at the origin reaches it, so the
    /// subscription tree is in place before a measurement starts.
    async fn subscribe(&self, node: &Mesh, stream: &StreamName) -> Result<()> {
        node.want(stream);
        let name = ObjectName::new("subscribed.bin")?;
        self.ingest.publish(stream.clone(), name.clone(), Bytes::from_static(b"subscribed")).await?;
        node.cache().wait_for(stream, &name, ARRIVAL_TIMEOUT).await.context("the subscription never delivered")?;
        Ok(())
    }

    fn close(&self) {
        for mesh in [&self.origin, &self.relay, &self.edge] {
            mesh.close();
        }
    }
}

/// The edge's viewer side: what a node's HTTP site does for `GET /live/{stream}/{file}`.
struct Viewers {
    edge: Edge,
}

impl Handler for Viewers {
    async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Reply {
        match live_path(req.uri().path()) {
            Ok((stream, name)) => self
                .edge
                .get(req.method(), &stream, &name, req.uri().query(), None)
                .await
                .unwrap_or_else(lightpath::edge::EdgeError::into_reply),
            Err(e) => text(e.status(), e.to_string()),
        }
    }
}

// ---- the raw quinn peer ----------------------------------------------------------------------------------------

/// Raw quinn endpoints on 127.0.0.1 with the mesh's TLS and transport settings, connected in a line: one hop
/// (sender -> receiver), or two (sender -> relay -> receiver, the relay copying each incoming unidirectional
/// stream chunk by chunk onto a stream of its connection to the receiver, as it arrives).
struct RawPath {
    endpoints: Vec<quinn::Endpoint>,
    /// The first endpoint's side of its connection.
    sender: quinn::Connection,
    /// The last endpoint's side of its connection.
    receiver: quinn::Connection,
}

impl RawPath {
    /// `hops` connections in a line; with `cap_kbps`, every one is rate-capped in both directions by the mesh's
    /// WAN emulation on the endpoints' sockets, as the capped mesh's links are.
    async fn start(ca: &CaFiles, hops: usize, cap_kbps: Option<u64>) -> Result<Self> {
        ensure!((1..=2).contains(&hops), "one or two hops");
        let mut endpoints = Vec::new();
        let mut tables = Vec::new();
        for i in 0..=hops {
            let table = cap_kbps.map(|_| Impairments::default());
            endpoints.push(raw_endpoint(ca, &format!("raw-{i}"), table.clone())?);
            tables.push(table);
        }
        if let Some(rate_kbps) = cap_kbps {
            let cap = Impairment { rate_kbps, ..Default::default() };
            for i in 0..hops {
                let (a, b) = (endpoints[i].local_addr()?, endpoints[i + 1].local_addr()?);
                tables[i].as_ref().expect("a table per endpoint").set(b, cap);
                tables[i + 1].as_ref().expect("a table per endpoint").set(a, cap);
            }
        }
        let mut links = Vec::new();
        for i in 0..hops {
            let to = &endpoints[i + 1];
            let connecting = endpoints[i].connect(to.local_addr()?, &format!("raw-{}", i + 1))?;
            // The server must accept the incoming connection for the client's handshake to complete.
            let accepting = async { anyhow::Ok(to.accept().await.context("no incoming connection")?.await?) };
            let (out, inc) = tokio::join!(connecting, accepting);
            links.push((out?, inc?));
        }
        if hops == 2 {
            tokio::spawn(raw_relay(links[0].1.clone(), links[1].0.clone()));
        }
        let sender = links[0].0.clone();
        let receiver = links[hops - 1].1.clone();
        Ok(Self { endpoints, sender, receiver })
    }

    /// Sends `count` objects, one unidirectional stream each, all at once (as the mesh driver does), and
    /// returns the time until the receiver has read the last one to its end.
    async fn transfer(&self, body: &Bytes, count: usize) -> Result<Duration> {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<usize>>();
        let receiver = self.receiver.clone();
        let accept = tokio::spawn(async move {
            for _ in 0..count {
                let mut recv = receiver.accept_uni().await?;
                let done = done_tx.clone();
                // One task per stream, reading the whole object, as the mesh's receiving side does.
                tokio::spawn(async move {
                    let read = recv.read_to_end(64 * MIB).await.map(|b| b.len()).map_err(anyhow::Error::from);
                    let _ = done.send(read);
                });
            }
            anyhow::Ok(())
        });
        let start = Instant::now();
        for _ in 0..count {
            let conn = self.sender.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let mut send = conn.open_uni().await?;
                send.write_chunk(body).await?;
                send.finish()?;
                anyhow::Ok(())
            });
        }
        let mut bytes = 0;
        for _ in 0..count {
            bytes += done_rx.recv().await.context("receiver gone")??;
        }
        let elapsed = start.elapsed();
        accept.await??;
        ensure!(bytes == body.len() * count, "raw transfer lost bytes: {bytes}");
        Ok(elapsed)
    }

    /// The connection's RTT: quinn's smoothed estimate, and application round trips on fresh bidirectional
    /// streams (one byte there and back).
    async fn rtt(&self) -> Result<Rtt> {
        let receiver = self.receiver.clone();
        let echo = tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = receiver.accept_bi().await {
                let byte = recv.read_to_end(16).await?;
                send.write_all(&byte).await?;
                send.finish()?;
            }
            anyhow::Ok(())
        });
        let mut pings = Vec::new();
        for _ in 0..50 {
            let start = Instant::now();
            let (mut send, mut recv) = self.sender.open_bi().await?;
            send.write_all(b"p").await?;
            send.finish()?;
            let back = recv.read_to_end(16).await?;
            ensure!(back == b"p", "echo returned {back:?}");
            pings.push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        echo.abort();
        pings.sort();
        Ok(Rtt { quinn: self.sender.rtt(), ping_p50: percentile(&pings, 50.0) })
    }

    fn close(&self) {
        for endpoint in &self.endpoints {
            endpoint.close(0u32.into(), b"done");
        }
    }
}

/// A quinn endpoint that is a server with node `id`'s certificate and a client of the others, on a fresh
/// 127.0.0.1 socket; through the WAN emulation with `impairments`.
fn raw_endpoint(ca: &CaFiles, id: &str, impairments: Option<Impairments>) -> Result<quinn::Endpoint> {
    let files = issue(ca, &NodeId::new(id)?, 1)?;
    let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
    let server_config = lightpath::quic::server_config(
        &identity,
        Arc::new(transport(lightpath::config::QuicConfig::default().max_object_streams)),
    )?;
    let client_config = lightpath::quic::client_config(
        &identity,
        Arc::new(transport(lightpath::config::QuicConfig::default().max_object_streams)),
    )?;
    let runtime = quinn::default_runtime().context("no runtime")?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let config = quinn::EndpointConfig::default();
    let mut endpoint = match impairments {
        Some(table) => quinn::Endpoint::new_with_abstract_socket(
            config,
            Some(server_config),
            netem::impaired_socket(socket, table)?,
            runtime,
        )?,
        None => quinn::Endpoint::new(config, Some(server_config), socket, runtime)?,
    };
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

/// The raw chain's relay: each unidirectional stream from `upstream` is copied onto a new one to `downstream`,
/// chunk by chunk as it arrives, and finished when it ends.
async fn raw_relay(upstream: quinn::Connection, downstream: quinn::Connection) {
    while let Ok(mut recv) = upstream.accept_uni().await {
        let downstream = downstream.clone();
        tokio::spawn(async move {
            let mut send = downstream.open_uni().await?;
            let mut chunks: [Bytes; 32] = Default::default();
            while let Some(n) = recv.read_chunks(&mut chunks).await? {
                send.write_all_chunks(&mut chunks[..n]).await?;
            }
            send.finish()?;
            anyhow::Ok(())
        });
    }
}

struct Rtt {
    /// quinn's smoothed RTT of one link.
    quinn: Duration,
    /// Median application round trip on one link.
    ping_p50: Duration,
}

// ---- 1. goodput -----------------------------------------------------------------------------------------------

struct Goodput {
    /// MiB/s of each round, per variant.
    raw: Vec<f64>,
    raw_two_hops: Vec<f64>,
    one_hop: Vec<f64>,
    two_hops: Vec<f64>,
    /// CPU time of this process per MiB delivered, over all rounds, per variant (in the order above).
    cpu_ms_per_mib: [f64; 4],
}

fn goodput_body() -> Bytes {
    Bytes::from((0..MIB).map(|i| (i * 7 + i / 4096) as u8).collect::<Vec<u8>>())
}

async fn goodput(lab: &Lab, raw: &RawPath, chain: &RawPath, settings: &Settings) -> Result<Goodput> {
    let body = goodput_body();
    let count = settings.goodput_objects;
    let mib = |d: Duration| (count * body.len()) as f64 / MIB as f64 / d.as_secs_f64();
    let mut result = Goodput {
        raw: Vec::new(),
        raw_two_hops: Vec::new(),
        one_hop: Vec::new(),
        two_hops: Vec::new(),
        cpu_ms_per_mib: [0.0; 4],
    };
    let mut cpu = [Duration::ZERO; 4];
    // Round 0 warms each path up (congestion windows, allocator) and is not counted.
    for round in 0..=settings.goodput_rounds {
        // One stream per path, each round's objects under new names: earlier rounds are the older part of
        // the stream's window, which its cache evicts first, as a live stream's.
        let (one, two) = (StreamName::new("goodput-1hop")?, StreamName::new("goodput-2hop")?);
        let n = if round == 0 { count.min(16) } else { count };
        let (raw_time, raw_cpu) = with_cpu(raw.transfer(&body, n)).await?;
        let (chain_time, chain_cpu) = with_cpu(chain.transfer(&body, n)).await?;
        let (one_time, one_cpu) = with_cpu(mesh_transfer(lab, &lab.relay, &one, round, &body, n)).await?;
        let (two_time, two_cpu) = with_cpu(mesh_transfer(lab, &lab.edge, &two, round, &body, n)).await?;
        if round > 0 {
            result.raw.push(mib(raw_time));
            result.raw_two_hops.push(mib(chain_time));
            result.one_hop.push(mib(one_time));
            result.two_hops.push(mib(two_time));
            for (total, used) in cpu.iter_mut().zip([raw_cpu, chain_cpu, one_cpu, two_cpu]) {
                *total += used;
            }
        }
    }
    let delivered = (settings.goodput_rounds * count * body.len()) as f64 / MIB as f64;
    result.cpu_ms_per_mib = cpu.map(|c| c.as_secs_f64() * 1000.0 / delivered);
    Ok(result)
}

/// Goodput when every link is rate-capped: MiB/s of each round, per variant.
struct Capped {
    raw: Vec<f64>,
    one_hop: Vec<f64>,
    two_hops: Vec<f64>,
}

async fn capped_goodput(lab: &Lab, raw: &RawPath, settings: &Settings) -> Result<Capped> {
    let body = goodput_body();
    let count = settings.capped_objects;
    let mib = |d: Duration| (count * body.len()) as f64 / MIB as f64 / d.as_secs_f64();
    let mut result = Capped { raw: Vec::new(), one_hop: Vec::new(), two_hops: Vec::new() };
    // Round 0 warms each path up and is not counted.
    for round in 0..=settings.capped_rounds {
        let (one, two) = (StreamName::new("capped-1hop")?, StreamName::new("capped-2hop")?);
        let n = if round == 0 { count.min(4) } else { count };
        let raw_time = raw.transfer(&body, n).await?;
        let one_time = mesh_transfer(lab, &lab.relay, &one, round, &body, n).await?;
        let two_time = mesh_transfer(lab, &lab.edge, &two, round, &body, n).await?;
        if round > 0 {
            result.raw.push(mib(raw_time));
            result.one_hop.push(mib(one_time));
            result.two_hops.push(mib(two_time));
        }
    }
    Ok(result)
}

/// Runs `work` and returns its output with the CPU time this process used meanwhile (all threads).
async fn with_cpu<T>(work: impl Future<Output = Result<T>>) -> Result<(T, Duration)> {
    let before = process_cpu();
    let out = work.await?;
    Ok((out, process_cpu().saturating_sub(before)))
}

/// CPU time of this process's live threads, from `/proc/self/task/*/schedstat` (nanoseconds on a CPU); zero
/// where that is not available.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let nanos: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Publishes `count` objects of `round` at the origin as fast as ingest takes them and returns the time until
/// `to` holds the last of them.
async fn mesh_transfer(
    lab: &Lab,
    to: &Mesh,
    stream: &StreamName,
    round: usize,
    body: &Bytes,
    count: usize,
) -> Result<Duration> {
    lab.subscribe(to, stream).await?;
    let names: Vec<ObjectName> =
        (0..count).map(|i| ObjectName::new(format!("r{round}-o{i}.m4s"))).collect::<Result<_, _>>()?;
    let start = Instant::now();
    for name in &names {
        lab.ingest.publish(stream.clone(), name.clone(), body.clone()).await?;
    }
    for name in &names {
        let object = to.cache().wait_for(stream, name, ARRIVAL_TIMEOUT).await;
        let object = object.with_context(|| format!("{stream}/{name} did not arrive at {}", to.me()))?;
        ensure!(object.body.len() == body.len(), "{stream}/{name} arrived with {} bytes", object.body.len());
    }
    Ok(start.elapsed())
}

// ---- 2. latency per hop ----------------------------------------------------------------------------------------

struct HopLatency {
    /// Origin complete -> relay complete, per object.
    first: Vec<Duration>,
    /// Relay complete -> edge complete.
    second: Vec<Duration>,
    /// Origin complete -> edge complete.
    total: Vec<Duration>,
    /// The peer: the same object over the raw quinn connection, written -> read to its end.
    raw: Vec<Duration>,
}

async fn hop_latency(lab: &Lab, raw: &RawPath, count: usize) -> Result<HopLatency> {
    let stream = StreamName::new("latency")?;
    lab.subscribe(&lab.edge, &stream).await?;
    let body = Bytes::from(vec![0x47u8; LIVE_OBJECT_BYTES]);
    let mut result = HopLatency { first: Vec::new(), second: Vec::new(), total: Vec::new(), raw: Vec::new() };
    let mut tick = tokio::time::interval(LIVE_INTERVAL);
    for n in 0..count {
        tick.tick().await;
        let name = ObjectName::new(format!("seg{n}.ts"))?;
        // Waiters first, so each sees the object the moment its cache takes it.
        let relay = arrival(&lab.relay, &stream, &name);
        let edge = arrival(&lab.edge, &stream, &name);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let published = Instant::now();
        lab.ingest.publish(stream.clone(), name.clone(), body.clone()).await?;
        let at_relay = relay.await??;
        let at_edge = edge.await??;
        result.first.push(at_relay - published);
        result.second.push(at_edge.saturating_duration_since(at_relay));
        result.total.push(at_edge - published);
        // The peer, between two objects of the stream: the same bytes over one raw quinn connection.
        result.raw.push(raw.transfer(&body, 1).await?);
    }
    Ok(result)
}

/// The instant `name` lands in `node`'s cache.
fn arrival(node: &Mesh, stream: &StreamName, name: &ObjectName) -> tokio::task::JoinHandle<Result<Instant>> {
    let (node, stream, name) = (node.clone(), stream.clone(), name.clone());
    tokio::spawn(async move {
        node.cache()
            .wait_for(&stream, &name, ARRIVAL_TIMEOUT)
            .await
            .with_context(|| format!("{stream}/{name} did not arrive at {}", node.me()))?;
        Ok(Instant::now())
    })
}

// ---- 3. first viewer ---------------------------------------------------------------------------------------

struct FirstViewer {
    /// Viewer starts -> the playlist is in the edge's cache.
    in_cache: Vec<Duration>,
    /// Viewer connects and sends the GET -> first byte of the playlist reply.
    playlist: Vec<Duration>,
    /// Viewer connects -> the playlist's newest segment fully received (a player can start).
    segment: Vec<Duration>,
}

async fn first_viewer(lab: &Lab, streams: usize) -> Result<FirstViewer> {
    let mut result = FirstViewer { in_cache: Vec::new(), playlist: Vec::new(), segment: Vec::new() };
    for i in 0..streams {
        let stream = StreamName::new(format!("viewer-{i}"))?;
        let publisher = tokio::spawn(publish_live(lab.ingest_handle(), stream.clone()));
        // Live for a second (three segments) and announced everywhere; never asked for at the relay or edge.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while lab.edge.stream(&stream).is_none_or(|s| !s.reachable) {
            ensure!(Instant::now() < deadline, "{stream} was never announced at the edge");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ensure!(!lab.edge.cache().has_stream(&stream) && !lab.relay.cache().has_stream(&stream), "not cold");

        let in_cache = arrival(&lab.edge, &stream, &ObjectName::new("index.m3u8")?);
        tokio::time::sleep(Duration::from_millis(2)).await; // the waiter is parked
        let (addr, path) = (lab.edge_http, format!("/live/{stream}/"));
        let start = Instant::now();
        let (first_byte, ready) = tokio::task::spawn_blocking(move || view(start, addr, &path)).await??;
        result.in_cache.push(in_cache.await?? - start);
        publisher.abort();
        result.playlist.push(first_byte);
        result.segment.push(ready);
    }
    Ok(result)
}

impl Lab {
    /// A second ingest handle on the origin, for a publisher task (the origin numbers each stream itself).
    fn ingest_handle(&self) -> Ingest {
        Ingest::new(
            self.origin.clone(),
            IngestConfig::default(),
            lightpath::config::HttpConfig::default().body_timeout(),
        )
    }
}

/// Publishes a live stream, as a publisher's HLS muxer would: a segment, then the playlist, every 400 ms.
async fn publish_live(ingest: Ingest, stream: StreamName) -> Result<()> {
    let mut playlist = LivePlaylist::new(6, 1);
    let body = Bytes::from(vec![0x47u8; LIVE_OBJECT_BYTES]);
    let mut tick = tokio::time::interval(LIVE_INTERVAL);
    for n in 0u64.. {
        tick.tick().await;
        let uri = format!("seg{n}.ts");
        ingest.publish(stream.clone(), ObjectName::new(uri.clone())?, body.clone()).await?;
        playlist.push(Segment { uri, duration: LIVE_INTERVAL.as_secs_f64(), discontinuity: false });
        ingest.publish(stream.clone(), ObjectName::new("index.m3u8")?, Bytes::from(playlist.render())).await?;
    }
    Ok(())
}

/// What a player does first, timed from its own thread (outside the nodes' runtime, like a viewer elsewhere):
/// connect, GET the playlist (first byte timed), then GET its newest segment on the same connection. Returns the
/// time to the playlist's first byte and to the segment's last.
fn view(start: Instant, addr: SocketAddr, base: &str) -> Result<(Duration, Duration)> {
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let mut conn = std::io::BufReader::new(tcp);
    let (first_byte, playlist) = get(&mut conn, &format!("{base}index.m3u8"))?;
    let first_byte = first_byte - start;
    let playlist = String::from_utf8(playlist)?;
    ensure!(playlist.starts_with("#EXTM3U"), "not a playlist: {playlist:?}");
    let newest = playlist.lines().rfind(|l| !l.starts_with('#') && !l.is_empty()).context("no segment listed")?;
    let (_, segment) = get(&mut conn, &format!("{base}{newest}"))?;
    ensure!(segment.len() == LIVE_OBJECT_BYTES, "{base}{newest} has {} bytes", segment.len());
    Ok((first_byte, start.elapsed()))
}

/// One blocking HTTP/1.1 GET on a kept-alive connection: the instant the reply's first byte arrived, and the
/// body of a 200 reply.
fn get(conn: &mut std::io::BufReader<std::net::TcpStream>, path: &str) -> Result<(Instant, Vec<u8>)> {
    use std::io::{BufRead, Read, Write};
    let host = conn.get_ref().peer_addr()?;
    write!(conn.get_mut(), "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
    ensure!(!conn.fill_buf()?.is_empty(), "GET {path}: connection closed");
    let first_byte = Instant::now();
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut length = None;
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
    }
    let mut body = vec![0; length.with_context(|| format!("GET {path}: no Content-Length"))?];
    conn.read_exact(&mut body)?;
    ensure!(status == "200", "GET {path}: {status} {}", String::from_utf8_lossy(&body).trim());
    Ok((first_byte, body))
}

// ---- report ----------------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

/// One table row: a label, then right-aligned columns.
fn row(label: &str, columns: &[String], note: &str) {
    let columns: String = columns.iter().map(|c| format!(" {c:>10}")).collect();
    println!("{label:<34}{columns}  {note}");
}

fn print_report(
    settings: &Settings,
    rtt: &Rtt,
    goodput: &Goodput,
    capped: &Capped,
    latency: &HopLatency,
    viewers: &FirstViewer,
) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("lightpath mesh benchmarks: 3 nodes in one process on 127.0.0.1, tokio multi-thread, {cores} cores");
    println!("load average at the end: {}", load.join(" "));
    println!("link RTT: quinn estimate {} ms, 1-byte stream ping p50 {} ms", ms(rtt.quinn), ms(rtt.ping_p50));

    let (raw, one, two) = (median(&goodput.raw), median(&goodput.one_hop), median(&goodput.two_hops));
    let raw_two = median(&goodput.raw_two_hops);
    let [raw_cpu, raw_two_cpu, one_cpu, two_cpu] = goodput.cpu_ms_per_mib;
    let rounds = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
    println!(
        "\n1. goodput, {} x 1 MiB objects, one uni stream each (medians of {} rounds; each round's MiB/s at the end)",
        settings.goodput_objects, settings.goodput_rounds
    );
    row("path", &["MiB/s".into(), "vs raw".into(), "CPU ms/MiB".into()], "rounds");
    // `vs raw`: the median over rounds of (this round's figure / the same round's raw figure).
    let vs = |each: &[f64], base: &[f64]| {
        let ratios: Vec<f64> = each.iter().zip(base).map(|(x, r)| x / r).collect();
        median(&ratios)
    };
    for (label, mib, cpu, each, note) in [
        ("raw quinn, one connection", raw, raw_cpu, &goodput.raw, ""),
        ("raw quinn, two hops (chain)", raw_two, raw_two_cpu, &goodput.raw_two_hops, "the two-hop limit here"),
        ("mesh origin -> relay", one, one_cpu, &goodput.one_hop, ""),
        ("mesh origin -> relay -> edge", two, two_cpu, &goodput.two_hops, "target >= 0.80x"),
    ] {
        if goodput.raw.is_empty() {
            break;
        }
        let columns = [format!("{mib:.0}"), format!("{:.2}x", vs(each, &goodput.raw)), format!("{cpu:.2}")];
        row(label, &columns, &format!("{}  {note}", rounds(each)));
    }
    if !goodput.raw.is_empty() {
        let columns = [String::new(), format!("{:.2}x", vs(&goodput.two_hops, &goodput.raw_two_hops)), String::new()];
        row("mesh two hops vs raw two hops", &columns, "");
    }

    println!(
        "\n1b. goodput, every link capped at {} Mbit/s by the WAN emulation, {} x 1 MiB objects (medians of {} rounds)",
        settings.cap_mbit, settings.capped_objects, settings.capped_rounds
    );
    row("path", &["MiB/s".into(), "vs raw".into()], "rounds");
    for (label, each) in [
        ("raw quinn, one capped connection", &capped.raw),
        ("mesh origin -> relay", &capped.one_hop),
        ("mesh origin -> relay -> edge", &capped.two_hops),
    ] {
        if capped.raw.is_empty() {
            break;
        }
        row(label, &[format!("{:.1}", median(each)), format!("{:.2}x", vs(each, &capped.raw))], &rounds(each));
    }

    println!(
        "\n2. added latency, {} objects of {} KB every {} ms (4 Mbit/s), complete at one node -> complete at the next",
        latency.total.len(),
        LIVE_OBJECT_BYTES / 1000,
        LIVE_INTERVAL.as_millis()
    );
    let first = sorted(latency.first.clone());
    let second = sorted(latency.second.clone());
    let total = sorted(latency.total.clone());
    let max = |v: &[Duration]| v.last().copied().unwrap_or_default();
    row("hop", &["p50 ms".into(), "p99 ms".into(), "max ms".into()], "");
    for (label, v) in [("origin -> relay", &first), ("relay -> edge", &second), ("origin -> edge (two hops)", &total)] {
        row(label, &[ms(percentile(v, 50.0)), ms(percentile(v, 99.0)), ms(max(v))], "");
    }
    let raw = sorted(latency.raw.clone());
    row(
        "raw quinn, one connection (peer)",
        &[ms(percentile(&raw, 50.0)), ms(percentile(&raw, 99.0)), ms(max(&raw))],
        "",
    );
    row(
        "per hop (two-hop figure / 2)",
        &[ms(percentile(&total, 50.0) / 2), ms(percentile(&total, 99.0) / 2), ms(max(&total) / 2)],
        "target p99 <= 2 ms per hop",
    );

    let playlist = sorted(viewers.playlist.clone());
    let segment = sorted(viewers.segment.clone());
    let path_rtt = rtt.quinn * 2;
    let target = path_rtt * 3 + Duration::from_millis(10);
    println!(
        "\n3. first viewer at a cold edge, {} fresh live streams (origin -> relay -> edge, path RTT {} ms)",
        playlist.len(),
        ms(path_rtt)
    );
    row("", &["p50 ms".into(), "max ms".into()], "");
    row(
        "GET -> first byte of the playlist",
        &[ms(percentile(&playlist, 50.0)), ms(max(&playlist))],
        &format!("target <= 3 path RTT + 10 ms = {} ms", ms(target)),
    );
    let in_cache = sorted(viewers.in_cache.clone());
    row("GET -> playlist in the edge's cache", &[ms(percentile(&in_cache, 50.0)), ms(max(&in_cache))], "");
    row("GET -> newest segment received", &[ms(percentile(&segment, 50.0)), ms(max(&segment))], "");
}
