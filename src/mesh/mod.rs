//! The mesh: a node's QUIC endpoint and its neighbour connections, executing the relay core's decisions.
//!
//! Every decision about streams and neighbours (which upstream, failover, make-before-break, dedupe, when a
//! link is down, what to report) is made by one [`Relay`] ([`crate::relay`], pure); this module is the shell
//! that runs it over quinn. One driver task owns the relay and takes [`Event`]s from the connection sessions
//! ([`peer`]) and from the node's HTTP side (ingest at an origin, viewer interest at an edge), passes each to
//! the relay with the time, and carries out the relay's [`Action`]s: control frames, a stream's live window
//! to a new subscriber, probes. Objects travel one QUIC unidirectional stream each; relays forward them
//! cut-through as they arrive ([`peer`], [`fanout`]), asking the relay whom to feed once the header is in,
//! and whole objects go out through each peer's bounded [`outbox`], which skips to the newest when a peer
//! lags. Every hop keeps the live window in the [`Cache`] (an object enters it once complete).
//!
//! Time for the relay is the time since the mesh started ([`Shared::now`]), read when an event happens: a
//! probe reply is stamped when its datagram is read, not when the driver gets to it, so a busy driver does
//! not inflate round trips. What a connection received (quinn's counts of STREAM and ACK frames: the peer
//! delivers data, or acknowledges ours) is sampled before every verdict and passed on as proof of life.
//!
//! Streams' lives go through the relay too: an origin's ingest claims each object's version
//! ([`Mesh::claim`]), so that one origin owns a stream at a time; when the relay ends a stream, the shell
//! ends its media playlists (`EXT-X-ENDLIST`) as new versions that travel like any object; takedowns are
//! flooded, kept in a file when the config names one, and read by the edge.

mod fanout;
mod outbox;
pub mod peer;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::ca::Identity;
use crate::cache::{Cache, Inserted, Object};
use crate::clock::unix_ms;
use crate::hls::media::is_playlist;
use crate::id::{NodeId, StreamName};
use crate::relay::{Action, ConnId, Incoming, ObjectKey, Relay, RelayConfig};
pub use crate::relay::{Claim, Refused, StreamState, Takedown};
use crate::topology::{Address, Topology};
use crate::wire::{Frame, ObjectHeader, Probe, Report, Routes};

/// How often the driver looks at least at what arrived on each connection: the precision of "nothing
/// arrived for `down_after`" in a link's verdict.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// Most events the driver takes in one turn before it looks at its timers: events that queued up while it
/// ran (a burst of probe replies from many neighbours, whose probes fall due together) cost one look at
/// every link's timers, not one each. Small enough that a turn stays short.
const EVENTS_PER_TURN: usize = 64;

/// How often the connections' sent bytes go to `lightpath_mesh_udp_bytes_sent_total`: a scrape reads it
/// every few seconds at most, so it need not be set on every sample (with hundreds of neighbours, setting
/// it every 20 ms was a measurable share of a relay's time).
const UDP_SENT_EVERY: Duration = Duration::from_millis(200);

