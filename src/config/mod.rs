//! The configs that `lightpath node --config F` and `lightpath control --config F` read.
//!
//! A node config names the node (its id in the topology), the topology file, where to bind, the node's TLS
//! files and the limits of its cache, ingest and edge; a control replica's ([`ControlConfig`]) only the
//! first four. Each is read once, by serde, through its reader (`read.rs`), which reports every problem in the
//! file at once with the field it is about, like topology files (see `topology`). Then each section checks
//! itself (its `validate`, beside its type in [`sections`]), and the config checks what relates its
//! sections and what the topology must agree with. Paths are relative to the config file's folder and
//! resolved on loading. The node's roles come from the topology, not from here: sections for roles the
//! node does not have are allowed and unused. Loading reads files and checks that they exist; whether the
//! TLS files can carry the node into the mesh (right CA, right name, matching key, in validity) is
//! [`check_certificates`], which `lightpath check config` and the start of a node or replica both run. No
//! sockets are opened here.

pub mod director;
mod read;
pub mod sections;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::topology::{parse_table, Address, CheckError, CheckErrors, Topology};
pub use director::{DirectorConfig, EdgeScheme};
use read::{field_names, Required};
use sections::problem;
pub use sections::{
    AdminConfig, CacheConfig, DashboardConfig, EdgeConfig, HttpConfig, IngestConfig, LinksConfig, ProbesConfig,
    QuicConfig, TlsFiles,
};

/// One node's configuration, with its paths resolved. `node` and `topology` are required; every other field
/// and every section has its default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id in the topology. Required.
    pub node: NodeId,
    /// The topology file. Relative to the config file's folder in the file; after [`NodeConfig::load`],
    /// absolute or relative to the working directory. Required.
    pub topology: PathBuf,
    /// Where to bind the QUIC endpoint, instead of the topology's mesh address (e.g. `0.0.0.0:47101` behind
    /// NAT). Required when the topology gives this node's mesh address as a host name.
    #[serde(default)]
    pub mesh_listen: Option<SocketAddr>,
    /// Where to bind the HTTP server, instead of the topology's HTTP address. Required when the topology
    /// gives this node's HTTP address as a host name.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// The mesh TLS files.
    #[serde(default)]
    pub tls: TlsFiles,
    /// The live-window cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Publishing (used by origins).
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Viewer serving (used by edges).
    #[serde(default)]
    pub edge: EdgeConfig,
    /// WAN emulation on this node's mesh socket.
    #[serde(default)]
    pub links: LinksConfig,
    /// The operator endpoints under `/admin/` on the HTTP address.
    #[serde(default)]
    pub admin: AdminConfig,
    /// How often this node probes its mesh links.
    #[serde(default)]
    pub probes: ProbesConfig,
    /// The HTTP listener's timeouts and connection caps.
    #[serde(default)]
    pub http: HttpConfig,
    /// The QUIC endpoint's address validation and handshake cap.
    #[serde(default)]
    pub quic: QuicConfig,
}

impl NodeConfig {
    /// The fields a node config must set.
    const REQUIRED: [Required; 2] = [
        Required { field: "node", what: "this node's id in the topology", stand_in: "unnamed" },
        Required { field: "topology", what: "path to the topology file, relative to this file", stand_in: "" },
    ];

    /// Reads a config file, resolves its paths relative to the file's folder, loads its topology, and
    /// checks the two together (node exists in topology; TLS files exist and are readable; keys non-empty;
    /// limits sane). Every problem at once.
    pub fn load(path: &Path) -> Result<(NodeConfig, Topology), CheckErrors> {
        let mut errors = CheckErrors::new(path.display().to_string());
        let Some(config) = read_file::<NodeConfig>(path, &Self::REQUIRED, &mut errors) else {
            return Err(errors);
        };
        let config = config.resolve(path);
        let topology = load_topology(&config.topology, &mut errors);
        // Without a node id or a topology the cross-checks cannot run; the rest still can.
        let against = topology.as_ref().filter(|_| !errors.mentions("node"));
        let problems = config.problems(against);
        add_problems(&mut errors, problems);
        finish(errors, config, topology)
    }

