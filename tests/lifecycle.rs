//! A stream's life around the rehearsed path, with real node processes and real ffmpeg: a second publisher
//! refused, a backup origin taking over and handing back, the end of a stream (publisher killed, playlist
//! deleted), an operator's takedown and its lift, and a restarted publisher that reuses segment names.

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

async fn get(url: &str) -> (u16, Vec<u8>) {
    match client().get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.bytes().await.map(|b| b.to_vec()).unwrap_or_default()),
        Err(_) => (0, Vec::new()),
    }
}

async fn playlist(addr: SocketAddr, stream: &str) -> Option<String> {
    let (status, body) = get(&format!("http://{addr}/live/{stream}/index.m3u8")).await;
    (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
}

fn media_sequence(playlist: &str) -> u64 {
    playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")?.trim().parse().ok()).unwrap_or(0)
}

fn segments(playlist: &str) -> Vec<String> {
    playlist.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(|l| l.trim().to_owned()).collect()
}

/// Waits up to `limit` for `check` to hold, polling every 20 ms; returns how long it took.
async fn until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn put(addr: SocketAddr, stream: &str, name: &str, body: &'static [u8]) -> (u16, String) {
    let resp = client()
        .put(format!("http://{addr}/live/{stream}/{name}"))
        .header("Authorization", format!("Bearer {KEY}"))
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// origin-a and origin-b both next to one relay, which feeds two edges.
fn two_origins(ip_base: u8, controls: &[&str]) -> Cluster {
    Cluster::with_controls(
        ip_base,
        &[
            NodeSpec { id: "origin-a", roles: &["origin"] },
            NodeSpec { id: "origin-b", roles: &["origin"] },
            NodeSpec { id: "relay", roles: &["relay"] },
            NodeSpec { id: "edge-1", roles: &["edge"] },
            NodeSpec { id: "edge-2", roles: &["edge"] },
        ],
        &[("origin-a", "relay", 5.0), ("origin-b", "relay", 5.0), ("relay", "edge-1", 5.0), ("relay", "edge-2", 5.0)],
        controls,
        &format!("[admin]\ntoken = \"{ADMIN}\"\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_publisher_is_refused_and_viewers_keep_the_first() {
    require("ffmpeg");
    let mut mesh = two_origins(97, &[]);
    mesh.start_all();
    mesh.wait_healthy().await;
    let dir = mesh.dir.path().to_owned();
    let first = publish(mesh.http("origin-a"), "s", 30, false, &dir.join("ffmpeg-a.log"));
    let edge = mesh.http("edge-1");
    until(Duration::from_secs(20), "the edge serves the stream", || async {
        playlist(edge, "s").await.is_some_and(|p| segments(&p).len() >= 2)
    })
    .await;

    // Another origin refuses the stream, naming its owner; so does a whole second ffmpeg.
    let (status, body) = put(mesh.http("origin-b"), "s", "index.m3u8", b"#EXTM3U\n").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("origin-a"), "the refusal names the owner: {body}");
    let second = publish_from(mesh.http("origin-b"), "smptebars", "s", 6, false, &[], &dir.join("ffmpeg-b.log"));
    let refusals = || mesh.log("origin-b").matches("status=409").count();
    until(Duration::from_secs(10), "origin-b refuses the second publisher", || async { refusals() > 0 }).await;

    // For as long as the second publisher tries, every edge serves the first one's playlist, as the first
    // origin has it, and it keeps moving.
    let mut last = 0;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(6) {
        for e in ["edge-1", "edge-2"] {
            if let Some(p) = playlist(mesh.http(e), "s").await {
                let seq = media_sequence(&p);
                assert!(seq >= last || e == "edge-2", "{e}'s media sequence went back from {last} to {seq}");
                last = last.max(seq);
                let at_origin = playlist(mesh.http("origin-a"), "s").await.unwrap();
                let newest = |p: &str| segments(p).last().cloned();
                let (theirs, ours) = (newest(&at_origin), newest(&p));
                assert!(theirs >= ours, "{e} lists {ours:?}, which the owner never had (it has {theirs:?})");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let streams: serde_json::Value =
        serde_json::from_slice(&get(&format!("http://{edge}/api/streams")).await.1).unwrap();
    assert_eq!(streams["s"]["origin"], "origin-a", "{streams}");
    assert_eq!(streams["s"]["state"], "live", "{streams}");
    stop(second);
    stop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_origin_takes_over_a_silent_stream_and_hands_it_back() {
    require("ffmpeg");
    let mut mesh = two_origins(92, &[]);
    mesh.append_config("origin-b", "backup_for = [\"s\"]\ntakeover_ms = 2000\n");
    mesh.start_all();
    mesh.wait_healthy().await;
    let dir = mesh.dir.path().to_owned();
    // Segment numbers from the wall clock, as the README tells publishers: a later encoder numbers higher.
    // Two-second segments: the primary ends the stream after three of them of silence (6 s), well after the
    // backup's 2 s takeover; were it the other way round, players would see the stream end first.
    let epoch = ["-hls_start_number_source", "epoch", "-ignore_io_errors", "1", "-hls_time", "2"];
    let primary = publish_from(mesh.http("origin-a"), "testsrc2", "s", 60, false, &epoch, &dir.join("a1.log"));
    let edge = mesh.http("edge-1");
    until(Duration::from_secs(20), "the edge serves the primary", || async {
        playlist(edge, "s").await.is_some_and(|p| segments(&p).len() >= 2)
    })
    .await;
    let backup = publish_from(mesh.http("origin-b"), "smptebars", "s", 60, false, &epoch, &dir.join("b.log"));
    // A real player decodes the stream at the edge from here to its end, across both switches.
    let frames = dir.join("frames.txt");
    let player = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(format!("http://{edge}/live/s/index.m3u8"))
        .args(["-map", "0:v", "-f", "framecrc"])
        .arg(&frames)
        .stderr(std::fs::File::create(dir.join("player.log")).unwrap())
        .spawn()
        .unwrap();
    let watching = Instant::now();

    // A viewer follows the edge throughout; its media sequence never goes back.
    let viewer = tokio::spawn(async move {
        let client = client();
        let mut last = (0u64, String::new());
        let mut segments_seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Some(p) = playlist(edge, "s").await {
                let seq = media_sequence(&p);
                assert!(seq >= last.0, "media sequence went back from {} to {seq}:\n{}\n{p}", last.0, last.1);
                for s in segments(&p) {
                    if !segments_seen.contains(&s) {
                        let resp = client.get(format!("http://{edge}/live/s/{s}")).send().await.unwrap();
                        if resp.status().is_success() {
                            segments_seen.push(s);
                        }
                    }
                }
                last = (seq, p);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        segments_seen
    });

    until(Duration::from_secs(10), "the backup stands by while the primary is live", || async {
        mesh.log("origin-b").contains("status=409")
    })
    .await;
    let owner = |node: &'static str| {
        let addr = mesh.http(node);
        async move {
            let body = get(&format!("http://{addr}/api/streams")).await.1;
            serde_json::from_slice::<serde_json::Value>(&body).ok().map(|v| v["s"]["origin"].to_string())
        }
    };
    assert_eq!(owner("edge-1").await.as_deref(), Some("\"origin-a\""));

    stop(primary);
    let took = until(Duration::from_secs(15), "the backup takes over", || async {
        owner("edge-1").await.as_deref() == Some("\"origin-b\"")
    })
    .await;
    eprintln!("the backup owned the stream {} ms after the primary's publisher died", took.as_millis());
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The primary's publisher comes back: the stream goes back to the primary.
    let again = publish_from(mesh.http("origin-a"), "rgbtestsrc", "s", 60, false, &epoch, &dir.join("a2.log"));
    until(Duration::from_secs(15), "the primary takes the stream back", || async {
        owner("edge-1").await.as_deref() == Some("\"origin-a\"")
    })
    .await;
    let seen = viewer.await.unwrap();
    stop(again);
    stop(backup);
    // The stream ends (its playlist deleted at the primary): the player reaches EXT-X-ENDLIST and stops.
    let resp = client()
        .delete(format!("http://{}/live/s/index.m3u8", mesh.http("origin-a")))
        .header("Authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let watched = watching.elapsed();
    let status = tokio::task::spawn_blocking(move || {
        let mut player = player;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = player.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = player.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    let player_log = std::fs::read_to_string(dir.join("player.log")).unwrap_or_default();
    assert!(status.is_some_and(|s| s.success()), "the player failed or never ended ({status:?}):\n{player_log}");
    let decoded = std::fs::read_to_string(&frames).unwrap().lines().filter(|l| !l.starts_with('#')).count();
    eprintln!("the player decoded {decoded} frames over {} s across the switches", watched.as_secs());
    // 25 frames a second; the switches and the player's own start-up may cost a few seconds.
    assert!(decoded as f64 >= 25.0 * (watched.as_secs_f64() - 15.0), "only {decoded} frames in {watched:?}");
    // The viewer got segments of all three publishers (their numbers: wall-clock seconds at each start).
    let numbers: Vec<u64> = seen
        .iter()
        .filter_map(|s| s.strip_suffix(".ts")?.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "segments went back: {numbers:?}");
    assert!(numbers.len() >= 15, "the viewer got only {} segments: {numbers:?}", numbers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_every_edge_when_its_publisher_dies_or_deletes_the_playlist() {
    require("ffmpeg");
    let mut mesh = two_origins(93, &[]);
    mesh.start_all();
    mesh.wait_healthy().await;
    let dir = mesh.dir.path().to_owned();
    let origin = mesh.http("origin-a");
    let edges = [mesh.http("edge-1"), mesh.http("edge-2")];
    let publisher = publish(origin, "s", 60, false, &dir.join("ffmpeg.log"));
    for edge in edges {
        until(Duration::from_secs(20), "the edges serve the stream", || async {
            playlist(edge, "s").await.is_some_and(|p| segments(&p).len() >= 2)
        })
        .await;
    }
    // ffmpeg's -hls_time 1 gives a target duration of 1 s: three of them of silence end the stream.
    let target = 1;
    stop(publisher);
    for edge in edges {
        let took = until(Duration::from_secs(20), "EXT-X-ENDLIST at the edge", || async {
            playlist(edge, "s").await.is_some_and(|p| p.contains("#EXT-X-ENDLIST"))
        })
        .await;
        eprintln!("publisher killed: EXT-X-ENDLIST at {edge} after {} ms", took.as_millis());
        assert!(took < Duration::from_secs(3 * target + 1), "ENDLIST after {took:?}");
    }
    let streams: serde_json::Value =
        serde_json::from_slice(&get(&format!("http://{}/api/streams", edges[0])).await.1).unwrap();
    assert_eq!(streams["s"]["state"], "ended", "{streams}");

    // Publishing again starts the stream over; deleting its playlist ends it at once.
    let publisher = publish(origin, "s", 60, false, &dir.join("ffmpeg-2.log"));
    for edge in edges {
        until(Duration::from_secs(20), "the stream is live again", || async {
            playlist(edge, "s").await.is_some_and(|p| !p.contains("#EXT-X-ENDLIST") && !segments(&p).is_empty())
        })
        .await;
    }
    stop(publisher);
    let resp = client()
        .delete(format!("http://{origin}/live/s/index.m3u8"))
        .header("Authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    for edge in edges {
        let took = until(Duration::from_secs(10), "EXT-X-ENDLIST after DELETE", || async {
            playlist(edge, "s").await.is_some_and(|p| p.contains("#EXT-X-ENDLIST"))
        })
        .await;
        eprintln!("playlist deleted: EXT-X-ENDLIST at {edge} after {} ms", took.as_millis());
        assert!(took < Duration::from_secs(1), "ENDLIST {took:?} after the DELETE");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takedown_stops_the_stream_everywhere_until_it_is_lifted() {
    require("ffmpeg");
    let mut mesh = two_origins(94, &["control"]);
    let takedowns = mesh.dir.path().join("edge-2-takedowns.json");
    {
        // edge-2 keeps the takedowns it learns in a file.
        let config = std::fs::read_to_string(&mesh.node("edge-2").config).unwrap();
        let config = config.replace("[admin]\n", &format!("[admin]\ntakedowns_file = {:?}\n", takedowns));
        std::fs::write(&mesh.node("edge-2").config, config).unwrap();
    }
    mesh.start_all();
    mesh.wait_healthy().await;
    let dir = mesh.dir.path().to_owned();
    let origin = mesh.http("origin-a");
    let edges = [mesh.http("edge-1"), mesh.http("edge-2")];
    let publisher = publish_with(origin, "s", 60, false, &["-ignore_io_errors", "1"], &dir.join("ffmpeg.log"));
    for edge in edges {
        until(Duration::from_secs(20), "the edges serve the stream", || async { playlist(edge, "s").await.is_some() })
            .await;
    }
    let admin = |method: reqwest::Method, at: SocketAddr| {
        client()
            .request(method, format!("http://{at}/admin/streams/s/takedown"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .body("rights holder's request")
    };
    // Without the token, nothing happens.
    let resp = client().post(format!("http://{}/admin/streams/s/takedown", mesh.http("control"))).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let resp = admin(reqwest::Method::POST, mesh.http("control")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    for edge in edges {
        let took = until(Duration::from_secs(5), "451 at the edge", || async {
            get(&format!("http://{edge}/live/s/index.m3u8")).await.0 == 451
        })
        .await;
        eprintln!("taken down: 451 at {edge} after {} ms", took.as_millis());
    }
    let (status, body) = get(&format!("http://{}/live/s/index.m3u8", edges[0])).await;
    assert_eq!(status, 451);
    assert!(String::from_utf8_lossy(&body).contains("rights holder's request"));
    let (status, body) = put(origin, "s", "index.m3u8", b"#EXTM3U\n").await;
    assert_eq!(status, 403, "the publisher is refused: {body}");
    let api = format!("http://{}/api/streams", mesh.http("control"));
    until(Duration::from_secs(5), "the control plane shows the stream taken down", || async {
        let streams: serde_json::Value = serde_json::from_slice(&get(&api).await.1).unwrap_or_default();
        let state = streams.as_array().and_then(|a| a.iter().find(|s| s["stream"] == "s")).map(|s| s["state"].clone());
        state.is_some_and(|s| s == "taken_down")
    })
    .await;

    // A restarted edge keeps the takedown: from its file before any neighbour speaks.
    mesh.kill("edge-2");
    mesh.start("edge-2");
    mesh.wait_healthy().await;
    assert_eq!(get(&format!("http://{}/live/s/index.m3u8", edges[1])).await.0, 451);

    // Lifted at the origin, the stream plays again everywhere.
    let resp = admin(reqwest::Method::DELETE, origin).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    for edge in edges {
        until(Duration::from_secs(20), "the stream plays again", || async {
            playlist(edge, "s").await.is_some_and(|p| !segments(&p).is_empty())
        })
        .await;
    }
    // The control plane shows it live again, with this test's client counted as a viewer at each edge.
    until(Duration::from_secs(15), "the control plane counts the viewers", || async {
        for edge in edges {
            let _ = playlist(edge, "s").await;
        }
        let streams: serde_json::Value = serde_json::from_slice(&get(&api).await.1).unwrap_or_default();
        let Some(s) = streams.as_array().and_then(|a| a.iter().find(|s| s["stream"] == "s")).cloned() else {
            return false;
        };
        s["state"] == "live"
            && s["origin"] == "origin-a"
            && s["viewers_by_edge"]["edge-1"] == 1
            && s["viewers_by_edge"]["edge-2"] == 1
            && s["viewers_by_region"]["lab"] == 2
    })
    .await;
    stop(publisher);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_publisher_reusing_names_never_gets_its_old_bytes_served() {
    require("ffmpeg");
    let mut mesh = two_origins(95, &[]);
    mesh.start_all();
    mesh.wait_healthy().await;
    let dir = mesh.dir.path().to_owned();
    let origin = mesh.http("origin-a");
    let edge = mesh.http("edge-1");
    let first = publish_from(origin, "testsrc2", "s", 60, true, &[], &dir.join("ffmpeg-1.log"));
    until(Duration::from_secs(20), "the edge serves index1.m4s", || async {
        playlist(edge, "s").await.is_some_and(|p| segments(&p).iter().any(|s| s == "index1.m4s"))
    })
    .await;
    let old_init = get(&format!("http://{edge}/live/s/init.mp4")).await.1;
    let old_first = get(&format!("http://{edge}/live/s/index1.m4s")).await.1;
    assert!(!old_init.is_empty() && !old_first.is_empty());
    stop(first);
    // A new encoder with other pictures, the same names from 0 again, at once.
    let second = publish_from(origin, "smptebars", "s", 60, true, &[], &dir.join("ffmpeg-2.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut checked = 0;
    // When the origin was first seen holding the new publisher's bytes of each name.
    let mut replaced: [Option<Instant>; 2] = [None, None];
    while Instant::now() < deadline {
        for (i, name) in ["init.mp4", "index1.m4s"].into_iter().enumerate() {
            let old = if name == "init.mp4" { &old_init } else { &old_first };
            let (status, body) = get(&format!("http://{edge}/live/s/{name}")).await;
            if let Some(at) = replaced[i] {
                // Once the new bytes are at the origin (and a moment to cross the mesh), never the old ones.
                let late = at.elapsed() > Duration::from_millis(200);
                assert!(!(late && status == 200 && body == *old), "{name}: the edge served the old publisher's bytes");
            }
            let (status, at_origin) = get(&format!("http://{origin}/live/s/{name}")).await;
            if status == 200 && at_origin != *old && replaced[i].is_none() {
                replaced[i] = Some(Instant::now());
            }
        }
        let p = playlist(edge, "s").await.unwrap_or_default();
        if segments(&p).iter().any(|s| s == "index3.m4s") {
            checked += 1;
            if checked > 5 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(checked > 0, "the new publisher's segments never reached the edge");
    for name in ["init.mp4", "index1.m4s"] {
        let at_edge = get(&format!("http://{edge}/live/s/{name}")).await.1;
        let at_origin = get(&format!("http://{origin}/live/s/{name}")).await.1;
        assert!(at_edge == at_origin, "{name}: the edge and the origin differ");
    }
    // (The two encoders' init segments may well be the same bytes; their media segments are not.)
    assert!(get(&format!("http://{edge}/live/s/index1.m4s")).await.1 != old_first, "still the old index1.m4s");
    stop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_limits_is_refused_with_the_reason() {
    let mut mesh = Cluster::new(
        96,
        &[NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "edge", roles: &["edge"] }],
        &[("origin", "edge", 5.0)],
        "",
    );
    mesh.append_config("origin", "any_stream_key = \"platform-key\"\nmax_streams_per_key = 2\nmax_stream_kbps = 100\n");
    mesh.start_all();
    mesh.wait_healthy().await;
    let origin = mesh.http("origin");
    let put = |stream: &str, bytes: usize| {
        client()
            .put(format!("http://{origin}/live/{stream}/seg0.ts"))
            .header("Authorization", "Bearer platform-key")
            .body(vec![7u8; bytes])
            .send()
    };
    assert_eq!(put("one", 1000).await.unwrap().status(), 201);
    assert_eq!(put("two", 1000).await.unwrap().status(), 201);
    let third = put("three", 1000).await.unwrap();
    assert_eq!(third.status(), 429);
    let reason = third.text().await.unwrap();
    assert!(reason.contains("max_streams_per_key"), "{reason}");
    // A stream with its own key is not the platform key's.
    let own = client()
        .put(format!("http://{origin}/live/live1/seg0.ts"))
        .header("Authorization", format!("Bearer {KEY}"))
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 201);
    // 100 kbit/s with bursts of one largest body (4 MiB here): right after a 4 MiB burst, more is too fast.
    assert!(put("one", (4 << 20) - 2000).await.unwrap().status().is_success());
    let fast = put("one", 100_000).await.unwrap();
    assert_eq!(fast.status(), 429);
    assert!(fast.text().await.unwrap().contains("max_stream_kbps"));
    assert!(mesh.log("origin").contains("status=429"), "refusals are logged with their reason");
}
