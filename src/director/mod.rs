//! The director: sends each viewer to the best edge, by an HTTP redirect or a DNS answer.
//!
//! It runs beside a control replica ([`crate::control::run`] starts it when the replica's config has a
//! `[director]` with `listen` or `dns_listen`), because the replica already holds what steering needs:
//! the latest report of every node (which edges are alive, how many viewers each serves, which streams each
//! receives, the RTTs the mesh measured between regions). To that the director adds its own health checks:
//! it asks each edge's `/healthz` every `director.health_interval_ms`, and an edge that fails one is not
//! chosen until it passes again, so a dead edge stops getting viewers within about that interval (the
//! control plane alone would take its report timeout, three seconds).
//!
//! The choice itself is [`crate::steering::choose`], pure and shared by both front doors:
//! - HTTP ([`Front`]): `GET /live/{stream}/{file}` answers `302 Found` with `Location` on the chosen edge,
//!   same path, same query (so a signed URL's token travels along); no edge up and below capacity is 503
//!   with `Retry-After`. It is served by the shared HTTP server ([`crate::http::serve`]) with the replica's
//!   `[http]` limits.
//! - DNS ([`dns`]): A/AAAA answers for `director.dns_name` with the chosen edge's address, judged by the
//!   query's EDNS Client Subnet when it has one.
//!
//! The viewer's region is the longest coverage zone holding its address ([`crate::steering::zones`]), else
//! `director.region`.

pub mod dns;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http::{header, HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use tokio::sync::{mpsc, watch};

use crate::config::{DirectorConfig, HttpConfig};
use crate::http::{live_path, refuse, text, Client, Handler, Reply, RequestCounts, Side};
use crate::id::{NodeId, StreamName};
use crate::steering::zones::CoverageZones;
use crate::steering::{choose, EdgeState, RegionDistances};
use crate::topology::{Address, Role, Topology};
use crate::wire::Report;

/// The latest report of every node the replica hears from, with when it came.
pub type Reports = Arc<BTreeMap<NodeId, (Report, Instant)>>;

/// How long a viewer refused for want of an edge is told to wait.
const NO_EDGE_RETRY: Duration = Duration::from_secs(2);

/// What a director runs with: its config and its bound sockets (either may be absent).
#[derive(Debug)]
pub struct DirectorOptions {
    pub config: DirectorConfig,
    /// The HTTP director's listener (`director.listen`).
    pub http: Option<tokio::net::TcpListener>,
    /// The DNS server's socket (`director.dns_listen`).
    pub dns: Option<tokio::net::UdpSocket>,
    /// The HTTP listener's limits.
    pub limits: HttpConfig,
}

impl DirectorOptions {
    /// Binds the addresses `config` names.
    pub async fn bind(config: DirectorConfig, limits: HttpConfig) -> Result<Self> {
        let http = match config.listen {
            Some(addr) => {
                Some(crate::listen::bind_http(addr).with_context(|| format!("binding director.listen {addr}"))?)
            }
            None => None,
        };
        let dns = match config.dns_listen {
            Some(addr) => Some(
                tokio::net::UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("binding director.dns_listen {addr}"))?,
            ),
            None => None,
        };
        Ok(Self { config, http, dns, limits })
    }
}

/// Why a coverage-zone file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ZonesError {
    /// The file could not be read.
    #[error("cannot read {file}: {error}")]
    Read {
        file: String,
        #[source]
        error: std::io::Error,
    },
    /// Lines of it are wrong.
    #[error("{file}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Lines { file: String, errors: Vec<crate::steering::zones::ZoneError> },
}

/// Reads a coverage-zone file, its regions checked against the topology.
pub fn load_zones(file: &Path, topology: &Topology) -> Result<CoverageZones, ZonesError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|error| ZonesError::Read { file: name.clone(), error })?;
    CoverageZones::parse(&text, |r| topology.region(r).is_some())
        .map_err(|errors| ZonesError::Lines { file: name, errors })
}

/// An edge as the director last saw it.
#[derive(Debug, Clone)]
struct FleetEdge {
    state: EdgeState,
    http: Address,
    /// The streams it receives (or originates).
    streams: HashSet<StreamName>,
    /// Whether its last health check passed, and whether the control plane has a fresh report from it.
    healthy: bool,
    reported: bool,
    /// Whether its report says an operator is draining it.
    draining: bool,
}

/// Every edge and the distances between regions, rebuilt whenever a report or a health check changes.
#[derive(Debug, Clone, Default)]
struct Fleet {
    edges: Vec<FleetEdge>,
    distances: RegionDistances,
}

