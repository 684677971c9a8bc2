//! Node configs as an operator sees them: each kind of mistake is reported naming its field, all at once,
//! together with the mistakes of the topology the config points to.

use std::path::{Path, PathBuf};

use lightpath::ca::{create_ca, issue, issue_between, CaFiles, NodeFiles};
use lightpath::config::{check_config, CacheConfig, NodeConfig};
use lightpath::id::{NodeId, StreamName};
use lightpath::topology::CheckErrors;

const TOPOLOGY: &str = r#"
[[regions]]
name = "eu"
lat = 53.3
lon = -6.3

[[nodes]]
id = "origin-eu"
region = "eu"
roles = ["origin"]
mesh = "127.0.0.1:7101"
http = "127.0.0.1:8101"

[[nodes]]
id = "edge-eu"
region = "eu"
roles = ["edge", "relay"]
mesh = "edge-eu.mesh.example.net:4433"
http = "edge-eu.example.net:443"

[[links]]
a = "origin-eu"
b = "edge-eu"
latency_ms = 1.5
"#;

const CONFIG: &str = r#"
node = "origin-eu"
topology = "mesh.toml"

[tls]
ca = "ca.pem"
cert = "origin-eu.pem"
key = "origin-eu.key"

[ingest]
stream_keys = { demo = "s3cret" }
"#;

/// A folder with a valid topology, TLS files (a real CA and a certificate for origin-eu) and config; tests
/// overwrite what they break.
struct Setup {
    dir: tempfile::TempDir,
    ca: CaFiles,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = create_ca("test mesh CA").unwrap();
        let node = issue(&ca, &NodeId::new("origin-eu").unwrap(), 30).unwrap();
        for (name, text) in [
            ("mesh.toml", TOPOLOGY),
            ("node.toml", CONFIG),
            ("ca.pem", ca.cert_pem.as_str()),
            ("origin-eu.pem", node.chain_pem.as_str()),
            ("origin-eu.key", node.key_pem.as_str()),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Self { dir, ca }
    }

    /// Replaces the node's certificate and key.
    fn certificate(&self, files: &NodeFiles) {
        self.write("origin-eu.pem", &files.chain_pem).write("origin-eu.key", &files.key_pem);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.path(name), text).unwrap();
        self
    }

    fn config(&self, text: &str) -> PathBuf {
        self.write("node.toml", text);
        self.path("node.toml")
    }

    fn errors(&self, text: &str) -> CheckErrors {
        match NodeConfig::load(&self.config(text)) {
            Ok((c, _)) => panic!("accepted: {c:?}"),
            Err(e) => e,
        }
    }
}

fn broken(from: &str, to: &str) -> String {
    assert_eq!(CONFIG.matches(from).count(), 1, "{from:?} must occur once in CONFIG");
    CONFIG.replacen(from, to, 1)
}

/// The report has a problem for `field` whose message contains `words`, displayed as `FILE: FIELD: ...`.
#[track_caller]
fn assert_reports(e: &CheckErrors, field: &str, words: &str) {
    assert!(
        e.errors.iter().any(|x| x.field == field && x.message.contains(words)),
        "no {field:?} problem containing {words:?} in:\n{e}"
    );
    assert!(e.to_string().lines().any(|l| l.starts_with(&format!("{}: {field}: ", e.file))), "{e}");
}

