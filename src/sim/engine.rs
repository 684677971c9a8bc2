//! The discrete-event engine: one time-ordered queue, one seeded RNG, simulated time in microseconds.
//!
//! Events, and what each one drives:
//!
//! - `Probe`: a node's [`LinkEstimator`] for one neighbour is polled ([`LinkEstimator::poll_probe`]); a probe
//!   it hands out crosses the link both ways (latency plus jitter each way, each way lost per the link's loss,
//!   never answered across a down link or by a crashed node). Its reply is handed to the estimator, at the
//!   time it arrives, before anything next reads or drives that estimator (a reply is not an event of its
//!   own: the estimator's state between two uses is never observed). The next `Probe` is at the estimator's
//!   [`LinkEstimator::poll_timeout`].
//! - `Recompute`, every `control.recompute_ms`: the control plane's round. Each node reports each link as a
//!   live node does: what its estimator reports ([`LinkEstimator::report`]: its metrics, moved on only by a
//!   clear change), or down when the estimator declares it down or has measured nothing yet; a crashed node's
//!   last report is kept until it is 3 s stale. Only links whose ends were driven since the last round, or
//!   have not settled, are read. The reports go to one [`Planner`], the live replica's computation: the
//!   measured graph, a [`RouteTree`](crate::routing::RouteTree) per origin updated link by link, the damper.
//!   When the damped routes change they are pushed; a round that can change nothing is skipped.
//! - Connections: a live node starts a fresh estimator for every QUIC connection, and a connection dies after
//!   5 s without a packet. So a link that comes back after more than 5 s down, and every link of a node that
//!   recovers from a crash (a restarted process dials anew), gets fresh estimators at both ends; a shorter
//!   outage keeps them (the estimator forgets the probes the outage lost once the link answers again).
//! - `TablePush`: the tables arrive at every node `control.push_delay_ms` after the recomputation. Links that
//!   now carry a watched stream are marked active, so their estimators probe fast.
//! - `Segment`: an origin emits one object; each edge watching the stream receives it by each strategy (see
//!   [`Strategy`] and [`Engine::arrival`]).
//! - `Fault` (and `LinkState`, the later flips of a flapping link): links down or up, nodes crash or recover,
//!   latencies change, regions are cut off, the control plane stops.
//!
//! Ties in time go to the event scheduled first, so a run depends only on the scenario and the seed.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::histogram::Histogram;
use super::queue::{EventQueue, Timed};
use super::scenario::{FaultKind, Scenario};
use crate::id::NodeId;
use crate::relay;
use crate::routing::{DampingConfig, Graph, LinkEstimator, LinkMetrics, MeshRoutes, NodeIx, Planner, Round};
use crate::topology::Topology;

/// Simulated time in microseconds since the start of the run.
pub type Micros = u64;

/// The live control plane forgets a report this old (`REPORT_STALE_AFTER` in `src/control/mod.rs`).
const REPORT_STALE_AFTER: Micros = 3_000_000;
/// A live node's QUIC connection to a neighbour dies after this long without a packet (the idle timeout of
/// `transport()` in `src/mesh/peer.rs`); the next one starts a fresh estimator at each end.
const CONNECTION_IDLE_TIMEOUT: Micros = 5_000_000;
/// QUIC packets are about this long; an object of `n` bytes risks loss `ceil(n / MTU)` times per crossing.
const PACKET_BYTES: u64 = 1_200;
/// Fault timelines: how many faults get one, and the window and resolution around each.
const TIMELINES: usize = 12;
const TIMELINE_BEFORE: Micros = 5_000_000;
const TIMELINE_AFTER: Micros = 20_000_000;
const TIMELINE_BUCKET: Micros = 250_000;
const NONE: u32 = u32::MAX;

/// How an object gets from its origin to an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The overlay: hop by hop along the control plane's damped routes in force, with local failover to the
    /// backup when a node's own estimator declares its next hop down.
    Overlay,
    /// The shortest-path tree over the topology's latencies at t = 0, fixed, without failover.
    Static,
    /// Straight from the origin to the edge over their direct link, when the topology has one (the public
    /// Internet's own path, in the `internet` scenario).
    Direct,
}

pub const STRATEGIES: [Strategy; 3] = [Strategy::Overlay, Strategy::Static, Strategy::Direct];

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Overlay => "overlay",
            Strategy::Static => "static",
            Strategy::Direct => "direct",
        }
    }
}

/// One node's forwarding toward one origin, by node index (`NONE` when absent).
#[derive(Debug, Clone, Copy)]
struct Hops {
    primary: u32,
    backup: u32,
}

/// Every node's forwarding, per origin slot then per node.
type Forwarding = Rc<Vec<Vec<Hops>>>;

enum Event {
    Fault(usize),
    LinkState { link: u32, up: bool },
    Probe { est: u32 },
    Recompute,
    TablePush(Forwarding),
    Segment { stream: u32 },
}

struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
}

impl Timed for Scheduled {
    fn key(&self) -> (Micros, u64) {
        (self.at, self.seq)
    }
}

