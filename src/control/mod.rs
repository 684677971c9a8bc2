//! The control plane: `lightpath control`, one replica of it.
//!
//! Nodes connect over QUIC with mutual TLS from the mesh CA and send a [`Report`] of their links (RTT,
//! jitter, loss, up/down, from their probes) and the streams they carry. A driver task keeps the latest report
//! of every node, builds the measured link-state graph from them, computes each node's next hop and a
//! loop-free backup toward every origin with [`crate::routing`], and pushes a versioned [`Routes`] table to
//! every node whose table changed. The replica holds nothing that the reports do not give it: replicas are
//! interchangeable, and the same reports give the same tables. It serves a JSON operator API on its HTTP
//! address (`/api/nodes`, `/api/links`, `/api/routes`, `/api/streams`, and `/api/regions` and `/api/graph`
//! for maps), Prometheus text at `/metrics`, and the live [`dashboard`] at `/dashboard`, which follows the
//! same picture through server-sent events (`/api/events`).
//!
//! With an admin token, a replica also takes operators' stream takedowns
//! (`POST /admin/streams/{stream}/takedown`, `DELETE` to lift): it sends them to every node it has a session
//! with (each floods them on through the mesh), to every node that connects later, and keeps them in its
//! takedowns file when the config names one.
//!
//! The node side of this conversation is [`client`].

pub mod client;
pub mod dashboard;
mod plan;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::ca::Identity;
use crate::config::{AdminConfig, DashboardConfig, HttpConfig, QuicConfig};
use crate::http::{refuse, text, Handler, Reply, Side};
use crate::id::{NodeId, StreamName};
use crate::listen::Listeners;
use crate::quic::{read_frame, write_frame};
use crate::relay::Takedown;
use crate::topology::Topology;
use crate::wire::{Frame, Report, PROTOCOL_VERSION};

pub use plan::{Plan, PlanSettings};

/// How often the driver recomputes when reports changed.
const RECOMPUTE_EVERY: Duration = Duration::from_millis(100);
/// A node that has not reported for this long counts as gone.
const REPORT_STALE_AFTER: Duration = Duration::from_secs(3);

enum Event {
    Connected { node: NodeId, session: u64, frames: mpsc::UnboundedSender<Frame> },
    Disconnected { node: NodeId, session: u64 },
    Report { report: Report },
    Takedown { request: crate::takedowns::Request },
}

/// What a replica runs with beside its identity and topology: its operator endpoints, its limits and its
/// director.
#[derive(Debug, Default)]
pub struct ReplicaOptions {
    /// The operator endpoints and the takedowns file.
    pub admin: AdminConfig,
    /// The operator API's limits.
    pub http: HttpConfig,
    /// The QUIC endpoint's limits.
    pub quic: QuicConfig,
    /// The director beside the replica, with its bound sockets (none: no director).
    pub director: Option<crate::director::DirectorOptions>,
    /// The dashboard's event streams.
    pub dashboard: DashboardConfig,
}