#[test]
fn a_good_config_loads_with_paths_resolved_and_defaults() {
    let s = Setup::new();
    let path = s.config(CONFIG);
    let (config, topology) = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.node.as_str(), "origin-eu");
    assert_eq!(config.topology, s.path("mesh.toml"));
    assert_eq!(config.tls.cert, s.path("origin-eu.pem"));
    assert_eq!(config.cache.max_bytes, 256 << 20);
    assert_eq!(config.ingest.max_body_bytes, 32 << 20);
    assert_eq!(config.edge.wait_ms, 6000);
    assert_eq!((config.probes.fast_ms, config.probes.slow_ms), (100, 1000));
    assert_eq!(config.ingest.stream_keys[&StreamName::new("demo").unwrap()], "s3cret");
    assert_eq!(config.ingest.any_stream_key, None);
    assert_eq!(config.mesh_bind(&topology), Some("127.0.0.1:7101".parse().unwrap()));
    assert_eq!(topology.nodes.len(), 2);
    let summary = check_config(&path).unwrap();
    assert_eq!(
        summary,
        format!(
            "ok: node origin-eu (origin) in {}: 2 nodes, 1 links, 1 regions\nlimits: http.header_timeout_ms 10000, \
             http.idle_timeout_ms 30000, http.body_timeout_ms 10000, http.max_connections 16384 \
             (http.max_connections_per_address 256, http.reserved_fds 512), quic.validate_addresses true, \
             quic.max_handshakes 64, quic.peer_queue_bytes 16777216, quic.max_object_streams 128",
            s.path("mesh.toml").display()
        )
    );
}

#[test]
fn the_limits_are_checked_and_named() {
    let s = Setup::new();
    let limits = "\n[http]\nheader_timeout_ms = 20000\nidle_timeout_ms = 5000\nmax_connections_per_address = 0\n\
                  \n[quic]\nmax_handshakes = 0\n";
    let e = NodeConfig::load(&s.config(&format!("{CONFIG}{limits}"))).unwrap_err();
    assert_reports(&e, "http.idle_timeout_ms", "shorter than http.header_timeout_ms");
    assert_reports(&e, "http.max_connections_per_address", "refuse every connection");
    assert_reports(&e, "quic.max_handshakes", "refuse every peer");
    let e = NodeConfig::load(&s.config(&format!("{CONFIG}\n[http]\nheader_timout_ms = 1000\n"))).unwrap_err();
    assert!(e.to_string().contains("header_timout_ms"), "{e}");
    let summary = check_config(&s.config(&format!("{CONFIG}\n[http]\nmax_connections = 1000\n"))).unwrap();
    assert!(summary.contains("http.max_connections 1000 "), "{summary}");
}

