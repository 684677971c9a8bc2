//! Relay fan-out: one publisher at 4.8 Mbit/s, N subscribing mesh peers, one `lightpath node` relay between
//! them; the relay's CPU per delivered Gbit/s and its resident memory per subscriber, against a raw quinn
//! fan-out of the same bytes measured in the same run.
//!
//! For each N (10, 100, 400 by default):
//!
//! 1. **lightpath.** The relay under test is a real `lightpath node` process (role `relay`, default config,
//!    [`common::bin`], so `LIGHTPATH_BIN` picks another build). The origin and the N subscribers run in this
//!    process: each is a real [`Mesh`] with its own UDP socket on 127.0.0.1, its own node id and mTLS
//!    certificate from the run's CA, as an edge is. The topology lists `origin`, `relay` and `edge-0000`..
//!    with links origin-relay and relay-edge-i only, so every object reaches the subscribers through the relay.
//!    The origin publishes one object every `FANOUT_OBJECT_MS` (1 s) of 4.8 Mbit/s worth of bytes (600 kB)
//!    through [`Ingest::publish`], as its HTTP ingest does; each subscriber wants the stream, and a collector
//!    takes every object that lands in a subscriber's cache out of it (recording its sequence number), so the
//!    N caches do not grow. The relay's resident memory (`VmRSS`) is read once it is connected to the
//!    origin, the stream is being published, and no subscriber exists yet ("before"). The first subscriber
//!    joins alone, and 3 s after its first object the relay's `VmRSS` and cache bytes are read again ("with
//!    1": what carrying the stream costs, however many subscribe); then the others start and join in
//!    batches of 32 (the relay's default cap on handshakes at once is 64), each until its first object
//!    arrives. After 3 s of settling, the steady window (`FANOUT_WINDOW_S`, 20 s) runs from one publish to
//!    the publish `window / interval` objects later: the relay's CPU time (utime + stime of
//!    `/proc/PID/stat`) over it, its `VmRSS` at its end ("with N"), and, after a grace of up to 5 s for the
//!    last objects in flight, how many of the window's objects each subscriber received.
//! 2. **raw quinn floor.** The same bench binary, re-run as a helper process (`fanout raw-relay DIR`), is a
//!    raw relay: a quinn endpoint with the mesh's TLS (mutual, same CA) and [`transport`] config that takes
//!    objects from one raw publisher connection (one unidirectional stream each), reads each whole and writes
//!    it to each of N raw client connections on a unidirectional stream of its own. Publisher and clients run
//!    here, with the same objects at the same rate; the same window, CPU and memory readings.
//!
//! Memory per subscriber is reported three ways: (with N - before) / N; the same with the growth of the
//! relay's cache between the two readings taken out; and (with N - with 1) / (N - 1), again with the cache's
//! growth between those readings taken out: the cost of each subscriber beyond the stream's own.
//! Delivered Mbit/s is the bytes of the window's objects that subscribers received, over the window. CPU is
//! % of one core. The run fails if subscribers missed more than `MISS_TOLERANCE` of the window's deliveries
//! (objects x subscribers), so that a figure is never bought by dropping objects.
//!
//! Run: `cargo bench --bench fanout`. Environment: `FANOUT_SIZES="10 100 400"`, `FANOUT_WINDOW_S=20`,
//! `FANOUT_OBJECT_MS=1000`, `FANOUT_PERF_DIR=/some/dir` (records `perf record -g` of the relay during each
//! window into `relay-N.data` there; the sampling costs the relay some CPU, so figures of such a run are not
//! the ones to quote).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use lightpath::ca::{create_ca, issue, CaFiles, Identity};
use lightpath::cache::Cache;
use lightpath::config::{HttpConfig, IngestConfig};
use lightpath::id::{NodeId, ObjectName, StreamName};
use lightpath::mesh::{Mesh, MeshOptions};
use lightpath::origin::Ingest;
use lightpath::quic::transport;
use lightpath::topology::Topology;
use tokio::sync::watch;

