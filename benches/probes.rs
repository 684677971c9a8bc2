//! Probe overhead: the bytes a node sends per neighbour to keep a link measured, idle and carrying a stream,
//! and what that makes for a node with 100 neighbours.
//!
//! Two nodes run in this process on 127.0.0.1. For each phase the benchmark reads the QUIC connection's UDP
//! bytes sent (probes, their replies, acknowledgements and keep-alives: everything but objects) over a fixed
//! window. Idle: no stream (1 s probes). Active: a stream is subscribed across the link but no object is
//! published during the window (100 ms probes).
//!
//! Run: `cargo bench --bench probes` (about 25 s).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use lightpath::ca::{create_ca, issue, Identity};
use lightpath::config::{AdminConfig, EdgeConfig, IngestConfig, LinksConfig};
use lightpath::id::NodeId;
use lightpath::listen::Listeners;
use lightpath::node::NodeParams;
use lightpath::routing::ProbeConfig;
use lightpath::topology::Topology;

const WINDOW: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

fn sent_by(node: &str) -> f64 {
    let text = lightpath::telemetry::metrics().render();
    text.lines()
        .filter(|l| l.starts_with("lightpath_mesh_udp_bytes_sent_total{") && l.contains(&format!("node=\"{node}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn run() -> Result<()> {
    let mut topo = String::from("[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n");
    let mut bound = Vec::new();
    for (id, role) in [("origin", "origin"), ("edge", "edge")] {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (mesh, http) = (udp.local_addr()?, tcp.local_addr()?);
        topo += &format!(
            "[[nodes]]\nid = \"{id}\"\nregion = \"lab\"\nroles = [\"{role}\"]\nmesh = \"{mesh}\"\nhttp = \"{http}\"\n"
        );
        bound.push((id, Listeners { mesh: udp, http: tcp }, http));
    }
    topo += "[[links]]\na = \"origin\"\nb = \"edge\"\nlatency_ms = 1.0\n";
    let topology = Arc::new(Topology::parse(&topo, "bench").map_err(|e| anyhow::anyhow!("{e}"))?);
    let ca = create_ca("bench CA")?;
    let mut http = Vec::new();
    for (id, listeners, addr) in bound {
        let node = NodeId::new(id)?;
        let files = issue(&ca, &node, 1)?;
        let params = NodeParams {
            id: node,
            topology: topology.clone(),
            identity: Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?,
            cache_bytes: 16 << 20,
            ingest: IngestConfig { any_stream_key: Some("k".into()), ..IngestConfig::default() },
            edge: EdgeConfig::default(),
            links: LinksConfig::default(),
            admin: AdminConfig::default(),
            probes: ProbeConfig::default(),
            http: Default::default(),
            quic: Default::default(),
        };
        http.push(addr);
        tokio::spawn(lightpath::node::run(params, listeners, std::future::pending()));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let idle = measure().await;

    // Subscribe the edge to a stream, so that the link carries it and probes run fast.
    let client = reqwest::Client::new();
    client
        .put(format!("http://{}/live/s/one.ts", http[0]))
        .header("Authorization", "Bearer k")
        .body("x")
        .send()
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = client.get(format!("http://{}/live/s/one.ts", http[1])).send().await?;
    anyhow::ensure!(got.status() == 200, "the edge did not get the stream: {}", got.status());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let active = measure().await;

    println!("\nprobe overhead per node (UDP payload bytes sent: probes, replies, ACKs, keep-alives)");
    println!("{:<28} {:>14} {:>22}", "link state", "B/s per link", "B/s, 100 neighbours");
    for (name, per_link) in [("idle (1 s probes)", idle), ("carrying a stream (100 ms)", active)] {
        println!("{name:<28} {per_link:>14.0} {:>22.0}", per_link * 100.0);
    }
    Ok(())
}

/// Bytes per second each node sends on its one link, averaged over both nodes, over [`WINDOW`].
async fn measure() -> f64 {
    let before = sent_by("origin") + sent_by("edge");
    tokio::time::sleep(WINDOW).await;
    let after = sent_by("origin") + sent_by("edge");
    (after - before) / 2.0 / WINDOW.as_secs_f64()
}
