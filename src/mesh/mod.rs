//! The mesh: a node's QUIC endpoint, its neighbours, the stream registry and the subscription trees.
//!
//! One driver task owns the node's mesh state (peers, registry, routes, subscriptions) and takes
//! [`Event`]s from the connection sessions ([`peer`]) and from the node's HTTP side (ingest at an origin,
//! viewer interest at an edge). Streams form trees by pull with aggregation: a node that wants a stream (a
//! viewer at an edge, or a downstream neighbour) subscribes once to its next hop toward the stream's
//! origin, and fans every object it receives out to each downstream subscriber, one QUIC unidirectional
//! stream per object. Relays forward cut-through: once an object's header has arrived, the session that
//! receives it asks the driver whether the object is new and who is subscribed, and passes each chunk on as
//! it comes; a copy whose upstream fails is reset, never finished. Every hop keeps the live window in the
//! [`Cache`] (an object enters it once complete), and a new subscriber gets that window at once.
//!
//! Routes come from [`crate::routing`] over the topology's configured latencies, with this node's own links
//! marked down while their connection is down. Measured latencies and the control plane replace the
//! configured figures in a later stage without changing this shape.

pub mod peer;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::ca::Identity;
use crate::cache::{Cache, Object};
use crate::id::{NodeId, ObjectName, StreamName};
use crate::routing::{Graph, LinkMetrics, ProbeConfig, RouteTable};
use crate::topology::{Address, Topology};
use crate::wire::{Frame, LinkReport, ObjectHeader, Report, Routes, StreamReport};

/// How long the old upstream keeps feeding a stream after a route change moved it (make-before-break).
const RELEASE_AFTER: Duration = Duration::from_secs(2);

/// Whether a stream can be served from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The origin that announced the stream.
    pub origin: NodeId,
    /// This node is the origin, or its next hop toward the origin is connected.
    pub reachable: bool,
    /// This node already receives the stream (it is the origin or holds an upstream subscription).
    pub receiving: bool,
}

/// What the driver hears about.
pub(crate) enum Event {
    PeerUp {
        peer: NodeId,
        conn: quinn::Connection,
        control: mpsc::UnboundedSender<Frame>,
        /// Whether the link carries a stream: its probes run fast.
        active: Arc<AtomicBool>,
    },
    PeerDown {
        peer: NodeId,
        stable_id: usize,
    },
    Control {
        peer: NodeId,
        frame: Frame,
    },
    /// An object entered this node's cache: from a peer, or from local ingest (`from: None`).
    Object {
        from: Option<NodeId>,
        object: Arc<Object>,
    },
    /// A peer started sending an object (its header arrived): is it new, and who gets it as it arrives?
    Incoming {
        from: NodeId,
        header: ObjectHeader,
        reply: oneshot::Sender<Forwarding>,
    },
    /// An object that was forwarded while it arrived has ended: complete, or cut short (its downstream
    /// copies were reset).
    Passed {
        from: NodeId,
        key: ObjectKey,
        complete: bool,
    },
    /// A local viewer wants the stream.
    Want {
        stream: StreamName,
    },
    /// A link's probes: whether it answers, and what they measured.
    Link {
        peer: NodeId,
        up: bool,
        metrics: Option<LinkMetrics>,
    },
    /// A route table from the control plane.
    Routes(Routes),
    /// The make-before-break grace period of an old upstream is over.
    Release {
        stream: StreamName,
        peer: NodeId,
    },
}

/// One version of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjectKey {
    stream: StreamName,
    name: ObjectName,
    version: u64,
}

impl ObjectKey {
    pub(crate) fn of(header: &ObjectHeader) -> Self {
        Self { stream: header.stream.clone(), name: header.name.clone(), version: header.version }
    }
}

/// The driver's answer to [`Event::Incoming`].
pub(crate) enum Forwarding {
    /// This version or a newer one is held already, or on its way from another peer: store the copy if it
    /// completes first, forward nothing while it arrives.
    Duplicate,
    /// New: forward it to these downstream subscribers (maybe none) as it arrives.
    To(Vec<(NodeId, quinn::Connection)>),
}

/// An object being forwarded while it arrives.
struct InFlight {
    /// The peer it comes from.
    from: NodeId,
    /// The downstream subscribers that get it as it arrives.
    fed: BTreeSet<NodeId>,
}