/// The publisher's rate, bits per second.
const RATE_BPS: u64 = 4_800_000;
/// The most of the window's deliveries (objects x subscribers) that may be missed before the run fails.
const MISS_TOLERANCE: f64 = 0.001;
/// Subscribers that join at once (below the relay's default cap of 64 handshakes in progress).
const JOIN_BATCH: usize = 32;
/// How long one batch of subscribers may take to receive its first object.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Settling after the last subscriber joined, before the window.
const SETTLE: Duration = Duration::from_secs(3);
/// How long after the window the last objects may take to arrive.
const GRACE: Duration = Duration::from_secs(5);
/// Each subscriber's cache bound; the collector empties it as objects arrive.
const SUBSCRIBER_CACHE: u64 = 16 << 20;
const RAW_RELAY_ARG: &str = "raw-relay";

struct Settings {
    sizes: Vec<usize>,
    window: Duration,
    interval: Duration,
    perf_dir: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let sizes = match std::env::var("FANOUT_SIZES") {
            Ok(v) => v
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<usize>().with_context(|| format!("FANOUT_SIZES: {s:?} is not a count")))
                .collect::<Result<Vec<_>>>()?,
            Err(_) => vec![10, 100, 400],
        };
        ensure!(sizes.iter().all(|n| (1..=5000).contains(n)), "FANOUT_SIZES: each from 1 to 5000");
        let number = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(v) => v.parse().with_context(|| format!("{name}={v} is not a number")),
                Err(_) => Ok(default),
            }
        };
        let window = Duration::from_secs(number("FANOUT_WINDOW_S", 20)?);
        let interval = Duration::from_millis(number("FANOUT_OBJECT_MS", 1000)?);
        ensure!(interval >= Duration::from_millis(20) && interval <= Duration::from_secs(4), "FANOUT_OBJECT_MS");
        ensure!(window >= interval * 2 && window <= Duration::from_secs(600), "FANOUT_WINDOW_S: 2 objects to 600 s");
        let perf_dir = std::env::var_os("FANOUT_PERF_DIR").map(PathBuf::from);
        Ok(Self { sizes, window, interval, perf_dir })
    }

    fn object_bytes(&self) -> usize {
        (RATE_BPS as u128 * self.interval.as_millis() / 8000) as usize
    }

    /// Objects published in the window.
    fn window_objects(&self) -> u64 {
        (self.window.as_millis() / self.interval.as_millis()) as u64
    }
}

/// What one fan-out measured: a relay process over the steady window.
#[derive(Default)]
struct Measured {
    /// Bits per second delivered to all subscribers together.
    delivered_bps: f64,
    /// % of one core.
    cpu_pct: f64,
    rss_before: f64,
    rss_with: f64,
    /// Growth of the relay's cache (`lightpath_cache_bytes`) from "before" to "with N", MiB: the stream's live
    /// window filling while the run goes on, which is not a cost per subscriber.
    cache_growth: f64,
    /// RSS once the relay carried the stream to one subscriber, plus its cache's growth from then to "with
    /// N" (lightpath only): what the stream costs whatever the number of subscribers.
    rss_one: Option<f64>,
    /// Deliveries expected in the window (objects x subscribers) and missed of those.
    expected: u64,
    missed: u64,
    /// Subscribers that missed anything.
    lagging: usize,
}

impl Measured {
    fn cpu_per_gbit(&self) -> f64 {
        self.cpu_pct / (self.delivered_bps / 1e9)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(RAW_RELAY_ARG) {
        let dir = args.get(2).context("raw-relay DIR")?;
        return raw_relay_main(Path::new(dir));
    }
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "error");
    }
    lightpath::telemetry::init_logging(lightpath::telemetry::LogFormat::Human);
    lightpath::telemetry::metrics();
    let settings = Settings::from_env()?;
    let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    let largest = settings.sizes.iter().copied().max().unwrap_or(0) as u64;
    // Per subscriber here: a mesh socket and a reserved HTTP port; then a raw client socket.
    ensure!(
        fds >= 3 * largest + 256,
        "{largest} subscribers need about {} open files here; ulimit -n is {fds}",
        3 * largest + 256
    );

    println!("relays from {}", common::bin());
    println!(
        "publisher {:.1} Mbit/s: one {} B object every {} ms; steady window {} s ({} objects); sizes {:?}",
        RATE_BPS as f64 / 1e6,
        settings.object_bytes(),
        settings.interval.as_millis(),
        settings.window.as_secs(),
        settings.window_objects(),
        settings.sizes
    );
    let mut rows = Vec::new();
    for &n in &settings.sizes {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let mesh = runtime.block_on(mesh_fanout(n, &settings)).with_context(|| format!("lightpath fan-out to {n}"))?;
        runtime.shutdown_timeout(Duration::from_secs(2));
        report_one("lightpath", n, &mesh);
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let raw = runtime.block_on(raw_fanout(n, &settings)).with_context(|| format!("raw fan-out to {n}"))?;
        runtime.shutdown_timeout(Duration::from_secs(2));
        report_one("raw quinn", n, &raw);
        rows.push((n, mesh, raw));
    }
    print_table(&settings, &rows);

    let mut failed = Vec::new();
    for (n, mesh, raw) in &rows {
        for (what, m) in [("lightpath", mesh), ("raw quinn", raw)] {
            if m.missed as f64 > MISS_TOLERANCE * m.expected as f64 {
                failed.push(format!("{what} N={n}: {} of {} deliveries missed", m.missed, m.expected));
            }
        }
    }
    if !failed.is_empty() {
        bail!("objects missed beyond the tolerance of {}: {}", MISS_TOLERANCE, failed.join("; "));
    }
    Ok(())
}

