//! One node's decisions for streams and neighbours, as a sans-IO state machine.
//!
//! A [`Relay`] is told what happens ([`handle_*`](Relay::handle_peer_up) calls, each with `now`, a
//! [`Duration`] since an epoch the caller picks) and answers with what to do: [`Relay::poll_action`] hands
//! out [`Action`]s (send a control frame, send a stream's live window, send a probe, a link's verdict
//! changed) and [`Relay::poll_timeout`] says when to call [`Relay::handle_timeout`] again. Per-object
//! decisions are answered at once ([`Relay::handle_incoming`], [`Relay::handle_object`],
//! [`Relay::handle_passed`]), since the caller holds the object's bytes while it asks. The node's quinn shell
//! (`src/mesh/`) executes the actions over QUIC; the simulator drives the same type. Nothing here reads a
//! clock, opens a socket or spawns a task.
//!
//! What it decides, and where:
//!
//! - **Neighbours and their links.** One [`LinkEstimator`] per connection (a reconnect starts a fresh one, so
//!   an old connection's history never judges a new one). A link is down when its probes say so *and*
//!   nothing arrived over it for `down_after`: stream data is proof of life, so a neighbour too busy to
//!   answer probes on time is not failed over while it delivers.
//! - **Which upstream a stream uses** ([`Relay::upstream_for`]): the control plane's next hop, else its
//!   backup, else the shortest path over the topology's configured latencies, among neighbours that are
//!   connected, answer, are not downstream of this node for that stream (subscribing to one's own subscriber
//!   closes a loop) and have not said the stream is unavailable through them. A node never gives up its only
//!   upstream because its probes are late; when nothing is left, it tells its own subscribers
//!   ([`Frame::Unavailable`]) so that they route around it instead of waiting.
//! - **Make-before-break.** A route change subscribes through the new upstream first; the old one keeps
//!   feeding until the new one delivers a live object (one not held here complete yet, so not the cached
//!   window a new subscriber gets first), at most for `hold`, and is then unsubscribed. Objects that arrive
//!   twice meanwhile are deduplicated by name and version ([`Relay::handle_incoming`]). A route change made
//!   because the old path loses packets thus leaves it as soon as the new path carries the stream.
//! - **Reconnects.** A neighbour's new connection replaces its old one at once: the old connection's
//!   subscriptions in both directions are dropped and re-sent over the new one, so a neighbour that restarted
//!   (an origin killed and started again) is subscribed to again without waiting for the old connection to
//!   time out.
//! - **Streams' lives** ([`registry`]): who owns a stream (one origin at a time, by epoch), who may publish
//!   it ([`Relay::handle_claim`]: a second origin is refused, a configured backup takes over after the
//!   owner's objects stopped arriving, the primary takes it back), when it ends (its publisher silent for
//!   three target durations, or its playlist deleted: [`Action::Ended`]), when an ended stream is forgotten
//!   ([`Action::Forget`]), and operators' takedowns, flooded to every node.

mod inspect;
mod registry;
mod upstream;

pub use registry::{first_version, Claim, Refused, Takedown};
pub use upstream::{choose, Hops, Upstream};

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::id::{NodeId, ObjectName, StreamName};
use crate::routing::{
    duration, nanos, Cost, Graph, LinkEstimator, LinkMetrics, Nanos, ProbeConfig, ProbeConfigError, Route, RouteTable,
};
use crate::wire::{Frame, LinkReport, ObjectHeader, Report, Routes, StreamPhase, StreamReport};
use registry::{Claimed, Registry};

/// The caller's handle for one connection to a neighbour (quinn's `stable_id` in the node). A neighbour's
/// newer connection carries another id.
pub type ConnId = u64;

/// How a relay behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// How every link is probed and when it is declared down.
    pub probes: ProbeConfig,
    /// How long, at most, the old upstream keeps feeding a stream after a route change moved it
    /// (make-before-break): it is released sooner once the new upstream delivers a live object.
    pub hold: Duration,
    /// How long a neighbour that said a stream is unavailable through it is passed over for that stream
    /// before it is asked again.
    pub pass_over: Duration,
    /// How long a backup origin waits without the owner's objects before it takes a stream over.
    pub takeover: Duration,
    /// The target duration assumed for a stream whose playlist did not say (its publisher is silent for
    /// three of them before the stream ends).
    pub default_target: Duration,
    /// How long an ended stream stays known (its final playlist served) before it is forgotten.
    pub linger: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            probes: ProbeConfig::default(),
            hold: Duration::from_secs(2),
            pass_over: Duration::from_secs(5),
            takeover: Duration::from_secs(4),
            default_target: Duration::from_secs(6),
            linger: Duration::from_secs(60),
        }
    }
}

/// A stream ends after its publisher was silent for this many target durations.
const SILENT_TARGETS: u32 = 3;
/// The most takedowns a report carries (the newest): at most 256 bytes of reason each, they stay well inside
/// a frame.
const REPORTED_TAKEDOWNS: usize = 32;
/// Bytes a report frame keeps free below [`crate::wire::MAX_FRAME`] once its streams are counted by estimate
/// (the replicas refuse a larger frame, and the session with it). The streams fill the rest, about 2,000 with
/// short names; a node carrying more reports the first that fit, by name (routing does not read them; only
/// the replicas' stream view misses the rest).
const REPORT_SLACK: usize = 64;

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a control frame to a neighbour (over its current connection).
    Send { to: NodeId, frame: Frame },
    /// Send every object of the stream's live window (the caller's cache) to a neighbour that just
    /// subscribed.
    SendWindow { to: NodeId, stream: StreamName },
    /// Send probe `seq` on the link to `to`.
    Probe { to: NodeId, seq: u64 },
    /// The link to `peer` stopped (`up: false`) or started again answering: for logs and counters.
    Verdict { peer: NodeId, up: bool },
    /// A new owner's epoch of `stream` started: objects older than version `below` (an older epoch's, whose
    /// names the new publisher may reuse with other bytes) must not be served any more.
    Purge { stream: StreamName, below: u64 },
    /// `stream`, published here, ended: end its media playlists for players, numbering the new versions
    /// from `next_version`, and ingest them as usual.
    Ended { stream: StreamName, next_version: u64 },
    /// `stream` ended a while ago and is forgotten: its objects may go.
    Forget { stream: StreamName },
    /// The takedowns changed (to keep them across a restart).
    Takedowns,
}

/// One link's deadlines ([`Relay::link_timeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTimeout {
    /// The connection carrying the link.
    pub conn: ConnId,
    /// When the link's estimator must be called again (a probe, or its own down verdict).
    pub next: Duration,
    /// While the link is judged up: when it will be judged down if nothing more is heard over it.
    pub down: Option<Duration>,
    /// The link brings this node a stream: it is probed at the fast interval, and judged down on one overdue
    /// probe once nothing was heard over it for `down_after` (an idle link needs the estimator's own verdict).
    pub fast: bool,
}

/// One version of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub stream: StreamName,
    pub name: ObjectName,
    pub version: u64,
}

impl ObjectKey {
    pub fn of(header: &ObjectHeader) -> Self {
        Self { stream: header.stream.clone(), name: header.name.clone(), version: header.version }
    }
}

