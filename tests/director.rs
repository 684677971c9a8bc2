//! The director with real processes: a control replica with `[director]`, two edges in two regions, an
//! origin with a live stream published by ffmpeg, viewers from addresses in the coverage zones.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;

const BASE: u8 = 160;
/// The restart test's addresses.
const RESTART_BASE: u8 = 164;
/// The bounds test's.
const BOUNDS_BASE: u8 = 165;

/// origin (eu) -> edge-ap (ap), edge-us (us), links of `link_ms` (emulated when above 1 ms); control-1
/// runs the director (HTTP and DNS). Viewers from 127.0.0.1 are in ap's zone, from 127.0.{base}.64/26 in
/// us's; the rest are taken to be in eu.
fn mesh(base: u8, capacity_ap: u32, link_ms: f64) -> (Cluster, SocketAddr, SocketAddr) {
    let mesh = Cluster::with_controls(
        base,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "edge-ap", roles: &["edge"] },
            NodeSpec { id: "edge-us", roles: &["edge"] },
        ],
        &[("origin", "edge-ap", link_ms), ("origin", "edge-us", link_ms)],
        &["control-1"],
        if link_ms > 1.0 { "[links]\nemulate = true\n" } else { "" },
    );
    mesh.place(
        &[("eu", 53.35, -6.26), ("us", 39.04, -77.49), ("ap", 1.35, 103.82)],
        &[("origin", "eu"), ("edge-ap", "ap"), ("edge-us", "us")],
    );
    let ip = mesh.node("control-1").http.ip().to_string();
    let http: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
    let dns: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
    std::fs::write(
        mesh.dir.path().join("zones.txt"),
        format!("# test zones\n127.0.0.1/32 ap\n127.0.{base}.64/26 us\n"),
    )
    .unwrap();
    mesh.append_config(
        "control-1",
        &format!(
            "\n[director]\nlisten = \"{http}\"\nregion = \"eu\"\ncoverage_zones = \"zones.txt\"\n\
             capacity = {{ edge-ap = {capacity_ap} }}\ndns_listen = \"{dns}\"\ndns_name = \"live.test\"\ndns_ttl_s = 20\n"
        ),
    );
    (mesh, http, dns)
}

/// A client that does not follow redirects, from `local`.
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Where the director sends a viewer from `local` asking for `path`: the Location, or the status.
async fn steer(director: SocketAddr, local: &str, path: &str) -> Result<String, u16> {
    let resp = client_from(local).get(format!("http://{director}{path}")).send().await.unwrap();
    match resp.status().as_u16() {
        302 => Ok(resp.headers()["location"].to_str().unwrap().to_owned()),
        status => Err(status),
    }
}

