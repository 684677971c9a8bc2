//! Memory under a backlog, and ingest with many streams: real `lightpath node` processes on loopback.
//!
//! - `backlog`: origin -> relay -> edge, each with a 64 MiB cache, the links capped at 300 and 150 Mbit/s
//!   (`PUT /admin/links`, the nodes' user-space link emulation). A publisher PUTs 2 GiB into one stream
//!   (2,048 segments of 1 MiB, each followed by its playlist) as fast as the origin takes them, several times
//!   faster than the links carry them, so a backlog builds at every hop. A viewer at the edge reads the
//!   playlist and its newest segment five times a second meanwhile. Every node's resident memory is read from
//!   `/proc` every 100 ms (resident set plus sealed memory files), from before the first PUT until 12 s after
//!   the backlog drained (nothing queued for a peer at the origin or the relay,
//!   `lightpath_mesh_queue_bytes`).
//!   Target: every node under 3 x its cache bound + 64 MiB throughout, and back down within 10 s of the
//!   backlog draining.
//! - `streams`: one origin with a 64 MiB cache. 5,000 PUTs of 100 KiB segments into one stream, then one
//!   100 KiB segment into each of 5,000 streams (one key, `ingest.max_streams_per_key` 10,000), 8 at a time.
//!   Target: PUT p50 with 5,000 streams no worse than 1.5 x with one; the cache bound holds.
//!
//! Run: `cargo bench --bench backlog` (both, about two minutes), `cargo bench --bench backlog -- backlog` or
//! `-- streams` for one. `LIGHTPATH_BIN=/path/to/lightpath` runs the nodes from another build, e.g. one from
//! before a change, with the same driver.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{Cluster, NodeSpec, KEY};
use futures_util::StreamExt;

const MIB: u64 = 1 << 20;
const CACHE: u64 = 64 * MIB;
const ADMIN: &str = "bench-admin-token";

fn main() -> Result<()> {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("nodes from {}", common::bin());
    if wants("backlog") {
        rt.block_on(backlog())?;
    }
    if wants("streams") {
        rt.block_on(streams())?;
    }
    Ok(())
}

/// A process's memory in MiB: its resident set (`/proc/PID/status`) plus the sealed memory files it holds
/// open (nodes that serve viewers keep large cached bodies in memfds, whose pages count in the resident set
/// only where the process touched them through a mapping; sent with sendfile, most never are).
fn rss_mib(pid: u32) -> Option<f64> {
    let rss = common::status_mib(pid, "VmRSS:")?;
    let mut sealed = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let is_memfd = std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:"));
        if is_memfd {
            sealed += std::fs::metadata(fd.path()).map_or(0, |m| m.len());
        }
    }
    Some(rss + sealed as f64 / MIB as f64)
}

/// Seconds since the start, and each node's resident memory in MiB then.
type Samples = Vec<(f64, Vec<f64>)>;

/// Resident memory of each node, sampled every 100 ms.
struct Sampler {
    samples: std::sync::Arc<std::sync::Mutex<Samples>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pids: Vec<u32>, started: Instant) -> Self {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let rss: Vec<f64> = pids.iter().map(|p| rss_mib(*p).unwrap_or(f64::NAN)).collect();
                into.lock().unwrap().push((started.elapsed().as_secs_f64(), rss));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { samples, task }
    }

    fn stop(self) -> Samples {
        self.task.abort();
        self.samples.lock().unwrap().clone()
    }
}

fn put(url: String, body: Vec<u8>) -> reqwest::RequestBuilder {
    common::client().put(url).bearer_auth(KEY).body(body)
}

fn playlist(last: u64, window: u64) -> String {
    let first = last.saturating_sub(window - 1);
    let mut p = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for i in first..=last {
        p.push_str(&format!("#EXTINF:2.000,\nseg{i}.ts\n"));
    }
    p
}

/// A segment's bytes: distinct per segment, so nothing is shared or deduplicated along the way.
fn segment(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u64).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

