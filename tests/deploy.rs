//! The operators' deployment end to end, in two tests that nextest runs side by side:
//!
//! - the playbooks lint clean (production profile), pass `--syntax-check`, and the alert rules pass
//!   `promtool check rules` and their `promtool test rules` cases;
//! - `ansible/site.yml` installs the example inventory's seven hosts with connection=local, each into its
//!   own temporary root (a first install, every region at once), then a second run, region by region as a
//!   rolling change goes, changes nothing. That second run goes on while the rest of the test uses what the
//!   first one rendered, as an operator re-runs the playbook over a live mesh: the units pass
//!   `systemd-analyze verify`; the configs run as real `lightpath node` / `lightpath control` processes,
//!   ffmpeg publishes into the rendered origin and decodes at a rendered edge; a real Prometheus, configured
//!   by the playbook, scrapes them, loads the alert rules and runs every query of the Grafana dashboard;
//!   `drain.yml` drains a node and Prometheus sees it draining; killing a relay fires the link-down alert.
//!
//! Needs ansible-playbook and ansible-lint (PyPI), prometheus and promtool (Debian's `prometheus`),
//! systemd-analyze and ffmpeg; `scripts/test` installs them.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{client, follow, publish};

/// The example inventory's hosts (ansible/inventory/example/hosts.yml), with their loopback addresses.
const NODES: &[(&str, &str)] = &[
    ("origin-eu", "127.0.150.2"),
    ("relay-eu", "127.0.150.3"),
    ("relay-us", "127.0.150.4"),
    ("edge-us", "127.0.150.5"),
    ("relay-ap", "127.0.150.6"),
    ("edge-ap", "127.0.150.7"),
];
const CONTROL: (&str, &str) = ("control-1", "127.0.150.10");
/// The nodes' admin token in this deployment.
const ADMIN: &str = "deploy-test-admin-token";

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible")
}

