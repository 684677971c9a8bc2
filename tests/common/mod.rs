//! Test harness: real `lightpath node` processes on 127.0.0.x, real certificates, real ffmpeg.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "test-publish-key";

/// Path of the binary under test: this build's, or the one `LIGHTPATH_BIN` names (benchmarks compare a
/// build from before a change in the same run that way).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("LIGHTPATH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lightpath").to_owned()))
}

/// Fails at once, naming what to install, when a tool the test needs is missing.
pub fn require(tool: &str) {
    let ok = Command::new(tool).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "{tool} is required for this test: apt-get install -y ffmpeg (.ci/run does this)"
    );
}

/// A node of a test mesh.
pub struct NodeSpec {
    pub id: &'static str,
    pub roles: &'static [&'static str],
}

pub struct Node {
    pub id: String,
    /// A control-plane replica rather than a mesh node.
    pub control: bool,
    pub mesh: SocketAddr,
    pub http: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A mesh of real node processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<String, Node>,
}

pub fn free_port(ip: &str) -> u16 {
    // A port free for both UDP and TCP on this address; the node binds it a moment later.
    loop {
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Writes a topology, a CA, a certificate and a config per node; starts nothing. `ip_base` picks a
    /// distinct 127.0.x.0/24 per test so tests can run side by side.
    pub fn new(ip_base: u8, nodes: &[NodeSpec], links: &[(&str, &str, f64)], extra_config: &str) -> Self {
        Self::with_controls(ip_base, nodes, links, &[], extra_config)
    }

    /// Like [`Cluster::new`], plus control-plane replicas.
    pub fn with_controls(
        ip_base: u8,
        nodes: &[NodeSpec],
        links: &[(&str, &str, f64)],
        controls: &[&str],
        extra_config: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut topo = String::from("[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n");
        let mut out = BTreeMap::new();
        for (i, spec) in nodes.iter().enumerate() {
            let ip = format!("127.0.{ip_base}.{}", i + 2);
            let mesh: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
            let http: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
            let roles: Vec<String> = spec.roles.iter().map(|r| format!("{r:?}")).collect();
            let _ = write!(
                topo,
                "\n[[nodes]]\nid = \"{}\"\nregion = \"lab\"\nroles = [{}]\nmesh = \"{mesh}\"\nhttp = \"{http}\"\n",
                spec.id,
                roles.join(", ")
            );
            out.insert(
                spec.id.to_string(),
                Node {
                    id: spec.id.to_string(),
                    control: false,
                    mesh,
                    http,
                    config: dir.path().join(format!("{}.toml", spec.id)),
                    log: dir.path().join(format!("{}.log", spec.id)),
                    child: None,
                },
            );
        }
        for (a, b, ms) in links {
            let _ = write!(topo, "\n[[links]]\na = \"{a}\"\nb = \"{b}\"\nlatency_ms = {ms:?}\n");
        }
        for (i, id) in controls.iter().enumerate() {
            let ip = format!("127.0.{ip_base}.{}", 200 + i);
            let mesh: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
            let http: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
            let _ = write!(topo, "\n[[controls]]\nid = \"{id}\"\nmesh = \"{mesh}\"\nhttp = \"{http}\"\n");
            out.insert(
                id.to_string(),
                Node {
                    id: id.to_string(),
                    control: true,
                    mesh,
                    http,
                    config: dir.path().join(format!("{id}.toml")),
                    log: dir.path().join(format!("{id}.log")),
                    child: None,
                },
            );
        }
        std::fs::write(dir.path().join("topology.toml"), topo).unwrap();
        run_ok(Command::new(bin()).args(["ca", "init", "--dir"]).arg(dir.path().join("ca")));
        for node in out.values() {
            run_ok(
                Command::new(bin())
                    .args(["ca", "issue", "--dir"])
                    .arg(dir.path().join("ca"))
                    .args(["--node", &node.id, "--out"])
                    .arg(dir.path().join("certs")),
            );
            let config = format!(
                "node = \"{id}\"\ntopology = \"topology.toml\"\n{extra_config}\n[tls]\nca = \"ca/ca.pem\"\ncert = \"certs/{id}.pem\"\nkey = \"certs/{id}.key\"\n\n[ingest]\nstream_keys = {{ live1 = \"{KEY}\", live2 = \"{KEY}\", s = \"{KEY}\" }}\nmax_body_bytes = 4194304\n",
                id = node.id
            );
            std::fs::write(&node.config, config).unwrap();
        }
        Self { dir, nodes: out }
    }

    pub fn node(&self, id: &str) -> &Node {
        &self.nodes[id]
    }

    pub fn http(&self, id: &str) -> SocketAddr {
        self.nodes[id].http
    }

    /// Starts a node process (logs to its log file).
    pub fn start(&mut self, id: &str) {
        self.start_with_env(id, &[]);
    }

    /// Starts a node with more environment variables (a clock set off by libfaketime, say).
    pub fn start_with_env(&mut self, id: &str, env: &[(&str, &str)]) {
        let node = self.nodes.get_mut(id).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).unwrap();
        let child = Command::new(bin())
            .args([if node.control { "control" } else { "node" }, "--config"])
            .arg(&node.config)
            .envs(env.iter().copied())
            .env("RUST_LOG", std::env::var("LIGHTPATH_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    pub fn start_all(&mut self) {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.start(&id);
        }
    }

    /// Sends SIGKILL to a node.
    pub fn kill(&mut self, id: &str) {
        if let Some(mut child) = self.nodes.get_mut(id).unwrap().child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The node's process id, while it runs.
    pub fn pid(&self, id: &str) -> Option<u32> {
        self.nodes[id].child.as_ref().map(Child::id)
    }

    /// Whether the node process is still running.
    pub fn alive(&mut self, id: &str) -> bool {
        let node = self.nodes.get_mut(id).unwrap();
        node.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(&self.nodes[id].log).unwrap_or_default()
    }

    /// Waits until every started node answers /healthz.
    pub async fn wait_healthy(&self) {
        for node in self.nodes.values().filter(|n| n.child.is_some()) {
            let url = format!("http://{}/healthz", node.http);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if client().get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
                assert!(Instant::now() < deadline, "{} never became healthy:\n{}", node.id, self.log(&node.id));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Appends lines to a node's config file (its last section is `[ingest]`).
    pub fn append_config(&self, id: &str, lines: &str) {
        let node = &self.nodes[id];
        let mut config = std::fs::read_to_string(&node.config).unwrap();
        config.push_str(lines);
        std::fs::write(&node.config, config).unwrap();
    }

    /// One metric's value summed over the series whose labels include all of `labels`.
    pub async fn metric(&self, id: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text =
            client().get(format!("http://{}/metrics", self.http(id))).send().await.unwrap().text().await.unwrap();
        metric_in(&text, name, labels)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for node in self.nodes.values() {
                eprintln!("---- log of {} ----\n{}", node.id, std::fs::read_to_string(&node.log).unwrap_or_default());
            }
        }
    }
}

/// One memory field of a process's `/proc/PID/status` (`VmRSS:`, `RssAnon:`...), in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix(field))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap()
}

/// Starts ffmpeg publishing `seconds` of an H.264 test source to `origin` as HLS over HTTP PUT.
pub fn publish(origin: SocketAddr, stream: &str, seconds: u32, fmp4: bool, log: &Path) -> Child {
    publish_with(origin, stream, seconds, fmp4, &[], log)
}

/// [`publish`] with more options for ffmpeg's HLS muxer (given before the output URL).
pub fn publish_with(origin: SocketAddr, stream: &str, seconds: u32, fmp4: bool, extra: &[&str], log: &Path) -> Child {
    publish_from(origin, "testsrc2", stream, seconds, fmp4, extra, log)
}

/// [`publish_with`] from another lavfi test source (`testsrc2`, `smptebars`, `rgbtestsrc`...), so that two
/// publishers' bytes differ.
pub fn publish_from(
    origin: SocketAddr,
    source: &str,
    stream: &str,
    seconds: u32,
    fmp4: bool,
    extra: &[&str],
    log: &Path,
) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i"])
        .arg(format!("{source}=size=320x240:rate=25"))
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", "5", "-hls_flags", "delete_segments"])
        .args(["-method", "PUT", "-headers", &format!("Authorization: Bearer {KEY}\r\n")]);
    if fmp4 {
        cmd.args(["-hls_segment_type", "fmp4", "-http_persistent", "1"]);
    }
    cmd.args(extra).arg(format!("http://{origin}/live/{stream}/index.m3u8"));
    let log = std::fs::File::create(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(log).spawn().expect("ffmpeg")
}

/// What a poller saw of a live playlist: every segment (and init segment) fetched, by name, and the media
/// sequence number of each segment.
#[derive(Default, Debug)]
pub struct Seen {
    pub objects: HashMap<String, Vec<u8>>,
    pub sequence: BTreeMap<u64, String>,
    pub ended: bool,
}

/// Polls `http://{addr}/live/{stream}/index.m3u8` until it ends (EXT-X-ENDLIST) or `limit` passes,
/// fetching every segment it names.
pub async fn follow(addr: SocketAddr, stream: &str, limit: Duration) -> Seen {
    let client = client();
    let base = format!("http://{addr}/live/{stream}/");
    let mut seen = Seen::default();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !seen.ended {
        let resp = match client.get(format!("{base}index.m3u8")).send().await {
            Ok(r) if r.status().is_success() => r,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let text = resp.text().await.unwrap();
        let mut seq = 0u64;
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                seq = n.trim().parse().unwrap();
            } else if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
                let uri = rest.trim_end_matches('"').to_string();
                fetch_into(&client, &base, &uri, &mut seen).await;
            } else if line == "#EXT-X-ENDLIST" {
                seen.ended = true;
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let uri = line.trim().to_string();
                fetch_into(&client, &base, &uri, &mut seen).await;
                seen.sequence.entry(seq).or_insert(uri);
                seq += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

async fn fetch_into(client: &reqwest::Client, base: &str, uri: &str, seen: &mut Seen) {
    if seen.objects.contains_key(uri) {
        return;
    }
    let resp = client.get(format!("{base}{uri}")).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {base}{uri}: {}", resp.status());
    seen.objects.insert(uri.to_string(), resp.bytes().await.unwrap().to_vec());
}

/// Sends raw bytes as an HTTP/1.1 request and returns the status code of the reply.
pub async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// GETs `url` until it answers 200 (the mesh may still be connecting or announcing), up to 10 s.
pub async fn get_eventually(url: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client().get(url).send().await.unwrap();
        if resp.status().is_success() {
            return resp.bytes().await.unwrap().to_vec();
        }
        assert!(Instant::now() < deadline, "GET {url} still answers {}", resp.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// origin -> {relay-a, relay-b} -> edge: two disjoint paths (relay-a's the shorter by configuration).
pub fn two_relays(ip_base: u8, controls: &[&str]) -> Cluster {
    Cluster::with_controls(
        ip_base,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "relay-a", roles: &["relay"] },
            NodeSpec { id: "relay-b", roles: &["relay"] },
            NodeSpec { id: "edge", roles: &["edge"] },
        ],
        &[("origin", "relay-a", 5.0), ("origin", "relay-b", 10.0), ("relay-a", "edge", 5.0), ("relay-b", "edge", 10.0)],
        controls,
        "",
    )
}

impl Cluster {
    /// Places the nodes in regions instead of the one region "lab": `regions` as (name, lat, lon), `nodes`
    /// as (node id, region). Call before starting anything.
    pub fn place(&self, regions: &[(&str, f64, f64)], nodes: &[(&str, &str)]) {
        let file = self.dir.path().join("topology.toml");
        let mut topo = std::fs::read_to_string(&file).unwrap();
        let mut header = String::new();
        for (name, lat, lon) in regions {
            let _ = write!(header, "[[regions]]\nname = \"{name}\"\nlat = {lat:?}\nlon = {lon:?}\n\n");
        }
        topo = topo.replacen("[[regions]]\nname = \"lab\"\nlat = 0.0\nlon = 0.0\n", &header, 1);
        for (id, region) in nodes {
            let from = format!("id = \"{id}\"\nregion = \"lab\"\n");
            assert!(topo.contains(&from), "no node {id} in the topology");
            topo = topo.replace(&from, &format!("id = \"{id}\"\nregion = \"{region}\"\n"));
        }
        std::fs::write(file, topo).unwrap();
    }
}

/// Plays `url` for three seconds with ffmpeg and asserts it decodes without a single error.
pub async fn play_cleanly(url: &str) {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i", url, "-t", "3", "-f", "null", "-"])
        .output()
        .await
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && errors.trim().is_empty(), "the player saw errors: {errors}");
}

/// Fails at once, naming what to install, when headless Chromium or one of the npm `packages` of
/// tests/browser (driven by node) is missing.
pub fn require_browser(packages: &[&str]) {
    let ok = Command::new("chromium").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "chromium is required: apt-get install -y chromium (scripts/test does this)"
    );
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules");
    for package in packages {
        assert!(
            modules.join(package).exists(),
            "{package} is required: npm ci --prefix tests/browser (scripts/test does this)"
        );
    }
}

/// Waits up to `limit` for `check` to give a value, polling every 100 ms; fails the test naming `what`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `lightpath demo` on `topology/demo.toml` with every address (the director's too) moved to a free
/// loopback port, so that it runs beside anything else; its log (at `rust_log`) goes to `dir/demo.log`.
/// Returns the process, killed when dropped, and node `edge`'s HTTP address.
pub fn spawn_demo(dir: &Path, edge: &str, rust_log: &str) -> (Killed, SocketAddr) {
    let (topology, edge) = demo_topology(dir, edge);
    let demo = Command::new(bin())
        .args(["demo", "--topology"])
        .arg(&topology)
        .arg("--director")
        .arg(format!("127.0.0.1:{}", free_port("127.0.0.1")))
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("demo.log")).unwrap())
        .spawn()
        .unwrap();
    (Killed(demo), edge)
}