/// What the driver hears about.
pub(crate) enum Event {
    PeerUp {
        peer: NodeId,
        conn: quinn::Connection,
        control: mpsc::UnboundedSender<Frame>,
    },
    PeerDown {
        peer: NodeId,
        conn: ConnId,
    },
    Control {
        peer: NodeId,
        conn: ConnId,
        frame: Frame,
    },
    /// A probe reply was read at `at` (see [`Shared::now`]).
    ProbeReply {
        peer: NodeId,
        conn: ConnId,
        seq: u64,
        at: Duration,
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
    /// A route table from control replica `from`.
    Routes {
        from: NodeId,
        routes: Routes,
    },
    /// The session with control replica `from` ended.
    ControlEnded {
        from: NodeId,
    },
    /// An operator drains the node (`true`) or takes it back into service.
    Drain(bool),
    /// Local ingest asks to publish an object of `stream`.
    Claim {
        stream: StreamName,
        claim: Claim,
        reply: oneshot::Sender<Result<u64, Refused>>,
    },
    /// The publisher deleted the stream's playlist.
    End {
        stream: StreamName,
    },
    /// An operator takes `stream` down (`active`) or lifts that, here or through a control replica
    /// (`version` given).
    Takedown {
        stream: StreamName,
        active: bool,
        reason: String,
        version: Option<u64>,
    },
    /// Distinct viewers of `stream` here.
    Viewers {
        stream: StreamName,
        viewers: u32,
    },
}

/// How a mesh node runs, beside its topology and identity.
#[derive(Debug, Clone, Default)]
pub struct MeshOptions {
    /// The relay core's settings (probes, holds, takeover).
    pub relay: RelayConfig,
    /// Where the takedowns this node knows are kept across restarts, if anywhere.
    pub takedowns_file: Option<PathBuf>,
    /// The endpoint's address validation and handshake cap.
    pub quic: crate::config::QuicConfig,
}

/// The driver's answer to [`Event::Incoming`].
pub(crate) enum Forwarding {
    /// This version or a newer one is held already, or on its way from another peer: store the copy if it
    /// completes first, forward nothing while it arrives.
    Duplicate,
    /// New: forward it to these downstream subscribers (maybe none) as it arrives, each within its outbox's
    /// budget.
    To(Vec<fanout::Target>),
}

/// State the sessions and the HTTP side share with the driver.
pub(crate) struct Shared {
    pub me: NodeId,
    pub endpoint: quinn::Endpoint,
    /// Which incoming connections get a handshake.
    pub handshakes: crate::quic::Handshakes,
    /// The most object streams a peer may have open at once (`quic.max_object_streams`).
    pub max_object_streams: u32,
    pub cache: Arc<Cache>,
    /// Neighbours by id, with their mesh address.
    pub neighbours: HashMap<NodeId, Address>,
    events: mpsc::UnboundedSender<Event>,
    streams: RwLock<HashMap<StreamName, StreamState>>,
    /// Streams taken down, with the reason.
    takedowns: RwLock<HashMap<StreamName, String>>,
    /// The relay core's epoch: the start of the minute of Unix time in which the mesh started, so that
    /// neighbours' relay cores share a clock grid (their probes and samples fall due together).
    started: tokio::time::Instant,
    /// How long, in all, this node's tasks ran late (µs): see [`watch_stalls`].
    stalled_us: std::sync::atomic::AtomicU64,
    /// Whether an operator is draining the node (the relay core holds the same, for its reports).
    draining: std::sync::atomic::AtomicBool,
    /// The streams this node sends on to downstream neighbours, as last published.
    relayed: RwLock<Vec<StreamName>>,
    /// Drawn at random when the mesh started: in every report and in `/healthz` answers (see
    /// [`Report::boot`]).
    boot: u64,
}

impl Shared {
    pub(crate) fn event(&self, event: Event) {
        // The driver lives as long as the node; a send after shutdown has nobody to tell.
        let _ = self.events.send(event);
    }

