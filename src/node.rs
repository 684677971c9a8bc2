//! One mesh node: its QUIC endpoint, its cache, its control-plane client and its HTTP listener, with the
//! roles the topology gives it (origin: ingest; edge: viewers; every node: `/metrics` and `/healthz`).
//!
//! [`run`] takes already-bound listeners and a shutdown future, so tests and the demo start real nodes on
//! ports they own; [`Listeners::bind`] binds the addresses a config names.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::ca::Identity;
use crate::cache::Cache;
use crate::config::{AdminConfig, EdgeConfig, HttpConfig, IngestConfig, LinksConfig, NodeConfig, QuicConfig};
use crate::control::client::FromControl;
use crate::edge::{Edge, EdgeError};
use crate::http::{live_path, refuse, text, Client, Handler, Refusal, Reply, RequestCounts, Side};
use crate::id::{NodeId, ObjectName, StreamName};
use crate::listen::Listeners;
use crate::mesh::{Mesh, MeshOptions};
use crate::netem::{Impairment, Impairments};
use crate::origin::Ingest;
use crate::relay::RelayConfig;
use crate::routing::ProbeConfig;
use crate::topology::{Role, Topology};

/// The header of a node's `/healthz` answer that carries its [`Mesh::boot`] (a decimal number).
pub const BOOT_HEADER: &str = "lightpath-boot";

/// Everything a node runs with.
#[derive(Clone)]
pub struct NodeParams {
    pub id: NodeId,
    pub topology: Arc<Topology>,
    pub identity: Identity,
    pub cache_bytes: u64,
    pub ingest: IngestConfig,
    pub edge: EdgeConfig,
    pub links: LinksConfig,
    pub admin: AdminConfig,
    pub probes: ProbeConfig,
    pub http: HttpConfig,
    pub quic: QuicConfig,
}

impl NodeParams {
    /// From a checked config file and its topology; reads the TLS files.
    pub fn from_config(config: NodeConfig, topology: Topology) -> Result<Self> {
        let identity = Identity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)
            .context("loading the node's TLS files")?;
        Ok(Self {
            id: config.node,
            topology: Arc::new(topology),
            identity,
            cache_bytes: config.cache.max_bytes,
            ingest: config.ingest,
            edge: config.edge,
            links: config.links,
            admin: config.admin,
            probes: config.probes.config(),
            http: config.http,
            quic: config.quic,
        })
    }
}

