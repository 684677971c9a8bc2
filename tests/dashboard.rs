//! The operator dashboard as an operator sees it: a control replica, an origin, two relays and an edge
//! (real processes, emulated WAN latencies), a stream published with ffmpeg, and the replica's
//! `/dashboard` open in headless Chromium (`tests/browser/dashboard.mjs`, playwright-core). The page must
//! draw the map, every node and link, the stream's tree and its viewer's region; when the relay carrying the
//! stream is killed, it must mark that relay failed within 2 s of the kill and show the tree through the
//! other relay. The screenshot it takes then goes to the target folder, or, with
//! `LIGHTPATH_UPDATE_SCREENSHOT=1`, to docs/dashboard.png, which the README shows. On the way, a
//! plain HTTP client follows `/api/events` too, and one stream past `dashboard.max_event_streams` is refused.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// The page's Node.js driver, killed however the test ends.
struct Browser(std::process::Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The driver's next JSON line, within `limit`.
fn next_report(lines: &std::sync::mpsc::Receiver<String>, limit: Duration) -> serde_json::Value {
    let line = lines.recv_timeout(limit).expect("the dashboard driver printed nothing in time");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array().unwrap().iter().filter_map(|s| s.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_mesh_and_marks_a_killed_relay_failed_within_2_s() {
    require("ffmpeg");
    require_browser(&["playwright-core"]);
    let mut mesh = two_relays(140, &["control-1"]);
    mesh.place(
        &[
            ("eu-west", 53.35, -6.26),
            ("us-east", 39.04, -77.49),
            ("sa-east", -23.55, -46.63),
            ("us-west", 37.37, -121.92),
        ],
        &[("origin", "eu-west"), ("relay-a", "us-east"), ("relay-b", "sa-east"), ("edge", "us-west")],
    );
    // Emulated latencies make relay-a's path the shorter one (5 + 5 ms one way against 10 + 10).
    for node in ["origin", "relay-a", "relay-b", "edge"] {
        mesh.append_config(node, "\n[links]\nemulate = true\n");
    }
    // Two event streams at most: the page's and one more.
    mesh.append_config("control-1", "\n[dashboard]\nmax_event_streams = 2\n");
    mesh.start_all();
    mesh.wait_healthy().await;

    let log = mesh.dir.path().join("ffmpeg-publish.log");
    let mut publisher = publish(mesh.http("origin"), "live1", 40, false, &log);
    // A viewer at the edge: the stream's tree reaches it, and the edge counts the viewer.
    let playlist = format!("http://{}/live/live1/index.m3u8", mesh.http("edge"));
    get_eventually(&playlist).await;

    let url = format!("http://{}/dashboard", mesh.http("control-1"));
    // The README's picture is replaced only when asked (`LIGHTPATH_UPDATE_SCREENSHOT=1`), so a test run
    // leaves the checkout as it found it.
    let screenshot = match std::env::var_os("LIGHTPATH_UPDATE_SCREENSHOT") {
        Some(_) => concat!(env!("CARGO_MANIFEST_DIR"), "/docs/dashboard.png"),
        None => concat!(env!("CARGO_TARGET_TMPDIR"), "/dashboard.png"),
    };
    std::fs::create_dir_all(std::path::Path::new(screenshot).parent().unwrap()).unwrap();
    let mut browser = Browser(
        Command::new("node")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.mjs"))
            .args([url.as_str(), "live1", "relay-a", "relay-b", screenshot])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node"),
    );
    let stdout = BufReader::new(browser.0.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // The rendered map: the countries, every node up at its place, every link measured and coloured by its
    // RTT, the stream's tree through relay-a, and the viewer in the edge's region.
    let ready = next_report(&lines, Duration::from_secs(60));
    eprintln!("{ready}");
    assert!(ready.get("error").is_none(), "{ready}");
    assert!(strings(&ready["errors"]).is_empty(), "the page logged errors: {ready}");
    assert!(ready["countries"].as_u64().unwrap() >= 150, "the world map was not drawn: {ready}");
    assert_eq!(ready["status"], "live", "{ready}");
    for node in ["origin", "relay-a", "relay-b", "edge"] {
        assert_eq!(ready["nodes"][node], "up", "{node} is not drawn up: {ready}");
    }
    let links = strings(&ready["links"]);
    assert_eq!(links.len(), 4, "{ready}");
    assert!(links.iter().all(|l| l.contains(":up:#")), "a link is not drawn up with an RTT colour: {ready}");
    let tree = strings(&ready["tree"]);
    assert!(tree.contains(&"origin>relay-a") && tree.contains(&"relay-a>edge"), "{ready}");
    assert!(ready["viewers"]["us-west"].as_u64().unwrap_or(0) >= 1, "no viewer shown in us-west: {ready}");

    // Any client can follow the events: the first is the whole picture. A third stream is refused.
    let events = format!("http://{}/api/events", mesh.http("control-1"));
    let mut second = client().get(&events).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while text.matches("\n\n").count() < 2 {
        let chunk = second.chunk().await.unwrap().expect("the event stream ended before its first event");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("no data: {text}"));
    let picture: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(picture["nodes"].as_array().unwrap().len(), 4, "{picture}");
    let third = client().get(&events).send().await.unwrap();
    assert_eq!(third.status(), 503);
    assert!(third.headers().contains_key("retry-after"));
    let why = third.text().await.unwrap();
    assert!(why.contains("dashboard.max_event_streams = 2"), "{why}");
    drop(second);

    // Kill the relay that carries the stream; the page marks it failed.
    let killed_at = unix_ms();
    let killed = Instant::now();
    mesh.kill("relay-a");
    let stdin = browser.0.stdin.as_mut().unwrap();
    stdin.write_all(b"killed\n").unwrap();
    stdin.flush().unwrap();
    // Keep the viewer asking while the tree moves: the edge resubscribes through relay-b.
    let viewer = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let _ = client().get(&playlist).send().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let failed = tokio::task::spawn_blocking(move || next_report(&lines, Duration::from_secs(40))).await.unwrap();
    viewer.abort();
    eprintln!("{failed}");
    assert!(failed.get("error").is_none(), "{failed} (after {} ms)", killed.elapsed().as_millis());
    let shown_after = failed["failed_at"].as_u64().unwrap().saturating_sub(killed_at);
    eprintln!("relay-a killed: shown failed on the dashboard after {shown_after} ms");
    assert!(shown_after <= 2000, "relay-a was shown failed {shown_after} ms after the kill (at most 2000 expected)");
    let state = failed["nodes"]["relay-a"].as_str().unwrap();
    assert!(state == "unreachable" || state == "silent", "relay-a is drawn {state}: {failed}");
    for node in ["origin", "relay-b", "edge"] {
        assert_eq!(failed["nodes"][node], "up", "{failed}");
    }
    let links = strings(&failed["links"]);
    assert!(links.iter().filter(|l| l.contains("relay-a")).all(|l| l.contains(":down:")), "{failed}");
    assert!(failed["detoured"].as_bool().unwrap(), "the page never showed the tree through relay-b: {failed}");
    let tree = strings(&failed["tree"]);
    assert!(tree.contains(&"origin>relay-b") && tree.contains(&"relay-b>edge"), "{failed}");
    assert!(!tree.iter().any(|hop| hop.contains("relay-a")), "the tree is still drawn through relay-a: {failed}");
    assert!(std::fs::metadata(screenshot).is_ok_and(|m| m.len() > 10_000), "no screenshot at {screenshot}");

    let _ = publisher.kill();
    let _ = publisher.wait();
}
