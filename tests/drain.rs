//! An operator drains a node before stopping it (a rolling upgrade): real node processes, a real control
//! replica, ffmpeg publishing and playing.
//!
//! - With another path: the drained relay's stream moves to the other relay make-before-break, the relay is
//!   then killed, and the viewer at the edge gets every segment, byte for byte, with no gap in the media
//!   sequence, and ffmpeg decodes the whole stream.
//! - As the only path: draining does not cut the stream (the relay keeps carrying it while nothing else
//!   can); a draining edge refuses a stream it does not carry with 503 and `Retry-After` and keeps serving
//!   the one it does; undraining puts both back in service.

mod common;

use std::time::{Duration, Instant};

use common::*;

const ADMIN: &str = "drain-test-admin-token";

fn with_admin(mesh: &Cluster, nodes: &[&str]) {
    for node in nodes {
        mesh.append_config(node, &format!("\n[admin]\ntoken = \"{ADMIN}\"\n"));
    }
}

/// `METHOD /admin/drain` on `node` with the admin token: the status and the node's drain state.
async fn drain(mesh: &Cluster, node: &str, method: reqwest::Method) -> (u16, serde_json::Value) {
    let url = format!("http://{}/admin/drain", mesh.http(node));
    let resp = client().request(method, url).bearer_auth(ADMIN).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("/admin/drain of {node}: {e}: {text}")))
}

/// The control replica's `/api/nodes` entry of `node`.
async fn node_view(mesh: &Cluster, node: &str) -> Option<serde_json::Value> {
    let url = format!("http://{}/api/nodes", mesh.http("control-1"));
    let text = client().get(url).send().await.ok()?.text().await.ok()?;
    let nodes: serde_json::Value = serde_json::from_str(&text).ok()?;
    nodes.as_array()?.iter().find(|n| n["id"] == node).cloned()
}

/// What the viewer at the edge saw, checked against the origin: every segment, identical bytes, no gap in
/// the media sequence; and ffmpeg decoded the whole stream without an error.
async fn assert_nothing_lost(
    origin: tokio::task::JoinHandle<Seen>,
    edge: tokio::task::JoinHandle<Seen>,
    player: tokio::task::JoinHandle<std::io::Result<std::process::Output>>,
) {
    let (origin, edge) = (origin.await.unwrap(), edge.await.unwrap());
    assert!(origin.ended && edge.ended, "a playlist never ended (origin {}, edge {})", origin.ended, edge.ended);
    assert!(origin.sequence.len() >= 12, "only {} segments published", origin.sequence.len());
    assert_eq!(edge.sequence, origin.sequence, "the edge lists other segments than the origin");
    for (uri, bytes) in &origin.objects {
        assert!(edge.objects.get(uri) == Some(bytes), "the edge lost or changed {uri}");
    }
    let first = *edge.sequence.keys().next().unwrap();
    let last = *edge.sequence.keys().last().unwrap();
    assert_eq!(edge.sequence.len() as u64, last - first + 1, "gap in the edge's media sequence");
    let out = player.await.unwrap().unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && errors.trim().is_empty(), "the player at the edge saw errors: {errors}");
}

