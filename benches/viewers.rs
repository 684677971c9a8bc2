//! Many HLS viewers of one live stream at one edge, against nginx serving the same files; and a soak with
//! churn. Real processes on loopback.
//!
//! Both modes start a lightpath origin and edge (`lightpath node`, release build, linked on 127.0.126.x)
//! and a publisher thread that, every 2 s, PUTs a new segment (500,000 bytes, distinct per segment: 2 Mbit/s)
//! and then the updated playlist (the last 6 segments) into the origin, and writes the same two files (to a
//! temporary name, then renamed) into the document root of an nginx.
//!
//! The load generator is in this file: each simulated viewer behaves like an HLS player on one HTTP/1.1
//! keep-alive connection (a raw client on a tokio `TcpStream`): it joins at the newest segment, polls the
//! playlist every target duration (2 s) and GETs each segment that is new since its last poll once, in
//! order. Viewers connect from `SOURCES` addresses, 127.0.127.10 onwards (bound before connect), so that
//! each address holds fewer connections than the node's `http.max_connections_per_address` (256). The
//! generator keeps itself cheap: playlists are read, segment bodies are counted and discarded in the kernel
//! (`recv` with `MSG_TRUNC`, so the client never copies them). A request fails on a connection failure, a
//! status other than 200, a reply without `Content-Length`, the server closing the connection, or a timeout
//! (5 s for a playlist, 10 s for a segment); the viewer then reconnects after 1 s. A segment that left the
//! playlist before the viewer got to it counts as skipped.
//!
//! - `compare` (the default): `VIEWERS` (10,000) viewers join over `RAMP_S` (10 s), then after 4 s the
//!   measurement window of `DURATION_S` (60 s) runs; first against the lightpath edge, then against nginx.
//!   For each server: requests and errors over the whole run, the bytes the viewers received over the window
//!   (Gbit/s), the server's CPU (utime + stime from `/proc/PID/stat`, nginx's master and workers summed)
//!   over the window, its resident memory (`VmRSS`) before the viewers joined and at its peak (sampled every
//!   500 ms), CPU (% of one core) per delivered Gbit/s and memory per viewer ((peak - idle) / viewers).
//!   nginx runs with `worker_processes` `NGINX_WORKERS` (`auto`, which is 2 here), `worker_connections`
//!   20,000 and `worker_rlimit_nofile` 20,000, `sendfile`, `tcp_nopush`, `tcp_nodelay`, no access log.
//! - `soak`: `VIEWERS` (1,000) viewers at the edge, each leaving after a random 10-60 s and replaced at once
//!   by a new viewer on a new connection, for `SOAK_S` (3,600 s). The nodes' cache is bounded at
//!   `SOAK_CACHE_MIB` (16 MiB, filled in about 70 s at 2 Mbit/s), so that it is full before the warm-up ends:
//!   at the default bound (256 MiB) the cache alone grows the edge's memory for 17 minutes, which is not a
//!   leak. The edge's resident memory, heap in use (`lightpath_heap_allocated_bytes`), open descriptors and
//!   cached bytes (`lightpath_cache_bytes`) are sampled every 10 s. Reports the RSS after warm-up (the first
//!   sample at or after 300 s or a sixth of the run, whichever is sooner), at the end, the largest after
//!   warm-up, the change, and errors. Target: RSS within 5 % of the warm-up figure, 0 errors.
//!
//! Run: `cargo bench --bench viewers` (about 4 minutes after the build), `cargo bench --bench viewers --
//! soak` (an hour; `SOAK_S=600` for ten minutes). `LIGHTPATH_BIN=/path/to/lightpath` runs the nodes from
//! another build; `NGINX` names the nginx binary (`/usr/sbin/nginx`). The generator raises its own soft
//! open-file limit to the hard limit; it needs one descriptor per viewer.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{Cluster, NodeSpec, KEY};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The stream every viewer watches (one of the keys `tests/common` configures).
const STREAM: &str = "s";
/// Segment duration and the playlist's target duration.
const SEGMENT_S: u64 = 2;
/// Segments the playlist lists.
const WINDOW: u64 = 6;
/// Segments kept in nginx's document root (the playlist's window and a few more for late viewers).
const KEEP_ON_DISK: u64 = WINDOW + 6;
const PLAYLIST_TIMEOUT: Duration = Duration::from_secs(5);
const SEGMENT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest reply head the client accepts.
const MAX_HEAD: usize = 16 * 1024;
/// Between the last viewer's join and the measurement window.
const SETTLE: Duration = Duration::from_secs(4);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    let mode = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_else(|| "compare".into());
    let nofile = raise_fd_limit()?;
    // The nodes log at warn unless told otherwise: ten thousand viewers should not fill a log at info.
    if std::env::var_os("LIGHTPATH_TEST_LOG").is_none() {
        std::env::set_var("LIGHTPATH_TEST_LOG", "warn");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("nodes from {}; the generator's open-file limit {nofile}", common::bin());
    match mode.as_str() {
        "compare" => rt.block_on(compare()),
        "soak" => rt.block_on(soak()),
        other => bail!("unknown mode {other:?}: compare or soak"),
    }
}