fn report_one(what: &str, n: usize, m: &Measured) {
    eprintln!(
        "{what} N={n}: {:.1} Mbit/s delivered, relay {:.1} % of a core ({:.1} %/Gbit/s), RSS {:.1} -> {:.1} MiB, \
         missed {}/{} ({} subscribers missed some)",
        m.delivered_bps / 1e6,
        m.cpu_pct,
        m.cpu_per_gbit(),
        m.rss_before,
        m.rss_with,
        m.missed,
        m.expected,
        m.lagging
    );
}

fn print_table(settings: &Settings, rows: &[(usize, Measured, Measured)]) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "\nRelay fan-out, {} cores, {} s window, load average at the end {}",
        cores,
        settings.window.as_secs(),
        load.join(" ")
    );
    println!(
        "\n| N | delivered Mbit/s | relay CPU % of a core | relay CPU %/Gbit/s | raw floor CPU % | raw floor %/Gbit/s \
         | ratio to floor | relay RSS before MiB | relay RSS with N MiB | MiB per subscriber \
         | MiB per subscriber, cache growth taken out | relay RSS with 1, plus the cache's growth after it, MiB \
         | MiB per subscriber after the first \
         | missed (of expected) | raw floor MiB per subscriber |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, mesh, raw) in rows {
        let per_sub = |m: &Measured| (m.rss_with - m.rss_before) / *n as f64;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.3} | {:.3} | {} | {} | {} of {} \
             | {:.3} |",
            mesh.delivered_bps / 1e6,
            mesh.cpu_pct,
            mesh.cpu_per_gbit(),
            raw.cpu_pct,
            raw.cpu_per_gbit(),
            mesh.cpu_per_gbit() / raw.cpu_per_gbit(),
            mesh.rss_before,
            mesh.rss_with,
            per_sub(mesh),
            (mesh.rss_with - mesh.rss_before - mesh.cache_growth) / *n as f64,
            mesh.rss_one.map_or("-".into(), |one| format!("{one:.1}")),
            match mesh.rss_one {
                Some(one) if *n > 1 => format!("{:.3}", (mesh.rss_with - one) / (*n - 1) as f64),
                _ => "-".into(),
            },
            mesh.missed,
            mesh.expected,
            per_sub(raw),
        );
    }
    println!(
        "\nTargets: relay CPU <= 20 % of a core per delivered Gbit/s; <= 0.25 MiB of relay RSS per subscriber. \
         Missed tolerance {:.1} % of deliveries.",
        MISS_TOLERANCE * 100.0
    );
}

// ---- the relay process's CPU and memory ------------------------------------------------------------------

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    // The command name is in parentheses and may hold spaces: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')').context("no ')' in stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are the 12th and 13th after the name.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(hz > 0, "no clock tick rate");
    Ok(ticks as f64 / hz as f64)
}

fn rss(pid: u32) -> Result<f64> {
    common::status_mib(pid, "VmRSS:").with_context(|| format!("no VmRSS for process {pid}"))
}

/// A child process killed when dropped.
struct Process(Child);