/// What to do with an object whose header just arrived from a neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// This version or a newer one is held already, or on its way from another neighbour: store the copy if
    /// it completes first, forward nothing while it arrives.
    Duplicate,
    /// New: forward it as it arrives to these downstream subscribers (maybe none).
    Forward(Vec<NodeId>),
}

/// Whether a stream can be served from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The origin that announced the stream.
    pub origin: NodeId,
    /// Its owner's epoch.
    pub epoch: u64,
    /// Live, ended or taken down.
    pub phase: StreamPhase,
    /// This node is the origin, or has a neighbour to receive the stream from.
    pub reachable: bool,
    /// This node already receives the stream (it is the origin or holds an upstream subscription).
    pub receiving: bool,
}

/// A connected neighbour.
#[derive(Debug)]
struct Peer {
    id: NodeId,
    /// Fixed for the neighbour's life: [`Peers`] keeps a copy.
    conn: ConnId,
    /// This connection's probes.
    estimator: LinkEstimator,
    /// The verdict in force: probes answer, or data arrives.
    up: bool,
    /// When anything last arrived over this connection (stream data, as the caller tells). Its times are in
    /// nanoseconds, as the estimator's are ([`Nanos`]): a node judges its links several times a probe.
    heard: Nanos,
    /// [`Relay::deaf`] when `heard` was last set: time this node itself was stalled since then does not count
    /// as the link's silence.
    deaf_at_heard: Nanos,
    /// The longest recent wait between two things heard (it decays as shorter waits follow): on a busy
    /// path, silence counts only once it is clearly longer than the usual.
    usual_gap: Nanos,
}

impl Peer {
    /// When the link is (or, with nothing more heard, will be) down. Nothing may have arrived over it for
    /// `down_after` (on a link that brings a stream in: or twice the longest recent wait between arrivals,
    /// if that is longer, up to half a probe interval more) (stream data, acknowledgements, probe replies: a
    /// busy neighbour is late to answer probes but still delivers), and the probes must agree: on a link
    /// that brings a stream in, probed fast, where something arrives every few milliseconds, one overdue
    /// probe confirms the silence; on any other link, the estimator's own verdict (several overdue probes)
    /// is needed.
    ///
    /// Time this node was itself too busy to listen (`deaf`, see [`Relay::handle_stalled`]) is added: a
    /// starved node blames itself, not its neighbours.
    fn down_at(&self, down_after: Duration, deaf: Duration) -> Option<Nanos> {
        let down_after = nanos(down_after);
        let (probes, silence) = if self.estimator.is_active() {
            // At most half a probe interval more, so that a dead neighbour is still found within its bound, and
            // two ends that both receive a stream over a dead link judge it at about the same time.
            let most = down_after.saturating_add(self.estimator.fast_interval() / 2);
            (self.estimator.overdue_at(), self.usual_gap.saturating_mul(2).clamp(down_after, most))
        } else {
            (self.estimator.down_at(), down_after)
        };
        let stalled = nanos(deaf).saturating_sub(self.deaf_at_heard);
        Some(probes?.max(self.heard.saturating_add(silence)).saturating_add(stalled))
    }

    fn is_down(&self, now: Duration, down_after: Duration, deaf: Duration) -> bool {
        self.down_at(down_after, deaf).is_some_and(|at| nanos(now) >= at)
    }

    /// Time passed on this link: sends the probe due by `now`, if any (returned), and judges the link down if
    /// it is (returns whether it went down). Time brings a link down, never back up: only what is heard over
    /// it does (a probe reply, data). Once a link is down it stops carrying streams, so its probes slow down
    /// and the idle rule, which needs more overdue probes, could otherwise call it up again with nothing heard.
    fn handle_timeout(&mut self, now: Duration, down_after: Duration, deaf: Duration) -> (Option<u64>, bool) {
        let probe = self.estimator.poll_probe(now);
        if let Some(seq) = probe {
            self.estimator.handle_probe_sent(now, seq);
        }
        let down = self.up && self.is_down(now, down_after, deaf);
        if down {
            self.up = false;
        }
        (probe, down)
    }

    /// Its deadlines ([`Relay::link_timeouts`]).
    fn timeout(&self, down_after: Duration, deaf: Duration) -> LinkTimeout {
        LinkTimeout {
            conn: self.conn,
            next: self.estimator.poll_timeout(),
            down: self.down_at(down_after, deaf).filter(|_| self.up).map(duration),
            fast: self.estimator.is_active(),
        }
    }

    /// What this node reports of the link: whether it is up, and its estimator's
    /// [`report`](LinkEstimator::report). Up once measured: a link without a single probe answer yet is not
    /// offered for routing.
    fn report(&mut self) -> (bool, Option<LinkMetrics>) {
        let m = self.estimator.report();
        (self.up && m.is_some(), m)
    }

    /// The link, judged down, is heard again at `at`: up, and its estimator forgets the outage's packets (see
    /// [`LinkEstimator::handle_outage_end`]).
    fn back_up(&mut self, at: Duration) {
        self.up = true;
        self.estimator.handle_outage_end(at);
    }

    fn heard(&mut self, at: Duration, deaf: Duration) {
        let (at, deaf) = (nanos(at), nanos(deaf));
        if at > self.heard {
            // Learned while the link carries a stream only: an idle link's waits are its probe interval.
            let gap = (at - self.heard).saturating_sub(deaf.saturating_sub(self.deaf_at_heard));
            self.usual_gap =
                if self.estimator.is_active() { gap.max(self.usual_gap.saturating_sub(gap / 8)) } else { 0 };
            self.heard = at;
            self.deaf_at_heard = deaf;
        }
    }
}

/// The connected neighbours, in id order. A node has a handful (a large mesh's nodes four or five, a live
/// node tens at most), and the calls that a node makes most often, for what arrived on a connection, name
/// it: their connection ids, kept apart in the same order, find them in a cache line or two, without
/// comparing names or reading every neighbour's state.
#[derive(Debug, Default)]
struct Peers {
    all: Vec<Peer>,
    conns: Vec<ConnId>,
}

