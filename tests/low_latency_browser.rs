//! A real browser plays the demo's farthest edge with hls.js in low-latency mode: `lightpath demo` (its
//! built-in publisher pushes CMAF chunks into the origin, which cuts LL-HLS parts; the parts cross the
//! emulated Atlantic and Pacific links), and headless Chromium driven by playwright-core
//! (`tests/browser/play.mjs`; scripts/test installs Chromium and the npm packages when missing).

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The demo topology with every address moved to a free port, so that the test runs beside anything.
fn demo_topology(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/demo.toml")).unwrap();
    let mut edge_ap = String::new();
    let mut out = String::new();
    let mut node = String::new();
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("id = ") {
            node = id.trim_matches('"').to_owned();
        }
        match line.split_once(" = \"127.0.0.1:") {
            Some((key, _)) => {
                let addr = format!("127.0.0.1:{}", free_port());
                if node == "edge-ap" && key == "http" {
                    edge_ap = addr.clone();
                }
                out.push_str(&format!("{key} = \"{addr}\"\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let path = dir.join("demo.toml");
    std::fs::write(&path, out).unwrap();
    (path, edge_ap)
}

fn require_browser() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ok = Command::new("chromium").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "chromium is required: apt-get install -y chromium (scripts/test does this)"
    );
    assert!(
        std::path::Path::new(root).join("tests/browser/node_modules/hls.js").exists()
            && std::path::Path::new(root).join("tests/browser/node_modules/playwright-core").exists(),
        "hls.js and playwright-core are required: npm ci --prefix tests/browser (scripts/test does this)"
    );
}

/// Kills the demo however the test ends.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_the_farthest_edge_in_low_latency_mode() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let (topology, edge) = demo_topology(dir.path());
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let _demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_lightpath"))
            .args(["demo", "--topology"])
            .arg(&topology)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
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
        assert!(Instant::now() < deadline, "the demo stream never reached edge-ap");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = tokio::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/play.mjs"))
        .arg(format!("http://{edge}/live/demo/index.m3u8"))
        .arg("20")
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser run failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("{seen}");
    assert!(seen.get("error").is_none(), "{seen}");
    assert!(seen["parts"].as_u64().unwrap() >= 50, "hls.js buffered few parts: {seen}");
    assert_eq!(seen["stalls"].as_u64(), Some(0), "playback stalled: {seen}");
    assert!(seen["played"].as_f64().unwrap() >= 19.0, "the playhead did not run for 20 s: {seen}");
    let latency: Vec<f64> = seen["latency"].as_array().unwrap().iter().filter_map(|v| v.as_f64()).collect();
    assert!(latency.len() >= 19, "{seen}");
    let worst = latency.iter().copied().fold(0.0, f64::max);
    assert!(worst <= 2.0, "hls.js reported a latency of {worst} s (at most 2 s expected): {seen}");
}