/// Starts ffmpeg playing the edge's playlist to the end, once the stream is live there.
async fn play_at_edge(mesh: &Cluster) -> tokio::task::JoinHandle<std::io::Result<std::process::Output>> {
    let playlist = format!("http://{}/live/s/index.m3u8", mesh.http("edge"));
    get_eventually(&playlist).await;
    let mut ffmpeg = tokio::process::Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-v", "error", "-i", &playlist, "-f", "null", "-"]);
    tokio::spawn(async move { ffmpeg.output().await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_relay_hands_its_stream_over_and_stopping_it_loses_no_segment() {
    require("ffmpeg");
    let mut mesh = two_relays(170, &["control-1"]);
    with_admin(&mesh, &["relay-a", "relay-b"]);
    mesh.start_all();
    mesh.wait_healthy().await;

    let log = mesh.dir.path().join("ffmpeg-publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 24, false, &log);
    let limit = Duration::from_secs(90);
    let origin = tokio::spawn(follow(mesh.http("origin"), "s", limit));
    let edge = tokio::spawn(follow(mesh.http("edge"), "s", limit));
    let player = play_at_edge(&mesh).await;

    // The relay that carries the stream to the edge, by its own account.
    let carrier = common::eventually(Duration::from_secs(20), "a relay relaying s to the edge", || async {
        for relay in ["relay-a", "relay-b"] {
            if drain(&mesh, relay, reqwest::Method::GET).await.1["relayed"] == serde_json::json!(["s"]) {
                return Some(relay);
            }
        }
        None
    })
    .await;
    let other = if carrier == "relay-a" { "relay-b" } else { "relay-a" };

    // Without the token, no drain.
    let url = format!("http://{}/admin/drain", mesh.http(carrier));
    assert_eq!(client().post(&url).send().await.unwrap().status(), 401);
    let (status, state) = drain(&mesh, carrier, reqwest::Method::POST).await;
    assert_eq!((status, &state["draining"]), (202, &serde_json::json!(true)), "{state}");
    let drained = Instant::now();
    common::eventually(Duration::from_secs(10), "the control plane showing the relay draining", || async {
        (node_view(&mesh, carrier).await?["draining"] == true).then_some(())
    })
    .await;
    assert_eq!(mesh.metric(carrier, "lightpath_node_draining", &[("node", carrier)]).await, 1.0);
    // The edge moves to the other relay, make-before-break; the drained one then relays nothing.
    common::eventually(Duration::from_secs(30), "the drained relay relaying nothing", || async {
        drain(&mesh, carrier, reqwest::Method::GET).await.1["relayed"].as_array()?.is_empty().then_some(())
    })
    .await;
    eprintln!("{carrier} drained in {} ms", drained.elapsed().as_millis());
    assert_eq!(drain(&mesh, other, reqwest::Method::GET).await.1["relayed"], serde_json::json!(["s"]));
    let through_other =
        mesh.metric("edge", "lightpath_mesh_objects_received_total", &[("peer", other), ("stream", "s")]).await;
    assert!(through_other > 0.0, "the edge received nothing through {other}");

    // The upgrade stops the drained relay: the viewer does not notice, and the edge has nothing to move.
    let subscriptions = mesh.log("edge").matches("subscribing upstream").count();
    mesh.kill(carrier);
    let status = tokio::task::spawn_blocking(move || publisher.wait()).await.unwrap().unwrap();
    assert!(status.success(), "publisher failed: {}", std::fs::read_to_string(&log).unwrap());
    assert_nothing_lost(origin, edge, player).await;
    assert_eq!(
        mesh.log("edge").matches("subscribing upstream").count(),
        subscriptions,
        "the edge subscribed anew after {carrier} stopped: the drain had not moved the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_only_path_cuts_no_viewer_and_a_draining_edge_refuses_new_streams() {
    require("ffmpeg");
    let mut mesh = Cluster::with_controls(
        171,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay", roles: &["relay"] },
            NodeSpec { id: "edge", roles: &["edge"] },
        ],
        &[("origin", "relay", 5.0), ("relay", "edge", 5.0)],
        &["control-1"],
        "",
    );
    with_admin(&mesh, &["relay", "edge"]);
    mesh.start_all();
    mesh.wait_healthy().await;

    let log = mesh.dir.path().join("ffmpeg-publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 20, false, &log);
    let limit = Duration::from_secs(90);
    let origin = tokio::spawn(follow(mesh.http("origin"), "s", limit));
    let edge = tokio::spawn(follow(mesh.http("edge"), "s", limit));
    let player = play_at_edge(&mesh).await;

    for node in ["relay", "edge"] {
        assert_eq!(drain(&mesh, node, reqwest::Method::POST).await.0, 202);
    }
    for node in ["relay", "edge"] {
        common::eventually(Duration::from_secs(10), "the control plane showing the node draining", || async {
            (node_view(&mesh, node).await?["draining"] == true).then_some(())
        })
        .await;
    }
    // Nothing else leads to the edge: the relay keeps carrying the stream while segments keep coming.
    let received = ("lightpath_mesh_objects_received_total", [("peer", "relay"), ("stream", "s")]);
    let at_drain = mesh.metric("edge", received.0, &received.1).await;
    common::eventually(Duration::from_secs(20), "three more objects at the edge through the drained relay", || async {
        (mesh.metric("edge", received.0, &received.1).await >= at_drain + 3.0).then_some(())
    })
    .await;
    assert_eq!(drain(&mesh, "relay", reqwest::Method::GET).await.1["relayed"], serde_json::json!(["s"]));

    // A draining edge starts no stream: a new one gets 503 with Retry-After; the one it carries plays on.
    let key = format!("Bearer {KEY}");
    let put = client()
        .put(format!("http://{}/live/live2/one.ts", mesh.http("origin")))
        .header("Authorization", key)
        .body(b"one".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let new_stream = format!("http://{}/live/live2/one.ts", mesh.http("edge"));
    let refused = client().get(&new_stream).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert!(refused.text().await.unwrap().contains("draining"));
    let carried = client().get(format!("http://{}/live/s/index.m3u8", mesh.http("edge"))).send().await.unwrap();
    assert_eq!(carried.status(), 200, "the draining edge stopped serving the stream it carries");

    // Back in service: the state clears everywhere, and the edge takes the new stream.
    for node in ["relay", "edge"] {
        let (status, state) = drain(&mesh, node, reqwest::Method::DELETE).await;
        assert_eq!((status, &state["draining"]), (200, &serde_json::json!(false)), "{state}");
        assert_eq!(mesh.metric(node, "lightpath_node_draining", &[("node", node)]).await, 0.0);
        common::eventually(Duration::from_secs(10), "the control plane showing the node in service", || async {
            (node_view(&mesh, node).await?["draining"] == false).then_some(())
        })
        .await;
    }
    assert_eq!(get_eventually(&new_stream).await, b"one");

    let status = tokio::task::spawn_blocking(move || publisher.wait()).await.unwrap().unwrap();
    assert!(status.success(), "publisher failed: {}", std::fs::read_to_string(&log).unwrap());
    assert_nothing_lost(origin, edge, player).await;
}
