//! The sections of a node's config (`[tls]`, `[cache]`, `[ingest]`, `[edge]`, `[links]`, `[admin]`,
//! `[probes]`, `[http]`, `[quic]`), each with the checks that need nothing but the section itself. Checks that relate sections
//! or need the topology are [`super::NodeConfig::validate`]'s.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::StreamName;
use crate::routing::ProbeConfig;
use crate::topology::{join_path, CheckError};

/// A problem with `field` (its path in the file, such as `probes.fast_ms`).
pub(crate) fn problem(field: impl Into<String>, message: impl Into<String>) -> CheckError {
    CheckError { field: field.into(), message: message.into() }
}

/// `Ok` when nothing was found.
fn found(problems: Vec<CheckError>) -> Result<(), Vec<CheckError>> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Probe intervals of a node's links (the same section as a simulator scenario's `[probes]`). Shorter
/// intervals measure faster and find a dead link sooner, at the cost of more datagrams; a link is declared
/// down once its last three probes are overdue and the first of them at least 300 ms ago.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbesConfig {
    /// Interval on links that bring this node a stream, in ms (default 100).
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

    /// Each interval above 0 and at most [`Self::MAX_MS`]; idle links probed no more often than busy ones.
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        let mut problems = Vec::new();
        for (field, ms) in [("probes.fast_ms", self.fast_ms), ("probes.slow_ms", self.slow_ms)] {
            if ms == 0 {
                problems.push(problem(field, "0 would probe in a busy loop (expected milliseconds above 0)"));
            } else if ms > Self::MAX_MS {
                problems.push(problem(field, format!("{ms} ms is too long (at most {} ms)", Self::MAX_MS)));
            }
        }
        if self.fast_ms > 0 && self.slow_ms > 0 && self.slow_ms < self.fast_ms {
            problems.push(problem(
                "probes.slow_ms",
                format!(
                    "{} ms is shorter than probes.fast_ms ({} ms): idle links would be probed more often than busy ones",
                    self.slow_ms, self.fast_ms
                ),
            ));
        }
        found(problems)
    }
}

impl Default for ProbesConfig {
    fn default() -> Self {
        let live = ProbeConfig::default();
        Self { fast_ms: live.fast_interval.as_millis() as u64, slow_ms: live.slow_interval.as_millis() as u64 }
    }
}

/// WAN emulation: the kernel's netem stand-in, in user space on the node's UDP socket. Off by default.
/// Nothing to check: either setting is sound.
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
    /// Bearer token the endpoints require (at least 8 characters); without one they are off.
    pub token: Option<String>,
    /// A file where the node keeps the stream takedowns it knows, so that they hold across a restart even
    /// before a neighbour tells it again (relative to the config file's folder). Without one, a restarted
    /// node learns them from its neighbours and the control replicas.
    pub takedowns_file: Option<PathBuf>,
}

impl AdminConfig {
    /// The shortest token accepted.
    pub const MIN_TOKEN_CHARS: usize = 8;

    /// A token, when set, is long enough to be a secret.
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        match &self.token {
            Some(token) if token.trim().len() < Self::MIN_TOKEN_CHARS => {
                Err(vec![problem("admin.token", "too short: use at least 8 characters")])
            }
            _ => Ok(()),
        }
    }

    /// The same section with a relative `takedowns_file` taken from `base` (the config file's folder).
    pub fn resolve(self, base: &Path) -> Self {
        Self { takedowns_file: self.takedowns_file.map(|p| base.join(p)), ..self }
    }
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

impl TlsFiles {
    /// The same files with relative paths taken from `base` (the config file's folder).
    pub fn resolve(self, base: &Path) -> Self {
        let resolve = |p: PathBuf| if p.as_os_str().is_empty() { p } else { base.join(p) };
        Self { ca: resolve(self.ca), cert: resolve(self.cert), key: resolve(self.key) }
    }

    /// Each file is set, readable and PEM.
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        let mut problems = Vec::new();
        for (field, path, what) in [
            ("tls.ca", &self.ca, "the mesh CA certificate"),
            ("tls.cert", &self.cert, "this node's certificate chain"),
            ("tls.key", &self.key, "this node's private key"),
        ] {
            if path.as_os_str().is_empty() {
                problems.push(problem(field, format!("missing (path to {what}, PEM)")));
                continue;
            }
            match std::fs::read(path) {
                Err(e) => problems.push(problem(field, format!("cannot read {}: {e}", path.display()))),
                Ok(bytes) if !bytes.windows(11).any(|w| w == b"-----BEGIN ") => {
                    problems.push(problem(field, format!("{} is not PEM (no -----BEGIN line)", path.display())))
                }
                Ok(_) => {}
            }
        }
        found(problems)
    }
}