/// State the sessions and the HTTP side share with the driver.
pub(crate) struct Shared {
    pub me: NodeId,
    pub endpoint: quinn::Endpoint,
    pub cache: Arc<Cache>,
    /// Neighbours by id, with their mesh address.
    pub neighbours: HashMap<NodeId, Address>,
    events: mpsc::UnboundedSender<Event>,
    streams: RwLock<HashMap<StreamName, StreamState>>,
    /// How every link is probed (validated).
    pub probes: ProbeConfig,
}

impl Shared {
    pub(crate) fn event(&self, event: Event) {
        // The driver lives as long as the node; a send after shutdown has nobody to tell.
        let _ = self.events.send(event);
    }
}

/// A running mesh node's handle, for the HTTP side and the control-plane client.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
    reports: watch::Receiver<Report>,
}

impl Mesh {
    /// Starts the endpoint on `socket`, the driver, the accept loop and a dial loop per neighbour that this
    /// node dials (the one with the smaller id dials). [`Mesh::close`] ends the connections. The mesh does
    /// not talk to the control plane itself: whoever runs the node connects [`Mesh::reports`] and
    /// [`Mesh::routes`] to it.
    pub fn start(
        me: NodeId,
        topology: &Topology,
        identity: &Identity,
        socket: std::net::UdpSocket,
        cache: Arc<Cache>,
        impairments: Option<crate::netem::Impairments>,
        probes: ProbeConfig,
    ) -> Result<Self> {
        let probes = probes.validate().context("probe intervals")?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)
                .context("TLS server config unusable for QUIC")?,
        ));
        server.transport_config(Arc::new(crate::quic::transport()));
        let mut client = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?)
                .context("TLS client config unusable for QUIC")?,
        ));
        client.transport_config(Arc::new(crate::quic::transport()));
        let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
        let mut endpoint = match impairments {
            // Emulated WAN links: every packet goes through the impairment table first.
            Some(table) => quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                Some(server),
                crate::netem::impaired_socket(socket, table).context("wrapping the mesh socket")?,
                runtime,
            ),
            None => quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime),
        }
        .context("starting the QUIC endpoint")?;
        endpoint.set_default_client_config(client);

        let neighbours: HashMap<NodeId, Address> =
            topology.neighbours(&me).map(|(n, _)| (n.id.clone(), n.mesh.clone())).collect();
        let (events, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            me: me.clone(),
            endpoint,
            cache,
            neighbours: neighbours.clone(),
            events,
            streams: RwLock::new(HashMap::new()),
            probes,
        });
        // Every log line of this node's mesh tasks names the node (the demo runs several in one process).
        let span = tracing::info_span!("mesh", node = %me);
        let (reports, report_rx) = watch::channel(Report { node: me.clone(), links: Vec::new(), streams: Vec::new() });
        let driver = Driver::new(shared.clone(), topology, reports);
        tokio::spawn(driver.run(rx).instrument(span.clone()));
        tokio::spawn(peer::accept_loop(shared.clone()).instrument(span.clone()));
        for (peer, addr) in neighbours {
            if me < peer {
                tokio::spawn(peer::dial_loop(shared.clone(), peer, addr).instrument(span.clone()));
            }
        }
        Ok(Self { shared, reports: report_rx })
    }

    /// The node's id.
    pub fn me(&self) -> &NodeId {
        &self.shared.me
    }

    /// The node's cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.shared.cache
    }

    /// The endpoint's local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.shared.endpoint.local_addr()?)
    }

    /// What this node knows of a stream; `None` when no origin announced it.
    pub fn stream(&self, stream: &StreamName) -> Option<StreamState> {
        self.shared.streams.read().unwrap_or_else(|e| e.into_inner()).get(stream).cloned()
    }

    /// Whether `stream` is (reachable, received here), without copying its state; `None` when no origin
    /// announced it.
    pub fn reach(&self, stream: &StreamName) -> Option<(bool, bool)> {
        let streams = self.shared.streams.read().unwrap_or_else(|e| e.into_inner());
        streams.get(stream).map(|s| (s.reachable, s.receiving))
    }

    /// A local viewer wants `stream`: subscribe toward its origin unless already receiving it.
    pub fn want(&self, stream: &StreamName) {
        self.shared.event(Event::Want { stream: stream.clone() });
    }

    /// An object ingested here (this node is its origin): it is in the cache already; announce the stream
    /// if new and send the object down the tree.
    pub fn ingested(&self, object: Arc<Object>) {
        self.shared.event(Event::Object { from: None, object });
    }

    /// The node's QUIC endpoint; the control-plane client dials the replicas from it, so that the link
    /// impairments and partitions of the mesh apply to it too.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.shared.endpoint
    }

    /// This node's link measurements and streams, for the control plane: the latest [`Report`], which
    /// changes whenever they do.
    pub fn reports(&self) -> watch::Receiver<Report> {
        self.reports.clone()
    }

    /// A route table from the control plane; an older version than the one in force is ignored.
    pub fn routes(&self, routes: Routes) {
        self.shared.event(Event::Routes(routes));
    }

    /// Closes every mesh connection and the endpoint.
    pub fn close(&self) {
        self.shared.endpoint.close(0u32.into(), b"node stopping");
    }
}