impl Process {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn check_alive(&mut self, what: &str) -> Result<()> {
        if let Some(status) = self.0.try_wait()? {
            bail!("{what} exited: {status}");
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `perf record -g` of `pid` from now until [`Perf::stop`], when `FANOUT_PERF_DIR` is set.
struct Perf(Option<Process>);

impl Perf {
    fn start(settings: &Settings, pid: u32, name: &str) -> Result<Self> {
        let Some(dir) = &settings.perf_dir else { return Ok(Self(None)) };
        std::fs::create_dir_all(dir)?;
        let child = Command::new("perf")
            .args(["record", "-g", "-F", "499", "-p", &pid.to_string(), "-o"])
            .arg(dir.join(format!("{name}.data")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("perf record")?;
        Ok(Self(Some(Process(child))))
    }

    fn stop(mut self) {
        if let Some(mut p) = self.0.take() {
            // SIGINT makes perf write its file and exit.
            // SAFETY: kill only sends a signal to the child we started.
            unsafe { libc::kill(p.pid() as i32, libc::SIGINT) };
            let _ = p.0.wait();
        }
    }
}

/// A free 127.0.0.1 port (UDP or TCP): bound and released; the relay binds it a moment later.
fn free_udp() -> Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_tcp() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

// ---- the objects ----------------------------------------------------------------------------------------------

/// Object `seq`: its sequence number in the first 8 bytes, then filler that differs from object to object.
fn object_body(seq: u64, len: usize) -> Bytes {
    let mut body = vec![0u8; len.max(8)];
    body[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in body[8..].iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(31).wrapping_add(seq) as u8;
    }
    Bytes::from(body)
}

fn object_name(seq: u64) -> Result<ObjectName> {
    Ok(ObjectName::new(format!("seg{seq}.m4s"))?)
}

fn seq_of(name: &ObjectName) -> Option<u64> {
    name.as_str().strip_prefix("seg")?.strip_suffix(".m4s")?.parse().ok()
}

/// The sequence numbers each subscriber received.
type Received = Arc<Mutex<Vec<BTreeSet<u64>>>>;

/// Publishes one object every interval with `publish`, announcing each sequence number on `published` just
/// before. Runs until aborted.
async fn publish_loop<F, Fut>(interval: Duration, published: watch::Sender<u64>, mut publish: F) -> Result<()>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut tick = tokio::time::interval(interval);
    for seq in 0u64.. {
        tick.tick().await;
        published.send_replace(seq);
        publish(seq).await?;
    }
    Ok(())
}

/// The steady window over `pid`: from the publish of the object after `SETTLE`, for `window_objects`
/// objects. Returns the first sequence number, the relay's CPU % of a core over the window and its RSS at
/// its end.
async fn steady_window(
    settings: &Settings,
    published: &mut watch::Receiver<u64>,
    relay: &mut Process,
    what: &str,
    n: usize,
) -> Result<(u64, f64, f64)> {
    tokio::time::sleep(SETTLE).await;
    let first = *published.borrow() + 1;
    let last = first + settings.window_objects();
    let bound = settings.interval * 3;
    tokio::time::timeout(bound, published.wait_for(|s| *s >= first)).await.context("publisher stalled")??;
    let (cpu0, t0) = (cpu_seconds(relay.pid())?, Instant::now());
    let perf = Perf::start(settings, relay.pid(), &format!("{what}-{n}"))?;
    let bound = settings.window + settings.interval * 3;
    tokio::time::timeout(bound, published.wait_for(|s| *s >= last)).await.context("publisher stalled")??;
    let (cpu1, t1) = (cpu_seconds(relay.pid())?, Instant::now());
    perf.stop();
    let rss_with = rss(relay.pid())?;
    relay.check_alive(what)?;
    let cpu_pct = (cpu1 - cpu0) / (t1 - t0).as_secs_f64() * 100.0;
    Ok((first, cpu_pct, rss_with))
}

/// After the window: waits up to `GRACE` for every subscriber to hold every object of the window, then counts.
async fn tally(
    settings: &Settings,
    received: &Received,
    first: u64,
    n: usize,
    cpu_pct: f64,
    rss_before: f64,
    rss_with: f64,
) -> Measured {
    let objects = settings.window_objects();
    let range = first..first + objects;
    let deadline = Instant::now() + GRACE;
    let count = |received: &Received| -> Vec<u64> {
        received.lock().unwrap().iter().map(|set| set.range(range.clone()).count() as u64).collect()
    };
    let mut got = count(received);
    while got.iter().any(|g| *g < objects) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = count(received);
    }
    let delivered: u64 = got.iter().sum();
    let expected = objects * n as u64;
    Measured {
        delivered_bps: (delivered * settings.object_bytes() as u64 * 8) as f64
            / (settings.interval * objects as u32).as_secs_f64(),
        cpu_pct,
        rss_before,
        rss_with,
        cache_growth: 0.0,
        rss_one: None,
        expected,
        missed: expected - delivered,
        lagging: got.iter().filter(|g| **g < objects).count(),
    }
}

// ---- 1. lightpath: origin and subscribers here, the relay a `lightpath node` process ---------------------

async fn mesh_fanout(n: usize, settings: &Settings) -> Result<Measured> {
    let dir = tempfile::tempdir()?;
    let ca = create_ca("lightpath fanout bench CA")?;
    let stream = StreamName::new("fanout")?;

    // Addresses: the origin's and subscribers' sockets are bound here and kept (their HTTP ports reserved);
    // the relay's are picked free and bound by the relay process.
    let origin_socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut reserved = vec![std::net::TcpListener::bind("127.0.0.1:0")?];
    let ids: Vec<String> = (0..n).map(|i| format!("edge-{i:04}")).collect();
    let mut sockets = Vec::new();
    let mut topology = String::from("[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n");
    let mut node = |id: &str, role: &str, mesh: SocketAddr, http: SocketAddr| {
        topology.push_str(&format!(
            "\n[[nodes]]\nid = \"{id}\"\nregion = \"lab\"\nroles = [\"{role}\"]\nmesh = \"{mesh}\"\nhttp = \"{http}\"\n"
        ));
    };
    node("origin", "origin", origin_socket.local_addr()?, reserved[0].local_addr()?);
    for id in &ids {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let http = std::net::TcpListener::bind("127.0.0.1:0")?;
        node(id, "edge", socket.local_addr()?, http.local_addr()?);
        sockets.push(socket);
        reserved.push(http);
    }
    // Picked last, while every other port is held, so that none of them is handed out twice.
    let (relay_mesh, relay_http) = (free_udp()?, free_tcp()?);
    node("relay", "relay", relay_mesh, relay_http);
    topology.push_str("\n[[links]]\na = \"origin\"\nb = \"relay\"\nlatency_ms = 1.0\n");
    for id in &ids {
        topology.push_str(&format!("\n[[links]]\na = \"relay\"\nb = \"{id}\"\nlatency_ms = 1.0\n"));
    }
    std::fs::write(dir.path().join("topology.toml"), &topology)?;
    let topology = Topology::parse(&topology, "fanout topology").map_err(|e| anyhow::anyhow!("{e}"))?;

    // The relay process.
    let files = issue(&ca, &NodeId::new("relay")?, 1)?;
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem)?;
    std::fs::write(dir.path().join("relay.pem"), &files.chain_pem)?;
    std::fs::write(dir.path().join("relay.key"), &files.key_pem)?;
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "node = \"relay\"\ntopology = \"topology.toml\"\n\n[tls]\nca = \"ca.pem\"\ncert = \"relay.pem\"\nkey = \"relay.key\"\n",
    )?;
    let log = dir.path().join("relay.log");
    let mut relay = Process(
        Command::new(common::bin())
            .args(["node", "--config"])
            .arg(&config)
            .env("RUST_LOG", std::env::var("FANOUT_RELAY_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting the relay")?,
    );
    let bench_cpu0 = cpu_seconds(std::process::id())?;
    let started = Instant::now();
    let result =
        mesh_fanout_with(n, settings, &ca, &topology, origin_socket, sockets, &ids, &stream, &mut relay, relay_http)
            .await;
    eprintln!(
        "lightpath N={n}: this process (origin and subscribers) used {:.0} % of a core over the run",
        (cpu_seconds(std::process::id())? - bench_cpu0) / started.elapsed().as_secs_f64() * 100.0
    );
    if let Ok(keep) = std::env::var("FANOUT_KEEP_LOGS") {
        std::fs::copy(&log, Path::new(&keep).join(format!("relay-{n}.log")))?;
    }
    if result.is_err() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("---- last lines of the relay's log ----");
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
    }
    drop(reserved);
    result
}

fn start_mesh(id: &str, ca: &CaFiles, topology: &Topology, socket: std::net::UdpSocket, cache: u64) -> Result<Mesh> {
    let id = NodeId::new(id)?;
    let files = issue(ca, &id, 1)?;
    let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
    let cache = Cache::new(cache, id.as_str());
    Mesh::start(id, topology, &identity, socket, cache, None, MeshOptions::default())
}

#[allow(clippy::too_many_arguments)]
async fn mesh_fanout_with(
    n: usize,
    settings: &Settings,
    ca: &CaFiles,
    topology: &Topology,
    origin_socket: std::net::UdpSocket,
    sockets: Vec<std::net::UdpSocket>,
    ids: &[String],
    stream: &StreamName,
    relay: &mut Process,
    relay_http: SocketAddr,
) -> Result<Measured> {
    // The relay answers on HTTP once it runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = common::client();
    while !client.get(format!("http://{relay_http}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        relay.check_alive("the relay")?;
        ensure!(Instant::now() < deadline, "the relay did not answer /healthz within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The origin, and its link to the relay.
    let origin = start_mesh("origin", ca, topology, origin_socket, lightpath::config::CacheConfig::DEFAULT_MAX_BYTES)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reports = origin.reports();
    while !reports.borrow_and_update().links.iter().any(|l| l.peer.as_str() == "relay" && l.up) {
        ensure!(Instant::now() < deadline, "the origin's link to the relay was not up within 20 s");
        let _ = tokio::time::timeout(Duration::from_millis(200), reports.changed()).await;
    }
    let ingest = Arc::new(Ingest::new(origin.clone(), IngestConfig::default(), HttpConfig::default().body_timeout()));
    let (published_tx, mut published) = watch::channel(0u64);
    let len = settings.object_bytes();
    let publisher = {
        let stream = stream.clone();
        tokio::spawn(publish_loop(settings.interval, published_tx, move |seq| {
            let (ingest, stream) = (ingest.clone(), stream.clone());
            async move {
                ingest.publish(stream, object_name(seq)?, object_body(seq, len)).await?;
                Ok(())
            }
        }))
    };

    // Before: the relay connected to the origin, the stream being published, no subscriber.
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.check_alive("the relay")?;
    let rss_before = rss(relay.pid())?;
    let cache_before = cache_mib(relay_http).await?;

    // The subscribers join, a batch at a time, each until its first object arrived.
    let received: Received = Arc::new(Mutex::new(vec![BTreeSet::new(); n]));
    let subscribers: Arc<RwLock<Vec<Mesh>>> = Arc::new(RwLock::new(Vec::new()));
    let collector = tokio::spawn(collect(subscribers.clone(), received.clone(), stream.clone()));
    let mut sockets = sockets.into_iter();
    // The first subscriber joins alone: what carrying the stream costs, the same for one subscriber or many.
    let (first_id, rest) = ids.split_first().context("at least one subscriber")?;
    let mut rss_one = None;
    for batch in std::iter::once(std::slice::from_ref(first_id)).chain(rest.chunks(JOIN_BATCH)) {
        for id in batch {
            let mesh =
                start_mesh(id, ca, topology, sockets.next().context("a socket per subscriber")?, SUBSCRIBER_CACHE)?;
            mesh.want(stream);
            subscribers.write().unwrap().push(mesh);
        }
        let joined = subscribers.read().unwrap().len();
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            let waiting = received.lock().unwrap()[..joined].iter().filter(|s| s.is_empty()).count();
            if waiting == 0 {
                break;
            }
            relay.check_alive("the relay")?;
            ensure!(
                Instant::now() < deadline,
                "{waiting} of the first {joined} subscribers received nothing within {JOIN_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if rss_one.is_none() {
            tokio::time::sleep(SETTLE).await;
            rss_one = Some((rss(relay.pid())?, cache_mib(relay_http).await?));
        }
    }

    let (first, cpu_pct, rss_with) = steady_window(settings, &mut published, relay, "lightpath", n).await?;
    let cache_with = cache_mib(relay_http).await?;
    let text = common::client().get(format!("http://{relay_http}/metrics")).send().await?.text().await?;
    let metric = |name: &str| common::metric_in(&text, name, &[]);
    eprintln!(
        "lightpath N={n}: relay totals: objects sent {}, queue drops {}, link failures {}, upstream changes {}",
        metric("lightpath_mesh_objects_sent_total"),
        metric("lightpath_mesh_queue_drops_total"),
        metric("lightpath_link_failures_total"),
        metric("lightpath_upstream_changes_total")
    );
    if let Some(set) = received.lock().unwrap().first() {
        let seqs: Vec<u64> = set.range(first..).copied().collect();
        eprintln!("lightpath N={n}: the first subscriber received {seqs:?} of {first}..");
    }
    let mut measured = tally(settings, &received, first, n, cpu_pct, rss_before, rss_with).await;
    measured.cache_growth = cache_with - cache_before;
    // The relay's cache goes on filling with the stream's live window, which is not a cost per subscriber.
    measured.rss_one = rss_one.map(|(rss, cache)| rss + (cache_with - cache));
    eprintln!("lightpath N={n}: relay cache {cache_before:.1} -> {cache_with:.1} MiB");
    publisher.abort();
    collector.abort();
    for mesh in subscribers.read().unwrap().iter() {
        mesh.close();
    }
    origin.close();
    Ok(measured)
}

/// The relay's cache bytes (`lightpath_cache_bytes` on its /metrics), MiB.
async fn cache_mib(http: SocketAddr) -> Result<f64> {
    let text = common::client().get(format!("http://{http}/metrics")).send().await?.text().await?;
    Ok(common::metric_in(&text, "lightpath_cache_bytes", &[]) / 1048576.0)
}

/// Every 50 ms, takes the objects of `stream` out of each subscriber's cache and records their sequence
/// numbers.
async fn collect(subscribers: Arc<RwLock<Vec<Mesh>>>, received: Received, stream: StreamName) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let subscribers = subscribers.read().unwrap().clone();
        for (i, mesh) in subscribers.iter().enumerate() {
            for object in mesh.cache().window(&stream) {
                if let Some(seq) = seq_of(&object.header.name) {
                    if object.body.len() >= 8 && object.body[..8] == seq.to_le_bytes() {
                        received.lock().unwrap()[i].insert(seq);
                    }
                }
                mesh.cache().remove(&stream, &object.header.name);
            }
        }
    }
}

// ---- 2. the raw quinn floor --------------------------------------------------------------------------------

/// A quinn endpoint on a fresh 127.0.0.1 socket with the mesh's TLS (mutual) and transport config; a server
/// too when `server`.
fn raw_endpoint(identity: &Identity, server: bool) -> Result<quinn::Endpoint> {
    let server_config = if server {
        Some(lightpath::quic::server_config(
            identity,
            Arc::new(transport(lightpath::config::QuicConfig::default().max_object_streams)),
        )?)
    } else {
        None
    };
    let client_config = lightpath::quic::client_config(
        identity,
        Arc::new(transport(lightpath::config::QuicConfig::default().max_object_streams)),
    )?;
    let runtime = quinn::default_runtime().context("no runtime")?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), server_config, socket, runtime)?;
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

fn raw_identity(ca: &CaFiles, id: &str) -> Result<Identity> {
    let files = issue(ca, &NodeId::new(id)?, 1)?;
    Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)
}

