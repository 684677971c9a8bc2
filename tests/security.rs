//! Bad input and bad peers: keys, paths, limits, foreign certificates and garbage on both ports.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn origin_edge(ip_base: u8) -> Cluster {
    Cluster::new(
        ip_base,
        &[NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "edge", roles: &["edge"] }],
        &[("origin", "edge", 2.0)],
        "",
    )
}

async fn put(addr: std::net::SocketAddr, path: &str, key: Option<&str>, body: Vec<u8>) -> reqwest::StatusCode {
    let mut req = client().put(format!("http://{addr}{path}")).body(body);
    if let Some(key) = key {
        req = req.header("Authorization", format!("Bearer {key}"));
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_needs_the_key_and_bad_paths_and_bodies_are_refused() {
    let mut mesh = origin_edge(21);
    mesh.start_all();
    mesh.wait_healthy().await;
    let origin = mesh.http("origin");

    assert_eq!(put(origin, "/live/live1/a.ts", None, b"x".to_vec()).await, 401);
    assert_eq!(put(origin, "/live/live1/a.ts", Some("wrong"), b"x".to_vec()).await, 403);
    // A stream with no key configured cannot be published with another stream's key.
    assert_eq!(put(origin, "/live/other/a.ts", Some(KEY), b"x".to_vec()).await, 403);
    let get = client().get(format!("http://{origin}/live/live1/a.ts")).send().await.unwrap();
    assert_eq!(get.status(), 404, "a refused upload was stored");

    // Over the 4 MiB limit: refused from Content-Length, and also when chunked without one.
    let req = format!(
        "PUT /live/live1/big.ts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n",
        5 << 20
    );
    assert_eq!(raw_status(origin, req.as_bytes()).await, 413);
    let chunks = futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![1u8; 64 << 10])));
    let status = client()
        .put(format!("http://{origin}/live/live1/big.ts"))
        .header("Authorization", format!("Bearer {KEY}"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(413); // the server may close the connection while the client still sends
    assert_eq!(status, 413);
    assert_eq!(client().get(format!("http://{origin}/live/live1/big.ts")).send().await.unwrap().status(), 404);

    // Traversal and odd paths, sent raw so no client normalises them.
    for path in [
        "/live/live1/../../etc/passwd",
        "/live/live1/%2e%2e",
        "/live/%2e%2e/x.ts",
        "/live/live1/%2e%2e%2fx.ts",
        "/live//etc/passwd",
        "/live/live1/a%00.ts",
        "/live/live1/.hidden",
    ] {
        for method in ["GET", "PUT"] {
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
            );
            assert_eq!(raw_status(origin, req.as_bytes()).await, 400, "{method} {path}");
        }
    }
    // An absolute-form target outside /live is not found, never a file.
    let req = "GET /etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(origin, req.as_bytes()).await, 404);
    let log = mesh.log("origin");
    assert!(
        log.contains("request refused") && log.contains("wrong key for stream live1"),
        "refusals not logged:\n{log}"
    );

    // A good upload still works after all that, and reaches the edge.
    assert_eq!(put(origin, "/live/live1/a.ts", Some(KEY), b"hello".to_vec()).await, 201);
    assert_eq!(get_eventually(&format!("http://{}/live/live1/a.ts", mesh.http("edge"))).await, b"hello");
    assert_eq!(
        client().get(format!("http://{}/live/nosuch/a.ts", mesh.http("edge"))).send().await.unwrap().status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_both_ports_crashes_nothing() {
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut mesh = origin_edge(22);
    mesh.start_all();
    mesh.wait_healthy().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..2000 {
        let len = rng.gen_range(1..1400);
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf[..]);
        if i % 3 == 0 {
            buf[0] |= 0xc0; // looks like a QUIC long header
        }
        for id in ["origin", "edge"] {
            udp.send_to(&buf, mesh.node(id).mesh).await.unwrap();
        }
    }
    // Each garbage request is sent whole, then the server has had its say once it closes the connection.
    for _ in 0..50 {
        let len = rng.gen_range(1..8000);
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf[..]);
        for id in ["origin", "edge"] {
            if let Ok(mut tcp) = tokio::net::TcpStream::connect(mesh.http(id)).await {
                let _ = tcp.write_all(&buf).await;
                let _ = tcp.shutdown().await;
                let mut reply = Vec::new();
                let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut reply)).await;
                assert!(closed.is_ok(), "{id} kept a garbage connection open");
            }
        }
    }
    assert!(mesh.alive("origin") && mesh.alive("edge"));
    assert_eq!(put(mesh.http("origin"), "/live/live1/after.ts", Some(KEY), b"still here".to_vec()).await, 201);
    let got = get_eventually(&format!("http://{}/live/live1/after.ts", mesh.http("edge"))).await;
    assert_eq!(got, b"still here", "the mesh link did not survive");
}