struct Peer {
    conn: quinn::Connection,
    control: mpsc::UnboundedSender<Frame>,
    active: Arc<AtomicBool>,
    /// Whether the link answers probes (a silent neighbour is failed over at once).
    up: bool,
    metrics: Option<LinkMetrics>,
}

#[derive(Default)]
struct Subscription {
    /// Downstream neighbours that asked for the stream.
    down: BTreeSet<NodeId>,
    /// Local viewers want it.
    local: bool,
    /// The neighbour this node subscribed to, if any.
    upstream: Option<NodeId>,
}

/// A stream as the registry knows it.
struct Registered {
    origin: NodeId,
    epoch: u64,
}

struct Driver {
    shared: Arc<Shared>,
    graph: Graph,
    /// Configured link costs of this node's own links, restored when a link comes back.
    own_links: HashMap<NodeId, u64>,
    routes: RouteTable,
    /// The newest table from the control plane, if any came.
    control: Option<Routes>,
    peers: HashMap<NodeId, Peer>,
    registry: HashMap<StreamName, Registered>,
    subs: HashMap<StreamName, Subscription>,
    /// Objects being forwarded cut-through, so that a second copy (make-before-break feeds a stream from two
    /// upstreams for a while) is not forwarded again.
    in_flight: HashMap<ObjectKey, InFlight>,
    reports: watch::Sender<Report>,
}

impl Driver {
    fn new(shared: Arc<Shared>, topology: &Topology, reports: watch::Sender<Report>) -> Self {
        let mut graph = Graph::new();
        for node in &topology.nodes {
            graph.add_node(&node.id);
        }
        let mut own_links = HashMap::new();
        for link in &topology.links {
            let cost = (link.latency_ms * 1000.0).round().max(1.0) as u64;
            if link.a == shared.me {
                own_links.insert(link.b.clone(), cost);
            } else if link.b == shared.me {
                own_links.insert(link.a.clone(), cost);
            } else {
                graph.handle_link(&link.a, &link.b, cost);
            }
        }
        // Our own links count only while their connection is up.
        let routes = RouteTable::compute(&graph, &shared.me);
        Self {
            shared,
            graph,
            own_links,
            routes,
            control: None,
            peers: HashMap::new(),
            registry: HashMap::new(),
            subs: HashMap::new(),
            in_flight: HashMap::new(),
            reports,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = rx.recv().await {
            let changes_state =
                !matches!(event, Event::Object { from: Some(_), .. } | Event::Incoming { .. } | Event::Passed { .. });
            match event {
                Event::PeerUp { peer, conn, control, active } => self.peer_up(peer, conn, control, active),
                Event::PeerDown { peer, stable_id } => self.peer_down(peer, stable_id),
                Event::Control { peer, frame } => self.control(peer, frame),
                Event::Object { from, object } => self.object(from, object),
                Event::Incoming { from, header, reply } => {
                    // The session gave up waiting only if it failed meanwhile; it then reports `Passed`.
                    let _ = reply.send(self.incoming(from, &header));
                }
                Event::Passed { from, key, complete } => self.passed(from, key, complete),
                Event::Want { stream } => {
                    self.subs.entry(stream.clone()).or_default().local = true;
                    self.ensure_upstream(&stream);
                }
                Event::Link { peer, up, metrics } => self.link(peer, up, metrics),
                Event::Routes(routes) => self.apply_routes(routes),
                Event::Release { stream, peer } => {
                    if self.subs.get(&stream).is_none_or(|s| s.upstream.as_ref() != Some(&peer)) {
                        self.send(&peer, Frame::Unsubscribe { stream });
                    }
                }
            }
            if changes_state {
                self.publish_state();
            }
        }
    }

    fn peer_up(
        &mut self,
        peer: NodeId,
        conn: quinn::Connection,
        control: mpsc::UnboundedSender<Frame>,
        active: Arc<AtomicBool>,
    ) {
        let fresh = Peer { conn, control, active, up: true, metrics: None };
        if let Some(old) = self.peers.insert(peer.clone(), fresh) {
            old.conn.close(0u32.into(), b"replaced by a newer connection");
        }
        if let Some(cost) = self.own_links.get(&peer) {
            self.graph.handle_link(&self.shared.me, &peer, *cost);
        }
        self.routes = RouteTable::compute(&self.graph, &self.shared.me);
        // Tell the newcomer every stream we know, then re-home subscriptions on the new routes.
        for (stream, reg) in &self.registry {
            self.send(&peer, Frame::Announce { stream: stream.clone(), origin: reg.origin.clone(), epoch: reg.epoch });
        }
        self.rehome_all();
    }

    fn rehome_all(&mut self) {
        let streams: Vec<StreamName> = self.subs.keys().cloned().collect();
        for stream in streams {
            self.ensure_upstream(&stream);
        }
    }

    /// Probe news about a link. A link that stops answering is failed over at once, before the QUIC
    /// connection times out and before any word from the control plane.
    fn link(&mut self, peer: NodeId, up: bool, metrics: Option<LinkMetrics>) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        p.metrics = metrics;
        if p.up == up {
            return;
        }
        p.up = up;
        if up {
            tracing::info!(%peer, "link answers probes again");
            if let Some(cost) = self.own_links.get(&peer) {
                self.graph.handle_link(&self.shared.me, &peer, *cost);
            }
        } else {
            tracing::warn!(%peer, "link stopped answering probes; failing over");
            metrics::counter!("lightpath_link_failures_total", "node" => self.shared.me.to_string(), "peer" => peer.to_string())
                .increment(1);
            self.graph.handle_link_down(&self.shared.me, &peer);
        }
        self.routes = RouteTable::compute(&self.graph, &self.shared.me);
        self.rehome_all();
    }