/// The engine's side of one estimator.
#[derive(Debug, Clone, Copy)]
struct Probing {
    /// When its pending `Probe` event is due; other `Probe` events for it are stale.
    wake: Micros,
    /// The next reply on its way back, (arrival, seq); arrival `Micros::MAX` when none.
    reply: (Micros, u64),
    /// [`LinkEstimator::down_at`] (`Micros::MAX` for never) and [`LinkEstimator::settled_after`], as of the
    /// last time it was driven: whether it is down needs no look at the estimator itself.
    down_at: Micros,
    settled_after: Micros,
    /// Driven since the last recomputation: with `settled_after`, whether the recomputation must read it.
    driven: bool,
}

const NO_REPLY: (Micros, u64) = (Micros::MAX, 0);

struct Link {
    a: u32,
    b: u32,
    latency: Micros,
    up: bool,
    /// When it last went down.
    down_since: Micros,
}

/// Deliveries of one strategy over one period: how many were due, lost, late, and the latencies.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub due: u64,
    pub lost: u64,
    pub late: u64,
    pub latency: Histogram,
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        self.due += other.due;
        self.lost += other.lost;
        self.late += other.late;
        self.latency.merge(&other.latency);
    }
}

/// One stream's deliveries, by strategy (in [`STRATEGIES`] order).
#[derive(Debug, Clone, Default)]
pub struct StreamOutcome {
    pub edges: usize,
    /// Objects the origin emitted.
    pub objects: u64,
    /// Edges with a direct link from the origin (the direct strategy's deliveries are theirs only).
    pub direct_edges: usize,
    pub all: [Tally; 3],
    /// Objects emitted before the first fault.
    pub steady: [Tally; 3],
}

/// One fault's effect on the overlay.
#[derive(Debug, Clone)]
pub struct FaultOutcome {
    /// Index in the scenario's (expanded) fault list.
    pub index: usize,
    pub at: Micros,
    /// (stream, edge) pairs that lost at least one object emitted between this fault and the next.
    pub affected: u64,
    /// Objects lost in that window.
    pub lost: u64,
    /// From the fault to the moment the last affected pair receives, after its last loss of the window, an
    /// object again; 0 when nothing was lost, `None` when some affected pair never receives again.
    pub reroute: Option<Micros>,
}

/// Delivery latency around one fault, by strategy, in `TIMELINE_BUCKET` steps of emission time.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The fault's position in time order.
    pub fault: usize,
    pub start: Micros,
    pub bucket: Micros,
    /// Per bucket, per strategy: the worst latency delivered (`None` when nothing was) and objects lost.
    pub worst: Vec<[Option<Micros>; 3]>,
    pub lost: Vec<[u64; 3]>,
}

/// What a run leaves for the summary.
pub struct Outcome {
    pub ids: Vec<NodeId>,
    /// Each link's ends, by node index.
    pub links: Vec<(u32, u32)>,
    pub events: u64,
    pub table_versions: u64,
    /// Recomputations the control plane ran, and those it skipped because nothing could change.
    pub recomputations: u64,
    pub recomputations_skipped: u64,
    /// Per stream, in scenario order.
    pub streams: Vec<StreamOutcome>,
    /// In time order.
    pub faults: Vec<FaultOutcome>,
    pub timelines: Vec<Timeline>,
    /// Per strategy: path latency over the optimum at emission time, in thousandths (1000 = optimal).
    pub stretch: [Histogram; 3],
    /// Per strategy, per link: bytes carried (both directions).
    pub link_bytes: [Vec<u64>; 3],
    /// The origins, by origin slot, and per strategy the bytes each sent.
    pub origins: Vec<NodeId>,
    pub origin_egress: [Vec<u64>; 3],
}

struct Stream {
    slot: usize,
    segment: Micros,
    bytes: u64,
    /// Probability that one crossing of a link loses at least one of the object's packets.
    object_loss: f64,
    edges: Vec<u32>,
    /// Index of this stream's first (stream, edge) pair.
    pairs: usize,
}

/// Per strategy: the state objects build up as they cross links.
struct Flow {
    /// When each link direction (`2 link + (from is b)`) finishes sending what it has queued.
    busy: Vec<Micros>,
    link_bytes: Vec<u64>,
    origin_egress: Vec<u64>,
}

/// What the current object did at one node, by one strategy: valid when the stamp is current.
#[derive(Debug, Clone, Copy, Default)]
struct Memo {
    stamp: u64,
    /// Arrival latency, `None` when lost.
    arrival: Option<Micros>,
    /// The true latency of the path it took (for stretch).
    path: Micros,
}