/// Runs a node until `shutdown` completes.
pub async fn run(params: NodeParams, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<()> {
    let spec =
        params.topology.node(&params.id).with_context(|| format!("node {} is not in the topology", params.id))?.clone();
    crate::telemetry::metrics(); // install the recorder before the first count
    crate::telemetry::record_certificate_expiry(params.id.as_str(), &params.identity);
    if crate::ca::peer_node_id(&params.identity.chain[0], [&params.id]).is_none() {
        tracing::warn!(node = %params.id, "this node's certificate does not name it; every peer will refuse it");
    }
    // Each viewer connection and each sealed cached body holds a descriptor: take all the system allows.
    match crate::cache::sealed::raise_fd_limit() {
        Ok(limit) => tracing::debug!(node = %params.id, limit, "open-file limit"),
        Err(e) => tracing::warn!(node = %params.id, error = %e, "could not raise the open-file limit"),
    }
    let serves_viewers = spec.has_role(Role::Edge) || spec.has_role(Role::Origin);
    let cache = if serves_viewers {
        Cache::with_sealed_bodies(params.cache_bytes, params.id.as_str())
    } else {
        Cache::new(params.cache_bytes, params.id.as_str())
    };
    // The impairment layer is in the path only when something can use it: emulation, or the admin API.
    let impairments = (params.links.emulate || params.admin.token.is_some()).then(Impairments::default);
    if let Some(table) = impairments.as_ref().filter(|_| params.links.emulate) {
        for (peer, latency_ms) in params.topology.neighbours(&params.id) {
            match peer.mesh.resolve().await {
                Ok(addrs) => {
                    for addr in addrs {
                        table.set(addr, Impairment { delay_ms: latency_ms, ..Impairment::default() });
                    }
                }
                Err(e) => tracing::warn!(peer = %peer.id, error = %e, "cannot emulate the link: address unresolved"),
            }
        }
    }
    let mesh = Mesh::start(
        params.id.clone(),
        &params.topology,
        &params.identity,
        listeners.mesh,
        cache,
        impairments.clone(),
        MeshOptions {
            relay: RelayConfig {
                probes: params.probes.clone(),
                takeover: Duration::from_millis(params.ingest.takeover_ms),
                ..RelayConfig::default()
            },
            takedowns_file: params.admin.takedowns_file.clone(),
            quic: params.quic.clone(),
        },
    )?;
    // The node reports to every control replica and takes the newest table from any of them, over its mesh
    // endpoint; the clients end when the endpoint closes.
    let span = tracing::info_span!("mesh", node = %params.id);
    for control in &params.topology.controls {
        let to_mesh = mesh.clone();
        let from = control.id.clone();
        tokio::spawn(
            crate::control::client::run(
                mesh.endpoint().clone(),
                params.id.clone(),
                control.clone(),
                mesh.reports(),
                move |message| match message {
                    FromControl::Routes(routes) => to_mesh.routes(from.clone(), routes),
                    FromControl::Takedown { stream, takedown } => to_mesh.takedown_from_control(stream, takedown),
                    FromControl::Ended => to_mesh.control_ended(from.clone()),
                },
            )
            .instrument(span.clone()),
        );
    }
    tracing::info!(
        node = %params.id,
        mesh = %mesh.local_addr()?,
        http = %listeners.http.local_addr()?,
        roles = ?spec.roles,
        "node running"
    );
    let edge = serves_viewers.then(|| {
        Arc::new(
            Edge::new(mesh.clone(), Duration::from_millis(params.edge.wait_ms))
                .with_segment_max_age(Duration::from_secs(params.edge.segment_max_age_s))
                .with_blocking(params.edge.max_blocked, Duration::from_millis(params.edge.block_ms)),
        )
    });
    if let Some(edge) = &edge {
        tokio::spawn(report_viewers(Arc::downgrade(edge)));
    }
    let site = Arc::new(Site {
        node: params.id.to_string(),
        counts: RequestCounts::new(params.id.as_str()),
        admin: params.admin.token.clone().zip(impairments).map(|(token, table)| Admin {
            token,
            table,
            topology: params.topology.clone(),
            me: params.id.clone(),
            mesh: mesh.clone(),
        }),
        mesh: mesh.clone(),
        ingest: spec
            .has_role(Role::Origin)
            .then(|| Ingest::new(mesh.clone(), params.ingest.clone(), params.http.body_timeout())),
        edge,
        gate: params.edge.tokens.gate(),
    });
    // HTTPS for viewers, beside the plain listener, stopped with it.
    let (stop_tls, tls_stopped) = tokio::sync::oneshot::channel::<()>();
    if let (Some(addr), true) = (params.edge.tls.listen, serves_viewers) {
        let certificate = crate::edge::tls::Certificate::load(&params.edge.tls.cert, &params.edge.tls.key)
            .context("loading edge.tls")?;
        let listener = crate::listen::bind_http(addr).with_context(|| format!("binding edge.tls.listen {addr}"))?;
        tracing::info!(node = %params.id, https = %listener.local_addr()?, "serving viewers over HTTPS");
        tokio::spawn(certificate.clone().reload_on_hangup(params.id.to_string()));
        let (site, http, node) = (site.clone(), params.http.clone(), params.id.to_string());
        let config = Arc::new(certificate.server_config());
        tokio::spawn(async move {
            crate::http::serve_tls(listener, site, config, &http, &node, async {
                let _ = tls_stopped.await;
            })
            .await
        });
    }
    let sealed_cache_bytes = if serves_viewers { params.cache_bytes } else { 0 };
    crate::http::serve(listeners.http, site, &params.http, params.id.as_str(), sealed_cache_bytes, shutdown).await;
    let _ = stop_tls.send(());
    mesh.close();
    Ok(())
}

/// How often an edge tells the mesh how many viewers each stream has.
const REPORT_VIEWERS_EVERY: Duration = Duration::from_secs(2);

async fn report_viewers(edge: std::sync::Weak<Edge>) {
    let mut tick = tokio::time::interval(REPORT_VIEWERS_EVERY);
    loop {
        tick.tick().await;
        let Some(edge) = edge.upgrade() else { return };
        edge.report_viewers();
    }
}

/// A node's HTTP side: dispatches by path and method to ingest, edge and metrics.
struct Site {
    node: String,
    counts: RequestCounts,
    admin: Option<Admin>,
    mesh: Mesh,
    ingest: Option<Ingest>,
    edge: Option<Arc<Edge>>,
    /// Who may watch what (`edge.tokens`).
    gate: crate::edge::token::Gate,
}

impl Handler for Site {
    async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let mut reply = self.route(req).await;
        // Browser players on other sites read every reply, refusals included; the admin API is for operators.
        if !uri.path().starts_with("/admin/") {
            crate::http::cors::allow(&mut reply);
        }
        let status = reply.status();
        self.counts.count(&method, status);
        if status.is_client_error() || status.is_server_error() {
            let path = crate::http::loggable_path(uri.path());
            match reply.extensions().get::<Refusal>() {
                Some(Refusal { side, cause }) => {
                    tracing::info!(node = %self.node, %method, %path, status = status.as_u16(), %side, reason = %cause, "request refused")
                }
                None => tracing::info!(node = %self.node, %method, %path, status = status.as_u16(), "request refused"),
            }
        }
        reply
    }
}

