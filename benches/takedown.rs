//! Takedown propagation: how long after an operator's takedown every edge refuses the stream (451), and
//! after the lift every edge serves it again, across the demo's emulated regions.
//!
//! The demo mesh (`topology/demo.toml`: an origin in Dublin, a relay in Virginia, edges in Virginia and
//! Singapore, 38 ms and 105 ms one-way links emulated in user space, a control replica) runs in this process
//! on fresh loopback ports, with a publisher pushing a segment and the playlist every 500 ms and a viewer
//! at each edge. Each trial takes the stream down, then lifts it, alternately through the origin's admin API
//! (the takedown floods hop by hop through the mesh) and the control replica's (which has a session with
//! every node), and polls every edge every 2 ms until all of them answer 451 (then 200 again).
//!
//! Run: `cargo bench --bench takedown` (about a minute). Figures go to BENCHMARKS.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lightpath::ca::{create_ca, issue, Identity};
use lightpath::config::{AdminConfig, EdgeConfig, IngestConfig, LinksConfig};
use lightpath::listen::Listeners;
use lightpath::node::NodeParams;
use lightpath::routing::ProbeConfig;
use lightpath::topology::{Role, Topology};

const TOKEN: &str = "bench-admin-token";
const KEY: &str = "bench-key";
const TRIALS: usize = 20;
const POLL: Duration = Duration::from_millis(2);

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

/// The demo topology with every address moved to a fresh loopback port, and those ports bound.
async fn demo_on_fresh_ports() -> Result<(Topology, BTreeMap<String, (Listeners, SocketAddr)>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/topology/demo.toml");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let demo = Topology::parse(&text, path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut text = text;
    let mut bound = BTreeMap::new();
    let seats = demo
        .nodes
        .iter()
        .map(|n| (&n.id, &n.mesh, &n.http))
        .chain(demo.controls.iter().map(|c| (&c.id, &c.mesh, &c.http)));
    for (id, mesh, http) in seats {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (new_mesh, new_http) = (udp.local_addr()?, tcp.local_addr()?);
        text = text.replace(&format!("\"{mesh}\""), &format!("\"{new_mesh}\""));
        text = text.replace(&format!("\"{http}\""), &format!("\"{new_http}\""));
        bound.insert(id.to_string(), (Listeners { mesh: udp, http: tcp }, new_http));
    }
    let topology = Topology::parse(&text, "demo on fresh ports").map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((topology, bound))
}

async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Polls every URL until each answers `want`; returns the time until the last one did.
async fn all_answer(client: &reqwest::Client, urls: &[String], want: u16, since: Instant) -> Result<Duration> {
    let mut last = Duration::ZERO;
    for url in urls {
        loop {
            if status(client, url).await == want {
                last = last.max(since.elapsed());
                break;
            }
            ensure!(since.elapsed() < Duration::from_secs(10), "{url} did not answer {want} within 10 s");
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(last)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<32} n={:<3} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        d.len(),
        ms(percentile(&d, 0.5)),
        ms(percentile(&d, 0.99)),
        ms(*d.last().unwrap())
    );
}

async fn run() -> Result<()> {
    let (topology, mut bound) = demo_on_fresh_ports().await?;
    let topology = Arc::new(topology);
    let ca = create_ca("bench CA")?;
    let admin = AdminConfig { token: Some(TOKEN.into()), ..AdminConfig::default() };
    for control in &topology.controls {
        let (listeners, _) = bound.remove(control.id.as_str()).context("control bound")?;
        let files = issue(&ca, &control.id, 1)?;
        let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
        let (id, topology, admin) = (control.id.clone(), topology.clone(), admin.clone());
        let options = lightpath::control::ReplicaOptions { admin, ..Default::default() };
        tokio::spawn(lightpath::control::run(id, topology, identity, listeners, options, std::future::pending()));
    }
    let mut http = BTreeMap::new();
    for node in &topology.nodes {
        let (listeners, addr) = bound.remove(node.id.as_str()).context("node bound")?;
        http.insert(node.id.to_string(), addr);
        let files = issue(&ca, &node.id, 1)?;
        let params = NodeParams {
            id: node.id.clone(),
            topology: topology.clone(),
            identity: Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?,
            cache_bytes: 64 << 20,
            ingest: IngestConfig { any_stream_key: Some(KEY.into()), ..IngestConfig::default() },
            edge: EdgeConfig::default(),
            links: LinksConfig { emulate: true },
            admin: admin.clone(),
            probes: ProbeConfig::default(),
            http: Default::default(),
            quic: Default::default(),
        };
        tokio::spawn(lightpath::node::run(params, listeners, std::future::pending()));
    }
    let control = topology.controls[0].http.socket_addr().context("control address")?;
    let origin = topology.nodes.iter().find(|n| n.has_role(Role::Origin)).context("an origin")?;
    let origin = http[origin.id.as_str()];
    let edges: Vec<String> = topology
        .nodes
        .iter()
        .filter(|n| n.has_role(Role::Edge))
        .map(|n| format!("http://{}/live/s/index.m3u8", http[n.id.as_str()]))
        .collect();

    let client = reqwest::Client::builder().pool_max_idle_per_host(4).build()?;
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let put = |name: String, body: Vec<u8>| {
                    client
                        .put(format!("http://{origin}/live/s/{name}"))
                        .header("Authorization", format!("Bearer {KEY}"))
                        .body(body)
                        .send()
                };
                let _ = put(format!("seg{n}.ts"), vec![0u8; 2000]).await;
                let first = n.saturating_sub(4);
                let mut playlist = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
                for i in first..=n {
                    playlist += &format!("#EXTINF:0.5,\nseg{i}.ts\n");
                }
                let _ = put("index.m3u8".into(), playlist.into_bytes()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let start = Instant::now();
    all_answer(&client, &edges, 200, start).await.context("the stream never reached every edge")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let admin_url = |at: SocketAddr| format!("http://{at}/admin/streams/s/takedown");
    let mut down = (Vec::new(), Vec::new());
    let mut up = (Vec::new(), Vec::new());
    for trial in 0..TRIALS {
        let (at, via_origin) = if trial % 2 == 0 { (origin, true) } else { (control, false) };
        let issued = Instant::now();
        let resp = client.post(admin_url(at)).bearer_auth(TOKEN).body("bench").send().await?;
        ensure!(resp.status() == 202, "takedown answered {}", resp.status());
        let took = all_answer(&client, &edges, 451, issued).await?;
        if via_origin {
            down.0.push(took)
        } else {
            down.1.push(took)
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let issued = Instant::now();
        let resp = client.delete(admin_url(at)).bearer_auth(TOKEN).send().await?;
        ensure!(resp.status() == 202, "lift answered {}", resp.status());
        let took = all_answer(&client, &edges, 200, issued).await?;
        if via_origin {
            up.0.push(took)
        } else {
            up.1.push(took)
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    publisher.abort();
    println!("takedown propagation over the demo mesh ({} edges, {TRIALS} trials):", edges.len());
    summary("taken down via the origin", down.0.clone());
    summary("taken down via the control plane", down.1.clone());
    summary("taken down, all trials", [down.0, down.1].concat());
    summary("lifted via the origin", up.0.clone());
    summary("lifted via the control plane", up.1.clone());
    summary("lifted, all trials", [up.0, up.1].concat());
    Ok(())
}