/// The live-window cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bound on the bytes of cached objects (default 256 MiB, at least 1 MiB). The newest object of each
    /// stream is kept even beyond it.
    pub max_bytes: u64,
}

impl CacheConfig {
    /// The default bound: 256 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
    /// The smallest bound accepted: 1 MiB. Less would not hold one segment of each of a few streams.
    pub const MIN_MAX_BYTES: u64 = 1 << 20;

    /// The bound is at least [`Self::MIN_MAX_BYTES`].
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        if self.max_bytes < Self::MIN_MAX_BYTES {
            return Err(vec![problem(
                "cache.max_bytes",
                format!("{} is too small (at least {} bytes, 1 MiB)", self.max_bytes, Self::MIN_MAX_BYTES),
            )]);
        }
        Ok(())
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { max_bytes: Self::DEFAULT_MAX_BYTES }
    }
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
    /// Streams this origin holds as a backup: it takes one over when the owning origin's objects have not
    /// arrived for `takeover_ms` while a publisher pushes here, and yields it back when the owner's publisher
    /// returns. Any other stream live at another origin is refused here (409).
    pub backup_for: Vec<StreamName>,
    /// How long a backup waits without the owner's objects before taking a stream over, in milliseconds
    /// (default 4000; at least 500).
    pub takeover_ms: u64,
    /// How many streams one key may publish at once (a stream counts while it uploaded in the last 30 s;
    /// default 100, at least 1). Over it, a new stream is refused with 429.
    pub max_streams_per_key: u32,
    /// How fast one stream may push, in kbit/s (default 100000; at least 100), with bursts of two seconds
    /// at that rate or one largest body. Over it, uploads are refused with 429 until the stream slows down.
    pub max_stream_kbps: u64,
    /// Low-Latency HLS from `ffmpeg -f dash` uploads: the longest part the origin cuts, in ms (default 200,
    /// 50 to 2000). Written as `EXT-X-PART-INF:PART-TARGET`; the encoder's fragments (`-frag_duration`)
    /// must not be longer.
    pub part_target_ms: u64,
    /// Low-Latency HLS: `EXT-X-TARGETDURATION` of the playlists the origin writes, in seconds (default 2,
    /// 1 to 10): the encoder's segment duration (`-seg_duration`), rounded up.
    pub target_duration_s: u32,
    /// Low-Latency HLS: complete segments listed in the playlists the origin writes (default 12, 3 to 60).
    /// A playlist longer than six target durations (`CAN-SKIP-UNTIL`) lets players ask for delta updates.
    pub window_segments: u32,
}

impl IngestConfig {
    /// The default largest PUT body: 32 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 << 20;
    /// The shortest takeover wait accepted.
    pub const MIN_TAKEOVER_MS: u64 = 500;

