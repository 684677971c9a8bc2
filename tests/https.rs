//! HTTPS for viewers at a real edge: a certificate from the test's own CA, ffmpeg playing over TLS, HTTP/2
//! by ALPN, and a certificate replaced and SIGHUP'd served to the next connection while an open one goes on.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, and a certificate it signs for `localhost` (PEM chain, PEM key).
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "lightpath test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf for localhost named `cn`: (chain PEM, key PEM, leaf DER).
    fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (format!("{}{}", cert.pem(), self.cert.pem()), key.serialize_pem(), cert.der().to_vec())
    }
}

/// A TLS connection to `addr` trusting only `ca_pem`, offering the protocols `alpn` names.
async fn connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// One keep-alive HTTP/1.1 GET of /healthz on an open connection: the status line.
async fn healthz(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_play_over_https_and_a_renewed_certificate_is_served_after_sighup() {
    require("ffmpeg");
    let mut mesh = Cluster::new(
        162,
        &[NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "edge", roles: &["edge"] }],
        &[("origin", "edge", 1.0)],
        "",
    );
    let ca = TestCa::new();
    let ca_pem = ca.cert.pem();
    let (chain, key, first_der) = ca.leaf("edge first");
    write(mesh.dir.path(), "viewer-ca.pem", &ca_pem);
    write(mesh.dir.path(), "viewer.pem", &chain);
    write(mesh.dir.path(), "viewer.key", &key);
    let port = free_port("127.0.0.1");
    let https: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    mesh.append_config(
        "edge",
        &format!("\n[edge.tls]\nlisten = \"{https}\"\ncert = \"viewer.pem\"\nkey = \"viewer.key\"\n"),
    );
    mesh.start_all();
    mesh.wait_healthy().await;
    let log = mesh.dir.path().join("publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 30, false, &log);
    get_eventually(&format!("http://{}/live/s/index.m3u8", mesh.http("edge"))).await;

    // HTTP/2 by ALPN, with the first certificate.
    let tls = connect(https, &ca_pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(), &first_der[..]);
    drop(tls);

    // ffmpeg plays over HTTPS, verifying the edge by the test's CA; without that CA it refuses the edge.
    let url = format!("https://localhost:{port}/live/s/index.m3u8");
    let ca_file = mesh.dir.path().join("viewer-ca.pem");
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-tls_verify", "1", "-ca_file"])
        .arg(&ca_file)
        .args(["-i", &url, "-t", "3", "-f", "null", "-"])
        .output()
        .await
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && errors.trim().is_empty(), "the player saw errors: {errors}");
    let untrusted = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-tls_verify", "1", "-i", &url, "-t", "1", "-f", "null", "-"])
        .output()
        .await
        .unwrap();
    assert!(!untrusted.status.success(), "ffmpeg trusted a certificate of a CA it was not given");

    // A connection open before the renewal keeps working; the next one gets the new certificate.
    let mut open = connect(https, &ca_pem, &[b"http/1.1"]).await;
    assert_eq!(healthz(&mut open).await, "HTTP/1.1 200 OK");
    let (chain, key, second_der) = ca.leaf("edge second");
    write(mesh.dir.path(), "viewer.pem", &chain);
    write(mesh.dir.path(), "viewer.key", &key);
    let pid = mesh.pid("edge").unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tls = connect(https, &ca_pem, &[b"h2", b"http/1.1"]).await;
        if tls.get_ref().1.peer_certificates().unwrap()[0].as_ref() == &second_der[..] {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate is not served:\n{}", mesh.log("edge"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(healthz(&mut open).await, "HTTP/1.1 200 OK", "the open connection was dropped");
    assert!(mesh.alive("edge"), "SIGHUP stopped the edge");
    assert!(mesh.log("edge").contains("viewer certificate reloaded"));
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// The SHA-256 of a key's SubjectPublicKeyInfo, base64: what Chromium's `--ignore-certificate-errors-spki-list`
/// takes to trust a certificate of exactly that key.
fn spki_sha256(key_pem: &str) -> String {
    use base64::Engine as _;
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, &key.public_key_der()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_in_chromium_plays_over_https_trusting_the_test_certificate() {
    require("ffmpeg");
    require_browser(&["hls.js", "playwright-core"]);
    let mut mesh = Cluster::new(
        166,
        &[NodeSpec { id: "origin", roles: &["origin"] }, NodeSpec { id: "edge", roles: &["edge"] }],
        &[("origin", "edge", 1.0)],
        "",
    );
    let ca = TestCa::new();
    let (chain, key, _) = ca.leaf("edge");
    write(mesh.dir.path(), "viewer.pem", &chain);
    write(mesh.dir.path(), "viewer.key", &key);
    let port = free_port("127.0.0.1");
    mesh.append_config(
        "edge",
        &format!("\n[edge.tls]\nlisten = \"127.0.0.1:{port}\"\ncert = \"viewer.pem\"\nkey = \"viewer.key\"\n"),
    );
    mesh.start_all();
    mesh.wait_healthy().await;
    let log = mesh.dir.path().join("publish.log");
    let mut publisher = publish(mesh.http("origin"), "s", 40, false, &log);
    get_eventually(&format!("http://{}/live/s/index.m3u8", mesh.http("edge"))).await;

    // The page loads hls.js and plays the edge's HTTPS URL; Chromium trusts the edge's key and nothing else
    // of the test's (the CA is not installed anywhere).
    let url = format!("https://localhost:{port}/live/s/index.m3u8");
    let flags = format!("--ignore-certificate-errors-spki-list={}", spki_sha256(&key));
    let seen = play_in_browser(&url, 4, "plain", &flags).await;
    assert!(seen["fragments"].as_u64().unwrap() >= 2, "hls.js buffered few fragments over HTTPS: {seen}");
    assert!(seen["played"].as_f64().unwrap() >= 3.0, "the playhead did not run: {seen}");
    assert_eq!(seen["stalls"].as_u64(), Some(0), "playback stalled over HTTPS: {seen}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}