impl Peers {
    fn get(&self, id: &NodeId) -> Option<&Peer> {
        self.all.binary_search_by(|p| p.id.cmp(id)).ok().map(|i| &self.all[i])
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Peer> {
        self.all.binary_search_by(|p| p.id.cmp(id)).ok().map(|i| &mut self.all[i])
    }

    fn contains(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    /// The neighbour on connection `conn`.
    fn by_conn(&self, conn: ConnId) -> Option<&Peer> {
        self.conns.iter().position(|&c| c == conn).map(|i| &self.all[i])
    }

    fn by_conn_mut(&mut self, conn: ConnId) -> Option<&mut Peer> {
        self.conns.iter().position(|&c| c == conn).map(|i| &mut self.all[i])
    }

    /// `id`, when `conn` is its current connection.
    fn on(&mut self, id: &NodeId, conn: ConnId) -> Option<&mut Peer> {
        self.by_conn_mut(conn).filter(|p| p.id == *id)
    }

    /// Adds a neighbour not connected yet.
    fn insert(&mut self, peer: Peer) {
        let at = self.all.binary_search_by(|p| p.id.cmp(&peer.id)).expect_err("a new neighbour");
        self.conns.insert(at, peer.conn);
        self.all.insert(at, peer);
    }

    fn remove(&mut self, id: &NodeId) {
        if let Ok(at) = self.all.binary_search_by(|p| p.id.cmp(id)) {
            self.all.remove(at);
            self.conns.remove(at);
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, Peer> {
        self.all.iter()
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, Peer> {
        self.all.iter_mut()
    }
}

/// This node's side of one stream.
#[derive(Debug, Default)]
struct Subscription {
    /// Downstream neighbours that asked for the stream.
    down: BTreeSet<NodeId>,
    /// Local viewers want it.
    local: bool,
    /// The neighbour this node subscribed to, if any.
    upstream: Option<NodeId>,
    /// Neighbours that said the stream is unavailable through them, until when.
    passed_over: BTreeMap<NodeId, Duration>,
    /// Downstream subscribers already told that the stream is unavailable here.
    told: BTreeSet<NodeId>,
    /// When an object of the stream last arrived from upstream.
    last_object: Option<Duration>,
}

impl Subscription {
    fn wanted(&self) -> bool {
        self.local || !self.down.is_empty()
    }
}

/// A stream this node owns and its publisher pushes.
#[derive(Debug)]
struct Publishing {
    /// The last object ingested.
    last: Duration,
    /// The target duration its playlist gave, if any.
    target: Option<Duration>,
    next_version: u64,
}

/// The control plane's tables: what each replica sent, and which is in force (see [`Relay::handle_routes`]).
#[derive(Debug, Default)]
struct Tables {
    /// The newest table of each replica this node is in session with.
    latest: BTreeMap<NodeId, Routes>,
    /// The table in force and the replica that sent it: the newest of `latest`, or, while no replica is in
    /// session, the last one in force.
    in_force: Option<(NodeId, Routes)>,
}

impl Tables {
    /// Puts the newest of the replicas' tables in force, unless the one in force is as new and its replica
    /// still in session; returns whether the table in force changed.
    fn settle(&mut self) -> bool {
        let Some(newest) = self.latest.values().map(|r| r.version).max() else { return false };
        if self.in_force.as_ref().is_some_and(|(from, r)| r.version == newest && self.latest.contains_key(from)) {
            return false;
        }
        let (from, routes) = self.latest.iter().find(|(_, r)| r.version == newest).expect("the newest is there");
        self.in_force = Some((from.clone(), routes.clone()));
        true
    }
}

/// A backup origin waiting for a stream's owner to fall silent: since when it watches the stream.
#[derive(Debug)]
struct Standby {
    since: Duration,
}

/// An object being forwarded while it arrives.
#[derive(Debug)]
struct InFlight {
    /// The neighbour it comes from.
    from: NodeId,
    /// The downstream subscribers that get it as it arrives.
    fed: BTreeSet<NodeId>,
}

/// An old upstream that keeps feeding a stream until `at` (make-before-break).
#[derive(Debug)]
struct Release {
    at: Duration,
    stream: StreamName,
    peer: NodeId,
}

/// One node's stream and neighbour state machine. See the module documentation.
#[derive(Debug)]
pub struct Relay {
    me: NodeId,
    config: RelayConfig,
    /// The topology's nodes and links with their configured costs, this node's own links included whether
    /// usable or not: shared by every relay of one topology (a simulator runs thousands).
    graph: Arc<Graph>,
    /// The routes when no control plane has spoken, toward each destination asked for so far: shortest paths
    /// over `graph` without this node's unusable links. Computed on first need (a table from the control plane
    /// usually spares it) and forgotten when one of this node's links changes.
    fallback: RefCell<BTreeMap<NodeId, Option<Route>>>,
    /// Route tables from the control plane.
    tables: Tables,
    peers: Peers,
    registry: Registry,
    /// Streams this node owns and is publishing.
    publishing: BTreeMap<StreamName, Publishing>,
    standby: BTreeMap<StreamName, Standby>,
    /// Viewers of each stream at this node (reported).
    viewers: BTreeMap<StreamName, u32>,
    subs: BTreeMap<StreamName, Subscription>,
    in_flight: HashMap<ObjectKey, InFlight>,
    releases: Vec<Release>,
    /// No pass-over ends before this (`None`: none is pending): timers look through the subscriptions only
    /// when one may be due, not on every call.
    next_pass_over: Option<Duration>,
    /// No publisher here falls silent for long enough to end its stream before this (a lower bound, made
    /// exact when it is reached), so that timers need not walk every stream published here.
    next_silence: Option<Duration>,
    /// Whether a report was cut to fit its frame (said once).
    report_cut_logged: bool,
    /// How long this node has been too busy to listen, in all (see [`Relay::handle_stalled`]).
    deaf: Duration,
    /// Subscriptions changed since the links' activity was last marked.
    activity_stale: bool,
    /// An operator is draining this node (reported to the control plane, which routes around it).
    draining: bool,
    /// This run's number, put in every report ([`Report::boot`]).
    boot: u64,
    actions: VecDeque<Action>,
    now: Duration,
}

impl Relay {
    /// A relay for node `me` of a topology whose links are `links` (`(a, b, configured cost)`), after
    /// validating the probe configuration.
    pub fn new(
        me: NodeId,
        nodes: impl IntoIterator<Item = NodeId>,
        links: impl IntoIterator<Item = (NodeId, NodeId, Cost)>,
        config: RelayConfig,
    ) -> Result<Self, ProbeConfigError> {
        let mut graph = Graph::new();
        graph.add_node(&me);
        for node in nodes {
            graph.add_node(&node);
        }
        for (a, b, cost) in links {
            graph.handle_link(&a, &b, cost);
        }
        Self::with_graph(me, Arc::new(graph), config)
    }

    /// A relay for node `me` of the topology `graph` (its nodes and links with their configured costs), after
    /// validating the probe configuration. Relays of one topology may share its graph.
    pub fn with_graph(me: NodeId, graph: Arc<Graph>, config: RelayConfig) -> Result<Self, ProbeConfigError> {
        config.probes.clone().validate()?;
        Ok(Self {
            me,
            config,
            graph,
            fallback: RefCell::default(),
            tables: Tables::default(),
            peers: Peers::default(),
            registry: Registry::default(),
            publishing: BTreeMap::new(),
            standby: BTreeMap::new(),
            viewers: BTreeMap::new(),
            subs: BTreeMap::new(),
            in_flight: HashMap::new(),
            releases: Vec::new(),
            next_pass_over: None,
            next_silence: None,
            report_cut_logged: false,
            deaf: Duration::ZERO,
            activity_stale: false,
            draining: false,
            boot: 0,
            actions: VecDeque::new(),
            now: Duration::ZERO,
        })
    }

    /// The same relay, its reports carrying `boot`: the number the node drew when it started, which its
    /// health checks answer with too ([`Report::boot`]).
    pub fn with_boot(self, boot: u64) -> Self {
        Self { boot, ..self }
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.mark_carrying();
        self.actions.pop_front()
    }

    /// When [`Relay::handle_timeout`] must be called next: a probe, a link verdict, the end of a hold or of
    /// a pass-over. `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let links = self.link_timeouts().map(|t| t.down.map_or(t.next, |down| t.next.min(down)));
        links.chain(self.stream_timeout()).min()
    }

    /// [`Relay::poll_timeout`]'s part for links, one per connection.
    pub fn link_timeouts(&self) -> impl Iterator<Item = LinkTimeout> + '_ {
        self.peers.iter().map(|p| p.timeout(self.config.probes.down_after, self.deaf))
    }

    /// Asks the processor to bring the neighbours' link state into its caches, without waiting for it, ahead
    /// of [`Relay::handle_link_timeout`] calls on them: `windows` false, the neighbours themselves; true, their
    /// probe windows, which are found through them (so, once those are in). A simulator that drives thousands
    /// of relays in turn hides most of the memory's latency so (see `sim::engine::Trains::share`).
    pub fn prefetch_links(&self, windows: bool) {
        if windows {
            self.peers.all.iter().for_each(|p| p.estimator.prefetch());
        } else {
            crate::prefetch::slice(&self.peers.all);
            crate::prefetch::slice(&self.peers.conns);
        }
    }

    /// [`Relay::link_timeouts`] for the link on connection `conn` alone.
    pub fn link_timeout(&self, conn: ConnId) -> Option<LinkTimeout> {
        let p = self.peers.by_conn(conn)?;
        Some(p.timeout(self.config.probes.down_after, self.deaf))
    }

    /// [`Relay::poll_timeout`]'s part for streams: the end of a hold or of a pass-over.
    pub fn stream_timeout(&self) -> Option<Duration> {
        let releases = self.releases.iter().map(|r| r.at);
        let passes = self.next_pass_over;
        let forget = self.registry.next_forget(self.config.linger);
        releases.chain(passes).chain(self.next_silence).chain(forget).min()
    }

    /// How long a publisher may be silent before its stream ends.
    fn silence(&self, p: &Publishing) -> Duration {
        p.target.unwrap_or(self.config.default_target) * SILENT_TARGETS
    }

    /// Time passed: sends due probes, judges links, ends holds and pass-overs.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        self.mark_carrying();
        let mut changed = Vec::new();
        for peer in self.peers.iter_mut() {
            let (probe, down) = peer.handle_timeout(now, self.config.probes.down_after, self.deaf);
            if let Some(seq) = probe {
                self.actions.push_back(Action::Probe { to: peer.id.clone(), seq });
            }
            if down {
                changed.push(peer.id.clone());
            }
        }
        for peer in changed {
            self.verdict(peer, false);
        }

        let due: Vec<Release> = self.releases.extract_if(.., |r| r.at <= now).collect();
        for r in due {
            self.release(r.stream, r.peer);
        }

        if self.next_pass_over.is_some_and(|at| at <= now) {
            let mut expired = Vec::new();
            let mut next: Option<Duration> = None;
            for (stream, sub) in &mut self.subs {
                let before = sub.passed_over.len();
                sub.passed_over.retain(|_, until| *until > now);
                if sub.passed_over.len() != before {
                    expired.push(stream.clone());
                }
                next = sub.passed_over.values().copied().chain(next).min();
            }
            self.next_pass_over = next;
            for stream in expired {
                self.ensure_upstream(&stream);
            }
        }

        if self.next_silence.is_some_and(|at| at <= now) {
            let silent: Vec<StreamName> = self
                .publishing
                .iter()
                .filter(|(_, p)| now >= p.last + self.silence(p))
                .map(|(s, _)| s.clone())
                .collect();
            for stream in silent {
                tracing::info!(%stream, "publisher silent for three target durations; the stream ends");
                self.end_here(&stream);
            }
            self.next_silence = self.publishing.values().map(|p| p.last + self.silence(p)).min();
        }
        for stream in self.registry.forget_ended(now, self.config.linger) {
            tracing::debug!(%stream, "ended stream forgotten");
            self.standby.remove(&stream);
            if let Some(sub) = self.subs.remove(&stream) {
                if let Some(up) = sub.upstream {
                    self.unsubscribe(&stream, &up);
                }
            }
            self.actions.push_back(Action::Forget { stream });
        }
    }

    /// [`Relay::handle_timeout`]'s part for the link on connection `conn` alone, at one of its own deadlines
    /// ([`Relay::link_timeout`]): returns the probe due (to send as [`Action::Probe`] would ask) and the
    /// link's deadlines from then on; a verdict goes to the actions. A driver that knows a link's probes can
    /// only be answered in time (the simulator, which knows its links) runs them a link at a time, apart from
    /// the node's other deadlines, which `handle_timeout` runs with every link's.
    pub fn handle_link_timeout(&mut self, now: Duration, conn: ConnId) -> Option<(Option<u64>, LinkTimeout)> {
        self.advance(now);
        self.mark_carrying();
        let (down_after, deaf) = (self.config.probes.down_after, self.deaf);
        let peer = self.peers.by_conn_mut(conn)?;
        let (probe, down) = peer.handle_timeout(now, down_after, deaf);
        let timeout = peer.timeout(down_after, deaf);
        if down {
            let id = peer.id.clone();
            self.verdict(id, false);
        }
        Some((probe, timeout))
    }

    /// Whether actions wait for [`Relay::poll_action`].
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Origin ingest asks to publish an object of `stream`: the version to give it, or why not. A stream
    /// that starts (here first, again after it ended or its publisher restarted, taken over by this backup
    /// or back from one) is announced in a new epoch, and everyone purges the older epoch's objects.
    pub fn handle_claim(&mut self, now: Duration, stream: &StreamName, claim: Claim) -> Result<u64, Refused> {
        self.advance(now);
        let silent = if claim.backup { Some(self.watch(stream)) } else { None };
        // An origin that does not remember publishing the stream (it restarted, say) starts a new epoch:
        // going on in the old one would number objects below those every cache holds.
        let claim = Claim { restart: claim.restart || !self.publishing.contains_key(stream), ..claim };
        let claimed = self.registry.claim(&self.me, stream, &claim, silent, self.config.takeover)?;
        if let Claimed::Started { epoch } = claimed {
            tracing::info!(%stream, epoch, backup = claim.backup, "publishing starts a new epoch here");
            self.publishing.remove(stream);
            self.announce(None, stream.clone(), self.me.clone(), epoch, claim.backup);
        }
        self.standby.remove(stream);
        let p = self.publishing.entry(stream.clone()).or_insert_with(|| Publishing {
            last: now,
            target: None,
            next_version: first_version(self.registry.owner(stream).map_or(0, |o| o.epoch)),
        });
        p.last = now;
        p.target = claim.target.or(p.target);
        p.next_version += 1;
        let p = &self.publishing[stream];
        let silent_at = p.last + self.silence(p);
        lower_bound(&mut self.next_silence, silent_at);
        Ok(p.next_version)
    }

    /// A backup origin's publisher knocks: watch the stream (subscribe to it as a viewer would) and say how
    /// long its objects have not arrived here.
    fn watch(&mut self, stream: &StreamName) -> Duration {
        let now = self.now;
        let since = self.standby.entry(stream.clone()).or_insert(Standby { since: now }).since;
        let sub = self.subs.entry(stream.clone()).or_default();
        let last = sub.last_object.map_or(since, |t| t.max(since));
        if !sub.local {
            sub.local = true;
            self.ensure_upstream(stream);
        }
        now.saturating_sub(last)
    }

    /// The publisher of `stream` deleted its playlist: the stream ends now.
    pub fn handle_end(&mut self, now: Duration, stream: &StreamName) {
        self.advance(now);
        if self.publishing.contains_key(stream) {
            tracing::info!(%stream, "playlist deleted; the stream ends");
            self.end_here(stream);
        }
    }

    /// An operator took `stream` down or lifted that: here (`from: None`), from a control replica, or
    /// flooded by a neighbour. Newer than what is known, it is kept and flooded on.
    pub fn handle_takedown(&mut self, now: Duration, from: Option<&NodeId>, stream: &StreamName, t: Takedown) {
        self.advance(now);
        if !self.registry.takedown(stream, t.clone()) {
            return;
        }
        if t.active {
            tracing::warn!(%stream, reason = %t.reason, "stream taken down");
        } else {
            tracing::info!(%stream, "takedown lifted");
        }
        let frame = Frame::Takedown { stream: stream.clone(), version: t.version, active: t.active, reason: t.reason };
        self.flood(from, frame);
        self.actions.push_back(Action::Takedowns);
    }

    /// How many distinct viewers watch `stream` here (counted by the edge), for the reports.
    pub fn handle_viewers(&mut self, stream: &StreamName, viewers: u32) {
        if viewers == 0 {
            self.viewers.remove(stream);
        } else {
            self.viewers.insert(stream.clone(), viewers);
        }
    }

    /// The version an operator's takedown (or lift) of `stream` issued here at `unix_ms` gets: above every
    /// one known.
    pub fn next_takedown_version(&self, stream: &StreamName, unix_ms: u64) -> u64 {
        let known = self.registry.takedowns().find(|(s, _)| *s == stream).map_or(0, |(_, t)| t.version);
        unix_ms.max(known + 1)
    }

    /// Every takedown this node knows, lifted ones included (they keep an older takedown from coming back).
    pub fn takedowns(&self) -> impl Iterator<Item = (&StreamName, &Takedown)> + '_ {
        self.registry.takedowns()
    }

    /// The reason `stream` is taken down, if it is.
    pub fn taken_down(&self, stream: &StreamName) -> Option<&str> {
        self.registry.taken_down(stream)
    }

    /// Ends a stream published here: tells every node, and has the caller end its playlists.
    fn end_here(&mut self, stream: &StreamName) {
        let Some(p) = self.publishing.remove(stream) else { return };
        let Some(owner) = self.registry.owner(stream).cloned() else { return };
        if self.registry.end(self.now, stream, &self.me, owner.epoch) {
            self.flood(None, Frame::Withdraw { stream: stream.clone(), origin: self.me.clone(), epoch: owner.epoch });
            self.actions.push_back(Action::Ended { stream: stream.clone(), next_version: p.next_version + 1 });
        }
    }

    /// A new connection to `peer` is up (its hello exchanged). A connection that replaces an older one drops
    /// everything the older one carried first, and every known stream is announced to the newcomer.
    pub fn handle_peer_up(&mut self, now: Duration, peer: NodeId, conn: ConnId) {
        self.advance(now);
        if self.peers.contains(&peer) {
            tracing::info!(%peer, "a newer connection replaces the old one");
            self.forget_peer(&peer);
        }
        let estimator = LinkEstimator::new(self.config.probes.clone()).expect("validated in Relay::new");
        self.peers.insert(Peer {
            id: peer.clone(),
            conn,
            estimator,
            up: true,
            heard: nanos(now),
            deaf_at_heard: nanos(self.deaf),
            usual_gap: 0,
        });
        self.link_changed();
        // Takedowns first: the newcomer must not serve a stream it learns of before it learns it is down.
        for (stream, t) in self.registry.takedowns() {
            let (version, active, reason) = (t.version, t.active, t.reason.clone());
            let frame = Frame::Takedown { stream: stream.clone(), version, active, reason };
            self.actions.push_back(Action::Send { to: peer.clone(), frame });
        }
        for (stream, o) in self.registry.owners() {
            let (origin, epoch, backup) = (o.origin.clone(), o.epoch, o.backup);
            let frame = Frame::Announce { stream: stream.clone(), origin: origin.clone(), epoch, backup };
            self.actions.push_back(Action::Send { to: peer.clone(), frame });
            if o.ended.is_some() {
                let frame = Frame::Withdraw { stream: stream.clone(), origin, epoch };
                self.actions.push_back(Action::Send { to: peer.clone(), frame });
            }
        }
        self.rehome_all();
    }

    /// The connection `conn` to `peer` ended. An older connection, already replaced, changes nothing.
    pub fn handle_peer_down(&mut self, now: Duration, peer: &NodeId, conn: ConnId) {
        self.advance(now);
        if self.peers.on(peer, conn).is_none() {
            return;
        }
        tracing::warn!(%peer, "mesh peer down");
        self.forget_peer(peer);
        self.rehome_all();
    }

    /// The transport's running totals of packets sent to `peer` on connection `conn` and declared lost, as of
    /// `now` (see [`LinkEstimator::handle_packet_counts`]): on a link that carries a stream, the evidence
    /// that shows its loss within a second or two.
    pub fn handle_packet_counts(&mut self, now: Duration, peer: &NodeId, conn: ConnId, sent: u64, lost: u64) {
        self.advance(now);
        if let Some(p) = self.peers.on(peer, conn) {
            p.estimator.handle_packet_counts(now, sent, lost);
        }
    }

    /// Probe `seq` on connection `conn` to `peer` was echoed at `now`.
    pub fn handle_probe_reply(&mut self, now: Duration, peer: &NodeId, conn: ConnId, seq: u64) {
        self.advance(now);
        let Some(p) = self.peers.on(peer, conn) else { return };
        p.estimator.handle_probe_reply(now, seq);
        p.heard(now, self.deaf);
        if !p.up && !p.estimator.is_down(now) {
            p.back_up(now);
            self.verdict(peer.clone(), true);
        }
    }

    /// Something arrived on connection `conn` from `peer` by `at` (stream data): proof that the link is
    /// alive.
    pub fn handle_heard(&mut self, at: Duration, peer: &NodeId, conn: ConnId) {
        self.advance(at);
        let Some(p) = self.peers.on(peer, conn) else { return };
        p.heard(at, self.deaf);
        if !p.up {
            p.back_up(at);
            self.verdict(peer.clone(), true);
        }
    }

    /// This node has been too busy to run on time for `total` in all since it started (its timers fired
    /// late by that much, summed): silence of a link over such a stall is not the link's.
    pub fn handle_stalled(&mut self, total: Duration) {
        self.deaf = self.deaf.max(total);
    }

    /// An operator drains this node (`true`) or takes it back into service. Draining changes nothing here
    /// at once: the node keeps every subscription it has, so a stream whose only path runs through it is
    /// not cut. It says so in its [`report`](Self::report); the control plane then moves new trees and the
    /// downstream nodes' routes around it where another path exists, and those nodes move their
    /// subscriptions make-before-break, which leaves this node with nothing to relay.
    pub fn handle_drain(&mut self, draining: bool) {
        if self.draining != draining {
            tracing::warn!(draining, "operator drain changed");
        }
        self.draining = draining;
    }

    /// Whether an operator is draining this node.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The streams this node sends on to downstream neighbours: what an operator's drain waits to see gone.
    pub fn relayed(&self) -> impl Iterator<Item = &StreamName> + '_ {
        self.subs.iter().filter(|(_, s)| !s.down.is_empty()).map(|(stream, _)| stream)
    }

