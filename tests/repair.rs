//! A repaired link carries traffic again as soon as it is the best: simulated and live, on a diamond where the
//! origin reaches the edge through relay-a (the shorter way) or relay-b. The link origin—relay-a is cut, the
//! stream moves to relay-b, the link is repaired, and the stream must be back on relay-a within 10 s.
//!
//! Two things used to keep it away for about 100 s: the probes lost during the outage stayed in the link
//! estimator's 100-probe loss window (an idle link is probed once a second), and the simulator kept a link's
//! estimator across an outage where a live node starts a fresh one with the new connection.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use lightpath::sim::{run_file, Summary};

/// The diamond's topology and a scenario on it: one 2,000-byte object every 100 ms from 5 s, the link
/// origin—relay-a cut at 20.05 s and repaired `outage_s` later, the run ending 20 s after the repair.
fn diamond_scenario(name: &str, outage_s: f64) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("repair-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut topology = String::from("[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n");
    for (i, node) in ["origin", "relay-a", "relay-b", "edge"].iter().enumerate() {
        let role = match *node {
            "origin" => "origin",
            "edge" => "edge",
            _ => "relay",
        };
        topology += &format!(
            "\n[[nodes]]\nid = \"{node}\"\nregion = \"lab\"\nroles = [\"{role}\"]\nmesh = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n",
            47_301 + i,
            48_301 + i
        );
    }
    for (a, b, ms) in
        [("origin", "relay-a", 10), ("relay-a", "edge", 10), ("origin", "relay-b", 30), ("relay-b", "edge", 30)]
    {
        topology += &format!("\n[[links]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {ms}.0\n");
    }
    std::fs::write(dir.join("diamond.toml"), topology).unwrap();
    let repair = 20.05 + outage_s;
    let scenario = format!(
        r#"topology = "diamond.toml"
duration_s = {duration}
seed = 1

[links]
jitter_ms = 0.2

[workload]
start_s = 5
streams = [{{ name = "s", origin = "origin", segment_ms = 100, bitrate_kbps = 160, edges = ["edge"] }}]

[[faults]]
at_s = 20.05
kind = "link_down"
a = "origin"
b = "relay-a"

[[faults]]
at_s = {repair}
kind = "link_up"
a = "origin"
b = "relay-a"
"#,
        duration = (repair + 20.0).ceil() as u64,
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, scenario).unwrap();
    path
}

fn objects_on(s: &Summary, link: &str) -> u64 {
    const OBJECT: u64 = 2_000;
    let overlay = &s.traffic["overlay"];
    overlay.busiest_links.iter().find(|(name, _)| name == link).map_or(0, |&(_, bytes)| bytes / OBJECT)
}

/// The simulated diamond: after the repair, the stream is back on relay-a within 10 s, whether the outage
/// was short enough for the live QUIC connection to survive it (3 s: the estimators stay, and forget the
/// outage's lost probes) or not (30 s: both ends start fresh estimators).
#[test]
fn simulated_overlay_returns_to_a_repaired_link_within_10_s() {
    for outage_s in [3.0, 30.0] {
        let s = run_file(&diamond_scenario(&format!("outage-{outage_s}"), outage_s), None, 1, None, None).unwrap();
        let stream = &s.streams["s"];
        // Objects at 5.0, 5.1, ... 20.0 s went through relay-a before the cut.
        let before = 151;
        let after_repair = objects_on(&s, "origin-relay-a") - before;
        assert_eq!(objects_on(&s, "relay-a-edge"), objects_on(&s, "origin-relay-a"), "{:?}", s.traffic);
        assert!(objects_on(&s, "origin-relay-b") > 0, "outage {outage_s} s: the stream never left relay-a");
        // The run ends 20 s after the repair, with 10 objects a second: back within 10 s means at least the
        // last 100 went through relay-a.
        assert!(
            after_repair >= 100,
            "outage {outage_s} s: only {after_repair} objects through relay-a in the 20 s after the repair: {:?}",
            s.traffic
        );
        // Every object went one way or the other, bar those lost before the edge noticed the cut; both ways
        // only while the edge moved back make-before-break (relay-b keeps feeding it for 2 s: 20 objects).
        let via_b = objects_on(&s, "origin-relay-b");
        let both = (before + after_repair + via_b + stream.all.overlay.lost).checked_sub(stream.objects);
        assert!(
            both.is_some_and(|both| both <= 21),
            "outage {outage_s} s: {both:?} objects both ways: {:?}",
            s.traffic
        );
        assert!(stream.all.overlay.lost <= 10, "{:?}", s.faults);
    }
}

/// Objects `relay` has sent the edge.
async fn sent(mesh: &Cluster, relay: &str) -> f64 {
    mesh.metric(relay, "lightpath_mesh_objects_sent_total", &[("peer", "edge"), ("stream", "s")]).await
}

/// Waits until `relay` sends the edge `objects` more objects than it had when called; returns how long
/// that took, or fails after `within`.
async fn forwards(mesh: &Cluster, relay: &str, objects: f64, within: Duration) -> Duration {
    let start = Instant::now();
    let from = sent(mesh, relay).await;
    loop {
        if sent(mesh, relay).await >= from + objects {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{relay} did not forward {objects} objects within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The live diamond, with a control replica: relay-a carries the stream; origin—relay-a is cut for 3 s (the
/// stream moves to relay-b), then repaired. The stream is back on relay-a within 10 s of the repair: about
/// 3 s later when the QUIC connection survives (its idle timeout is 5 s), about 5 s later when it does not.
/// It does not when both ends are still congestion-blocked by the outage's packets: quinn then sends
/// neither data nor acknowledgements until a loss-probe timeout, whose back-off may outlast the idle timeout.
/// The repaired link must not read as lossy either way: the connection declares the outage's packets lost
/// once the path is back, which used to keep the stream away (see `LinkEstimator::handle_outage_end`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_returns_to_a_repaired_link_within_10_s() {
    repaired(75, &["control-1"], Duration::from_secs(3)).await;
}

/// The same without a control replica (routes from the configured latencies and the links' own verdicts),
/// and with an outage longer than the connection's idle timeout, so the link comes back as a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_control_traffic_returns_to_a_link_repaired_after_its_connection_died() {
    repaired(76, &[], Duration::from_secs(8)).await;
}

async fn repaired(ip_base: u8, controls: &[&str], outage: Duration) {
    let extra = format!("[links]\nemulate = true\n[admin]\ntoken = \"{ADMIN}\"\n");
    let mut mesh = Cluster::with_controls(
        ip_base,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay-a", roles: &["relay"] },
            NodeSpec { id: "relay-b", roles: &["relay"] },
            NodeSpec { id: "edge", roles: &["edge"] },
        ],
        &[
            ("origin", "relay-a", 20.0),
            ("relay-a", "edge", 20.0),
            ("origin", "relay-b", 60.0),
            ("relay-b", "edge", 60.0),
        ],
        controls,
        &extra,
    );
    mesh.start_all();
    mesh.wait_healthy().await;
    let origin = mesh.http("origin");
    // A small object every 100 ms.
    let publisher = tokio::spawn(async move {
        for n in 0u64.. {
            let _ = client()
                .put(format!("http://{origin}/live/s/o{n}.ts"))
                .header("Authorization", format!("Bearer {KEY}"))
                .body(vec![n as u8; 1000])
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    get_eventually(&format!("http://{}/live/s/o2.ts", mesh.http("edge"))).await;
    forwards(&mesh, "relay-a", 5.0, Duration::from_secs(20)).await;

    set_link(&mesh, "origin", "relay-a", Some(20.0), false).await;
    let cut = Instant::now();
    let moved = forwards(&mesh, "relay-b", 2.0, Duration::from_secs(4)).await;
    eprintln!("the stream moved to relay-b {} ms after the cut", moved.as_millis());
    tokio::time::sleep_until((cut + outage).into()).await;
    set_link(&mesh, "origin", "relay-a", Some(20.0), true).await;
    let back = forwards(&mesh, "relay-a", 2.0, Duration::from_secs(10)).await;
    eprintln!("the stream was back on relay-a {} ms after the repair", back.as_millis());
    publisher.abort();
}