/// Raises this process's soft open-file limit to its hard limit; returns the new soft limit.
fn raise_fd_limit() -> Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })?;
    Ok(limit.maximum.unwrap_or(u64::MAX))
}

// ---- the servers ------------------------------------------------------------------------------------------

/// An origin and an edge, linked, with the publisher's stream key; `extra_config` goes into both configs.
async fn lightpath(extra_config: &str) -> Result<Cluster> {
    let mut cluster = Cluster::new(
        126,
        &[NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "edge", roles: &["edge"] }],
        &[("origin", "edge", 1.0)],
        extra_config,
    );
    cluster.start_all();
    cluster.wait_healthy().await;
    Ok(cluster)
}

/// An nginx serving `root` on its own prefix; stopped (master and workers) when dropped.
struct Nginx {
    master: Child,
    addr: SocketAddr,
    workers: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(root: &Path, workers: &str) -> Result<Self> {
        let bin = std::env::var("NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.126.50:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.126.50:{port}").parse()?;
        let prefix = dir.path();
        std::fs::create_dir_all(prefix.join("tmp"))?;
        let conf = format!(
            "daemon off;\nworker_processes {workers};\nworker_rlimit_nofile 20000;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log warn;\nevents {{\n    worker_connections 20000;\n}}\nhttp {{\n    \
             types {{\n        application/vnd.apple.mpegurl m3u8;\n        video/mp2t ts;\n    }}\n    \
             default_type application/octet-stream;\n    access_log off;\n    sendfile on;\n    tcp_nopush on;\n    \
             tcp_nodelay on;\n    keepalive_timeout 65;\n    keepalive_requests 1000000;\n    \
             client_body_temp_path {p}/tmp/body;\n    proxy_temp_path {p}/tmp/proxy;\n    \
             fastcgi_temp_path {p}/tmp/fastcgi;\n    uwsgi_temp_path {p}/tmp/uwsgi;\n    \
             scgi_temp_path {p}/tmp/scgi;\n    server {{\n        listen {addr} reuseport backlog=4096;\n        \
             root {root};\n    }}\n}}\n",
            p = prefix.display(),
            root = root.display(),
        );
        std::fs::write(prefix.join("nginx.conf"), conf)?;
        let master = Command::new(&bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        Ok(Self { master, addr, workers: workers.to_owned(), _dir: dir })
    }

    /// The master and its workers.
    fn pids(&self) -> Vec<u32> {
        let master = self.master.id();
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            if proc_stat(pid).is_some_and(|s| s.ppid == master) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let workers = self.pids();
        // SIGTERM: the master stops its workers, then exits.
        // SAFETY: kill(2) on a process this struct started; no memory is involved.
        unsafe { libc::kill(self.master.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.master.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
        for pid in workers.into_iter().skip(1) {
            if proc_stat(pid).is_some() {
                // SAFETY: as above; these were the master's workers a moment ago.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

// ---- /proc ------------------------------------------------------------------------------------------------

struct ProcStat {
    ppid: u32,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is field 3.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat { ppid: field(4)? as u32, cpu_ticks: field(14)? + field(15)? })
}

/// CPU seconds used so far by `pids`.
fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids.iter().filter_map(|p| proc_stat(*p)).map(|s| s.cpu_ticks).sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// Resident memory of `pids` together, in MiB.
fn rss_mib(pids: &[u32]) -> f64 {
    status_mib(pids, "VmRSS:")
}

/// One memory field of `/proc/PID/status` (`VmRSS:`, `RssAnon:`...) summed over `pids`, in MiB.
fn status_mib(pids: &[u32], field: &str) -> f64 {
    pids.iter().filter_map(|&pid| common::status_mib(pid, field)).sum()
}

/// Open descriptors of `pids` together.
fn open_fds(pids: &[u32]) -> usize {
    pids.iter().map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).map_or(0, |d| d.count())).sum()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// Seconds since the sampler started, resident MiB and open descriptors of the sampled processes.
type Sample = (f64, f64, usize);

/// Samples the resident memory and descriptors of some processes on its own thread until stopped.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pids: Vec<u32>, every: Duration) -> Self {
        let (samples, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (into, stopped) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut next = started;
            while !stopped.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    let sample = (started.elapsed().as_secs_f64(), rss_mib(&pids), open_fds(&pids));
                    into.lock().unwrap().push(sample);
                    next += every;
                }
                std::thread::sleep(Duration::from_millis(50).min(every));
            }
        });
        Self { samples, stop, thread }
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let samples = self.samples.lock().unwrap();
        samples.clone()
    }
}

