//! The node config: what `lightpath node --config F` reads.
//!
//! A node config names the node (its id in the topology), the topology file, where to bind, the node's TLS
//! files and the limits of its cache, ingest and edge. [`NodeConfig::load`] reads it, resolves its paths
//! relative to the config file's folder, loads the topology and checks the two together, reporting every
//! problem at once with the field it is about, like topology files (see `topology`). The node's roles come
//! from the topology, not from here: sections for roles the node does not have are allowed and unused.
//! This module reads files and checks that they exist; it does not parse certificates or open sockets.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{NodeId, StreamName};
use crate::routing::ProbeConfig;
use crate::topology::{join_path, parse_table, CheckErrors, TableReader, Topology};

/// One node's configuration, with its paths resolved.
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
}

/// Probe intervals of a node's links (the same section as a simulator scenario's `[probes]`). Shorter
/// intervals measure faster and find a dead link sooner, at the cost of more datagrams; a link is declared
/// down once its last three probes are overdue and the first of them at least 300 ms ago.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbesConfig {
    /// Interval on links that carry a stream, in ms (default 100).
    pub fast_ms: u64,
    /// Interval on idle links, in ms (default 1000; at least `fast_ms`).
    pub slow_ms: u64,
}

impl ProbesConfig {
    /// The longest interval accepted: a minute. Less often would leave the routes working from
    /// measurements minutes old.
    pub const MAX_MS: u64 = 60_000;

    /// The estimators' configuration: the default one with these intervals.
    pub fn config(&self) -> ProbeConfig {
        ProbeConfig {
            fast_interval: Duration::from_millis(self.fast_ms),
            slow_interval: Duration::from_millis(self.slow_ms),
            ..ProbeConfig::default()
        }
    }

    fn check(&self, errors: &mut CheckErrors) {
        for (field, ms) in [("probes.fast_ms", self.fast_ms), ("probes.slow_ms", self.slow_ms)] {
            if ms == 0 {
                errors.push(field, "0 would probe in a busy loop (expected milliseconds above 0)");
            } else if ms > Self::MAX_MS {
                errors.push(field, format!("{ms} ms is too long (at most {} ms)", Self::MAX_MS));
            }
        }
        if self.fast_ms > 0 && self.slow_ms > 0 && self.slow_ms < self.fast_ms {
            errors.push(
                "probes.slow_ms",
                format!(
                    "{} ms is shorter than probes.fast_ms ({} ms): idle links would be probed more often than busy ones",
                    self.slow_ms, self.fast_ms
                ),
            );
        }
    }
}

impl Default for ProbesConfig {
    fn default() -> Self {
        let live = ProbeConfig::default();
        Self { fast_ms: live.fast_interval.as_millis() as u64, slow_ms: live.slow_interval.as_millis() as u64 }
    }
}

/// WAN emulation: the kernel's netem stand-in, in user space on the node's UDP socket. Off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinksConfig {
    /// Delay every packet to a neighbour by the topology's configured one-way latency of the link.
    pub emulate: bool,
}

/// The operator endpoints (`PUT /admin/links/{peer}` changes a link's emulated impairment at runtime).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token the endpoints require; without one they are off.
    pub token: Option<String>,
}

/// The mesh TLS files, all PEM. Paths are relative to the config file's folder in the file, resolved after
/// loading. All three are required; the defaults are empty paths, which fail the check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// The mesh CA certificate, which every peer's certificate must chain to.
    pub ca: PathBuf,
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// The live-window cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bound on the bytes of cached objects (default 256 MiB, at least 1 MiB). The newest object of each
    /// stream is kept even beyond it.
    pub max_bytes: u64,
}

/// Publishing into an origin.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The largest PUT body accepted, in bytes (default 32 MiB; at most `cache.max_bytes`).
    pub max_body_bytes: u64,
    /// Per-stream publish keys: a publisher of stream `s` must present `stream_keys[s]`. Keys are non-empty.
    pub stream_keys: BTreeMap<StreamName, String>,
    /// A key that may publish any stream name, if set (non-empty).
    pub any_stream_key: Option<String>,
}

/// Serving viewers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// How long a viewer request for a named-but-missing object waits for it to arrive, in ms (default
    /// 6000, at most 60000).
    pub wait_ms: u64,
}