    /// Checks a config, however it was built, against its topology: the checks of [`NodeConfig::load`]
    /// after reading. `file` names the config in messages.
    pub fn validate(self, topology: &Topology, file: &str) -> Result<Self, CheckErrors> {
        let mut errors = CheckErrors::new(file);
        errors.errors = self.problems(Some(topology));
        errors.finish(|| self)
    }

    fn resolve(self, file: &Path) -> Self {
        let base = file.parent().unwrap_or(Path::new(""));
        Self {
            topology: resolve(base, self.topology),
            tls: self.tls.resolve(base),
            admin: self.admin.resolve(base),
            edge: EdgeConfig { tls: self.edge.tls.resolve(base), ..self.edge },
            ..self
        }
    }

    /// Each section's own problems, then those between sections, then those with the topology (when given).
    fn problems(&self, topology: Option<&Topology>) -> Vec<CheckError> {
        let mut problems = Vec::new();
        let sections = [
            self.tls.validate(),
            self.cache.validate(),
            self.ingest.validate(),
            self.edge.validate(),
            self.admin.validate(),
            self.probes.validate(),
            self.http.validate(),
            self.quic.validate(),
        ];
        problems.extend(sections.into_iter().filter_map(Result::err).flatten());
        if self.ingest.max_body_bytes > self.cache.max_bytes {
            problems.push(problem(
                "ingest.max_body_bytes",
                format!(
                    "{} is larger than cache.max_bytes ({}); an object that large could never be cached",
                    self.ingest.max_body_bytes, self.cache.max_bytes
                ),
            ));
        }
        let seat = Seat { topology_file: &self.topology, mesh_listen: self.mesh_listen, http_listen: self.http_listen };
        seat.check_listen(&mut problems);
        let Some(topology) = topology else {
            return problems;
        };
        match topology.nodes.iter().enumerate().find(|(_, n)| n.id == self.node) {
            Some((i, n)) => seat.check_entry(&format!("nodes[{i}]"), &n.mesh, &n.http, &mut problems),
            None if topology.control(&self.node).is_some() => problems.push(problem(
                "node",
                format!(
                    "\"{}\" is a [[controls]] entry of the topology, not a node: run it with `lightpath control`",
                    self.node
                ),
            )),
            None => problems.push(seat.not_in_topology(&self.node)),
        }
        problems
    }

    /// The address to bind the QUIC endpoint to: `mesh_listen`, else the topology's literal mesh address.
    pub fn mesh_bind(&self, topology: &Topology) -> Option<SocketAddr> {
        self.mesh_listen.or_else(|| topology.node(&self.node)?.mesh.socket_addr())
    }

    /// The address to bind the HTTP server to: `http_listen`, else the topology's literal HTTP address.
    pub fn http_bind(&self, topology: &Topology) -> Option<SocketAddr> {
        self.http_listen.or_else(|| topology.node(&self.node)?.http.socket_addr())
    }
}