// ---- the publisher ----------------------------------------------------------------------------------------

fn playlist(last: u64) -> String {
    let first = last.saturating_sub(WINDOW - 1);
    let mut p =
        format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SEGMENT_S}\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for i in first..=last {
        p.push_str(&format!("#EXTINF:{SEGMENT_S}.000,\nseg{i}.ts\n"));
    }
    p
}

/// A segment's bytes: distinct per segment, so nothing is shared or deduplicated along the way.
fn segment(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u64).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

/// Writes `bytes` to `dir/name` through a temporary name, so nginx never serves half a file.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, dir.join(name))
}

/// What the publisher did.
#[derive(Default)]
struct Published {
    segments: AtomicU64,
    failures: AtomicU64,
    /// The slowest round (PUT segment, PUT playlist, both files written), in µs.
    slowest_us: AtomicU64,
}

/// Publishes a segment and the playlist every [`SEGMENT_S`] into the origin and `root`, on its own thread
/// (so that the viewers' load does not delay it), until stopped.
struct Publisher {
    stop: Arc<AtomicBool>,
    published: Arc<Published>,
    thread: std::thread::JoinHandle<()>,
}

impl Publisher {
    fn start(origin: SocketAddr, root: PathBuf, segment_bytes: usize) -> Self {
        let (stop, published) = (Arc::new(AtomicBool::new(false)), Arc::new(Published::default()));
        let (stopped, counts) = (stop.clone(), published.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                let mut tick = tokio::time::interval(Duration::from_secs(SEGMENT_S));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = 0u64;
                while !stopped.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let started = Instant::now();
                    let (name, body, list) = (format!("seg{i}.ts"), segment(i, segment_bytes), playlist(i));
                    let mut ok = write_atomically(&root, &name, &body).is_ok();
                    for (name, body) in [(name.as_str(), body), ("index.m3u8", list.clone().into_bytes())] {
                        let put = client
                            .put(format!("http://{origin}/live/{STREAM}/{name}"))
                            .bearer_auth(KEY)
                            .body(body)
                            .send()
                            .await;
                        ok &= put.is_ok_and(|r| r.status().is_success());
                    }
                    ok &= write_atomically(&root, "index.m3u8", list.as_bytes()).is_ok();
                    if let Some(old) = i.checked_sub(KEEP_ON_DISK) {
                        let _ = std::fs::remove_file(root.join(format!("seg{old}.ts")));
                    }
                    counts.segments.fetch_add(1, Ordering::Relaxed);
                    counts.failures.fetch_add(u64::from(!ok), Ordering::Relaxed);
                    counts.slowest_us.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    i += 1;
                }
            });
        });
        Self { stop, published, thread }
    }

    fn stop(self) -> Arc<Published> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.published
    }
}

// ---- the viewers ------------------------------------------------------------------------------------------

/// Why a request failed.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Connect,
    Timeout,
    Status,
    Closed,
    Protocol,
}

impl Failure {
    const ALL: [Failure; 5] = [Failure::Connect, Failure::Timeout, Failure::Status, Failure::Closed, Failure::Protocol];

    fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Status => "status",
            Failure::Closed => "closed",
            Failure::Protocol => "protocol",
        }
    }
}

/// Latencies in 8 buckets per doubling, from 1 µs to over an hour.
struct Histogram([AtomicU64; 256]);

impl Histogram {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn record(&self, took: Duration) {
        let us = took.as_micros().max(1) as f64;
        let bucket = ((us.log2() * 8.0) as usize).min(self.0.len() - 1);
        self.0[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper edge of the bucket that holds quantile `q`, in ms.
    fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want && total > 0 {
                return 2f64.powf((i + 1) as f64 / 8.0) / 1000.0;
            }
        }
        f64::NAN
    }
}