impl CacheConfig {
    /// The default bound: 256 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
    /// The smallest bound accepted: 1 MiB. Less would not hold one segment of each of a few streams.
    pub const MIN_MAX_BYTES: u64 = 1 << 20;

    fn check(&self, errors: &mut CheckErrors) {
        if self.max_bytes < Self::MIN_MAX_BYTES {
            errors.push(
                "cache.max_bytes",
                format!("{} is too small (at least {} bytes, 1 MiB)", self.max_bytes, Self::MIN_MAX_BYTES),
            );
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

impl IngestConfig {
    /// The default largest PUT body: 32 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 << 20;

    fn check(&self, cache: &CacheConfig, errors: &mut CheckErrors) {
        if self.max_body_bytes == 0 {
            errors.push("ingest.max_body_bytes", "0 would refuse every upload (expected a byte count above 0)");
        } else if self.max_body_bytes > cache.max_bytes {
            errors.push(
                "ingest.max_body_bytes",
                format!(
                    "{} is larger than cache.max_bytes ({}); an object that large could never be cached",
                    self.max_body_bytes, cache.max_bytes
                ),
            );
        }
        for (stream, key) in &self.stream_keys {
            if key.trim().is_empty() {
                errors.push(
                    join_path("ingest.stream_keys", stream.as_str()),
                    "empty publish key (anyone could publish this stream)",
                );
            }
        }
        if self.any_stream_key.as_ref().is_some_and(|k| k.trim().is_empty()) {
            errors.push("ingest.any_stream_key", "empty publish key (anyone could publish any stream)");
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES, stream_keys: BTreeMap::new(), any_stream_key: None }
    }
}

/// Keys are secrets: they are counted, not shown, so that configs can be logged.
impl fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let streams: Vec<&str> = self.stream_keys.keys().map(StreamName::as_str).collect();
        f.debug_struct("IngestConfig")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("stream_keys", &format_args!("{streams:?} (keys hidden)"))
            .field("any_stream_key", &self.any_stream_key.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

impl EdgeConfig {
    /// The default wait: 6 s, about one segment duration.
    pub const DEFAULT_WAIT_MS: u64 = 6000;
    /// The longest wait accepted: players give up well before a minute.
    pub const MAX_WAIT_MS: u64 = 60_000;

    fn check(&self, errors: &mut CheckErrors) {
        if self.wait_ms > Self::MAX_WAIT_MS {
            errors.push(
                "edge.wait_ms",
                format!("{} ms is too long (at most {} ms; players give up sooner)", self.wait_ms, Self::MAX_WAIT_MS),
            );
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self { wait_ms: Self::DEFAULT_WAIT_MS }
    }
}

impl TlsFiles {
    /// Each file is set, readable and PEM.
    fn check(&self, errors: &mut CheckErrors) {
        if errors.mentions("tls") {
            // The section itself is malformed and reported; its files would only repeat that.
            return;
        }
        for (field, path, what) in [
            ("tls.ca", &self.ca, "the mesh CA certificate"),
            ("tls.cert", &self.cert, "this node's certificate chain"),
            ("tls.key", &self.key, "this node's private key"),
        ] {
            if path.as_os_str().is_empty() {
                errors.push(field, format!("missing (path to {what}, PEM)"));
                continue;
            }
            match std::fs::read(path) {
                Err(e) => errors.push(field, format!("cannot read {}: {e}", path.display())),
                Ok(bytes) if !bytes.windows(11).any(|w| w == b"-----BEGIN ") => {
                    errors.push(field, format!("{} is not PEM (no -----BEGIN line)", path.display()))
                }
                Ok(_) => {}
            }
        }
    }
}

impl NodeConfig {
    /// Parses a config file, resolves its paths relative to the file's folder, loads its topology, and
    /// checks the two together (node exists in topology; TLS files exist and are readable; keys non-empty;
    /// limits sane). Every problem at once.
    pub fn load(path: &Path) -> Result<(NodeConfig, Topology), CheckErrors> {
        let mut errors = CheckErrors::new(path.display().to_string());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                errors.push("", format!("cannot read the file: {e}"));
                return Err(errors);
            }
        };
        let Some(table) = parse_table(&text, &mut errors) else {
            return Err(errors);
        };
        let base = path.parent().unwrap_or(Path::new(""));
        let parts = read(&table, base, &mut errors);

        let topology = parts.topology.as_ref().and_then(|file| match Topology::load(file) {
            Ok(t) => Some(t),
            Err(te) => {
                for e in te.errors {
                    let field = if e.field.is_empty() { te.file.clone() } else { format!("{}: {}", te.file, e.field) };
                    errors.push(field, e.message);
                }
                None
            }
        });

        match (parts.node, parts.topology, topology) {
            (Some(node), Some(file), Some(topology)) => {
                let config = NodeConfig {
                    node,
                    topology: file,
                    mesh_listen: parts.mesh_listen,
                    http_listen: parts.http_listen,
                    tls: parts.tls,
                    cache: parts.cache,
                    ingest: parts.ingest,
                    edge: parts.edge,
                    links: parts.links,
                    admin: parts.admin,
                    probes: parts.probes,
                };
                config.check_against(&topology, &mut errors);
                errors.finish(|| (config, topology))
            }
            _ => {
                // Without a node id or a topology the cross-checks cannot run; the rest still can.
                check_local(
                    &parts.tls,
                    &parts.cache,
                    &parts.ingest,
                    &parts.edge,
                    &parts.probes,
                    [parts.mesh_listen, parts.http_listen],
                    &mut errors,
                );
                Err(errors)
            }
        }
    }

    /// Checks a config, however it was built, against its topology: the checks of [`NodeConfig::load`]
    /// after reading. `file` names the config in messages.
    pub fn validate(&self, topology: &Topology, file: &str) -> Result<(), CheckErrors> {
        let mut errors = CheckErrors::new(file);
        self.check_against(topology, &mut errors);
        errors.finish(|| ())
    }

    fn check_against(&self, topology: &Topology, errors: &mut CheckErrors) {
        check_local(
            &self.tls,
            &self.cache,
            &self.ingest,
            &self.edge,
            &self.probes,
            [self.mesh_listen, self.http_listen],
            errors,
        );
        // A control-plane replica's config names a [[controls]] entry instead of a node.
        let found = topology
            .nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.id == self.node)
            .map(|(i, n)| (format!("nodes[{i}]"), &n.mesh, &n.http))
            .or_else(|| {
                let (i, c) = topology.controls.iter().enumerate().find(|(_, c)| c.id == self.node)?;
                Some((format!("controls[{i}]"), &c.mesh, &c.http))
            });
        let Some((entry, mesh, http)) = found else {
            errors.push("node", format!("node \"{}\" is not in topology {}", self.node, self.topology.display()));
            return;
        };
        for (field, listen, addr) in [("mesh", self.mesh_listen, mesh), ("http", self.http_listen, http)] {
            if listen.is_none() && addr.socket_addr().is_none() {
                errors.push(
                    format!("{field}_listen"),
                    format!(
                        "missing: the topology gives this node's {field} address as a host name ({addr}, \
                         {entry}.{field}), so set the local address to bind, e.g. \"0.0.0.0:{}\"",
                        addr.port
                    ),
                );
            }
        }
    }

    /// The address to bind the QUIC endpoint to: `mesh_listen`, else the topology's literal mesh address.
    pub fn mesh_bind(&self, topology: &Topology) -> Option<SocketAddr> {
        self.mesh_listen.or_else(|| match topology.node(&self.node) {
            Some(n) => n.mesh.socket_addr(),
            None => topology.control(&self.node)?.mesh.socket_addr(),
        })
    }

    /// The address to bind the HTTP server to: `http_listen`, else the topology's literal HTTP address.
    pub fn http_bind(&self, topology: &Topology) -> Option<SocketAddr> {
        self.http_listen.or_else(|| match topology.node(&self.node) {
            Some(n) => n.http.socket_addr(),
            None => topology.control(&self.node)?.http.socket_addr(),
        })
    }
}

/// The checks that need no topology: files, limits, keys and listen ports.
fn check_local(
    tls: &TlsFiles,
    cache: &CacheConfig,
    ingest: &IngestConfig,
    edge: &EdgeConfig,
    probes: &ProbesConfig,
    [mesh_listen, http_listen]: [Option<SocketAddr>; 2],
    errors: &mut CheckErrors,
) {
    tls.check(errors);
    cache.check(errors);
    ingest.check(cache, errors);
    edge.check(errors);
    probes.check(errors);
    for (field, addr) in [("mesh_listen", mesh_listen), ("http_listen", http_listen)] {
        if addr.is_some_and(|a| a.port() == 0) {
            errors.push(field, "port 0 would bind a random port that peers and viewers cannot know");
        }
    }
}

/// A config's fields as read, before the topology is known.
struct Parts {
    node: Option<NodeId>,
    topology: Option<PathBuf>,
    mesh_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    tls: TlsFiles,
    cache: CacheConfig,
    ingest: IngestConfig,
    edge: EdgeConfig,
    links: LinksConfig,
    admin: AdminConfig,
    probes: ProbesConfig,
}

/// Reads every field, recording each problem; what cannot be read takes its default.
fn read(table: &toml::Table, base: &Path, errors: &mut CheckErrors) -> Parts {
    let empty = toml::Table::new();
    let mut root = TableReader::new(table, "");
    let node = root.required("node", "this node's id in the topology", errors);
    let topology = read_path(&mut root, "topology", base, errors);
    if topology.is_none() && !errors.mentions("topology") {
        errors.push("topology", "missing (path to the topology file, relative to this file)");
    }
    let mesh_listen = root.optional("mesh_listen", errors);
    let http_listen = root.optional("http_listen", errors);

    let mut tls = TlsFiles::default();
    if let Some(mut r) = section(&mut root, "tls", &empty, errors) {
        tls.ca = read_path(&mut r, "ca", base, errors).unwrap_or_default();
        tls.cert = read_path(&mut r, "cert", base, errors).unwrap_or_default();
        tls.key = read_path(&mut r, "key", base, errors).unwrap_or_default();
        r.finish(errors);
    }

    let mut cache = CacheConfig::default();
    if let Some(mut r) = section(&mut root, "cache", &empty, errors) {
        cache.max_bytes = r.optional("max_bytes", errors).unwrap_or(cache.max_bytes);
        r.finish(errors);
    }

    let mut ingest = IngestConfig::default();
    if let Some(mut r) = section(&mut root, "ingest", &empty, errors) {
        ingest.max_body_bytes = r.optional("max_body_bytes", errors).unwrap_or(ingest.max_body_bytes);
        ingest.stream_keys = read_stream_keys(&mut r, errors);
        ingest.any_stream_key = r.optional("any_stream_key", errors);
        r.finish(errors);
    }

    let mut edge = EdgeConfig::default();
    if let Some(mut r) = section(&mut root, "edge", &empty, errors) {
        edge.wait_ms = r.optional("wait_ms", errors).unwrap_or(edge.wait_ms);
        r.finish(errors);
    }
    let mut links = LinksConfig::default();
    if let Some(mut r) = section(&mut root, "links", &empty, errors) {
        links.emulate = r.optional("emulate", errors).unwrap_or(false);
        r.finish(errors);
    }

    let mut admin = AdminConfig::default();
    if let Some(mut r) = section(&mut root, "admin", &empty, errors) {
        admin.token = r.optional::<String>("token", errors);
        if admin.token.as_deref().is_some_and(|t| t.trim().len() < 8) {
            errors.push("admin.token", "too short: use at least 8 characters");
        }
        r.finish(errors);
    }

    let mut probes = ProbesConfig::default();
    if let Some(mut r) = section(&mut root, "probes", &empty, errors) {
        probes.fast_ms = r.optional("fast_ms", errors).unwrap_or(probes.fast_ms);
        probes.slow_ms = r.optional("slow_ms", errors).unwrap_or(probes.slow_ms);
        r.finish(errors);
    }
    root.finish(errors);

    Parts { node, topology, mesh_listen, http_listen, tls, cache, ingest, edge, links, admin, probes }
}

/// A section such as `[tls]`; an absent section reads as empty, a section that is not a table (reported)
/// as `None`.
fn section<'t>(
    root: &mut TableReader<'t>,
    key: &'static str,
    empty: &'t toml::Table,
    errors: &mut CheckErrors,
) -> Option<TableReader<'t>> {
    if root.raw(key).is_none() {
        return Some(TableReader::new(empty, key));
    }
    root.table(key, errors)
}

