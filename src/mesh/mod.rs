//! The mesh: a node's QUIC endpoint, its neighbours, the stream registry and the subscription trees.
//!
//! One driver task owns the node's mesh state (peers, registry, routes, subscriptions) and takes
//! [`Event`]s from the connection sessions ([`peer`]) and from the node's HTTP side (ingest at an origin,
//! viewer interest at an edge). Streams form trees by pull with aggregation: a node that wants a stream (a
//! viewer at an edge, or a downstream neighbour) subscribes once to its next hop toward the stream's
//! origin, and fans every object it receives out to each downstream subscriber, one QUIC unidirectional
//! stream per object. Every hop keeps the live window in the [`Cache`], and a new subscriber gets that
//! window at once.
//!
//! Routes come from [`crate::routing`] over the topology's configured latencies, with this node's own links
//! marked down while their connection is down. Measured latencies and the control plane replace the
//! configured figures in a later stage without changing this shape.

pub mod impair;
pub mod peer;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::ca::Identity;
use crate::cache::{Cache, Object};
use crate::id::{NodeId, StreamName};
use crate::routing::{Graph, RouteTable};
use crate::topology::{Address, Topology};
use crate::wire::Frame;

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
    /// A local viewer wants the stream.
    Want {
        stream: StreamName,
    },
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
}

impl Shared {
    pub(crate) fn event(&self, event: Event) {
        // The driver lives as long as the node; a send after shutdown has nobody to tell.
        let _ = self.events.send(event);
    }
}

/// A running mesh node's handle, for the HTTP side.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
}

impl Mesh {
    /// Starts the endpoint on `socket`, the driver, the accept loop and a dial loop per neighbour that this
    /// node dials (the one with the smaller id dials). [`Mesh::close`] ends the connections.
    pub fn start(
        me: NodeId,
        topology: &Topology,
        identity: &Identity,
        socket: std::net::UdpSocket,
        cache: Arc<Cache>,
    ) -> Result<Self> {
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)
                .context("TLS server config unusable for QUIC")?,
        ));
        server.transport_config(Arc::new(peer::transport()));
        let mut client = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?)
                .context("TLS client config unusable for QUIC")?,
        ));
        client.transport_config(Arc::new(peer::transport()));
        let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
        let mut endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime)
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
        });
        // Every log line of this node's mesh tasks names the node (the demo runs several in one process).
        let span = tracing::info_span!("mesh", node = %me);
        let driver = Driver::new(shared.clone(), topology);
        tokio::spawn(driver.run(rx).instrument(span.clone()));
        tokio::spawn(peer::accept_loop(shared.clone()).instrument(span.clone()));
        for (peer, addr) in neighbours {
            if me < peer {
                tokio::spawn(peer::dial_loop(shared.clone(), peer, addr).instrument(span.clone()));
            }
        }
        Ok(Self { shared })
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

    /// A local viewer wants `stream`: subscribe toward its origin unless already receiving it.
    pub fn want(&self, stream: &StreamName) {
        self.shared.event(Event::Want { stream: stream.clone() });
    }

    /// An object ingested here (this node is its origin): it is in the cache already; announce the stream
    /// if new and send the object down the tree.
    pub fn ingested(&self, object: Arc<Object>) {
        self.shared.event(Event::Object { from: None, object });
    }

    /// Closes every mesh connection and the endpoint.
    pub fn close(&self) {
        self.shared.endpoint.close(0u32.into(), b"node stopping");
    }
}

struct Peer {
    conn: quinn::Connection,
    control: mpsc::UnboundedSender<Frame>,
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
    peers: HashMap<NodeId, Peer>,
    registry: HashMap<StreamName, Registered>,
    subs: HashMap<StreamName, Subscription>,
}

impl Driver {
    fn new(shared: Arc<Shared>, topology: &Topology) -> Self {
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
        Self { shared, graph, own_links, routes, peers: HashMap::new(), registry: HashMap::new(), subs: HashMap::new() }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = rx.recv().await {
            let changes_state = !matches!(event, Event::Object { from: Some(_), .. });
            match event {
                Event::PeerUp { peer, conn, control } => self.peer_up(peer, conn, control),
                Event::PeerDown { peer, stable_id } => self.peer_down(peer, stable_id),
                Event::Control { peer, frame } => self.control(peer, frame),
                Event::Object { from, object } => self.object(from, object),
                Event::Want { stream } => {
                    self.subs.entry(stream.clone()).or_default().local = true;
                    self.ensure_upstream(&stream);
                }
            }
            if changes_state {
                self.publish_state();
            }
        }
    }

    fn peer_up(&mut self, peer: NodeId, conn: quinn::Connection, control: mpsc::UnboundedSender<Frame>) {
        if let Some(old) = self.peers.insert(peer.clone(), Peer { conn, control }) {
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
        let streams: Vec<StreamName> = self.subs.keys().cloned().collect();
        for stream in streams {
            self.ensure_upstream(&stream);
        }
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
            Frame::Hello { .. } | Frame::Object(_) => {
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
        for peer in sub.down.iter().filter(|p| Some(*p) != from.as_ref()) {
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
            Some(reg) if wanted && reg.origin != self.shared.me => {
                self.routes.next_hop(&reg.origin).map(|h| h.via.clone()).filter(|via| self.peers.contains_key(via))
            }
            _ => None,
        };
        let current = sub.upstream.clone();
        if current == target {
            return;
        }
        if let Some(next) = &target {
            tracing::info!(%stream, upstream = %next, "subscribing upstream");
            self.send(next, Frame::Subscribe { stream: stream.clone() });
        }
        if let Some(old) = &current {
            self.send(old, Frame::Unsubscribe { stream: stream.clone() });
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
                let reachable =
                    local || self.routes.next_hop(&reg.origin).is_some_and(|h| self.peers.contains_key(&h.via));
                let receiving = local || self.subs.get(stream).is_some_and(|s| s.upstream.is_some());
                (stream.clone(), StreamState { origin: reg.origin.clone(), reachable, receiving })
            })
            .collect();
        *self.shared.streams.write().unwrap_or_else(|e| e.into_inner()) = states;
    }
}