/// The director's answer for one viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// The chosen edge and its HTTP address; `None` when no edge is up and below capacity.
    pub edge: Option<(NodeId, Address)>,
    /// The leading bits of the viewer's address the choice depended on (a DNS answer's ECS scope): the
    /// coverage zone's length when one held it, 0 when it was judged by `director.region` (any address of
    /// the family gets the same answer), unless zones inside the query's subnet make the answer narrower.
    pub scope: u8,
}

/// What both front doors share: the zones, the fleet, and the choice.
pub struct Steering {
    zones: CoverageZones,
    home: String,
    fleet: RwLock<Arc<Fleet>>,
}

impl Steering {
    /// Steering by `zones`, with viewers outside them taken to be in `home`; no edge until [`Self::refresh`].
    pub fn new(zones: CoverageZones, home: String) -> Self {
        Self { zones, home, fleet: RwLock::new(Arc::new(Fleet::default())) }
    }

    /// Takes in the fleet as the replica's `reports` and the health checks (`healthy`, by edge) show it.
    pub fn refresh(
        &self,
        topology: &Topology,
        config: &DirectorConfig,
        reports: &Reports,
        healthy: &HashMap<NodeId, bool>,
    ) {
        let fleet = fleet(topology, config, reports, healthy);
        *self.fleet.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fleet);
    }

    /// The edge for a viewer at `client`, of which the first `known_bits` are known (all of them for an
    /// HTTP request; a DNS query's source prefix), asking for `stream`.
    pub fn pick(&self, client: IpAddr, known_bits: u8, stream: Option<&StreamName>) -> Pick {
        let zone = self.zones.lookup_within(client, known_bits);
        let region = zone.map_or(self.home.as_str(), |z| z.region);
        let known = crate::steering::zones::Network::containing(client, known_bits);
        let inside = self.zones.longest_inside(known);
        let scope = match zone {
            Some(z) => inside.unwrap_or(z.network.len).max(z.network.len),
            None => inside.unwrap_or(0),
        };
        let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner()).clone();
        let states: Vec<EdgeState> = fleet
            .edges
            .iter()
            .map(|e| EdgeState { has_stream: stream.is_some_and(|s| e.streams.contains(s)), ..e.state.clone() })
            .collect();
        let edge = choose(region, &states, &fleet.distances).and_then(|chosen| {
            let e = fleet.edges.iter().find(|e| e.state.node == chosen.node)?;
            Some((e.state.node.clone(), e.http.clone()))
        });
        Pick { edge, scope }
    }

    fn view(&self) -> serde_json::Value {
        let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner()).clone();
        let edges: serde_json::Map<String, serde_json::Value> = fleet
            .edges
            .iter()
            .map(|e| {
                let mut streams: Vec<&str> = e.streams.iter().map(|s| s.as_str()).collect();
                streams.sort_unstable();
                let v = serde_json::json!({
                    "region": e.state.region,
                    "http": e.http.to_string(),
                    "up": e.state.up,
                    "healthy": e.healthy,
                    "reported": e.reported,
                    "draining": e.draining,
                    "viewers": e.state.viewers,
                    "capacity": e.state.capacity,
                    "streams": streams,
                });
                (e.state.node.to_string(), v)
            })
            .collect();
        serde_json::json!({ "region": self.home, "zones": self.zones.len(), "edges": edges })
    }
}