    /// The relay core's time: since the start of the minute in which the mesh started.
    pub(crate) fn now(&self) -> Duration {
        self.started.elapsed()
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
        options: MeshOptions,
    ) -> Result<Self> {
        let MeshOptions { relay: config, takedowns_file, quic } = options;
        let (peer_queue_bytes, max_object_streams) = (quic.peer_queue_bytes, quic.max_object_streams);
        let config = RelayConfig { probes: config.probes.validate().context("probe intervals")?, ..config };
        // 0 means "none drawn" (the simulator's relays); the wire's integers hold 62 bits.
        let boot = (rand::random::<u64>() & crate::wire::VARINT_MAX).max(1);
        let mut relay = Relay::new(
            me.clone(),
            topology.nodes.iter().map(|n| n.id.clone()),
            topology.links.iter().map(|l| (l.a.clone(), l.b.clone(), (l.latency_ms * 1000.0).round().max(1.0) as u64)),
            config,
        )
        .context("probe intervals")?
        .with_boot(boot);
        if let Some(file) = &takedowns_file {
            for (stream, t) in crate::takedowns::load(file)? {
                relay.handle_takedown(Duration::ZERO, None, &stream, t);
            }
            while relay.poll_action().is_some() {} // nobody to flood to yet
        }
        let transport = Arc::new(crate::quic::transport(quic.max_object_streams));
        let server = crate::quic::server_config(identity, transport.clone())?;
        let client = crate::quic::client_config(identity, transport)?;
        let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
        let mut endpoint = match impairments {
            // Emulated WAN links: every packet goes through the impairment table first.
            Some(table) => quinn::Endpoint::new_with_abstract_socket(
                crate::quic::endpoint_config(identity),
                Some(server),
                crate::netem::impaired_socket(socket, table).context("wrapping the mesh socket")?,
                runtime,
            ),
            None => quinn::Endpoint::new(crate::quic::endpoint_config(identity), Some(server), socket, runtime),
        }
        .context("starting the QUIC endpoint")?;
        endpoint.set_default_client_config(client);

        let neighbours: HashMap<NodeId, Address> =
            topology.neighbours(&me).map(|(n, _)| (n.id.clone(), n.mesh.clone())).collect();
        let (events, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            me: me.clone(),
            endpoint,
            handshakes: crate::quic::Handshakes::new(quic, me.as_str(), "mesh"),
            max_object_streams,
            cache,
            neighbours: neighbours.clone(),
            events,
            streams: RwLock::new(HashMap::new()),
            takedowns: RwLock::new(HashMap::new()),
            started: {
                let now = tokio::time::Instant::now();
                now.checked_sub(crate::clock::into_minute()).unwrap_or(now)
            },
            stalled_us: Default::default(),
            draining: Default::default(),
            relayed: RwLock::default(),
            boot,
        });
        // Every log line of this node's mesh tasks names the node (the demo runs several in one process).
        let span = tracing::info_span!("mesh", node = %me);
        let (reports, report_rx) = watch::channel(Report {
            node: me.clone(),
            links: Vec::new(),
            streams: Vec::new(),
            takedowns: Vec::new(),
            draining: false,
            boot,
        });
        let mut driver = Driver {
            shared: shared.clone(),
            relay,
            conns: HashMap::new(),
            reports,
            next_sample: Duration::ZERO,
            ran_late: Duration::ZERO,
            next_udp_sent: Duration::ZERO,
            takedowns_file,
            peer_queue_bytes,
            unpublished: false,
            next_publish: Duration::ZERO,
        };
        driver.publish_takedowns();
        metrics::gauge!("lightpath_node_draining", "node" => me.to_string()).set(0.0);
        tokio::spawn(driver.run(rx).instrument(span.clone()));
        tokio::spawn(watch_stalls(Arc::downgrade(&shared)));
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

    /// Every stream this node knows, with its state.
    pub fn streams(&self) -> BTreeMap<StreamName, StreamState> {
        let streams = self.shared.streams.read().unwrap_or_else(|e| e.into_inner());
        streams.iter().map(|(s, st)| (s.clone(), st.clone())).collect()
    }

    /// Why `stream` is taken down, if it is.
    pub fn taken_down(&self, stream: &StreamName) -> Option<String> {
        self.shared.takedowns.read().unwrap_or_else(|e| e.into_inner()).get(stream).cloned()
    }

    /// Origin ingest asks to publish an object of `stream`: the version to give it, or why not. `None` when
    /// the mesh has stopped.
    pub async fn claim(&self, stream: &StreamName, claim: Claim) -> Option<Result<u64, Refused>> {
        let (reply, answer) = oneshot::channel();
        self.shared.event(Event::Claim { stream: stream.clone(), claim, reply });
        answer.await.ok()
    }

    /// The publisher deleted `stream`'s playlist: end the stream now.
    pub fn end(&self, stream: &StreamName) {
        self.shared.event(Event::End { stream: stream.clone() });
    }

    /// An operator takes `stream` down everywhere (`active`), or lifts that.
    pub fn takedown(&self, stream: &StreamName, active: bool, reason: String) {
        self.shared.event(Event::Takedown { stream: stream.clone(), active, reason, version: None });
    }

    /// A takedown (or lift) a control replica sent, with the replica's version.
    pub fn takedown_from_control(&self, stream: StreamName, takedown: Takedown) {
        let Takedown { version, active, reason } = takedown;
        self.shared.event(Event::Takedown { stream, active, reason, version: Some(version) });
    }

