//! The discrete-event engine: one time-ordered queue, one seeded RNG, simulated time in microseconds.
//!
//! Events, and what each one drives:
//!
//! - `Probe`: a node's [`LinkEstimator`] for one neighbour is polled ([`LinkEstimator::poll_probe`]); a probe
//!   it hands out crosses the link both ways (latency plus jitter each way, each way lost per the link's loss,
//!   never answered across a down link or by a crashed node) and comes back as a `ProbeReply`. The next
//!   `Probe` is at the estimator's [`LinkEstimator::poll_timeout`].
//! - `Recompute`, every second: the control plane's graph from the estimators' current reports (the rules of
//!   `src/control/plan.rs`: a link is in when one end reports it up and no end reports it down, cost the worse
//!   end's [`LinkMetrics::cost`](crate::routing::LinkMetrics::cost) rounded up to whole ms; a crashed node's
//!   last report is kept until it is 3 s stale, as the live control plane does), a [`RouteTree`] per origin,
//!   through one [`RouteDamper`]. When the damped tables change they are pushed.
//! - `TablePush`: the tables arrive at every node 50 ms after the recomputation. Links that now carry
//!   traffic are marked active, so their estimators probe fast.
//! - `Segment`: an origin emits one object; every edge with viewers receives it along the next hops its nodes
//!   hold at that moment (see [`Engine::deliver`]), and, for comparison, along the static shortest-path tree
//!   of the topology at t = 0.
//! - `Fault`: a link goes down or up, a node crashes, a link's latency changes.
//!
//! Ties in time go to the event scheduled first, so a run depends only on the scenario and the seed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::scenario::{FaultKind, Scenario};
use crate::id::NodeId;
use crate::routing::{DampingConfig, Graph, LinkEstimator, ProbeConfig, RouteDamper, RouteTree};
use crate::topology::Topology;

/// Simulated time in microseconds since the start of the run.
pub type Micros = u64;

const RECOMPUTE_EVERY: Micros = 1_000_000;
const TABLE_PUSH_DELAY: Micros = 50_000;
/// The live control plane forgets a report this old (`REPORT_STALE_AFTER` in `src/control/mod.rs`).
const REPORT_STALE_AFTER: Micros = 3_000_000;
const NONE: u32 = u32::MAX;

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
    Probe { est: u32 },
    ProbeReply { est: u32, seq: u64 },
    Recompute,
    TablePush(Forwarding),
    Segment { stream: usize },
}

struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
/// Reversed, so that the max-heap pops the earliest event (and the first scheduled among equal times).
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Link {
    a: u32,
    b: u32,
    latency: Micros,
    up: bool,
}

/// One object's fate at one edge.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The edge's node index.
    pub edge: u32,
    /// When the origin emitted the object.
    pub sent: Micros,
    /// Delivery latency through the overlay's routes, `None` when lost.
    pub overlay: Option<Micros>,
    /// Delivery latency along the static shortest-path tree of t = 0, `None` when lost.
    pub fixed: Option<Micros>,
}

/// What a run leaves for the summary.
pub struct Outcome {
    pub ids: Vec<NodeId>,
    pub links: usize,
    pub events: u64,
    pub table_versions: u64,
    /// Per stream, in scenario order.
    pub samples: Vec<Vec<Sample>>,
    /// Per stream: how many objects its origin emitted.
    pub emitted: Vec<u64>,
}

struct Stream {
    slot: usize,
    segment: Micros,
    edges: Vec<u32>,
}

pub struct Engine<'a> {
    scenario: &'a Scenario,
    now: Micros,
    end: Micros,
    seq: u64,
    events: u64,
    queue: BinaryHeap<Scheduled>,
    rng: StdRng,
    jitter: Micros,
    loss: f64,
    ids: Vec<NodeId>,
    links: Vec<Link>,
    link_of: HashMap<(u32, u32), u32>,
    /// `None` while up; the crash time otherwise.
    crashed: Vec<Option<Micros>>,
    /// Two per link: `2 l` is owned by the link's `a` (probing `b`), `2 l + 1` by `b`.
    estimators: Vec<LinkEstimator>,
    /// When each estimator's pending `Probe` event is due; other `Probe` events for it are stale.
    wake: Vec<Micros>,
    /// The origins' node indices, one slot per distinct origin.
    origins: Vec<u32>,
    streams: Vec<Stream>,
    damper: RouteDamper,
    installed: Forwarding,
    fixed: Vec<Vec<u32>>,
    /// The current object's crossing of each link, drawn on first use (see [`Engine::deliver`]); an entry is
    /// current when its stamp is `emits`.
    crossing: Vec<(u64, Micros)>,
    emits: u64,
    samples: Vec<Vec<Sample>>,
    emitted: Vec<u64>,
}