/// Waits until a viewer from `local` is sent to `edge`'s address; how long it took.
async fn wait_sent_to(mesh: &Cluster, director: SocketAddr, local: &str, edge: &str, limit: Duration) -> Duration {
    let want = format!("http://{}/live/s/index.m3u8", mesh.http(edge));
    let start = Instant::now();
    loop {
        let got = steer(director, local, "/live/s/index.m3u8").await;
        if got.as_deref() == Ok(want.as_str()) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "a viewer from {local} is still sent to {got:?}, not {edge}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn dig(dns: SocketAddr, args: &[&str]) -> String {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), "+tries=1", "+time=5"])
        .args(args)
        .output()
        .expect("dig is required: apt-get install -y bind9-dnsutils (scripts/test does this)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_steered_to_their_regions_healthy_edge_with_capacity() {
    require("ffmpeg");
    let (mut mesh, director, dns) = mesh(BASE, 1, 1.0);
    mesh.start_all();
    mesh.wait_healthy().await;
    let log = mesh.dir.path().join("publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 40, false, &log);
    let us_viewer = format!("127.0.{BASE}.70");

    // Each zone's viewer goes to its region's edge, once the control plane and the health checks agree
    // both are up; the query (a token) travels along.
    wait_sent_to(&mesh, director, "127.0.0.1", "edge-ap", Duration::from_secs(20)).await;
    wait_sent_to(&mesh, director, &us_viewer, "edge-us", Duration::from_secs(20)).await;
    let signed = steer(director, &us_viewer, "/live/s/seg3.ts?token=abc.def&x=1").await;
    assert_eq!(signed, Ok(format!("http://{}/live/s/seg3.ts?token=abc.def&x=1", mesh.http("edge-us"))));
    assert_eq!(steer(director, &us_viewer, "/live/s/../x").await, Err(400), "a bad path is refused");

    // DNS: the client subnet decides, and the answer says how much of it did (the zone's length).
    let answer = dig(dns, &["live.test", "A", &format!("+subnet=127.0.{BASE}.64/26")]);
    let edge_us_ip = mesh.http("edge-us").ip().to_string();
    let record = answer.lines().find(|l| l.starts_with("live.test.")).unwrap_or_else(|| panic!("no answer:\n{answer}"));
    let fields: Vec<&str> = record.split_whitespace().collect();
    assert_eq!((fields[3], fields[4]), ("A", edge_us_ip.as_str()), "{answer}");
    let ttl: u32 = fields[1].parse().unwrap();
    assert!(ttl <= 30, "TTL {ttl}");
    assert!(answer.contains(&format!("CLIENT-SUBNET: 127.0.{BASE}.64/26/26")), "ECS scope missing:\n{answer}");
    assert!(answer.contains("flags: qr aa"), "not authoritative:\n{answer}");
    let answer = dig(dns, &["live.test", "A", "+subnet=127.0.0.1/32"]);
    assert!(answer.contains(&mesh.http("edge-ap").ip().to_string()), "{answer}");
    assert!(answer.contains("CLIENT-SUBNET: 127.0.0.1/32/32"), "{answer}");
    let answer = dig(dns, &["other.test", "A"]);
    assert!(answer.contains("status: REFUSED"), "{answer}");

    // ap's edge dies: its viewers go to us's edge, as soon as the health check fails.
    mesh.kill("edge-ap");
    let moved = wait_sent_to(&mesh, director, "127.0.0.1", "edge-us", Duration::from_secs(10)).await;
    eprintln!("edge-ap killed: viewers sent to edge-us after {} ms", moved.as_millis());
    mesh.start("edge-ap");
    wait_sent_to(&mesh, director, "127.0.0.1", "edge-ap", Duration::from_secs(20)).await;

    // A real player follows the redirect and decodes the stream from ap's edge, once the stream is live (at
    // its origin: ffmpeg has cut a segment); the director sent viewers to ap's edge again only once its new
    // run could serve the stream.
    get_eventually(&format!("http://{}/live/s/index.m3u8", mesh.http("origin"))).await;
    let before = mesh.metric("edge-ap", "lightpath_http_requests_total", &[("method", "GET"), ("status", "200")]).await;
    common::play_cleanly(&format!("http://{director}/live/s/index.m3u8")).await;
    let after = mesh.metric("edge-ap", "lightpath_http_requests_total", &[("method", "GET"), ("status", "200")]).await;
    // The playlist and at least two segments (health checks add a few more).
    assert!(after >= before + 3.0, "edge-ap served {} requests", after - before);

    // That viewer fills edge-ap (capacity 1): the next viewer from ap goes to us's edge.
    wait_sent_to(&mesh, director, "127.0.0.1", "edge-us", Duration::from_secs(15)).await;
    let edges = client().get(format!("http://{director}/api/edges")).send().await.unwrap().text().await.unwrap();
    let edges: serde_json::Value = serde_json::from_str(&edges).unwrap();
    assert_eq!(edges["edges"]["edge-ap"]["up"], true, "{edges}");
    assert_eq!(edges["edges"]["edge-ap"]["viewers"], 1, "{edges}");

    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// What a viewer got from one redirect.
#[derive(Debug)]
#[allow(dead_code, reason = "the fields are read by the failure messages, through Debug")]
enum Visit {
    /// The playlist and its newest segment, from this edge.
    Played(String),
    /// The edge answered something else than 200 to the playlist or the segment.
    Refused { edge: String, url: String, status: u16 },
    /// Nothing listened at the edge's address (a killed process, before the director saw it die).
    Unreachable(String),
    /// The director had no edge (503).
    NoEdge,
}

/// One viewer's visit as a player makes it: ask the director, follow the 302, GET the playlist (and the
/// media playlist, when it is a master), then its newest segment.
async fn visit(mesh: &Cluster, director: SocketAddr, local: &str) -> Visit {
    let location = match steer(director, local, "/live/s/index.m3u8").await {
        Ok(l) => l,
        Err(503) => return Visit::NoEdge,
        Err(status) => panic!("the director answered {status}"),
    };
    let edge = ["edge-ap", "edge-us"]
        .into_iter()
        .find(|e| location.starts_with(&format!("http://{}/", mesh.http(e))))
        .unwrap_or_else(|| panic!("sent to {location}, no edge of the mesh"))
        .to_owned();
    let viewer = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut url = reqwest::Url::parse(&location).unwrap();
    for _ in 0..3 {
        let resp = match viewer.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Visit::Unreachable(edge),
            Err(e) => panic!("GET {url}: {e}"),
        };
        let status = resp.status().as_u16();
        if status != 200 {
            return Visit::Refused { edge, url: url.to_string(), status };
        }
        if !url.path().ends_with(".m3u8") {
            return Visit::Played(edge);
        }
        let text = resp.text().await.unwrap();
        let newest = text.lines().rfind(|l| !l.is_empty() && !l.starts_with('#'));
        let newest = newest.unwrap_or_else(|| panic!("an empty playlist from {edge}:\n{text}"));
        url = url.join(newest).unwrap();
    }
    panic!("{location}: playlists all the way down")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_and_started_at_once_gets_viewers_only_once_it_can_serve_them() {
    require("ffmpeg");
    // An Atlantic between the edges and the origin: a restarted edge takes a few round trips to join the
    // mesh and hear of the stream, a window in which it would answer 404.
    let (mut mesh, director, _dns) = mesh(RESTART_BASE, 100, 40.0);
    mesh.start_all();
    mesh.wait_healthy().await;
    let log = mesh.dir.path().join("publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 60, false, &log);
    wait_sent_to(&mesh, director, "127.0.0.1", "edge-ap", Duration::from_secs(20)).await;
    // Live (ffmpeg has cut its first segment); before that every edge rightly answers 404.
    get_eventually(&format!("http://{}/live/s/index.m3u8", mesh.http("edge-ap"))).await;
    let first = visit(&mesh, director, "127.0.0.1").await;
    assert!(matches!(&first, Visit::Played(e) if e == "edge-ap"), "{first:?}");

    // ap's edge is killed and started again at once, while ap's viewers keep coming (one every 20 ms).
    mesh.kill("edge-ap");
    mesh.start("edge-ap");
    let restarted = Instant::now();
    let mut visits = Vec::new();
    let mut back = 0;
    while back < 20 {
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "the restarted edge-ap played to {back} viewers in 30 s: {visits:?}\n{}",
            mesh.log("edge-ap")
        );
        let v = visit(&mesh, director, "127.0.0.1").await;
        if matches!(&v, Visit::Played(e) if e == "edge-ap") {
            back += 1;
        }
        visits.push((restarted.elapsed(), v));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let count = |f: &dyn Fn(&Visit) -> bool| visits.iter().filter(|(_, v)| f(v)).count();
    eprintln!(
        "{} visits: {} played at edge-ap, {} at edge-us, {} unreachable, {} without an edge; edge-ap back after {} ms",
        visits.len(),
        count(&|v| matches!(v, Visit::Played(e) if e == "edge-ap")),
        count(&|v| matches!(v, Visit::Played(e) if e == "edge-us")),
        count(&|v| matches!(v, Visit::Unreachable(_))),
        count(&|v| matches!(v, Visit::NoEdge)),
        visits.iter().find(|(_, v)| matches!(v, Visit::Played(e) if e == "edge-ap")).unwrap().0.as_millis(),
    );
    // Every viewer the director sent somewhere was served there: none got a 404 (or any refusal) from the
    // edge that had just started and did not know the stream yet.
    let refused: Vec<_> = visits.iter().filter(|(_, v)| matches!(v, Visit::Refused { .. })).collect();
    assert!(refused.is_empty(), "viewers refused by an edge the director sent them to: {refused:?}");
    // The director stopped sending viewers to the dead process at once (its kept health-check connection
    // closed with it): at most the visits already under way met nothing listening.
    let unreachable: Vec<_> = visits.iter().filter(|(_, v)| matches!(v, Visit::Unreachable(_))).collect();
    assert!(unreachable.len() <= 1, "viewers sent to a dead edge: {unreachable:?}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// A DNS query for `name` (type A) with id `id`, as a resolver sends it.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;
    let mut query = Message::new();
    query.set_id(id).set_recursion_desired(false).add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    query.to_vec().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directors_dns_and_http_front_doors_are_bounded() {
    use hickory_proto::op::{Message, ResponseCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const QUERIES: u16 = 100;
    const PER_ADDRESS: usize = 4;
    let (mut mesh, director, dns) = mesh(BOUNDS_BASE, 100, 1.0);
    // At most one query answered at a time; the replica's [http] limits bound the HTTP director too.
    mesh.append_config(
        "control-1",
        &format!(
            "dns_max_in_flight = 1\n\n[http]\nheader_timeout_ms = 300\nmax_connections_per_address = {PER_ADDRESS}\n"
        ),
    );
    mesh.start("control-1");
    mesh.wait_healthy().await;

    // Bursts of queries, each sent whole before its first answer is read: the one being answered is
    // answered (no edge runs: SERVFAIL), those that arrive meanwhile are REFUSED, each counted. On a busy
    // machine the director may answer each query before the next one arrives, so bursts are sent until one
    // overlaps (at most `BURSTS`).
    const BURSTS: u32 = 20;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut answered, mut refused) = (0u32, 0u32);
    let mut buf = vec![0u8; 4096];
    for _ in 0..BURSTS {
        for id in 0..QUERIES {
            socket.send_to(&dns_query(id, "live.test."), dns).await.unwrap();
        }
        // Every query gets an answer of one kind or the other (on loopback none is lost; the bound ends
        // the wait if one were).
        let (mut burst_answered, mut burst_refused) = (0u32, 0u32);
        while burst_answered + burst_refused < u32::from(QUERIES) {
            let Ok(got) = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await else { break };
            let answer = Message::from_vec(&buf[..got.unwrap()]).unwrap();
            assert_eq!(answer.queries()[0].name().to_string(), "live.test.", "the answer names the question");
            match answer.response_code() {
                ResponseCode::Refused => burst_refused += 1,
                ResponseCode::ServFail => burst_answered += 1,
                other => panic!("answered {other} to query {}", answer.id()),
            }
        }
        assert_eq!(burst_answered + burst_refused, u32::from(QUERIES), "queries without an answer");
        assert!(burst_answered >= 1, "a burst got no answer at all");
        (answered, refused) = (answered + burst_answered, refused + burst_refused);
        if refused > 0 {
            break;
        }
    }
    eprintln!("bursts of {QUERIES} queries: {answered} answered, {refused} refused as over the cap");
    assert!(refused >= 1, "{answered} answered and none refused in {BURSTS} bursts of {QUERIES}");
    let metrics = client().get(format!("http://{director}/metrics")).send().await.unwrap().text().await.unwrap();
    let counted = metric_in(&metrics, "lightpath_director_dns_refused_total", &[("reason", "busy")]);
    assert_eq!(counted, f64::from(refused), "every refusal is counted");
    // One at a time, queries are answered again.
    let answer = dig(dns, &["live.test", "A"]);
    assert!(answer.contains("status: SERVFAIL"), "{answer}");

    // HTTP: one address may hold PER_ADDRESS connections; the next is refused with a 503.
    let mut held = Vec::new();
    for _ in 0..PER_ADDRESS {
        let mut tcp = tokio::net::TcpStream::connect(director).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n").await.unwrap();
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        held.push(tcp);
    }
    assert_eq!(raw_status(director, b"GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n").await, 503);
    drop(held);
    // A head that never ends is cut after header_timeout_ms (300 ms; the bound here is 10x).
    let mut slow = tokio::net::TcpStream::connect(director).await.unwrap();
    slow.write_all(b"GET /live/s/index.m3u8 HTTP/1.1\r\nHost: d\r\n").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a half-sent head held the connection for 3 s");
    eprintln!("half a head: closed after {} ms: {:?}", started.elapsed().as_millis(), String::from_utf8_lossy(&rest));
}