impl Site {
    async fn route(&self, req: http::Request<Incoming>) -> Reply {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/metrics") => {
                crate::telemetry::record_memory(&self.node);
                let mut resp = text(StatusCode::OK, crate::telemetry::metrics().render());
                resp.headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
                return resp;
            }
            (&Method::GET, "/healthz") => {
                // Which run of the node answers: a director matches it with the one its reports name.
                let mut reply = text(StatusCode::OK, "ok");
                reply.headers_mut().insert(BOOT_HEADER, http::HeaderValue::from(self.mesh.boot()));
                return reply;
            }
            (&Method::GET, "/api/streams") => return streams_json(&self.mesh),
            (_, p) if p.starts_with("/admin/") => {
                return match &self.admin {
                    Some(admin) => Box::pin(admin.handle(req)).await,
                    None => refuse(
                        StatusCode::NOT_FOUND,
                        Side::Downstream,
                        "the admin API is off (no admin.token in the config)",
                    ),
                };
            }
            _ => {}
        }
        // An encoder that cannot send headers puts its key in the path instead.
        let (path, key) = match crate::http::publish_path(path) {
            Some((key, live)) => (std::borrow::Cow::Owned(live), Some(key)),
            None => (std::borrow::Cow::Borrowed(path), None),
        };
        let (stream, name) = match live_path(&path) {
            Ok(p) => p,
            Err(e) => return refuse(e.status(), Side::Downstream, e),
        };
        let method = req.method().clone();
        if key.is_some() && !matches!(method, Method::PUT | Method::POST | Method::DELETE) {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                Side::Downstream,
                "/publish/ is for uploads; play from /live/",
            );
        }
        match method {
            Method::GET | Method::HEAD => match &self.edge {
                Some(edge) => {
                    // A draining edge keeps serving the streams it carries (its players are not cut) but
                    // starts none: that would be a new subscription through a node on its way out.
                    if self.mesh.is_draining() && !self.mesh.reach(&stream).is_some_and(|(_, receiving)| receiving) {
                        return EdgeError::Draining { stream }.into_reply();
                    }
                    let now_s = crate::clock::unix_ms() / 1000;
                    let credential = match self.gate.admit(stream.as_str(), &path, req.uri().query(), now_s) {
                        Ok(c) => c,
                        Err(e) => return refuse(StatusCode::FORBIDDEN, Side::Downstream, e),
                    };
                    let client = req.extensions().get::<Client>().map(|c| c.0.ip());
                    match edge.get(&method, &stream, &name, req.uri().query(), client).await {
                        Ok(mut whole) => {
                            if let Some(credential) = credential.filter(|_| crate::hls::media::is_playlist(&name)) {
                                whole = crate::edge::reply::rewrite_playlist(&method, whole, |text| {
                                    self.gate.carry(&credential, text, &path)
                                });
                            }
                            crate::edge::reply::select(&method, req.headers(), whole)
                        }
                        Err(e) => e.into_reply(),
                    }
                }
                None => EdgeError::NoViewers.into_reply(),
            },
            Method::OPTIONS => crate::http::cors::preflight(),
            // Boxed, with everything an upload holds: a viewer's request, parked for the next part, need not
            // carry room for one.
            Method::PUT | Method::POST | Method::DELETE => Box::pin(self.upload(req, key, stream, name)).await,
            _ => refuse(StatusCode::METHOD_NOT_ALLOWED, Side::Downstream, format!("{method} is not served here")),
        }
    }

    /// A publisher's `PUT`, `POST` or `DELETE` of `name`, its key from the header or the `/publish/` path.
    async fn upload(
        &self,
        req: http::Request<Incoming>,
        key: Option<String>,
        stream: StreamName,
        name: ObjectName,
    ) -> Reply {
        let Some(ingest) = &self.ingest else {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, Side::Downstream, "this node is not an origin");
        };
        let (mut parts, body) = req.into_parts();
        if let Some(key) = key.and_then(|k| http::HeaderValue::from_str(&k).ok()) {
            parts.headers.insert("x-lightpath-key", key);
        }
        let result = if parts.method == Method::DELETE {
            ingest.delete(&parts.headers, stream, name)
        } else {
            ingest.put(&parts.headers, body, stream, name).await
        };
        result.unwrap_or_else(|e| refuse(e.status(), Side::Downstream, e))
    }
}