#[test]
fn every_section_can_be_set() {
    let s = Setup::new();
    let text = r#"
        node = "edge-eu"
        topology = "mesh.toml"
        mesh_listen = "0.0.0.0:4433"
        http_listen = "[::]:8443"
        [tls]
        ca = "ca.pem"
        cert = "origin-eu.pem"
        key = "origin-eu.key"
        [cache]
        max_bytes = 1048576
        [ingest]
        max_body_bytes = 1048576
        stream_keys = { demo = "s3cret" }
        any_stream_key = "master"
        [edge]
        wait_ms = 0
        [probes]
        fast_ms = 20
        slow_ms = 250
    "#;
    let (config, topology) = NodeConfig::load(&s.config(text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.mesh_bind(&topology), Some("0.0.0.0:4433".parse().unwrap()));
    assert_eq!(config.http_bind(&topology), Some("[::]:8443".parse().unwrap()));
    assert_eq!(config.cache.max_bytes, CacheConfig::MIN_MAX_BYTES);
    assert_eq!(config.ingest.any_stream_key.as_deref(), Some("master"));
    assert_eq!(config.edge.wait_ms, 0);
    assert_eq!((config.probes.fast_ms, config.probes.slow_ms), (20, 250));
}

#[test]
fn probe_intervals_are_checked_field_by_field() {
    let s = Setup::new();
    let e = s.errors(&(CONFIG.to_owned() + "[probes]\nfast_ms = 0\nslow_ms = 120000\n"));
    assert_reports(&e, "probes.fast_ms", "busy loop");
    assert_reports(&e, "probes.slow_ms", "too long");
    let e = s.errors(&(CONFIG.to_owned() + "[probes]\nfast_ms = 500\nslow_ms = 100\n"));
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_reports(&e, "probes.slow_ms", "shorter than probes.fast_ms");
    let e = s.errors(&(CONFIG.to_owned() + "[probes]\nfast = 5\n"));
    assert_reports(&e, "probes.fast", "expected one of: fast_ms, slow_ms");
}

#[test]
fn syntax_error_gives_line_and_column() {
    let s = Setup::new();
    let e = s.errors(&broken("[tls]", "[tls"));
    assert_eq!(e.errors.len(), 1, "{e}");
    assert!(e.errors[0].field.starts_with("line 5, column "), "{e}");
}

#[test]
fn every_unknown_key_is_reported() {
    let s = Setup::new();
    let text =
        broken("cert = \"origin-eu.pem\"", "cert = \"origin-eu.pem\"\ncrt = \"x\"") + "[cache]\nmax = 5\n[viewer]\n";
    let e = s.errors(&text.replacen("node = ", "nod = \"x\"\nnode = ", 1));
    assert_reports(&e, "tls.crt", "did you mean `cert`");
    assert_reports(&e, "cache.max", "unknown key");
    assert_reports(&e, "viewer", "unknown key");
    assert_reports(&e, "nod", "did you mean `node`");
}

#[test]
fn missing_node() {
    let s = Setup::new();
    let e = s.errors(&broken("node = \"origin-eu\"", ""));
    assert_reports(&e, "node", "missing");
}

#[test]
fn bad_node_id() {
    let s = Setup::new();
    let e = s.errors(&broken("node = \"origin-eu\"", "node = \"origin.eu\""));
    assert_reports(&e, "node", "origin.eu");
}

#[test]
fn node_not_in_topology() {
    let s = Setup::new();
    let e = s.errors(&broken("node = \"origin-eu\"", "node = \"edge-us\""));
    assert_reports(&e, "node", "node \"edge-us\" is not in topology");
}

#[test]
fn missing_topology_field() {
    let s = Setup::new();
    let e = s.errors(&broken("topology = \"mesh.toml\"", ""));
    assert_reports(&e, "topology", "missing");
}

#[test]
fn missing_tls_file_names_field_and_path() {
    let s = Setup::new();
    let e = s.errors(&broken("cert = \"origin-eu.pem\"", "cert = \"nope.pem\""));
    assert_reports(&e, "tls.cert", &s.path("nope.pem").display().to_string());
    assert_eq!(e.errors.len(), 1, "{e}");
}

#[test]
fn tls_file_that_is_not_pem() {
    let s = Setup::new();
    s.write("origin-eu.key", "not a key");
    let e = s.errors(CONFIG);
    assert_reports(&e, "tls.key", "not PEM");
}

#[test]
fn missing_tls_section_names_each_file() {
    let s = Setup::new();
    let text = CONFIG.replace("[tls]\nca = \"ca.pem\"\ncert = \"origin-eu.pem\"\nkey = \"origin-eu.key\"\n", "");
    let e = s.errors(&text);
    for field in ["tls.ca", "tls.cert", "tls.key"] {
        assert_reports(&e, field, "missing");
    }
}

#[test]
fn tls_that_is_not_a_table() {
    let s = Setup::new();
    let text = CONFIG.replace("[tls]\nca = \"ca.pem\"\ncert = \"origin-eu.pem\"\nkey = \"origin-eu.key\"\n", "");
    let e = s.errors(&text.replacen("topology = ", "tls = \"files\"\ntopology = ", 1));
    assert_reports(&e, "tls", "expected a table");
    assert_eq!(e.errors.len(), 1, "{e}");
}

#[test]
fn empty_stream_key() {
    let s = Setup::new();
    let e = s.errors(&broken("{ demo = \"s3cret\" }", "{ demo = \"\", live = \"k\" }"));
    assert_reports(&e, "ingest.stream_keys.demo", "empty publish key");
    assert_eq!(e.errors.len(), 1, "{e}");
    let e = s.errors(&(CONFIG.to_owned() + "any_stream_key = \" \"\n"));
    assert_reports(&e, "ingest.any_stream_key", "empty publish key");
}

#[test]
fn bad_stream_name_in_keys() {
    let s = Setup::new();
    let e = s.errors(&broken("{ demo = \"s3cret\" }", "{ \"de mo\" = \"s3cret\" }"));
    assert_reports(&e, "ingest.stream_keys.\"de mo\"", "stream name");
}

#[test]
fn max_bytes_too_small() {
    let s = Setup::new();
    let e = s.errors(&(CONFIG.to_owned() + "[cache]\nmax_bytes = 1000\n"));
    assert_reports(&e, "cache.max_bytes", "too small");
    // The default body limit no longer fits the cache either.
    assert_reports(&e, "ingest.max_body_bytes", "larger than cache.max_bytes");
}

#[test]
fn negative_limit_is_a_type_error() {
    let s = Setup::new();
    let e = s.errors(&(CONFIG.to_owned() + "[edge]\nwait_ms = -1\n"));
    assert_reports(&e, "edge.wait_ms", "-1");
}

#[test]
fn insane_limits() {
    let s = Setup::new();
    let e = s.errors(&(CONFIG.to_owned() + "max_body_bytes = 0\n[edge]\nwait_ms = 3600000\n"));
    assert_reports(&e, "ingest.max_body_bytes", "refuse every upload");
    assert_reports(&e, "edge.wait_ms", "too long");
}

#[test]
fn listen_address_needed_when_topology_names_a_host() {
    let s = Setup::new();
    let e = s.errors(&broken("node = \"origin-eu\"", "node = \"edge-eu\""));
    assert_reports(&e, "mesh_listen", "edge-eu.mesh.example.net:4433");
    assert_reports(&e, "http_listen", "nodes[1].http");
}

#[test]
fn listen_address_port_zero() {
    let s = Setup::new();
    let e = s.errors(&broken("topology = \"mesh.toml\"", "topology = \"mesh.toml\"\nmesh_listen = \"0.0.0.0:0\""));
    assert_reports(&e, "mesh_listen", "port 0");
    let e = s.errors(&broken("topology = \"mesh.toml\"", "topology = \"mesh.toml\"\nhttp_listen = \"example.net:80\""));
    assert_reports(&e, "http_listen", "socket address");
}

#[test]
fn topology_errors_are_prefixed_with_its_file() {
    let s = Setup::new();
    s.write("mesh.toml", &TOPOLOGY.replacen("mesh = \"127.0.0.1:7101\"", "mesh = \"127.0.0.1\"", 1));
    let e = s.errors(CONFIG);
    let topo = s.path("mesh.toml").display().to_string();
    assert_reports(&e, &format!("{topo}: nodes[0].mesh"), "no port");
    let line = format!("{}: {topo}: nodes[0].mesh: ", s.path("node.toml").display());
    assert!(e.to_string().lines().any(|l| l.starts_with(&line)), "{e}");
}

#[test]
fn missing_topology_file() {
    let s = Setup::new();
    let e = s.errors(&broken("topology = \"mesh.toml\"", "topology = \"other.toml\""));
    let topo = s.path("other.toml").display().to_string();
    assert_reports(&e, &topo, "cannot read the file");
}

#[test]
fn several_problems_are_reported_at_once() {
    let s = Setup::new();
    s.write("mesh.toml", &TOPOLOGY.replacen("latency_ms = 1.5", "latency_ms = -1.5", 1));
    let text = broken("cert = \"origin-eu.pem\"", "cert = \"nope.pem\"").replacen("s3cret", "", 1).replacen(
        "node = \"origin-eu\"",
        "node = \"origin-eu\"\ncolour = 1",
        1,
    ) + "[cache]\nmax_bytes = 5\n";
    let e = s.errors(&text);
    let topo = s.path("mesh.toml").display().to_string();
    for field in
        ["colour", "tls.cert", "ingest.stream_keys.demo", "cache.max_bytes", &format!("{topo}: links[0].latency_ms")]
    {
        assert!(e.mentions(field), "{field} not reported in:\n{e}");
    }
    assert_eq!(e.to_string().lines().count(), e.errors.len());
}

#[test]
fn missing_config_file() {
    let s = Setup::new();
    let e = NodeConfig::load(&s.path("none.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read the file"), "{e}");
}

#[test]
fn config_for_the_demo_topology() {
    let s = Setup::new();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/demo.toml");
    let text = broken("node = \"origin-eu\"", "node = \"edge-us\"").replacen(
        "topology = \"mesh.toml\"",
        &format!("topology = {:?}", demo.display().to_string()),
        1,
    );
    let (config, topology) = NodeConfig::load(&s.config(&text)).unwrap_or_else(|e| panic!("{e}"));
    s.certificate(&issue(&s.ca, &NodeId::new("edge-us").unwrap(), 30).unwrap());
    assert_eq!(config.topology, demo);
    assert_eq!(config.http_bind(&topology), Some("127.0.0.1:48103".parse().unwrap()));
    assert!(check_config(&s.path("node.toml")).unwrap().starts_with("ok: node edge-us (edge) in "));
}

/// `lightpath check config FILE` as an operator runs it: whether it passed, and what it printed.
fn check_with_the_binary(path: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lightpath")).args(["check", "config"]).arg(path).output();
    let out = out.unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_binary_accepts_a_certificate_that_fits_the_node() {
    let s = Setup::new();
    let (ok, said) = check_with_the_binary(&s.config(CONFIG));
    assert!(ok && said.starts_with("ok: node origin-eu (origin)"), "{said}");
}

#[test]
fn a_certificate_for_another_node_is_refused_naming_the_file() {
    let s = Setup::new();
    s.certificate(&issue(&s.ca, &NodeId::new("edge-eu").unwrap(), 30).unwrap());
    let (ok, said) = check_with_the_binary(&s.config(CONFIG));
    let file = s.path("origin-eu.pem").display().to_string();
    let line = format!("tls.cert: {file} is a certificate for edge-eu, not for this node origin-eu");
    assert!(!ok && said.contains(&line), "{said}");
    assert!(said.contains("lightpath ca issue --node origin-eu"), "{said}");
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let s = Setup::new();
    let other = issue(&s.ca, &NodeId::new("origin-eu").unwrap(), 30).unwrap();
    s.write("origin-eu.key", &other.key_pem);
    let (ok, said) = check_with_the_binary(&s.config(CONFIG));
    let (key, cert) = (s.path("origin-eu.key").display().to_string(), s.path("origin-eu.pem").display().to_string());
    let line = format!("tls.key: {key} is not the private key of the certificate in {cert}");
    assert!(!ok && said.contains(&line), "{said}");
}

#[test]
fn a_certificate_from_another_ca_is_refused_naming_both_files() {
    let s = Setup::new();
    let other_ca = create_ca("another mesh's CA").unwrap();
    s.certificate(&issue(&other_ca, &NodeId::new("origin-eu").unwrap(), 30).unwrap());
    let (ok, said) = check_with_the_binary(&s.config(CONFIG));
    let (cert, ca) = (s.path("origin-eu.pem").display().to_string(), s.path("ca.pem").display().to_string());
    let line = format!("tls.cert: {cert} does not chain to the mesh CA in {ca}: signed by another CA");
    assert!(!ok && said.contains(&line), "{said}");
}

#[test]
fn an_expired_certificate_is_refused_naming_the_file() {
    let s = Setup::new();
    let now = time::OffsetDateTime::now_utc();
    let (from, until) = (now - time::Duration::days(30), now - time::Duration::days(1));
    s.certificate(&issue_between(&s.ca, &NodeId::new("origin-eu").unwrap(), from, until).unwrap());
    let (ok, said) = check_with_the_binary(&s.config(CONFIG));
    let line = format!("tls.cert: {} is expired since ", s.path("origin-eu.pem").display());
    assert!(!ok && said.contains(&line), "{said}");
}

#[test]
fn a_node_with_a_wrong_certificate_does_not_start() {
    let s = Setup::new();
    s.certificate(&issue(&s.ca, &NodeId::new("edge-eu").unwrap(), 30).unwrap());
    // The check runs before anything binds.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lightpath"))
        .args(["node", "--config"])
        .arg(s.config(CONFIG))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("is a certificate for edge-eu, not for this node origin-eu"),
        "{said}"
    );
}
