//! A stepping harness for [`Relay`]: several relays joined by links the test connects, cuts, repairs and
//! restarts, with frames, objects and probe replies delivered at once over each working link and time
//! advanced in steps. Each test states one behaviour of the relay core on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;
use crate::wire::Route;

const STEP: Duration = Duration::from_millis(10);

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn stream() -> StreamName {
    StreamName::new("s").unwrap()
}

struct Node {
    relay: Relay,
    /// The cache: newest version and header of each object name.
    cache: BTreeMap<ObjectName, ObjectHeader>,
    /// Copies that arrived of objects already held or on their way (dropped by the dedupe).
    duplicates: u64,
    /// Frames this node sent, in order: (to, frame).
    sent: Vec<(NodeId, Frame)>,
    verdicts: Vec<(NodeId, bool)>,
    /// Probes this node sent, by neighbour.
    probes: BTreeMap<NodeId, u64>,
    /// Streams whose end this node (their origin) was told to carry out.
    ended: Vec<StreamName>,
}

/// A link between two nodes: its connection id (one per connection), and whether it carries anything.
struct Link {
    conn: ConnId,
    working: bool,
}

struct Net {
    nodes: BTreeMap<NodeId, Node>,
    topology: Vec<(NodeId, NodeId, Cost)>,
    links: BTreeMap<(NodeId, NodeId), Link>,
    next_conn: ConnId,
    now: Duration,
    next_seq: u64,
    config: RelayConfig,
}