/// One control-plane replica's configuration, with its paths resolved: which `[[controls]]` entry of the
/// topology it is, where it binds, and its TLS files. `node` and `topology` are required.
///
/// A replica's config may be a copy of a node's (as the README has long said to write one): the sections
/// only a node uses (`[ingest]`, `[probes]`, ...) are set aside unread and listed in `ignored`. Any other key
/// is an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// This replica's id: a `[[controls]]` entry of the topology. Required.
    pub node: NodeId,
    /// The topology file. Relative to the config file's folder in the file; after [`ControlConfig::load`],
    /// absolute or relative to the working directory. Required.
    pub topology: PathBuf,
    /// Where to bind the QUIC endpoint nodes report to, instead of the topology's mesh address. Required
    /// when the topology gives this replica's mesh address as a host name.
    #[serde(default)]
    pub mesh_listen: Option<SocketAddr>,
    /// Where to bind the operator API, instead of the topology's HTTP address. Required when the topology
    /// gives this replica's HTTP address as a host name.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// The mesh TLS files.
    #[serde(default)]
    pub tls: TlsFiles,
    /// The operator endpoints (stream takedowns) and where takedowns are kept.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The operator API's timeouts and connection caps (`body_timeout_ms` is unused: the API takes no
    /// uploads).
    #[serde(default)]
    pub http: HttpConfig,
    /// The QUIC endpoint's address validation and handshake cap.
    #[serde(default)]
    pub quic: QuicConfig,
    /// Viewer steering: an HTTP director and a DNS server sending viewers to the best edge (off by default).
    #[serde(default)]
    pub director: DirectorConfig,
    /// The live dashboard's event streams: how many at once, how often they keep alive.
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// The node-config sections the file has, which a replica does not read (for a warning). Not a key of
    /// the file.
    #[serde(skip)]
    pub ignored: Vec<String>,
}

impl ControlConfig {
    /// The fields a replica's config must set.
    const REQUIRED: [Required; 2] = [
        Required { field: "node", what: "this replica's id in the topology's [[controls]]", stand_in: "unnamed" },
        Required { field: "topology", what: "path to the topology file, relative to this file", stand_in: "" },
    ];

    /// Reads a replica's config file, resolves its paths relative to the file's folder, loads its
    /// topology, and checks the two together (the id is a `[[controls]]` entry; TLS files exist and are
    /// readable). Every problem at once.
    pub fn load(path: &Path) -> Result<(ControlConfig, Topology), CheckErrors> {
        let mut errors = CheckErrors::new(path.display().to_string());
        let Some(mut table) = read_table(path, &mut errors) else {
            return Err(errors);
        };
        let own = field_names::<ControlConfig>();
        let ignored: Vec<String> = field_names::<NodeConfig>()
            .iter()
            .filter(|key| !own.contains(key) && table.remove(**key).is_some())
            .map(|key| key.to_string())
            .collect();
        let Some(config) = read::read::<ControlConfig>(table, &Self::REQUIRED, &mut errors) else {
            return Err(errors);
        };
        let config = ControlConfig { ignored, ..config.resolve(path) };
        let topology = load_topology(&config.topology, &mut errors);
        let against = topology.as_ref().filter(|_| !errors.mentions("node"));
        let problems = config.problems(against);
        add_problems(&mut errors, problems);
        finish(errors, config, topology)
    }

    /// Checks a config, however it was built, against its topology: the checks of
    /// [`ControlConfig::load`] after reading. `file` names the config in messages.
    pub fn validate(self, topology: &Topology, file: &str) -> Result<Self, CheckErrors> {
        let mut errors = CheckErrors::new(file);
        errors.errors = self.problems(Some(topology));
        errors.finish(|| self)
    }

    fn resolve(self, file: &Path) -> Self {
        let base = file.parent().unwrap_or(Path::new(""));
        Self {
            topology: resolve(base, self.topology),
            tls: self.tls.resolve(base),
            admin: self.admin.resolve(base),
            director: self.director.resolve(base),
            ..self
        }
    }

    fn problems(&self, topology: Option<&Topology>) -> Vec<CheckError> {
        let mut problems = self.tls.validate().err().unwrap_or_default();
        problems.extend(self.director.problems(topology));
        problems.extend(self.admin.validate().err().unwrap_or_default());
        problems.extend(self.http.validate().err().unwrap_or_default());
        problems.extend(self.quic.validate().err().unwrap_or_default());
        problems.extend(self.dashboard.validate().err().unwrap_or_default());
        if self.dashboard.max_event_streams > self.http.max_connections {
            problems.push(problem(
                "dashboard.max_event_streams",
                format!(
                    "{} event streams cannot fit in http.max_connections = {}",
                    self.dashboard.max_event_streams, self.http.max_connections
                ),
            ));
        }
        let seat = Seat { topology_file: &self.topology, mesh_listen: self.mesh_listen, http_listen: self.http_listen };
        seat.check_listen(&mut problems);
        let Some(topology) = topology else {
            return problems;
        };
        match topology.controls.iter().enumerate().find(|(_, c)| c.id == self.node) {
            Some((i, c)) => seat.check_entry(&format!("controls[{i}]"), &c.mesh, &c.http, &mut problems),
            None if topology.node(&self.node).is_some() => problems.push(problem(
                "node",
                format!("\"{}\" is a node, not a [[controls]] entry of the topology", self.node),
            )),
            None => problems.push(seat.not_in_topology(&self.node)),
        }
        problems
    }