    /// Uploads possible (a body limit above 0) and no key empty. That the limit fits the cache is
    /// [`super::NodeConfig::validate`]'s check.
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        let mut problems = Vec::new();
        if self.max_body_bytes == 0 {
            problems
                .push(problem("ingest.max_body_bytes", "0 would refuse every upload (expected a byte count above 0)"));
        }
        for (stream, key) in &self.stream_keys {
            if key.trim().is_empty() {
                problems.push(problem(
                    join_path("ingest.stream_keys", stream.as_str()),
                    "empty publish key (anyone could publish this stream)",
                ));
            }
        }
        if self.any_stream_key.as_ref().is_some_and(|k| k.trim().is_empty()) {
            problems.push(problem("ingest.any_stream_key", "empty publish key (anyone could publish any stream)"));
        }
        if self.max_streams_per_key == 0 {
            problems.push(problem("ingest.max_streams_per_key", "0 would refuse every stream (expected at least 1)"));
        }
        if self.max_stream_kbps < 100 {
            problems.push(problem(
                "ingest.max_stream_kbps",
                format!("{} kbit/s is below any live video (expected at least 100)", self.max_stream_kbps),
            ));
        }
        if !(50..=2000).contains(&self.part_target_ms) {
            problems
                .push(problem("ingest.part_target_ms", format!("{} ms is outside 50 to 2000", self.part_target_ms)));
        }
        if !(1..=10).contains(&self.target_duration_s) {
            problems
                .push(problem("ingest.target_duration_s", format!("{} s is outside 1 to 10", self.target_duration_s)));
        }
        if u64::from(self.target_duration_s) * 1000 < self.part_target_ms {
            problems.push(problem("ingest.part_target_ms", "a part cannot be longer than ingest.target_duration_s"));
        }
        if !(3..=60).contains(&self.window_segments) {
            problems.push(problem("ingest.window_segments", format!("{} is outside 3 to 60", self.window_segments)));
        }
        if self.takeover_ms < Self::MIN_TAKEOVER_MS {
            problems.push(problem(
                "ingest.takeover_ms",
                format!(
                    "{} ms is shorter than a publisher's usual gap between uploads (expected at least {})",
                    self.takeover_ms,
                    Self::MIN_TAKEOVER_MS
                ),
            ));
        }
        found(problems)
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            stream_keys: BTreeMap::new(),
            any_stream_key: None,
            backup_for: Vec::new(),
            takeover_ms: 4000,
            max_streams_per_key: 100,
            max_stream_kbps: 100_000,
            part_target_ms: 200,
            target_duration_s: 2,
            window_segments: 12,
        }
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

/// Serving viewers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// How long a viewer request for a named-but-missing object waits for it to arrive, in ms (default
    /// 6000, at most 60000).
    pub wait_ms: u64,
    /// `Cache-Control: max-age` of segments, parts and init segments, in seconds (default 30, at most 600).
    /// A segment's bytes never change, but its name may be reused: a publisher that restarts uploads a new
    /// `index0.m4s`. A downstream cache must not trust a name longer than the stream's live window, after
    /// which it revalidates (a 304 when the `ETag`, a hash of the bytes, still matches).
    pub segment_max_age_s: u64,
    /// Blocking playlist reloads (`_HLS_msn`, `_HLS_part`) held at once (default 16384, at least 1); past
    /// it, 503 with `Retry-After`.
    pub max_blocked: u32,
    /// The longest a blocking reload is held, in ms (default 6000, 100 to 60000); it is also never held
    /// past three target durations, after which it gets 503 as the HLS specification asks.
    pub block_ms: u64,
    /// Signed viewer URLs (`[edge.tokens]`): keys, and which streams need a token.
    pub tokens: TokensConfig,
    /// HTTPS for viewers (`[edge.tls]`): off unless `listen` is set.
    pub tls: EdgeTlsConfig,
}

/// Signed viewer URLs (see `edge::token` for the formats).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// HMAC-SHA256 keys by key id (letters, digits, '-', '_'; the secret at least 16 characters). Keep the
    /// old id while tokens signed with it are live, to rotate keys without cutting viewers off.
    pub keys: BTreeMap<String, String>,
    /// What a stream needs by default: `open` (anyone; the default) or `token`.
    pub policy: crate::edge::token::Policy,
    /// Per-stream policies, instead of `policy` (e.g. `{ paid1 = "token", trailer = "open" }`).
    pub streams: BTreeMap<StreamName, crate::edge::token::Policy>,
    /// The private key of Alibaba Cloud type A URL signing (`auth_key=`); off without one.
    pub alibaba_key: Option<String>,
    /// How long an `auth_key` URL is good after its timestamp, in s (default 1800, as Alibaba's; at most
    /// 31536000).
    pub alibaba_ttl_s: u64,
}

impl TokensConfig {
    /// The shortest secret accepted.
    pub const MIN_SECRET_CHARS: usize = 16;

    /// The edge's gate for these settings.
    pub fn gate(&self) -> crate::edge::token::Gate {
        crate::edge::token::Gate::new(
            self.keys.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.alibaba_key.as_deref().map(|k| (k, if self.alibaba_ttl_s == 0 { 1800 } else { self.alibaba_ttl_s })),
            self.policy,
            self.streams.iter().map(|(s, p)| (s.to_string(), *p)).collect(),
        )
    }