/// Runs a control-plane replica until `shutdown` completes.
pub async fn run(
    id: NodeId,
    topology: Arc<Topology>,
    identity: Identity,
    listeners: Listeners,
    options: ReplicaOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let ReplicaOptions { admin, http, quic, director, dashboard } = options;
    crate::telemetry::metrics();
    crate::telemetry::record_certificate_expiry(id.as_str(), &identity);
    let takedowns = match &admin.takedowns_file {
        Some(file) => crate::takedowns::load(file)?,
        None => BTreeMap::new(),
    };
    let server = crate::quic::server_config(&identity, Arc::new(crate::quic::transport(quic.max_object_streams)))?;
    let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
    let endpoint = quinn::Endpoint::new(crate::quic::endpoint_config(&identity), Some(server), listeners.mesh, runtime)
        .context("starting the QUIC endpoint")?;
    tracing::info!(control = %id, mesh = %endpoint.local_addr()?, http = %listeners.http.local_addr()?, "control replica running");

    let view = Arc::new(RwLock::new(serde_json::json!({})));
    let (pictures, pictures_rx) = tokio::sync::watch::channel(bytes::Bytes::from_static(b"{}"));
    let (events, rx) = mpsc::unbounded_channel();
    let (reports_tx, reports_rx) = tokio::sync::watch::channel(crate::director::Reports::default());
    let span = tracing::info_span!("control", id = %id);
    let driver = Driver {
        topology: topology.clone(),
        plan: Plan::new(&topology, PlanSettings::default()),
        reports: BTreeMap::new(),
        sessions: HashMap::new(),
        view: view.clone(),
        pictures,
        dirty: true,
        takedowns,
        takedowns_file: admin.takedowns_file.clone(),
        published: director.is_some().then_some(reports_tx),
    };
    tokio::spawn(driver.run(rx).instrument(span.clone()));
    let handshakes = crate::quic::Handshakes::new(quic, id.as_str(), "node");
    let (stop_director, director_stopped) = tokio::sync::oneshot::channel::<()>();
    let director = director.map(|options| {
        let run = crate::director::run(id.clone(), topology.clone(), options, reports_rx, async {
            let _ = director_stopped.await;
        });
        tokio::spawn(run.instrument(span.clone()))
    });
    tokio::spawn(accept_loop(endpoint.clone(), handshakes, id.clone(), topology, events.clone()).instrument(span));
    let node = id.to_string();
    let api = Arc::new(Api {
        counts: crate::http::RequestCounts::new(id.as_str()),
        view,
        token: admin.token,
        events,
        dashboard: dashboard::EventStreams::new(pictures_rx, dashboard, id.as_str()),
        me: id,
    });
    crate::http::serve(listeners.http, api, &http, &node, 0, shutdown).await;
    endpoint.close(0u32.into(), b"control replica stopping");
    let _ = stop_director.send(());
    if let Some(director) = director {
        director.await.context("the director task failed")??;
    }
    Ok(())
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    handshakes: crate::quic::Handshakes,
    me: NodeId,
    topology: Arc<Topology>,
    events: mpsc::UnboundedSender<Event>,
) {
    let handshakes = Arc::new(handshakes);
    let mut sessions = 0u64;
    while let Some(incoming) = endpoint.accept().await {
        let Some((incoming, slot)) = handshakes.admit(incoming) else { continue };
        sessions += 1;
        let (me, topology, events, session_id) = (me.clone(), topology.clone(), events.clone(), sessions);
        let handshakes = handshakes.clone();
        tokio::spawn(
            async move {
                let remote = incoming.remote_address();
                let Some(conn) = handshakes.complete(incoming, slot).await else { return };
                let node = conn
                    .peer_identity()
                    .and_then(|i| i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
                    .and_then(|certs| crate::ca::peer_node_id(certs.first()?, topology.nodes.iter().map(|n| &n.id)));
                let Some(node) = node else {
                    handshakes.failed(remote, "presented a certificate that names no node of the topology");
                    conn.close(1u32.into(), b"not a node of this mesh");
                    return;
                };
                if let Err(e) = session(&me, node.clone(), session_id, conn, &events).await {
                    tracing::info!(%node, error = %format!("{e:#}"), "node session ended");
                }
                let _ = events.send(Event::Disconnected { node, session: session_id });
            }
            .in_current_span(),
        );
    }
}

async fn session(
    me: &NodeId,
    node: NodeId,
    session: u64,
    conn: quinn::Connection,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(5), conn.accept_bi()).await??;
    let mut buf = BytesMut::new();
    match read_frame(&mut recv, &mut buf).await? {
        Some(Frame::Hello { node: n, protocol: PROTOCOL_VERSION }) if n == node => {}
        other => bail!("expected hello from {node}, got {other:?}"),
    }
    write_frame(&mut send, &Frame::Hello { node: me.clone(), protocol: PROTOCOL_VERSION }).await?;
    tracing::info!(%node, remote = %conn.remote_address(), "node connected");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _ = events.send(Event::Connected { node: node.clone(), session, frames: tx });
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut send, &frame).await.is_err() {
                break;
            }
        }
    });
    let result = async {
        loop {
            match read_frame(&mut recv, &mut buf).await? {
                Some(Frame::Report(report)) if report.node == node => {
                    let _ = events.send(Event::Report { report });
                }
                Some(other) => bail!("unexpected frame from {node}: {other:?}"),
                None => return Ok(()),
            }
        }
    }
    .await;
    writer.abort();
    result
}

