//! The director with real processes: a control replica with `[director]`, two edges in two regions, an
//! origin with a live stream published by ffmpeg, viewers from addresses in the coverage zones.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;

const BASE: u8 = 160;

/// origin (eu) -> edge-ap (ap), edge-us (us); control-1 runs the director (HTTP and DNS). Viewers from
/// 127.0.0.1 are in ap's zone, from 127.0.BASE.64/26 in us's; the rest are taken to be in eu.
fn mesh(capacity_ap: u32) -> (Cluster, SocketAddr, SocketAddr) {
    let mesh = Cluster::with_controls(
        BASE,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "edge-ap", roles: &["edge"] },
            NodeSpec { id: "edge-us", roles: &["edge"] },
        ],
        &[("origin", "edge-ap", 1.0), ("origin", "edge-us", 1.0)],
        &["control-1"],
        "",
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
        format!("# test zones\n127.0.0.1/32 ap\n127.0.{BASE}.64/26 us\n"),
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
    let (mut mesh, director, dns) = mesh(1);
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

    // A real player follows the redirect and decodes the stream from ap's edge (once the restarted edge has
    // heard of the stream again: until then it answers 404, which the director does not know).
    get_eventually(&format!("http://{}/live/s/index.m3u8", mesh.http("edge-ap"))).await;
    // A real player follows the redirect and decodes the stream from ap's edge.
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