    /// A route table from the control replica `from`. The table in force is the newest of those the
    /// replicas in session with this node sent last; when none is in session, the last one in force stays.
    /// Returns whether the table in force changed.
    ///
    /// Versions are times of change by each replica's own clock, so a replica whose clock runs ahead (an
    /// hour, on a machine never set) gives versions no other replica reaches for that long. Were the newest
    /// version ever seen to win, its last table would stay in force, and the routes frozen, for the hour
    /// after it died; instead its table leaves with its session
    /// ([`handle_control_ended`](Self::handle_control_ended)), and what the other replicas sent takes over.
    pub fn handle_routes(&mut self, now: Duration, from: &NodeId, routes: Routes) -> bool {
        self.advance(now);
        if self.tables.latest.get(from).is_some_and(|held| held.version >= routes.version) {
            return false;
        }
        self.tables.latest.insert(from.clone(), routes);
        self.tables_changed()
    }

    /// The session with control replica `from` ended: its tables no longer count, and the newest of the
    /// other replicas' is put in force (when none is in session, its table stays in force).
    pub fn handle_control_ended(&mut self, now: Duration, from: &NodeId) {
        self.advance(now);
        if self.tables.latest.remove(from).is_some() {
            self.tables_changed();
        }
    }

    /// The version of the control plane's table in force, if one is.
    pub fn table_version(&self) -> Option<u64> {
        self.tables.in_force.as_ref().map(|(_, r)| r.version)
    }