/// `topology/demo.toml` with every address moved to a free loopback port, written into `dir`; returns the
/// file and node `edge`'s HTTP address.
fn demo_topology(dir: &Path, edge: &str) -> (PathBuf, SocketAddr) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/demo.toml")).unwrap();
    let (mut out, mut node, mut edge_http) = (String::new(), String::new(), None);
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("id = ") {
            node = id.trim_matches('"').to_owned();
        }
        match line.split_once(" = \"127.0.0.1:") {
            Some((key, _)) => {
                let addr: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse().unwrap();
                if node == edge && key == "http" {
                    edge_http = Some(addr);
                }
                writeln!(out, "{key} = \"{addr}\"").unwrap();
            }
            None => writeln!(out, "{line}").unwrap(),
        }
    }
    let path = dir.join("demo.toml");
    std::fs::write(&path, out).unwrap();
    (path, edge_http.unwrap_or_else(|| panic!("no node {edge} with an HTTP address in the demo topology")))
}

/// A child process killed however the test ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plays `url` with hls.js in headless Chromium for `seconds` (`tests/browser/play.mjs`; `mode` "low" for
/// lowLatencyMode or "plain"; `flags` added to Chromium's) and returns what the player saw, as play.mjs
/// prints it. Fails the test if the page could not run or reported an error of its own.
pub async fn play_in_browser(url: &str, seconds: u32, mode: &str, flags: &str) -> serde_json::Value {
    let out = tokio::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/play.mjs"))
        .args([url, &seconds.to_string(), mode])
        .env("CHROMIUM_FLAGS", flags)
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser run failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("{seen}");
    assert!(seen.get("error").is_none(), "{seen}");
    seen
}

/// The admin token of test clusters that change their links at runtime (`[admin] token`).
pub const ADMIN: &str = "admin-token-for-tests";

/// Sets the link a—b on both ends through `PUT /admin/links/{peer}` (the nodes need `[admin] token = ADMIN`):
/// whether it is up, and its emulated one-way latency (`None`: as it is).
pub async fn set_link(mesh: &Cluster, a: &str, b: &str, delay_ms: Option<f64>, up: bool) {
    let mut body = serde_json::json!({ "up": up });
    if let Some(ms) = delay_ms {
        body["delay_ms"] = ms.into();
    }
    for (from, to) in [(a, b), (b, a)] {
        let resp = client()
            .put(format!("http://{}/admin/links/{to}", mesh.http(from)))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap());
    }
}
