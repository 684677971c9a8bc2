//! Failover timeline: how fast a silent relay failure is detected, routed around locally, and fixed
//! network-wide by the control plane.
//!
//! Four nodes and a control replica run in this process on 127.0.0.1 with 20 ms emulated links (origin ->
//! {relay-a, relay-b} -> edge) and 100 ms probes on links that carry traffic. Objects flow every 100 ms.
//! Each trial silently partitions the relay that carries the stream to the edge (both directions of all its
//! links: a dead machine, not a closed connection) and measures, from the cut:
//! - detection: the first neighbour of the dead relay declares its link down;
//! - local switch: the edge's subscription moved to the other relay, counted from detection (zero when the
//!   control plane's new table reached the edge before the edge's own probes gave up);
//! - first object through the backup;
//! - network-wide: every live node runs a table, from the control plane, that routes around the cut.
//!
//! Run: `cargo bench --bench failover` (about five minutes: each trial waits for the routes to settle).
//! Figures go to BENCHMARKS.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lightpath::ca::{create_ca, issue, Identity};
use lightpath::config::{AdminConfig, EdgeConfig, IngestConfig, LinksConfig};
use lightpath::id::NodeId;
use lightpath::listen::Listeners;
use lightpath::node::NodeParams;
use lightpath::routing::ProbeConfig;
use lightpath::topology::Topology;

const NODES: [&str; 4] = ["origin", "relay-a", "relay-b", "edge"];
const LINKS: [(&str, &str); 4] =
    [("origin", "relay-a"), ("origin", "relay-b"), ("relay-a", "edge"), ("relay-b", "edge")];
const TOKEN: &str = "bench-admin-token";
const KEY: &str = "bench-key";
const TRIALS: usize = 20;

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics() -> String {
    lightpath::telemetry::metrics().render()
}