    fn tables_changed(&mut self) -> bool {
        if !self.tables.settle() {
            return false;
        }
        let (from, routes) = self.tables.in_force.as_ref().expect("settled");
        tracing::info!(
            control = %from,
            version = routes.version,
            routes = routes.routes.len(),
            "applying routes from the control plane"
        );
        self.rehome_all();
        true
    }

    /// A control frame from a neighbour, on connection `conn`.
    pub fn handle_frame(&mut self, now: Duration, peer: &NodeId, conn: ConnId, frame: Frame) {
        self.advance(now);
        if self.peers.on(peer, conn).is_none() {
            return; // from a connection already gone or replaced
        }
        match frame {
            Frame::Announce { stream, origin, epoch, backup } => {
                self.announce(Some(peer), stream, origin, epoch, backup)
            }
            Frame::Withdraw { stream, origin, epoch } => {
                if self.registry.end(self.now, &stream, &origin, epoch) {
                    tracing::info!(%stream, %origin, "stream ended");
                    self.flood(Some(peer), Frame::Withdraw { stream, origin, epoch });
                }
            }
            Frame::Takedown { stream, version, active, reason } => {
                self.handle_takedown(now, Some(peer), &stream, Takedown { version, active, reason })
            }
            Frame::Subscribe { stream } => self.subscribed(peer, stream),
            Frame::Unsubscribe { stream } => {
                if let Some(sub) = self.subs.get_mut(&stream) {
                    sub.told.remove(peer);
                    sub.down.remove(peer);
                }
                self.ensure_upstream(&stream);
            }
            Frame::Unavailable { stream } => {
                let until = self.now + self.config.pass_over;
                // Only the upstream in force speaks for the stream: word from a former one is stale (sent
                // across a partition, say, and delivered once it healed).
                let Some(sub) = self.subs.get_mut(&stream).filter(|s| s.upstream.as_ref() == Some(peer)) else {
                    return;
                };
                tracing::info!(%peer, %stream, "upstream cannot get the stream; routing around it");
                sub.passed_over.insert(peer.clone(), until);
                lower_bound(&mut self.next_pass_over, until);
                self.ensure_upstream(&stream);
            }
            Frame::Hello { .. } | Frame::Object(_) | Frame::Report(_) | Frame::Routes(_) => {
                tracing::warn!(%peer, "unexpected frame on the control stream; ignored");
            }
        }
    }

