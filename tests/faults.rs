//! Faults one step aside from the rehearsed path, each of which once froze a stream for good or could: an
//! origin or a relay killed and restarted at once, and a link cut next to the origin with no control replica
//! running. Real
//! node processes, real ffmpeg.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The numbers of the media segments a playlist lists (ffmpeg names them `indexN.ts`).
fn segments(playlist: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().strip_suffix(".ts")?.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .collect()
}

async fn playlist(addr: std::net::SocketAddr) -> Option<String> {
    let resp = client().get(format!("http://{addr}/live/s/index.m3u8")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// Lines of `node`'s log where it subscribed upstream, as the upstream they name.
fn upstreams_chosen(mesh: &Cluster, node: &str) -> Vec<String> {
    mesh.log(node)
        .lines()
        .filter(|l| l.contains("subscribing upstream"))
        .filter_map(|l| Some(l.split("upstream=").nth(1)?.split_whitespace().next()?.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_killed_and_restarted_at_once_is_subscribed_to_again() {
    killed_and_restarted_at_once(71, "origin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_and_restarted_at_once_is_subscribed_to_again() {
    killed_and_restarted_at_once(73, "relay").await;
}

/// origin -> relay -> edge with a live ffmpeg stream: `victim` is killed (`kill -9`) and started again at
/// once; the edge serves segments ingested after the restart within 2 s of it, and the stream goes on.
async fn killed_and_restarted_at_once(ip_base: u8, victim: &str) {
    require("ffmpeg");
    let mut mesh = Cluster::new(
        ip_base,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay", roles: &["relay"] },
            NodeSpec { id: "edge", roles: &["edge"] },
        ],
        &[("origin", "relay", 5.0), ("relay", "edge", 5.0)],
        "",
    );
    mesh.start_all();
    mesh.wait_healthy().await;
    let log = mesh.dir.path().join("ffmpeg-publish.log");
    // The publisher goes on through the origin's restart, as a production encoder does.
    let mut publisher = publish_with(mesh.http("origin"), "s", 40, false, &["-ignore_io_errors", "1"], &log);

    // The stream runs through origin -> relay -> edge.
    let edge = mesh.http("edge");
    let deadline = Instant::now() + Duration::from_secs(20);
    while playlist(edge).await.map(|p| segments(&p)).is_none_or(|s| s.len() < 3) {
        assert!(Instant::now() < deadline, "the edge never served the stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The newest segment the origin holds when it dies; any later one was ingested after the restart.
    let before = segments(&playlist(mesh.http("origin")).await.unwrap()).into_iter().max().unwrap();
    mesh.kill(victim);
    mesh.start(victim);
    let restarted = Instant::now();
    // The edge serves a segment that the restarted origin ingested.
    let newer = loop {
        if let Some(newer) = playlist(edge).await.and_then(|p| segments(&p).into_iter().filter(|n| *n > before).max()) {
            break newer;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the edge still serves the playlist of before the restart (newest segment {before})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = restarted.elapsed();
    eprintln!(
        "{victim} restarted: the edge lists segment {newer} (newest before: {before}) after {} ms",
        took.as_millis()
    );
    let body = get_eventually(&format!("http://{edge}/live/s/index{newer}.ts")).await;
    assert!(!body.is_empty());
    // A segment takes up to one segment duration (1 s) to be cut by the encoder after the restart.
    assert!(
        took < Duration::from_secs(2),
        "the edge served new segments {} ms after the restart\nedge:\n{}\n{victim}:\n{}",
        took.as_millis(),
        mesh.log("edge"),
        mesh.log(victim)
    );

    // And it keeps going.
    let deadline = Instant::now() + Duration::from_secs(10);
    while playlist(edge).await.and_then(|p| segments(&p).into_iter().max()).is_none_or(|n| n < newer + 3) {
        assert!(Instant::now() < deadline, "the stream stopped after the first new segment");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_next_to_the_origin_without_control_moves_the_stream_to_the_other_relay() {
    require("ffmpeg");
    let mut mesh = Cluster::new(
        72,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay-a", roles: &["relay"] },
            NodeSpec { id: "relay-b", roles: &["relay"] },
            NodeSpec { id: "edge", roles: &["edge"] },
        ],
        &[("origin", "relay-a", 5.0), ("origin", "relay-b", 10.0), ("relay-a", "edge", 5.0), ("relay-b", "edge", 10.0)],
        &format!("[admin]\ntoken = \"{ADMIN}\"\n"),
    );
    mesh.start_all();
    mesh.wait_healthy().await;

    let log = mesh.dir.path().join("ffmpeg-publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 20, false, &log);
    let limit = Duration::from_secs(60);
    let origin = tokio::spawn(follow(mesh.http("origin"), "s", limit));
    let edge = tokio::spawn(follow(mesh.http("edge"), "s", limit));

    let received = |peer: &'static str| {
        let mesh = &mesh;
        async move { mesh.metric("edge", "lightpath_mesh_objects_received_total", &[("peer", peer)]).await }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while received("relay-a").await < 3.0 {
        assert!(Instant::now() < deadline, "the stream never went through relay-a");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Cut origin <-> relay-a on both ends; nothing tells the edge.
    let before = received("relay-b").await;
    set_link(&mesh, "origin", "relay-a", None, false).await;
    let cut = Instant::now();
    while received("relay-b").await <= before {
        assert!(cut.elapsed() < Duration::from_secs(10), "nothing came through relay-b after the cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = cut.elapsed();
    eprintln!("origin-relay-a cut: first object through relay-b after {} ms", took.as_millis());
    assert!(took < Duration::from_secs(1), "the stream moved to relay-b {} ms after the cut", took.as_millis());

    let status = tokio::task::spawn_blocking(move || publisher.wait()).await.unwrap().unwrap();
    assert!(status.success(), "publisher failed: {}", std::fs::read_to_string(&log).unwrap());
    let origin = origin.await.unwrap();
    let edge = edge.await.unwrap();
    assert!(origin.ended && edge.ended, "a playlist never ended");
    for (uri, bytes) in &origin.objects {
        assert!(edge.objects.get(uri) == Some(bytes), "the edge lost or changed {uri}");
    }
    let first = *edge.sequence.keys().next().unwrap();
    let last = *edge.sequence.keys().last().unwrap();
    assert_eq!(edge.sequence.len() as u64, last - first + 1, "gap in media sequence");

    // Nobody subscribed to a node downstream of it: the edge is downstream of both relays, and the origin
    // has no upstream.
    for relay in ["relay-a", "relay-b"] {
        let chosen = upstreams_chosen(&mesh, relay);
        assert!(!chosen.iter().any(|u| u == "edge"), "{relay} subscribed to its own subscriber: {chosen:?}");
    }
    assert!(upstreams_chosen(&mesh, "origin").is_empty(), "the origin subscribed upstream");
    let sent_by_edge = mesh.metric("edge", "lightpath_mesh_objects_sent_total", &[]).await;
    assert_eq!(sent_by_edge, 0.0, "the edge forwarded objects upstream");
}