struct Driver {
    topology: Arc<Topology>,
    plan: Plan,
    reports: BTreeMap<NodeId, (Report, Instant)>,
    sessions: HashMap<NodeId, (u64, mpsc::UnboundedSender<Frame>)>,
    view: Arc<RwLock<serde_json::Value>>,
    /// The view as the dashboard's event streams send it (compact JSON), published when it changes.
    pictures: tokio::sync::watch::Sender<bytes::Bytes>,
    dirty: bool,
    /// Operators' takedowns, lifted ones included.
    takedowns: BTreeMap<StreamName, Takedown>,
    takedowns_file: Option<std::path::PathBuf>,
    /// Where the director beside this replica reads the reports (none without a director).
    published: Option<tokio::sync::watch::Sender<crate::director::Reports>>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(RECOMPUTE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    None => return,
                    Some(Event::Connected { node, session, frames }) => {
                        // A (re)connected node gets its current table at once.
                        if let Some(routes) = self.plan.routes(&node) {
                            let _ = frames.send(Frame::Routes(routes.clone()));
                        }
                        for (stream, t) in &self.takedowns {
                            let _ = frames.send(takedown_frame(stream, t));
                        }
                        self.sessions.insert(node, (session, frames));
                        self.dirty = true;
                    }
                    Some(Event::Disconnected { node, session }) => {
                        if self.sessions.get(&node).is_some_and(|(s, _)| *s == session) {
                            self.sessions.remove(&node);
                            self.dirty = true;
                        }
                    }
                    Some(Event::Report { report }) => {
                        self.learn_takedowns(&report);
                        let changed = self.reports.get(&report.node).is_none_or(|(old, _)| old != &report);
                        self.dirty |= changed;
                        let first = !self.reports.contains_key(&report.node);
                        self.reports.insert(report.node.clone(), (report, Instant::now()));
                        // A node's first report makes it eligible at once; later ones wait for the tick.
                        if first || changed {
                            self.publish();
                        }
                    }
                    Some(Event::Takedown { request }) => self.takedown(request),
                },
                _ = tick.tick() => self.recompute(),
            }
        }
    }

    /// Takedowns issued elsewhere (at a node, or another replica) that a node reports: kept as if issued
    /// here, so that this replica shows them and hands them to nodes that connect later.
    fn learn_takedowns(&mut self, report: &Report) {
        let mut learned = false;
        for (stream, t) in &report.takedowns {
            if self.takedowns.get(stream).is_none_or(|known| known.version < t.version) {
                self.takedowns.insert(stream.clone(), t.clone());
                learned = true;
            }
        }
        if learned {
            self.save_takedowns();
            self.dirty = true;
        }
    }

    fn save_takedowns(&self) {
        if let Some(file) = &self.takedowns_file {
            if let Err(e) = crate::takedowns::save(file, &self.takedowns) {
                tracing::error!(file = %file.display(), error = %format!("{e:#}"), "could not keep the takedowns");
            }
        }
    }

    /// An operator's takedown or lift: kept, saved, and sent to every node in session.
    fn takedown(&mut self, request: crate::takedowns::Request) {
        let crate::takedowns::Request { stream, active, reason } = request;
        let known = self.takedowns.get(&stream).map_or(0, |t| t.version);
        let takedown = Takedown { version: crate::clock::unix_ms().max(known + 1), active, reason };
        let frame = takedown_frame(&stream, &takedown);
        self.takedowns.insert(stream, takedown);
        self.save_takedowns();
        for (_, frames) in self.sessions.values() {
            let _ = frames.send(frame.clone());
        }
        self.dirty = true;
    }

    /// Hands the reports to the director, when there is one.
    fn publish(&self) {
        if let Some(published) = &self.published {
            published.send_replace(Arc::new(self.reports.clone()));
        }
    }

    fn recompute(&mut self) {
        let now = Instant::now();
        let stale = self.reports.values().any(|(_, at)| now.duration_since(*at) > REPORT_STALE_AFTER);
        // Reports move only on a clear change, so a switch the damper holds back must be planned again
        // without one.
        if !self.dirty && !stale && !self.plan.is_holding() {
            return;
        }
        self.dirty = false;
        let before = self.reports.len();
        self.reports.retain(|node, (_, at)| {
            let keep = now.duration_since(*at) <= REPORT_STALE_AFTER;
            if !keep {
                tracing::warn!(%node, "node stopped reporting; its links leave the graph");
            }
            keep
        });
        if self.reports.len() != before {
            self.publish();
        }
        let live: BTreeMap<NodeId, Report> = self.reports.iter().map(|(n, (r, _))| (n.clone(), r.clone())).collect();
        let changed = self.plan.update(&live, crate::clock::unix_ms());
        for node in changed {
            if let (Some((_, frames)), Some(routes)) = (self.sessions.get(&node), self.plan.routes(&node)) {
                tracing::debug!(%node, version = routes.version, "pushing routes");
                let _ = frames.send(Frame::Routes(routes.clone()));
            }
        }
        let view = self.plan.view(&self.topology, &live, &self.sessions.keys().cloned().collect(), &self.takedowns);
        let picture = bytes::Bytes::from(serde_json::to_vec(&view).unwrap_or_default());
        self.pictures.send_if_modified(|old| {
            let changed = *old != picture;
            if changed {
                *old = picture;
            }
            changed
        });
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

fn takedown_frame(stream: &StreamName, t: &Takedown) -> Frame {
    Frame::Takedown { stream: stream.clone(), version: t.version, active: t.active, reason: t.reason.clone() }
}

/// The operator API.
struct Api {
    counts: crate::http::RequestCounts,
    view: Arc<RwLock<serde_json::Value>>,
    /// The admin token, if the admin endpoints are on.
    token: Option<String>,
    events: mpsc::UnboundedSender<Event>,
    /// The dashboard's live event streams.
    dashboard: dashboard::EventStreams,
    me: NodeId,
}

impl Handler for Api {
    async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Reply {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        if let Some(rest) = path.strip_prefix("/admin/streams/") {
            let reply = self.takedown(req, rest).await;
            self.counts.count(&method, reply.status());
            return reply;
        }
        let path = path.as_str();
        let reply = match (req.method(), path) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (&Method::GET, "/metrics") => {
                crate::telemetry::record_memory(self.me.as_str());
                text(StatusCode::OK, crate::telemetry::metrics().render())
            }
            (&Method::GET, "/api/events") => {
                self.dashboard.open(req.extensions().get::<crate::http::Client>().map(|c| c.0))
            }
            (&Method::GET, p) if p == "/dashboard" || p.starts_with("/dashboard/") => dashboard::asset(p)
                .unwrap_or_else(|| {
                    text(StatusCode::NOT_FOUND, format!("nothing at {p}; the dashboard is at /dashboard"))
                }),
            (&Method::GET, p) if p.starts_with("/api/") => {
                let key = &p["/api/".len()..];
                let view = self.view.read().unwrap_or_else(|e| e.into_inner());
                match view.get(key) {
                    Some(v) => json(v),
                    None => text(
                        StatusCode::NOT_FOUND,
                        format!("no API {p}; try /api/nodes, /api/links, /api/routes, /api/streams, /api/events"),
                    ),
                }
            }
            (_, p) => text(StatusCode::NOT_FOUND, format!("nothing at {p}")),
        };
        self.counts.count(req.method(), reply.status());
        reply
    }
}

impl Api {
    async fn takedown(&self, req: http::Request<Incoming>, rest: &str) -> Reply {
        let Some(token) = &self.token else {
            return refuse(
                StatusCode::NOT_FOUND,
                Side::Downstream,
                "the admin API is off (no admin.token in the config)",
            );
        };
        if let Some(refusal) = crate::http::admin_refusal(req.headers(), token) {
            return refusal;
        }
        match crate::takedowns::request(req, rest).await {
            Ok(request) => {
                tracing::warn!(control = %self.me, stream = %request.stream, active = request.active, reason = %request.reason, "operator takedown");
                let body = format!("stream {}: taken down at every node: {}", request.stream, request.active);
                let _ = self.events.send(Event::Takedown { request });
                text(StatusCode::ACCEPTED, body)
            }
            Err(reply) => reply,
        }
    }
}

fn json(v: &serde_json::Value) -> Reply {
    let mut resp = text(StatusCode::OK, serde_json::to_string_pretty(v).unwrap_or_default());
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