pub struct Engine<'a> {
    scenario: &'a Scenario,
    now: Micros,
    end: Micros,
    seq: u64,
    events: u64,
    queue: EventQueue<Scheduled>,
    rng: SmallRng,
    jitter: Micros,
    loss: f64,
    /// Bits per µs each link direction sends; 0 for unlimited.
    bits_per_us: f64,
    late: Micros,
    ids: Vec<NodeId>,
    /// Each node's region.
    regions: Vec<String>,
    links: Vec<Link>,
    /// Per node: (neighbour, link).
    adjacency: Vec<Vec<(u32, u32)>>,
    /// `None` while up; the crash time otherwise.
    crashed: Vec<Option<Micros>>,
    control_up: bool,
    /// Two per link: `2 l` is owned by the link's `a` (probing `b`), `2 l + 1` by `b`.
    estimators: Vec<LinkEstimator>,
    /// What the engine keeps beside each estimator, in one place for the hot path.
    probing: Vec<Probing>,
    /// Replies on their way back after the one in `Probing::reply`, per estimator (rarely any: only while a
    /// link's round trip is longer than its probe interval).
    later_replies: Vec<VecDeque<(Micros, u64)>>,
    last_recompute: Micros,
    /// The origins' node indices, one slot per distinct origin, in id order (the order of `MeshRoutes`).
    origins: Vec<u32>,
    streams: Vec<Stream>,
    /// The control plane: the live replica's computation, fed what the simulated nodes' estimators report.
    planner: Planner,
    /// What each estimator's owner last reported to it (`None`: nothing), so that only changes are handed on.
    reported: Vec<Option<Option<LinkMetrics>>>,
    recomputations: u64,
    recomputations_skipped: u64,
    installed: Forwarding,
    /// The true graph (latencies of up links between up nodes) and its trees: the optimum.
    truth: MeshRoutes,
    fixed: Vec<Vec<u32>>,
    flows: [Flow; 3],
    /// Per strategy, per node.
    memo: [Vec<Memo>; 3],
    /// Per link, the current object's extra delay (jitter, retransmission), drawn once per object so that
    /// every strategy crossing the link sees the same draw; current when its stamp is `emits`.
    draws: Vec<(u64, Micros)>,
    emits: u64,
    walk: Vec<(u32, u32, u32)>,
    outcomes: Vec<StreamOutcome>,
    stretch: [Histogram; 3],
    /// Faults in time order: (time, scenario index); `window` is how many have happened.
    fault_order: Vec<(Micros, usize)>,
    window: usize,
    faults: Vec<FaultOutcome>,
    /// Per (stream, edge) pair: the fault windows with a loss not yet followed by a delivery, and the last
    /// window the pair was counted as affected in (+1).
    pending: Vec<Vec<u32>>,
    counted: Vec<u32>,
    timelines: Vec<Timeline>,
    progress: Option<&'a mut dyn FnMut(Micros, Micros)>,
}