    /// A local viewer wants `stream`: subscribe toward its origin unless already receiving it.
    pub fn handle_want(&mut self, now: Duration, stream: &StreamName) {
        self.advance(now);
        self.subs.entry(stream.clone()).or_default().local = true;
        self.ensure_upstream(stream);
    }

    /// A neighbour started sending an object (its header arrived); `held` says whether the caller's cache
    /// holds this version or a newer one already. New objects are forwarded as they arrive to the
    /// downstream subscribers of this moment; whoever subscribes later gets the object from the cache once it
    /// is complete.
    ///
    /// A live object (`held` false) from the upstream a route change moved the stream to ends the
    /// make-before-break: the old upstream is released now rather than at the end of the hold.
    pub fn handle_incoming(&mut self, from: &NodeId, header: &ObjectHeader, held: bool) -> Incoming {
        let key = ObjectKey::of(header);
        if !held {
            self.made(from, &header.stream);
        }
        if held || self.in_flight.contains_key(&key) {
            return Incoming::Duplicate;
        }
        let down: Vec<NodeId> = self
            .subs
            .get(&header.stream)
            .map(|sub| sub.down.iter().filter(|p| *p != from && self.peers.contains(p)).cloned().collect())
            .unwrap_or_default();
        self.in_flight.insert(key, InFlight { from: from.clone(), fed: down.iter().cloned().collect() });
        Incoming::Forward(down)
    }

    /// An object forwarded while it arrived has ended, `complete` or cut short. Returns who must get the
    /// cached copy instead: those it was fed to, when it was cut short but `held` says another copy of the
    /// version completed meanwhile.
    pub fn handle_passed(&mut self, from: &NodeId, key: &ObjectKey, complete: bool, held: bool) -> Vec<NodeId> {
        if self.in_flight.get(key).is_none_or(|f| &f.from != from) {
            return Vec::new();
        }
        let fed = self.in_flight.remove(key).expect("checked above").fed;
        if complete || !held {
            return Vec::new();
        }
        let Some(sub) = self.subs.get(&key.stream) else { return Vec::new() };
        fed.into_iter().filter(|p| sub.down.contains(p)).collect()
    }

