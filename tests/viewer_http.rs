//! What browser players and downstream caches see of an edge, with real node processes and a real ffmpeg
//! publisher: CORS on every reply (refusals included) and preflights, validators and 304s, byte ranges,
//! and names that will never arrive answered at once instead of after the whole wait.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::header;

fn origin_edge(ip_base: u8) -> Cluster {
    Cluster::new(
        ip_base,
        &[NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "edge", roles: &["edge"] }],
        &[("origin", "edge", 2.0)],
        "",
    )
}

/// A browser may read the reply: it allows any origin and exposes the headers players read.
#[track_caller]
fn readable_by_pages(resp: &reqwest::Response) {
    let h = resp.headers();
    assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| v.to_str().unwrap()), Some("*"), "{h:?}");
    let exposed = h.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).map(|v| v.to_str().unwrap()).unwrap_or("");
    assert!(exposed.contains("ETag") && exposed.contains("Content-Range"), "{h:?}");
}

/// The segments a playlist lists, in order.
fn listed(playlist: &str) -> Vec<String> {
    playlist.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_and_caches_get_cors_validators_ranges_and_prompt_404s() {
    require("ffmpeg");
    let mut mesh = origin_edge(91);
    mesh.start_all();
    mesh.wait_healthy().await;
    let edge = format!("http://{}/live", mesh.http("edge"));
    let http = client();

    // A stream nobody publishes: 404, still readable by a page.
    let missing = http.get(format!("{edge}/nobody/index.m3u8")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    readable_by_pages(&missing);

    // The preflight a page's player sends before a request with Range or If-None-Match.
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{edge}/s/index0.ts"))
        .header(header::ORIGIN, "https://player.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "range, if-none-match")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let h = preflight.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("GET"));
    let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("range") && allowed.contains("if-none-match"), "{allowed}");
    assert!(h.contains_key(header::ACCESS_CONTROL_MAX_AGE));

    let log = mesh.dir.path().join("ffmpeg.log");
    let mut publisher = publish(mesh.http("origin"), "s", 30, false, &log);
    // Wait until the edge's playlist lists a few segments.
    let deadline = Instant::now() + Duration::from_secs(30);
    let segments = loop {
        let resp = http.get(format!("{edge}/s/index.m3u8")).send().await.unwrap();
        if resp.status() == 200 {
            let segments = listed(&resp.text().await.unwrap());
            if segments.len() >= 4 {
                break segments;
            }
        }
        assert!(Instant::now() < deadline, "the stream never listed 4 segments at the edge");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The whole segment, with its validators and a max-age no longer than a name can be trusted.
    let url = format!("{edge}/s/{}", segments[segments.len() - 2]);
    let whole = http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    readable_by_pages(&whole);
    let h = whole.headers().clone();
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(h[header::CACHE_CONTROL], "public, max-age=30");
    assert!(h.contains_key(header::LAST_MODIFIED));
    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    let body = whole.bytes().await.unwrap();
    let len = body.len();
    assert!(len > 1000, "a segment of {len} bytes");
    // The origin derives the same validator from the same bytes.
    let at_origin = http.get(format!("http://{}/live/s/{}", mesh.http("origin"), segments[segments.len() - 2]));
    assert_eq!(at_origin.send().await.unwrap().headers()[header::ETAG], etag.as_str());

    // A cache revalidating its copy.
    let revalidated = http.get(&url).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()[header::ETAG], etag.as_str());
    readable_by_pages(&revalidated);
    assert!(revalidated.bytes().await.unwrap().is_empty());
    let changed = http.get(&url).header(header::IF_NONE_MATCH, "\"0123456789abcdef\"").send().await.unwrap();
    assert_eq!(changed.status(), 200);

    // Byte ranges: exactly the slice of the whole.
    for (asked, first, last) in
        [("bytes=100-999".to_owned(), 100, 999), (format!("bytes={}-", len - 10), len - 10, len - 1)]
    {
        let part = http.get(&url).header(header::RANGE, &asked).send().await.unwrap();
        assert_eq!(part.status(), 206, "{asked}");
        readable_by_pages(&part);
        let range = part.headers()[header::CONTENT_RANGE].to_str().unwrap().to_owned();
        assert_eq!(range, format!("bytes {first}-{last}/{len}"));
        assert!(part.bytes().await.unwrap() == body[first..=last], "{asked}: other bytes than the slice");
    }
    let past = http.get(&url).header(header::RANGE, format!("bytes={len}-")).send().await.unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()[header::CONTENT_RANGE], format!("bytes */{len}").as_str());
    readable_by_pages(&past);

    // A name far beyond the live edge: 404 at once, not after edge.wait_ms (6 s).
    let asked = Instant::now();
    let far = http.get(format!("{edge}/s/index99999.ts")).send().await.unwrap();
    let took = asked.elapsed();
    assert_eq!(far.status(), 404);
    let said = far.text().await.unwrap();
    assert!(said.contains("beyond the live edge"), "{said}");
    eprintln!("far-future name answered in {took:?}");
    assert!(took < Duration::from_secs(1), "a far-future name took {took:?}");

    // A segment the publisher deleted: the origin answers 404 at once (edges keep their copy until it ages
    // out, so that a viewer a little behind is not cut short).
    let deleted = format!("http://{}/live/s/index0.ts", mesh.http("origin"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let asked = Instant::now();
        let resp = http.get(&deleted).send().await.unwrap();
        let took = asked.elapsed();
        if resp.status() == 404 {
            let said = resp.text().await.unwrap();
            assert!(said.contains("has left the live window"), "{said}");
            eprintln!("deleted name answered in {took:?}");
            assert!(took < Duration::from_secs(1), "a deleted name took {took:?}");
            break;
        }
        assert_eq!(resp.status(), 200);
        assert!(Instant::now() < deadline, "ffmpeg never deleted index0.ts");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The origin goes away: the edge's 503 is readable by a page too.
    let _ = publisher.kill();
    let _ = publisher.wait();
    mesh.kill("origin");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = http.get(format!("{edge}/s/index.m3u8")).send().await.unwrap();
        if resp.status() == 503 {
            readable_by_pages(&resp);
            assert!(resp.headers().contains_key(header::RETRY_AFTER));
            break;
        }
        assert!(Instant::now() < deadline, "the edge never said the origin is unreachable ({})", resp.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