    /// `viewers` distinct viewers watch `stream` here (for the reports).
    pub fn viewers(&self, stream: &StreamName, viewers: u32) {
        self.shared.event(Event::Viewers { stream: stream.clone(), viewers });
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

    /// The number this node drew when it started: its reports and its `/healthz` answers carry it, so a
    /// director can match the two to one run of the node ([`Report::boot`]).
    pub fn boot(&self) -> u64 {
        self.shared.boot
    }

    /// A route table from control replica `from` (the relay core decides whether it supersedes the one in
    /// force: [`Relay::handle_routes`]).
    pub fn routes(&self, from: NodeId, routes: Routes) {
        self.shared.event(Event::Routes { from, routes });
    }

    /// The session with control replica `from` ended: its table may be superseded by any replica's.
    pub fn control_ended(&self, from: NodeId) {
        self.shared.event(Event::ControlEnded { from });
    }

    /// An operator drains the node (`true`: the control plane routes new trees around it, its downstream
    /// neighbours move their subscriptions away make-before-break where another path exists, and the edge
    /// takes no new stream) or takes it back into service (`false`).
    pub fn drain(&self, draining: bool) {
        self.shared.draining.store(draining, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("lightpath_node_draining", "node" => self.shared.me.to_string())
            .set(f64::from(u8::from(draining)));
        self.shared.event(Event::Drain(draining));
    }

    /// Whether an operator is draining the node.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The streams this node sends on to downstream neighbours (what a drain waits to see gone).
    pub fn relayed(&self) -> Vec<StreamName> {
        self.shared.relayed.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Closes every mesh connection and the endpoint.
    pub fn close(&self) {
        self.shared.endpoint.close(0u32.into(), b"node stopping");
    }
}

/// A neighbour's current connection, as the driver holds it.
struct Conn {
    conn: quinn::Connection,
    control: mpsc::UnboundedSender<Frame>,
    /// STREAM and ACK frames received on it when last sampled: the peer delivers, or takes what we send.
    heard_frames: u64,
    /// `lightpath_mesh_udp_bytes_sent_total` of this peer, looked up once (it is set every [`UDP_SENT_EVERY`]).
    udp_sent: metrics::Counter,
    /// Whole objects on their way to the peer.
    outbox: Arc<outbox::Outbox>,
}

/// The task that owns the node's [`Relay`] and carries out its actions.
struct Driver {
    shared: Arc<Shared>,
    relay: Relay,
    conns: HashMap<NodeId, Conn>,
    reports: watch::Sender<Report>,
    /// When the connections are sampled next: on a grid of [`SAMPLE_EVERY`], which neighbours share, so
    /// that both ends of a link time what they heard alike.
    next_sample: Duration,
    /// How late, in all, this driver ran its due timers (beyond [`STALL_SLACK`] each time): the node's own
    /// stalls as the driver saw them (see [`Driver::judge_late`]).
    ran_late: Duration,
    /// When the connections' sent bytes are published next ([`UDP_SENT_EVERY`]).
    next_udp_sent: Duration,
    takedowns_file: Option<PathBuf>,
    /// Each peer's [`outbox::Outbox`] budget.
    peer_queue_bytes: u64,
    /// Whether state changed since [`Driver::publish_state`] last ran, and when it may run again.
    unpublished: bool,
    next_publish: Duration,
}

/// How often [`watch_stalls`] looks, and how late it may wake before that counts as a stall.
const STALL_TICK: Duration = Duration::from_millis(10);
const STALL_SLACK: Duration = Duration::from_millis(5);

/// Measures how late this node's tasks run: a timer due every [`STALL_TICK`] that fires more than
/// [`STALL_SLACK`] late means the runtime was too busy to run anything, and the lateness is added up. The
/// relay does not count such time as a link's silence: a node too busy to read its sockets must not fail its
/// neighbours over.
async fn watch_stalls(shared: std::sync::Weak<Shared>) {
    let mut due = tokio::time::Instant::now() + STALL_TICK;
    loop {
        tokio::time::sleep_until(due).await;
        let Some(shared) = shared.upgrade() else { return };
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(due);
        if late > STALL_SLACK {
            shared.stalled_us.fetch_add(late.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        due = now + STALL_TICK;
    }
}

/// Frames that prove a peer alive and reachable both ways: stream data it sends, and acknowledgements of
/// what we send (a probe reply can be late on a busy peer while both keep flowing).
fn heard_frames(stats: &quinn::ConnectionStats) -> u64 {
    stats.frame_rx.stream + stats.frame_rx.acks
}

/// Sends what `outbox` hands out to `peer` over `conn`, each object on its own stream, until the connection
/// closes.
async fn send_whole_objects(me: NodeId, peer: NodeId, conn: quinn::Connection, outbox: Arc<outbox::Outbox>) {
    loop {
        let object = tokio::select! {
            object = outbox.next() => object,
            _ = conn.closed() => return,
        };
        let (me, peer, conn, outbox) = (me.clone(), peer.clone(), conn.clone(), outbox.clone());
        tokio::spawn(
            async move {
                if let Err(e) = peer::send_object(&me, &peer, &conn, &object).await {
                    tracing::warn!(%peer, stream = %object.header.stream, object = %object.header.name, error = %e, "could not send an object");
                }
                outbox.done(&object);
            }
            .in_current_span(),
        );
    }
}

fn conn_id(conn: &quinn::Connection) -> ConnId {
    conn.stable_id() as ConnId
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut events = Vec::with_capacity(EVENTS_PER_TURN);
        let mut timeout = self.relay.poll_timeout();
        let mut wake = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        loop {
            let due = self.shared.started + timeout.map_or(self.next_sample, |t| t.min(self.next_sample));
            // Timers move on every probe reply; the sleep is re-armed only when its time changed.
            if wake.deadline() != due {
                wake.as_mut().reset(due);
            }
            tokio::select! {
                received = rx.recv_many(&mut events, EVENTS_PER_TURN) => if received == 0 {
                    return;
                },
                _ = wake.as_mut() => {}
            }
            let mut changes_state = false;
            for event in events.drain(..) {
                let objects = matches!(
                    event,
                    Event::Object { from: Some(_), .. } | Event::Incoming { .. } | Event::Passed { .. }
                );
                self.handle(event);
                changes_state |= !objects;
            }
            let now = self.shared.now();
            if now >= self.next_sample {
                self.sample(now);
            }
            timeout = self.relay.poll_timeout();
            let timers = timeout.is_some_and(|t| t <= now);
            if timers {
                self.judge_late(now, timeout);
                self.sample(now);
                self.relay.handle_timeout(now);
            }
            let acted = self.execute();
            if timers || acted {
                timeout = self.relay.poll_timeout();
            }
            self.unpublished |= changes_state || timers || acted;
            if self.unpublished && now >= self.next_publish {
                self.publish_state(now);
            }
        }
    }

    /// Counts how late the relay's timers due at `due` run at `now` as this node's own stall. The stall
    /// watcher ([`watch_stalls`]) sees the same stalls, but when the whole process was not scheduled, its
    /// timer and this driver's fire in the same wake, in either order: judged first, a link whose probe
    /// replies wait unread in the socket was declared down and answered again a millisecond later (seen with
    /// 40 edge processes saturating two cores).
    fn judge_late(&mut self, now: Duration, due: Option<Duration>) {
        let late = due.map_or(Duration::ZERO, |due| now.saturating_sub(due));
        if late > STALL_SLACK {
            self.ran_late += late;
        }
    }

    /// `lightpath_routes_version`: the version of the control plane's table in force.
    fn table_in_force(&self) {
        if let Some(version) = self.relay.table_version() {
            metrics::gauge!("lightpath_routes_version", "node" => self.shared.me.to_string()).set(version as f64);
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.shared.now();
        match event {
            Event::PeerUp { peer, conn, control } => {
                let id = conn_id(&conn);
                let heard_frames = heard_frames(&conn.stats());
                let labels = [("node", self.shared.me.to_string()), ("peer", peer.to_string())];
                let udp_sent = metrics::counter!("lightpath_mesh_udp_bytes_sent_total", &labels);
                // The link's failure count exists from its first session on, at 0: Prometheus's `increase()`
                // sees no rise in a series whose first sample is already 1, so an alert on the first failure
                // of a link needs the series before it.
                metrics::counter!("lightpath_link_failures_total", &labels).increment(0);
                let outbox = outbox::Outbox::new(self.peer_queue_bytes, &self.shared.me, &peer);
                tokio::spawn(
                    send_whole_objects(self.shared.me.clone(), peer.clone(), conn.clone(), outbox.clone())
                        .in_current_span(),
                );
                let c = Conn { conn, control, heard_frames, udp_sent, outbox };
                if let Some(old) = self.conns.insert(peer.clone(), c) {
                    old.conn.close(0u32.into(), b"replaced by a newer connection");
                }
                self.relay.handle_peer_up(now, peer, id);
            }
            Event::PeerDown { peer, conn } => {
                if self.conns.get(&peer).is_some_and(|c| conn_id(&c.conn) == conn) {
                    self.conns.remove(&peer);
                }
                self.relay.handle_peer_down(now, &peer, conn);
            }
            Event::Control { peer, conn, frame } => self.relay.handle_frame(now, &peer, conn, frame),
            Event::ProbeReply { peer, conn, seq, at } => self.relay.handle_probe_reply(at, &peer, conn, seq),
            Event::Object { from, object } => {
                for peer in self.relay.handle_object(now, from.as_ref(), &object.header) {
                    self.forward(&peer, object.clone());
                }
            }
            Event::Incoming { from, header, reply } => {
                let held = self.held(&ObjectKey::of(&header));
                let forwarding = match self.relay.handle_incoming(&from, &header, held) {
                    Incoming::Duplicate => Forwarding::Duplicate,
                    Incoming::Forward(peers) => Forwarding::To(
                        peers
                            .into_iter()
                            .filter_map(|peer| {
                                let c = self.conns.get(&peer)?;
                                Some(fanout::Target { conn: c.conn.clone(), outbox: c.outbox.clone(), peer })
                            })
                            .collect(),
                    ),
                };
                // The session gave up waiting only if it failed meanwhile; it then reports `Passed`.
                let _ = reply.send(forwarding);
            }
            Event::Passed { from, key, complete } => {
                let held = self.held(&key);
                let peers = self.relay.handle_passed(&from, &key, complete, held);
                if let Some(object) = self.shared.cache.get(&key.stream, &key.name) {
                    for peer in peers {
                        self.forward(&peer, object.clone());
                    }
                }
            }
            Event::Want { stream } => self.relay.handle_want(now, &stream),
            Event::Routes { from, routes } => {
                if self.relay.handle_routes(now, &from, routes) {
                    self.table_in_force();
                }
            }
            Event::ControlEnded { from } => {
                self.relay.handle_control_ended(now, &from);
                self.table_in_force();
            }
            Event::Drain(draining) => self.relay.handle_drain(draining),
            Event::Claim { stream, claim, reply } => {
                let _ = reply.send(self.relay.handle_claim(now, &stream, claim));
            }
            Event::End { stream } => self.relay.handle_end(now, &stream),
            Event::Takedown { stream, active, reason, version } => {
                let version = version.unwrap_or_else(|| self.relay.next_takedown_version(&stream, unix_ms()));
                self.relay.handle_takedown(now, None, &stream, Takedown { version, active, reason });
            }
            Event::Viewers { stream, viewers } => self.relay.handle_viewers(&stream, viewers),
        }
    }

    /// Ends `stream`'s media playlists (it ended here, its origin): each gets `EXT-X-ENDLIST` in a new
    /// version, numbered from `version`, which goes down the tree like any object.
    fn end_playlists(&mut self, stream: &StreamName, mut version: u64) {
        let now = self.shared.now();
        for object in self.shared.cache.window(stream) {
            if !is_playlist(&object.header.name) {
                continue;
            }
            let Some(ended) = std::str::from_utf8(&object.body).ok().and_then(crate::hls::tags::with_endlist) else {
                continue;
            };
            let header = ObjectHeader {
                version,
                seq: version,
                born_unix_ms: unix_ms(),
                len: ended.len() as u64,
                ..object.header.clone()
            };
            version += 1;
            let object = Arc::new(Object::new(header, bytes::Bytes::from(ended)));
            if self.shared.cache.insert(object.clone()) == Inserted::New {
                for peer in self.relay.handle_object(now, None, &object.header) {
                    self.forward(&peer, object.clone());
                }
            }
        }
    }

    /// The snapshot of takedowns the edge reads, and the file that keeps them.
    fn publish_takedowns(&mut self) {
        let active: HashMap<StreamName, String> =
            self.relay.takedowns().filter(|(_, t)| t.active).map(|(s, t)| (s.clone(), t.reason.clone())).collect();
        *self.shared.takedowns.write().unwrap_or_else(|e| e.into_inner()) = active;
        let Some(file) = &self.takedowns_file else { return };
        if let Err(e) = crate::takedowns::save(file, self.relay.takedowns()) {
            tracing::error!(file = %file.display(), error = %format!("{e:#}"), "could not keep the takedowns");
        }
    }

    /// Whether the cache holds this version of the object or a newer one.
    fn held(&self, key: &ObjectKey) -> bool {
        self.shared.cache.get(&key.stream, &key.name).is_some_and(|o| o.header.version >= key.version)
    }

    /// Tells the relay which connections received stream data since the last look (proof of life), and how
    /// many packets each sent and lost (loss evidence).
    fn sample(&mut self, now: Duration) {
        self.next_sample = crate::routing::next_tick(now, SAMPLE_EVERY);
        let stalled = self.shared.stalled_us.load(std::sync::atomic::Ordering::Relaxed);
        // Both count the same stalls at times (a stall then extends a link's silence allowance twice over,
        // which only makes a starved node slower to blame its neighbours), but neither alone sees every one
        // before a verdict.
        self.relay.handle_stalled(Duration::from_micros(stalled) + self.ran_late);
        let udp_sent = now >= self.next_udp_sent;
        if udp_sent {
            self.next_udp_sent = now + UDP_SENT_EVERY;
        }
        for (peer, c) in &mut self.conns {
            let stats = c.conn.stats();
            if heard_frames(&stats) > c.heard_frames {
                c.heard_frames = heard_frames(&stats);
                self.relay.handle_heard(now, peer, conn_id(&c.conn));
            }
            // The connection's own packets are the link's loss evidence where it carries a stream.
            self.relay.handle_packet_counts(
                now,
                peer,
                conn_id(&c.conn),
                stats.path.sent_packets,
                stats.path.lost_packets,
            );
            if udp_sent {
                c.udp_sent.absolute(stats.udp_tx.bytes);
            }
        }
    }

    /// Carries out the relay's actions; returns whether there were any.
    fn execute(&mut self) -> bool {
        let mut any = false;
        while let Some(action) = self.relay.poll_action() {
            any = true;
            match action {
                Action::Send { to, frame } => {
                    if let Frame::Subscribe { stream } = &frame {
                        metrics::counter!("lightpath_upstream_changes_total", "node" => self.shared.me.to_string(), "stream" => stream.to_string())
                            .increment(1);
                    }
                    if let Some(c) = self.conns.get(&to) {
                        let _ = c.control.send(frame);
                    }
                }
                Action::SendWindow { to, stream } => {
                    for object in self.shared.cache.window(&stream) {
                        self.forward(&to, object);
                    }
                }
                Action::Probe { to, seq } => {
                    if let Some(c) = self.conns.get(&to) {
                        let _ = c.conn.send_datagram(bytes::Bytes::copy_from_slice(&Probe::Request { seq }.encode()));
                    }
                }
                Action::Verdict { peer, up: false } => {
                    metrics::counter!("lightpath_link_failures_total", "node" => self.shared.me.to_string(), "peer" => peer.to_string())
                        .increment(1);
                }
                Action::Verdict { up: true, .. } => {}
                Action::Purge { stream, below } => {
                    let purged = self.shared.cache.purge_below(&stream, below);
                    tracing::debug!(%stream, purged, "objects of an older epoch purged");
                }
                Action::Ended { stream, next_version } => self.end_playlists(&stream, next_version),
                Action::Forget { stream } => self.shared.cache.remove_stream(&stream),
                Action::Takedowns => self.publish_takedowns(),
            }
        }
        any
    }

    /// Queues a whole object for `peer` (see [`outbox`]).
    fn forward(&self, peer: &NodeId, object: Arc<Object>) {
        if let Some(c) = self.conns.get(peer) {
            c.outbox.push(object);
        }
    }

    /// Publishes the streams' states (for the HTTP side) and the report (for the control plane). Both cover
    /// every stream, so with thousands of streams this is the driver's largest cost: the next publication
    /// waits nine times as long as this one took, which holds it to a tenth of the driver's time (with a few
    /// streams it takes microseconds and every change is published at once).
    fn publish_state(&mut self, now: Duration) {
        self.unpublished = false;
        let states = self.relay.streams().map(|(stream, state)| (stream.clone(), state)).collect();
        *self.shared.streams.write().unwrap_or_else(|e| e.into_inner()) = states;
        let relayed: Vec<StreamName> = self.relay.relayed().cloned().collect();
        metrics::gauge!("lightpath_node_relayed_streams", "node" => self.shared.me.to_string())
            .set(relayed.len() as f64);
        *self.shared.relayed.write().unwrap_or_else(|e| e.into_inner()) = relayed;
        let report = self.relay.report(self.shared.neighbours.keys().cloned());
        self.reports.send_if_modified(|old| {
            let changed = *old != report;
            *old = report;
            changed
        });
        self.next_publish = now + self.shared.now().saturating_sub(now) * 9;
    }
}