/// The raw relay helper process: prints its address, takes the first connection as the publisher's, every
/// later one as a client's, and writes each object the publisher sends (one unidirectional stream each, read
/// whole) to every client on a unidirectional stream of its own.
fn raw_relay_main(dir: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let identity = Identity::load(&dir.join("ca.pem"), &dir.join("raw-relay.pem"), &dir.join("raw-relay.key"))?;
        let endpoint = raw_endpoint(&identity, true)?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", endpoint.local_addr()?)?;
            out.flush()?;
        }
        let publisher = endpoint.accept().await.context("no publisher")?.await?;
        let clients: Arc<RwLock<Vec<quinn::Connection>>> = Arc::new(RwLock::new(Vec::new()));
        let accepting = {
            let clients = clients.clone();
            tokio::spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    let clients = clients.clone();
                    tokio::spawn(async move {
                        if let Ok(conn) = incoming.await {
                            clients.write().unwrap().push(conn);
                        }
                    });
                }
            })
        };
        while let Ok(mut recv) = publisher.accept_uni().await {
            let clients = clients.clone();
            tokio::spawn(async move {
                let body = Bytes::from(recv.read_to_end(64 << 20).await?);
                let to: Vec<quinn::Connection> = clients.read().unwrap().clone();
                for conn in to {
                    let body = body.clone();
                    tokio::spawn(async move {
                        let mut send = conn.open_uni().await?;
                        send.write_chunk(body).await?;
                        send.finish()?;
                        anyhow::Ok(())
                    });
                }
                anyhow::Ok(())
            });
        }
        accepting.abort();
        anyhow::Ok(())
    })
}