    /// Key ids are plain words, secrets long enough; a stream that needs a token has a way to get one.
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        let mut problems = Vec::new();
        for (kid, secret) in &self.keys {
            let field = format!("edge.tokens.keys.{kid}");
            if kid.is_empty() || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                problems.push(problem(field.clone(), "a key id is letters, digits, '-' and '_'"));
            }
            if secret.len() < Self::MIN_SECRET_CHARS {
                problems.push(problem(field, "too short: use at least 16 characters"));
            }
        }
        if self.alibaba_key.as_ref().is_some_and(|k| k.len() < Self::MIN_SECRET_CHARS) {
            problems.push(problem("edge.tokens.alibaba_key", "too short: use at least 16 characters"));
        }
        if self.alibaba_ttl_s > 31_536_000 {
            problems.push(problem("edge.tokens.alibaba_ttl_s", "at most 31536000 (a year)"));
        }
        let required = self.policy == crate::edge::token::Policy::Token
            || self.streams.values().any(|p| *p == crate::edge::token::Policy::Token);
        if required && self.keys.is_empty() && self.alibaba_key.is_none() {
            problems.push(problem(
                "edge.tokens.keys",
                "streams require a token but no key is set (keys or alibaba_key): nobody could watch them",
            ));
        }
        found(problems)
    }
}

/// HTTPS for viewers: a second listener, TLS with HTTP/2 and HTTP/1.1 by ALPN, beside the plain HTTP one
/// (which keeps serving `/metrics`, `/healthz` and publishers). The certificate and key are read again on
/// SIGHUP; connections open at that moment keep theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeTlsConfig {
    /// Where to listen for HTTPS (off when absent).
    pub listen: Option<std::net::SocketAddr>,
    /// The certificate chain (PEM), relative to the config file's folder.
    pub cert: PathBuf,
    /// Its private key (PEM), relative to the config file's folder.
    pub key: PathBuf,
}

impl EdgeTlsConfig {
    /// The same section with relative paths taken from `base`.
    pub fn resolve(self, base: &Path) -> Self {
        let resolve = |p: PathBuf| if p.as_os_str().is_empty() { p } else { base.join(p) };
        Self { cert: resolve(self.cert), key: resolve(self.key), ..self }
    }

    /// With `listen`, both files are named and read as a certificate chain and a matching key.
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        if self.listen.is_none() {
            return Ok(());
        }
        let mut problems = Vec::new();
        if self.listen.is_some_and(|a| a.port() == 0) {
            problems.push(problem("edge.tls.listen", "port 0 would bind a random port that viewers cannot know"));
        }
        for (field, path) in [("edge.tls.cert", &self.cert), ("edge.tls.key", &self.key)] {
            if path.as_os_str().is_empty() {
                problems.push(problem(field, "missing: required with edge.tls.listen"));
            }
        }
        if problems.is_empty() {
            if let Err(e) = crate::edge::tls::load(&self.cert, &self.key) {
                problems.push(problem("edge.tls.cert", format!("{e:#}")));
            }
        }
        found(problems)
    }
}

impl EdgeConfig {
    /// The default wait: 6 s, about one segment duration.
    pub const DEFAULT_WAIT_MS: u64 = 6000;
    /// The longest wait accepted: players give up well before a minute.
    pub const MAX_WAIT_MS: u64 = 60_000;
    /// The default segment max-age: 30 s, the live window of a typical stream (5 to 6 segments of 4 to 6 s).
    pub const DEFAULT_SEGMENT_MAX_AGE_S: u64 = 30;
    /// The longest segment max-age accepted: 10 minutes, already a long DVR window; a name kept for longer
    /// in downstream caches would serve a restarted stream's viewers the old session's bytes.
    pub const MAX_SEGMENT_MAX_AGE_S: u64 = 600;

    /// The wait is at most [`Self::MAX_WAIT_MS`], the segment max-age at most
    /// [`Self::MAX_SEGMENT_MAX_AGE_S`].
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        let mut problems = Vec::new();
        if self.wait_ms > Self::MAX_WAIT_MS {
            problems.push(problem(
                "edge.wait_ms",
                format!("{} ms is too long (at most {} ms; players give up sooner)", self.wait_ms, Self::MAX_WAIT_MS),
            ));
        }
        if self.max_blocked == 0 {
            problems.push(problem("edge.max_blocked", "0 would refuse every blocking reload (expected at least 1)"));
        }
        if !(100..=60_000).contains(&self.block_ms) {
            problems.push(problem("edge.block_ms", format!("{} ms is outside 100 to 60000", self.block_ms)));
        }
        if self.segment_max_age_s > Self::MAX_SEGMENT_MAX_AGE_S {
            problems.push(problem(
                "edge.segment_max_age_s",
                format!(
                    "{} s is too long (at most {} s): downstream caches would keep serving a segment name after \
                     a restarted publisher reused it",
                    self.segment_max_age_s,
                    Self::MAX_SEGMENT_MAX_AGE_S
                ),
            ));
        }
        problems.extend(self.tokens.validate().err().unwrap_or_default());
        problems.extend(self.tls.validate().err().unwrap_or_default());
        found(problems)
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            wait_ms: Self::DEFAULT_WAIT_MS,
            segment_max_age_s: Self::DEFAULT_SEGMENT_MAX_AGE_S,
            max_blocked: 16_384,
            block_ms: 6000,
            tokens: TokensConfig::default(),
            tls: EdgeTlsConfig::default(),
        }
    }
}