async fn backlog() -> Result<()> {
    const SEGMENTS: u64 = 2048;
    let mut cluster = Cluster::new(
        122,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay", roles: &["relay"] },
            NodeSpec { id: "edge", roles: &["edge"] },
        ],
        &[("origin", "relay", 5.0), ("relay", "edge", 5.0)],
        &format!("[cache]\nmax_bytes = {CACHE}\n[admin]\ntoken = \"{ADMIN}\"\n"),
    );
    cluster.append_config("origin", "max_stream_kbps = 100000000\n");
    cluster.start_all();
    cluster.wait_healthy().await;
    let (origin, edge) = (cluster.http("origin"), cluster.http("edge"));
    for (from, to, kbps) in [("origin", "relay", 300_000), ("relay", "edge", 150_000)] {
        common::client()
            .put(format!("http://{}/admin/links/{to}", cluster.http(from)))
            .bearer_auth(ADMIN)
            .body(format!("{{\"rate_kbps\": {kbps}}}"))
            .send()
            .await?
            .error_for_status()?;
    }
    let ids = ["origin", "relay", "edge"];
    let started = Instant::now();
    let sampler = Sampler::start(ids.iter().map(|id| cluster.pid(id).unwrap()).collect(), started);
    // The first segment and playlist reach the edge: the tree is up.
    put(format!("http://{origin}/live/s/seg0.ts"), segment(0, MIB as usize)).send().await?.error_for_status()?;
    put(format!("http://{origin}/live/s/index.m3u8"), playlist(0, 6).into_bytes()).send().await?.error_for_status()?;
    common::get_eventually(&format!("http://{edge}/live/s/index.m3u8")).await;
    let before = started.elapsed().as_secs_f64();

    let viewer = tokio::spawn(async move {
        let (mut ok, mut not_found, mut other) = (0u32, 0u32, 0u32);
        let client = common::client();
        loop {
            let Ok(resp) = client.get(format!("http://{edge}/live/s/index.m3u8")).send().await else { break };
            let text = resp.text().await.unwrap_or_default();
            if text.contains("#EXT-X-ENDLIST") || text.contains(&format!("seg{}.ts", SEGMENTS - 1)) {
                break;
            }
            if let Some(newest) = text.lines().rev().find(|l| l.ends_with(".ts")) {
                match client.get(format!("http://{edge}/live/s/{newest}")).send().await.map(|r| r.status().as_u16()) {
                    Ok(200) => ok += 1,
                    Ok(404) => not_found += 1,
                    _ => other += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (ok, not_found, other)
    });

    let publish_started = Instant::now();
    let mut refused = 0;
    for i in 1..SEGMENTS {
        let seg = put(format!("http://{origin}/live/s/seg{i}.ts"), segment(i, MIB as usize)).send().await?;
        let list = put(format!("http://{origin}/live/s/index.m3u8"), playlist(i, 6).into_bytes()).send().await?;
        refused += u32::from(!seg.status().is_success()) + u32::from(!list.status().is_success());
    }
    let published = started.elapsed().as_secs_f64();
    let publish_s = publish_started.elapsed().as_secs_f64();
    // Drained: nothing waits for or is being sent to a peer at the origin or the relay any more.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let queued = cluster.metric("origin", "lightpath_mesh_queue_bytes", &[]).await
            + cluster.metric("relay", "lightpath_mesh_queue_bytes", &[]).await;
        if queued == 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the backlog never drained: {queued} bytes still queued");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let samples = sampler.stop();
    let last = format!("http://{edge}/live/s/seg{}.ts", SEGMENTS - 1);
    let last_arrived = common::client().get(&last).send().await.is_ok_and(|r| r.status().is_success());
    let (ok, not_found, other) = viewer.await?;

    println!(
        "\nbacklog: 2 GiB in {SEGMENTS} segments of 1 MiB published in {publish_s:.1} s ({:.0} Mbit/s), {refused} PUTs \
         refused; the backlog drained {:.1} s after the last PUT; the last segment {} the edge (12 s later)",
        (SEGMENTS * MIB * 8) as f64 / publish_s / 1e6,
        drained - published,
        if last_arrived { "reached" } else { "did NOT reach" }
    );
    println!("viewer during the backlog: {ok} segment GETs 200, {not_found} 404, {other} other");
    let bound = 3.0 * (CACHE / MIB) as f64 + 64.0;
    println!("| node | RSS before | peak RSS (target < {bound:.0} MiB) | at drain | drain + 10 s |");
    println!("| --- | --- | --- | --- | --- |");
    for (n, id) in ids.iter().enumerate() {
        let at = |t: f64| samples.iter().find(|(s, _)| *s >= t).map_or(f64::NAN, |(_, r)| r[n]);
        let peak = samples.iter().map(|(_, r)| r[n]).fold(0.0, f64::max);
        println!(
            "| {id} | {:.0} MiB | {peak:.0} MiB | {:.0} MiB | {:.0} MiB |",
            at(before),
            at(drained),
            at(drained + 10.0)
        );
    }
    let cached = cluster.metric("origin", "lightpath_cache_bytes", &[]).await / MIB as f64;
    let drops = cluster.metric("origin", "lightpath_mesh_queue_drops_total", &[]).await;
    let relay_drops = cluster.metric("relay", "lightpath_mesh_queue_drops_total", &[]).await;
    println!("origin cache {cached:.1} MiB at the end; objects skipped for a lagging peer: {drops} at the origin, {relay_drops} at the relay");
    Ok(())
}

/// PUT latencies (ms, sorted) of `urls`, 8 at a time, and how many were refused.
async fn timed_puts(urls: Vec<String>, len: usize) -> (Vec<f64>, usize) {
    let client = common::client();
    let results: Vec<Option<f64>> = futures_util::stream::iter(urls.into_iter().enumerate())
        .map(|(i, url)| {
            let request = client.put(url).bearer_auth(KEY).body(segment(i as u64, len));
            async move {
                let t = Instant::now();
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                ok.then(|| t.elapsed().as_secs_f64() * 1e3)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let refused = results.iter().filter(|r| r.is_none()).count();
    let mut took: Vec<f64> = results.into_iter().flatten().collect();
    took.sort_by(f64::total_cmp);
    (took, refused)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn streams() -> Result<()> {
    const N: usize = 5000;
    const LEN: usize = 100 << 10;
    let mut cluster = Cluster::new(
        123,
        &[NodeSpec { id: "origin", roles: &["origin"] }],
        &[],
        &format!("[cache]\nmax_bytes = {CACHE}\n"),
    );
    cluster.append_config(
        "origin",
        &format!("any_stream_key = \"{KEY}\"\nmax_streams_per_key = 10000\nmax_stream_kbps = 100000000\n"),
    );
    cluster.start_all();
    cluster.wait_healthy().await;
    let origin = cluster.http("origin");
    let pid = cluster.pid("origin").unwrap();
    println!(
        "\nstreams: one origin, cache bound {} MiB, {N} PUTs of {} KiB each phase, 8 at a time",
        CACHE / MIB,
        LEN >> 10
    );
    println!("| phase | PUT p50 | p99 | refused | cache after | RSS after |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let one: Vec<String> = (0..N).map(|i| format!("http://{origin}/live/one/seg{i}.ts")).collect();
    let many: Vec<String> = (0..N).map(|i| format!("http://{origin}/live/s{i}/seg0.ts")).collect();
    let mut p50s = Vec::new();
    for (phase, urls) in [("1 stream", one), ("5,000 streams", many)] {
        let (took, refused) = timed_puts(urls, LEN).await;
        let cached = cluster.metric("origin", "lightpath_cache_bytes", &[]).await / MIB as f64;
        println!(
            "| {phase} | {:.2} ms | {:.2} ms | {refused} | {cached:.1} MiB | {:.0} MiB |",
            percentile(&took, 0.5),
            percentile(&took, 0.99),
            rss_mib(pid).unwrap_or(f64::NAN)
        );
        p50s.push(percentile(&took, 0.5));
    }
    println!("p50 ratio, 5,000 streams / 1 stream: {:.2} (target <= 1.5)", p50s[1] / p50s[0]);
    Ok(())
}