impl<'a> Engine<'a> {
    pub fn new(scenario: &'a Scenario, topology: &Topology, seed: u64) -> Engine<'a> {
        let ids: Vec<NodeId> = topology.nodes.iter().map(|n| n.id.clone()).collect();
        let index: HashMap<&NodeId, u32> = ids.iter().enumerate().map(|(i, id)| (id, i as u32)).collect();
        let mut links = Vec::with_capacity(topology.links.len());
        let mut adjacency = vec![Vec::new(); ids.len()];
        for spec in &topology.links {
            let (a, b) = (index[&spec.a], index[&spec.b]);
            adjacency[a as usize].push((b, links.len() as u32));
            adjacency[b as usize].push((a, links.len() as u32));
            links.push(Link { a, b, latency: ms_to_micros(spec.latency_ms), up: true, down_since: 0 });
        }
        let estimator = LinkEstimator::new(scenario.probes.config()).expect("validated with the scenario");
        let mut origins: Vec<u32> = scenario.workload.streams.iter().map(|s| index[&s.origin]).collect();
        origins.sort_unstable_by(|a, b| ids[*a as usize].cmp(&ids[*b as usize]));
        origins.dedup();
        let origin_ids: Vec<NodeId> = origins.iter().map(|&o| ids[o as usize].clone()).collect();
        let loss = scenario.links.loss;
        let mut pairs = 0;
        let streams: Vec<Stream> = scenario
            .workload
            .streams
            .iter()
            .map(|s| {
                let bytes = (s.bitrate_kbps * s.segment_ms / 8).max(1);
                let edges: Vec<u32> = scenario.edges_of(s, topology).iter().map(|e| index[e]).collect();
                let stream = Stream {
                    slot: origins.iter().position(|&o| o == index[&s.origin]).expect("every origin has a slot"),
                    segment: s.segment_ms * 1000,
                    bytes,
                    object_loss: 1.0 - (1.0 - loss).powf(bytes.div_ceil(PACKET_BYTES) as f64),
                    pairs,
                    edges,
                };
                pairs += stream.edges.len();
                stream
            })
            .collect();
        let mut graph = Graph::new();
        for id in &ids {
            graph.add_node(id);
        }
        let planner = Planner::new(&ids, &origin_ids, DampingConfig::default()).expect("the default damping is valid");
        for link in &links {
            graph.handle_link(&ids[link.a as usize], &ids[link.b as usize], link.latency.max(1));
        }
        let truth = MeshRoutes::new(graph, &origin_ids);
        let fixed = truth
            .trees()
            .iter()
            .map(|tree| {
                (0..ids.len() as u32)
                    .map(|n| tree.next_hop(NodeIx::new(n)).map_or(NONE, |h| h.index() as u32))
                    .collect()
            })
            .collect();
        let flow = || Flow {
            busy: vec![0; 2 * links.len()],
            link_bytes: vec![0; links.len()],
            origin_egress: vec![0; origins.len()],
        };
        let memo = || vec![Memo::default(); ids.len()];
        let outcomes = streams
            .iter()
            .map(|s| StreamOutcome {
                edges: s.edges.len(),
                direct_edges: s
                    .edges
                    .iter()
                    .filter(|&&e| adjacency[origins[s.slot] as usize].iter().any(|&(n, _)| n == e))
                    .count(),
                ..StreamOutcome::default()
            })
            .collect();
        let mut fault_order: Vec<(Micros, usize)> =
            scenario.faults.iter().enumerate().map(|(i, f)| (f.at_us(), i)).collect();
        fault_order.sort();
        let timelines = fault_order
            .iter()
            .take(TIMELINES)
            .enumerate()
            .map(|(k, &(at, _))| {
                let buckets = ((TIMELINE_BEFORE + TIMELINE_AFTER) / TIMELINE_BUCKET) as usize;
                Timeline {
                    fault: k,
                    start: at.saturating_sub(TIMELINE_BEFORE),
                    bucket: TIMELINE_BUCKET,
                    worst: vec![[None; 3]; buckets],
                    lost: vec![[0; 3]; buckets],
                }
            })
            .collect();
        Engine {
            scenario,
            now: 0,
            end: scenario.duration_s * 1_000_000,
            seq: 0,
            events: 0,
            queue: EventQueue::new(),
            rng: SmallRng::seed_from_u64(seed),
            jitter: ms_to_micros(scenario.links.jitter_ms),
            loss,
            bits_per_us: scenario.links.bandwidth_mbps,
            late: scenario.workload.late_ms * 1000,
            crashed: vec![None; ids.len()],
            control_up: true,
            estimators: vec![estimator; 2 * links.len()],
            probing: vec![
                Probing { wake: 0, reply: NO_REPLY, down_at: Micros::MAX, settled_after: 0, driven: true };
                2 * links.len()
            ],
            later_replies: vec![VecDeque::new(); 2 * links.len()],
            last_recompute: 0,
            installed: Rc::new(vec![vec![Hops { primary: NONE, backup: NONE }; ids.len()]; origins.len()]),
            draws: vec![(0, 0); links.len()],
            flows: [flow(), flow(), flow()],
            memo: [memo(), memo(), memo()],
            planner,
            reported: vec![None; 2 * links.len()],
            recomputations: 0,
            recomputations_skipped: 0,
            truth,
            fixed,
            emits: 0,
            walk: Vec::new(),
            outcomes,
            stretch: Default::default(),
            pending: vec![Vec::new(); pairs],
            counted: vec![0; pairs],
            faults: fault_order
                .iter()
                .map(|&(at, index)| FaultOutcome { index, at, affected: 0, lost: 0, reroute: Some(0) })
                .collect(),
            fault_order,
            window: 0,
            timelines,
            progress: None,
            regions: topology.nodes.iter().map(|n| n.region.clone()).collect(),
            ids,
            links,
            adjacency,
            origins,
            streams,
        }
    }

    /// Calls `progress(now, end)` about every simulated second.
    pub fn with_progress(mut self, progress: &'a mut dyn FnMut(Micros, Micros)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Runs the scenario to its end.
    pub fn run(mut self) -> Outcome {
        for k in 0..self.fault_order.len() {
            let (at, i) = self.fault_order[k];
            self.schedule(at, Event::Fault(i));
        }
        // Every node starts probing at t = 0, as a mesh booted at once does. Estimators that probe at the same
        // moment are then handled in the order they are stored, which keeps a run over tens of thousands of
        // them fast (their state is read in sequence); faults and the objects' timing fall at any moment of
        // the probe schedule.
        for est in 0..self.estimators.len() as u32 {
            self.schedule(0, Event::Probe { est });
        }
        self.schedule(self.scenario.control.recompute_ms * 1000, Event::Recompute);
        let start = self.scenario.workload.start_s * 1_000_000;
        for stream in 0..self.streams.len() as u32 {
            self.schedule(start, Event::Segment { stream });
        }
        let mut next_report = 0;
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            if at >= self.end {
                break;
            }
            self.now = at;
            self.events += 1;
            self.handle(event);
            if at >= next_report {
                if let Some(progress) = self.progress.as_mut() {
                    progress(at, self.end);
                }
                next_report = at + 1_000_000;
            }
        }
        let [overlay, fixed, direct] = self.flows;
        let origins = self.origins.iter().map(|&o| self.ids[o as usize].clone()).collect();
        Outcome {
            ids: self.ids,
            links: self.links.iter().map(|l| (l.a, l.b)).collect(),
            events: self.events,
            table_versions: self.planner.version(),
            recomputations: self.recomputations,
            recomputations_skipped: self.recomputations_skipped,
            streams: self.outcomes,
            faults: self.faults,
            timelines: self.timelines,
            stretch: self.stretch,
            link_bytes: [overlay.link_bytes, fixed.link_bytes, direct.link_bytes],
            origins,
            origin_egress: [overlay.origin_egress, fixed.origin_egress, direct.origin_egress],
        }
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, event });
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Fault(i) => self.handle_fault(i),
            Event::LinkState { link, up } => self.set_link(link as usize, up),
            Event::Probe { est } => self.handle_probe(est),
            Event::Recompute => {
                if self.control_up {
                    self.recompute();
                }
                self.schedule(self.now + self.scenario.control.recompute_ms * 1000, Event::Recompute);
            }
            Event::TablePush(tables) => self.install(tables),
            Event::Segment { stream } => {
                self.emit(stream as usize);
                let next = self.now + self.streams[stream as usize].segment;
                self.schedule(next, Event::Segment { stream });
            }
        }
    }

    fn time(at: Micros) -> Duration {
        Duration::from_micros(at)
    }

    fn is_up(&self, node: u32) -> bool {
        self.crashed[node as usize].is_none()
    }

    fn owner(&self, est: u32) -> u32 {
        let link = &self.links[est as usize / 2];
        if est.is_multiple_of(2) {
            link.a
        } else {
            link.b
        }
    }

    fn peer(&self, est: u32) -> u32 {
        self.owner(est ^ 1)
    }

    fn link_between(&self, from: u32, to: u32) -> Option<u32> {
        self.adjacency[from as usize].iter().find(|&&(n, _)| n == to).map(|&(_, l)| l)
    }

    /// The estimator `from` keeps for its link to `to`.
    fn estimator_of(&self, from: u32, to: u32) -> u32 {
        let link = self.link_between(from, to).expect("next hops are neighbours");
        2 * link + u32::from(self.links[link as usize].a != from)
    }

    /// Hands the estimator the replies that have arrived by now.
    fn settle(&mut self, est: u32) {
        let e = est as usize;
        if self.probing[e].reply.0 > self.now {
            return;
        }
        let now = Self::time(self.now);
        while self.probing[e].reply.0 <= self.now {
            let (at, seq) = self.probing[e].reply;
            self.estimators[e].handle_probe_reply(Self::time(at).min(now), seq);
            self.probing[e].reply = self.later_replies[e].pop_front().unwrap_or(NO_REPLY);
        }
        self.driven(est);
    }

    fn driven(&mut self, est: u32) {
        let e = &self.estimators[est as usize];
        let probing = &mut self.probing[est as usize];
        probing.driven = true;
        probing.settled_after = e.settled_after().as_micros() as Micros;
        probing.down_at = e.down_at().map_or(Micros::MAX, |d| d.as_micros() as Micros);
    }

    /// Replies still on their way back over the link of `est` are lost (the link or a node failed).
    fn drop_replies(&mut self, est: u32) {
        self.settle(est);
        self.probing[est as usize].reply = NO_REPLY;
        self.later_replies[est as usize].clear();
    }

    fn is_down(&mut self, est: u32) -> bool {
        self.settle(est);
        self.now >= self.probing[est as usize].down_at
    }

    fn handle_fault(&mut self, i: usize) {
        self.window += 1;
        let fault = &self.scenario.faults[i];
        let node = |e: &Self, id: &Option<NodeId>| e.node_index(id.as_ref().expect("validated"));
        let link = |e: &Self| {
            let (a, b) = (node(e, &fault.a), node(e, &fault.b));
            e.link_between(a, b).expect("validated") as usize
        };
        match fault.kind {
            FaultKind::LinkDown => self.set_link(link(self), false),
            FaultKind::LinkUp => self.set_link(link(self), true),
            FaultKind::Flap => {
                let (l, period) = (link(self), (fault.period_s.expect("validated") * 1e6).round() as Micros);
                let until = (fault.until_s.expect("validated") * 1e6).round() as Micros;
                self.set_link(l, false);
                let (mut at, mut up) = (self.now + period.max(1), true);
                while at < until {
                    self.schedule(at, Event::LinkState { link: l as u32, up });
                    (at, up) = (at + period.max(1), !up);
                }
                self.schedule(until, Event::LinkState { link: l as u32, up: true });
            }
            FaultKind::Latency => {
                let l = link(self);
                self.links[l].latency = ms_to_micros(fault.value.expect("validated"));
                self.update_truth(l);
            }
            FaultKind::NodeCrash => {
                let n = node(self, &fault.a);
                self.crashed[n as usize] = Some(self.now);
                for (_, l) in self.adjacency[n as usize].clone() {
                    self.drop_replies(2 * l);
                    self.drop_replies(2 * l + 1);
                    self.update_truth(l as usize);
                }
            }
            FaultKind::NodeRecover => {
                let n = node(self, &fault.a);
                if self.crashed[n as usize].take().is_some() {
                    // A restarted node dials its neighbours anew: both ends of each link start a fresh
                    // estimator, as a live node does for every new connection.
                    for (_, l) in self.adjacency[n as usize].clone() {
                        self.fresh_estimator(2 * l);
                        self.fresh_estimator(2 * l + 1);
                        self.update_truth(l as usize);
                    }
                }
            }
            FaultKind::Partition | FaultKind::Heal => {
                let region = fault.region.as_deref().expect("validated");
                let inside: Vec<bool> = self.regions.iter().map(|r| r == region).collect();
                for l in 0..self.links.len() {
                    let (a, b) = (self.links[l].a as usize, self.links[l].b as usize);
                    if inside[a] != inside[b] {
                        self.set_link(l, fault.kind == FaultKind::Heal);
                    }
                }
            }
            FaultKind::ControlDown => self.control_up = false,
            FaultKind::ControlUp => self.control_up = true,
        }
    }

    fn set_link(&mut self, l: usize, up: bool) {
        if self.links[l].up == up {
            return;
        }
        self.links[l].up = up;
        if !up {
            self.links[l].down_since = self.now;
            self.drop_replies(2 * l as u32);
            self.drop_replies(2 * l as u32 + 1);
        } else if self.now - self.links[l].down_since >= CONNECTION_IDLE_TIMEOUT {
            // The link's connection timed out while it was down: the link comes back on a new one.
            self.fresh_estimator(2 * l as u32);
            self.fresh_estimator(2 * l as u32 + 1);
        }
        self.update_truth(l);
    }

    /// Replaces an estimator with a fresh one (a new connection), which probes at once if its owner is up. It
    /// probes as fast as the one it replaces: the node knows whether the link carries a stream.
    fn fresh_estimator(&mut self, est: u32) {
        let e = est as usize;
        let active = self.estimators[e].is_active();
        self.estimators[e] = LinkEstimator::new(self.scenario.probes.config()).expect("validated");
        self.estimators[e].set_active(active);
        self.probing[e].reply = NO_REPLY;
        self.later_replies[e].clear();
        self.driven(est);
        if self.is_up(self.owner(est)) {
            self.rearm(est);
        }
    }

    /// Brings the true graph's link `l` in line with the link and its ends.
    fn update_truth(&mut self, l: usize) {
        let link = &self.links[l];
        let (a, b) = (&self.ids[link.a as usize], &self.ids[link.b as usize]);
        if link.up && self.is_up(link.a) && self.is_up(link.b) {
            self.truth.handle_link(a, b, link.latency.max(1));
        } else {
            self.truth.handle_link_down(a, b);
        }
    }

    fn node_index(&self, id: &NodeId) -> u32 {
        self.ids.iter().position(|n| n == id).expect("validated against the topology") as u32
    }

    fn handle_probe(&mut self, est: u32) {
        if self.probing[est as usize].wake != self.now {
            return;
        }
        // A crashed node probes nothing until it recovers.
        if !self.is_up(self.owner(est)) {
            return;
        }
        self.settle(est);
        let now = Self::time(self.now);
        if let Some(seq) = self.estimators[est as usize].poll_probe(now) {
            self.estimators[est as usize].handle_probe_sent(now, seq);
            self.driven(est);
            let link = est as usize / 2;
            if self.links[link].up && self.is_up(self.peer(est)) {
                let there = self.cross(link);
                let back = self.cross(link);
                if let (Some(there), Some(back)) = (there, back) {
                    let e = est as usize;
                    // Replies arrive in the order they were sent (jitter never reorders on a link).
                    let last = self.later_replies[e].back().map_or(self.probing[e].reply.0, |r| r.0);
                    let at = match last {
                        Micros::MAX => self.now + there + back,
                        last => (self.now + there + back).max(last),
                    };
                    if self.probing[e].reply == NO_REPLY {
                        self.probing[e].reply = (at, seq);
                    } else {
                        self.later_replies[e].push_back((at, seq));
                    }
                }
            }
        }
        self.rearm(est);
    }

    /// Schedules the estimator's next `Probe` at its `poll_timeout`.
    fn rearm(&mut self, est: u32) {
        let at = (self.estimators[est as usize].poll_timeout().as_micros() as Micros).max(self.now + 1);
        self.probing[est as usize].wake = at;
        self.schedule(at, Event::Probe { est });
    }

    /// One packet's one-way crossing of a link: its delay, or `None` when lost.
    fn cross(&mut self, link: usize) -> Option<Micros> {
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            return None;
        }
        Some(self.links[link].latency + self.draw_jitter())
    }

    fn draw_jitter(&mut self) -> Micros {
        if self.jitter == 0 {
            0
        } else {
            self.rng.gen_range(0..self.jitter)
        }
    }

    /// The control plane's recomputation (see the module docs).
    fn recompute(&mut self) {
        let since = std::mem::replace(&mut self.last_recompute, self.now);
        for l in 0..self.links.len() {
            // A link whose ends were not driven, have settled, and are up reports what it reported last time.
            let quiet = |est: usize| {
                let p = &self.probing[est];
                !p.driven && p.settled_after <= since && self.crashed[self.owner(est as u32) as usize].is_none()
            };
            if quiet(2 * l) && quiet(2 * l + 1) {
                continue;
            }
            for est in [2 * l as u32, 2 * l as u32 + 1] {
                self.probing[est as usize].driven = false;
                let report = self.report(est);
                if report != self.reported[est as usize] {
                    self.reported[est as usize] = report;
                    let (owner, peer) = (NodeIx::new(self.owner(est)), NodeIx::new(self.peer(est)));
                    self.planner.handle_link_report(owner, peer, report);
                }
            }
        }
        match self.planner.plan(Self::time(self.now)) {
            Round::Skipped => {
                self.recomputations_skipped += 1;
                return;
            }
            Round::Unchanged => {
                self.recomputations += 1;
                return;
            }
            Round::Changed => self.recomputations += 1,
        }
        let n = self.ids.len() as u32;
        let forwarding: Vec<Vec<Hops>> = self
            .planner
            .trees()
            .iter()
            .map(|tree| {
                (0..n)
                    .map(NodeIx::new)
                    .map(|x| Hops {
                        primary: tree.next_hop(x).map_or(NONE, |h| h.index() as u32),
                        backup: tree.backup(x).map_or(NONE, |(h, _)| h.index() as u32),
                    })
                    .collect()
            })
            .collect();
        let at = self.now + self.scenario.control.push_delay_ms * 1000;
        self.schedule(at, Event::TablePush(Rc::new(forwarding)));
    }

    /// What the owner of `est` last reported of its link, as the live node reports it: its metrics, or down
    /// (declared down, or not measured yet); nothing once the owner has been crashed for longer than the
    /// control plane keeps a report.
    fn report(&mut self, est: u32) -> Option<Option<LinkMetrics>> {
        let at = match self.crashed[self.owner(est) as usize] {
            None => self.now,
            Some(crash) if self.now - crash <= REPORT_STALE_AFTER => crash,
            Some(_) => return None,
        };
        self.settle(est);
        if self.estimators[est as usize].is_down(Self::time(at)) {
            return Some(None);
        }
        Some(self.estimators[est as usize].report())
    }

    /// Every node installs the pushed tables; links on the way from a watching edge to its stream's origin
    /// now carry traffic and probe fast.
    fn install(&mut self, tables: Forwarding) {
        let mut active = vec![false; self.estimators.len()];
        let mut reached = vec![u32::MAX; self.ids.len()];
        for (s, stream) in self.streams.iter().enumerate() {
            let slot = stream.slot;
            for &edge in &stream.edges {
                let mut at = edge;
                // Each node is walked once per stream: `reached` holds the stream that last got there.
                while reached[at as usize] != s as u32 && at != self.origins[slot] {
                    reached[at as usize] = s as u32;
                    let via = tables[slot][at as usize].primary;
                    if via == NONE {
                        break;
                    }
                    let est = self.estimator_of(at, via);
                    active[est as usize] = true;
                    active[est as usize ^ 1] = true;
                    at = via;
                }
            }
        }
        self.installed = tables;
        for (est, active) in active.into_iter().enumerate() {
            if self.estimators[est].is_active() != active {
                self.estimators[est].set_active(active);
                if self.is_up(self.owner(est as u32)) {
                    self.rearm(est as u32);
                }
            }
        }
    }

    fn emit(&mut self, s: usize) {
        self.outcomes[s].objects += 1;
        self.emits += 1;
        let steady = self.fault_order.first().is_none_or(|&(at, _)| self.now < at);
        // The timelines whose window holds this emission, and the bucket in it.
        let buckets: Vec<(usize, usize)> = self
            .timelines
            .iter()
            .enumerate()
            .filter(|(_, t)| self.now >= t.start)
            .map(|(i, t)| (i, ((self.now - t.start) / t.bucket) as usize))
            .filter(|&(i, b)| b < self.timelines[i].worst.len())
            .collect();
        let slot = self.streams[s].slot;
        for i in 0..self.streams[s].edges.len() {
            let edge = self.streams[s].edges[i];
            // A crashed edge has no viewers left.
            if !self.is_up(edge) {
                continue;
            }
            let optimum = self.truth.trees()[slot].cost(NodeIx::new(edge));
            for (k, strategy) in STRATEGIES.into_iter().enumerate() {
                let Some(arrival) = self.arrival(strategy, slot, s, edge) else { continue };
                self.record(s, k, steady, arrival.map(|(latency, _)| latency), &buckets);
                if let (Some((_, path)), Some(optimum)) = (arrival, optimum) {
                    self.stretch[k].add(path * 1000 / optimum.max(1));
                }
                if strategy == Strategy::Overlay {
                    let pair = self.streams[s].pairs + i;
                    match arrival {
                        Some((latency, _)) => self.delivered(pair, latency),
                        None => self.lost(pair),
                    }
                }
            }
        }
    }

    fn record(&mut self, s: usize, k: usize, steady: bool, latency: Option<Micros>, buckets: &[(usize, usize)]) {
        let late = self.late;
        let out = &mut self.outcomes[s];
        for tally in [Some(&mut out.all[k]), steady.then_some(&mut out.steady[k])].into_iter().flatten() {
            tally.due += 1;
            match latency {
                None => tally.lost += 1,
                Some(l) => {
                    tally.latency.add(l);
                    if l > late {
                        tally.late += 1;
                    }
                }
            }
        }
        for &(t, b) in buckets {
            let timeline = &mut self.timelines[t];
            match latency {
                None => timeline.lost[b][k] += 1,
                Some(l) => timeline.worst[b][k] = Some(timeline.worst[b][k].map_or(l, |w| w.max(l))),
            }
        }
    }

    /// An overlay loss for a (stream, edge) pair, in the current fault window.
    fn lost(&mut self, pair: usize) {
        if self.window == 0 {
            return;
        }
        let k = self.window - 1;
        self.faults[k].lost += 1;
        if self.counted[pair] != self.window as u32 {
            self.counted[pair] = self.window as u32;
            self.faults[k].affected += 1;
        }
        if self.pending[pair].last() != Some(&(k as u32)) {
            self.pending[pair].push(k as u32);
        }
    }

    /// An overlay delivery: the pair's open losses are over, at `now + latency`.
    fn delivered(&mut self, pair: usize, latency: Micros) {
        for k in std::mem::take(&mut self.pending[pair]) {
            let fault = &mut self.faults[k as usize];
            let took = self.now + latency - fault.at;
            fault.reroute = fault.reroute.map(|r| r.max(took));
        }
    }

    /// When the current object reaches `edge` by `strategy`: `None` when the strategy does not apply (no
    /// direct link), `Some(None)` when it is lost, else its latency and the true latency of its path.
    ///
    /// The overlay's object follows, from the edge up, each node's choice at the moment the origin emits it
    /// (a subscription tree, walked upstream): its primary next hop, or its backup when its own estimator has
    /// declared the primary down (local failover). It is lost when a node has no usable next hop, or when the
    /// hop it takes crosses a down link or reaches a crashed node (a failure not yet detected). The static
    /// tree is walked the same way without failover. Each node is reached once per object and strategy, so
    /// one copy crosses each link of the tree whatever the number of edges below it: it queues behind what the
    /// link already carries, takes `bytes / bandwidth` to send, then the link's latency and the object's
    /// jitter draw (a lost packet costs one more round trip).
    fn arrival(&mut self, strategy: Strategy, slot: usize, s: usize, edge: u32) -> Option<Option<(Micros, Micros)>> {
        let origin = self.origins[slot];
        let k = strategy as usize;
        let stamp = self.emits;
        if strategy == Strategy::Direct {
            let link = self.link_between(edge, origin)?;
            if !self.links[link as usize].up || !self.is_up(origin) {
                return Some(None);
            }
            let at = self.forward(k, s, link as usize, origin, 0);
            return Some(Some((at, self.links[link as usize].latency)));
        }
        self.walk.clear();
        let mut at = edge;
        // The arrival and path latency where the walk stops.
        let base: Option<(Micros, Micros)> = loop {
            let memo = self.memo[k][at as usize];
            if memo.stamp == stamp {
                break memo.arrival.map(|a| (a, memo.path));
            }
            if at == origin {
                break Some((0, 0));
            }
            if self.walk.len() > self.ids.len() {
                break None;
            }
            let via = match strategy {
                Strategy::Overlay => {
                    let hops = self.installed[slot][at as usize];
                    let table = (hops.primary != NONE).then(|| relay::Hops {
                        via: hops.primary,
                        backup: (hops.backup != NONE).then_some(hops.backup),
                    });
                    // The node's own rule: the table's next hop, else its backup, among the links its
                    // estimators judge up. No subscription state is modelled, so there is no current upstream
                    // to keep when neither is.
                    relay::choose(table, None, None, |n| !self.is_down(self.estimator_of(at, n)), |_| false)
                        .peer()
                        .unwrap_or(NONE)
                }
                _ => self.fixed[slot][at as usize],
            };
            if via == NONE {
                break None;
            }
            let link = self.link_between(at, via).expect("next hops are neighbours");
            self.walk.push((at, via, link));
            if !self.links[link as usize].up || !self.is_up(via) {
                break None;
            }
            at = via;
        };
        // Back down the walk: each node's arrival from its upstream's.
        let mut upstream = base;
        for i in (0..self.walk.len()).rev() {
            let (node, via, link) = self.walk[i];
            let here = match upstream {
                Some((arrived, path)) if self.links[link as usize].up && self.is_up(via) => {
                    let at = self.forward(k, s, link as usize, via, arrived);
                    Some((at, path + self.links[link as usize].latency))
                }
                _ => None,
            };
            self.memo[k][node as usize] = Memo { stamp, arrival: here.map(|h| h.0), path: here.map_or(0, |h| h.1) };
            upstream = here;
        }
        Some(upstream)
    }

    /// The current object of stream `s`, ready at `from` at `ready` (µs after emission), crosses `link`:
    /// returns when it is complete at the other end, and accounts its bytes.
    fn forward(&mut self, k: usize, s: usize, link: usize, from: u32, ready: Micros) -> Micros {
        let bytes = self.streams[s].bytes;
        if self.draws[link].0 != self.emits {
            let mut extra = self.draw_jitter();
            if self.streams[s].object_loss > 0.0 && self.rng.gen_bool(self.streams[s].object_loss) {
                extra += 2 * self.links[link].latency + self.draw_jitter();
            }
            self.draws[link] = (self.emits, extra);
        }
        let extra = self.draws[link].1;
        let direction = 2 * link + usize::from(self.links[link].a != from);
        let flow = &mut self.flows[k];
        let mut start = self.now + ready;
        let mut send = 0;
        if self.bits_per_us > 0.0 {
            start = start.max(flow.busy[direction]);
            send = ((bytes * 8) as f64 / self.bits_per_us).ceil() as Micros;
            flow.busy[direction] = start + send;
        }
        flow.link_bytes[link] += bytes;
        if from == self.origins[self.streams[s].slot] {
            flow.origin_egress[self.streams[s].slot] += bytes;
        }
        start + send + self.links[link].latency + extra - self.now
    }
}

fn ms_to_micros(ms: f64) -> Micros {
    (ms * 1000.0).round() as Micros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_convert_to_whole_microseconds() {
        assert_eq!(ms_to_micros(1.75), 1_750);
        assert_eq!(ms_to_micros(0.0004), 0);
        assert_eq!(ms_to_micros(120.0), 120_000);
    }
}