    fn apply_routes(&mut self, routes: Routes) {
        if self.control.as_ref().is_some_and(|c| c.version >= routes.version) {
            return;
        }
        tracing::info!(
            version = routes.version,
            routes = routes.routes.len(),
            "applying routes from the control plane"
        );
        metrics::gauge!("lightpath_routes_version", "node" => self.shared.me.to_string()).set(routes.version as f64);
        self.control = Some(routes);
        self.rehome_all();
    }

    /// A neighbour that is connected and answers probes.
    fn usable(&self, peer: &NodeId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.up)
    }

    /// The neighbour to receive a stream of `origin` from: the control plane's next hop, or its backup when
    /// the next hop is not usable; without a table (or when neither is usable), the shortest path over the
    /// configured latencies.
    fn upstream_toward(&self, origin: &NodeId) -> Option<NodeId> {
        let route = self.control.as_ref().and_then(|t| t.routes.iter().find(|r| &r.dest == origin));
        if let Some(route) = route {
            if self.usable(&route.via) {
                return Some(route.via.clone());
            }
            if let Some(backup) = route.backup.as_ref().filter(|b| self.usable(b)) {
                return Some(backup.clone());
            }
        }
        self.routes.next_hop(origin).map(|h| h.via.clone()).filter(|via| self.usable(via))
    }

    fn peer_down(&mut self, peer: NodeId, stable_id: usize) {
        if self.peers.get(&peer).is_none_or(|p| p.conn.stable_id() != stable_id) {
            return; // an older connection, already replaced
        }
        self.peers.remove(&peer);
        tracing::warn!(%peer, "mesh peer down");
        self.graph.handle_link_down(&self.shared.me, &peer);
        self.routes = RouteTable::compute(&self.graph, &self.shared.me);
        let streams: Vec<StreamName> = self.subs.keys().cloned().collect();
        for stream in streams {
            let sub = self.subs.get_mut(&stream).expect("listed above");
            sub.down.remove(&peer);
            if sub.upstream.as_ref() == Some(&peer) {
                sub.upstream = None;
            }
            self.ensure_upstream(&stream);
        }
    }

    fn control(&mut self, peer: NodeId, frame: Frame) {
        match frame {
            Frame::Announce { stream, origin, epoch } => self.announce(Some(&peer), stream, origin, epoch),
            Frame::Withdraw { stream, origin, epoch } => {
                if self.registry.get(&stream).is_some_and(|r| r.origin == origin && r.epoch == epoch) {
                    self.registry.remove(&stream);
                    self.flood(Some(&peer), Frame::Withdraw { stream, origin, epoch });
                }
            }
            Frame::Subscribe { stream } => {
                tracing::debug!(%peer, %stream, "downstream subscribed");
                self.subs.entry(stream.clone()).or_default().down.insert(peer.clone());
                // Serve the live window at once, then whatever arrives next.
                for object in self.shared.cache.window(&stream) {
                    self.forward(&peer, object);
                }
                self.ensure_upstream(&stream);
            }
            Frame::Unsubscribe { stream } => {
                if let Some(sub) = self.subs.get_mut(&stream) {
                    sub.down.remove(&peer);
                }
                self.ensure_upstream(&stream);
            }
            Frame::Hello { .. } | Frame::Object(_) | Frame::Report(_) | Frame::Routes(_) => {
                tracing::warn!(%peer, "unexpected frame on the control stream; ignored");
            }
        }
    }

    fn announce(&mut self, from: Option<&NodeId>, stream: StreamName, origin: NodeId, epoch: u64) {
        if self.registry.get(&stream).is_some_and(|r| r.epoch >= epoch) {
            return;
        }
        tracing::info!(%stream, %origin, epoch, "stream announced");
        self.registry.insert(stream.clone(), Registered { origin: origin.clone(), epoch });
        self.flood(from, Frame::Announce { stream: stream.clone(), origin, epoch });
        self.ensure_upstream(&stream);
    }

    fn flood(&self, except: Option<&NodeId>, frame: Frame) {
        for peer in self.peers.keys() {
            if Some(peer) != except {
                self.send(peer, frame.clone());
            }
        }
    }

    fn object(&mut self, from: Option<NodeId>, object: Arc<Object>) {
        let stream = object.header.stream.clone();
        if from.is_none() {
            // Ingested here: this node is the origin; announce the stream on its first object.
            let epoch = object.header.born_unix_ms;
            let known = self.registry.get(&stream).is_some_and(|r| r.origin == self.shared.me);
            if !known {
                self.announce(None, stream.clone(), self.shared.me.clone(), epoch);
            }
        }
        let Some(sub) = self.subs.get(&stream) else { return };
        // Those fed while it arrived have it already (or will have, from a copy still on its way).
        let fed = self.in_flight.get(&ObjectKey::of(&object.header)).map(|f| &f.fed);
        for peer in sub.down.iter().filter(|p| Some(*p) != from.as_ref() && fed.is_none_or(|f| !f.contains(*p))) {
            self.forward(peer, object.clone());
        }
    }

    /// A peer started sending an object. New objects are forwarded as they arrive to the downstream
    /// subscribers of this moment; whoever subscribes later gets the object from the cache once it is
    /// complete ([`Driver::object`]).
    fn incoming(&mut self, from: NodeId, header: &ObjectHeader) -> Forwarding {
        let key = ObjectKey::of(header);
        let held = self.shared.cache.get(&header.stream, &header.name).is_some_and(|o| o.header.version >= key.version);
        if held || self.in_flight.contains_key(&key) {
            return Forwarding::Duplicate;
        }
        let down: Vec<(NodeId, quinn::Connection)> = self
            .subs
            .get(&header.stream)
            .map(|sub| {
                sub.down
                    .iter()
                    .filter(|p| **p != from)
                    .filter_map(|p| Some((p.clone(), self.peers.get(p)?.conn.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let fed = down.iter().map(|(p, _)| p.clone()).collect();
        self.in_flight.insert(key, InFlight { from, fed });
        Forwarding::To(down)
    }

    /// An object forwarded while it arrived has ended. If it was cut short but another copy completed
    /// meanwhile, those it was fed to get that copy.
    fn passed(&mut self, from: NodeId, key: ObjectKey, complete: bool) {
        if self.in_flight.get(&key).is_none_or(|f| f.from != from) {
            return;
        }
        let fed = self.in_flight.remove(&key).expect("checked above").fed;
        if complete {
            return;
        }
        let Some(object) = self.shared.cache.get(&key.stream, &key.name).filter(|o| o.header.version >= key.version)
        else {
            return;
        };
        let Some(sub) = self.subs.get(&key.stream) else { return };
        for peer in fed.iter().filter(|p| sub.down.contains(*p)) {
            self.forward(peer, object.clone());
        }
    }

    fn forward(&self, peer: &NodeId, object: Arc<Object>) {
        let Some(p) = self.peers.get(peer) else { return };
        let conn = p.conn.clone();
        let (me, peer) = (self.shared.me.clone(), peer.clone());
        tokio::spawn(
            async move {
            if let Err(e) = peer::send_object(&me, &peer, &conn, &object).await {
                tracing::warn!(%peer, stream = %object.header.stream, object = %object.header.name, error = %e, "could not send an object");
            }
        }
            .in_current_span(),
        );
    }

    fn send(&self, peer: &NodeId, frame: Frame) {
        if let Some(p) = self.peers.get(peer) {
            let _ = p.control.send(frame);
        }
    }

    /// Puts the stream's upstream subscription where the routes say, or drops it when nobody wants the
    /// stream any more.
    fn ensure_upstream(&mut self, stream: &StreamName) {
        let Some(sub) = self.subs.get(stream) else { return };
        let wanted = sub.local || !sub.down.is_empty();
        let target = match self.registry.get(stream) {
            Some(reg) if wanted && reg.origin != self.shared.me => self.upstream_toward(&reg.origin),
            _ => None,
        };
        let current = sub.upstream.clone();
        if current == target {
            return;
        }
        if let Some(next) = &target {
            tracing::info!(%stream, upstream = %next, "subscribing upstream");
            metrics::counter!("lightpath_upstream_changes_total", "node" => self.shared.me.to_string(), "stream" => stream.to_string())
                .increment(1);
            self.send(next, Frame::Subscribe { stream: stream.clone() });
        }
        if let Some(old) = current.filter(|old| self.peers.contains_key(old)) {
            if target.is_some() && self.usable(&old) {
                // Make before break: the old upstream keeps feeding until the new one has taken over;
                // duplicates are dropped by name in the cache.
                let shared = self.shared.clone();
                let stream = stream.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RELEASE_AFTER).await;
                    shared.event(Event::Release { stream, peer: old });
                });
            } else {
                self.send(&old, Frame::Unsubscribe { stream: stream.clone() });
            }
        }
        let sub = self.subs.get_mut(stream).expect("checked above");
        sub.upstream = target;
        if !wanted && sub.upstream.is_none() {
            self.subs.remove(stream);
        }
    }

    fn publish_state(&self) {
        let me = &self.shared.me;
        let states = self
            .registry
            .iter()
            .map(|(stream, reg)| {
                let local = &reg.origin == me;
                let reachable = local || self.upstream_toward(&reg.origin).is_some();
                let receiving = local || self.subs.get(stream).is_some_and(|s| s.upstream.is_some());
                (stream.clone(), StreamState { origin: reg.origin.clone(), reachable, receiving })
            })
            .collect();
        *self.shared.streams.write().unwrap_or_else(|e| e.into_inner()) = states;

        for (id, peer) in &self.peers {
            let carries = self.subs.values().any(|s| s.upstream.as_ref() == Some(id) || s.down.contains(id));
            peer.active.store(carries, Ordering::Relaxed);
        }
        let mut links: Vec<LinkReport> = self
            .shared
            .neighbours
            .keys()
            .map(|id| {
                let peer = self.peers.get(id);
                let m = peer.and_then(|p| p.metrics);
                LinkReport {
                    peer: id.clone(),
                    rtt_us: m.map_or(0, |m| m.rtt.as_micros() as u64),
                    jitter_us: m.map_or(0, |m| m.jitter.as_micros() as u64),
                    loss_ppm: m.map_or(0, |m| (m.loss * 1e6) as u32),
                    // Up once measured: a link without a single probe answer yet is not offered for routing.
                    up: peer.is_some_and(|p| p.up) && m.is_some(),
                }
            })
            .collect();
        links.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut streams: Vec<StreamReport> = self
            .registry
            .iter()
            .filter_map(|(stream, reg)| {
                let local = reg.origin == *me;
                let upstream = self.subs.get(stream).and_then(|s| s.upstream.clone());
                (local || upstream.is_some()).then(|| StreamReport {
                    stream: stream.clone(),
                    origin: reg.origin.clone(),
                    upstream,
                })
            })
            .collect();
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        let report = Report { node: me.clone(), links, streams };
        self.reports.send_if_modified(|old| {
            let changed = *old != report;
            *old = report;
            changed
        });
    }
}
