//! A starved node keeps its stream: one relay fans a ~4.8 Mbit/s stream out to many edge processes on this
//! machine, until the CPU is saturated and probe answers are late. Links that carry data must not be
//! declared down, and every edge must keep receiving.
//!
//! `LIGHTPATH_STARVED_EDGES` (default 40) and `LIGHTPATH_STARVED_SECS` (default 30) set the size; the test
//! prints the false verdicts per minute (BENCHMARKS.md records them at 100 edges too).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_fanning_out_to_many_edges_under_full_cpu_keeps_every_link_and_edge() {
    let edges = env("LIGHTPATH_STARVED_EDGES", 40) as usize;
    let secs = env("LIGHTPATH_STARVED_SECS", 30);
    let names: Vec<&'static str> = (0..edges).map(|i| &*Box::leak(format!("edge-{i:03}").into_boxed_str())).collect();
    let mut specs = vec![NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "relay", roles: &["relay"] }];
    specs.extend(names.iter().map(|id| NodeSpec { id, roles: &["edge"] }));
    let mut links = vec![("origin", "relay", 5.0)];
    links.extend(names.iter().map(|id| ("relay", *id, 5.0)));
    let mut mesh = Cluster::new(81, &specs, &links, "");
    mesh.start_all();
    mesh.wait_healthy().await;

    // ~4.8 Mbit/s: a 600 kB segment and a playlist every second.
    let origin = mesh.http("origin");
    let publisher = tokio::spawn(async move {
        let client = client();
        let body: Vec<u8> = (0..600_000u32).map(|i| (i * 7 + i / 255) as u8).collect();
        for n in 0u64.. {
            let started = Instant::now();
            let put = |name: String, body: Vec<u8>| {
                client
                    .put(format!("http://{origin}/live/s/{name}"))
                    .header("Authorization", format!("Bearer {KEY}"))
                    .body(body)
                    .send()
            };
            let _ = put(format!("seg{n}.ts"), body.clone()).await;
            let playlist = format!(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{n}\n#EXTINF:1.0,\nseg{n}.ts\n"
            );
            let _ = put("index.m3u8".into(), playlist.into_bytes()).await;
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
        }
    });

    // A viewer at every edge subscribes it.
    for id in &names {
        get_eventually(&format!("http://{}/live/s/index.m3u8", mesh.http(id))).await;
    }
    let started = Instant::now();
    let received_at_start = received(&mesh, &names).await;
    let verdicts_at_start = verdicts(&mesh, &names).await;
    let cpu_at_start = cpu_times();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let busy = cpu_busy(cpu_at_start, cpu_times());
    let received_at_end = received(&mesh, &names).await;
    let elapsed = started.elapsed();
    publisher.abort();

    // Links declared down while the stream ran (every link of this mesh carries it).
    let verdicts_at_end = verdicts(&mesh, &names).await;
    let mut false_verdicts = 0.0;
    let mut by_node = Vec::new();
    for ((id, start), (_, end)) in verdicts_at_start.iter().zip(&verdicts_at_end) {
        if end > start {
            by_node.push(format!("{id}: {}", end - start));
        }
        false_verdicts += end - start;
    }
    let per_minute = false_verdicts * 60.0 / elapsed.as_secs_f64();
    let bytes: f64 = received_at_end.iter().sum::<f64>() - received_at_start.iter().sum::<f64>();
    eprintln!(
        "{edges} edges for {:.0} s, CPU {:.0} % busy: {false_verdicts} links declared down ({per_minute:.1} a minute); the edges received {:.1} Mbit/s in all (of {} sent)",
        elapsed.as_secs_f64(),
        busy * 100.0,
        bytes * 8.0 / elapsed.as_secs_f64() / 1e6,
        edges as f64 * 4.8
    );
    assert_eq!(false_verdicts, 0.0, "links carrying the stream were declared down, by {}", by_node.join(", "));
    for (i, id) in names.iter().enumerate() {
        assert!(received_at_end[i] > received_at_start[i], "{id} received nothing in the last {secs} s");
    }
}

/// Mesh bytes each edge has received from the relay.
async fn received(mesh: &Cluster, edges: &[&'static str]) -> Vec<f64> {
    let mut out = Vec::new();
    for id in edges {
        out.push(mesh.metric(id, "lightpath_mesh_bytes_received_total", &[("peer", "relay")]).await);
    }
    out
}

/// Links each node has declared down so far: the origin, the relay, then every edge.
async fn verdicts(mesh: &Cluster, edges: &[&'static str]) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    for id in ["origin", "relay"].iter().chain(edges) {
        out.push((*id, mesh.metric(id, "lightpath_link_failures_total", &[]).await));
    }
    out
}

/// The machine's CPU time so far, (busy, all), in clock ticks (`/proc/stat`).
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    let all: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (all - idle, all)
}

/// The fraction of CPU time that was busy between two readings.
fn cpu_busy(start: (u64, u64), end: (u64, u64)) -> f64 {
    (end.0 - start.0) as f64 / (end.1 - start.1).max(1) as f64
}