impl<'a> Engine<'a> {
    pub fn new(scenario: &'a Scenario, topology: &Topology, seed: u64) -> Engine<'a> {
        let ids: Vec<NodeId> = topology.nodes.iter().map(|n| n.id.clone()).collect();
        let index: HashMap<&NodeId, u32> = ids.iter().enumerate().map(|(i, id)| (id, i as u32)).collect();
        let mut links = Vec::new();
        let mut link_of = HashMap::new();
        for spec in &topology.links {
            let (a, b) = (index[&spec.a], index[&spec.b]);
            link_of.insert((a, b), links.len() as u32);
            link_of.insert((b, a), links.len() as u32);
            links.push(Link { a, b, latency: ms_to_micros(spec.latency_ms), up: true });
        }
        let estimator = LinkEstimator::new(ProbeConfig::default()).expect("the default probe config is valid");
        let mut origins: Vec<u32> = scenario.workload.streams.iter().map(|s| index[&s.origin]).collect();
        origins.sort_unstable();
        origins.dedup();
        let streams = scenario
            .workload
            .streams
            .iter()
            .map(|s| Stream {
                slot: origins.binary_search(&index[&s.origin]).expect("every origin has a slot"),
                segment: s.segment_ms * 1000,
                edges: scenario.edges_of(s, topology).iter().map(|e| index[e]).collect(),
            })
            .collect();
        let mut engine = Engine {
            scenario,
            now: 0,
            end: scenario.duration_s * 1_000_000,
            seq: 0,
            events: 0,
            queue: BinaryHeap::new(),
            rng: StdRng::seed_from_u64(seed),
            jitter: ms_to_micros(scenario.links.jitter_ms),
            loss: scenario.links.loss,
            crashed: vec![None; ids.len()],
            estimators: vec![estimator; 2 * links.len()],
            wake: vec![0; 2 * links.len()],
            installed: Rc::new(vec![vec![Hops { primary: NONE, backup: NONE }; ids.len()]; origins.len()]),
            fixed: Vec::new(),
            crossing: vec![(0, 0); links.len()],
            emits: 0,
            samples: vec![Vec::new(); scenario.workload.streams.len()],
            emitted: vec![0; scenario.workload.streams.len()],
            damper: RouteDamper::new(DampingConfig::default()).expect("the default damping config is valid"),
            ids,
            links,
            link_of,
            origins,
            streams,
        };
        engine.fixed = engine.static_trees();
        engine
    }

    /// Runs the scenario to its end.
    pub fn run(mut self) -> Outcome {
        for (i, f) in self.scenario.faults.iter().enumerate() {
            self.schedule((f.at_s * 1e6).round() as Micros, Event::Fault(i));
        }
        for est in 0..self.estimators.len() as u32 {
            self.schedule(0, Event::Probe { est });
        }
        self.schedule(RECOMPUTE_EVERY, Event::Recompute);
        let start = self.scenario.workload.start_s * 1_000_000;
        for stream in 0..self.streams.len() {
            self.schedule(start, Event::Segment { stream });
        }
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            if at >= self.end {
                break;
            }
            self.now = at;
            self.events += 1;
            self.handle(event);
        }
        Outcome {
            ids: self.ids,
            links: self.links.len(),
            events: self.events,
            table_versions: self.damper.version(),
            samples: self.samples,
            emitted: self.emitted,
        }
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, event });
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Fault(i) => self.handle_fault(i),
            Event::Probe { est } => self.handle_probe(est),
            Event::ProbeReply { est, seq } => {
                if self.is_up(self.owner(est)) {
                    let now = self.now();
                    self.estimators[est as usize].handle_probe_reply(now, seq);
                }
            }
            Event::Recompute => {
                self.recompute();
                self.schedule(self.now + RECOMPUTE_EVERY, Event::Recompute);
            }
            Event::TablePush(tables) => self.install(tables),
            Event::Segment { stream } => {
                self.emit(stream);
                let next = self.now + self.streams[stream].segment;
                self.schedule(next, Event::Segment { stream });
            }
        }
    }

    fn now(&self) -> Duration {
        Duration::from_micros(self.now)
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

    /// The estimator `from` keeps for its link to `to`.
    fn estimator_of(&self, from: u32, to: u32) -> u32 {
        let link = self.link_of[&(from, to)];
        2 * link + u32::from(self.links[link as usize].a != from)
    }

    fn handle_fault(&mut self, i: usize) {
        let fault = &self.scenario.faults[i];
        let a = self.node_index(&fault.a);
        let b = fault.b.as_ref().map(|b| self.node_index(b));
        let link = b.map(|b| self.link_of[&(a, b)] as usize);
        match fault.kind {
            FaultKind::NodeCrash => self.crashed[a as usize] = Some(self.now),
            FaultKind::LinkDown => self.links[link.expect("validated")].up = false,
            FaultKind::LinkUp => self.links[link.expect("validated")].up = true,
            FaultKind::Latency => {
                self.links[link.expect("validated")].latency = ms_to_micros(fault.value.expect("validated"))
            }
        }
    }

    fn node_index(&self, id: &NodeId) -> u32 {
        self.ids.iter().position(|n| n == id).expect("validated against the topology") as u32
    }

    fn handle_probe(&mut self, est: u32) {
        if self.wake[est as usize] != self.now {
            return;
        }
        // A crashed node probes nothing, ever again.
        if !self.is_up(self.owner(est)) {
            return;
        }
        let now = self.now();
        if let Some(seq) = self.estimators[est as usize].poll_probe(now) {
            self.estimators[est as usize].handle_probe_sent(now, seq);
            let link = est as usize / 2;
            if self.links[link].up && self.is_up(self.peer(est)) {
                let there = self.cross(link);
                let back = self.cross(link);
                if let (Some(there), Some(back)) = (there, back) {
                    self.schedule(self.now + there + back, Event::ProbeReply { est, seq });
                }
            }
        }
        self.rearm(est);
    }

    /// Schedules the estimator's next `Probe` at its `poll_timeout`.
    fn rearm(&mut self, est: u32) {
        let at = (self.estimators[est as usize].poll_timeout().as_micros() as Micros).max(self.now + 1);
        self.wake[est as usize] = at;
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
        let mut graph = Graph::new();
        for id in &self.ids {
            graph.add_node(id);
        }
        for (l, link) in self.links.iter().enumerate() {
            let (mut up, mut down, mut cost) = (false, false, 0);
            for est in [2 * l, 2 * l + 1] {
                // What the owner last reported: now, or as of its crash while that report is not stale.
                let at = match self.crashed[self.owner(est as u32) as usize] {
                    None => self.now,
                    Some(crash) if self.now - crash <= REPORT_STALE_AFTER => crash,
                    Some(_) => continue,
                };
                let estimator = &self.estimators[est];
                if estimator.is_down(Duration::from_micros(at)) {
                    down = true;
                } else if let Some(m) = estimator.metrics() {
                    up = true;
                    cost = cost.max((m.cost().div_ceil(1000) * 1000).max(1000));
                }
            }
            if up && !down {
                graph.handle_link(&self.ids[link.a as usize], &self.ids[link.b as usize], cost);
            }
        }
        let trees: Vec<RouteTree> = self
            .origins
            .iter()
            .map(|&o| RouteTree::compute(&graph, graph.index_of(&self.ids[o as usize]).expect("every node is added")))
            .collect();
        if !self.damper.handle_routes(self.now(), &graph, &trees) {
            return;
        }
        let index: HashMap<&NodeId, u32> = self.ids.iter().enumerate().map(|(i, id)| (id, i as u32)).collect();
        let mut forwarding = vec![vec![Hops { primary: NONE, backup: NONE }; self.ids.len()]; self.origins.len()];
        for (node, table) in self.damper.tables() {
            for (slot, &origin) in self.origins.iter().enumerate() {
                if let Some(route) = table.route(&self.ids[origin as usize]) {
                    forwarding[slot][index[node] as usize] = Hops {
                        primary: index[&route.primary.via],
                        backup: route.backup.as_ref().map_or(NONE, |b| index[&b.via]),
                    };
                }
            }
        }
        self.schedule(self.now + TABLE_PUSH_DELAY, Event::TablePush(Rc::new(forwarding)));
    }

    /// Every node installs the pushed tables; links on a primary next hop now carry traffic and probe fast.
    fn install(&mut self, tables: Forwarding) {
        let mut active = vec![false; self.estimators.len()];
        for per_node in tables.iter() {
            for (node, hops) in per_node.iter().enumerate() {
                if hops.primary != NONE {
                    let est = self.estimator_of(node as u32, hops.primary);
                    active[est as usize] = true;
                    active[est as usize ^ 1] = true;
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

    fn emit(&mut self, stream: usize) {
        self.emitted[stream] += 1;
        self.emits += 1;
        let slot = self.streams[stream].slot;
        for i in 0..self.streams[stream].edges.len() {
            let edge = self.streams[stream].edges[i];
            // A crashed edge has no viewers left.
            if !self.is_up(edge) {
                continue;
            }
            let overlay = self.deliver(edge, slot, true);
            let fixed = self.deliver(edge, slot, false);
            self.samples[stream].push(Sample { edge, sent: self.now, overlay, fixed });
        }
    }

    /// The latency of one object from origin `slot` to `edge`, or `None` when it is lost.
    ///
    /// The object follows, from the edge up, each node's choice at the moment the origin emits it (a
    /// subscription tree, walked upstream): its primary next hop, or its backup when its own estimator has
    /// declared the primary down (local failover). It is lost when a node has no usable next hop, or when the
    /// hop it takes crosses a down link or reaches a crashed node (a failure not yet detected). Each link adds
    /// its latency and jitter, drawn once per object; a packet the link loses is retransmitted, one round trip
    /// later. With `overlay`
    /// false the static shortest-path tree of t = 0 is followed instead, without failover.
    fn deliver(&mut self, edge: u32, slot: usize, overlay: bool) -> Option<Micros> {
        let origin = self.origins[slot];
        let (mut at, mut total) = (edge, 0);
        for _ in 0..self.ids.len() {
            if at == origin {
                return Some(total);
            }
            let via = if overlay {
                let hops = self.installed[slot][at as usize];
                let is_down = |e: &Self, to: u32| e.estimators[e.estimator_of(at, to) as usize].is_down(e.now());
                if hops.primary == NONE {
                    return None;
                } else if !is_down(self, hops.primary) {
                    hops.primary
                } else if hops.backup != NONE && !is_down(self, hops.backup) {
                    hops.backup
                } else {
                    return None;
                }
            } else {
                self.fixed[slot][at as usize]
            };
            if via == NONE {
                return None;
            }
            let link = self.link_of[&(at, via)] as usize;
            if !self.links[link].up || !self.is_up(via) {
                return None;
            }
            total += self.object_crossing(link);
            at = via;
        }
        None
    }

    /// The current object's delay across `link`: drawn once per object and link, since one copy crosses each
    /// link of the tree whatever the number of edges below it (and the static tree's walk then sees the same
    /// draws, so the two differ by their paths, not by luck).
    fn object_crossing(&mut self, link: usize) -> Micros {
        if self.crossing[link].0 != self.emits {
            let delay = match self.cross(link) {
                Some(delay) => delay,
                None => 3 * self.links[link].latency + self.draw_jitter(),
            };
            self.crossing[link] = (self.emits, delay);
        }
        self.crossing[link].1
    }

    /// The shortest-path next hops toward each origin over the topology's latencies, as they are at t = 0.
    fn static_trees(&self) -> Vec<Vec<u32>> {
        let mut graph = Graph::new();
        for id in &self.ids {
            graph.add_node(id);
        }
        for link in &self.links {
            graph.handle_link(&self.ids[link.a as usize], &self.ids[link.b as usize], link.latency);
        }
        self.origins
            .iter()
            .map(|&o| {
                let tree = RouteTree::compute(&graph, graph.index_of(&self.ids[o as usize]).expect("added"));
                (0..self.ids.len())
                    .map(|n| {
                        let ix = graph.index_of(&self.ids[n]).expect("added");
                        tree.next_hop(ix).map_or(NONE, |h| self.node_index(graph.id(h)))
                    })
                    .collect()
            })
            .collect()
    }
}

fn ms_to_micros(ms: f64) -> Micros {
    (ms * 1000.0).round() as Micros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_pops_in_time_order_then_in_scheduling_order() {
        let mut queue = BinaryHeap::new();
        for (seq, at) in [(1, 30), (2, 10), (3, 30), (4, 20), (5, 10)] {
            queue.push(Scheduled { at, seq, event: Event::Recompute });
        }
        let order: Vec<(Micros, u64)> = std::iter::from_fn(|| queue.pop()).map(|s| (s.at, s.seq)).collect();
        assert_eq!(order, [(10, 2), (10, 5), (20, 4), (30, 1), (30, 3)]);
    }

    #[test]
    fn milliseconds_convert_to_whole_microseconds() {
        assert_eq!(ms_to_micros(1.75), 1_750);
        assert_eq!(ms_to_micros(0.0004), 0);
        assert_eq!(ms_to_micros(120.0), 120_000);
    }
}