    /// The address to bind the QUIC endpoint to: `mesh_listen`, else the topology's literal mesh address.
    pub fn mesh_bind(&self, topology: &Topology) -> Option<SocketAddr> {
        self.mesh_listen.or_else(|| topology.control(&self.node)?.mesh.socket_addr())
    }

    /// The address to bind the HTTP API to: `http_listen`, else the topology's literal HTTP address.
    pub fn http_bind(&self, topology: &Topology) -> Option<SocketAddr> {
        self.http_listen.or_else(|| topology.control(&self.node)?.http.socket_addr())
    }
}

/// Where a node or a replica binds, as its config says: what both kinds check the same way.
struct Seat<'a> {
    topology_file: &'a Path,
    mesh_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
}

impl Seat<'_> {
    /// A local address never binds port 0.
    fn check_listen(&self, problems: &mut Vec<CheckError>) {
        for (field, addr) in [("mesh_listen", self.mesh_listen), ("http_listen", self.http_listen)] {
            if addr.is_some_and(|a| a.port() == 0) {
                problems.push(problem(field, "port 0 would bind a random port that peers and viewers cannot know"));
            }
        }
    }

    /// A topology `entry` (`nodes[1]`, `controls[0]`) that names a host needs a local address to bind.
    fn check_entry(&self, entry: &str, mesh: &Address, http: &Address, problems: &mut Vec<CheckError>) {
        for (field, listen, addr) in [("mesh", self.mesh_listen, mesh), ("http", self.http_listen, http)] {
            if listen.is_none() && addr.socket_addr().is_none() {
                problems.push(problem(
                    format!("{field}_listen"),
                    format!(
                        "missing: the topology gives this node's {field} address as a host name ({addr}, \
                         {entry}.{field}), so set the local address to bind, e.g. \"0.0.0.0:{}\"",
                        addr.port
                    ),
                ));
            }
        }
    }

    fn not_in_topology(&self, id: &NodeId) -> CheckError {
        problem("node", format!("node \"{id}\" is not in topology {}", self.topology_file.display()))
    }
}

/// A path from a config file, relative to `base` (the file's folder) unless absolute. An empty path stays
/// empty, for the checks to report.
fn resolve(base: &Path, path: PathBuf) -> PathBuf {
    if path.as_os_str().is_empty() {
        path
    } else {
        base.join(path)
    }
}

/// A config file's TOML, or `None` with the reason in `errors`.
fn read_table(path: &Path, errors: &mut CheckErrors) -> Option<toml::Table> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_table(&text, errors),
        Err(e) => {
            errors.push("", format!("cannot read the file: {e}"));
            None
        }
    }
}

/// A config file read as a `C`, or `None` with the reasons in `errors`.
fn read_file<C: DeserializeOwned>(path: &Path, required: &[Required], errors: &mut CheckErrors) -> Option<C> {
    read::read(read_table(path, errors)?, required, errors)
}

/// The topology a config names, its problems reported under its own file name; `None` when the config's
/// `topology` did not read.
fn load_topology(file: &Path, errors: &mut CheckErrors) -> Option<Topology> {
    if errors.mentions("topology") {
        return None;
    }
    if file.as_os_str().is_empty() {
        errors.push("topology", "empty path");
        return None;
    }
    match Topology::load(file) {
        Ok(t) => Some(t),
        Err(te) => {
            for e in te.errors {
                let field = if e.field.is_empty() { te.file.clone() } else { format!("{}: {}", te.file, e.field) };
                errors.push(field, e.message);
            }
            None
        }
    }
}