/// What every viewer of a run counts.
struct Stats {
    playlists: AtomicU64,
    segments: AtomicU64,
    /// Bytes received, heads and bodies.
    bytes: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
    /// Segments that left the playlist before a viewer fetched them.
    skipped: AtomicU64,
    connections: AtomicU64,
    viewers_joined: AtomicU64,
    segment_latency: Histogram,
}

impl Stats {
    fn new() -> Self {
        Self {
            playlists: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
            skipped: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            viewers_joined: AtomicU64::new(0),
            segment_latency: Histogram::new(),
        }
    }

    fn fail(&self, why: Failure) {
        self.failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn errors(&self) -> u64 {
        self.failures.iter().map(|f| f.load(Ordering::Relaxed)).sum()
    }

    fn requests(&self) -> u64 {
        self.playlists.load(Ordering::Relaxed) + self.segments.load(Ordering::Relaxed)
    }

    fn error_detail(&self) -> String {
        let parts: Vec<String> = Failure::ALL
            .iter()
            .map(|f| (f.name(), self.failures[*f as usize].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Where discarded segment bytes "go": `recv` with `MSG_TRUNC` on a TCP socket drops them in the kernel
/// and writes nothing here. Read-only memory, so a kernel that did write would fail the call (EFAULT)
/// instead of touching anything.
static DISCARD: [u8; 1 << 20] = [0; 1 << 20];

/// Drops the next `n` bytes of `tcp` without copying them.
async fn discard(tcp: &TcpStream, mut n: usize, stats: &Stats) -> Result<(), Failure> {
    while n > 0 {
        tcp.readable().await.map_err(|_| Failure::Closed)?;
        let got = tcp.try_io(tokio::io::Interest::READABLE, || {
            // SAFETY: with MSG_TRUNC, recv on a TCP socket discards up to `len` bytes and does not write
            // to the buffer; the buffer is valid for `len` bytes in any case.
            let got = unsafe {
                libc::recv(
                    tcp.as_raw_fd(),
                    DISCARD.as_ptr() as *mut libc::c_void,
                    n.min(DISCARD.len()),
                    libc::MSG_TRUNC,
                )
            };
            if got < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(got as usize)
            }
        });
        match got {
            Ok(0) => return Err(Failure::Closed),
            Ok(got) => {
                n -= got.min(n);
                stats.bytes.fetch_add(got as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Failure::Closed),
        }
    }
    Ok(())
}

/// One GET on a keep-alive connection: the body when `keep`, else it is discarded.
async fn get(tcp: &mut TcpStream, path: &str, keep: bool, stats: &Stats) -> Result<Vec<u8>, Failure> {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: viewer\r\nUser-Agent: viewers-bench\r\n\r\n").as_bytes())
        .await
        .map_err(|_| Failure::Closed)?;
    let mut head = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() >= MAX_HEAD {
            return Err(Failure::Protocol);
        }
        if head.capacity() == head.len() {
            head.reserve(4096);
        }
        match tcp.read_buf(&mut head).await {
            Ok(0) | Err(_) => return Err(Failure::Closed),
            Ok(n) => stats.bytes.fetch_add(n as u64, Ordering::Relaxed),
        };
    };
    let text = std::str::from_utf8(&head[..head_end]).map_err(|_| Failure::Protocol)?;
    let ok = text.get(9..12).ok_or(Failure::Protocol)? == "200";
    let length: usize = text
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or(Failure::Protocol)?;
    let have = head.len() - head_end;
    if have > length {
        return Err(Failure::Protocol); // nothing was pipelined: the server sent more than it framed
    }
    let mut body = Vec::new();
    if keep {
        body = head.split_off(head_end);
        body.resize(length, 0);
        tcp.read_exact(&mut body[have..]).await.map_err(|_| Failure::Closed)?;
        stats.bytes.fetch_add((length - have) as u64, Ordering::Relaxed);
    } else {
        drop(head);
        discard(tcp, length - have, stats).await?;
    }
    if !ok {
        return Err(Failure::Status);
    }
    Ok(body)
}

async fn connect(from: IpAddr, to: SocketAddr) -> Result<TcpStream, Failure> {
    let socket = TcpSocket::new_v4().map_err(|_| Failure::Connect)?;
    socket.bind(SocketAddr::new(from, 0)).map_err(|_| Failure::Connect)?;
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(to)).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(_)) => Err(Failure::Connect),
        Err(_) => Err(Failure::Timeout),
    }
}

/// The media sequence number of a playlist's first segment and its segments' names.
fn parse_playlist(text: &str) -> Option<(u64, Vec<&str>)> {
    let first = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?.trim().parse().ok()?;
    Some((first, text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect()))
}

/// One viewer from its join until `leave`: polls the playlist every target duration and GETs every
/// segment new since its last poll, once, on one connection (reopened after a failure).
async fn viewer(from: IpAddr, server: SocketAddr, leave: Instant, stats: Arc<Stats>) {
    stats.viewers_joined.fetch_add(1, Ordering::Relaxed);
    let playlist_path = format!("/live/{STREAM}/index.m3u8");
    let poll = Duration::from_secs(SEGMENT_S);
    let mut tcp: Option<TcpStream> = None;
    let mut fetched: Option<u64> = None;
    let mut next_poll = Instant::now();
    loop {
        let now = Instant::now();
        if now >= leave {
            return;
        }
        if next_poll > now {
            tokio::time::sleep_until(next_poll.min(leave).into()).await;
            continue;
        }
        next_poll += poll;
        let conn = match tcp.as_mut() {
            Some(conn) => conn,
            None => match connect(from, server).await {
                Ok(conn) => {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    tcp.insert(conn)
                }
                Err(why) => {
                    stats.fail(why);
                    next_poll = Instant::now() + RETRY_AFTER;
                    continue;
                }
            },
        };
        let listed = match tokio::time::timeout(PLAYLIST_TIMEOUT, get(conn, &playlist_path, true, &stats)).await {
            Ok(Ok(body)) => body,
            Ok(Err(why)) => {
                stats.fail(why);
                (tcp, next_poll) = (None, Instant::now() + RETRY_AFTER);
                continue;
            }
            Err(_) => {
                stats.fail(Failure::Timeout);
                (tcp, next_poll) = (None, Instant::now() + RETRY_AFTER);
                continue;
            }
        };
        stats.playlists.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&listed);
        let Some((first, names)) = parse_playlist(&text) else {
            stats.fail(Failure::Protocol);
            continue;
        };
        let last = first + names.len() as u64;
        // A new viewer starts at the newest segment; then every segment after the last one fetched.
        let from_seq = match fetched {
            None => last.saturating_sub(1),
            Some(done) => {
                if done + 1 < first {
                    stats.skipped.fetch_add(first - done - 1, Ordering::Relaxed);
                }
                (done + 1).max(first)
            }
        };
        for seq in from_seq..last {
            if Instant::now() >= leave {
                return;
            }
            let path = format!("/live/{STREAM}/{}", names[(seq - first) as usize].trim());
            let started = Instant::now();
            match tokio::time::timeout(SEGMENT_TIMEOUT, get(conn, &path, false, &stats)).await {
                Ok(Ok(_)) => {
                    stats.segments.fetch_add(1, Ordering::Relaxed);
                    stats.segment_latency.record(started.elapsed());
                    fetched = Some(seq);
                }
                Ok(Err(why)) => {
                    stats.fail(why);
                    (tcp, next_poll) = (None, Instant::now() + RETRY_AFTER);
                    break;
                }
                Err(_) => {
                    stats.fail(Failure::Timeout);
                    (tcp, next_poll) = (None, Instant::now() + RETRY_AFTER);
                    break;
                }
            }
        }
    }
}