/// A path field resolved against `base`; `None` when absent, empty or not a string (the last two reported).
fn read_path(r: &mut TableReader<'_>, key: &'static str, base: &Path, errors: &mut CheckErrors) -> Option<PathBuf> {
    let text: String = r.optional(key, errors)?;
    if text.is_empty() {
        errors.push(r.path_of(key), "empty path");
        return None;
    }
    Some(base.join(text))
}

/// `stream_keys` entry by entry, so that each bad stream name or key is named.
fn read_stream_keys(r: &mut TableReader<'_>, errors: &mut CheckErrors) -> BTreeMap<StreamName, String> {
    let mut keys = BTreeMap::new();
    let field = r.path_of("stream_keys");
    let Some(value) = r.raw("stream_keys") else {
        return keys;
    };
    let Some(table) = value.as_table() else {
        errors.push(field, format!("expected a table of stream = \"key\", found {}", value.type_str()));
        return keys;
    };
    for (name, key) in table {
        let path = join_path(&field, name);
        let stream = match StreamName::new(name.as_str()) {
            Ok(s) => s,
            Err(e) => {
                errors.push(path, e.to_string());
                continue;
            }
        };
        match key.as_str() {
            Some(k) => {
                keys.insert(stream, k.to_owned());
            }
            None => errors.push(path, format!("expected the publish key as a string, found {}", key.type_str())),
        }
    }
    keys
}