fn key(a: &NodeId, b: &NodeId) -> (NodeId, NodeId) {
    if a < b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl Net {
    /// Relays for `links` (`(a, b, configured ms)`), every link connected.
    fn new(links: &[(&str, &str, u64)]) -> Net {
        let topology: Vec<(NodeId, NodeId, Cost)> = links.iter().map(|(a, b, ms)| (id(a), id(b), ms * 1000)).collect();
        let mut net = Net {
            nodes: BTreeMap::new(),
            topology,
            links: BTreeMap::new(),
            next_conn: 1,
            now: Duration::ZERO,
            next_seq: 1,
            config: RelayConfig::default(),
        };
        let names: BTreeSet<NodeId> = net.topology.iter().flat_map(|(a, b, _)| [a.clone(), b.clone()]).collect();
        for n in names {
            net.boot(&n);
        }
        for (a, b, _) in net.topology.clone() {
            net.connect(&a, &b);
        }
        net
    }

    fn boot(&mut self, n: &NodeId) {
        let nodes = self.topology.iter().flat_map(|(a, b, _)| [a.clone(), b.clone()]);
        let relay = Relay::new(n.clone(), nodes, self.topology.clone(), self.config.clone()).unwrap();
        self.nodes.insert(
            n.clone(),
            Node {
                relay,
                cache: BTreeMap::new(),
                duplicates: 0,
                sent: Vec::new(),
                verdicts: Vec::new(),
                probes: BTreeMap::new(),
                ended: Vec::new(),
            },
        );
    }

    fn node(&self, n: &str) -> &Node {
        &self.nodes[&id(n)]
    }

    fn relay(&mut self, n: &str) -> &mut Relay {
        &mut self.nodes.get_mut(&id(n)).unwrap().relay
    }

    /// A new connection between `a` and `b` (replacing any older one on both sides).
    fn connect(&mut self, a: &NodeId, b: &NodeId) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.links.insert(key(a, b), Link { conn, working: true });
        let now = self.now;
        self.nodes.get_mut(a).unwrap().relay.handle_peer_up(now, b.clone(), conn);
        self.nodes.get_mut(b).unwrap().relay.handle_peer_up(now, a.clone(), conn);
        self.settle();
    }

    /// The connection between `a` and `b` ends on both sides.
    fn disconnect(&mut self, a: &str, b: &str) {
        let (a, b) = (id(a), id(b));
        let Some(link) = self.links.remove(&key(&a, &b)) else { return };
        let now = self.now;
        self.nodes.get_mut(&a).unwrap().relay.handle_peer_down(now, &b, link.conn);
        self.nodes.get_mut(&b).unwrap().relay.handle_peer_down(now, &a, link.conn);
        self.settle();
    }

    /// The link stops (or starts again) carrying anything, its connection left as it is.
    fn cut(&mut self, a: &str, b: &str, working: bool) {
        self.links.get_mut(&key(&id(a), &id(b))).unwrap().working = working;
    }

    /// `n` is killed and started again at once: it loses all state, and each neighbour sees a new
    /// connection before the old one has timed out.
    fn restart(&mut self, n: &str) {
        let n = id(n);
        self.boot(&n);
        let peers: Vec<NodeId> = self
            .links
            .keys()
            .filter_map(|(a, b)| {
                if *a == n {
                    Some(b.clone())
                } else if *b == n {
                    Some(a.clone())
                } else {
                    None
                }
            })
            .collect();
        for p in peers {
            self.connect(&n, &p);
        }
    }

    fn working(&self, a: &NodeId, b: &NodeId) -> Option<ConnId> {
        self.links.get(&key(a, b)).filter(|l| l.working).map(|l| l.conn)
    }

    /// Delivers every pending action until none is left.
    fn settle(&mut self) {
        loop {
            let mut any = false;
            let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
            for n in &ids {
                while let Some(action) = self.nodes.get_mut(n).unwrap().relay.poll_action() {
                    any = true;
                    self.execute(n, action);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn execute(&mut self, from: &NodeId, action: Action) {
        let now = self.now;
        match action {
            Action::Send { to, frame } => {
                self.nodes.get_mut(from).unwrap().sent.push((to.clone(), frame.clone()));
                if let Some(conn) = self.working(from, &to) {
                    self.nodes.get_mut(&to).unwrap().relay.handle_frame(now, from, conn, frame);
                }
            }
            Action::SendWindow { to, stream } => {
                let window: Vec<ObjectHeader> =
                    self.nodes[from].cache.values().filter(|h| h.stream == stream).cloned().collect();
                for header in window {
                    self.send_object(from, &to, &header);
                }
            }
            Action::Probe { to, seq } => {
                *self.nodes.get_mut(from).unwrap().probes.entry(to.clone()).or_default() += 1;
                if let Some(conn) = self.working(from, &to) {
                    self.nodes.get_mut(from).unwrap().relay.handle_probe_reply(now, &to, conn, seq);
                }
            }
            Action::Verdict { peer, up } => self.nodes.get_mut(from).unwrap().verdicts.push((peer, up)),
            Action::Purge { below, .. } => self.nodes.get_mut(from).unwrap().cache.retain(|_, h| h.version >= below),
            Action::Forget { .. } => self.nodes.get_mut(from).unwrap().cache.clear(),
            Action::Ended { stream, .. } => self.nodes.get_mut(from).unwrap().ended.push(stream),
            Action::Takedowns => {}
        }
    }

    /// One object from `from` to `to`, over the link if it works: forwarded on as it arrives when new.
    fn send_object(&mut self, from: &NodeId, to: &NodeId, header: &ObjectHeader) {
        let Some(conn) = self.working(from, to) else { return };
        let now = self.now;
        let node = self.nodes.get_mut(to).unwrap();
        node.relay.handle_heard(now, from, conn);
        let held = node.cache.get(&header.name).is_some_and(|h| h.version >= header.version);
        let on = match node.relay.handle_incoming(from, header, held) {
            Incoming::Duplicate => {
                node.duplicates += 1;
                return;
            }
            Incoming::Forward(on) => on,
        };
        for next in &on {
            self.send_object(to, next, header);
        }
        let node = self.nodes.get_mut(to).unwrap();
        node.cache.insert(header.name.clone(), header.clone());
        let rest = node.relay.handle_object(now, Some(from), header);
        node.relay.handle_passed(from, &ObjectKey::of(header), true, true);
        for next in &rest {
            self.send_object(to, next, header);
        }
        self.settle();
    }

    /// The origin `o` ingests one object of the stream; returns its name.
    fn publish(&mut self, o: &str) -> ObjectName {
        self.publish_as(o, false).expect("the origin may publish")
    }

    /// Origin `o` (the stream's configured backup or not) is asked to ingest one object of the stream.
    fn publish_as(&mut self, o: &str, backup: bool) -> Result<ObjectName, Refused> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let header = ObjectHeader {
            stream: stream(),
            name: ObjectName::new(format!("seg{seq}.ts")).unwrap(),
            version: seq,
            seq,
            content_type: "video/mp2t".into(),
            duration_ms: 1000,
            born_unix_ms: 1_000 + seq,
            len: 10,
        };
        let o = id(o);
        let now = self.now;
        let node = self.nodes.get_mut(&o).unwrap();
        let claim = Claim { backup, restart: false, unix_ms: 1_000 + now.as_millis() as u64, target: None };
        let version = node.relay.handle_claim(now, &stream(), claim);
        self.settle();
        let node = self.nodes.get_mut(&o).unwrap();
        let version = version?;
        let header = ObjectHeader { version, ..header };
        node.cache.insert(header.name.clone(), header.clone());
        let down = node.relay.handle_object(now, None, &header);
        self.settle();
        for to in down {
            self.send_object(&o, &to, &header);
        }
        Ok(header.name)
    }

    fn phase(&self, n: &str) -> Option<StreamPhase> {
        self.node(n).relay.stream(&stream()).map(|s| s.phase)
    }

    /// Advances time by `d` in steps, driving every relay's timers and checking that no subscription
    /// loops at any step.
    fn run(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.now += STEP;
            let now = self.now;
            for node in self.nodes.values_mut() {
                if node.relay.poll_timeout().is_some_and(|t| t <= now) {
                    node.relay.handle_timeout(now);
                }
            }
            self.settle();
            self.assert_no_loop();
        }
    }

    /// Publishes one object every 100 ms for `d`; returns their names.
    fn stream_for(&mut self, o: &str, d: Duration) -> Vec<ObjectName> {
        let mut names = Vec::new();
        let until = self.now + d;
        while self.now < until {
            names.push(self.publish(o));
            self.run(Duration::from_millis(100));
        }
        names
    }

    fn upstream(&self, n: &str) -> Option<String> {
        self.node(n).relay.upstream(&stream()).map(|u| u.to_string())
    }

    /// No node receives the stream from a node that is downstream of it: following upstreams from any node
    /// never comes back to it.
    fn assert_no_loop(&self) {
        for start in self.nodes.keys() {
            let mut at = start.clone();
            let mut seen = BTreeSet::from([start.clone()]);
            while let Some(up) = self.nodes[&at].relay.upstream(&stream()) {
                assert!(seen.insert(up.clone()), "subscription loop through {seen:?} at {:?}", self.now);
                at = up.clone();
            }
        }
    }

    fn has(&self, n: &str, name: &ObjectName) -> bool {
        self.node(n).cache.contains_key(name)
    }

    /// Frames `from` sent to `to` of one kind, counted.
    fn count_sent(&self, from: &str, to: &str, matches: impl Fn(&Frame) -> bool) -> usize {
        self.node(from).sent.iter().filter(|(t, f)| *t == id(to) && matches(f)).count()
    }
}

fn is_subscribe(f: &Frame) -> bool {
    matches!(f, Frame::Subscribe { .. })
}

fn is_unsubscribe(f: &Frame) -> bool {
    matches!(f, Frame::Unsubscribe { .. })
}

/// origin -> {a, b} -> edge, a the shorter way.
fn diamond() -> Net {
    let mut net = Net::new(&[("origin", "a", 5), ("origin", "b", 10), ("a", "edge", 5), ("b", "edge", 10)]);
    net.publish("origin"); // announces the stream
    net.run(Duration::from_millis(100));
    let now = net.now;
    net.relay("edge").handle_want(now, &stream());
    net.settle();
    net.run(Duration::from_millis(500));
    assert_eq!(net.upstream("edge").as_deref(), Some("a"));
    assert_eq!(net.upstream("a").as_deref(), Some("origin"));
    net
}

fn table(version: u64, routes: &[(&str, &str, Option<&str>)]) -> Routes {
    Routes {
        version,
        routes: routes
            .iter()
            .map(|(dest, via, backup)| Route { dest: id(dest), via: id(via), backup: backup.map(id) })
            .collect(),
    }
}

#[test]
fn the_edge_receives_the_stream_through_the_shorter_relay() {
    let mut net = diamond();
    let names = net.stream_for("origin", Duration::from_secs(1));
    assert!(names.iter().all(|n| net.has("edge", n)));
    assert_eq!(net.node("edge").duplicates, 0);
    assert_eq!(net.upstream("b"), None, "b carries nothing");
}

#[test]
fn a_link_is_probed_fast_only_by_the_end_it_brings_a_stream_to() {
    let mut net = diamond();
    let probes = |net: &Net, from: &str, to: &str| net.node(from).probes.get(&id(to)).copied().unwrap_or(0);
    let pairs = [("edge", "a"), ("a", "edge"), ("a", "origin"), ("origin", "a"), ("edge", "b"), ("b", "origin")];
    let before = pairs.map(|(from, to)| probes(&net, from, to));
    net.stream_for("origin", Duration::from_secs(10));
    let sent: Vec<u64> = pairs.iter().zip(before).map(|((from, to), b)| probes(&net, from, to) - b).collect();
    // Ten a second where the stream comes in (edge from a, a from origin), one a second the other way and on
    // the idle links.
    assert!(sent[0] >= 95 && sent[2] >= 95, "receiving ends probe fast: {sent:?}");
    for (i, n) in sent.iter().enumerate().skip(1).filter(|(i, _)| *i != 2) {
        assert!((9..=11).contains(n), "{:?} probes slowly: {sent:?}", pairs[i]);
    }
    // The sending end's slower probes do not slow the failover, which the receiving end decides: a cut
    // between a and the edge moves the edge to b within the 500 ms bound.
    net.cut("a", "edge", false);
    net.run(Duration::from_millis(500));
    assert_eq!(net.upstream("edge").as_deref(), Some("b"));
}

#[test]
fn make_before_break_subscribes_the_new_upstream_holds_the_old_dedupes_then_unsubscribes() {
    let mut net = diamond();
    net.stream_for("origin", Duration::from_millis(500));
    let now = net.now;
    net.relay("edge").handle_routes(now, &id("control-1"), table(1, &[("origin", "b", Some("a"))]));
    net.settle();
    assert_eq!(net.upstream("edge").as_deref(), Some("b"));
    assert_eq!(net.count_sent("edge", "b", is_subscribe), 1, "subscribed through the new upstream");
    assert_eq!(net.count_sent("edge", "a", is_unsubscribe), 0, "the old upstream is kept for the hold");

    // During the hold both feed the edge; every object arrives, the second copy is dropped.
    let during = net.stream_for("origin", Duration::from_secs(1));
    assert!(during.iter().all(|n| net.has("edge", n)));
    assert!(net.node("edge").duplicates >= during.len() as u64 - 1, "both upstreams fed the edge");
    assert_eq!(net.count_sent("edge", "a", is_unsubscribe), 0);

    net.run(net.config.hold);
    assert_eq!(net.count_sent("edge", "a", is_unsubscribe), 1, "the old upstream is released after the hold");
    assert_eq!(net.upstream("a"), None, "a, without subscribers, left the tree");
    let dup = net.node("edge").duplicates;
    let after = net.stream_for("origin", Duration::from_secs(1));
    assert!(after.iter().all(|n| net.has("edge", n)));
    assert_eq!(net.node("edge").duplicates, dup, "one copy per object after the hold");
}

#[test]
fn make_before_break_ends_when_the_new_upstream_delivers_a_live_object_first() {
    // The edge moves to b (whose copies arrive second, so the hold runs out), then back to a, whose copies
    // arrive first: the first of them ends the make-before-break, long before the hold.
    let mut net = diamond();
    let now = net.now;
    net.relay("edge").handle_routes(now, &id("control-1"), table(1, &[("origin", "b", Some("a"))]));
    net.settle();
    net.stream_for("origin", net.config.hold + Duration::from_millis(200));
    assert_eq!(net.count_sent("edge", "a", is_unsubscribe), 1, "a released after the hold");
    assert_eq!(net.upstream("edge").as_deref(), Some("b"));

    let now = net.now;
    net.relay("edge").handle_routes(now, &id("control-1"), table(2, &[("origin", "a", Some("b"))]));
    net.settle();
    assert_eq!(net.count_sent("edge", "b", is_unsubscribe), 0, "b feeds until a delivers");
    // a subscribes upstream, and the cached window it sends the edge is held there already: not live.
    let first = net.publish("origin");
    net.settle();
    assert!(net.has("edge", &first));
    assert_eq!(net.count_sent("edge", "b", is_unsubscribe), 1, "b released at a's first live object");
    let after = net.stream_for("origin", Duration::from_secs(1));
    assert!(after.iter().all(|n| net.has("edge", n)), "no object lost in the switch");
    assert_eq!(net.upstream("b"), None, "b, without subscribers, left the tree");
}

#[test]
fn a_down_verdict_fails_over_to_the_backup_before_any_table() {
    let mut net = diamond();
    net.cut("a", "edge", false);
    let cut_at = net.now;
    let mut lost = Vec::new();
    while net.upstream("edge").as_deref() != Some("b") {
        lost.push(net.publish("origin"));
        net.run(Duration::from_millis(100));
        assert!(net.now - cut_at < Duration::from_secs(2), "no failover");
    }
    assert!(net.node("edge").verdicts.contains(&(id("a"), false)));
    assert!(net.now - cut_at <= Duration::from_millis(600), "failover took {:?}", net.now - cut_at);
    let after = net.stream_for("origin", Duration::from_secs(1));
    assert!(after.iter().all(|n| net.has("edge", n)), "objects flow through the backup");
}

#[test]
fn a_stale_table_toward_a_downstream_node_makes_no_loop() {
    let mut net = diamond();
    net.stream_for("origin", Duration::from_millis(300));
    // a's table says: reach the origin through the edge, which is a's own subscriber (stale), and a's own
    // link to the origin fails.
    let now = net.now;
    net.relay("a").handle_routes(now, &id("control-1"), table(7, &[("origin", "edge", None)]));
    net.settle();
    net.cut("origin", "a", false);
    let names = net.stream_for("origin", Duration::from_secs(2));
    // `run` checked at every step that no subscription looped.
    assert_eq!(net.count_sent("a", "edge", is_subscribe), 0, "a subscribed to its own subscriber");
    assert_eq!(net.upstream("edge").as_deref(), Some("b"), "the edge routed around a");
    let tail = &names[names.len() - 10..];
    assert!(tail.iter().all(|n| net.has("edge", n)), "the stream continues through b");
}

#[test]
fn a_cut_link_next_to_the_origin_without_control_moves_the_stream_to_the_other_relay() {
    let mut net = diamond();
    net.stream_for("origin", Duration::from_millis(300));
    net.cut("origin", "a", false);
    let cut_at = net.now;
    let mut names = Vec::new();
    while !names.last().is_some_and(|n| net.has("edge", n)) || net.upstream("edge").as_deref() != Some("b") {
        names.push(net.publish("origin"));
        net.run(Duration::from_millis(100));
        assert!(net.now - cut_at < Duration::from_secs(3), "the stream did not move to b");
    }
    assert!(net.now - cut_at <= Duration::from_secs(1), "took {:?}", net.now - cut_at);
    assert!(
        net.node("a").sent.iter().any(|(to, f)| *to == id("edge") && matches!(f, Frame::Unavailable { .. })),
        "a told the edge it lost the stream"
    );
    assert_eq!(net.count_sent("a", "edge", is_subscribe), 0);
    let more = net.stream_for("origin", Duration::from_secs(6));
    assert!(more.iter().all(|n| net.has("edge", n)), "every later object arrives, also when a is asked again");
}

#[test]
fn a_restarted_origin_is_subscribed_to_again_on_its_new_connection() {
    let mut net = diamond();
    net.stream_for("origin", Duration::from_millis(300));
    net.restart("origin");
    // The restarted origin announces the stream again with its first new object.
    let names = net.stream_for("origin", Duration::from_millis(500));
    assert!(names.iter().all(|n| net.has("edge", n)), "objects of the restarted origin reach the edge");
    assert_eq!(net.count_sent("a", "origin", is_subscribe), 2, "a subscribed again over the new connection");
}

#[test]
fn a_restarted_relay_is_subscribed_to_again() {
    let mut net = diamond();
    net.stream_for("origin", Duration::from_millis(300));
    net.restart("a");
    // Until the restarted relay has its own upstream, the edge may route around it (for `pass_over`).
    let names = net.stream_for("origin", Duration::from_millis(500));
    assert!(names.iter().all(|n| net.has("edge", n)));
    let names = net.stream_for("origin", net.config.pass_over + net.config.hold + Duration::from_secs(1));
    assert!(names.iter().all(|n| net.has("edge", n)));
    assert_eq!(net.upstream("edge").as_deref(), Some("a"), "back on the shorter path");
    assert_eq!(net.upstream("a").as_deref(), Some("origin"));
}

#[test]
fn a_reconnect_starts_a_fresh_estimator() {
    let mut net = diamond();
    // Probes on a-edge go unanswered for a while: the link goes down (an outage, which is not loss: its
    // probes never count toward the loss estimate, see `src/routing/probe.rs`).
    net.cut("a", "edge", false);
    net.run(Duration::from_secs(2));
    let lossy = net.relay("edge").report([id("a")]);
    assert!(!lossy.links[0].up);
    assert_eq!(lossy.links[0].loss_ppm, 0, "{lossy:?}");
    // A new connection: nothing of the old one's history is left.
    net.cut("a", "edge", true);
    net.connect(&id("a"), &id("edge"));
    net.run(Duration::from_millis(300));
    let fresh = net.relay("edge").report([id("a")]);
    assert!(fresh.links[0].up);
    assert_eq!(fresh.links[0].loss_ppm, 0, "{fresh:?}");
}

#[test]
fn a_repaired_link_is_used_again_as_soon_as_it_is_best() {
    let mut net = diamond();
    net.cut("a", "edge", false);
    net.stream_for("origin", Duration::from_secs(1));
    assert_eq!(net.upstream("edge").as_deref(), Some("b"));
    // The connection times out, and the link is repaired: a new connection.
    net.disconnect("a", "edge");
    net.run(Duration::from_secs(5));
    net.connect(&id("a"), &id("edge"));
    let repaired = net.now;
    while net.upstream("edge").as_deref() != Some("a") {
        net.stream_for("origin", Duration::from_millis(100));
        assert!(net.now - repaired < Duration::from_secs(10), "the repaired path was not taken again");
    }
    let names = net.stream_for("origin", Duration::from_secs(3));
    assert!(names.iter().all(|n| net.has("edge", n)));
    assert_eq!(net.upstream("b"), None, "b was released after the hold");
}

#[test]
fn a_link_heard_again_after_a_cut_does_not_read_the_cuts_packets_as_loss() {
    // The connection a—edge outlives a 3 s cut, sending 100 packets a second, and declares those it sent
    // during the cut lost (sending what they carried again) 100 ms after the edge hears a again: the edge
    // reports the repaired link without loss.
    let mut net = diamond();
    let conn = net.links[&key(&id("a"), &id("edge"))].conn;
    let (mut sent, mut lost, mut in_cut) = (0u64, 0u64, 0u64);
    let report = |net: &mut Net, sent: u64, lost: u64| {
        let now = net.now;
        net.relay("edge").handle_packet_counts(now, &id("a"), conn, sent, lost);
        net.relay("edge").report([id("a")]).links[0].clone()
    };
    net.stream_for("origin", Duration::from_secs(2));
    net.cut("a", "edge", false);
    let mut cut = Vec::new();
    for _ in 0..30 {
        net.stream_for("origin", Duration::from_millis(100));
        (sent, in_cut) = (sent + 10, in_cut + 10);
        cut.push(report(&mut net, sent, lost).up);
    }
    assert!(cut.iter().any(|up| !up), "the edge never judged the cut link down");
    net.cut("a", "edge", true);
    let mut heard = None;
    for _ in 0..50 {
        net.run(Duration::from_millis(20));
        sent += 2;
        let link = report(&mut net, sent, lost);
        if link.up && heard.is_none() {
            heard = Some(net.now);
        }
        if heard.is_some_and(|at| net.now == at + Duration::from_millis(100)) {
            (sent, lost) = (sent + in_cut, lost + in_cut);
        }
        assert_eq!(link.loss_ppm, 0, "at {:?}, heard again at {heard:?}: {link:?}", net.now);
    }
    assert!(heard.is_some(), "the edge never heard a again");
}

#[test]
fn data_is_proof_of_life_while_probes_are_late() {
    let mut net = diamond();
    // Probes to a go unanswered (a is starved), yet a keeps delivering the stream.
    let conn = net.links[&key(&id("a"), &id("edge"))].conn;
    let until = net.now + Duration::from_secs(3);
    while net.now < until {
        net.publish("origin");
        for _ in 0..5 {
            // Only data, no probe answers: take the edge's probe actions out before they are answered.
            net.now += Duration::from_millis(20);
            let now = net.now;
            let edge = net.nodes.get_mut(&id("edge")).unwrap();
            edge.relay.handle_heard(now, &id("a"), conn);
            if edge.relay.poll_timeout().is_some_and(|t| t <= now) {
                edge.relay.handle_timeout(now);
            }
            while let Some(action) = net.nodes.get_mut(&id("edge")).unwrap().relay.poll_action() {
                if !matches!(&action, Action::Probe { to, .. } if *to == id("a")) {
                    net.execute(&id("edge"), action);
                }
            }
            net.settle();
        }
    }
    assert!(net.node("edge").verdicts.is_empty(), "a link delivering data was declared down");
    assert_eq!(net.upstream("edge").as_deref(), Some("a"));
}

#[test]
fn the_only_upstream_is_kept_while_its_connection_lives() {
    // origin -> a -> edge, no other way.
    let mut net = Net::new(&[("origin", "a", 5), ("a", "edge", 5)]);
    net.publish("origin");
    net.run(Duration::from_millis(100));
    let now = net.now;
    net.relay("edge").handle_want(now, &stream());
    net.settle();
    net.run(Duration::from_millis(300));
    net.cut("a", "edge", false);
    net.run(Duration::from_secs(3));
    assert!(net.node("edge").verdicts.contains(&(id("a"), false)), "probes declared the link down");
    assert_eq!(net.upstream("edge").as_deref(), Some("a"), "kept the only upstream");
    assert_eq!(net.count_sent("edge", "a", is_unsubscribe), 0);
    net.cut("a", "edge", true);
    let names = net.stream_for("origin", Duration::from_millis(500));
    assert!(names.iter().all(|n| net.has("edge", n)), "the stream goes on once the link answers");
}

#[test]
fn an_upstream_that_subscribes_back_is_routed_around_not_looped() {
    let mut net = diamond();
    // A peer that lost its path subscribes to its own subscriber (as a node without `Unavailable` might).
    let conn = net.links[&key(&id("a"), &id("edge"))].conn;
    let now = net.now;
    net.relay("edge").handle_frame(now, &id("a"), conn, Frame::Subscribe { stream: stream() });
    net.settle();
    assert_eq!(net.upstream("edge").as_deref(), Some("b"), "the edge moved away from a");
    net.assert_no_loop();
}

#[test]
fn frames_of_a_replaced_connection_are_ignored() {
    let mut net = diamond();
    let old = net.links[&key(&id("a"), &id("edge"))].conn;
    net.connect(&id("a"), &id("edge"));
    let now = net.now;
    net.relay("a").handle_frame(now, &id("edge"), old, Frame::Unsubscribe { stream: stream() });
    net.settle();
    let names = net.stream_for("origin", Duration::from_millis(500));
    assert!(names.iter().all(|n| net.has("edge", n)));
}

#[test]
fn word_that_a_stream_is_unavailable_counts_only_from_the_upstream_in_force() {
    let mut net = diamond();
    // b, which the edge does not receive from, says the stream is unavailable through it (a frame sent
    // across a partition and delivered after it healed): the edge must still be free to move to b.
    let conn = net.links[&key(&id("b"), &id("edge"))].conn;
    let now = net.now;
    net.relay("edge").handle_frame(now, &id("b"), conn, Frame::Unavailable { stream: stream() });
    net.settle();
    net.relay("edge").handle_routes(now, &id("control-1"), table(1, &[("origin", "b", Some("a"))]));
    net.settle();
    assert_eq!(net.upstream("edge").as_deref(), Some("b"));
}

#[test]
fn time_a_node_was_too_busy_to_listen_is_not_a_links_silence() {
    let mut net = diamond();
    // The edge hears nothing from a, but for the next second it was itself stalled the whole time.
    net.cut("a", "edge", false);
    let start = net.now;
    for _ in 0..100 {
        net.run(STEP);
        let stalled = net.now - start;
        net.relay("edge").handle_stalled(stalled);
    }
    assert!(net.node("edge").verdicts.is_empty(), "a stalled node blamed its neighbour");
    // Once it runs on time again, the silence counts.
    net.run(Duration::from_secs(1));
    assert!(net.node("edge").verdicts.contains(&(id("a"), false)));
    assert_eq!(net.upstream("edge").as_deref(), Some("b"));
}

/// origin, backup -> {a, b} -> edge: two origins, each next to both relays.
fn two_origins() -> Net {
    let mut net = Net::new(&[
        ("origin", "a", 5),
        ("origin", "b", 10),
        ("backup", "a", 10),
        ("backup", "b", 5),
        ("a", "edge", 5),
        ("b", "edge", 10),
    ]);
    net.publish("origin");
    net.run(Duration::from_millis(100));
    let now = net.now;
    net.relay("edge").handle_want(now, &stream());
    net.settle();
    net.run(Duration::from_millis(300));
    net
}

#[test]
fn a_second_origin_is_refused_and_the_stream_stays_with_the_first() {
    let mut net = two_origins();
    let refused = net.publish_as("backup", false).unwrap_err();
    assert_eq!(refused, Refused::Owned { stream: stream(), origin: id("origin") });
    let names = net.stream_for("origin", Duration::from_millis(500));
    assert!(names.iter().all(|n| net.has("edge", n)));
    assert_eq!(net.node("edge").relay.stream(&stream()).unwrap().origin, id("origin"));
}

#[test]
fn a_backup_takes_over_once_the_owners_objects_stop_and_hands_back_to_the_primary() {
    let mut net = two_origins();
    net.stream_for("origin", Duration::from_millis(300));
    // While the primary's objects flow, the backup's publisher is told to wait.
    for _ in 0..10 {
        net.stream_for("origin", Duration::from_millis(200));
        assert!(matches!(net.publish_as("backup", true), Err(Refused::Standby { .. })));
    }
    // The primary's publisher stops: after `takeover` of silence, the backup owns the stream.
    let takeover = net.config.takeover;
    let mut took = None;
    for step in 0..100 {
        net.run(Duration::from_millis(100));
        if let Ok(name) = net.publish_as("backup", true) {
            took = Some((step + 1) * 100);
            assert!(net.node("backup").cache.contains_key(&name));
            break;
        }
    }
    let took = Duration::from_millis(took.expect("the backup took over"));
    // The last object arrived 100 ms before the loop began.
    let silence = took + Duration::from_millis(100);
    assert!(silence >= takeover && silence <= takeover + Duration::from_millis(300), "took over after {silence:?}");
    let backup_epoch = net.node("edge").relay.stream(&stream()).unwrap().epoch;
    assert_eq!(net.node("edge").relay.stream(&stream()).unwrap().origin, id("backup"));
    let names = net.stream_for("backup", Duration::from_millis(500));
    assert!(names.iter().all(|n| net.has("edge", n)), "the edge receives the backup's objects");
    assert_eq!(net.upstream("edge").as_deref(), Some("b"), "by the backup's shorter side");
    // The primary's publisher returns: the primary takes the stream back at once, in a newer epoch.
    let name = net.publish_as("origin", false).expect("the primary takes the stream back");
    net.run(Duration::from_millis(100));
    let state = net.node("edge").relay.stream(&stream()).unwrap();
    assert_eq!(state.origin, id("origin"));
    assert!(state.epoch > backup_epoch);
    assert!(net.has("edge", &name));
    assert!(matches!(net.publish_as("backup", true), Err(Refused::Standby { .. })), "the backup stands by again");
    net.assert_no_loop();
}

#[test]
fn a_silent_publisher_ends_the_stream_everywhere_and_the_ended_stream_is_forgotten() {
    let mut net = diamond();
    net.stream_for("origin", Duration::from_millis(500));
    let silence = net.config.default_target * 3;
    net.run(silence - Duration::from_millis(200));
    assert_eq!(net.phase("edge"), Some(StreamPhase::Live));
    net.run(Duration::from_millis(300));
    for n in ["origin", "a", "b", "edge"] {
        assert_eq!(net.phase(n), Some(StreamPhase::Ended), "at {n}");
    }
    assert_eq!(net.node("origin").ended, vec![stream()], "the origin ends the playlists once");
    // Publishing again starts a new epoch; the stream is live again everywhere.
    let epoch = net.node("edge").relay.stream(&stream()).unwrap().epoch;
    let name = net.publish("origin");
    net.run(Duration::from_millis(100));
    assert_eq!(net.phase("edge"), Some(StreamPhase::Live));
    assert!(net.node("edge").relay.stream(&stream()).unwrap().epoch > epoch);
    assert!(net.has("edge", &name));
    // Ended and left alone, the stream is forgotten, and with it every object of it.
    net.run(silence + net.config.linger + Duration::from_millis(100));
    for n in ["origin", "a", "b", "edge"] {
        assert_eq!(net.phase(n), None, "{n} forgot the stream");
        assert!(net.node(n).cache.is_empty(), "{n} dropped its objects");
    }
}

#[test]
fn a_deleted_playlist_ends_the_stream_at_once() {
    let mut net = diamond();
    net.stream_for("origin", Duration::from_millis(300));
    let now = net.now;
    net.relay("origin").handle_end(now, &stream());
    net.settle();
    assert_eq!(net.phase("edge"), Some(StreamPhase::Ended));
    assert_eq!(net.node("origin").ended, vec![stream()]);
}

#[test]
fn a_takedown_reaches_every_node_and_a_restarted_node_learns_it_from_its_neighbours() {
    let mut net = diamond();
    net.stream_for("origin", Duration::from_millis(300));
    let now = net.now;
    let t = Takedown { version: 5, active: true, reason: "policy".into() };
    net.relay("b").handle_takedown(now, None, &stream(), t);
    net.settle();
    for n in ["origin", "a", "b", "edge"] {
        assert_eq!(net.node(n).relay.taken_down(&stream()), Some("policy"), "at {n}");
    }
    assert!(matches!(net.publish_as("origin", false), Err(Refused::TakenDown { .. })));
    net.restart("edge");
    assert_eq!(net.node("edge").relay.taken_down(&stream()), Some("policy"), "told on connecting");
    // A stale copy of the takedown cannot undo a newer lift.
    let now = net.now;
    net.relay("a").handle_takedown(now, None, &stream(), Takedown { version: 6, active: false, reason: String::new() });
    net.settle();
    net.relay("edge").handle_takedown(
        now,
        None,
        &stream(),
        Takedown { version: 5, active: true, reason: "policy".into() },
    );
    net.settle();
    for n in ["origin", "a", "b", "edge"] {
        assert_eq!(net.node(n).relay.taken_down(&stream()), None, "lifted at {n}");
    }
    assert!(net.publish_as("origin", false).is_ok());
}

#[test]
fn a_restarted_origin_starts_a_new_epoch_and_older_objects_are_purged_everywhere() {
    let mut net = diamond();
    let old = net.stream_for("origin", Duration::from_millis(300));
    let epoch = net.node("edge").relay.stream(&stream()).unwrap().epoch;
    net.restart("origin");
    let new = net.stream_for("origin", Duration::from_millis(300));
    assert!(net.node("edge").relay.stream(&stream()).unwrap().epoch > epoch);
    assert!(old.iter().all(|n| !net.has("edge", n)), "the old epoch's objects are gone at the edge");
    assert!(new.iter().all(|n| net.has("edge", n)));
}

#[test]
fn a_report_of_thousands_of_streams_fits_its_frame() {
    let me = id("origin");
    let mut relay =
        Relay::new(me.clone(), [me.clone(), id("relay")], [(me.clone(), id("relay"), 5_000)], RelayConfig::default())
            .unwrap();
    let now = Duration::from_secs(1);
    for i in 0..5_000 {
        let claim = Claim { backup: false, restart: false, unix_ms: 1_000, target: None };
        relay.handle_claim(now, &StreamName::new(format!("stream-number-{i:05}")).unwrap(), claim).unwrap();
    }
    let report = relay.report([id("relay")]);
    let mut out = Vec::new();
    Frame::Report(report.clone()).encode(&mut out);
    assert!(out.len() <= crate::wire::MAX_FRAME, "{} bytes", out.len());
    assert!(report.streams.len() > 1_000, "{} streams reported", report.streams.len());
    assert_eq!(report.streams[0].stream.as_str(), "stream-number-00000", "the first by name");
    assert!(matches!(crate::wire::decode_from(&mut bytes::BytesMut::from(&out[..])), Ok(Some(Frame::Report(_)))));
}

#[test]
fn a_gone_replicas_table_gives_way_to_the_other_replicas_whatever_the_versions() {
    let mut net = diamond();
    let now = net.now;
    let (ahead, behind) = (id("control-1"), id("control-2"));
    let hour = 3_600_000;
    // control-1's clock runs an hour ahead of control-2's: its versions win while it is in session.
    let edge = net.relay("edge");
    assert!(edge.handle_routes(now, &ahead, table(hour + 10, &[("origin", "a", Some("b"))])));
    assert!(!edge.handle_routes(now, &behind, table(20, &[("origin", "a", Some("b"))])), "older");
    assert!(!edge.handle_routes(now, &ahead, table(hour + 10, &[("origin", "b", None)])), "the same version");
    assert_eq!(edge.table_version(), Some(hour + 10));
    // control-2 routes through b (the mesh changed) while control-1 is still taken for alive: remembered.
    assert!(!edge.handle_routes(now, &behind, table(30, &[("origin", "b", Some("a"))])));
    net.settle();
    assert_eq!(net.upstream("edge").as_deref(), Some("a"));
    // Another replica's end changes nothing; control-1's puts control-2's last table in force at once.
    let edge = net.relay("edge");
    edge.handle_control_ended(now, &id("control-3"));
    assert_eq!(edge.table_version(), Some(hour + 10));
    edge.handle_control_ended(now, &ahead);
    assert_eq!(edge.table_version(), Some(30));
    assert!(!edge.handle_routes(now, &behind, table(29, &[("origin", "a", Some("b"))])), "older than its last");
    net.settle();
    assert_eq!(net.upstream("edge").as_deref(), Some("b"));
    // The last replica gone: its table stays in force. control-1 back: its versions lead again.
    let edge = net.relay("edge");
    edge.handle_control_ended(now, &behind);
    assert_eq!(edge.table_version(), Some(30));
    assert!(edge.handle_routes(now, &ahead, table(hour + 50, &[("origin", "a", Some("b"))])));
    assert!(!edge.handle_routes(now, &behind, table(60, &[("origin", "b", Some("a"))])));
}

#[test]
fn a_link_run_alone_probes_and_fails_as_it_does_with_its_node() {
    // Relay a with neighbours b and c, whose probes are answered 5 ms later for the first second and then
    // never: driven whole (`handle_timeout` at each of its deadlines) or a link at a time
    // (`handle_link_timeout` at each link's own deadlines), it sends the same probes at the same moments
    // and judges both links down at the same moments.
    let run = |per_link: bool| -> Vec<(Duration, String)> {
        let topology = vec![(id("a"), id("b"), 1000), (id("a"), id("c"), 1000)];
        let nodes = [id("a"), id("b"), id("c")];
        let mut relay = Relay::new(id("a"), nodes, topology, RelayConfig::default()).unwrap();
        relay.handle_peer_up(Duration::ZERO, id("b"), 1);
        relay.handle_peer_up(Duration::ZERO, id("c"), 2);
        let mut log = Vec::new();
        let mut replies: Vec<(Duration, NodeId, ConnId, u64)> = Vec::new();
        let end = Duration::from_secs(3);
        loop {
            let deadlines: Vec<(ConnId, Duration)> = [1, 2]
                .into_iter()
                .filter_map(|conn| relay.link_timeout(conn))
                .map(|t| (t.conn, t.down.map_or(t.next, |down| t.next.min(down))))
                .collect();
            let due = if per_link { deadlines.iter().map(|d| d.1).min() } else { relay.poll_timeout() };
            let Some(now) = due.into_iter().chain(replies.iter().map(|r| r.0)).min().filter(|&t| t <= end) else {
                break;
            };
            replies.sort_by_key(|r| r.0);
            while replies.first().is_some_and(|r| r.0 <= now) {
                let (at, peer, conn, seq) = replies.remove(0);
                relay.handle_probe_reply(at, &peer, conn, seq);
            }
            let mut probes = Vec::new();
            if per_link {
                for &(conn, at) in deadlines.iter().filter(|d| d.1 <= now) {
                    let (probe, _) = relay.handle_link_timeout(at, conn).unwrap();
                    let peer = if conn == 1 { id("b") } else { id("c") };
                    probes.extend(probe.map(|seq| (peer, seq)));
                }
            } else if due.is_some_and(|t| t <= now) {
                relay.handle_timeout(now);
            }
            while let Some(action) = relay.poll_action() {
                match action {
                    Action::Probe { to, seq } => probes.push((to, seq)),
                    Action::Verdict { peer, up } => log.push((now, format!("{peer} up {up}"))),
                    _ => {}
                }
            }
            for (peer, seq) in probes {
                log.push((now, format!("probe {seq} to {peer}")));
                if now < Duration::from_secs(1) {
                    let conn = if peer == id("b") { 1 } else { 2 };
                    replies.push((now + Duration::from_millis(5), peer, conn, seq));
                }
            }
        }
        log.sort();
        log
    };
    let whole = run(false);
    assert!(whole.iter().filter(|(_, what)| what.ends_with("up false")).count() == 2, "{whole:?}");
    assert!(whole.iter().filter(|(_, what)| what.starts_with("probe")).count() >= 4, "{whole:?}");
    assert_eq!(run(true), whole);
}