/// The most source addresses: 127.0.127.10 to 127.0.127.249.
const MAX_SOURCES: usize = 240;

/// The address viewer `i` connects from: `sources` addresses from 127.0.127.10, viewers spread evenly.
fn source(i: usize, sources: usize) -> IpAddr {
    IpAddr::from([127, 0, 127, (10 + i % sources.clamp(1, MAX_SOURCES)) as u8])
}

// ---- compare ----------------------------------------------------------------------------------------------

/// One server's figures under the viewer load.
struct Run {
    server: String,
    viewers: u64,
    window_s: f64,
    stats: Arc<Stats>,
    window_bytes: u64,
    cpu_s: f64,
    rss_idle: f64,
    rss_peak: f64,
    fds_peak: usize,
    generator_cpu_s: f64,
}

impl Run {
    fn gbits(&self) -> f64 {
        self.window_bytes as f64 * 8.0 / self.window_s / 1e9
    }

    fn cpu_percent(&self) -> f64 {
        self.cpu_s / self.window_s * 100.0
    }

    fn cpu_per_gbit(&self) -> f64 {
        self.cpu_percent() / self.gbits()
    }

    fn kib_per_viewer(&self) -> f64 {
        (self.rss_peak - self.rss_idle) * 1024.0 / self.viewers as f64
    }
}