/// Replaces a node's certificate with one from `ca_dir`, issued for `name`.
fn reissue(mesh: &Cluster, node: &str, ca_dir: &std::path::Path, name: &str) {
    let out = mesh.dir.path().join("other-certs");
    let status = Command::new(bin())
        .args(["ca", "issue", "--dir"])
        .arg(ca_dir)
        .args(["--node", name, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success());
    let certs = mesh.dir.path().join("certs");
    std::fs::copy(out.join(format!("{name}.pem")), certs.join(format!("{node}.pem"))).unwrap();
    std::fs::copy(out.join(format!("{name}.key")), certs.join(format!("{node}.key"))).unwrap();
    std::fs::remove_dir_all(out).unwrap();
}

async fn never_joins(mesh: &Cluster, intruder: &str, why: &str) {
    // The origin publishes; once the legitimate edge has the stream, and a log line says why the intruder
    // was refused, the intruding edge must not have it.
    assert_eq!(put(mesh.http("origin"), "/live/live1/a.ts", Some(KEY), b"secret".to_vec()).await, 201);
    let good = get_eventually(&format!("http://{}/live/live1/a.ts", mesh.http("good"))).await;
    assert_eq!(good, b"secret", "the legitimate edge did not get the stream");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = format!("{}{}", mesh.log("origin"), mesh.log(intruder));
        if log.contains(why) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no log line says {why:?}:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = client().get(format!("http://{}/live/live1/a.ts", mesh.http(intruder))).send().await.unwrap();
    assert_eq!(got.status(), 404, "the intruder learned of the stream");
}

fn three_nodes(ip_base: u8) -> Cluster {
    // "a-..." sorts first so the intruder is the one that dials the origin.
    Cluster::new(
        ip_base,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "good", roles: &["edge"] },
            NodeSpec { id: "a-intruder", roles: &["edge"] },
        ],
        &[("origin", "good", 2.0), ("origin", "a-intruder", 2.0)],
        "",
    )
}

/// Points a node's config at files of its own: `from` replaced by `to` (a node must pass its own
/// certificate checks to start, so an intruder is a node consistent with itself but foreign to the mesh).
fn edit_config(mesh: &Cluster, node: &str, from: &str, to: &str) {
    let path = &mesh.node(node).config;
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let mut mesh = three_nodes(23);
    let other_ca = mesh.dir.path().join("other-ca");
    assert!(Command::new(bin()).args(["ca", "init", "--dir"]).arg(&other_ca).status().unwrap().success());
    reissue(&mesh, "a-intruder", &other_ca, "a-intruder");
    // A node of another mesh: it trusts its own CA.
    edit_config(&mesh, "a-intruder", "ca = \"ca/ca.pem\"", "ca = \"other-ca/ca.pem\"");
    mesh.start_all();
    mesh.wait_healthy().await;
    never_joins(&mesh, "a-intruder", "handshake failed").await;
    let intruder = mesh.log("a-intruder");
    assert!(intruder.contains("presented a certificate from an unknown CA"), "{intruder}");
}

/// The intruder of [`three_nodes`] with a genuine mesh certificate for "mallory", a node the others do not
/// know, and a topology of its own in which it is mallory and a neighbour of the origin.
fn mallory(ip_base: u8) -> Cluster {
    let mesh = three_nodes(ip_base);
    reissue(&mesh, "a-intruder", &mesh.dir.path().join("ca"), "mallory");
    let topology = std::fs::read_to_string(mesh.dir.path().join("topology.toml")).unwrap();
    std::fs::write(mesh.dir.path().join("mallory.toml"), topology.replace("a-intruder", "mallory")).unwrap();
    edit_config(&mesh, "a-intruder", "node = \"a-intruder\"", "node = \"mallory\"");
    edit_config(&mesh, "a-intruder", "topology = \"topology.toml\"", "topology = \"mallory.toml\"");
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_certificate_names_another_node_cannot_join() {
    let mut mesh = mallory(24);
    mesh.start_all();
    mesh.wait_healthy().await;
    never_joins(&mesh, "a-intruder", "names no neighbour").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_node_backs_off_instead_of_redialing_in_a_loop() {
    let mut mesh = mallory(25);
    mesh.start_all();
    mesh.wait_healthy().await;
    let started = std::time::Instant::now();
    // Each attempt is one line on each side. Redialing every 100 ms (as a refused node once did) would
    // write about 80 in 8 s; doubling waits from 100 ms (give or take half) leave room for at most 9.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let watched = started.elapsed();
    let intruder = mesh.log("a-intruder");
    let attempts = intruder.lines().filter(|l| l.contains("mesh peer origin at")).count();
    let rejections = mesh.log("origin").lines().filter(|l| l.contains("rejected mesh connection")).count();
    eprintln!("in {watched:?}: {attempts} attempts logged by the intruder, {rejections} rejections by the origin");
    assert!((2..=12).contains(&attempts), "{attempts} attempts in {watched:?}:\n{intruder}");
    assert!(rejections <= 12, "{rejections} rejections in {watched:?}");
    assert!(intruder.contains("refused this node: not a neighbour"), "the reason is not in words:\n{intruder}");
}