/// Runs the director until `shutdown` completes: the health checks, the fleet's upkeep from the replica's
/// `reports`, and whichever front doors `options` has sockets for.
pub async fn run(
    me: NodeId,
    topology: Arc<Topology>,
    options: DirectorOptions,
    reports: watch::Receiver<Reports>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let DirectorOptions { config, http, dns, limits } = options;
    let zones = match &config.coverage_zones {
        Some(file) => load_zones(file, &topology)?,
        None => CoverageZones::default(),
    };
    let home = config.region.clone().context("director.region is required")?;
    let steering = Arc::new(Steering::new(zones, home));
    let (health_tx, health_rx) = mpsc::channel(64);
    let edges: Vec<_> = topology.nodes.iter().filter(|n| n.has_role(Role::Edge)).cloned().collect();
    let mut tasks = Vec::new();
    for edge in &edges {
        tasks.push(tokio::spawn(health_checks(
            edge.id.clone(),
            edge.http.clone(),
            config.health_interval(),
            config.health_timeout(),
            health_tx.clone(),
        )));
    }
    tasks.push(tokio::spawn(keep_fleet(steering.clone(), topology.clone(), config.clone(), reports, health_rx)));
    if let Some(socket) = dns {
        let name = config.dns_name.clone().context("director.dns_name is required with director.dns_listen")?;
        tracing::info!(director = %me, dns = %socket.local_addr()?, %name, "DNS director running");
        tasks.push(tokio::spawn(dns::serve(socket, name, config.dns_ttl_s, steering.clone(), me.clone())));
    }
    match http {
        Some(listener) => {
            tracing::info!(director = %me, http = %listener.local_addr()?, "HTTP director running");
            let front = Arc::new(Front {
                steering,
                scheme: config.edge_scheme.as_str(),
                counts: RequestCounts::new(me.as_str()),
                me: me.clone(),
            });
            crate::http::serve(listener, front, &limits, me.as_str(), 0, shutdown).await;
        }
        None => shutdown.await,
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Checks one edge's health for as long as the director runs, telling `results` each time it changes.
async fn health_checks(
    node: NodeId,
    http: Address,
    every: Duration,
    timeout: Duration,
    results: mpsc::Sender<(NodeId, bool)>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tick.tick().await;
        let healthy = tokio::time::timeout(timeout, check(&http)).await;
        let healthy = match healthy {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        if last != Some(healthy.is_ok()) {
            match &healthy {
                Ok(()) => tracing::info!(edge = %node, "director: edge passes its health check"),
                Err(reason) => tracing::warn!(edge = %node, %reason, "director: edge fails its health check"),
            }
            last = Some(healthy.is_ok());
            if results.send((node.clone(), healthy.is_ok())).await.is_err() {
                return;
            }
        }
    }
}

/// One `GET /healthz` on a fresh connection: a dead process refuses it at once.
async fn check(http: &Address) -> Result<()> {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    let addr = *http.resolve().await?.first().context("no address")?;
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req =
        http::Request::get("/healthz").header(header::HOST, http.to_string()).body(Empty::<bytes::Bytes>::new())?;
    let status = sender.send_request(req).await?.status();
    anyhow::ensure!(status == StatusCode::OK, "/healthz answered {status}");
    Ok(())
}

/// Rebuilds the fleet whenever the replica's reports or an edge's health change.
async fn keep_fleet(
    steering: Arc<Steering>,
    topology: Arc<Topology>,
    config: DirectorConfig,
    mut reports: watch::Receiver<Reports>,
    mut health: mpsc::Receiver<(NodeId, bool)>,
) {
    let mut healthy: HashMap<NodeId, bool> = HashMap::new();
    loop {
        let latest = reports.borrow_and_update().clone();
        steering.refresh(&topology, &config, &latest, &healthy);
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return },
            result = health.recv() => match result {
                Some((node, ok)) => { healthy.insert(node, ok); }
                None => return,
            },
        }
    }
}

/// The fleet as the reports and the health checks show it.
fn fleet(topology: &Topology, config: &DirectorConfig, reports: &Reports, healthy: &HashMap<NodeId, bool>) -> Fleet {
    let mut distances = RegionDistances::new(topology.regions.iter().map(|r| (r.name.as_str(), r.lat, r.lon)));
    let region_of: HashMap<&NodeId, &str> = topology.nodes.iter().map(|n| (&n.id, n.region.as_str())).collect();
    for (node, (report, _)) in reports.iter() {
        let Some(a) = region_of.get(node) else { continue };
        for link in report.links.iter().filter(|l| l.up && l.rtt_us > 0) {
            if let Some(b) = region_of.get(&link.peer) {
                distances.measured(a, b, link.rtt_us as f64 / 1000.0);
            }
        }
    }
    let edges = topology
        .nodes
        .iter()
        .filter(|n| n.has_role(Role::Edge))
        .map(|n| {
            let report = reports.get(&n.id).map(|(r, _)| r);
            let is_healthy = healthy.get(&n.id).copied().unwrap_or(false);
            let viewers = report.map_or(0, |r| r.streams.iter().map(|s| s.viewers).sum());
            let streams = report
                .map(|r| {
                    r.streams
                        .iter()
                        .filter(|s| s.upstream.is_some() || s.origin == n.id)
                        .map(|s| s.stream.clone())
                        .collect()
                })
                .unwrap_or_default();
            FleetEdge {
                state: EdgeState {
                    node: n.id.clone(),
                    region: n.region.clone(),
                    // A draining edge takes no new viewer: the director sends them elsewhere.
                    up: is_healthy && report.is_some_and(|r| !r.draining),
                    viewers,
                    capacity: config.capacity_of(&n.id),
                    has_stream: false,
                },
                http: n.http.clone(),
                streams,
                healthy: is_healthy,
                reported: report.is_some(),
                draining: report.is_some_and(|r| r.draining),
            }
        })
        .collect();
    Fleet { edges, distances }
}