/// `viewers` viewers of `server` (processes `pids`): they join over `ramp`, the window of `window` starts
/// [`SETTLE`] after the last join, and everyone leaves at its end.
async fn load(server_name: &str, server: SocketAddr, pids: Vec<u32>, viewers: usize, sources: usize) -> Run {
    let ramp = Duration::from_secs(env_u64("RAMP_S", 10));
    let window = Duration::from_secs(env_u64("DURATION_S", 60));
    let stats = Arc::new(Stats::new());
    let rss_idle = rss_mib(&pids);
    let sampler = Sampler::start(pids.clone(), Duration::from_millis(500));
    let start = Instant::now();
    let window_start = start + ramp + SETTLE;
    let end = window_start + window;
    let mut tasks = Vec::with_capacity(viewers);
    for i in 0..viewers {
        let join = start + ramp.mul_f64(i as f64 / viewers as f64);
        let stats = stats.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(join.into()).await;
            viewer(source(i, sources), server, end, stats).await;
        }));
    }
    tokio::time::sleep_until(window_start.into()).await;
    let (bytes_before, cpu_before, own_before) =
        (stats.bytes.load(Ordering::Relaxed), cpu_seconds(&pids), cpu_seconds(&[std::process::id()]));
    tokio::time::sleep_until(end.into()).await;
    let (bytes_after, cpu_after, own_after) =
        (stats.bytes.load(Ordering::Relaxed), cpu_seconds(&pids), cpu_seconds(&[std::process::id()]));
    let window_s = window.as_secs_f64();
    // Everyone leaves at `end`; a request in flight then finishes or times out.
    for task in tasks {
        let _ = task.await;
    }
    let samples = sampler.stop();
    Run {
        server: server_name.to_owned(),
        viewers: viewers as u64,
        window_s,
        window_bytes: bytes_after - bytes_before,
        cpu_s: cpu_after - cpu_before,
        rss_idle,
        rss_peak: samples.iter().map(|s| s.1).fold(rss_idle, f64::max),
        fds_peak: samples.iter().map(|s| s.2).max().unwrap_or(0),
        generator_cpu_s: own_after - own_before,
        stats,
    }
}