    /// An object entered this node's cache, new: from a neighbour, or ingested here (`from: None`, this
    /// node is the stream's origin and announces it on its first object). Returns the downstream subscribers
    /// to send the whole object to: those not fed while it arrived.
    ///
    /// An object ingested here must have been claimed first ([`Relay::handle_claim`]).
    pub fn handle_object(&mut self, now: Duration, from: Option<&NodeId>, header: &ObjectHeader) -> Vec<NodeId> {
        self.advance(now);
        let stream = &header.stream;
        if let Some(peer) = from {
            // Data is proof of life.
            if let Some(p) = self.peers.get_mut(peer) {
                p.heard(now, self.deaf);
            }
        }
        let Some(sub) = self.subs.get_mut(stream) else { return Vec::new() };
        if from.is_some() {
            sub.last_object = Some(now);
        }
        let sub = &*sub;
        let fed = self.in_flight.get(&ObjectKey::of(header)).map(|f| &f.fed);
        sub.down
            .iter()
            .filter(|p| Some(*p) != from && fed.is_none_or(|f| !f.contains(*p)) && self.peers.contains(p))
            .cloned()
            .collect()
    }

    /// What this node knows of a stream; `None` when no origin announced it.
    pub fn stream(&self, stream: &StreamName) -> Option<StreamState> {
        let owner = self.registry.owner(stream)?;
        let local = owner.origin == self.me;
        let receiving = local || self.subs.get(stream).is_some_and(|s| s.upstream.is_some());
        let reachable = receiving || self.upstream_for(stream).peer().is_some();
        let phase = self.registry.phase(stream).unwrap_or(StreamPhase::Live);
        Some(StreamState { origin: owner.origin.clone(), epoch: owner.epoch, phase, reachable, receiving })
    }