/// The HTTP listener's limits (viewers, publishers, `/metrics`; a control replica's API too): how long a
/// connection may take over each part of a request, and how many connections it may hold. Every limit
/// answers a way to hold a node's memory or descriptors without sending anything useful: a head sent a
/// byte at a time (slowloris), connections opened and left idle, an upload that stops half way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// How long a client may take to send a request's head, from its first byte to its blank line, in ms
    /// (default 10000). Past it the connection is closed. Varnish allows 5 s, nginx 60 s; a player sends a
    /// head in one packet.
    pub header_timeout_ms: u64,
    /// How long a connection may stay open with no request in flight and nothing sent or received, in ms
    /// (default 30000; at least `header_timeout_ms`). Players poll playlists every few seconds, so their
    /// connections stay; idle ones are closed.
    pub idle_timeout_ms: u64,
    /// How long an upload may go without sending any of its body, in ms (default 10000). Past it the
    /// publisher gets 408 and nothing of the upload is stored. A live publisher that stalls this long has
    /// already missed its segment's slot.
    pub body_timeout_ms: u64,
    /// The most connections the listener holds at once (default 16384). It is also held under the
    /// open-file limit: half of it is for cached bodies and `reserved_fds` for the rest of the node, so a
    /// full listener never takes the descriptors of the mesh or the cache. Past it, new connections get a
    /// bare 503 with `Retry-After` and are closed.
    pub max_connections: usize,
    /// The most connections one client address may hold (default 256: a large office or a carrier-grade
    /// NAT puts many viewers, each with one or two connections, behind one address). Past it, the same 503.
    pub max_connections_per_address: usize,
    /// Descriptors kept out of the listener's reach for the mesh socket, log files, DNS lookups and the
    /// refusals themselves (default 512).
    pub reserved_fds: usize,
}

impl HttpConfig {
    /// The shortest timeout accepted: 100 ms. Less would cut clients on an ordinary network's jitter.
    pub const MIN_TIMEOUT_MS: u64 = 100;
    /// The longest timeout accepted: 10 minutes. A limit longer than that bounds nothing.
    pub const MAX_TIMEOUT_MS: u64 = 600_000;

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// Timeouts within [`Self::MIN_TIMEOUT_MS`] and [`Self::MAX_TIMEOUT_MS`], an idle connection kept at
    /// least as long as a head may take, caps above 0 and the per-address cap within the node's.
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        let mut problems = Vec::new();
        for (field, ms) in [
            ("http.header_timeout_ms", self.header_timeout_ms),
            ("http.idle_timeout_ms", self.idle_timeout_ms),
            ("http.body_timeout_ms", self.body_timeout_ms),
        ] {
            if ms < Self::MIN_TIMEOUT_MS {
                problems.push(problem(
                    field,
                    format!(
                        "{ms} ms is too short (at least {} ms; clients on a jittery network would be cut)",
                        Self::MIN_TIMEOUT_MS
                    ),
                ));
            } else if ms > Self::MAX_TIMEOUT_MS {
                problems.push(problem(
                    field,
                    format!("{ms} ms is too long (at most {} ms, or it bounds nothing)", Self::MAX_TIMEOUT_MS),
                ));
            }
        }
        if self.idle_timeout_ms < self.header_timeout_ms {
            problems.push(problem(
                "http.idle_timeout_ms",
                format!(
                    "{} ms is shorter than http.header_timeout_ms ({} ms): a keep-alive connection would be \
                     closed before a client could send its next head",
                    self.idle_timeout_ms, self.header_timeout_ms
                ),
            ));
        }
        if self.max_connections == 0 {
            problems.push(problem("http.max_connections", "0 would refuse every connection"));
        }
        if self.max_connections_per_address == 0 {
            problems.push(problem("http.max_connections_per_address", "0 would refuse every connection"));
        } else if self.max_connections_per_address > self.max_connections {
            problems.push(problem(
                "http.max_connections_per_address",
                format!(
                    "{} is more than http.max_connections ({}): one address could take every connection",
                    self.max_connections_per_address, self.max_connections
                ),
            ));
        }
        found(problems)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            body_timeout_ms: 10_000,
            max_connections: 16_384,
            max_connections_per_address: 256,
            reserved_fds: 512,
        }
    }
}

