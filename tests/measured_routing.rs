//! Routes follow what the mesh measures: emulated WAN latencies on loopback, a control plane, real nodes.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn emulated(ip_base: u8, nodes: &[NodeSpec], links: &[(&str, &str, f64)]) -> Cluster {
    let extra = format!("[links]\nemulate = true\n[admin]\ntoken = \"{ADMIN}\"\n");
    let mut mesh = Cluster::with_controls(ip_base, nodes, links, &["control-1"], &extra);
    mesh.start_all();
    mesh
}

async fn routes(mesh: &Cluster) -> serde_json::Value {
    let url = format!("http://{}/api/routes", mesh.http("control-1"));
    let text = client().get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits until the control plane gives `node` the next hop `via` toward the origin.
async fn next_hop_becomes(mesh: &Cluster, node: &str, via: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = routes(mesh).await;
        if r[node]["routes"][0]["next_hop"] == via {
            return start.elapsed();
        }
        if start.elapsed() >= within {
            let url = format!("http://{}/api/links", mesh.http("control-1"));
            let links = client().get(url).send().await.unwrap().text().await.unwrap();
            panic!("{node} never routed via {via}: {r:#}\nlinks as measured: {links}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes a small object every 200 ms until dropped.
fn trickle(origin: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0u64.. {
            let _ = client()
                .put(format!("http://{origin}/live/s/o{n}.ts"))
                .header("Authorization", format!("Bearer {KEY}"))
                .body(vec![n as u8; 1000])
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Waits until `check` holds, trying again every 100 ms, for at most `within`.
async fn until(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sent(mesh: &Cluster, relay: &str) -> f64 {
    mesh.metric(relay, "lightpath_mesh_objects_sent_total", &[("peer", "edge"), ("stream", "s")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_drives_the_path_and_a_slower_link_moves_it() {
    let mesh = emulated(
        51,
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
    );
    mesh.wait_healthy().await;
    let publisher = trickle(mesh.http("origin"));
    get_eventually(&format!("http://{}/live/s/o2.ts", mesh.http("edge"))).await;
    next_hop_becomes(&mesh, "edge", "relay-a", Duration::from_secs(15)).await;
    let a = sent(&mesh, "relay-a").await;
    until(Duration::from_secs(10), "relay-a forwards the stream", async || sent(&mesh, "relay-a").await > a).await;

    // A's links get slow: within a few seconds the stream flows via B.
    set_link(&mesh, "origin", "relay-a", Some(100.0), true).await;
    set_link(&mesh, "relay-a", "edge", Some(100.0), true).await;
    let took = next_hop_becomes(&mesh, "edge", "relay-b", Duration::from_secs(10)).await;
    eprintln!("rerouted via relay-b {} ms after the latency change", took.as_millis());
    // Past make-before-break, relay-b alone carries the stream: over a second (five objects), relay-a sends
    // the edge nothing and relay-b something.
    until(Duration::from_secs(15), "the stream moves from relay-a to relay-b", async || {
        let (a, b) = (sent(&mesh, "relay-a").await, sent(&mesh, "relay-b").await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        sent(&mesh, "relay-a").await == a && sent(&mesh, "relay-b").await > b
    })
    .await;
    publisher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detour_wins_over_a_slow_direct_link() {
    let mesh = emulated(
        52,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay", roles: &["relay"] },
            NodeSpec { id: "edge", roles: &["edge"] },
        ],
        &[("origin", "edge", 150.0), ("origin", "relay", 40.0), ("relay", "edge", 40.0)],
    );
    mesh.wait_healthy().await;
    let publisher = trickle(mesh.http("origin"));
    get_eventually(&format!("http://{}/live/s/o2.ts", mesh.http("edge"))).await;
    next_hop_becomes(&mesh, "edge", "relay", Duration::from_secs(15)).await;
    // Past make-before-break, the relay alone carries the stream: over a second (five objects), the origin
    // sends the edge nothing directly and the relay sends it something.
    let direct = async || mesh.metric("origin", "lightpath_mesh_objects_sent_total", &[("peer", "edge")]).await;
    until(Duration::from_secs(15), "the stream moves from the direct link to the relay", async || {
        let (before, straight) = (sent(&mesh, "relay").await, direct().await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        sent(&mesh, "relay").await > before && direct().await == straight
    })
    .await;
    publisher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_edge_answers_503_then_resumes() {
    let mesh = emulated(
        53,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay", roles: &["relay"] },
            NodeSpec { id: "edge", roles: &["edge"] },
        ],
        &[("origin", "relay", 10.0), ("relay", "edge", 10.0)],
    );
    mesh.wait_healthy().await;
    let publisher = trickle(mesh.http("origin"));
    get_eventually(&format!("http://{}/live/s/o2.ts", mesh.http("edge"))).await;

    set_link(&mesh, "relay", "edge", Some(10.0), false).await;
    let cut = Instant::now();
    let status = loop {
        let started = Instant::now();
        let resp = client().get(format!("http://{}/live/s/o9999.ts", mesh.http("edge"))).send().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(8), "a viewer waited {:?}", started.elapsed());
        if resp.status() == 503 {
            assert!(resp.headers().contains_key("retry-after"), "503 without Retry-After");
            break resp.status();
        }
        assert!(cut.elapsed() < Duration::from_secs(10), "the cut-off edge still answers {}", resp.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("partitioned edge answers {status} after {} ms", cut.elapsed().as_millis());

    set_link(&mesh, "relay", "edge", Some(10.0), true).await;
    let healed = Instant::now();
    // The stream resumes by itself: a newly published object arrives at the edge.
    loop {
        let text = client().get(format!("http://{}/live/s/o2.ts", mesh.http("origin"))).send().await.unwrap();
        assert!(text.status().is_success());
        let n = mesh.metric("origin", "lightpath_ingest_objects_total", &[("stream", "s")]).await as u64;
        let resp = client().get(format!("http://{}/live/s/o{}.ts", mesh.http("edge"), n + 1)).send().await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(30), "the stream never resumed after the partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("resumed {} ms after healing", healed.elapsed().as_millis());
    publisher.abort();
}

/// UDP bytes node `a` sent to `b` over `window`, from `a`'s `/metrics`.
async fn udp_bytes_over(mesh: &Cluster, a: &str, b: &str, window: Duration) -> f64 {
    let labels = [("node", a), ("peer", b)];
    let name = "lightpath_mesh_udp_bytes_sent_total";
    let start = Instant::now();
    while mesh.metric(a, name, &labels).await == 0.0 {
        assert!(start.elapsed() < Duration::from_secs(20), "{a} never counted UDP bytes to {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = mesh.metric(a, name, &labels).await;
    tokio::time::sleep(window).await;
    mesh.metric(a, name, &labels).await - before
}

/// `[probes]` in the node config sets how often links are probed: with 20 ms intervals an idle link carries
/// tens of probes a second, with the defaults (1 s while idle) about one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_intervals_follow_the_node_config() {
    let nodes = [NodeSpec { id: "a", roles: &["origin"] }, NodeSpec { id: "b", roles: &["edge"] }];
    let window = Duration::from_secs(3);
    let mut fast = Cluster::new(61, &nodes, &[("a", "b", 1.0)], "[probes]\nfast_ms = 20\nslow_ms = 20\n");
    fast.start_all();
    fast.wait_healthy().await;
    let fast_bytes = udp_bytes_over(&fast, "a", "b", window).await;
    drop(fast);
    let mut default = Cluster::new(62, &nodes, &[("a", "b", 1.0)], "");
    default.start_all();
    default.wait_healthy().await;
    let default_bytes = udp_bytes_over(&default, "a", "b", window).await;
    // 150 probes and as many replies in 3 s against about 3 of each (plus keep-alives and ACKs): far apart
    // whatever the packets' exact sizes.
    assert!(
        fast_bytes > 5.0 * default_bytes && fast_bytes > 4000.0,
        "UDP bytes a -> b in {window:?}: {fast_bytes} with 20 ms probes, {default_bytes} with the defaults"
    );
}