    /// Every announced stream's state.
    pub fn streams(&self) -> impl Iterator<Item = (&StreamName, StreamState)> + '_ {
        self.registry.owners().filter_map(|(s, _)| Some((s, self.stream(s)?)))
    }

    /// The neighbour this node receives `stream` from, if any.
    pub fn upstream(&self, stream: &StreamName) -> Option<&NodeId> {
        self.subs.get(stream)?.upstream.as_ref()
    }

    /// Whether the link to `peer` is connected and judged up.
    pub fn is_usable(&self, peer: &NodeId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.up)
    }

    /// What this node tells the control plane: its configured neighbours' links (a link is reported up once
    /// measured and while judged up, with its estimator's [`report`](LinkEstimator::report)) and the streams
    /// it carries.
    pub fn report(&mut self, neighbours: impl IntoIterator<Item = NodeId>) -> Report {
        let mut links: Vec<LinkReport> = neighbours
            .into_iter()
            .map(|id| {
                // The estimator's report moves only on a clear change, so every replica that gets the
                // reports builds the same graph, and a report does not change with every probe.
                let (up, m) = self.peers.get_mut(&id).map_or((false, None), Peer::report);
                LinkReport {
                    peer: id,
                    rtt_us: m.map_or(0, |m| m.rtt.as_micros() as u64),
                    jitter_us: m.map_or(0, |m| m.jitter.as_micros() as u64),
                    loss_ppm: m.map_or(0, |m| (m.loss * 1e6) as u32),
                    up,
                }
            })
            .collect();
        links.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut streams: Vec<StreamReport> = self
            .registry
            .owners()
            .filter_map(|(stream, owner)| {
                let local = owner.origin == self.me;
                let upstream = self.subs.get(stream).and_then(|s| s.upstream.clone());
                let viewers = self.viewers.get(stream).copied().unwrap_or(0);
                (local || upstream.is_some() || viewers > 0).then(|| StreamReport {
                    stream: stream.clone(),
                    origin: owner.origin.clone(),
                    upstream,
                    epoch: owner.epoch,
                    phase: self.registry.phase(stream).unwrap_or(StreamPhase::Live),
                    viewers,
                })
            })
            .collect();
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        // The newest few: what a replica may not know yet, within the frame's size limit.
        let mut takedowns: Vec<(StreamName, Takedown)> =
            self.registry.takedowns().map(|(s, t)| (s.clone(), t.clone())).collect();
        takedowns.sort_by(|a, b| b.1.version.cmp(&a.1.version).then_with(|| a.0.cmp(&b.0)));
        takedowns.truncate(REPORTED_TAKEDOWNS);
        let mut report = Report {
            node: self.me.clone(),
            links,
            streams: Vec::new(),
            takedowns,
            draining: self.draining,
            boot: self.boot,
        };
        let mut room = {
            let mut out = Vec::new();
            Frame::Report(report.clone()).encode(&mut out);
            crate::wire::MAX_FRAME.saturating_sub(out.len() + REPORT_SLACK)
        };
        let total = streams.len();
        // A stream's encoding: three names with their lengths, an epoch, a phase and a viewer count.
        streams.retain(|s| {
            let size = s.stream.as_str().len()
                + s.origin.as_str().len()
                + s.upstream.as_ref().map_or(0, |u| u.as_str().len())
                + 24;
            let fits = size <= room;
            room -= if fits { size } else { 0 };
            fits
        });
        if streams.len() < total && !self.report_cut_logged {
            self.report_cut_logged = true;
            tracing::warn!(reported = streams.len(), streams = total, "more streams than a report frame holds; the control plane's stream view shows the first by name (logged once)");
        }
        report.streams = streams;
        report
    }

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// A link's verdict changed: route around it, or back onto it.
    fn verdict(&mut self, peer: NodeId, up: bool) {
        if up {
            tracing::info!(%peer, "link answers again");
        } else {
            tracing::warn!(%peer, "link stopped answering probes and carries no data; failing over");
        }
        self.link_changed();
        self.actions.push_back(Action::Verdict { peer, up });
        self.rehome_all();
    }

    /// One of this node's links became usable or stopped being usable: the fallback routes, which count
    /// only usable links of this node, must be computed anew.
    fn link_changed(&mut self) {
        self.fallback.get_mut().clear();
    }

    /// The fallback route toward `dest` (see `fallback`), computed if not known yet.
    fn fallback_route(&self, dest: &NodeId) -> Option<Route> {
        if let Some(route) = self.fallback.borrow().get(dest) {
            return route.clone();
        }
        let mut graph = Graph::clone(&self.graph);
        if let Some(me) = graph.index_of(&self.me) {
            let down: Vec<NodeId> =
                graph.neighbours(me).map(|(n, _)| graph.id(n).clone()).filter(|n| !self.is_usable(n)).collect();
            for peer in &down {
                graph.handle_link_down(&self.me, peer);
            }
        }
        let route = RouteTable::compute(&graph, &self.me).route(dest).cloned();
        self.fallback.borrow_mut().insert(dest.clone(), route.clone());
        route
    }

    /// Drops a neighbour's connection state: its subscriptions to us, ours through it, and its link.
    fn forget_peer(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
        self.activity_stale = true;
        for sub in self.subs.values_mut() {
            sub.down.remove(peer);
            sub.told.remove(peer);
            sub.passed_over.remove(peer);
            if sub.upstream.as_ref() == Some(peer) {
                sub.upstream = None;
            }
        }
        self.releases.retain(|r| &r.peer != peer);
        self.in_flight.retain(|_, f| &f.from != peer);
        self.link_changed();
    }

    fn rehome_all(&mut self) {
        let streams: Vec<StreamName> = self.subs.keys().cloned().collect();
        for stream in streams {
            self.ensure_upstream(&stream);
        }
    }

    fn subscribed(&mut self, peer: &NodeId, stream: StreamName) {
        let sub = self.subs.entry(stream.clone()).or_default();
        if sub.upstream.as_ref() == Some(peer) {
            // Our own upstream asks us for the stream: it lost its path. Route around it first; it is served
            // once we receive the stream from elsewhere.
            tracing::info!(%peer, %stream, "upstream subscribed back; routing around it");
            let until = self.now + self.config.pass_over;
            sub.passed_over.insert(peer.clone(), until);
            lower_bound(&mut self.next_pass_over, until);
            self.ensure_upstream(&stream);
            if self.subs.get(&stream).is_some_and(|s| s.upstream.as_ref() == Some(peer)) {
                // No other way: accepting would close a loop.
                self.actions.push_back(Action::Send { to: peer.clone(), frame: Frame::Unavailable { stream } });
                return;
            }
        }
        let sub = self.subs.entry(stream.clone()).or_default();
        if !sub.down.insert(peer.clone()) {
            return; // already subscribed: its window went out then
        }
        tracing::debug!(%peer, %stream, "downstream subscribed");
        // Serve the live window at once, then whatever arrives next.
        self.actions.push_back(Action::SendWindow { to: peer.clone(), stream: stream.clone() });
        self.ensure_upstream(&stream);
    }

    fn announce(&mut self, from: Option<&NodeId>, stream: StreamName, origin: NodeId, epoch: u64, backup: bool) {
        let Some(replaced) = self.registry.announce(&stream, origin.clone(), epoch, backup) else { return };
        tracing::info!(%stream, %origin, epoch, backup, "stream announced");
        if replaced > 0 {
            self.actions.push_back(Action::Purge { stream: stream.clone(), below: first_version(epoch) });
        }
        if origin != self.me && self.publishing.remove(&stream).is_some() {
            tracing::warn!(%stream, owner = %origin, "another origin owns the stream now; this one stops publishing it");
        }
        self.flood(from, Frame::Announce { stream: stream.clone(), origin, epoch, backup });
        self.ensure_upstream(&stream);
    }

    fn flood(&mut self, except: Option<&NodeId>, frame: Frame) {
        for peer in self.peers.iter().map(|p| &p.id) {
            if Some(peer) != except {
                self.actions.push_back(Action::Send { to: peer.clone(), frame: frame.clone() });
            }
        }
    }

    /// Marks the links that bring this node a stream (an upstream, or an old upstream still on hold), so that
    /// they are probed fast. A link that carries streams only away from this node is probed at the slow
    /// interval: its other end, which receives them, probes it fast and fails over on its own verdict, and the
    /// sender's loss evidence is the connection's own packets ([`Relay::handle_packet_counts`]), not probes.
    /// A relay fanning a stream out to hundreds of edges would otherwise send and answer ten probes a second
    /// on each of them, twice what the failover needs.
    fn mark_carrying(&mut self) {
        if !std::mem::take(&mut self.activity_stale) {
            return;
        }
        let mut carrying: BTreeSet<&NodeId> = self.releases.iter().map(|r| &r.peer).collect();
        for sub in self.subs.values() {
            carrying.extend(sub.upstream.iter());
        }
        for peer in self.peers.iter_mut() {
            peer.estimator.set_active(carrying.contains(&peer.id));
        }
    }

    /// Puts the stream's upstream subscription where the routes say, or drops it when nobody wants the
    /// stream any more.
    fn ensure_upstream(&mut self, stream: &StreamName) {
        let Some(sub) = self.subs.get(stream) else { return };
        self.activity_stale = true;
        let wanted = sub.wanted();
        let origin = self.registry.owner(stream).map(|r| r.origin.clone());
        let choice = match &origin {
            Some(origin) if wanted && *origin != self.me => self.upstream_for(stream),
            _ => Upstream::None,
        };
        let usable = matches!(choice, Upstream::Chosen(_));
        let target = choice.peer();
        let current = sub.upstream.clone();
        if current != target {
            if let Some(next) = &target {
                tracing::info!(%stream, upstream = %next, "subscribing upstream");
                self.actions
                    .push_back(Action::Send { to: next.clone(), frame: Frame::Subscribe { stream: stream.clone() } });
            }
            if let Some(old) = current.filter(|old| self.peers.contains(old)) {
                let passed_over = sub.passed_over.contains_key(&old);
                if target.is_some() && self.is_usable(&old) && !passed_over {
                    // Make before break: the old upstream keeps feeding until the new one has taken over;
                    // duplicates are dropped by name.
                    self.releases.push(Release { at: self.now + self.config.hold, stream: stream.clone(), peer: old });
                } else {
                    self.unsubscribe(stream, &old);
                }
            }
            self.subs.get_mut(stream).expect("checked above").upstream = target.clone();
        }
        let sub = self.subs.get_mut(stream).expect("checked above");
        let lost = wanted && !usable && origin.as_ref().is_some_and(|o| *o != self.me);
        if lost {
            // Nothing usable to receive the stream from: tell the subscribers, so that they route around us
            // where they can.
            let untold: Vec<NodeId> = sub.down.difference(&sub.told).cloned().collect();
            for peer in untold {
                tracing::info!(%stream, downstream = %peer, "stream unavailable here; telling the subscriber");
                sub.told.insert(peer.clone());
                self.actions.push_back(Action::Send { to: peer, frame: Frame::Unavailable { stream: stream.clone() } });
            }
        } else {
            sub.told.clear();
        }
        if !wanted && sub.upstream.is_none() && sub.passed_over.is_empty() {
            self.subs.remove(stream);
        }
    }

    /// `from` delivers a live object of `stream`: when it is the upstream a route change moved the stream to,
    /// the new path is made, and the old upstreams still feeding the stream are released.
    fn made(&mut self, from: &NodeId, stream: &StreamName) {
        if self.releases.is_empty() || self.subs.get(stream).and_then(|s| s.upstream.as_ref()) != Some(from) {
            return;
        }
        let (done, kept): (Vec<Release>, Vec<Release>) =
            std::mem::take(&mut self.releases).into_iter().partition(|r| r.stream == *stream && r.peer != *from);
        self.releases = kept;
        for r in done {
            tracing::debug!(%stream, new = %from, old = %r.peer, "the new upstream delivers; releasing the old one");
            self.release(r.stream, r.peer);
        }
    }

    /// The hold of an old upstream is over: unsubscribe unless it became the upstream again.
    fn release(&mut self, stream: StreamName, peer: NodeId) {
        if self.subs.get(&stream).is_some_and(|s| s.upstream.as_ref() == Some(&peer)) {
            return;
        }
        self.unsubscribe(&stream, &peer);
    }

    fn unsubscribe(&mut self, stream: &StreamName, peer: &NodeId) {
        self.actions.push_back(Action::Send { to: peer.clone(), frame: Frame::Unsubscribe { stream: stream.clone() } });
    }
}

/// Keeps `bound` a lower bound of deadlines that include `at` (the timers made exact only when reached).
fn lower_bound(bound: &mut Option<Duration>, at: Duration) {
    *bound = Some(bound.map_or(at, |t| t.min(at)));
}