async fn wait_200(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::client().get(url).send().await.is_ok_and(|r| r.status().is_success()) {
        if Instant::now() > deadline {
            bail!("{url} never answered 200");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Makes `path` and the folders above it up to `/tmp`-like roots readable by nginx's workers (which run
/// as nobody when nginx starts as root).
fn open_to_all(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in path.ancestors().take_while(|d| d.starts_with(std::env::temp_dir())) {
        if dir != std::env::temp_dir() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// The publisher's folder for nginx, the nodes and nginx, started and serving the stream.
struct Setup {
    cluster: Cluster,
    _www: tempfile::TempDir,
    root: PathBuf,
    publisher: Publisher,
}

async fn setup(extra_config: &str) -> Result<Setup> {
    let cluster = lightpath(extra_config).await?;
    let www = tempfile::tempdir()?;
    let root = www.path().join("live").join(STREAM);
    std::fs::create_dir_all(&root)?;
    open_to_all(&root)?;
    let segment_bytes = env_u64("SEGMENT_BYTES", 500_000) as usize;
    let publisher = Publisher::start(cluster.http("origin"), root.clone(), segment_bytes);
    // The edge subscribes at the first GET, as it would for a first viewer; then a few segments go by.
    wait_200(&format!("http://{}/live/{STREAM}/index.m3u8", cluster.http("edge"))).await?;
    tokio::time::sleep(Duration::from_secs(3 * SEGMENT_S)).await;
    Ok(Setup { cluster, _www: www, root, publisher })
}

/// The soft open-file limit of process `pid`, from `/proc/PID/limits`.
fn fd_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok()
}

/// The edge's connection cap: the default `http.max_connections`, held under its open-file limit the way
/// the node computes it (`lightpath::http::admission::connection_cap`).
fn edge_cap(pid: u32) -> String {
    let http = lightpath::config::HttpConfig::default();
    match fd_limit(pid) {
        Some(limit) => {
            let cap = lightpath::http::admission::connection_cap(
                http.max_connections,
                http.reserved_fds,
                limit,
                lightpath::cache::sealed::fd_budget(limit, lightpath::config::CacheConfig::default().max_bytes),
            );
            format!(
                "the edge's open-file limit {limit}: it holds at most {cap} connections, {} per address",
                http.max_connections_per_address.min(cap)
            )
        }
        None => "the edge's open-file limit is unknown".into(),
    }
}

async fn compare() -> Result<()> {
    let viewers = env_u64("VIEWERS", 10_000) as usize;
    let sources = env_u64("SOURCES", 50) as usize;
    let workers = std::env::var("NGINX_WORKERS").unwrap_or_else(|_| "auto".into());
    let setup = setup("").await?;
    let www = setup.root.ancestors().nth(2).context("the document root")?.to_owned();
    let nginx = Nginx::start(&www, &workers)?;
    wait_200(&format!("http://{}/live/{STREAM}/index.m3u8", nginx.addr)).await?;
    let edge_pid = setup.cluster.pid("edge").context("the edge runs")?;
    println!(
        "{viewers} viewers from {sources} addresses ({} per address), joining over {} s; window {} s; segments \
         of {} bytes every {SEGMENT_S} s; nginx worker_processes {}; {} cores; load average {}",
        viewers.div_ceil(sources),
        env_u64("RAMP_S", 10),
        env_u64("DURATION_S", 60),
        env_u64("SEGMENT_BYTES", 500_000),
        nginx.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!("{}", edge_cap(edge_pid));
    let mut runs = Vec::new();
    runs.push(load("lightpath edge", setup.cluster.http("edge"), vec![edge_pid], viewers, sources).await);
    println!("load average after lightpath: {}", load_average());
    // The lightpath viewers' connections close; let the kernel's TIME_WAIT and the load settle a moment.
    tokio::time::sleep(Duration::from_secs(5)).await;
    runs.push(load(&format!("nginx ({})", nginx.workers), nginx.addr, nginx.pids(), viewers, sources).await);
    println!("load average after nginx: {}", load_average());
    let published = setup.publisher.stop();
    drop(nginx);

    println!(
        "\npublisher: {} rounds, {} failed, slowest {:.1} ms",
        published.segments.load(Ordering::Relaxed),
        published.failures.load(Ordering::Relaxed),
        published.slowest_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    println!(
        "\n| server | viewers | requests (segments + playlists) | errors | skipped | Gbit/s | server CPU | CPU per \
         Gbit/s | RSS idle -> peak | per viewer | peak fds | segment p50 / p99 | generator CPU |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for run in &runs {
        let s = &run.stats;
        println!(
            "| {} | {} | {} ({} + {}) | {} | {} | {:.3} | {:.1} % | {:.1} % | {:.1} -> {:.1} MiB | {:.1} KiB | {} | \
             {:.1} / {:.1} ms | {:.1} % |",
            run.server,
            s.viewers_joined.load(Ordering::Relaxed),
            s.requests(),
            s.segments.load(Ordering::Relaxed),
            s.playlists.load(Ordering::Relaxed),
            s.error_detail(),
            s.skipped.load(Ordering::Relaxed),
            run.gbits(),
            run.cpu_percent(),
            run.cpu_per_gbit(),
            run.rss_idle,
            run.rss_peak,
            run.kib_per_viewer(),
            run.fds_peak,
            s.segment_latency.quantile_ms(0.5),
            s.segment_latency.quantile_ms(0.99),
            run.generator_cpu_s / run.window_s * 100.0,
        );
    }
    let (lp, ng) = (&runs[0], &runs[1]);
    println!(
        "\nlightpath / nginx: delivered {:.2}x, CPU per Gbit/s {:.2}x, memory per viewer {:.2}x; connections \
         opened {} / {}",
        lp.gbits() / ng.gbits(),
        lp.cpu_per_gbit() / ng.cpu_per_gbit(),
        lp.kib_per_viewer() / ng.kib_per_viewer(),
        lp.stats.connections.load(Ordering::Relaxed),
        ng.stats.connections.load(Ordering::Relaxed),
    );
    Ok(())
}

// ---- soak -------------------------------------------------------------------------------------------------

/// One soak sample: seconds since the start, the edge's resident MiB (all, and its heap and other
/// anonymous memory), its heap's MiB in use (`lightpath_heap_allocated_bytes`: 0 from a binary without it),
/// open descriptors and cached MiB.
struct SoakSample {
    at: f64,
    rss: f64,
    anon: f64,
    heap: f64,
    fds: usize,
    cached: f64,
}

async fn soak() -> Result<()> {
    let viewers = env_u64("VIEWERS", 1_000) as usize;
    let sources = env_u64("SOURCES", 50) as usize;
    let run = Duration::from_secs(env_u64("SOAK_S", 3_600));
    let cache_mib = env_u64("SOAK_CACHE_MIB", 16);
    let sample_every = Duration::from_secs(10);
    let warm_up = Duration::from_secs(300).min(run / 6);
    let setup = setup(&format!("[cache]\nmax_bytes = {}\n", cache_mib << 20)).await?;
    let edge = setup.cluster.http("edge");
    let edge_pid = setup.cluster.pid("edge").context("the edge runs")?;
    println!(
        "soak: {viewers} viewers from {sources} addresses, each leaving after 10-60 s and replaced at once, for {} \
         s; warm-up {} s; cache.max_bytes {cache_mib} MiB; load average {}",
        run.as_secs(),
        warm_up.as_secs(),
        load_average()
    );
    println!("{}", edge_cap(edge_pid));
    let stats = Arc::new(Stats::new());
    let cpu_before = cpu_seconds(&[edge_pid]);
    let start = Instant::now();
    let end = start + run;
    let mut slots = Vec::with_capacity(viewers);
    for i in 0..viewers {
        let stats = stats.clone();
        let join = start + Duration::from_secs(10).mul_f64(i as f64 / viewers as f64);
        slots.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(i as u64);
            tokio::time::sleep_until(join.into()).await;
            // Each round is one viewer; every round lasts at least 10 s, so the loop is bounded by the run.
            while Instant::now() < end {
                let leave = (Instant::now() + Duration::from_secs_f64(rng.gen_range(10.0..60.0))).min(end);
                viewer(source(i, sources), edge, leave, stats.clone()).await;
            }
        }));
    }
    let mut samples: Vec<SoakSample> = Vec::new();
    let mut next = start;
    while next <= end {
        tokio::time::sleep_until(next.into()).await;
        next += sample_every;
        let mib = |bytes: f64| bytes / (1 << 20) as f64;
        let cached = mib(setup.cluster.metric("edge", "lightpath_cache_bytes", &[]).await);
        let heap = mib(setup.cluster.metric("edge", "lightpath_heap_allocated_bytes", &[]).await);
        let sample = SoakSample {
            at: start.elapsed().as_secs_f64(),
            rss: rss_mib(&[edge_pid]),
            anon: status_mib(&[edge_pid], "RssAnon:"),
            heap,
            fds: open_fds(&[edge_pid]),
            cached,
        };
        if samples.len().is_multiple_of(6) {
            println!(
                "  {:>5.0} s: edge RSS {:.1} MiB (anonymous {:.1}, heap in use {:.1}), cache {:.1} MiB, {} fds; {} \
                 viewers joined, {} requests, {} errors; load {}",
                sample.at,
                sample.rss,
                sample.anon,
                sample.heap,
                sample.cached,
                sample.fds,
                stats.viewers_joined.load(Ordering::Relaxed),
                stats.requests(),
                stats.errors(),
                load_average()
            );
        }
        samples.push(sample);
    }
    for slot in slots {
        let _ = slot.await;
    }
    let cpu = cpu_seconds(&[edge_pid]) - cpu_before;
    let published = setup.publisher.stop();
    let warm = samples.iter().find(|s| s.at >= warm_up.as_secs_f64()).context("no sample after warm-up")?;
    let last = samples.last().context("no samples")?;
    let max = samples.iter().filter(|s| s.at >= warm.at).map(|s| s.rss).fold(0.0, f64::max);
    println!(
        "\npublisher: {} rounds, {} failed",
        published.segments.load(Ordering::Relaxed),
        published.failures.load(Ordering::Relaxed)
    );
    println!(
        "\n| run | viewers joined | requests | errors | skipped | edge CPU | RSS at {:.0} s | RSS at end | max after \
         warm-up | change (end / max) | anonymous at warm-up / end | heap in use at warm-up / end | cache at warm-up / \
         end | fds at warm-up / end |",
        warm.at
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} s, {viewers} viewers | {} | {} | {} | {} | {:.1} % | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:+.1} % / \
         {:+.1} % | {:.1} / {:.1} MiB | {:.1} / {:.1} MiB | {:.1} / {:.1} MiB | {} / {} |",
        run.as_secs(),
        stats.viewers_joined.load(Ordering::Relaxed),
        stats.requests(),
        stats.error_detail(),
        stats.skipped.load(Ordering::Relaxed),
        cpu / run.as_secs_f64() * 100.0,
        warm.rss,
        last.rss,
        max,
        (last.rss / warm.rss - 1.0) * 100.0,
        (max / warm.rss - 1.0) * 100.0,
        warm.anon,
        last.anon,
        warm.heap,
        last.heap,
        warm.cached,
        last.cached,
        warm.fds,
        last.fds
    );
    println!("load average at the end: {}", load_average());
    Ok(())
}
