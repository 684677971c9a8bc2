//! A viewer's playlist GET while the node is under a slowloris attack and an idle-connection flood.
//!
//! One `lightpath node` process (origin and edge) runs from a binary: this build's, or any other given in
//! `LIGHTPATH_BIN`, so that the same run can measure a build from before the limits. Its open-file limit is
//! set to 8,192 before it starts, a limit that the flood below can exhaust (a node's soft limit otherwise
//! rises to the machine's hard limit, here 20,000, which this process cannot outnumber with its own
//! connections). A playlist is published with one PUT; then:
//!
//! - baseline: 200 GETs of the playlist, each on a fresh connection, from 127.0.118.9;
//! - attack: 1,000 slowloris connections (250 from each of 4 addresses, each sending one header line a
//!   second and never finishing its head, reconnecting when cut) and an idle flood (2,000 connections from
//!   each of 4 other addresses that send nothing, reconnecting 5 s after being closed or turned away);
//! - during the attack, after 15 s for it to build up: 300 GETs as in the baseline, 10 a second.
//!
//! A GET that fails or takes over 2 s counts as failed. Reports p50/p99/max of the GETs that succeeded and
//! the failures.
//!
//! Run: `cargo bench --bench hostile` (about a minute); `LIGHTPATH_BIN=/path/to/lightpath cargo bench
//! --bench hostile` for another build.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const KEY: &str = "bench-key";
const NODE_FD_LIMIT: u64 = 8192;
const GET_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One playlist GET on a fresh connection: how long until the whole reply was in, or `None`.
async fn get(from: IpAddr, to: SocketAddr) -> Option<Duration> {
    let start = Instant::now();
    let fetched = tokio::time::timeout(GET_TIMEOUT, async {
        let mut tcp = connect_from(from, to).await.ok()?;
        tcp.write_all(b"GET /live/s/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await.ok()?;
        reply.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    matches!(fetched, Ok(Some(()))).then(|| start.elapsed())
}

/// `n` GETs, one started every `every` whatever the others do (a failed one waits out its timeout).
async fn gets(to: SocketAddr, n: usize, every: Duration) -> (Vec<Duration>, usize) {
    let viewer: IpAddr = "127.0.118.9".parse().unwrap();
    let mut started = Vec::new();
    let mut tick = tokio::time::interval(every);
    for _ in 0..n {
        tick.tick().await;
        started.push(tokio::spawn(get(viewer, to)));
    }
    let (mut took, mut failed) = (Vec::new(), 0);
    for get in started {
        match get.await.ok().flatten() {
            Some(t) => took.push(t),
            None => failed += 1,
        }
    }
    took.sort();
    (took, failed)
}

fn report(phase: &str, (took, failed): &(Vec<Duration>, usize)) {
    let at = |q: f64| took.get(((took.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied();
    let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0));
    println!(
        "{phase:>8}: {} ok, {failed} failed; p50 {}, p99 {}, max {}",
        took.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(took.last().copied())
    );
}

/// Keeps one slowloris connection up: a head that never ends, a line a second.
async fn slowloris(from: IpAddr, to: SocketAddr, stop: Arc<AtomicBool>, held: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = connect_from(from, to).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        held.fetch_add(1, Ordering::Relaxed);
        let mut line = 0u64;
        let _ = tcp.write_all(b"GET /live/s/index.m3u8 HTTP/1.1\r\n").await;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            line += 1;
            let mut buf = [0u8; 256];
            let closed = matches!(tokio::time::timeout(Duration::ZERO, tcp.read(&mut buf)).await, Ok(Ok(0) | Err(_)));
            if closed || tcp.write_all(format!("X-{line}: a\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
        held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps one idle connection up, reconnecting 5 s after it is closed or turned away.
async fn idle(from: IpAddr, to: SocketAddr, stop: Arc<AtomicBool>, held: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut tcp) = connect_from(from, to).await {
            held.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    read = tcp.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => if stop.load(Ordering::Relaxed) { break },
                }
            }
            held.fetch_sub(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn run() -> Result<()> {
    let bin = std::env::var("LIGHTPATH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lightpath").to_owned());
    let dir = tempfile::tempdir()?;
    let (mesh, http) = ("127.0.118.2:47191", "127.0.118.2:48191");
    let http_addr: SocketAddr = http.parse()?;
    std::fs::write(
        dir.path().join("topology.toml"),
        format!(
            "[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n\n[[nodes]]\nid = \"edge\"\nregion = \"lab\"\n\
             roles = [\"origin\", \"edge\"]\nmesh = \"{mesh}\"\nhttp = \"{http}\"\n"
        ),
    )?;
    for args in
        [vec!["ca", "init", "--dir", "ca"], vec!["ca", "issue", "--dir", "ca", "--node", "edge", "--out", "certs"]]
    {
        let out = Command::new(&bin).args(args).current_dir(dir.path()).output()?;
        if !out.status.success() {
            bail!("{bin} ca: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    std::fs::write(
        dir.path().join("edge.toml"),
        format!(
            "node = \"edge\"\ntopology = \"topology.toml\"\n[tls]\nca = \"ca/ca.pem\"\ncert = \"certs/edge.pem\"\n\
             key = \"certs/edge.key\"\n[ingest]\nany_stream_key = \"{KEY}\"\n"
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("edge.log"))?;
    // prlimit(1) sets the limit for the node alone.
    let mut node = Command::new("prlimit")
        .arg(format!("--nofile={NODE_FD_LIMIT}:{NODE_FD_LIMIT}"))
        .arg(&bin)
        .args(["node", "--config", "edge.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the node with prlimit (util-linux)")?;
    let result = measure(http_addr).await;
    let _ = node.kill();
    let _ = node.wait();
    let log = std::fs::read_to_string(dir.path().join("edge.log")).unwrap_or_default();
    println!("node log: {} lines, {} bytes", log.lines().count(), log.len());
    result
}

async fn measure(http: SocketAddr) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client.get(format!("http://{http}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        if Instant::now() > deadline {
            bail!("the node never became healthy");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let playlist =
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\nseg0.ts\n";
    for (name, body) in [("seg0.ts", vec![0x47u8; 188 * 100]), ("index.m3u8", playlist.as_bytes().to_vec())] {
        let put = client.put(format!("http://{http}/live/s/{name}")).bearer_auth(KEY).body(body).send().await?;
        if !put.status().is_success() {
            bail!("PUT {name}: {}", put.status());
        }
    }
    let baseline = gets(http, 200, Duration::from_millis(20)).await;
    report("baseline", &baseline);

    let stop = Arc::new(AtomicBool::new(false));
    let (slow_held, idle_held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut attack = Vec::new();
    for a in 0..4u8 {
        let from = IpAddr::from([127, 0, 118, 20 + a]);
        for _ in 0..250 {
            attack.push(tokio::spawn(slowloris(from, http, stop.clone(), slow_held.clone())));
        }
    }
    for a in 0..4u8 {
        let from = IpAddr::from([127, 0, 118, 30 + a]);
        for _ in 0..2000 {
            attack.push(tokio::spawn(idle(from, http, stop.clone(), idle_held.clone())));
        }
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    println!(
        "attack: {} slowloris and {} idle connections open (client side)",
        slow_held.load(Ordering::Relaxed),
        idle_held.load(Ordering::Relaxed)
    );
    let during = gets(http, 300, Duration::from_millis(100)).await;
    report("attack", &during);
    println!(
        "attack: {} slowloris and {} idle connections open at the end",
        slow_held.load(Ordering::Relaxed),
        idle_held.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);
    for task in attack {
        task.abort();
    }
    Ok(())
}
