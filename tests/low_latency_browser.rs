//! A real browser plays the demo's farthest edge with hls.js in low-latency mode: `lightpath demo` (its
//! built-in publisher pushes CMAF chunks into the origin, which cuts LL-HLS parts; the parts cross the
//! emulated Atlantic and Pacific links), and headless Chromium driven by playwright-core
//! (`tests/browser/play.mjs`; scripts/test installs Chromium and the npm packages when missing).

use std::time::{Duration, Instant};

mod common;

use common::{play_in_browser, require_browser, spawn_demo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_the_farthest_edge_in_low_latency_mode() {
    require_browser(&["hls.js", "playwright-core"]);
    let dir = tempfile::tempdir().unwrap();
    let (_demo, edge) = spawn_demo(dir.path(), "edge-ap", "info");
    // Live at the edge in Singapore: its playlist lists parts.
    let url = format!("http://{edge}/live/demo/stream0.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    loop {
        if let Ok(resp) = client.get(&url).send().await {
            if resp.text().await.is_ok_and(|t| t.contains("#EXT-X-PART:")) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the demo stream never reached edge-ap; the end of the demo's log:\n{}",
            tail(&std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default(), 150)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = play_in_browser(&format!("http://{edge}/live/demo/index.m3u8"), 20, "low", "").await;
    assert!(seen["parts"].as_u64().unwrap() >= 50, "hls.js buffered few parts: {seen}");
    assert_eq!(seen["stalls"].as_u64(), Some(0), "playback stalled: {seen}");
    let errors = seen["errors"].as_array().unwrap();
    assert!(!errors.iter().any(|e| e.as_str().is_some_and(|e| e.contains("Stalled"))), "hls.js saw a stall: {seen}");
    // hls.js may jump once from the newest segment's keyframe to its target latency just after the first
    // frame; a second jump would be the player losing its place in the stream.
    assert!(seen["seeks"].as_u64().unwrap() <= 1, "hls.js seeked more than once while playing: {seen}");
    assert!(seen["played"].as_f64().unwrap() >= 19.0, "the playhead did not run for 20 s: {seen}");
    let latency: Vec<f64> = seen["latency"].as_array().unwrap().iter().filter_map(|v| v.as_f64()).collect();
    assert!(latency.len() >= 19, "{seen}");
    let worst = latency.iter().copied().fold(0.0, f64::max);
    assert!(worst <= 2.0, "hls.js reported a latency of {worst} s (at most 2 s expected): {seen}");
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