/// The QUIC endpoint's limits (mesh peers, control sessions). Only neighbours and control replicas ever
/// connect, a few at a time; anyone else's Initial packets are a flood to turn away cheaply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// Answer an Initial from an address that has not proven it receives our packets with a Retry (one
    /// small packet, no state kept) instead of a handshake (default true). A spoofed or replayed Initial
    /// then costs the node nothing and cannot make it send more than it received; a real peer pays one
    /// round trip when it connects.
    pub validate_addresses: bool,
    /// The most handshakes in progress at once (default 64); beyond it, new connections are refused
    /// (CONNECTION_REFUSED) without starting one. A node has at most a few dozen neighbours and replicas.
    pub max_handshakes: usize,
    /// Bytes of whole objects (ingested here, or a live window for a new subscriber) being sent to one mesh
    /// peer at once (default 16 MiB, a connection's window); as much again may wait. Beyond that a lagging
    /// peer skips the oldest waiting objects, so a stalled neighbour never makes the node buffer more.
    pub peer_queue_bytes: u64,
    /// How many object streams a mesh peer may have open toward this node at once (default 128, at most
    /// 4,096). Each object crosses a link on a stream of its own, open from the peer's first byte of it to
    /// this node's last read, so this many objects can be on their way over one link at once: 128 is
    /// about 1,000 objects a second over a 130 ms round trip. It is also what a connection keeps: QUIC
    /// holds receive state for every stream the peer may open and reuses it for a later stream with the
    /// reassembly queue it last grew to (about 56 bytes per packet of an object that arrived before it was
    /// read, 14 KiB for a 500 KB segment, at most about 230 KiB), kept until the connection closes. So a
    /// peer is granted 16 at first, and more, up to this, as it uses them ([`crate::quic::StreamCredit`]).
    pub max_object_streams: u32,
}

impl QuicConfig {
    /// The most `max_object_streams` accepted.
    pub const MAX_OBJECT_STREAMS: u32 = 4096;

