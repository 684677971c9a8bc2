//! The live path end to end: ffmpeg publishes into an origin process, the stream crosses a relay process
//! over QUIC, and two edge processes serve it to real players.

mod common;

use std::time::Duration;

use common::*;

fn diamond_free_mesh(ip_base: u8) -> Cluster {
    // origin -> relay -> {edge1, edge2}: the only path from the origin to an edge is through the relay.
    Cluster::new(
        ip_base,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay", roles: &["relay"] },
            NodeSpec { id: "edge1", roles: &["edge"] },
            NodeSpec { id: "edge2", roles: &["edge"] },
        ],
        &[("origin", "relay", 5.0), ("relay", "edge1", 5.0), ("relay", "edge2", 5.0)],
        "",
    )
}

async fn live_path(ip_base: u8, fmp4: bool) {
    require("ffmpeg");
    let mut mesh = diamond_free_mesh(ip_base);
    mesh.start_all();
    mesh.wait_healthy().await;

    let publisher_log = mesh.dir.path().join("ffmpeg-publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 22, fmp4, &publisher_log);
    let limit = Duration::from_secs(60);
    let origin = tokio::spawn(follow(mesh.http("origin"), "s", limit));
    let edge1 = tokio::spawn(follow(mesh.http("edge1"), "s", limit));
    let edge2 = tokio::spawn(follow(mesh.http("edge2"), "s", limit));

    // A real player at each edge, joining once the stream is live there: its playlist lists a segment.
    for edge in ["edge1", "edge2"] {
        let url = format!("http://{}/live/s/index.m3u8", mesh.http(edge));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let resp = client().get(&url).send().await.unwrap();
            if resp.status() == 200 && resp.text().await.unwrap().contains("#EXTINF") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the stream never went live at {edge}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let players: Vec<_> = ["edge1", "edge2"]
        .iter()
        .map(|e| {
            tokio::process::Command::new("ffmpeg")
                .args(["-hide_banner", "-v", "error", "-i"])
                .arg(format!("http://{}/live/s/index.m3u8", mesh.http(e)))
                .args(["-f", "null", "-"])
                .output()
        })
        .collect();

    let status = tokio::task::spawn_blocking(move || publisher.wait()).await.unwrap().unwrap();
    assert!(status.success(), "publisher failed: {}", std::fs::read_to_string(&publisher_log).unwrap());
    let origin = origin.await.unwrap();
    let edges = [edge1.await.unwrap(), edge2.await.unwrap()];

    assert!(origin.ended, "the origin's playlist never ended");
    let segments = origin.sequence.len();
    assert!(segments >= 18, "only {segments} segments published in 22 s");
    for (name, edge) in ["edge1", "edge2"].iter().zip(&edges) {
        assert!(edge.ended, "{name}'s playlist never ended");
        for (uri, bytes) in &origin.objects {
            let got = edge.objects.get(uri).unwrap_or_else(|| panic!("{name} never served {uri}"));
            assert!(got == bytes, "{name} served {uri} with different bytes");
        }
        let first = *edge.sequence.keys().next().unwrap();
        let last = *edge.sequence.keys().last().unwrap();
        assert_eq!(edge.sequence.len() as u64, last - first + 1, "{name} has a gap in media sequence");
        assert_eq!(edge.sequence, origin.sequence, "{name} and the origin list different segments");
    }
    if fmp4 {
        assert!(origin.objects.contains_key("init.mp4"), "no EXT-X-MAP init segment: {:?}", origin.objects.keys());
    }
    for (edge, player) in ["edge1", "edge2"].iter().zip(players) {
        let out = player.await.unwrap();
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && errors.trim().is_empty(), "player at {edge} failed: {errors}");
    }
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
        .arg(format!("http://{}/live/s/index.m3u8", mesh.http("edge2")))
        .output()
        .unwrap();
    let codecs: std::collections::BTreeSet<String> =
        String::from_utf8_lossy(&probe.stdout).lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
    assert_eq!(codecs, ["h264".to_string()].into(), "{}", String::from_utf8_lossy(&probe.stderr));

    // Fan-out: the origin sent each object to the relay at most once, although two edges pull it.
    let ingested = mesh.metric("origin", "lightpath_ingest_objects_total", &[("stream", "s")]).await;
    let sent = mesh.metric("origin", "lightpath_mesh_objects_sent_total", &[("peer", "relay"), ("stream", "s")]).await;
    let relayed =
        mesh.metric("relay", "lightpath_mesh_objects_received_total", &[("peer", "origin"), ("stream", "s")]).await;
    let to_edge1 =
        mesh.metric("relay", "lightpath_mesh_objects_sent_total", &[("peer", "edge1"), ("stream", "s")]).await;
    let to_edge2 =
        mesh.metric("relay", "lightpath_mesh_objects_sent_total", &[("peer", "edge2"), ("stream", "s")]).await;
    eprintln!("ingested {ingested}, origin->relay {sent}, relay received {relayed}, relay->edge1 {to_edge1}, relay->edge2 {to_edge2}");
    assert!(sent > 0.0 && sent <= ingested, "origin sent {sent} objects to the relay for {ingested} ingested");
    assert_eq!(relayed, sent);
    assert!(to_edge1 > 0.0 && to_edge2 > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpeg_ts_stream_reaches_both_edges_intact() {
    live_path(11, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fmp4_stream_reaches_both_edges_intact() {
    live_path(12, true).await;
}