/// `GET /api/streams`: the streams this node knows, with their owner, epoch and phase, and whether this
/// node receives them.
fn streams_json(mesh: &Mesh) -> Reply {
    let streams: serde_json::Map<String, serde_json::Value> = mesh
        .streams()
        .into_iter()
        .map(|(stream, s)| {
            let state = serde_json::json!({
                "origin": s.origin.as_str(),
                "epoch": s.epoch,
                "state": s.phase,
                "receiving": s.receiving,
                "reachable": s.reachable,
                "taken_down": mesh.taken_down(&stream),
            });
            (stream.to_string(), state)
        })
        .collect();
    let mut resp = text(StatusCode::OK, serde_json::to_string_pretty(&streams).unwrap_or_default());
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// The operator endpoints: the runtime link controls (`GET /admin/links`, `PUT /admin/links/{peer}` with an
/// [`Impairment`] as JSON), stream takedowns (`POST /admin/streams/{stream}/takedown` with the reason as
/// the body, `DELETE` of the same path to lift it) and the node's drain (`POST /admin/drain` to start it,
/// `DELETE /admin/drain` to end it, `GET /admin/drain` for its state and the streams still relayed).
struct Admin {
    token: String,
    table: Impairments,
    topology: Arc<Topology>,
    me: NodeId,
    mesh: Mesh,
}

impl Admin {
    async fn handle(&self, req: http::Request<Incoming>) -> Reply {
        use http_body_util::BodyExt;
        if let Some(refusal) = crate::http::admin_refusal(req.headers(), &self.token) {
            return refusal;
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        if let Some(rest) = path.strip_prefix("/admin/streams/") {
            return match crate::takedowns::request(req, rest).await {
                Ok(r) => {
                    tracing::warn!(node = %self.me, stream = %r.stream, active = r.active, reason = %r.reason, "operator takedown");
                    self.mesh.takedown(&r.stream, r.active, r.reason);
                    text(StatusCode::ACCEPTED, format!("stream {}: taken down at every node: {}", r.stream, r.active))
                }
                Err(reply) => reply,
            };
        }
        if path == "/admin/drain" {
            return match method {
                Method::GET | Method::POST | Method::DELETE => {
                    if method != Method::GET {
                        let draining = method == Method::POST;
                        tracing::warn!(node = %self.me, draining, "operator drain");
                        self.mesh.drain(draining);
                    }
                    let status = if method == Method::POST { StatusCode::ACCEPTED } else { StatusCode::OK };
                    let state = serde_json::json!({
                        "node": self.me.as_str(),
                        "draining": self.mesh.is_draining(),
                        "relayed": self.mesh.relayed(),
                    });
                    let mut resp = text(status, state.to_string());
                    resp.headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                    resp
                }
                m => refuse(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Side::Downstream,
                    format!("{m} /admin/drain: use GET, POST or DELETE"),
                ),
            };
        }
        match (method, path.strip_prefix("/admin/links")) {
            (Method::GET, Some("")) => {
                let links: serde_json::Map<String, serde_json::Value> = self
                    .topology
                    .neighbours(&self.me)
                    .filter_map(|(n, _)| {
                        let addr = n.mesh.socket_addr()?;
                        let imp = self.table.get(addr).unwrap_or_default();
                        Some((n.id.to_string(), serde_json::to_value(imp).ok()?))
                    })
                    .collect();
                let mut resp = text(StatusCode::OK, serde_json::Value::Object(links).to_string());
                resp.headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                resp
            }
            (Method::PUT, Some(rest)) if rest.starts_with('/') => {
                let Ok(peer) = NodeId::new(&rest[1..]) else {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        Side::Downstream,
                        format!("{:?} is not a node id", &rest[1..]),
                    );
                };
                let Some((spec, _)) = self.topology.neighbours(&self.me).find(|(n, _)| n.id == peer) else {
                    let cause = format!("{peer} is not a neighbour of {}", self.me);
                    return refuse(StatusCode::NOT_FOUND, Side::Downstream, cause);
                };
                let addrs = match spec.mesh.resolve().await {
                    Ok(a) => a,
                    Err(e) => {
                        let cause = format!("cannot resolve {}: {e}", spec.mesh);
                        return refuse(StatusCode::BAD_GATEWAY, Side::Upstream, cause);
                    }
                };
                let body = match http_body_util::Limited::new(req.into_body(), 4096).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => return refuse(StatusCode::BAD_REQUEST, Side::Downstream, format!("body not read: {e}")),
                };
                let imp: Impairment = match serde_json::from_slice(&body) {
                    Ok(i) => i,
                    Err(e) => return refuse(StatusCode::BAD_REQUEST, Side::Downstream, format!("bad impairment: {e}")),
                };
                if let Err(e) = imp.validate() {
                    return refuse(StatusCode::BAD_REQUEST, Side::Downstream, e);
                }
                for addr in addrs {
                    self.table.set(addr, imp);
                }
                tracing::info!(node = %self.me, %peer, ?imp, "link impairment changed");
                text(StatusCode::NO_CONTENT, "")
            }
            (m, _) => refuse(StatusCode::NOT_FOUND, Side::Downstream, format!("no admin endpoint {m} {path}")),
        }
    }
}