/// The HTTP director.
struct Front {
    steering: Arc<Steering>,
    scheme: &'static str,
    counts: RequestCounts,
    me: NodeId,
}

impl Handler for Front {
    async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let mut reply = self.route(&req);
        crate::http::cors::allow(&mut reply);
        self.counts.count(&method, reply.status());
        if let Some(refusal) = reply.extensions().get::<crate::http::Refusal>() {
            let path = req.uri().path();
            let client = req.extensions().get::<Client>().map(|c| c.0);
            tracing::info!(director = %self.me, %method, %path, ?client, status = reply.status().as_u16(), side = %refusal.side, reason = %refusal.cause, "request refused");
        }
        reply
    }
}

impl Front {
    fn route(&self, req: &http::Request<Incoming>) -> Reply {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok"),
            (&Method::GET, "/metrics") => return text(StatusCode::OK, crate::telemetry::metrics().render()),
            (&Method::GET, "/api/edges") => {
                let mut reply = text(StatusCode::OK, self.steering.view().to_string());
                reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return reply;
            }
            (&Method::OPTIONS, _) => return crate::http::cors::preflight(),
            (&Method::GET | &Method::HEAD, _) => {}
            (m, _) => {
                return refuse(StatusCode::METHOD_NOT_ALLOWED, Side::Downstream, format!("{m} is not served here"))
            }
        }
        let stream = match live_path(path) {
            Ok((stream, _)) => stream,
            Err(e) => return refuse(e.status(), Side::Downstream, e),
        };
        let Some(client) = req.extensions().get::<Client>().map(|c| c.0.ip()) else {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, Side::Internal, "no client address");
        };
        let pick = self.steering.pick(client, 128, Some(&stream));
        let Some((edge, http)) = pick.edge else {
            let mut reply = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                Side::Upstream,
                format!("no edge is up and below its capacity for stream {stream}; retry shortly"),
            );
            reply.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(NO_EDGE_RETRY.as_secs()));
            return reply;
        };
        let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        let location = format!("{}://{http}{path}{query}", self.scheme);
        let Ok(location) = HeaderValue::from_str(&location) else {
            return refuse(StatusCode::BAD_REQUEST, Side::Downstream, "the request's query cannot be sent on");
        };
        metrics::counter!("lightpath_director_redirects_total", "director" => self.me.to_string(), "edge" => edge.to_string())
            .increment(1);
        let mut reply = text(StatusCode::FOUND, format!("see {}", location.to_str().unwrap_or_default()));
        reply.headers_mut().insert(header::LOCATION, location);
        // Each viewer's answer is its own: no cache may hand it to another.
        reply.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo mesh's edges (edge-us, edge-ap), both healthy and reporting; `draining` names those an
    /// operator drains.
    fn steering_with(draining: &[&str]) -> Steering {
        let topology =
            Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/demo.toml")).expect("demo topology");
        let now = Instant::now();
        let edges = ["edge-us", "edge-ap"].map(|e| NodeId::new(e).unwrap());
        let reports: BTreeMap<NodeId, (Report, Instant)> = edges
            .iter()
            .map(|id| {
                let report = Report {
                    node: id.clone(),
                    links: Vec::new(),
                    streams: Vec::new(),
                    takedowns: Vec::new(),
                    draining: draining.contains(&id.as_str()),
                };
                (id.clone(), (report, now))
            })
            .collect();
        let healthy: HashMap<NodeId, bool> = edges.iter().map(|id| (id.clone(), true)).collect();
        let config = DirectorConfig { region: Some("us-east".into()), ..DirectorConfig::default() };
        let steering = Steering::new(CoverageZones::default(), "us-east".into());
        steering.refresh(&topology, &config, &Arc::new(reports), &healthy);
        steering
    }

    fn pick(steering: &Steering) -> Option<String> {
        steering.pick("192.0.2.1".parse().unwrap(), 32, None).edge.map(|(id, _)| id.to_string())
    }

    #[test]
    fn a_draining_edge_gets_no_new_viewer() {
        assert_eq!(pick(&steering_with(&[])).as_deref(), Some("edge-us"), "the nearest edge");
        assert_eq!(pick(&steering_with(&["edge-us"])).as_deref(), Some("edge-ap"), "the next one while it drains");
        assert_eq!(pick(&steering_with(&["edge-us", "edge-ap"])), None, "no edge takes viewers");
        let view = steering_with(&["edge-us"]).view();
        assert_eq!(view["edges"]["edge-us"]["draining"], true, "{view}");
    }
}