/// Fails at once, naming the package, when a tool is missing.
fn require(tool: &str, package: &str) {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(found.is_ok_and(|s| s.success()), "{tool} is required for this test: {package} (scripts/test installs it)");
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ansible-playbook PLAYBOOK` against the example inventory, every host local and under `roots/HOST`,
/// with `extra` arguments; its output.
fn playbook(name: &str, vars: &Path, extra: &[&str]) -> String {
    let out = run(Command::new("ansible-playbook")
        .current_dir(ansible_dir())
        .env("ANSIBLE_PIPELINING", "1")
        .env("ANSIBLE_FORKS", "8")
        .env("ANSIBLE_NOCOLOR", "1")
        .args([name, "-e"])
        .arg(format!("@{}", vars.display()))
        .args(extra));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each host's `changed=` count from a play recap.
fn changed_by_host(recap: &str) -> BTreeMap<String, u32> {
    let start = recap.rfind("PLAY RECAP").expect("no PLAY RECAP in the playbook's output");
    recap[start..]
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (host, counts) = line.split_once(':')?;
            let changed = counts.split_whitespace().find_map(|c| c.strip_prefix("changed="))?;
            Some((host.trim().to_owned(), changed.parse().ok()?))
        })
        .collect()
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Processes that die with the test.
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn kill(&mut self, name: &str) {
        let at = self.0.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.0.remove(at);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A JSON answer from Prometheus's API; `None` while it does not answer or answers 503 (it is starting).
async fn get_json(url: &str) -> Option<serde_json::Value> {
    let resp = client().get(url).send().await.ok()?;
    if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let text = resp.text().await.ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}")))
}

/// The answer of Prometheus's instant query API to `expr`.
async fn prom_query(api: &str, expr: &str) -> serde_json::Value {
    let resp = client().get(format!("{api}/query")).query(&[("query", expr)]).send().await.unwrap();
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("query {expr}: {e}: {text}"))
}

/// The metric names the binary's source registers (`metrics::counter!("lightpath_...")`, `gauge!`,
/// `histogram!`): a series that has never been counted (a refusal, an eviction) is absent from a scrape, so
/// a scrape cannot tell a misspelt name from a quiet one.
fn metrics_in_source() -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, names: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_call in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(macro_call) {
                        let rest = text[at + macro_call.len()..].trim_start();
                        if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                            names.insert(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut names);
    assert!(names.contains("lightpath_link_failures_total"), "no metric names found in src/: {names:?}");
    names
}

#[test]
fn the_playbooks_lint_clean_and_the_alert_rules_pass_their_tests() {
    for (tool, package) in [
        ("ansible-playbook", "pip install ansible"),
        ("ansible-lint", "pip install ansible-lint"),
        ("promtool", "apt-get install -y prometheus"),
    ] {
        require(tool, package);
    }
    let started = Instant::now();
    // What an operator's CI would run before touching a host.
    run(Command::new("ansible-lint").current_dir(ansible_dir()).args([
        "--profile",
        "production",
        "--offline",
        "--nocolor",
        "site.yml",
        "drain.yml",
        "roles",
    ]));
    for playbook in ["site.yml", "drain.yml"] {
        run(Command::new("ansible-playbook").current_dir(ansible_dir()).args(["--syntax-check", playbook]));
    }
    let rules = ansible_dir().join("roles/lightpath_prometheus/files/lightpath.rules.yml");
    run(Command::new("promtool").args(["check", "rules"]).arg(rules));
    run(Command::new("promtool").current_dir(ansible_dir().join("tests")).args([
        "test",
        "rules",
        "lightpath.rules.test.yml",
    ]));
    eprintln!(
        "{:>6.1} s  ansible-lint, syntax checks and promtool's rule checks passed",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbook_deploys_a_mesh_that_plays_alerts_and_drains() {
    for (tool, package) in [
        ("ansible-playbook", "pip install ansible"),
        ("prometheus", "apt-get install -y prometheus"),
        ("systemd-analyze", "apt-get install -y systemd"),
    ] {
        require(tool, package);
    }
    common::require("ffmpeg");
    let started = Instant::now();
    let lap = |what: &str| eprintln!("{:>6.1} s  {what}", started.elapsed().as_secs_f64());

    // Install every host of the example inventory into its own root.
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots");
    // The release artifact an operator would ship: the binary without its debug info (a tenth of its size,
    // which each host's copy and checksum pay for).
    let binary = dir.path().join("lightpath");
    let stripped = Command::new("strip").arg("-o").arg(&binary).arg(common::bin()).status();
    if !stripped.is_ok_and(|s| s.success()) {
        std::fs::copy(common::bin(), &binary).unwrap();
    }
    let sha256 = {
        let out = run(Command::new("sha256sum").arg(&binary));
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
    };
    // The target hosts' Python is Debian's (as on a Debian host); each module run starts one, and it starts
    // faster than a Python installed beside ansible (a tenth less CPU per run here).
    let python =
        if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "{{ ansible_playbook_python }}" };
    let vars = serde_json::json!({
        "ansible_connection": "local",
        "ansible_python_interpreter": python,
        "lightpath_system": false,
        "lightpath_root": format!("{}/{{{{ inventory_hostname }}}}", roots.display()),
        "lightpath_binary_src": binary,
        "lightpath_binary_sha256": sha256,
        "lightpath_ca_dir": dir.path().join("ca"),
        "lightpath_node_stream_keys": { "demo": common::KEY },
        "lightpath_node_admin_token": ADMIN,
        "lightpath_prometheus_scrape_interval": "1s",
        "lightpath_prometheus_evaluation_interval": "1s",
    });
    let vars_file = dir.path().join("vars.json");
    std::fs::write(&vars_file, vars.to_string()).unwrap();
    // A first install: no node runs yet, so every region at once.
    let first = changed_by_host(&playbook("site.yml", &vars_file, &["-e", "lightpath_all_regions_at_once=true"]));
    let hosts: Vec<String> = NODES.iter().chain([&CONTROL]).map(|(h, _)| h.to_string()).collect();
    for host in &hosts {
        assert!(first.get(host).is_some_and(|&c| c > 0), "the first run changed nothing on {host}: {first:?}");
    }
    lap("first playbook run (every region at once)");
    // The second run, region by region as a rolling change goes, while the mesh it rendered runs below.
    let second = {
        let vars_file = vars_file.clone();
        std::thread::spawn(move || {
            let recap = playbook("site.yml", &vars_file, &[]);
            (changed_by_host(&recap), started.elapsed())
        })
    };

    // What was rendered: hardened units that systemd accepts without a warning, a checksummed binary.
    let root = |host: &str| roots.join(host);
    for (host, unit) in [("relay-us", "lightpath-node.service"), ("control-1", "lightpath-control.service")] {
        let unit = root(host).join("etc/systemd/system").join(unit);
        let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "systemd-analyze verify {}: {warnings}", unit.display());
        let text = std::fs::read_to_string(&unit).unwrap();
        for hardening in ["NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "LimitNOFILE="] {
            assert!(text.contains(hardening), "{} lacks {hardening:?}", unit.display());
        }
        assert!(text.contains("Restart=on-failure"), "{} does not restart on failure", unit.display());
    }
    assert_eq!(
        std::fs::read(root("edge-ap").join("usr/local/bin/lightpath")).unwrap(),
        std::fs::read(&binary).unwrap()
    );
    let sysctls = std::fs::read_to_string(root("relay-eu").join("etc/sysctl.d/60-lightpath.conf")).unwrap();
    assert!(sysctls.contains("net.core.rmem_max = 16777216"), "{sysctls}");
    let key = root("edge-us").join("etc/lightpath/tls/edge-us.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640, "{} is readable by others", key.display());

    // The rendered configs, run as the units would run them (without systemd).
    let mut processes = Processes(Vec::new());
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let spawn = |host: &str, kind: &str, config: &str| {
        let log = std::fs::File::create(logs.join(format!("{host}.log"))).unwrap();
        let child = Command::new(root(host).join("usr/local/bin/lightpath"))
            .args([kind, "--config"])
            .arg(root(host).join("etc/lightpath").join(config))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        (host.to_owned(), child)
    };
    processes.0.push(spawn(CONTROL.0, "control", "control.toml"));
    for (host, _) in NODES {
        processes.0.push(spawn(host, "node", "node.toml"));
    }
    let http = |ip: &str| -> SocketAddr { format!("{ip}:8080").parse().unwrap() };
    let log_of = |host: &str| std::fs::read_to_string(logs.join(format!("{host}.log"))).unwrap_or_default();
    for (host, ip) in NODES.iter().chain([&CONTROL]) {
        let port = if *host == CONTROL.0 { 8081 } else { 8080 };
        let url = format!("http://{ip}:{port}/healthz");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client().get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "{host} never answered {url}:\n{}", log_of(host));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    lap("the rendered mesh runs");

    // Prometheus as the playbook configured it, scraping the mesh.
    let prometheus_addr = format!("127.0.150.11:{}", free_port("127.0.150.11"));
    let prometheus_log = std::fs::File::create(logs.join("prometheus.log")).unwrap();
    processes.0.push((
        "prometheus".into(),
        Command::new("prometheus")
            .arg(format!("--config.file={}", root(CONTROL.0).join("etc/prometheus/prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prometheus_addr}"))
            .stdout(Stdio::null())
            .stderr(prometheus_log)
            .spawn()
            .unwrap(),
    ));
    let api = format!("http://{prometheus_addr}/api/v1");
    let up = common::eventually(Duration::from_secs(60), "Prometheus scraping all seven targets", || {
        let url = format!("{api}/targets");
        async move {
            let targets = get_json(&url).await?.get("data")?.get("activeTargets")?.as_array()?.clone();
            let up: Vec<String> = targets
                .iter()
                .filter(|t| t["health"] == "up")
                .filter_map(|t| Some(t["labels"]["node"].as_str()?.to_owned()))
                .collect();
            (up.len() == 7).then_some(up)
        }
    })
    .await;
    eprintln!("targets up: {up:?}");
    let rules = get_json(&format!("{api}/rules")).await.unwrap();
    let alerts: Vec<&str> =
        rules["data"]["groups"][0]["rules"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    for alert in
        ["LightpathNodeDown", "LightpathLinkDown", "LightpathStreamStalledAtEdge", "LightpathCertificateExpiresSoon"]
    {
        assert!(alerts.contains(&alert), "Prometheus did not load {alert}: {alerts:?}");
    }
    lap("Prometheus scrapes the mesh with lightpath's rules");

    // A publisher at the rendered origin, a player at the rendered edge behind two relays.
    let (origin, edge) = (http(NODES[0].1), http(NODES[3].1));
    let publisher_log = logs.join("ffmpeg.log");
    let mut publisher = publish(origin, "demo", 8, false, &publisher_log);
    let limit = Duration::from_secs(60);
    let at_origin = tokio::spawn(follow(origin, "demo", limit));
    let at_edge = tokio::spawn(follow(edge, "demo", limit));
    let playlist = format!("http://{edge}/live/demo/index.m3u8");
    common::eventually(Duration::from_secs(30), "the stream going live at edge-us", || {
        let url = playlist.clone();
        async move {
            let resp = client().get(&url).send().await.ok()?;
            (resp.status() == 200 && resp.text().await.ok()?.contains("#EXTINF")).then_some(())
        }
    })
    .await;
    // Spawned, so that it plays while the stream is live (a future not polled would start only at the end).
    let player = tokio::spawn(
        tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-i", &playlist, "-f", "null", "-"])
            .output(),
    );
    let status = tokio::task::spawn_blocking(move || publisher.wait()).await.unwrap().unwrap();
    assert!(status.success(), "publisher failed: {}", std::fs::read_to_string(&publisher_log).unwrap());
    let (at_origin, at_edge) = (at_origin.await.unwrap(), at_edge.await.unwrap());
    assert!(at_edge.ended, "edge-us's playlist never ended:\n{}", log_of("edge-us"));
    assert!(at_origin.sequence.len() >= 6, "only {} segments published in 8 s", at_origin.sequence.len());
    assert_eq!(at_edge.sequence, at_origin.sequence, "edge-us and the origin list different segments");
    for (uri, bytes) in &at_origin.objects {
        assert!(at_edge.objects.get(uri) == Some(bytes), "edge-us served {uri} with other bytes, or not at all");
    }
    let played = player.await.unwrap().unwrap();
    let errors = String::from_utf8_lossy(&played.stderr);
    assert!(played.status.success() && errors.trim().is_empty(), "the player at edge-us failed: {errors}");
    let relayed = common::eventually(Duration::from_secs(10), "relay-us's objects in Prometheus", || {
        let api = api.clone();
        async move {
            let expr = r#"sum(lightpath_mesh_objects_received_total{node="relay-us",stream="demo"})"#;
            prom_query(&api, expr).await["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()
        }
    })
    .await;
    assert!(relayed > 0.0, "Prometheus shows no object through relay-us");
    lap("ffmpeg published at origin-eu and decoded at edge-us; the stream crossed relay-eu and relay-us");

    // Every panel query of the Grafana dashboard runs on this Prometheus, over metrics the mesh exports.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ansible_dir().join("roles/lightpath_prometheus/files/grafana-lightpath.json"))
            .unwrap(),
    )
    .unwrap();
    let exported = metrics_in_source();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let expr_for_api = expr.replace("$__rate_interval", "1m").replace("$region", ".*").replace("$node", ".*");
            let answer = client().get(format!("{api}/query")).query(&[("query", &expr_for_api)]).send().await.unwrap();
            let status = answer.status();
            let body = answer.text().await.unwrap();
            assert!(status.is_success(), "panel {:?}: {expr}: {body}", panel["title"]);
            // Metric names outside the quoted label values (`job="lightpath_nodes"` names a job).
            let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
            let named = unquoted
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("lightpath_"));
            for metric in named {
                assert!(
                    exported.contains(metric),
                    "panel {:?} uses {metric}, which lightpath does not export",
                    panel["title"]
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 8, "the dashboard has only {queries} queries");
    lap("the dashboard's queries run");

    // An operator drains a node with drain.yml: it says so, and Prometheus sees it. relay-ap carries no
    // stream, so the drain has nothing to wait for.
    playbook("drain.yml", &vars_file, &["-l", "relay-ap"]);
    let drained: serde_json::Value = serde_json::from_str(
        &client()
            .get(format!("http://{}/admin/drain", http(NODES[4].1)))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(drained["draining"], true, "relay-ap after drain.yml: {drained}");
    common::eventually(Duration::from_secs(15), "Prometheus seeing relay-ap draining", || {
        let api = api.clone();
        async move {
            let expr = r#"lightpath_node_draining{node="relay-ap"} == 1"#;
            (!prom_query(&api, expr).await["data"]["result"].as_array()?.is_empty()).then_some(())
        }
    })
    .await;
    lap("drain.yml drained relay-ap; Prometheus shows it draining");

    // Kill a relay that carried the stream: its neighbours declare their links to it down, and the
    // link-down alert fires; Prometheus sees the node down (pending until its `for` of one minute).
    processes.kill("relay-us");
    let killed = Instant::now();
    let firing = common::eventually(Duration::from_secs(45), "LightpathLinkDown firing for relay-us", || {
        let url = format!("{api}/alerts");
        async move {
            let alerts = get_json(&url).await?["data"]["alerts"].as_array()?.clone();
            let firing: Vec<String> = alerts
                .iter()
                .filter(|a| a["labels"]["alertname"] == "LightpathLinkDown" && a["state"] == "firing")
                .filter(|a| a["labels"]["peer"] == "relay-us")
                .filter_map(|a| Some(a["labels"]["node"].as_str()?.to_owned()))
                .collect();
            (!firing.is_empty()).then_some(firing)
        }
    })
    .await;
    let fired_after = killed.elapsed();
    eprintln!("LightpathLinkDown fired {fired_after:?} after relay-us was killed, reported by {firing:?}");
    for reporter in &firing {
        assert!(
            ["relay-eu", "edge-us", "relay-ap"].contains(&reporter.as_str()),
            "{reporter} is no neighbour of relay-us"
        );
    }
    let node_down = common::eventually(Duration::from_secs(15), "LightpathNodeDown pending for relay-us", || {
        let url = format!("{api}/alerts");
        async move {
            let alerts = get_json(&url).await?["data"]["alerts"].as_array()?.clone();
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == "LightpathNodeDown" && a["labels"]["node"] == "relay-us")
                .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
        }
    })
    .await;
    assert!(["pending", "firing"].contains(&node_down.as_str()), "LightpathNodeDown for relay-us is {node_down}");
    let others_down = prom_query(&api, r#"up{job="lightpath_nodes"} == 0"#).await;
    let down: Vec<&str> =
        others_down["data"]["result"].as_array().unwrap().iter().filter_map(|r| r["metric"]["node"].as_str()).collect();
    assert_eq!(down, ["relay-us"], "nodes Prometheus sees down");
    lap("killing relay-us fired LightpathLinkDown");

    let (second, done) =
        tokio::task::spawn_blocking(move || second.join().expect("the second run panicked")).await.unwrap();
    let mut expected = hosts.clone();
    expected.sort();
    assert_eq!(second.keys().cloned().collect::<Vec<_>>(), expected, "hosts in the second run's recap");
    assert!(second.values().all(|&c| c == 0), "the second run changed something: {second:?}");
    eprintln!(
        "{:>6.1} s  second playbook run (region by region, beside the live mesh): nothing changed",
        done.as_secs_f64()
    );
    lap("done");
}