    /// Caps above 0, and object streams within [`QuicConfig::MAX_OBJECT_STREAMS`].
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        let mut problems = Vec::new();
        if self.max_handshakes == 0 {
            problems.push(problem("quic.max_handshakes", "0 would refuse every peer"));
        }
        if self.max_object_streams == 0 {
            problems.push(problem("quic.max_object_streams", "0 would let no peer send an object"));
        } else if self.max_object_streams > Self::MAX_OBJECT_STREAMS {
            problems.push(problem(
                "quic.max_object_streams",
                format!(
                    "at most {}: each permitted stream keeps its receive state (up to about 230 KiB) for the \
                     connection's life",
                    Self::MAX_OBJECT_STREAMS
                ),
            ));
        }
        if self.peer_queue_bytes < 65_536 {
            problems.push(problem("quic.peer_queue_bytes", "must be at least 65536 (64 KiB)"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self { validate_addresses: true, max_handshakes: 64, peer_queue_bytes: 16 << 20, max_object_streams: 128 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields a validation names, with a word of each message.
    #[track_caller]
    fn fails(result: Result<(), Vec<CheckError>>, expected: &[(&str, &str)]) {
        let problems = result.expect_err("accepted");
        assert_eq!(problems.len(), expected.len(), "{problems:?}");
        for (p, (field, words)) in problems.iter().zip(expected) {
            assert_eq!(p.field, *field, "{problems:?}");
            assert!(p.message.contains(words), "{p:?} does not say {words:?}");
        }
    }

    #[test]
    fn defaults_are_the_documented_values_and_valid() {
        assert_eq!(CacheConfig::default().max_bytes, 268_435_456);
        assert_eq!(IngestConfig::default().max_body_bytes, 33_554_432);
        assert_eq!(
            EdgeConfig::default(),
            EdgeConfig {
                wait_ms: 6000,
                segment_max_age_s: 30,
                max_blocked: 16_384,
                block_ms: 6000,
                ..EdgeConfig::default()
            }
        );
        assert_eq!(ProbesConfig::default(), ProbesConfig { fast_ms: 100, slow_ms: 1000 });
        assert_eq!(CacheConfig::default().validate(), Ok(()));
        assert_eq!(IngestConfig::default().validate(), Ok(()));
        assert_eq!(EdgeConfig::default().validate(), Ok(()));
        assert_eq!(ProbesConfig::default().validate(), Ok(()));
        assert_eq!(AdminConfig::default().validate(), Ok(()));
        let http = HttpConfig::default();
        assert_eq!((http.header_timeout_ms, http.idle_timeout_ms, http.body_timeout_ms), (10_000, 30_000, 10_000));
        assert_eq!((http.max_connections, http.max_connections_per_address, http.reserved_fds), (16_384, 256, 512));
        assert_eq!(http.validate(), Ok(()));
        assert_eq!(
            QuicConfig::default(),
            QuicConfig {
                validate_addresses: true,
                max_handshakes: 64,
                peer_queue_bytes: 16 << 20,
                max_object_streams: 128
            }
        );
        assert_eq!(QuicConfig::default().validate(), Ok(()));
    }

    #[test]
    fn http_validates() {
        let http = HttpConfig {
            header_timeout_ms: 50,
            idle_timeout_ms: 3_600_000,
            body_timeout_ms: 0,
            max_connections: 0,
            max_connections_per_address: 1,
            reserved_fds: 0,
        };
        fails(
            http.validate(),
            &[
                ("http.header_timeout_ms", "too short"),
                ("http.idle_timeout_ms", "too long"),
                ("http.body_timeout_ms", "too short"),
                ("http.max_connections", "refuse every connection"),
                ("http.max_connections_per_address", "more than http.max_connections (0)"),
            ],
        );
        let short_idle = HttpConfig { idle_timeout_ms: 5000, ..HttpConfig::default() };
        fails(short_idle.validate(), &[("http.idle_timeout_ms", "shorter than http.header_timeout_ms")]);
        let no_address = HttpConfig { max_connections_per_address: 0, ..HttpConfig::default() };
        fails(no_address.validate(), &[("http.max_connections_per_address", "refuse every connection")]);
    }

    #[test]
    fn quic_validates() {
        fails(
            QuicConfig { max_handshakes: 0, ..QuicConfig::default() }.validate(),
            &[("quic.max_handshakes", "refuse")],
        );
        fails(
            QuicConfig { max_object_streams: 0, ..QuicConfig::default() }.validate(),
            &[("quic.max_object_streams", "no peer")],
        );
        fails(
            QuicConfig { max_object_streams: 4097, ..QuicConfig::default() }.validate(),
            &[("quic.max_object_streams", "at most 4096")],
        );
    }

    #[test]
    fn probes_validate() {
        let probes = |fast_ms, slow_ms| ProbesConfig { fast_ms, slow_ms };
        assert_eq!(probes(20, 20).validate(), Ok(()));
        assert_eq!(probes(1, ProbesConfig::MAX_MS).validate(), Ok(()));
        fails(probes(0, 120_000).validate(), &[("probes.fast_ms", "busy loop"), ("probes.slow_ms", "too long")]);
        fails(probes(500, 100).validate(), &[("probes.slow_ms", "shorter than probes.fast_ms (500 ms)")]);
        fails(probes(100, 0).validate(), &[("probes.slow_ms", "busy loop")]);
        assert_eq!(probes(50, 2000).config().fast_interval, Duration::from_millis(50));
    }

    #[test]
    fn admin_validates() {
        let admin = |t: &str| AdminConfig { token: Some(t.into()), ..AdminConfig::default() };
        assert_eq!(admin("long-enough").validate(), Ok(()));
        fails(admin(" short  ").validate(), &[("admin.token", "too short")]);
    }

    #[test]
    fn tls_validates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::fs::write(dir.path().join("key.pem"), "not pem").unwrap();
        let tls = TlsFiles { ca: "ca.pem".into(), cert: PathBuf::new(), key: "key.pem".into() }.resolve(dir.path());
        assert_eq!(tls.ca, dir.path().join("ca.pem"));
        assert_eq!(tls.cert, PathBuf::new());
        fails(
            tls.validate(),
            &[("tls.cert", "missing (path to this node's certificate chain"), ("tls.key", "not PEM")],
        );
        let absent = TlsFiles { cert: "/nonexistent/c.pem".into(), ..tls.clone() };
        fails(absent.validate(), &[("tls.cert", "cannot read /nonexistent/c.pem"), ("tls.key", "not PEM")]);
        let good = TlsFiles { cert: tls.ca.clone(), key: tls.ca.clone(), ..tls };
        assert_eq!(good.validate(), Ok(()));
    }

    #[test]
    fn cache_validates() {
        assert_eq!(CacheConfig { max_bytes: CacheConfig::MIN_MAX_BYTES }.validate(), Ok(()));
        fails(CacheConfig { max_bytes: 1000 }.validate(), &[("cache.max_bytes", "too small")]);
    }

    #[test]
    fn ingest_validates() {
        let mut ingest = IngestConfig { max_body_bytes: 0, ..IngestConfig::default() };
        ingest.stream_keys.insert(StreamName::new("demo").unwrap(), " ".into());
        ingest.stream_keys.insert(StreamName::new("live").unwrap(), "k".into());
        ingest.any_stream_key = Some(String::new());
        fails(
            ingest.validate(),
            &[
                ("ingest.max_body_bytes", "refuse every upload"),
                ("ingest.stream_keys.demo", "empty publish key"),
                ("ingest.any_stream_key", "empty publish key"),
            ],
        );
    }

    #[test]
    fn edge_validates() {
        let edge = |wait_ms, segment_max_age_s| EdgeConfig { wait_ms, segment_max_age_s, ..EdgeConfig::default() };
        assert_eq!(edge(0, 0).validate(), Ok(()));
        assert_eq!(edge(EdgeConfig::MAX_WAIT_MS, EdgeConfig::MAX_SEGMENT_MAX_AGE_S).validate(), Ok(()));
        fails(edge(3_600_000, 30).validate(), &[("edge.wait_ms", "too long")]);
        fails(edge(6000, 86_400).validate(), &[("edge.segment_max_age_s", "restarted publisher reused it")]);
    }

    #[test]
    fn debug_hides_publish_keys() {
        let mut ingest = IngestConfig::default();
        ingest.stream_keys.insert(StreamName::new("demo").unwrap(), "s3cret".into());
        ingest.any_stream_key = Some("master".into());
        let shown = format!("{ingest:?}");
        assert!(shown.contains("demo") && !shown.contains("s3cret") && !shown.contains("master"), "{shown}");
    }
}

/// The live dashboard a control replica serves: the page at `/dashboard` and its event stream at
/// `/api/events` (server-sent events, one per open page). Each open stream holds a connection, a task and
/// a few snapshots of the mesh, so their number is bounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Event streams (`GET /api/events`) open at once (default 64, 1 to 4096). Past it a new one gets 503
    /// with `Retry-After`, which browsers' `EventSource` retries.
    pub max_event_streams: usize,
    /// How often an event stream with nothing new sends a comment line, in ms (default 15000, 1000 to
    /// 60000), so that proxies keep it open and a page sees a dead replica.
    pub keepalive_ms: u64,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self { max_event_streams: 64, keepalive_ms: 15_000 }
    }
}

impl DashboardConfig {
    /// The most event streams a config may allow.
    pub const MAX_EVENT_STREAMS: usize = 4096;

    /// The keep-alive interval.
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }

    /// Both fields within their ranges.
    pub fn validate(&self) -> Result<(), Vec<CheckError>> {
        let mut problems = Vec::new();
        if self.max_event_streams == 0 {
            problems
                .push(problem("dashboard.max_event_streams", "0 would refuse every dashboard (expected 1 to 4096)"));
        } else if self.max_event_streams > Self::MAX_EVENT_STREAMS {
            problems.push(problem(
                "dashboard.max_event_streams",
                format!("{} is too many (at most {})", self.max_event_streams, Self::MAX_EVENT_STREAMS),
            ));
        }
        if !(1_000..=60_000).contains(&self.keepalive_ms) {
            problems
                .push(problem("dashboard.keepalive_ms", format!("{} ms is outside 1000 to 60000", self.keepalive_ms)));
        }
        found(problems)
    }
}