async fn run() -> Result<()> {
    let mut sockets = Vec::new();
    let mut topo = String::from("[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n");
    for (i, id) in NODES.iter().chain(["control-1"].iter()).enumerate() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (mesh, http) = (udp.local_addr()?, tcp.local_addr()?);
        if i < NODES.len() {
            let role = match *id {
                "origin" => "origin",
                "edge" => "edge",
                _ => "relay",
            };
            topo += &format!("[[nodes]]\nid = \"{id}\"\nregion = \"lab\"\nroles = [\"{role}\"]\nmesh = \"{mesh}\"\nhttp = \"{http}\"\n");
        } else {
            topo += &format!("[[controls]]\nid = \"{id}\"\nmesh = \"{mesh}\"\nhttp = \"{http}\"\n");
        }
        sockets.push((id.to_string(), Listeners { mesh: udp, http: tcp }, http));
    }
    for (a, b) in LINKS {
        topo += &format!("[[links]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = 20.0\n");
    }
    let topology = Arc::new(Topology::parse(&topo, "bench").map_err(|e| anyhow::anyhow!("{e}"))?);
    let ca = create_ca("bench CA")?;
    let mut http = std::collections::HashMap::new();
    for (id, listeners, addr) in sockets {
        http.insert(id.clone(), addr);
        let node = NodeId::new(id.clone())?;
        let files = issue(&ca, &node, 1)?;
        let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
        if id == "control-1" {
            tokio::spawn(lightpath::control::run(
                node,
                topology.clone(),
                identity,
                listeners,
                lightpath::control::ReplicaOptions::default(),
                std::future::pending(),
            ));
            continue;
        }
        let params = NodeParams {
            id: node,
            topology: topology.clone(),
            identity,
            cache_bytes: 64 << 20,
            ingest: IngestConfig { any_stream_key: Some(KEY.into()), ..IngestConfig::default() },
            edge: EdgeConfig::default(),
            links: LinksConfig { emulate: true },
            admin: AdminConfig { token: Some(TOKEN.into()), ..AdminConfig::default() },
            probes: ProbeConfig::default(),
            http: Default::default(),
            quic: Default::default(),
        };
        tokio::spawn(lightpath::node::run(params, listeners, std::future::pending()));
    }
    let client = reqwest::Client::new();
    let origin = http["origin"];
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let _ = client
                    .put(format!("http://{origin}/live/s/o{n}.ts"))
                    .header("Authorization", format!("Bearer {KEY}"))
                    .body(vec![0u8; 2000])
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // A viewer at the edge subscribes it.
    let edge = http["edge"];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client.get(format!("http://{edge}/live/s/o3.ts")).send().await.is_ok_and(|r| r.status() == 200) {
        anyhow::ensure!(Instant::now() < deadline, "the stream never reached the edge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut detection = Vec::new();
    let mut switch = Vec::new();
    let mut first_object = Vec::new();
    let mut network = Vec::new();
    let mut skipped = 0;
    for trial in 0..TRIALS {
        let carrier = steady_carrier(&client, &http).await?;
        let m = metrics();
        let other = if carrier == "relay-a" { "relay-b" } else { "relay-a" };
        // Detection by whichever neighbour of the dead relay notices first.
        let failures = |m: &str| metric(m, "lightpath_link_failures_total", &[("peer", carrier)]);
        let changes = |m: &str| metric(m, "lightpath_upstream_changes_total", &[("node", "edge")]);
        let via_other =
            |m: &str| metric(m, "lightpath_mesh_objects_received_total", &[("node", "edge"), ("peer", other)]);
        let (f0, c0, o0) = (failures(&m), changes(&m), via_other(&m));

        set_links(&client, &http, carrier, false).await?;
        let cut = Instant::now();
        let (mut t_detect, mut t_switch, mut t_object, mut t_network) = (None, None, None, None);
        while cut.elapsed() < Duration::from_secs(5)
            && (t_detect.is_none() || t_switch.is_none() || t_object.is_none() || t_network.is_none())
        {
            let m = metrics();
            let now = cut.elapsed();
            if t_detect.is_none() && failures(&m) > f0 {
                t_detect = Some(now);
            }
            if t_switch.is_none() && changes(&m) > c0 {
                t_switch = Some(now);
            }
            if t_object.is_none() && via_other(&m) > o0 {
                t_object = Some(now);
            }
            if t_network.is_none() {
                // The control plane routes every live node around the dead relay, and each has applied
                // (at least) that table.
                if let Some(tables) = control_routes(&client, &http).await {
                    let done = ["origin", other, "edge"].iter().all(|n| {
                        let t = &tables[n];
                        let avoids = t["routes"].as_array().is_some_and(|r| r.iter().all(|x| x["next_hop"] != carrier));
                        let version = t["version"].as_f64().unwrap_or(f64::MAX);
                        avoids && metric(&m, "lightpath_routes_version", &[("node", n)]) >= version
                    });
                    if done {
                        t_network = Some(now);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (Some(d), Some(s), Some(o), Some(n)) = (t_detect, t_switch, t_object, t_network) else {
            // The edge did not move (it already received from both relays): not a failover to time.
            eprintln!(
                "trial {trial:2}: cut {carrier}; skipped, incomplete timeline {:?}",
                (t_detect, t_switch, t_object, t_network)
            );
            skipped += 1;
            set_links(&client, &http, carrier, true).await?;
            continue;
        };
        detection.push(d);
        switch.push(s.saturating_sub(d));
        first_object.push(o);
        network.push(n);
        eprintln!(
            "trial {trial:2}: cut {carrier}; detected {d:?}, switched +{:?}, first object {o:?}, network-wide {n:?}",
            s.saturating_sub(d)
        );
        set_links(&client, &http, carrier, true).await?;
    }
    publisher.abort();

    println!(
        "\nfailover timeline, {} of {TRIALS} trials timed ({skipped} skipped), 20 ms emulated links, 100 ms probes (loopback)",
        TRIALS - skipped
    );
    println!("{:<40} {:>9} {:>9} {:>9}", "step", "p50 ms", "p99 ms", "target");
    for (name, samples, target) in [
        ("detection (cut -> link declared down)", &mut detection, "500"),
        ("local switch (after detection)", &mut switch, "50"),
        ("first object through the backup", &mut first_object, "-"),
        ("network-wide (every node on new table)", &mut network, "1500"),
    ] {
        samples.sort();
        let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
        println!("{name:<40} {:>9.1} {:>9.1} {target:>9}", p(0.5), p(0.99));
    }
    compare_with_simulation(&first_object)
}

/// Runs `simulations/failover.toml` (this lab, simulated) with the crash at 20 phases of the probe and
/// object schedules and compares its median reroute time with the live median "first object through the
/// backup" (`first_object`, sorted). The simulator must agree within 25 %.
fn compare_with_simulation(first_object: &[Duration]) -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/failover.toml");
    let (scenario, topology) = lightpath::sim::Scenario::load(&path)?;
    let mut simulated: Vec<f64> = (0..TRIALS)
        .map(|k| {
            let mut trial = scenario.clone();
            trial.faults[0].at_s = 20.0 + k as f64 * 0.1 / TRIALS as f64;
            let (summary, _) = lightpath::sim::run("failover", &trial, &topology, k as u64 + 1, 1, None);
            summary.faults[0].reroute_us.map_or(f64::INFINITY, |us| us as f64 / 1000.0)
        })
        .collect();
    simulated.sort_by(f64::total_cmp);
    // The same rank as the table above uses for p50.
    let median = |v: &[f64]| v[((v.len() - 1) as f64 * 0.5).round() as usize];
    let live: Vec<f64> = first_object.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let (sim, live) = (median(&simulated), median(&live));
    let ratio = sim / live;
    println!(
        "\nsimulated lab (simulations/failover.toml, crash at {TRIALS} phases): reroute p50 {sim:.1} ms, range \
         {:.1}-{:.1} ms; live first object through the backup p50 {live:.1} ms; simulated / live {ratio:.2} \
         (target 0.75-1.25): {}",
        simulated[0],
        simulated[simulated.len() - 1],
        if (0.75..=1.25).contains(&ratio) { "agrees" } else { "DISAGREES" }
    );
    anyhow::ensure!((0.75..=1.25).contains(&ratio), "the simulator's reroute time is not within 25 % of the live one");
    Ok(())
}

/// The relay that alone has fed the edge for the last second and has been the control plane's next hop for
/// it, in one unchanged table, for longer than the route damper's `repair_hold`: the relay healed after the
/// previous trial may win its route back until then, and a cut that met that move would time a table the
/// control plane computed before the cut, not the failover.
async fn steady_carrier(
    client: &reqwest::Client,
    http: &std::collections::HashMap<String, SocketAddr>,
) -> Result<&'static str> {
    let received =
        |r: &str| metric(&metrics(), "lightpath_mesh_objects_received_total", &[("node", "edge"), ("peer", r)]);
    let settled = lightpath::routing::DampingConfig::default().repair_hold + Duration::from_secs(1);
    let mut since: Option<(&'static str, f64, Instant)> = None;
    for _ in 0..40 {
        let before = (received("relay-a"), received("relay-b"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let carrier = match (received("relay-a") > before.0, received("relay-b") > before.1) {
            (true, false) => "relay-a",
            (false, true) => "relay-b",
            _ => {
                since = None;
                continue;
            }
        };
        let Some(tables) = control_routes(client, http).await else { continue };
        if tables["edge"]["routes"][0]["next_hop"] != carrier {
            since = None;
            continue;
        }
        let version = tables["edge"]["version"].as_f64().unwrap_or(f64::NAN);
        match since {
            Some((c, v, at)) if c == carrier && v == version => {
                if at.elapsed() >= settled {
                    return Ok(carrier);
                }
            }
            _ => since = Some((carrier, version, Instant::now())),
        }
    }
    anyhow::bail!("the edge never settled on one relay")
}

/// Partitions (or heals) every link of `relay`, both directions.
async fn set_links(
    client: &reqwest::Client,
    http: &std::collections::HashMap<String, SocketAddr>,
    relay: &str,
    up: bool,
) -> Result<()> {
    for (a, b) in LINKS.iter().filter(|(a, b)| *a == relay || *b == relay) {
        for (from, to) in [(a, b), (b, a)] {
            let resp = client
                .put(format!("http://{}/admin/links/{to}", http[*from]))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .body(format!("{{\"delay_ms\": 20.0, \"up\": {up}}}"))
                .send()
                .await
                .context("admin API")?;
            anyhow::ensure!(resp.status() == 204, "admin API answered {}", resp.status());
        }
    }
    Ok(())
}

async fn control_routes(
    client: &reqwest::Client,
    http: &std::collections::HashMap<String, SocketAddr>,
) -> Option<serde_json::Value> {
    let text = client.get(format!("http://{}/api/routes", http["control-1"])).send().await.ok()?.text().await.ok()?;
    serde_json::from_str(&text).ok()
}