/// Adds the checks' problems to the reading's, leaving out those about a field that did not read: a
/// default stands in there, and its problem would only repeat the first (a `tls` that is not a table is
/// one problem, not one per missing file).
fn add_problems(errors: &mut CheckErrors, problems: Vec<CheckError>) {
    let unread: Vec<String> = errors.errors.iter().map(|e| e.field.clone()).collect();
    let repeats = |field: &str| {
        unread.iter().any(|u| field == u || field.strip_prefix(u.as_str()).is_some_and(|r| r.starts_with('.')))
    };
    errors.errors.extend(problems.into_iter().filter(|p| !repeats(&p.field)));
}

fn finish<C>(errors: CheckErrors, config: C, topology: Option<Topology>) -> Result<(C, Topology), CheckErrors> {
    match topology {
        Some(topology) if errors.is_empty() => Ok((config, topology)),
        _ => Err(errors),
    }
}

/// Whether a config file is a control replica's: its `node` is a `[[controls]]` entry of its topology. A
/// file that does not say (unreadable, no node or topology) is taken for a node's, whose checks tell why.
fn names_a_control(path: &Path) -> bool {
    let Some(table) = std::fs::read_to_string(path).ok().and_then(|text| text.parse::<toml::Table>().ok()) else {
        return false;
    };
    let (Some(node), Some(topology)) =
        (table.get("node").and_then(toml::Value::as_str), table.get("topology").and_then(toml::Value::as_str))
    else {
        return false;
    };
    let file = path.parent().unwrap_or(Path::new("")).join(topology);
    match (NodeId::new(node), Topology::load(&file)) {
        (Ok(id), Ok(topology)) => topology.control(&id).is_some(),
        _ => false,
    }
}

/// Whether the TLS files of the node or replica `node`, configured in `file`, can carry it into the mesh
/// now ([`crate::ca::check_files`]): every problem, each under the field of the file to fix.
pub fn check_certificates(file: &Path, tls: &TlsFiles, node: &NodeId) -> Result<(), CheckErrors> {
    let mut errors = CheckErrors::new(file.display().to_string());
    for problem in crate::ca::check_files(tls, node, rustls::pki_types::UnixTime::now()) {
        errors.push(problem.field(), problem.to_string());
    }
    errors.finish(|| ())
}