async fn raw_fanout(n: usize, settings: &Settings) -> Result<Measured> {
    let dir = tempfile::tempdir()?;
    let ca = create_ca("lightpath fanout raw CA")?;
    let files = issue(&ca, &NodeId::new("raw-relay")?, 1)?;
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem)?;
    std::fs::write(dir.path().join("raw-relay.pem"), &files.chain_pem)?;
    std::fs::write(dir.path().join("raw-relay.key"), &files.key_pem)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg(RAW_RELAY_ARG)
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the raw relay")?;
    let stdout = child.stdout.take().context("raw relay stdout")?;
    let mut relay = Process(child);
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
        }),
    )
    .await
    .context("the raw relay did not start within 20 s")???;
    let addr: SocketAddr = line.trim().parse().with_context(|| format!("raw relay said {line:?}"))?;

    // The publisher first: the raw relay takes the first connection as the publisher's.
    let publisher_endpoint = raw_endpoint(&raw_identity(&ca, "raw-publisher")?, false)?;
    let publisher = publisher_endpoint.connect(addr, "raw-relay")?.await.context("raw publisher connect")?;
    let (published_tx, mut published) = watch::channel(0u64);
    let len = settings.object_bytes();
    let publishing = {
        let publisher = publisher.clone();
        tokio::spawn(publish_loop(settings.interval, published_tx, move |seq| {
            let conn = publisher.clone();
            async move {
                // Not awaited here, as the origin's ingest hands an object to the mesh and returns.
                tokio::spawn(async move {
                    let mut send = conn.open_uni().await?;
                    send.write_chunk(object_body(seq, len)).await?;
                    send.finish()?;
                    anyhow::Ok(())
                });
                Ok(())
            }
        }))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.check_alive("the raw relay")?;
    let rss_before = rss(relay.pid())?;

    let client_identity = raw_identity(&ca, "raw-client")?;
    let received: Received = Arc::new(Mutex::new(vec![BTreeSet::new(); n]));
    let mut endpoints = Vec::new();
    let mut readers = Vec::new();
    for batch in (0..n).collect::<Vec<_>>().chunks(JOIN_BATCH) {
        let mut connecting = Vec::new();
        for _ in batch {
            let endpoint = raw_endpoint(&client_identity, false)?;
            connecting.push(endpoint.connect(addr, "raw-relay")?);
            endpoints.push(endpoint);
        }
        for (i, conn) in batch.iter().zip(connecting) {
            let mut conn = tokio::time::timeout(Duration::from_secs(20), conn).await.context("raw client connect")?;
            // A handshake lost while the machine is loaded is tried again once, as a node's dial loop would.
            if let Err(quinn::ConnectionError::TimedOut) = conn {
                eprintln!("raw client {i}: the handshake timed out; connecting again");
                let endpoint = raw_endpoint(&client_identity, false)?;
                let connecting = endpoint.connect(addr, "raw-relay")?;
                endpoints.push(endpoint);
                conn = tokio::time::timeout(Duration::from_secs(20), connecting)
                    .await
                    .context("raw client connect, second try")?;
            }
            let conn = conn.with_context(|| format!("raw client {i} connect"))?;
            readers.push(tokio::spawn(raw_client(conn, received.clone(), *i)));
        }
    }
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let waiting = received.lock().unwrap().iter().filter(|s| s.is_empty()).count();
        if waiting == 0 {
            break;
        }
        relay.check_alive("the raw relay")?;
        ensure!(Instant::now() < deadline, "{waiting} of {n} raw clients received nothing within {JOIN_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (first, cpu_pct, rss_with) = steady_window(settings, &mut published, &mut relay, "raw", n).await?;
    let measured = tally(settings, &received, first, n, cpu_pct, rss_before, rss_with).await;
    publishing.abort();
    for reader in readers {
        reader.abort();
    }
    for endpoint in endpoints.iter().chain([&publisher_endpoint]) {
        endpoint.close(0u32.into(), b"done");
    }
    Ok(measured)
}

/// A raw client: reads every unidirectional stream whole and records the object's sequence number.
async fn raw_client(conn: quinn::Connection, received: Received, i: usize) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let received = received.clone();
        tokio::spawn(async move {
            if let Ok(body) = recv.read_to_end(64 << 20).await {
                if body.len() >= 8 {
                    let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                    received.lock().unwrap()[i].insert(seq);
                }
            }
        });
    }
}
