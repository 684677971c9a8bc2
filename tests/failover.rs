//! Measured routing under failure: a relay carrying a live stream is killed, the control plane dies.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The relay the edge currently receives the stream from, by the objects it has received.
async fn carrier(mesh: &Cluster) -> Option<&'static str> {
    let mut best = None;
    let mut most = 0.0;
    for relay in ["relay-a", "relay-b"] {
        let n = mesh.metric(relay, "lightpath_mesh_objects_sent_total", &[("peer", "edge"), ("stream", "s")]).await;
        if n > most {
            most = n;
            best = Some(relay);
        }
    }
    best
}

async fn relay_dies_mid_stream(ip_base: u8, controls: &[&str]) {
    require("ffmpeg");
    let mut mesh = two_relays(ip_base, controls);
    mesh.start_all();
    mesh.wait_healthy().await;

    let log = mesh.dir.path().join("ffmpeg-publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 20, false, &log);
    let limit = Duration::from_secs(60);
    let origin = tokio::spawn(follow(mesh.http("origin"), "s", limit));
    let edge = tokio::spawn(follow(mesh.http("edge"), "s", limit));
    get_eventually(&format!("http://{}/live/s/index.m3u8", mesh.http("edge"))).await;
    // The player runs from now on (spawned: a future not polled would start it only after the stream ended).
    let player = tokio::spawn(
        tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-i"])
            .arg(format!("http://{}/live/s/index.m3u8", mesh.http("edge")))
            .args(["-f", "null", "-"])
            .output(),
    );
    // Mid-stream: a relay has carried a few segments and playlists to the edge.
    let cluster = &mesh;
    let victim = eventually(Duration::from_secs(20), "a relay carrying s to the edge", || async move {
        let victim = carrier(cluster).await?;
        let sent =
            cluster.metric(victim, "lightpath_mesh_objects_sent_total", &[("peer", "edge"), ("stream", "s")]).await;
        (sent >= 6.0).then_some(victim)
    })
    .await;
    let backup = if victim == "relay-a" { "relay-b" } else { "relay-a" };
    let before = mesh.metric("edge", "lightpath_mesh_objects_received_total", &[("peer", backup)]).await;
    mesh.kill(victim);
    let killed = Instant::now();
    loop {
        let now = mesh.metric("edge", "lightpath_mesh_objects_received_total", &[("peer", backup)]).await;
        if now > before {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "nothing came through {backup} after killing {victim}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = killed.elapsed();
    eprintln!("killed {victim}: first object through {backup} after {} ms", took.as_millis());

    let status = tokio::task::spawn_blocking(move || publisher.wait()).await.unwrap().unwrap();
    assert!(status.success(), "publisher failed: {}", std::fs::read_to_string(&log).unwrap());
    let origin = origin.await.unwrap();
    let edge = edge.await.unwrap();
    assert!(origin.ended && edge.ended, "a playlist never ended");
    assert_eq!(edge.sequence, origin.sequence, "the edge lists other segments than the origin");
    for (uri, bytes) in &origin.objects {
        assert!(edge.objects.get(uri) == Some(bytes), "the edge lost or changed {uri}");
    }
    let first = *edge.sequence.keys().next().unwrap();
    let last = *edge.sequence.keys().last().unwrap();
    assert_eq!(edge.sequence.len() as u64, last - first + 1, "gap in media sequence");
    let out = player.await.unwrap().unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && errors.trim().is_empty(), "the player saw errors: {errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_costs_no_segment_with_the_control_plane() {
    relay_dies_mid_stream(31, &["control-1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_costs_no_segment_without_a_control_plane() {
    relay_dies_mid_stream(32, &[]).await;
}