/// Checks a node's or a control replica's config, its topology and its certificates for `lightpath check
/// config FILE`: a one-line summary when all are good, else every problem.
pub fn check_config(path: &Path) -> Result<String, CheckErrors> {
    if names_a_control(path) {
        let (config, topology) = ControlConfig::load(path)?;
        check_certificates(path, &config.tls, &config.node)?;
        let mut summary =
            format!("ok: control replica {} in {}: {}", config.node, config.topology.display(), topology.summary());
        if !config.ignored.is_empty() {
            summary += &format!(" (node sections, ignored by a replica: {})", config.ignored.join(", "));
        }
        summary += &limits_summary(&config.http, &config.quic);
        return Ok(summary);
    }
    let (config, topology) = NodeConfig::load(path)?;
    check_certificates(path, &config.tls, &config.node)?;
    let roles = topology
        .node(&config.node)
        .map(|n| n.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let limits = limits_summary(&config.http, &config.quic);
    Ok(format!("ok: node {} ({roles}) in {}: {}{limits}", config.node, config.topology.display(), topology.summary()))
}

/// The limits a node or replica runs with, as `check config` shows them: the figures an operator tunes
/// under hostile traffic, each with its field.
fn limits_summary(http: &HttpConfig, quic: &QuicConfig) -> String {
    format!(
        "\nlimits: http.header_timeout_ms {}, http.idle_timeout_ms {}, http.body_timeout_ms {}, \
         http.max_connections {} (http.max_connections_per_address {}, http.reserved_fds {}), \
         quic.validate_addresses {}, quic.max_handshakes {}, quic.peer_queue_bytes {}, quic.max_object_streams {}",
        http.header_timeout_ms,
        http.idle_timeout_ms,
        http.body_timeout_ms,
        http.max_connections,
        http.max_connections_per_address,
        http.reserved_fds,
        quic.validate_addresses,
        quic.max_handshakes,
        quic.peer_queue_bytes,
        quic.max_object_streams
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = "[[regions]]\nname = \"eu\"\nlat = 0.0\nlon = 0.0\n\n\
        [[nodes]]\nid = \"edge-eu\"\nregion = \"eu\"\nroles = [\"origin\", \"edge\"]\nmesh = \"127.0.0.1:7101\"\nhttp = \"127.0.0.1:8101\"\n\n\
        [[controls]]\nid = \"control-1\"\nmesh = \"127.0.0.1:7201\"\nhttp = \"ctl.example.net:443\"\n";
    const TLS: &str = "[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n";

    /// A folder with the topology and TLS files; returns the path of `config` written beside them.
    fn folder(config: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.toml"), TOPOLOGY).unwrap();
        for pem in ["ca.pem", "c.pem", "k.pem"] {
            std::fs::write(dir.path().join(pem), "-----BEGIN X-----\n").unwrap();
        }
        let path = dir.path().join("cfg.toml");
        std::fs::write(&path, config).unwrap();
        (dir, path)
    }

    fn fields(e: &CheckErrors) -> Vec<&str> {
        e.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_node_config_reads_as_plain_serde_does_with_paths_resolved() {
        let text = format!(
            "node = \"edge-eu\"\ntopology = \"mesh.toml\"\nmesh_listen = \"0.0.0.0:1\"\n{TLS}\
             [cache]\nmax_bytes = 2000000\n[ingest]\nmax_body_bytes = 1000\nstream_keys = {{ demo = \"x\" }}\n\
             any_stream_key = \"y\"\n[edge]\nwait_ms = 10\n[links]\nemulate = true\n\
             [admin]\ntoken = \"long-enough-token\"\n[probes]\nfast_ms = 50\nslow_ms = 2000\n"
        );
        let (dir, path) = folder(&text);
        let (config, topology) = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let plain: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(config, plain.resolve(&path));
        assert_eq!(config.topology, dir.path().join("mesh.toml"));
        assert_eq!(config.tls.key, dir.path().join("k.pem"));
        assert_eq!(config.http_bind(&topology), Some("127.0.0.1:8101".parse().unwrap()));
        assert_eq!(config.clone().validate(&topology, "cfg.toml"), Ok(config));
    }

    #[test]
    fn without_a_node_id_the_sections_are_still_checked() {
        let (_dir, path) = folder(&format!("topology = \"mesh.toml\"\n{TLS}[cache]\nmax_bytes = 5\n"));
        let e = NodeConfig::load(&path).unwrap_err();
        assert_eq!(fields(&e), ["node", "cache.max_bytes", "ingest.max_body_bytes"], "{e}");
        assert!(e.errors[0].message.starts_with("missing (this node's id"), "{e}");
    }

    #[test]
    fn a_section_that_did_not_read_is_not_checked_again() {
        let (_dir, path) = folder("node = \"edge-eu\"\ntopology = \"mesh.toml\"\ntls = 5\n[admin]\ntoken = 8\n");
        let e = NodeConfig::load(&path).unwrap_err();
        assert_eq!(fields(&e), ["tls", "admin.token"], "{e}");
    }

    #[test]
    fn a_control_replica_reads_its_own_fields_and_sets_node_sections_aside() {
        let text = format!(
            "node = \"control-1\"\ntopology = \"mesh.toml\"\nhttp_listen = \"0.0.0.0:8443\"\n{TLS}\
             [ingest]\nmax_body_bytes = 0\n[links]\nemulate = true\n"
        );
        let (dir, path) = folder(&text);
        let (config, topology) = ControlConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.node.as_str(), "control-1");
        assert_eq!(config.tls.ca, dir.path().join("ca.pem"));
        assert_eq!(config.ignored, ["ingest", "links"]);
        assert_eq!(config.mesh_bind(&topology), Some("127.0.0.1:7201".parse().unwrap()));
        assert_eq!(config.http_bind(&topology), Some("0.0.0.0:8443".parse().unwrap()));
        // check config also reads the certificate, which must be control-1's.
        let ca = crate::ca::create_ca("test CA").unwrap();
        let files = crate::ca::issue(&ca, &config.node, 30).unwrap();
        for (name, pem) in [("ca.pem", &ca.cert_pem), ("c.pem", &files.chain_pem), ("k.pem", &files.key_pem)] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let summary = check_config(&path).unwrap();
        assert!(summary.starts_with("ok: control replica control-1 in "), "{summary}");
        assert!(summary.contains("(node sections, ignored by a replica: ingest, links)\n"), "{summary}");
        assert!(
            summary.contains("http.header_timeout_ms 10000") && summary.contains("quic.max_handshakes 64"),
            "{summary}"
        );
    }

    #[test]
    fn a_control_replica_config_is_checked_as_strictly_as_a_node_config() {
        let (_dir, path) = folder("node = \"control-1\"\ntopology = \"mesh.toml\"\nmesh_lisen = 1\n");
        let e = check_config(&path).unwrap_err();
        assert_eq!(fields(&e), ["mesh_lisen", "tls.ca", "tls.cert", "tls.key", "http_listen"], "{e}");
        assert!(e.errors[0].message.contains("did you mean `mesh_listen`"), "{e}");
        assert!(e.errors[4].message.contains("controls[0].http"), "{e}");
    }

    #[test]
    fn the_dashboards_bounds_are_checked_naming_their_fields() {
        let config = |section: &str| {
            format!(
                "node = \"control-1\"\ntopology = \"mesh.toml\"\nhttp_listen = \"127.0.0.1:8443\"\n{TLS}\n{section}"
            )
        };
        let (_dir, path) = folder(&config("[dashboard]\nmax_event_streams = 0\nkeepalive_ms = 10\n"));
        let e = ControlConfig::load(&path).unwrap_err();
        assert_eq!(fields(&e), ["dashboard.max_event_streams", "dashboard.keepalive_ms"], "{e}");
        let (_dir, path) = folder(&config(
            "[http]\nmax_connections = 16\nmax_connections_per_address = 4\n[dashboard]\nmax_event_streams = 32\n",
        ));
        let e = ControlConfig::load(&path).unwrap_err();
        assert_eq!(fields(&e), ["dashboard.max_event_streams"], "{e}");
        assert!(e.errors[0].message.contains("http.max_connections = 16"), "{e}");
        let (_dir, path) = folder(&config("[dashboard]\nmax_event_streams = 8\n"));
        let (loaded, _) = ControlConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.dashboard, DashboardConfig { max_event_streams: 8, keepalive_ms: 15_000 });
    }

    #[test]
    fn nodes_and_replicas_are_not_mistaken_for_each_other() {
        let (_dir, path) = folder(&format!("node = \"control-1\"\ntopology = \"mesh.toml\"\n{TLS}"));
        let e = NodeConfig::load(&path).unwrap_err();
        assert_eq!(fields(&e), ["node"], "{e}");
        assert!(e.errors[0].message.contains("is a [[controls]] entry of the topology, not a node"), "{e}");
        let (_dir, path) = folder(&format!("node = \"edge-eu\"\ntopology = \"mesh.toml\"\n{TLS}"));
        let e = ControlConfig::load(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: node: \"edge-eu\" is a node, not a [[controls]] entry of the topology", path.display())
        );
    }
}
