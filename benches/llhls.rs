//! Low-Latency HLS at the demo's farthest edge (Singapore, two emulated hops from the origin in Dublin):
//!
//! 1. **Glass to glass**: hls.js in headless Chromium (`tests/browser/play.mjs`) plays the edge for
//!    [`PLAY_S`] seconds in low-latency mode, then as a plain HLS player (the same stream, parts ignored);
//!    each second it samples now minus the playhead's `EXT-X-PROGRAM-DATE-TIME` (the publisher's clock when
//!    the segment's first chunk left it) and hls.js's own latency estimate.
//! 2. **Parked reloads**: [`PARKED`] connections each send a blocking reload for a part a second or more
//!    ahead and wait; the demo process's resident memory is read before and while they are held, and the
//!    time from the first answer (the playlist listing the part has landed) to each other answer is
//!    measured.
//!
//! `lightpath demo` runs as a separate process on fresh loopback ports. Needs chromium, node and
//! `npm ci --prefix tests/browser`. Run: `cargo bench --bench llhls` (about 2 minutes). Figures go to
//! BENCHMARKS.md.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PLAY_S: u32 = 30;
const PARKED: usize = 10_000;
/// Client source addresses the parked connections spread over (the edge admits 256 per address).
const SOURCES: usize = 50;

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The demo topology on fresh ports; returns its path and edge-ap's HTTP address.
fn demo_topology(dir: &std::path::Path) -> Result<(std::path::PathBuf, SocketAddr)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/demo.toml"))?;
    let (mut out, mut node, mut edge) = (String::new(), String::new(), None);
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("id = ") {
            node = id.trim_matches('"').to_owned();
        }
        match line.split_once(" = \"127.0.0.1:") {
            Some((key, _)) => {
                let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
                if node == "edge-ap" && key == "http" {
                    edge = Some(addr);
                }
                out.push_str(&format!("{key} = \"{addr}\"\n"));
            }
            None => out.push_str(&format!("{line}\n")),
        }
    }
    let path = dir.join("demo.toml");
    std::fs::write(&path, out)?;
    Ok((path, edge.context("no edge-ap in the demo topology")?))
}

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run() -> Result<()> {
    let _ = lightpath::cache::sealed::raise_fd_limit();
    let dir = tempfile::tempdir()?;
    let (topology, edge) = demo_topology(dir.path())?;
    let demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_lightpath"))
            .args(["demo", "--topology"])
            .arg(&topology)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("demo.log"))?)
            .spawn()?,
    );
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let playlist = format!("http://{edge}/live/demo/stream0.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(&playlist).send().await {
            if resp.text().await.is_ok_and(|t| t.contains("#EXTINF")) {
                break;
            }
        }
        ensure!(Instant::now() < deadline, "the demo stream never reached edge-ap");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!("glass to glass at edge-ap, {PLAY_S} s of hls.js each (seconds):");
    println!("| player | samples | glass p50 | glass p99 | hls.js latency p50 | parts buffered | stalls |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for mode in ["low", "plain"] {
        let out = tokio::process::Command::new("node")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/play.mjs"))
            .arg(format!("http://{edge}/live/demo/index.m3u8"))
            .arg(PLAY_S.to_string())
            .arg(mode)
            .output()
            .await?;
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("play.mjs: {}", String::from_utf8_lossy(&out.stderr)))?;
        let series = |key: &str| {
            let mut v: Vec<f64> = seen[key].as_array().into_iter().flatten().filter_map(|x| x.as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (glass, latency) = (series("glass"), series("latency"));
        ensure!(!glass.is_empty(), "no samples: {seen}");
        println!(
            "| hls.js {} | {} | {:.3} | {:.3} | {:.3} | {} | {} |",
            if mode == "low" { "lowLatencyMode" } else { "plain HLS" },
            glass.len(),
            percentile(&glass, 0.5),
            percentile(&glass, 0.99),
            latency.get(latency.len() / 2).copied().unwrap_or(f64::NAN),
            seen["parts"],
            seen["stalls"]
        );
    }

    parked(edge, &client, demo.0.id()).await
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

async fn parked(edge: SocketAddr, client: &reqwest::Client, pid: u32) -> Result<()> {
    let text = client.get(format!("http://{edge}/live/demo/stream0.m3u8")).send().await?.text().await?;
    let position = lightpath::hls::ll::Position::read(&text).context("a media playlist")?;
    // A late part of the next segment: two to four seconds away, time enough to park every request.
    let (msn, part) = (position.open_msn + 1, 8u64);
    let before = rss_kib(pid)?;
    let request =
        format!("GET /live/demo/stream0.m3u8?_HLS_msn={msn}&_HLS_part={part} HTTP/1.1\r\nHost: {edge}\r\n\r\n");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(PARKED);
    for i in 0..PARKED {
        let source: SocketAddr = format!("127.0.100.{}:0", 1 + i % SOURCES).parse()?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(source)?;
        let mut tcp = socket.connect(edge).await.with_context(|| format!("connection {i}"))?;
        tcp.write_all(request.as_bytes()).await?;
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = tcp.read(&mut buf).await.ok()?;
            let at = Instant::now();
            let status = std::str::from_utf8(&buf[..n]).ok()?.split(' ').nth(1)?.parse::<u16>().ok()?;
            Some((status, at, tcp))
        }));
    }
    let parked_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = rss_kib(pid)?;
    let sent_all = started + parked_in;
    let mut answers = Vec::with_capacity(PARKED);
    for task in tasks {
        let Some((status, at, _tcp)) = task.await? else { bail!("a parked request got no answer") };
        ensure!(status == 200, "a parked request got {status}");
        answers.push(at);
    }
    let not_parked = answers.iter().filter(|&&at| at < sent_all).count();
    // The playlist listing the part lands right after the part: the first answer marks it.
    let first = *answers.iter().min().context("no answers")?;
    let mut after: Vec<f64> = answers.iter().map(|at| at.duration_since(first).as_secs_f64() * 1000.0).collect();
    after.sort_by(f64::total_cmp);
    println!();
    println!("{PARKED} blocking reloads parked at edge-ap (connected in {:.2} s):", parked_in.as_secs_f64());
    println!("| demo RSS before | while parked | per parked request | answers after the first: p50 | p99 | last | answered before all were sent |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.1} ms | {:.1} ms | {:.1} ms | {not_parked} |",
        before as f64 / 1024.0,
        held as f64 / 1024.0,
        held.saturating_sub(before) as f64 / PARKED as f64,
        percentile(&after, 0.5),
        percentile(&after, 0.99),
        after.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}
