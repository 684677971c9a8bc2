//! Signed viewer URLs at a real edge: tokens signed outside the code under test (by Python's hmac and
//! hashlib), a stream that requires one, the playlist carrying the token to its segments, and real ffmpeg
//! playing with it.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const K1: &str = "first-secret-0123456789";
const K2: &str = "second-secret-0123456789";
const ALIBABA: &str = "alibaba-private-key-0123";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Runs a few lines of Python and returns what they print: an implementation independent of the edge's.
fn python(script: &str) -> String {
    let out = std::process::Command::new("python3").args(["-c", script]).output().expect("python3 is required");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A lightpath token (`KID.EXPIRES.SCOPE.MAC`), as an operator's signing service written in Python makes it.
fn token(kid: &str, secret: &str, expires: u64, scope: &str) -> String {
    python(&format!(
        "import base64, hashlib, hmac\n\
         scope = base64.urlsafe_b64encode({scope:?}.encode()).decode().rstrip('=')\n\
         signed = '{kid}.{expires}.' + scope\n\
         print(signed + '.' + hmac.new({secret:?}.encode(), signed.encode(), hashlib.sha256).hexdigest())"
    ))
}

/// An Alibaba Cloud type A `auth_key` for `path`, as Alibaba's documentation computes it.
fn auth_key(path: &str, timestamp: u64, key: &str) -> String {
    python(&format!(
        "import hashlib\n\
         ts, rand, uid = '{timestamp}', '0', '0'\n\
         digest = hashlib.md5('-'.join(['{path}', ts, rand, uid, '{key}']).encode()).hexdigest()\n\
         print('-'.join([ts, rand, uid, digest]))"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_requires_a_token_plays_only_with_a_good_one() {
    require("ffmpeg");
    let mut mesh = Cluster::new(
        161,
        &[NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "edge", roles: &["edge"] }],
        &[("origin", "edge", 1.0)],
        "",
    );
    mesh.append_config(
        "edge",
        &format!(
            "\n[edge.tokens]\nkeys = {{ k1 = \"{K1}\", k2 = \"{K2}\" }}\nstreams = {{ s = \"token\" }}\n\
             alibaba_key = \"{ALIBABA}\"\nalibaba_ttl_s = 600\n"
        ),
    );
    mesh.start_all();
    mesh.wait_healthy().await;
    let log = mesh.dir.path().join("publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 30, false, &log);
    let edge = mesh.http("edge");
    let playlist = format!("http://{edge}/live/s/index.m3u8");
    let c = client();
    let status = |url: String| {
        let c = c.clone();
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };

    // A good token, by the playlist's path: the playlist comes with the token in every URI.
    let good = token("k1", K1, now() + 600, "/live/s/index.m3u8");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let resp = c.get(format!("{playlist}?token={good}")).send().await.unwrap();
        if resp.status() == 200 {
            let text = resp.text().await.unwrap();
            if text.contains(".ts") {
                break text;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the playlist never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let segments: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert!(!segments.is_empty(), "{text}");
    for uri in &segments {
        assert!(uri.ends_with(&format!("?token={good}")), "{uri} lacks the token:\n{text}");
        assert_eq!(status(format!("http://{edge}/live/s/{uri}")).await, 200, "{uri}");
    }
    let segment = segments[0].split('?').next().unwrap().to_owned();

    // No token, an expired one, a tampered one, one for another path, one of an unknown key: 403, and the
    // log says why.
    let refusals = [
        (String::new(), "requires a token"),
        (format!("?token={}", token("k1", K1, now() - 5, "/live/s/")), "expired at"),
        (format!("?token={}", good.replacen("k1.", "k2.", 1)), "bad signature"),
        (format!("?token={}", token("k1", K1, now() + 600, "/live/other/")), "outside the token's scope"),
        (format!("?token={}", token("k9", K1, now() + 600, "/live/s/")), "unknown key id"),
    ];
    for (query, reason) in &refusals {
        assert_eq!(status(format!("http://{edge}/live/s/{segment}{query}")).await, 403, "{reason}");
    }
    let edge_log = mesh.log("edge");
    for (_, reason) in &refusals {
        assert!(edge_log.contains(reason), "no log line says {reason:?}");
    }
    // Rotation: a token of the second key plays as well; an open stream needs none.
    let rotated = token("k2", K2, now() + 600, "/live/s/");
    assert_eq!(status(format!("http://{edge}/live/s/{segment}?token={rotated}")).await, 200);

    // Alibaba type A, signed by Python: the playlist, then each segment by the auth_key written for it.
    let key = auth_key("/live/s/index.m3u8", now(), ALIBABA);
    let resp = c.get(format!("{playlist}?auth_key={key}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for uri in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(uri.contains("?auth_key="), "{uri}");
        assert_eq!(status(format!("http://{edge}/live/s/{uri}")).await, 200, "{uri}");
    }
    assert_eq!(status(format!("http://{edge}/live/s/{segment}?auth_key={key}")).await, 403, "type A signs one path");

    // ffmpeg plays with the token, which the playlist hands to every segment.
    common::play_cleanly(&format!("{playlist}?token={good}")).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
}