/// Checks a node config and its topology for `lightpath check config FILE`: a one-line summary when both
/// are good, else every problem.
pub fn check_config(path: &Path) -> Result<String, CheckErrors> {
    let (config, topology) = NodeConfig::load(path)?;
    let roles = topology
        .node(&config.node)
        .map(|n| n.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    Ok(format!("ok: node {} ({roles}) in {}: {}", config.node, config.topology.display(), topology.summary()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_values() {
        assert_eq!(CacheConfig::default().max_bytes, 268_435_456);
        assert_eq!(IngestConfig::default().max_body_bytes, 33_554_432);
        assert_eq!(EdgeConfig::default().wait_ms, 6000);
    }

    #[test]
    fn debug_hides_publish_keys() {
        let mut ingest = IngestConfig::default();
        ingest.stream_keys.insert(StreamName::new("demo").unwrap(), "s3cret".into());
        ingest.any_stream_key = Some("master".into());
        let shown = format!("{ingest:?}");
        assert!(shown.contains("demo") && !shown.contains("s3cret") && !shown.contains("master"), "{shown}");
    }

    #[test]
    fn reading_matches_plain_serde() {
        let text = r#"
            node = "edge-us"
            topology = "t.toml"
            mesh_listen = "0.0.0.0:1"
            [tls]
            ca = "ca.pem"
            cert = "c.pem"
            key = "k.pem"
            [cache]
            max_bytes = 2000000
            [ingest]
            max_body_bytes = 1000
            stream_keys = { demo = "x" }
            any_stream_key = "y"
            [edge]
            wait_ms = 10
            [links]
            emulate = true
            [admin]
            token = "long-enough-token"
            [probes]
            fast_ms = 50
            slow_ms = 2000
        "#;
        let table: toml::Table = text.parse().unwrap();
        let mut errors = CheckErrors::new("t");
        let parts = read(&table, Path::new(""), &mut errors);
        assert!(errors.is_empty(), "{errors}");
        let plain: NodeConfig = toml::from_str(text).unwrap();
        let read = NodeConfig {
            node: parts.node.unwrap(),
            topology: parts.topology.unwrap(),
            mesh_listen: parts.mesh_listen,
            http_listen: parts.http_listen,
            tls: parts.tls,
            cache: parts.cache,
            ingest: parts.ingest,
            edge: parts.edge,
            links: parts.links,
            admin: parts.admin,
            probes: parts.probes,
        };
        assert_eq!(read, plain);
        assert_eq!(read.probes.config().fast_interval, Duration::from_millis(50));
    }

    #[test]
    fn paths_resolve_against_the_config_folder() {
        let table: toml::Table = "topology = 'demo.toml'\n[tls]\nca = '/abs/ca.pem'\n".parse().unwrap();
        let mut errors = CheckErrors::new("t");
        let parts = read(&table, Path::new("cfg"), &mut errors);
        assert_eq!(parts.topology.unwrap(), Path::new("cfg/demo.toml"));
        assert_eq!(parts.tls.ca, Path::new("/abs/ca.pem"));
        assert!(errors.mentions("node"), "{errors}");
    }
}
