//! The control plane as operators see it: its API, and what happens when every replica dies.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn api(mesh: &Cluster, control: &str, what: &str) -> serde_json::Value {
    try_api(mesh, control, what).await.unwrap_or_else(|| panic!("/api/{what} of {control} did not answer"))
}

async fn try_api(mesh: &Cluster, control: &str, what: &str) -> Option<serde_json::Value> {
    let url = format!("http://{}/api/{what}", mesh.http(control));
    let text = client().get(url).send().await.ok()?.text().await.ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

/// Waits until `check` holds for the API answer, up to 30 s (measured costs take longer to settle while the
/// machine is busy with other tests); on failure, shows what the nodes report of their links too.
async fn api_until(
    mesh: &Cluster,
    control: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = try_api(mesh, control, what).await.unwrap_or_default();
        if check(&v) {
            return v;
        }
        if Instant::now() >= deadline {
            let links = try_api(mesh, control, "links").await.unwrap_or_default();
            panic!("/api/{what} of {control} never settled: {v:#}\nwhat the nodes report of their links: {links:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`two_relays`] with its links' latencies (5 and 10 ms) emulated, and `extra` in each mesh node's config.
/// The emulated latencies decide the routes: on bare loopback every link measures well under the damper's
/// 2 ms margin, so whichever path a noisy first probe favoured (relay-a through the edge, once) is kept,
/// correctly by the margins, and the edge is left without a backup.
fn emulated_two_relays(ip_base: u8, controls: &[&str], extra: &str) -> Cluster {
    let mesh = two_relays(ip_base, controls);
    for node in ["origin", "relay-a", "relay-b", "edge"] {
        mesh.append_config(node, &format!("\n[links]\nemulate = true\n{extra}"));
    }
    mesh
}

fn version(routes: &serde_json::Value, node: &str) -> u64 {
    routes[node]["version"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_and_the_stream_survives_their_death() {
    let mut mesh = emulated_two_relays(41, &["control-1", "control-2"], "");
    mesh.start_all();
    mesh.wait_healthy().await;

    // Both replicas learn every node's links from the reports and compute the same routes.
    // Settled: every node has a route to the origin, and the edge a backup through the other relay.
    let full = |v: &serde_json::Value| {
        ["relay-a", "relay-b", "edge"].iter().all(|n| v[n]["routes"].as_array().is_some_and(|r| !r.is_empty()))
            && v["edge"]["routes"][0]["backup"].is_string()
    };
    // The two are read one after the other, so a report landing in between can part them for a moment: they
    // must come to agree.
    let nodes = ["relay-a", "relay-b", "edge"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (one, two) = loop {
        let one = api_until(&mesh, "control-1", "routes", full).await;
        let two = api_until(&mesh, "control-2", "routes", full).await;
        if nodes.iter().all(|n| one[n]["routes"] == two[n]["routes"]) {
            break (one, two);
        }
        assert!(Instant::now() < deadline, "the replicas never agreed: {one:#} against {two:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for node in nodes {
        assert_eq!(one[node]["routes"], two[node]["routes"], "replicas disagree on {node}");
        let route = &one[node]["routes"][0];
        assert_eq!(route["origin"], "origin");
        assert_ne!(route["backup"], route["next_hop"], "{node}'s backup is its next hop");
    }
    // Routes can settle on three nodes' reports (the fourth's links are seen from their other ends), so a node
    // whose first dial found control-1 not yet listening reports a moment later: every link comes to be
    // measured from both ends.
    let measured = |v: &serde_json::Value| {
        let links = v.as_array().map(|l| l.as_slice()).unwrap_or_default();
        links.iter().filter(|l| l["up"] == true && l["rtt_ms"].as_f64().is_some_and(|r| r > 0.0)).count() == 8
    };
    api_until(&mesh, "control-1", "links", measured).await;

    // A stream flows; the API shows its tree.
    let key = format!("Bearer {KEY}");
    let origin = mesh.http("origin");
    let put = |name: &'static str| {
        let url = format!("http://{origin}/live/s/{name}");
        client().put(url).header("Authorization", key.clone()).body(name.as_bytes().to_vec()).send()
    };
    assert_eq!(put("one.ts").await.unwrap().status(), 201);
    get_eventually(&format!("http://{}/live/s/one.ts", mesh.http("edge"))).await;
    let streams =
        api_until(&mesh, "control-1", "streams", |v| v[0]["tree"].as_array().is_some_and(|t| t.len() == 3)).await;
    assert_eq!(streams[0]["origin"], "origin", "{streams:#}");
    let nodes = api(&mesh, "control-1", "nodes").await;
    assert_eq!(nodes.as_array().unwrap().len(), 4);

    // Every replica dies: once the nodes have seen both sessions end, objects keep flowing on the last tables.
    let edge_routes = version(&one, "edge");
    let nodes = ["origin", "relay-a", "relay-b", "edge"];
    let ended = |mesh: &Cluster, node: &str| mesh.log(node).matches("control session ended").count();
    let before: Vec<usize> = nodes.iter().map(|n| ended(&mesh, n)).collect();
    mesh.kill("control-1");
    mesh.kill("control-2");
    let deadline = Instant::now() + Duration::from_secs(30);
    for (node, before) in nodes.iter().zip(before) {
        while ended(&mesh, node) < before + 2 {
            assert!(Instant::now() < deadline, "{node} never saw the replicas go:\n{}", mesh.log(node));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(put("two.ts").await.unwrap().status(), 201);
    assert_eq!(get_eventually(&format!("http://{}/live/s/two.ts", mesh.http("edge"))).await, b"two.ts");

    // Local failover still works on the last table: the relay feeding the edge dies, the backup takes over.
    let received = "lightpath_mesh_objects_received_total";
    let via_a = mesh.metric("edge", received, &[("peer", "relay-a")]).await;
    let via_b = mesh.metric("edge", received, &[("peer", "relay-b")]).await;
    let victim = if via_a >= via_b { "relay-a" } else { "relay-b" };
    let survivor = if victim == "relay-a" { "relay-b" } else { "relay-a" };
    mesh.kill(victim);
    assert_eq!(put("after-kill.ts").await.unwrap().status(), 201);
    assert_eq!(get_eventually(&format!("http://{}/live/s/after-kill.ts", mesh.http("edge"))).await, b"after-kill.ts");
    assert!(
        mesh.metric("edge", received, &[("peer", survivor)]).await > 0.0,
        "the edge did not fail over to {survivor}"
    );

    // A replica comes back: nodes reconnect by themselves and take its tables, of a higher version.
    mesh.start("control-2");
    let live = |v: &serde_json::Value| {
        [survivor, "edge"].iter().all(|n| v[n]["routes"].as_array().is_some_and(|r| !r.is_empty()))
            && v["edge"]["routes"][0]["next_hop"] == survivor
    };
    let back = api_until(&mesh, "control-2", "routes", live).await;
    assert!(version(&back, "edge") > edge_routes, "the restarted replica's tables are not newer");
    let deadline = Instant::now() + Duration::from_secs(15);
    while mesh.log("edge").matches("applying routes from the control plane").count() < 2 {
        assert!(Instant::now() < deadline, "the edge never applied the new replica's routes:\n{}", mesh.log("edge"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(put("three.ts").await.unwrap().status(), 201);
    assert_eq!(get_eventually(&format!("http://{}/live/s/three.ts", mesh.http("edge"))).await, b"three.ts");
}

/// A replica killed and started again at once (a crash and its supervisor's restart): the nodes drop their
/// dead sessions at the restarted replica's first stateless reset, not after the 5 s idle timeout, reconnect
/// and get routes from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_at_once_has_every_node_back_within_seconds() {
    let mut mesh = emulated_two_relays(42, &["control-1"], "");
    mesh.start_all();
    mesh.wait_healthy().await;
    let routed = |v: &serde_json::Value| {
        ["relay-a", "relay-b", "edge"].iter().all(|n| v[n]["routes"].as_array().is_some_and(|r| !r.is_empty()))
    };
    api_until(&mesh, "control-1", "routes", routed).await;
    let nodes = ["origin", "relay-a", "relay-b", "edge"];
    let connected = |mesh: &Cluster, node: &str| mesh.log(node).matches("connected to the control plane").count();
    let before: Vec<usize> = nodes.iter().map(|n| connected(&mesh, n)).collect();

    mesh.kill("control-1");
    mesh.start("control-1");
    let restarted = Instant::now();
    for (node, before) in nodes.into_iter().zip(before) {
        while connected(&mesh, node) <= before {
            assert!(
                restarted.elapsed() < Duration::from_secs(20),
                "{node} never reconnected to the restarted replica:\n{}",
                mesh.log(node)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let took = restarted.elapsed();
    eprintln!("every node reconnected {} ms after the replica's restart", took.as_millis());
    // Before stateless resets were keyed from the replica's own key, the nodes held the dead sessions for the
    // 5 s idle timeout.
    assert!(took < Duration::from_secs(4), "the nodes took {} ms to reconnect", took.as_millis());
    api_until(&mesh, "control-1", "routes", routed).await;
}

/// libfaketime, which sets a process's wall clock off (Debian's `faketime` package; scripts/test installs it).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Two replicas, one with its wall clock an hour ahead (a VM whose clock was never set, say): the nodes take
/// its tables, whose versions (times of change) are the highest. It dies; the mesh changes (relay-a's link
/// to the origin gets slow). The other replica's tables, whose versions are an hour lower, must still be
/// taken: the stream moves to relay-b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_with_its_clock_ahead_does_not_freeze_the_routes() {
    assert!(std::path::Path::new(LIBFAKETIME).exists(), "apt-get install -y faketime (scripts/test does this)");
    let mut mesh = emulated_two_relays(43, &["control-1", "control-2"], &format!("[admin]\ntoken = \"{ADMIN}\"\n"));
    for node in ["origin", "relay-a", "relay-b", "edge"] {
        mesh.start(node);
    }
    mesh.start("control-2");
    let ahead = [("LD_PRELOAD", LIBFAKETIME), ("FAKETIME", "+1h"), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];
    mesh.start_with_env("control-1", &ahead);
    mesh.wait_healthy().await;

    // Both replicas route the edge through relay-a (5 + 5 ms against 10 + 10); control-1's versions are an
    // hour ahead, and the edge holds one of them.
    let via = |relay: &'static str| move |v: &serde_json::Value| v["edge"]["routes"][0]["next_hop"] == relay;
    let ahead_routes = api_until(&mesh, "control-1", "routes", via("relay-a")).await;
    let routes = api_until(&mesh, "control-2", "routes", via("relay-a")).await;
    assert!(
        version(&ahead_routes, "edge") > version(&routes, "edge") + 3_000_000,
        "control-1's clock is not ahead: {ahead_routes:#} against {routes:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mesh.log("edge").contains("applying routes from the control plane control=control-1") {
        assert!(Instant::now() < deadline, "the edge never took control-1's table:\n{}", mesh.log("edge"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = format!("Bearer {KEY}");
    let origin = mesh.http("origin");
    let put = |n: u32| {
        let url = format!("http://{origin}/live/s/o{n}.ts");
        client().put(url).header("Authorization", key.clone()).body(vec![n as u8; 1000]).send()
    };
    assert_eq!(put(0).await.unwrap().status(), 201);
    get_eventually(&format!("http://{}/live/s/o0.ts", mesh.http("edge"))).await;

    // control-1 dies; relay-a's way gets slow (40 + 5 ms), and control-2 routes the edge through relay-b,
    // whether the edge hears of that before or after it finds control-1 gone.
    mesh.kill("control-1");
    set_link(&mesh, "origin", "relay-a", Some(40.0), true).await;
    api_until(&mesh, "control-2", "routes", via("relay-b")).await;
    let received = "lightpath_mesh_objects_received_total";
    let before = mesh.metric("edge", received, &[("peer", "relay-b")]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 1.. {
        assert_eq!(put(n).await.unwrap().status(), 201);
        if mesh.metric("edge", received, &[("peer", "relay-b")]).await > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge kept the dead replica's route through relay-a:\n{}",
            mesh.log("edge")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
