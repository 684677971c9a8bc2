//! Link probing: turning a neighbour's probe replies into [`LinkMetrics`] and a down verdict.
//!
//! Every node runs one [`LinkEstimator`] per neighbour link. The node's mesh driver carries the probes (small
//! QUIC datagrams with a sequence number, echoed by the neighbour) and the clock; the estimator decides when to
//! probe and what the replies mean:
//!
//! - **When to probe.** Every `fast_interval` (100 ms) while the link carries traffic to this end
//!   ([`set_active`]), every `slow_interval` (1 s) otherwise. An idle link whose last probe is overdue is
//!   probed at the fast interval until it answers, so one lost probe on an idle link is confirmed or cleared
//!   quickly instead of a second later. Probes go out on the interval's grid in the caller's time (at
//!   multiples of 100 ms), so both ends of a link probed at the same interval, whose clocks share an epoch,
//!   probe it at the same moments and judge it down together.
//! - **Round-trip time and jitter.** Smoothed as in RFC 6298 (`srtt` with gain 1/8, `rttvar` with gain 1/4);
//!   `rto = srtt + max(4 × rttvar, 1 ms)` is how long a reply may reasonably take. Jitter is RFC 3550's: an
//!   EWMA (gain 1/16) of the difference between consecutive round-trip samples.
//! - **Loss, with confidence.** Counted over a window of *time* (`loss_window`, 10 s), the same on a busy
//!   link probed every 100 ms as on an idle one probed every second: the idle link just has less evidence.
//!   A probe without a reply within `max(3 × srtt, rto)` is two packets of which one was lost; a reply that
//!   arrives later still counts, so reordering and a slow spell do not read as loss. On a link that carries
//!   a stream the driver adds the connection's own packets as the transport counts them sent and lost
//!   ([`handle_packet_counts`]): hundreds a second, so real loss shows within a second or two. They are
//!   kept in a fixed ring of ten counts, one per tenth of the window, and the newest tenths are judged on
//!   their own too, so that a clean past does not hide a loss that began since. Loss enters
//!   the link's cost only once this evidence shows it above [`LOSS_FLOOR`] (1 %) with a log-likelihood
//!   ratio of [`LOSS_EVIDENCE`] (a Chernoff bound: a link at the floor shows as much by chance about once
//!   in 3,000 looks; a link at half the floor, whose window holds a couple of hundred probes, once in a few
//!   million) and at least five losses, at the rate of the longest stretch that shows it; and it leaves the
//!   cost only once what came after shows the rate below the floor just as clearly. One lost probe among a
//!   hundred used to read as 1 % loss and 10 ms of cost on whichever link it fell, so uniform background
//!   loss moved routes at random; now background loss below the floor costs nothing anywhere, and a link
//!   that loses 3 % of a stream's packets is costed within two or three seconds.
//!   An outage is not loss: when a link that was declared down answers again, the probes sent since its
//!   last answer leave the window, and the reply that ends the outage is not a round-trip sample (it went
//!   out during the outage; on a live link it may have waited in the QUIC connection's send queue until the
//!   path came back). When the node hears the link again after judging it down, the packet counts and the
//!   loss verdict start again too ([`handle_outage_end`]), and the packets the transport declares lost just
//!   after are the outage's, left out. A repaired link is judged by how it performs from then on, at once,
//!   instead of reading as lossy until the window has pushed the outage out (and, on an idle link, until its
//!   few probes have cleared the verdict, minutes later), or as slow until the smoothing forgets the
//!   held-back replies.
//! - **Down.** The link is down when at least `down_probes` (3) probes sent since the last answered one are
//!   overdue (older than `rto`) and the first of them went out at least `down_after` (300 ms) ago. With the
//!   default 100 ms interval and a short link, a link that fails at `T` is declared down by
//!   `T + fast_interval + down_after` = `T + 400 ms` at the latest (the first lost probe leaves by
//!   `T + 100 ms`), inside the 500 ms target; a single lost probe never takes a link down, and a long link
//!   (large `rto`) is given the time its replies need. A link that loses some of its probes anyway needs a
//!   longer run of them overdue, long enough that its own loss would make such a run less than a
//!   one-in-10^8 chance (four at 1 % of round trips; see `LinkEstimator::chance_run`): under uniform
//!   background loss a mesh probing hundreds of links ten times a second would otherwise call a healthy
//!   link down every few minutes.
//!
//! - **Report.** What the node tells the control plane ([`report`]) is the metrics, moved on only by a clear
//!   change that is not noise: while the cost the current metrics give stays within the route damper's
//!   margins (2 ms and 10 %, [`DampingConfig::is_clear_change`]) of the cost of the metrics last reported,
//!   or their latency moved by less than the round trips' own variation (`rttvar`), those are reported
//!   again; a change of the loss verdict is evidence already. A change that small cannot by itself justify
//!   moving a route, and measurement noise would otherwise change some of a large mesh's links at every
//!   report: a 10,000-node mesh's control plane then recomputes every second instead of when something
//!   happened. Because the node holds the value, every control replica gets the same reports and still
//!   computes the same tables from them, whenever it started; the simulator's nodes report the same way.
//!
//! The estimator is pure: time is a [`Duration`] since an epoch the caller picks, passed to every call. The
//! driver sends a probe when [`poll_probe`] hands out a sequence number, reports it with
//! [`handle_probe_sent`], reports echoes with [`handle_probe_reply`], and wakes up at [`poll_timeout`] (the
//! next probe, or the moment the link would be declared down). The simulator drives the same type.
//!
//! [`set_active`]: LinkEstimator::set_active
//! [`report`]: LinkEstimator::report
//! [`poll_probe`]: LinkEstimator::poll_probe
//! [`handle_probe_sent`]: LinkEstimator::handle_probe_sent
//! [`handle_probe_reply`]: LinkEstimator::handle_probe_reply
//! [`handle_packet_counts`]: LinkEstimator::handle_packet_counts
//! [`handle_outage_end`]: LinkEstimator::handle_outage_end
//! [`poll_timeout`]: LinkEstimator::poll_timeout

use std::collections::VecDeque;
use std::time::Duration;

use super::damper::DampingConfig;
use super::metric::LinkMetrics;

/// How a [`LinkEstimator`] probes and when it declares its link down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Probe interval while the link carries traffic to this end (or an idle link's last probe is overdue).
    pub fast_interval: Duration,
    /// Probe interval while the link is idle.
    pub slow_interval: Duration,
    /// How far back the loss estimate looks: the same time on a busy link and an idle one, so that a
    /// verdict means the same whatever the probe interval (a busy link just has more evidence in it).
    pub loss_window: Duration,
    /// The least time from the first unanswered probe to declaring the link down.
    pub down_after: Duration,
    /// How many overdue probes in a row declare the link down.
    pub down_probes: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            fast_interval: Duration::from_millis(100),
            slow_interval: Duration::from_secs(1),
            loss_window: Duration::from_secs(10),
            down_after: Duration::from_millis(300),
            down_probes: 3,
        }
    }
}

/// Why a [`ProbeConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeConfigError {
    /// `fast_interval` is zero: the link would be probed in a busy loop.
    #[error("fast_interval must be more than zero")]
    ZeroFastInterval,
    /// `slow_interval` is shorter than `fast_interval`.
    #[error("slow_interval ({slow:?}) is shorter than fast_interval ({fast:?})")]
    SlowFasterThanFast {
        /// The configured fast interval.
        fast: Duration,
        /// The configured slow interval.
        slow: Duration,
    },
    /// `down_probes` is zero: the link would be down before any probe went unanswered.
    #[error("down_probes must be at least 1")]
    ZeroDownProbes,
    /// `loss_window` is shorter than `fast_interval`: it would hold at most one probe.
    #[error("loss_window ({loss_window:?}) is shorter than fast_interval ({fast:?})")]
    WindowTooSmall {
        /// The configured loss window.
        loss_window: Duration,
        /// The configured fast interval.
        fast: Duration,
    },
}

impl ProbeConfig {
    /// Checks the configuration for contradictions.
    pub fn validate(self) -> Result<Self, ProbeConfigError> {
        if self.fast_interval.is_zero() {
            return Err(ProbeConfigError::ZeroFastInterval);
        }
        if self.slow_interval < self.fast_interval {
            return Err(ProbeConfigError::SlowFasterThanFast { fast: self.fast_interval, slow: self.slow_interval });
        }
        if self.down_probes == 0 {
            return Err(ProbeConfigError::ZeroDownProbes);
        }
        if self.loss_window < self.fast_interval {
            return Err(ProbeConfigError::WindowTooSmall { loss_window: self.loss_window, fast: self.fast_interval });
        }
        Ok(self)
    }

    /// How many probe records an estimator keeps: those of `loss_window` at the fast interval, and never fewer
    /// than the down verdict needs (bounded, whatever the intervals, at [`MAX_RECORDS`]).
    fn records(&self) -> usize {
        let per_window = self.loss_window.as_nanos().div_ceil(self.fast_interval.as_nanos().max(1));
        usize::try_from(per_window).unwrap_or(MAX_RECORDS).saturating_add(1).clamp(self.down_probes, MAX_RECORDS)
    }
}

/// The most probe records one estimator keeps (24 KiB), whatever its intervals.
const MAX_RECORDS: usize = 1_024;

/// Loss below this rate (1 %, 10 ms of cost) is not worth a route change: a link's loss enters its cost only
/// once its probes and packets show, with [`LOSS_EVIDENCE`], that it is above this.
pub const LOSS_FLOOR: f64 = 0.01;

/// How strong the evidence must be for loss to enter a link's cost, or to leave it: the log-likelihood ratio
/// `n × KL(observed ‖ LOSS_FLOOR)` of `n` packets, which bounds the chance that a link at the floor shows
/// what was observed (Chernoff): `e^-8`, about 1 in 3,000 per look.
///
/// What matters more is a link *below* the floor, since a mesh looks at hundreds of them every second.
/// At half the floor (0.5 %), the chance that a window shows loss by chance is, exactly (binomial): 2e-7
/// for a link probed fast for ten seconds with nothing else counted (122-200 probe packets: 8 to 10 losses
/// needed), 1e-8 for a second of a 3 Mbit/s stream's packets (313: 13 losses), 5e-8 for an idle link's ten
/// probes (5 losses, [`LOSS_EVIDENCE_LOSSES`]). With `e^-6` the first was 3e-6 (7 losses of 122), and a
/// 204-node mesh under uniform 0.5 % loss showed one such false verdict in its first ten seconds: it
/// moved a route onto a 1 ms longer path for five minutes, until an idle link's probes showed the loss
/// gone. The price is detection time: a link losing 3 % of a 3 Mbit/s stream shows it after about 630
/// packets (2 s) at the median, against 470 with `e^-6`.
pub const LOSS_EVIDENCE: f64 = 8.0;

/// The fewest losses that can show a link above the floor, whatever the ratio says. An idle link's window
/// holds about ten probes, and four lost among them pass [`LOSS_EVIDENCE`]; at half the floor (a probe lost
/// in 100) that happens about once in 500,000 windows, which a mesh of 10,000 nodes (45,000 link ends, each
/// a new window every ten seconds) reaches every two minutes. Five losses make it a hundred times rarer,
/// and cost a busy link nothing: its evidence comes with a dozen losses or more (a 3 % loss of 300 packets
/// a second passes the ratio at about 19).
const LOSS_EVIDENCE_LOSSES: u64 = 5;

/// How unlikely a run of lost probes must be, on the link's own loss, before it reads as silence rather than
/// chance (see [`LinkEstimator::chance_run`]).
const CHANCE_RUN: f64 = 1e-8;

/// The longest run of unanswered probes a down verdict waits for, however lossy the link.
const MAX_RUN: usize = 8;

/// Probes counted as answered before the link's first, so that a young link's first loss does not read as a
/// high rate: one loss window of fast probes.
const RUN_PRIOR: u64 = 100;

/// The relative entropy `KL(p ‖ q)` of two loss rates, in nats (`q` strictly between 0 and 1).
fn relative_entropy(p: f64, q: f64) -> f64 {
    let term = |a: f64, b: f64| if a <= 0.0 { 0.0 } else { a * (a / b).ln() };
    term(p, q) + term(1.0 - p, 1.0 - q)
}

/// Whether `lost` of `trials` packets is evidence that the loss rate is above (`above`) or below the floor.
fn evidence(trials: u64, lost: u64, above: bool) -> bool {
    if trials == 0 {
        return false;
    }
    let rate = lost as f64 / trials as f64;
    if (rate > LOSS_FLOOR) != above || (above && lost < LOSS_EVIDENCE_LOSSES) {
        return false;
    }
    trials as f64 * relative_entropy(rate, LOSS_FLOOR) >= LOSS_EVIDENCE
}

/// How many parts the packet counts of a loss window are kept in. Loss is also judged on the newest parts
/// alone (see [`LinkEstimator::judge`]), so that a link that starts losing after a clean spell shows it as
/// soon as the packets since show it, instead of once enough of the window is lossy to outweigh the clean
/// part: a busy link's clean history would otherwise hold a 3 % loss back by five seconds.
const PACKET_PARTS: usize = 10;

/// The connection's own packets over the loss window, as the transport declared them sent and lost (on a
/// link that carries a stream, hundreds a second: far more evidence than its probes), in a fixed ring of
/// [`PACKET_PARTS`] counts, one per tenth of the window: kept in a box of its own, made on the first count,
/// since most links of a large mesh carry nothing and never have any.
#[derive(Debug, Clone)]
struct PacketWindow {
    /// Per part of the window, by part number modulo [`PACKET_PARTS`]: what was sent and lost in it.
    parts: [(u32, u32); PACKET_PARTS],
    /// The number of the newest part (time since the epoch divided by the part's length).
    newest: u64,
    /// Every packet counted since the estimator started.
    total: Tally,
    /// The transport's running totals when last told.
    seen: (u64, u64),
}

impl PacketWindow {
    /// Moves the ring on to part `part`: the parts that fall out of the window are emptied.
    fn advance(&mut self, part: u64) {
        if part <= self.newest {
            return;
        }
        let gone = (part - self.newest).min(PACKET_PARTS as u64);
        for k in 1..=gone {
            self.parts[((self.newest + k) % PACKET_PARTS as u64) as usize] = (0, 0);
        }
        self.newest = part;
    }

    /// The counts of the newest `n` parts, for `n` from 1 to [`PACKET_PARTS`], as of part `part` (at or after
    /// the newest: the parts since hold nothing).
    fn suffixes(&self, part: u64) -> impl Iterator<Item = Tally> + '_ {
        let skipped = part.saturating_sub(self.newest);
        let mut sum = Tally::default();
        (0..PACKET_PARTS as u64).map(move |k| {
            if k >= skipped {
                // The part `k - skipped` before the newest (parts before the first are empty slots).
                let slot =
                    (self.newest % PACKET_PARTS as u64 + PACKET_PARTS as u64 - (k - skipped)) % PACKET_PARTS as u64;
                let (sent, lost) = self.parts[slot as usize];
                sum.trials += u64::from(sent);
                sum.lost += u64::from(lost);
            }
            sum
        })
    }
}

/// What a link's loss looks like as a count of trials and losses. A probe is two packets (request and echo)
/// of which one was lost when no echo came, so its trials estimate the one-way rate as packets do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    trials: u64,
    lost: u64,
}

impl Tally {
    fn rate(self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.lost as f64 / self.trials as f64
        }
    }
}

/// What loss the link's cost carries: the rate last shown to be above [`LOSS_FLOOR`], from when it was
/// shown, with the totals at that moment (evidence of a recovery is what came after).
#[derive(Debug, Clone, Copy, PartialEq)]
struct LossVerdict {
    rate: f64,
    since: Tally,
}

/// One probe in the loss window: 24 bytes, since a node keeps a window of them for each of its links (a
/// simulated mesh of 10,000 nodes holds 45,000 windows).
#[derive(Debug, Clone, Copy)]
struct ProbeRecord {
    seq: u64,
    /// When it left, in nanoseconds since the epoch (a [`Duration`] takes twice the room).
    sent_ns: u64,
    answered: bool,
}

/// A time or a span in nanoseconds (saturating: 584 years). The estimator keeps its times so, and so does a
/// relay's judgement of its links: a node looks at them several times a probe, and sums and comparisons of
/// [`Duration`]s, which keep seconds and nanoseconds apart, take several times the work.
pub type Nanos = u64;

/// `d` in nanoseconds (saturating).
pub fn nanos(d: Duration) -> Nanos {
    d.as_secs().checked_mul(1_000_000_000).and_then(|n| n.checked_add(u64::from(d.subsec_nanos()))).unwrap_or(u64::MAX)
}

/// `n` nanoseconds.
pub fn duration(n: Nanos) -> Duration {
    Duration::from_nanos(n)
}

impl ProbeRecord {
    fn new(seq: u64, sent: Nanos) -> Self {
        Self { seq, sent_ns: sent, answered: false }
    }
}

/// The first multiple of `interval` after `last`: probes go out on a grid of the interval in the caller's
/// time, not at `interval` after whatever moment the link came up. Nodes whose clocks share an epoch (live
/// nodes count from a whole minute of Unix time, see `mesh::Shared::now`; simulated nodes share the
/// simulation's) then probe a link from both ends at the same moments, so the two ends of a dead link run out
/// of answers, and judge it down, together: one end's verdict does not trail the other's by up to a probe
/// interval.
pub fn next_tick(last: Duration, interval: Duration) -> Duration {
    duration(tick(nanos(last), nanos(interval)))
}

/// [`next_tick`] in nanoseconds.
fn tick(last: Nanos, interval: Nanos) -> Nanos {
    let step = interval.max(1);
    (last / step).saturating_add(1).saturating_mul(step)
}

/// The floor of `rto`'s variance term (RFC 6298's clock granularity `G`), so that a steady LAN link's replies
/// are not overdue after a few microseconds of variation.
const RTO_GRANULARITY: Nanos = 1_000_000;

/// How many of the oldest probe records [`LinkEstimator::prefetch`] asks for: four cache lines' worth.
const PREFETCHED_RECORDS: usize = 10;

/// Probe scheduling and measurement for one neighbour link.
///
/// Probes go every `fast_interval` while the link is active (or an idle link's probe is overdue), every
/// `slow_interval` otherwise. RTT is smoothed as in RFC 6298, jitter as in RFC 3550, loss is counted over the
/// last `loss_window` of time and enters the cost only when shown (see [`LOSS_FLOOR`]), and the link is down once `down_probes` probes in a row are overdue and the first
/// of them is `down_after` old (see [`is_down`](Self::is_down)). The timing analysis is in
/// `src/routing/probe.rs`.
#[derive(Debug, Clone)]
pub struct LinkEstimator {
    timing: Timing,
    active: bool,
    next_seq: u64,
    /// The most recent probes sent, oldest first, in increasing `seq` order.
    window: VecDeque<ProbeRecord>,
    /// How many probes of `window` were answered, so that loss needs to look only at the newest probes.
    answered: usize,
    trailing: usize,
    srtt: Option<Nanos>,
    rttvar: Nanos,
    jitter: Nanos,
    last_rtt: Option<Nanos>,
    /// How many probe records `window` keeps ([`ProbeConfig::records`]).
    records: usize,
    /// The grid moments after the last probe handed out: the next fast and slow probe times.
    ticks: Option<(Nanos, Nanos)>,
    /// The connection's packet counts, from the first time the driver gave any.
    packets: Option<Box<PacketWindow>>,
    /// Until when the packets the transport declares lost are an outage's (see
    /// [`handle_outage_end`](Self::handle_outage_end)).
    outage_packets_until: Nanos,
    /// Probes sent, answered, and dropped as an outage's, since the estimator started.
    probes_sent: u64,
    probes_answered: u64,
    probes_forgotten: u64,
    /// The loss in the link's cost, once shown (see [`LOSS_FLOOR`]).
    verdict: Option<LossVerdict>,
    /// The metrics last reported (see [`report`](Self::report)).
    reported: Option<LinkMetrics>,
    /// Until when `report` would hand out `reported` again (`None`: it must look): the metrics stay as they
    /// are until a probe is sent or answered, or a probe too recent to tell comes to count as lost. A
    /// control round reads every link of a large mesh, most of them unchanged since the last round.
    reported_until: Option<Nanos>,
    /// The latest time passed to any call: what `metrics` and `poll_timeout` consider "now".
    now: Nanos,
    /// The moments read at every call that follow from the probes sent and answered, worked out when those
    /// change rather than at each look (a node looks several times a probe).
    due: Due,
}

/// A [`LinkEstimator`]'s [`ProbeConfig`], its spans in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Timing {
    fast: Nanos,
    slow: Nanos,
    loss_window: Nanos,
    down_after: Nanos,
    down_probes: usize,
}

/// A [`LinkEstimator`]'s moments that only its probes sent and answered move (see [`LinkEstimator::settle`]).
#[derive(Debug, Clone, Copy, Default)]
struct Due {
    next_probe: Nanos,
    overdue: Option<Nanos>,
    down: Option<Nanos>,
}

impl LinkEstimator {
    /// A fresh estimator for an idle link, after validating `config`.
    pub fn new(config: ProbeConfig) -> Result<Self, ProbeConfigError> {
        let config = config.validate()?;
        Ok(Self {
            // An idle link holds a tenth of the records a busy one does: the window grows when it needs to.
            window: VecDeque::with_capacity(config.records().min(16)),
            records: config.records(),
            ticks: None,
            packets: None,
            outage_packets_until: 0,
            probes_sent: 0,
            probes_answered: 0,
            probes_forgotten: 0,
            verdict: None,
            answered: 0,
            trailing: 0,
            timing: Timing {
                fast: nanos(config.fast_interval),
                slow: nanos(config.slow_interval),
                loss_window: nanos(config.loss_window),
                down_after: nanos(config.down_after),
                down_probes: config.down_probes,
            },
            active: false,
            next_seq: 0,
            srtt: None,
            rttvar: 0,
            jitter: 0,
            last_rtt: None,
            reported: None,
            reported_until: None,
            now: 0,
            due: Due::default(),
        })
    }

    /// Asks the processor to bring the records that the next probe sent or answered reads into its caches,
    /// without waiting for them (see [`crate::prefetch`]): the oldest, which time pushes out, and the newest.
    pub fn prefetch(&self) {
        let (older, newer) = self.window.as_slices();
        crate::prefetch::slice(&older[..older.len().min(PREFETCHED_RECORDS)]);
        if let Some(newest) = newer.last().or(older.last()) {
            crate::prefetch::value(newest);
        }
    }

    /// The interval between probes while the link carries traffic to this end, in nanoseconds.
    pub fn fast_interval(&self) -> Nanos {
        self.timing.fast
    }

    /// Marks the link as carrying traffic (probe fast) or idle (probe slow). Becoming active brings the next
    /// probe forward to one fast interval after the last one.
    pub fn set_active(&mut self, active: bool) {
        if self.active != active {
            self.active = active;
            self.settle();
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// A probe is due at `now`: returns the sequence number it must carry. The probe counts from
    /// [`handle_probe_sent`](Self::handle_probe_sent), so a probe the driver could not send is not taken for a
    /// lost one.
    pub fn poll_probe(&mut self, now: Duration) -> Option<u64> {
        let now = self.advance(now);
        if now < self.due.next_probe {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ticks = Some((tick(now, self.timing.fast), tick(now, self.timing.slow)));
        // The grid moved; nothing else of `due` did.
        self.due.next_probe = self.find_next_probe(self.unanswered(0), self.rto_ns());
        Some(seq)
    }

    /// The probe `seq` left at `now`. A sequence number not above the last one sent is ignored.
    pub fn handle_probe_sent(&mut self, now: Duration, seq: u64) {
        let now = self.advance(now);
        if self.window.back().is_some_and(|last| last.seq >= seq) {
            return;
        }
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        // Probes older than the loss window leave it, but those sent since the last answer, which the down
        // verdict reads; the records' number is bounded either way.
        let oldest = now.saturating_sub(self.timing.loss_window);
        while self.window.len() > self.trailing && self.window.front().is_some_and(|r| r.sent_ns < oldest) {
            self.pop_oldest();
        }
        if self.window.len() >= self.records {
            self.pop_oldest();
        }
        // A busy link's train of probes reaches the oldest records once each, far apart: ask for those that
        // leave next while the probe goes.
        if let Some(leaving) = self.window.as_slices().0.get(PREFETCHED_RECORDS) {
            crate::prefetch::value(leaving);
        }
        self.window.push_back(ProbeRecord::new(seq, now));
        self.trailing += 1;
        self.probes_sent += 1;
        self.reported_until = None;
        self.settle();
    }

    fn pop_oldest(&mut self) {
        if self.window.pop_front().is_some_and(|oldest| oldest.answered) {
            self.answered -= 1;
        }
        self.trailing = self.trailing.min(self.window.len());
    }

    /// The transport's running totals of the packets it sent on this link's connection and declared lost, as
    /// of `now` (the driver reads them when it probes). Counted only from the second call on, as the
    /// difference; totals that go backwards (another connection) start the count again. Just after an outage
    /// the packets declared lost are the outage's and do not count (see
    /// [`handle_outage_end`](Self::handle_outage_end)).
    pub fn handle_packet_counts(&mut self, now: Duration, sent: u64, lost: u64) {
        let now = self.advance(now);
        let part = self.packet_part(now);
        let Some(packets) = &mut self.packets else {
            let parts = [(0, 0); PACKET_PARTS];
            self.packets =
                Some(Box::new(PacketWindow { parts, newest: part, total: Tally::default(), seen: (sent, lost) }));
            return;
        };
        let (sent_before, lost_before) = std::mem::replace(&mut packets.seen, (sent, lost));
        let (Some(sent), Some(lost)) = (sent.checked_sub(sent_before), lost.checked_sub(lost_before)) else {
            return;
        };
        if sent == 0 || now < self.outage_packets_until {
            return;
        }
        let (sent32, lost32) = (u32::try_from(sent).unwrap_or(u32::MAX), u32::try_from(lost).unwrap_or(u32::MAX));
        let lost32 = lost32.min(sent32);
        packets.advance(part);
        let counts = &mut packets.parts[(packets.newest % PACKET_PARTS as u64) as usize];
        counts.0 = counts.0.saturating_add(sent32);
        counts.1 = counts.1.saturating_add(lost32);
        packets.total.trials += u64::from(sent32);
        packets.total.lost += u64::from(lost32);
        self.reported_until = None;
    }

    /// The node judged the link down (nothing at all arrived over its connection for a while) and hears it
    /// again at `now`. The connection's packet counts tell of the outage: the transport declares the packets
    /// it sent meanwhile lost once the path is back, just before or after this (on the first
    /// acknowledgement of a later packet). So the packet window and the loss verdict start again, and the
    /// losses counted within [`ProbeConfig::down_after`] (or the loss timeout, if longer) from now are left
    /// out. Without this a link cut for a few seconds while idle came back reading 10 % lossy, a verdict its
    /// few idle probes then took minutes to clear, and routes kept away from it. A lossy link whose probes
    /// are lost in runs while its data still arrives is not down for the node, and keeps its counts.
    pub fn handle_outage_end(&mut self, now: Duration) {
        let now = self.advance(now);
        if let Some(packets) = &mut self.packets {
            packets.parts = [(0, 0); PACKET_PARTS];
        }
        self.verdict = None;
        self.outage_packets_until = now.saturating_add(self.timing.down_after.max(self.loss_timeout()));
        self.reported_until = None;
    }

    /// The part of the loss window that `now` falls in (see [`PacketWindow`]).
    fn packet_part(&self, now: Nanos) -> u64 {
        let len = (self.timing.loss_window / PACKET_PARTS as u64).max(1);
        now / len
    }

    /// The neighbour echoed probe `seq` at `now`. Returns the round-trip sample it gave, or `None` for an
    /// unknown, duplicate or long-forgotten probe (which changes nothing).
    pub fn handle_probe_reply(&mut self, now: Duration, seq: u64) -> Option<Duration> {
        let now = self.advance(now);
        // Sequence numbers are usually consecutive at the window's end, where replies come for: look where
        // `seq` would be counting back from the newest probe first (in the same cache lines).
        let newest = self.window.back()?.seq;
        let back = newest.checked_sub(seq).and_then(|d| usize::try_from(d).ok());
        let guess = back.and_then(|d| self.window.len().checked_sub(d + 1));
        let at = match guess {
            Some(at) if self.window.get(at).is_some_and(|r| r.seq == seq) => at,
            _ => self.window.binary_search_by_key(&seq, |r| r.seq).ok()?,
        };
        if self.window[at].answered {
            return None;
        }
        // The link answers again after an outage. The probes sent since its last answer tell of the outage,
        // which the down verdict already reported, not of how the repaired link performs: they leave the
        // window, those lost and those still on their way, so that a repaired link reads as it measures from
        // now on. The reply itself went out during the outage too (on a live link the probe may have waited
        // in the connection's send queue until the path came back): its round trip measures the outage, so it
        // brings the link up without being a sample, unless it is the link's first.
        let outage = self.down_by(now);
        let at = if outage { self.forget_outage(at) } else { at };
        let record = &mut self.window[at];
        let rtt = now.saturating_sub(record.sent_ns);
        record.answered = true;
        self.answered += 1;
        self.probes_answered += 1;
        self.trailing = self.trailing.min(self.window.len() - at - 1);
        self.reported_until = None;
        if !outage || self.srtt.is_none() {
            self.add_sample(rtt);
        }
        self.settle();
        Some(duration(rtt))
    }

    /// Drops every unanswered probe sent after the last answered one but the one at `at`; returns where that
    /// one is now.
    fn forget_outage(&mut self, at: usize) -> usize {
        let first = self.window.len() - self.trailing;
        if at < first {
            return at;
        }
        self.probes_forgotten += (self.window.len() - 1 - first) as u64;
        self.window.truncate(at + 1);
        self.window.drain(first..at);
        self.trailing = 1;
        first
    }

    /// When the driver must call again: the next probe, or the moment the link would be declared down if no
    /// reply arrives, whichever is first.
    pub fn poll_timeout(&self) -> Duration {
        let next_probe = self.due.next_probe;
        duration(match self.due.down {
            Some(down) if down > self.now => next_probe.min(down),
            _ => next_probe,
        })
    }

    /// The link's smoothed measurements as of the latest time passed in, or `None` before the first reply.
    /// Its `loss` is the loss the link's cost carries: 0 until the link is shown to lose more than
    /// [`LOSS_FLOOR`] (see [`measured_loss`](Self::measured_loss) for the plain count). A verdict once shown
    /// is kept by [`report`](Self::report), which the control plane reads every round; between reads this
    /// judges it afresh from the window and the verdict last kept.
    pub fn metrics(&self) -> Option<LinkMetrics> {
        let loss = self.judge().map_or(0.0, |v| v.rate);
        Some(LinkMetrics { rtt: duration(self.srtt?), jitter: duration(self.jitter), loss })
    }

    /// The share of packets lost over the loss window, one way: the unanswered probes (each two packets, one
    /// of them lost) and the connection's own packets, as counted. What an operator reads; routing reads
    /// [`metrics`](Self::metrics).
    pub fn measured_loss(&self) -> f64 {
        self.tallies().0.rate()
    }

    /// The loss window's tally, and every trial since the estimator started.
    fn tallies(&self) -> (Tally, Tally) {
        let (lost, pending) = self.probe_losses();
        let settled = self.answered + lost;
        let (in_window, total) = match &self.packets {
            Some(p) => (p.suffixes(self.packet_part(self.now)).last().unwrap_or_default(), p.total),
            None => (Tally::default(), Tally::default()),
        };
        let window = Tally { trials: 2 * settled as u64 + in_window.trials, lost: lost as u64 + in_window.lost };
        let settled_total = self.probes_sent.saturating_sub(self.probes_forgotten).saturating_sub(pending as u64);
        let total = Tally {
            trials: 2 * settled_total + total.trials,
            lost: settled_total.saturating_sub(self.probes_answered) + total.lost,
        };
        (window, total)
    }

    /// The loss verdict as of now: loss enters the cost when the window shows it above [`LOSS_FLOOR`], at the
    /// window's rate, and leaves it only when what came after shows it below the floor. A link that lost
    /// 3 % and then went idle keeps its verdict while its few idle probes cannot tell; it is not tried again
    /// on the strength of too little evidence.
    ///
    /// Besides the whole window (probes and packets), the newest parts of the packet counts are judged on
    /// their own, from the newest tenth of the window up: a link that starts losing after a clean spell
    /// shows it once the packets since the change show it. The rate is that of the longest stretch that
    /// shows it. Judging ten stretches instead of one raises the chance that a link at the floor shows loss
    /// by chance at a look to at most ten times [`LOSS_EVIDENCE`]'s bound (less, as the stretches overlap).
    fn judge(&self) -> Option<LossVerdict> {
        let (window, total) = self.tallies();
        if evidence(window.trials, window.lost, true) {
            return Some(LossVerdict { rate: window.rate(), since: total });
        }
        if let Some(packets) = &self.packets {
            let mut shown = None;
            for part in packets.suffixes(self.packet_part(self.now)).take(PACKET_PARTS - 1) {
                if evidence(part.trials, part.lost, true) {
                    shown = Some(part);
                }
            }
            if let Some(part) = shown {
                return Some(LossVerdict { rate: part.rate(), since: total });
            }
        }
        let held = self.verdict?;
        let after = total.trials.saturating_sub(held.since.trials);
        let lost = total.lost.saturating_sub(held.since.lost);
        (!evidence(after, lost, false)).then_some(held)
    }

    /// The measurements to report to the control plane: [`metrics`](Self::metrics) when the cost they give
    /// ([`LinkMetrics::graph_cost`]) differs clearly ([`DampingConfig::is_clear_change`], with the damper's
    /// default margins) from that of the metrics last reported, or on the first call that has any; otherwise
    /// the metrics last reported, again. `None` before the first reply.
    ///
    /// Whatever it decides, it returns the metrics it then holds as reported, and asked again with the same
    /// metrics it decides the same: so they are looked at only once the metrics may have moved.
    pub fn report(&mut self) -> Option<LinkMetrics> {
        if self.reported_until.is_some_and(|until| self.now < until) {
            return self.reported;
        }
        let rtt = duration(self.srtt?);
        self.verdict = self.judge();
        let current = LinkMetrics { rtt, jitter: duration(self.jitter), loss: self.verdict.map_or(0.0, |v| v.rate) };
        self.reported_until = Some(self.loss_moves_at());
        match self.reported {
            Some(held) if !self.moves(&held, &current) => Some(held),
            _ => {
                self.reported = Some(current);
                Some(current)
            }
        }
    }

    /// Whether [`report`](Self::report) goes on handing out the metrics it last reported for as long as every
    /// probe from now on is answered, each with a round trip within `rtt`, and the connection's packets are
    /// not lost: a simulator that knows its links spares itself reading a node whose reports cannot change
    /// (a large mesh's links are nearly all such). `false` when it cannot tell.
    ///
    /// The smoothed round trip then stays between its present value and the range, the jitter between its
    /// present value and the largest difference of two round trips to come (the first of them against the
    /// last seen), so the cost stays between two bounds; the report holds if neither bound is a clear change
    /// from the cost held, with no loss held or judged. No loss can be judged: the losses in the window can
    /// only leave it, and those still to come are the probes whose answer is later than the loss timeout,
    /// at most one per probe interval of the longest round trip; fewer than `LOSS_EVIDENCE_LOSSES` in all
    /// can never show loss.
    pub fn report_holds(&self, rtt: std::ops::RangeInclusive<Nanos>) -> bool {
        let (lo, hi) = (*rtt.start(), *rtt.end());
        let (Some(held), Some(srtt), Some(last)) = (self.reported, self.srtt, self.last_rtt) else { return false };
        if self.verdict.is_some() || held.loss != 0.0 || lo > hi {
            return false;
        }
        // Every loss a look can count from now on: those counted now, the packets', and the probes answered
        // after the loss timeout, which is at least three times the least smoothed round trip to come.
        let late = if srtt.min(lo).saturating_mul(3) >= hi { 0 } else { hi / self.timing.fast.max(1) + 1 };
        let packets = self.packets.as_ref().map_or(0, |p| p.parts.iter().map(|&(_, lost)| u64::from(lost)).sum());
        if self.probe_losses().0 as u64 + packets + late >= LOSS_EVIDENCE_LOSSES {
            return false;
        }
        let jitter = self.jitter.max(hi - lo).max(last.abs_diff(lo)).max(last.abs_diff(hi));
        let cost = |rtt: Nanos, jitter: Nanos| {
            LinkMetrics { rtt: duration(rtt), jitter: duration(jitter), loss: 0.0 }.graph_cost()
        };
        let damping = DampingConfig::default();
        let held = held.graph_cost();
        !damping.is_clear_change(held, cost(srtt.min(lo), 0))
            && !damping.is_clear_change(held, cost(srtt.max(hi), jitter))
    }

    /// Whether the report moves from `held` to `current`: their costs differ clearly (the damper's margins),
    /// and the change is not noise. Loss moves only by its verdict, which is evidence already. Latency must
    /// also move by more than the round trips' own variation (`rttvar`): a smoothed round trip over noisy
    /// samples wanders by a fraction of it, a real change of path or queue moves it by more.
    fn moves(&self, held: &LinkMetrics, current: &LinkMetrics) -> bool {
        if !DampingConfig::default().is_clear_change(held.graph_cost(), current.graph_cost()) {
            return false;
        }
        if held.loss != current.loss {
            return true;
        }
        let one_way = |m: &LinkMetrics| (m.rtt + m.jitter) / 2;
        nanos(one_way(held).abs_diff(one_way(current))) >= self.rttvar
    }

    /// Whether the link is down at `now`: at least `down_probes` probes sent since the last answered one (more
    /// on a lossy link, see [`chance_run`](Self::chance_run)) are overdue (older than [`rto`](Self::rto)), and
    /// the first of them went out at least `down_after` ago. Any reply brings it back up.
    pub fn is_down(&self, now: Duration) -> bool {
        self.down_by(nanos(now))
    }

    /// [`is_down`](Self::is_down) in nanoseconds.
    fn down_by(&self, now: Nanos) -> bool {
        self.due.down.is_some_and(|down| now >= down)
    }

    /// How long a reply may reasonably take: `srtt + max(4 × rttvar, 1 ms)`, or `down_after` before the first
    /// reply.
    pub fn rto(&self) -> Duration {
        duration(self.rto_ns())
    }

    fn rto_ns(&self) -> Nanos {
        match self.srtt {
            Some(srtt) => srtt.saturating_add(self.rttvar.saturating_mul(4).max(RTO_GRANULARITY)),
            None => self.timing.down_after,
        }
    }

    /// Time moves on to `now`, if that is later: returns `now`.
    fn advance(&mut self, now: Duration) -> Nanos {
        let now = nanos(now);
        self.now = self.now.max(now);
        now
    }

    fn add_sample(&mut self, rtt: Nanos) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                self.rttvar = self.rttvar.saturating_mul(3).saturating_add(srtt.abs_diff(rtt)) / 4;
                self.srtt = Some(srtt.saturating_mul(7).saturating_add(rtt) / 8);
            }
        }
        if let Some(last) = self.last_rtt {
            let delta = last.abs_diff(rtt);
            if delta > self.jitter {
                self.jitter += (delta - self.jitter) / 16;
            } else {
                self.jitter -= (self.jitter - delta) / 16;
            }
        }
        self.last_rtt = Some(rtt);
    }

    /// When the `k`-th probe (from 0) sent after the last answered one left, if that many are unanswered.
    fn unanswered(&self, k: usize) -> Option<Nanos> {
        let at = (self.window.len() - self.trailing).checked_add(k)?;
        self.window.get(at).map(|r| r.sent_ns)
    }

    /// Works out the moments that the probes sent and answered set ([`Due`]): called whenever those change.
    fn settle(&mut self) {
        let (rto, run, first) = (self.rto_ns(), self.chance_run(), self.unanswered(0));
        let kth = self.unanswered(self.timing.down_probes.max(run) - 1);
        let down_after = self.timing.down_after;
        self.due = Due {
            next_probe: self.find_next_probe(first, rto),
            overdue: self.unanswered(run - 1).map(|at| at.saturating_add(rto)),
            down: first.zip(kth).map(|(first, kth)| first.saturating_add(down_after).max(kth.saturating_add(rto))),
        };
    }

    /// When the next probe is due, given when the first unanswered one left (if any) and the link's `rto`.
    fn find_next_probe(&self, first: Option<Nanos>, rto: Nanos) -> Nanos {
        match self.ticks {
            None => 0,
            Some((fast, _)) if self.active => fast,
            // An idle link whose probe is overdue is probed fast until it answers.
            Some((fast, slow)) => first.map_or(slow, |first| slow.min(fast.max(first.saturating_add(rto)))),
        }
    }

    /// When the oldest probe sent since the last answered one is (or will be) overdue, if any is
    /// unanswered: the first sign of a silent link, which a node that also hears the link's data weighs.
    /// On a lossy link the probe is the last of a run ([`chance_run`](Self::chance_run)). In nanoseconds
    /// since the caller's epoch.
    pub fn overdue_at(&self) -> Option<Nanos> {
        self.due.overdue
    }

    /// How many probes in a row must go unanswered before that is more than the link's own loss: one on a
    /// link that has lost nothing, more the more it loses, until such a run would come by chance less than
    /// once in [`CHANCE_RUN`]. At 0.5 % loss each way (1 % of round trips), three lost in a row come about
    /// once in a million probes, which a mesh probing hundreds of links ten times a second reaches within
    /// minutes, four once in a hundred million. The rate is the probes' over the estimator's whole life,
    /// outages left out (their probes are forgotten when the link answers again). The connection's packets
    /// are not counted: the transport declares an outage's packets lost after the path returns, so a link
    /// cut and repaired a few times would read as lossy and be judged slower each time.
    fn chance_run(&self) -> usize {
        let settled = self.probes_sent.saturating_sub(self.probes_forgotten).saturating_sub(self.trailing as u64);
        let lost = settled.saturating_sub(self.probes_answered);
        if lost == 0 {
            return 1;
        }
        let round_trip = lost as f64 / (settled + RUN_PRIOR) as f64;
        let (mut run, mut chance) = (1, round_trip);
        while chance > CHANCE_RUN && run < MAX_RUN {
            run += 1;
            chance *= round_trip;
        }
        // The window must hold the run.
        run.min(self.records)
    }

    /// When the link is (or, without a reply, will be) down given the probes sent so far: `is_down(now)` is
    /// `now >= down_at` until the estimator is driven again. In nanoseconds since the caller's epoch.
    pub fn down_at(&self) -> Option<Nanos> {
        self.due.down
    }

    /// How long an unanswered probe takes to count as lost.
    fn loss_timeout(&self) -> Nanos {
        match self.srtt {
            Some(srtt) => srtt.saturating_mul(3).max(self.rto_ns()),
            None => self.rto_ns(),
        }
    }

    /// The probes that can count as lost: those sent before the last answered one. The probes sent since
    /// (`trailing`) are either on their way or an outage's, which the down verdict reads; they count once
    /// the link answers after them, or leave the window with the outage.
    fn settled_part(&self) -> impl DoubleEndedIterator<Item = &ProbeRecord> + '_ {
        self.window.range(..self.window.len() - self.trailing)
    }

    /// When the loss count next moves with nothing sent or answered: the oldest unanswered probe still too
    /// recent to tell comes to count as lost (`u64::MAX`: none is pending).
    fn loss_moves_at(&self) -> Nanos {
        let timeout = self.loss_timeout();
        let recent = self.settled_part().rev().take_while(|r| self.now < r.sent_ns.saturating_add(timeout));
        recent.filter(|r| !r.answered).last().map_or(u64::MAX, |r| r.sent_ns.saturating_add(timeout))
    }

    /// How many probes of the window are lost, and how many unanswered ones (the trailing ones among them)
    /// cannot tell yet.
    fn probe_losses(&self) -> (usize, usize) {
        let timeout = self.loss_timeout();
        // Every unanswered probe before the last answered one is lost but those too recent to tell (a late
        // reply still counts), which are the newest: count those from the back (probes are in the order
        // they left). Every answered probe is before the trailing ones.
        let unanswered = self.window.len() - self.trailing - self.answered;
        let recent = self
            .settled_part()
            .rev()
            .take_while(|r| self.now < r.sent_ns.saturating_add(timeout))
            .filter(|r| !r.answered)
            .count();
        (unanswered - recent, recent + self.trailing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A stepping harness: one estimator driven the way the mesh driver drives it, over a link whose round
    /// trip, loss and failure time the test picks. Replies are delivered in arrival order.
    struct Link {
        est: LinkEstimator,
        now: Duration,
        /// (arrival, seq) of replies in flight.
        replies: BinaryHeap<Reverse<(Duration, u64)>>,
        /// Round trip of each probe, by send time; `None` drops it.
        rtt: Box<dyn FnMut(Duration, u64) -> Option<Duration>>,
        /// Replies arriving at or after this time are lost (the link failed).
        dead_from: Duration,
        sent: u64,
    }

    impl Link {
        fn new(config: ProbeConfig, rtt: impl FnMut(Duration, u64) -> Option<Duration> + 'static) -> Self {
            Link {
                est: LinkEstimator::new(config).unwrap(),
                now: Duration::ZERO,
                replies: BinaryHeap::new(),
                rtt: Box::new(rtt),
                dead_from: Duration::MAX,
                sent: 0,
            }
        }

        /// Runs until `until`, or until `stop` holds after some step; returns the time it stopped.
        fn run(&mut self, until: Duration, mut stop: impl FnMut(&LinkEstimator, Duration) -> bool) -> Duration {
            loop {
                let next_reply = self.replies.peek().map_or(Duration::MAX, |Reverse((at, _))| *at);
                let next = self.est.poll_timeout().min(next_reply).max(self.now);
                if next > until {
                    self.now = until;
                    return until;
                }
                self.now = next;
                while let Some(&Reverse((at, seq))) = self.replies.peek() {
                    if at > self.now {
                        break;
                    }
                    self.replies.pop();
                    self.est.handle_probe_reply(at, seq);
                }
                while let Some(seq) = self.est.poll_probe(self.now) {
                    self.est.handle_probe_sent(self.now, seq);
                    self.sent += 1;
                    if let Some(rtt) = (self.rtt)(self.now, seq) {
                        // The reply is lost when the link fails before it is back.
                        if self.now + rtt < self.dead_from {
                            self.replies.push(Reverse((self.now + rtt, seq)));
                        }
                    }
                }
                if stop(&self.est, self.now) {
                    return self.now;
                }
            }
        }
    }

    #[test]
    fn smoothed_rtt_converges_and_follows_a_change() {
        let mut link = Link::new(ProbeConfig::default(), |now, _| Some(if now < ms(10_000) { ms(40) } else { ms(80) }));
        link.est.set_active(true);
        link.run(ms(9_990), |_, _| false);
        let m = link.est.metrics().unwrap();
        assert_eq!(m.rtt, ms(40));
        assert_eq!(m.jitter, Duration::ZERO);
        assert_eq!(m.loss, 0.0);
        assert_eq!(m.cost(), 20_000);
        // Doubling the round trip: within 5 % of the new value after 3 s (30 samples at gain 1/8).
        link.run(ms(13_000), |_, _| false);
        let m = link.est.metrics().unwrap();
        assert!(m.rtt > ms(76) && m.rtt <= ms(80), "{m:?}");
        assert!(!link.est.is_down(link.now));
    }

    #[test]
    fn jitter_tracks_round_trip_variation() {
        // Alternating 40 and 50 ms: consecutive samples differ by 10 ms.
        let mut link = Link::new(ProbeConfig::default(), |_, seq| Some(if seq % 2 == 0 { ms(40) } else { ms(50) }));
        link.est.set_active(true);
        link.run(ms(20_000), |_, _| false);
        let m = link.est.metrics().unwrap();
        assert!(m.jitter > ms(9) && m.jitter <= ms(10), "{m:?}");
        assert!(m.rtt >= ms(40) && m.rtt <= ms(50), "{m:?}");
    }

    #[test]
    fn loss_is_the_unanswered_share_of_the_window_once_shown() {
        // Every tenth probe is lost for 30 s, then none: one packet in 20 each way.
        let mut link =
            Link::new(ProbeConfig::default(), |now, seq| (seq % 10 != 3 || now >= ms(30_000)).then_some(ms(30)));
        link.est.set_active(true);
        link.run(ms(30_000), |_, _| false);
        let m = link.est.metrics().unwrap();
        assert!((link.est.measured_loss() - 0.05).abs() <= 0.006, "{m:?}");
        assert_eq!(m.loss, link.est.measured_loss(), "100 probes show it above the 1 % floor");
        assert_eq!(m.rtt, ms(30));
        // 5 % loss costs about 50 ms on top of the 15 ms one-way latency.
        assert!(m.cost().abs_diff(15_000 + 50_000) <= 1_500, "{m:?}");
        assert!(!link.est.is_down(link.now), "isolated losses never take the link down");
        assert_eq!(link.est.report().unwrap().loss, m.loss);
        // The window forgets the losses after its 10 s, but the verdict (moved on by the reports) stays until
        // clean probes show the loss below the floor: 400 probes (800 packets), 40 s on this busy link.
        link.run(ms(40_100), |_, _| false);
        assert_eq!(link.est.measured_loss(), 0.0);
        assert!(link.est.report().unwrap().loss > 0.04, "{:?}", link.est.report());
        let clean = link.run(ms(90_000), |est, _| est.clone().report().unwrap().loss == 0.0);
        assert!(clean > ms(65_000) && clean < ms(75_000), "{clean:?}");
    }

    #[test]
    fn a_few_lost_probes_are_not_evidence_and_lost_packets_are() {
        // A busy link that loses one probe in 50 (1 % each way, the floor): never shown above it.
        let mut rng = StdRng::seed_from_u64(5);
        let mut link = Link::new(ProbeConfig::default(), move |_, _| (!rng.gen_bool(0.02)).then_some(ms(30)));
        link.est.set_active(true);
        let shown = link.run(ms(600_000), |est, _| est.metrics().is_some_and(|m| m.loss > 0.0));
        assert_eq!(shown, ms(600_000), "probes at the floor read as loss");
        // Its stream's packets, 300 a second, lose 3 %: shown within about two seconds.
        let (mut sent, mut lost) = (0, 0);
        let start = link.now;
        link.est.handle_packet_counts(start, sent, lost);
        let mut at = start;
        while link.est.metrics().unwrap().loss == 0.0 {
            at += ms(20);
            sent += 6;
            lost += u64::from((sent / 6) % 6 == 0);
            link.run(at, |_, _| false);
            link.est.handle_packet_counts(at, sent, lost);
            assert!(at < start + ms(5_000), "3 % packet loss not shown");
        }
        assert!(at - start <= ms(3_000), "{:?}", at - start);
        assert!(link.est.metrics().unwrap().loss > 0.02, "{:?}", link.est.metrics());
    }

    #[test]
    fn a_busy_link_that_starts_losing_shows_it_despite_its_clean_past() {
        // 300 packets a second, clean for 20 s, then one in 36 lost (2.8 %). Over the whole 10 s window the
        // clean part outweighs the loss for about five seconds; the newest parts show it on their own.
        let mut link = Link::new(ProbeConfig::default(), |_, _| Some(ms(30)));
        link.est.set_active(true);
        let (mut sent, mut lost) = (0, 0);
        let mut at = Duration::ZERO;
        let mut step = |link: &mut Link, at: &mut Duration, lossy: bool| {
            *at += ms(20);
            sent += 6;
            lost += u64::from(lossy && (sent / 6) % 6 == 0);
            link.run(*at, |_, _| false);
            link.est.handle_packet_counts(*at, sent, lost);
        };
        while at < ms(20_000) {
            step(&mut link, &mut at, false);
        }
        assert_eq!(link.est.metrics().unwrap().loss, 0.0);
        let start = at;
        while link.est.metrics().unwrap().loss == 0.0 {
            step(&mut link, &mut at, true);
            assert!(at < start + ms(10_000), "2.8 % loss after a clean spell not shown");
        }
        assert!(at - start <= ms(3_000), "shown {:?} after the loss began", at - start);
        let shown = link.est.metrics().unwrap().loss;
        assert!(shown > 0.012 && shown < 0.06, "{shown}");
        assert!(link.est.measured_loss() < 0.01, "the whole window: {}", link.est.measured_loss());
        // Clean again: the verdict holds until the packets since show the rate below the floor.
        assert!(link.est.report().unwrap().loss > 0.0);
        let clean_from = at;
        while link.est.report().unwrap().loss > 0.0 {
            step(&mut link, &mut at, false);
            assert!(at < clean_from + ms(30_000), "a clean link kept its loss verdict");
        }
    }

    #[test]
    fn packet_counts_leave_the_window_with_time() {
        let mut est = LinkEstimator::new(ProbeConfig::default()).unwrap();
        est.handle_packet_counts(ms(0), 0, 0);
        est.handle_packet_counts(ms(500), 1_000, 100);
        assert!((est.measured_loss() - 0.1).abs() < 1e-9, "{}", est.measured_loss());
        // Totals that go backwards (another connection) start the count again without counting.
        est.handle_packet_counts(ms(600), 10, 0);
        est.handle_packet_counts(ms(700), 1_010, 0);
        assert!((est.measured_loss() - 0.05).abs() < 1e-9, "{}", est.measured_loss());
        // Ten seconds on, the counts of the first second have left; those of 10.5 s are in.
        est.handle_packet_counts(ms(10_500), 1_110, 0);
        assert_eq!(est.measured_loss(), 0.0);
        // Long silences empty the ring whatever its position.
        est.handle_packet_counts(ms(95_000), 1_210, 50);
        assert!((est.measured_loss() - 0.5).abs() < 1e-9, "{}", est.measured_loss());
    }

    #[test]
    fn late_replies_are_not_loss() {
        let mut est = LinkEstimator::new(ProbeConfig::default()).unwrap();
        for seq in 0..10 {
            est.handle_probe_sent(ms(seq * 100), seq);
            est.handle_probe_reply(ms(seq * 100 + 20), seq);
        }
        est.handle_probe_sent(ms(1_000), 10);
        est.handle_probe_sent(ms(1_100), 11);
        est.handle_probe_reply(ms(1_120), 11);
        assert!(est.measured_loss() > 0.0, "probe 10 is overdue");
        assert_eq!(est.handle_probe_reply(ms(1_150), 10), Some(ms(150)));
        assert_eq!(est.measured_loss(), 0.0);
        assert_eq!(est.handle_probe_reply(ms(1_160), 10), None, "duplicate");
        assert_eq!(est.handle_probe_reply(ms(1_160), 99), None, "never sent");
        est.handle_probe_sent(ms(1_200), 5);
        assert_eq!(est.handle_probe_reply(ms(1_210), 5), None, "a stale sequence number is not recorded");
    }

    /// Detection time after a failure at many phases relative to the probe schedule.
    fn detection_times(rtt: Duration, active: bool, phases: u64) -> Vec<Duration> {
        (0..phases)
            .map(|phase| {
                let mut link = Link::new(ProbeConfig::default(), move |_, _| Some(rtt));
                link.est.set_active(active);
                let fail = ms(20_000) + ms(1_000) * phase as u32 / phases as u32;
                link.dead_from = fail;
                link.run(fail, |_, _| false);
                assert!(!link.est.is_down(fail), "down before the failure");
                let down = link.run(fail + ms(10_000), |est, now| est.is_down(now));
                assert!(link.est.is_down(down), "never detected");
                down - fail
            })
            .collect()
    }

    #[test]
    fn a_failed_active_link_is_down_within_400ms() {
        for rtt in [ms(2), ms(40), ms(80)] {
            let times = detection_times(rtt, true, 200);
            let worst = *times.iter().max().unwrap();
            let best = *times.iter().min().unwrap();
            assert!(worst <= ms(400), "rtt {rtt:?}: worst detection {worst:?}");
            assert!(best >= ms(300) - rtt, "rtt {rtt:?}: detection {best:?} faster than the configured minimum");
        }
        // A 200 ms link needs its replies' time: still bounded, by first loss + 2 fast intervals + rto.
        let worst = *detection_times(ms(200), true, 50).iter().max().unwrap();
        assert!(worst <= ms(100) + ms(200) + ms(201) + ms(200), "{worst:?}");
    }

    #[test]
    fn a_failed_idle_link_is_down_within_one_slow_interval_and_a_half() {
        let worst = *detection_times(ms(40), false, 100).iter().max().unwrap();
        assert!(worst <= ms(1_000) + ms(400), "{worst:?}");
    }

    #[test]
    fn random_loss_does_not_take_a_link_down() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut link = Link::new(ProbeConfig::default(), move |_, _| {
            let rtt = ms(40) + Duration::from_micros(rng.gen_range(0..8_000));
            (!rng.gen_bool(0.01)).then_some(rtt)
        });
        link.est.set_active(true);
        let stopped = link.run(ms(600_000), |est, now| est.is_down(now));
        assert_eq!(stopped, ms(600_000), "false down verdict");
        let m = link.est.metrics().unwrap();
        assert!(m.loss < 0.05 && m.rtt > ms(40) && m.rtt < ms(48), "{m:?}");
    }

    #[test]
    fn a_recovered_link_is_up_at_its_first_reply() {
        let mut link =
            Link::new(ProbeConfig::default(), |now, _| (now < ms(5_000) || now >= ms(8_000)).then_some(ms(40)));
        link.est.set_active(true);
        let down = link.run(ms(10_000), |est, now| est.is_down(now));
        assert!(down > ms(5_000) && down <= ms(5_400), "{down:?}");
        let up = link.run(ms(10_000), |est, now| !est.is_down(now));
        assert!(up >= ms(8_040) && up <= ms(8_140), "{up:?}");
    }

    #[test]
    fn an_outage_is_not_loss_once_the_link_answers_again() {
        // An idle link, clean for 60 s, down for 20 s (probed fast while overdue), then clean again.
        let mut link =
            Link::new(ProbeConfig::default(), |now, _| (now < ms(60_000) || now >= ms(80_000)).then_some(ms(40)));
        link.run(ms(60_000), |_, _| false);
        assert_eq!(link.est.metrics().unwrap().loss, 0.0);
        let down = link.run(ms(80_000), |est, now| est.is_down(now));
        assert!(down > ms(60_000) && down <= ms(61_400), "{down:?}");
        link.run(ms(80_000), |_, _| false);
        let lost = link.est.window.iter().filter(|r| !r.answered).count();
        assert!(lost >= 10, "the outage's probes are in the window: {lost}");
        assert_eq!(link.est.measured_loss(), 0.0, "an outage's probes are not loss");
        // The first reply brings the link up, and it reads as clean at once, not after 100 clean probes.
        let up = link.run(ms(90_000), |est, now| !est.is_down(now));
        assert!(up <= ms(80_140), "{up:?}");
        let m = link.est.metrics().unwrap();
        assert_eq!(m.loss, 0.0, "{m:?}");
        assert_eq!(m.cost(), 20_000 + m.jitter.as_micros() as u64 / 2);
        link.run(ms(95_000), |_, _| false);
        assert_eq!(link.est.metrics().unwrap().loss, 0.0);
    }

    #[test]
    fn packets_declared_lost_after_an_outage_are_not_loss() {
        // An idle link whose connection sends 20 packets a second, cut from 30 s to 33 s. The transport counts
        // the packets it sent meanwhile as lost once the path is back (and sends what they carried again):
        // when it returns, before the first probe reply, or 100 ms after that reply. From 38 s the link
        // really loses 10 % of its packets.
        for after_reply in [false, true] {
            let mut link =
                Link::new(ProbeConfig::default(), |now, _| (now < ms(30_000) || now >= ms(33_000)).then_some(ms(40)));
            let (mut sent, mut lost, mut in_outage) = (0u64, 0u64, 0u64);
            let mut back = None;
            let mut t = Duration::ZERO;
            while t < ms(45_000) {
                t += ms(50);
                link.run(t, |_, _| false);
                sent += 1;
                let cut = t > ms(30_000) && t <= ms(33_000);
                if cut {
                    in_outage += 1;
                }
                if t >= ms(38_000) && sent % 10 == 0 {
                    lost += 1;
                }
                if t > ms(33_000) && back.is_none() && !link.est.is_down(t) {
                    // The node hears the link again (it judged it down: nothing came over it).
                    back = Some(t);
                    link.est.handle_outage_end(t);
                }
                let declared = match after_reply {
                    false => t == ms(33_000),
                    true => back.is_some_and(|b| t == b + ms(100)),
                };
                if declared {
                    lost += in_outage;
                    sent += in_outage;
                }
                link.est.handle_packet_counts(t, sent, lost);
                let reported = link.est.report().unwrap();
                if t >= ms(20_000) && t < ms(38_000) && !cut {
                    assert_eq!(reported.loss, 0.0, "declared after the reply: {after_reply}, at {t:?}: {reported:?}");
                }
            }
            assert!(back.is_some_and(|b| b <= ms(33_200)), "{back:?}");
            let loss = link.est.report().unwrap().loss;
            assert!(loss > 0.05 && loss < 0.15, "the loss since the repair shows: {loss}");
        }
    }

    #[test]
    fn replies_held_back_by_an_outage_are_not_round_trip_samples() {
        // An active link, down from 20 s to 23 s; the probes sent meanwhile are not lost but held back (as in
        // a QUIC connection's send queue) and answered all at once when the path returns.
        let mut link = Link::new(ProbeConfig::default(), |now, _| {
            Some(if now >= ms(20_000) && now < ms(23_000) { ms(23_040) - now } else { ms(40) })
        });
        link.est.set_active(true);
        let down = link.run(ms(23_000), |est, now| est.is_down(now));
        assert!(down <= ms(20_400), "{down:?}");
        let up = link.run(ms(30_000), |est, now| !est.is_down(now));
        assert!(up >= ms(23_000) && up <= ms(23_100), "{up:?}");
        link.run(ms(24_000), |_, _| false);
        let m = link.est.metrics().unwrap();
        assert!(m.rtt.abs_diff(ms(40)) < MS, "{m:?}");
        assert!(m.jitter < MS, "{m:?}");
        assert_eq!(m.loss, 0.0, "{m:?}");
    }

    #[test]
    fn losses_that_do_not_take_the_link_down_still_count() {
        // Two probes in a row lost on an active link: fewer than the three a down verdict needs.
        let mut link =
            Link::new(ProbeConfig::default(), |now, _| (now < ms(10_000) || now >= ms(10_200)).then_some(ms(40)));
        link.est.set_active(true);
        let stopped = link.run(ms(12_000), |est, now| est.is_down(now));
        assert_eq!(stopped, ms(12_000), "two lost probes took the link down");
        // One packet in 100 each way: counted, at the floor, not shown above it.
        assert!((link.est.measured_loss() - 0.01).abs() < 0.0025, "{}", link.est.measured_loss());
        assert_eq!(link.est.metrics().unwrap().loss, 0.0);
    }

    #[test]
    fn a_lossy_link_needs_a_longer_run_of_lost_probes_to_go_down() {
        // One round trip in 100 lost: three probes lost in a row, which take a clean link down, are a one in a
        // million chance here, met every few minutes across a mesh; the verdict waits for a fourth.
        let mut rng = StdRng::seed_from_u64(11);
        let mut link = Link::new(ProbeConfig::default(), move |now, _| {
            let cut = now >= ms(120_000) && now < ms(120_300);
            (!cut && !rng.gen_bool(0.01)).then_some(ms(40))
        });
        link.est.set_active(true);
        let stopped = link.run(ms(125_000), |est, now| est.is_down(now));
        assert_eq!(stopped, ms(125_000), "three lost probes took a lossy link down");
        assert_eq!(link.est.chance_run(), 4);
        // A lossy link that fails is still found, in the fourth probe's round trip after the first lost one:
        // later than a clean link's `down_after`, within 500 ms.
        link.dead_from = ms(130_000);
        let down = link.run(ms(140_000), |est, now| est.is_down(now)) - ms(130_000);
        assert!(down >= ms(340) && down <= ms(500), "{down:?}");

        // The same three lost on a clean link are an outage.
        let mut link =
            Link::new(ProbeConfig::default(), |now, _| (now < ms(120_000) || now >= ms(120_300)).then_some(ms(40)));
        link.est.set_active(true);
        let down = link.run(ms(125_000), |est, now| est.is_down(now));
        assert!(down > ms(120_000) && down <= ms(120_400), "{down:?}");
        assert_eq!(link.est.chance_run(), 1);
    }

    #[test]
    fn the_run_a_down_verdict_waits_for_is_bounded() {
        // However lossy the link, a run of MAX_RUN lost probes is enough, and it never outgrows the window.
        for loss in [0.05, 0.2, 0.5] {
            let mut rng = StdRng::seed_from_u64(3);
            let mut link = Link::new(ProbeConfig::default(), move |_, _| (!rng.gen_bool(loss)).then_some(ms(40)));
            link.est.set_active(true);
            link.run(ms(60_000), |_, _| false);
            let run = link.est.chance_run();
            assert!(run > 3 && run <= MAX_RUN, "loss {loss}: run {run}");
            link.dead_from = ms(60_000);
            let down = link.run(ms(70_000), |est, now| est.is_down(now)) - ms(60_000);
            assert!(down <= ms(100) * MAX_RUN as u32 + ms(300), "loss {loss}: {down:?}");
        }
        let config = ProbeConfig { loss_window: ms(300), ..ProbeConfig::default() };
        let mut rng = StdRng::seed_from_u64(3);
        let mut link = Link::new(config, move |_, _| (!rng.gen_bool(0.2)).then_some(ms(40)));
        link.est.set_active(true);
        link.run(ms(60_000), |_, _| false);
        assert!(link.est.chance_run() <= link.est.records, "{}", link.est.chance_run());
    }

    #[test]
    fn reports_move_only_on_a_clear_change() {
        // 40 ms round trips (20 ms of cost) for 20 s, then 42 ms (1 ms more: not clear), then 60 ms.
        let mut link = Link::new(ProbeConfig::default(), |now, _| {
            Some(match now.as_millis() {
                0..20_000 => ms(40),
                20_000..40_000 => ms(42),
                _ => ms(60),
            })
        });
        link.est.set_active(true);
        assert_eq!(link.est.report(), None, "nothing measured yet");
        link.run(ms(20_000), |_, _| false);
        let first = link.est.report().unwrap();
        assert_eq!(first.rtt, ms(40));
        link.run(ms(40_000), |_, _| false);
        assert!(link.est.metrics().unwrap().rtt.abs_diff(ms(42)) < ms(1) / 10);
        assert_eq!(link.est.report(), Some(first), "1 ms of cost is noise to the control plane");
        // Once the cost has moved by 2 ms and 10 %, and by more than the round trips' own variation (which the
        // step itself raises for a few samples), the report follows, and then holds there.
        let moved = link.run(ms(60_000), |est, _| est.clone().report() != Some(first));
        assert!(moved < ms(41_000), "{moved:?}");
        let second = link.est.report().unwrap();
        assert!(second.cost() >= 22_000 && second.cost() < 30_000, "{second:?}");
        link.run(ms(60_000), |_, _| false);
        // It holds within the margins of what the link measures now (60 ms round trips: 30 ms of cost).
        let held = link.est.report().unwrap();
        assert!(held.rtt > ms(54), "{held:?}");
        assert!(!DampingConfig::default().is_clear_change(held.cost(), 30_000), "{held:?}");
        // A fresh estimator (a new connection) reports what it measures from its first reply.
        let mut fresh = LinkEstimator::new(ProbeConfig::default()).unwrap();
        fresh.handle_probe_sent(ms(0), 0);
        fresh.handle_probe_reply(ms(42), 0);
        assert_eq!(fresh.report().unwrap().rtt, ms(42));
    }

    #[test]
    fn a_held_report_is_the_one_looked_at_anew() {
        // Noisy round trips and one probe in ten lost, so that the metrics move between most reads; the link
        // is active half of the time. Read every 30 ms, the report is what a look at the metrics decides.
        let mut rng = StdRng::seed_from_u64(11);
        let mut link = Link::new(ProbeConfig::default(), move |_, _| {
            let rtt = ms(20) + Duration::from_micros(rng.gen_range(0..40_000));
            (!rng.gen_bool(0.1)).then_some(rtt)
        });
        let mut moved = 0;
        for step in 1..4_000u64 {
            link.est.set_active(step % 1_000 < 500);
            link.run(ms(step * 30), |_, _| false);
            let mut anew = link.est.clone();
            anew.reported_until = None;
            let before = link.est.reported;
            assert_eq!(link.est.report(), anew.report(), "at {} ms", step * 30);
            moved += usize::from(before != link.est.reported);
        }
        assert!(moved > 5, "the report moved {moved} times: the test reads no change");
    }

    #[test]
    fn probes_go_slow_when_idle_and_fast_when_active() {
        let mut link = Link::new(ProbeConfig::default(), |_, _| Some(ms(40)));
        link.run(ms(9_500), |_, _| false);
        assert_eq!(link.sent, 10, "idle: one probe a second, the last at 9 s");
        link.est.set_active(true);
        let before = link.sent;
        // Becoming active brings the next probe forward to 9.1 s, which has passed: it goes at once.
        link.run(ms(9_550), |_, _| false);
        assert_eq!(link.sent - before, 1);
        link.run(ms(19_499), |_, _| false);
        assert_eq!(link.sent - before, 100, "active: ten probes a second");
        link.est.set_active(false);
        let before = link.sent;
        link.run(ms(29_499), |_, _| false);
        assert_eq!(link.sent - before, 10);
    }

    #[test]
    fn both_ends_of_a_link_probe_on_the_same_grid_whenever_they_started() {
        // The two ends of one link: one came up at 37 ms, the other at 912 ms (it dialled later).
        let sends = |start: Duration| {
            let mut est = LinkEstimator::new(ProbeConfig::default()).unwrap();
            est.set_active(true);
            let mut at = Vec::new();
            let mut now = start;
            while now < ms(2_000) {
                if let Some(seq) = est.poll_probe(now) {
                    est.handle_probe_sent(now, seq);
                    at.push(now);
                }
                now += MS;
            }
            at
        };
        let (a, b) = (sends(ms(37)), sends(ms(912)));
        assert_eq!((a[0], b[0]), (ms(37), ms(912)), "a link's first probe goes at once");
        let grid: Vec<Duration> = (10..20).map(|k| ms(100 * k)).collect();
        assert_eq!(a[a.len() - 10..], grid[..]);
        assert_eq!(b[b.len() - 10..], grid[..], "after its first probe, each end probes at the multiples of 100 ms");
    }

    #[test]
    fn an_idle_link_with_an_overdue_probe_is_probed_fast() {
        // The probe at 5 s is lost; the link is otherwise healthy.
        let mut link = Link::new(ProbeConfig::default(), |now, _| (now != ms(5_000)).then_some(ms(40)));
        link.run(ms(5_000), |_, _| false);
        let before = link.sent;
        link.run(ms(6_000) - MS, |_, _| false);
        // One retry once the lost probe is overdue (after its rto, about 41 ms), and it is answered.
        assert_eq!(link.sent - before, 1);
        assert!(!link.est.is_down(link.now));
        assert!(link.est.measured_loss() > 0.0);
    }

    #[test]
    fn poll_timeout_wakes_the_driver_for_the_down_verdict() {
        let mut est = LinkEstimator::new(ProbeConfig::default()).unwrap();
        est.set_active(true);
        assert_eq!(est.poll_timeout(), Duration::ZERO, "the first probe is due at once");
        for t in [0, 100, 200] {
            let seq = est.poll_probe(ms(t)).unwrap();
            est.handle_probe_sent(ms(t), seq);
            assert_eq!(est.poll_probe(ms(t)), None);
        }
        assert_eq!(est.poll_timeout(), ms(300), "next probe");
        let seq = est.poll_probe(ms(300)).unwrap();
        est.handle_probe_sent(ms(300), seq);
        // Before any reply the rto is down_after: down when probe 2 (sent at 200 ms) is overdue, at 500 ms.
        assert_eq!(est.poll_timeout(), ms(400));
        assert!(!est.is_down(ms(499)));
        assert!(est.is_down(ms(500)));
    }

    /// How a test link's round trips fall within their range: drawn each way as a simulated link's are, or
    /// the least, the most, or the two in turn (the jitter at its largest).
    #[derive(Debug, Clone, Copy)]
    enum Within {
        Drawn,
        Least,
        Most,
        Turns,
    }

    /// A link whose round trips drift and lose for `switch_ms`, then fall within `2 × latency` and two jitter
    /// draws of `jitter_us` each, as `first` has them for 10 s and then as `then` has, read every 250 ms from
    /// `switch_ms + 2 s` to `switch_ms + 40 s`: each read's report, and whether it holds then.
    #[allow(clippy::too_many_arguments)]
    fn reads_after_a_change(
        before_us: u64,
        latency_us: u64,
        jitter_us: u64,
        switch_ms: u64,
        (first, then): (Within, Within),
        lossy: bool,
        active: bool,
        seed: u64,
    ) -> Vec<(Option<LinkMetrics>, bool)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let switch = ms(switch_ms);
        let most = jitter_us.saturating_sub(1);
        let range = 2 * latency_us * 1_000..=2 * (latency_us + most) * 1_000;
        let mut link = Link::new(ProbeConfig::default(), move |now, seq| {
            if now < switch {
                let drift = rng.gen_range(0..=before_us);
                return (!lossy || rng.gen_bool(0.9)).then(|| Duration::from_micros(before_us + drift));
            }
            let extra = match if now < switch + ms(10_000) { first } else { then } {
                Within::Drawn => rng.gen_range(0..=most) + rng.gen_range(0..=most),
                Within::Least => 0,
                Within::Most => 2 * most,
                Within::Turns => 2 * most * (seq % 2),
            };
            Some(Duration::from_micros(2 * latency_us + extra))
        });
        link.est.set_active(active);
        let mut reads = Vec::new();
        let (mut sent, mut lost) = (0, 0);
        let mut t = ms(250);
        while t <= switch + ms(40_000) {
            link.run(t, |_, _| false);
            // The connection's own packets: lossy before the change when the link is, clean after.
            sent += 300;
            lost += u64::from(lossy && t < switch) * 20;
            link.est.handle_packet_counts(t, sent, lost);
            let report = link.est.report();
            if t >= switch + ms(2_000) {
                reads.push((report, link.est.report_holds(range.clone())));
            }
            t += ms(250);
        }
        reads
    }

    fn within() -> impl proptest::strategy::Strategy<Value = Within> {
        proptest::prop_oneof![
            proptest::strategy::Just(Within::Drawn),
            proptest::strategy::Just(Within::Least),
            proptest::strategy::Just(Within::Most),
            proptest::strategy::Just(Within::Turns),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// Once `report_holds` says a report holds, every later report is that one, whatever round trips
        /// within the range come (drawn, or at its ends to move the report most): after any history of round
        /// trips and losses, probed fast or slowly.
        #[test]
        fn a_report_that_holds_is_every_later_one(
            before_us in 200u64..150_000,
            latency_us in 100u64..100_000,
            jitter_us in 0u64..10_000,
            switch_ms in 1_000u64..30_000,
            first in within(),
            then in within(),
            lossy: bool,
            active: bool,
            seed: u64,
        ) {
            let reads =
                reads_after_a_change(before_us, latency_us, jitter_us, switch_ms, (first, then), lossy, active, seed);
            if let Some(first) = reads.iter().position(|&(_, holds)| holds) {
                let held = reads[first].0;
                for (k, (report, _)) in reads.iter().enumerate().skip(first) {
                    proptest::prop_assert_eq!(*report, held, "read {} after it held at read {}", k, first);
                }
            }
        }
    }

    #[test]
    fn a_settled_link_holds_its_report_and_one_that_moved_does_not_yet() {
        // A link of 20 ms each way, 1 ms of jitter each way (a simulated link's), since its first 250 ms: once
        // its smoothed round trip and jitter have forgotten that start (reads 4 s apart here), its report holds
        // at every read.
        let reads = reads_after_a_change(40_000, 20_000, 1_000, 250, (Within::Drawn, Within::Drawn), false, true, 7);
        let first = reads.iter().position(|&(_, holds)| holds).expect("it holds at some read");
        assert!(first < 40, "holds within 10 s of reads, not from read {first}");
        assert!(reads[first..].iter().all(|&(_, holds)| holds), "and at every read after");
        // One that was 5 ms and lossy for 20 s: its loss must leave the window, its round trip settle.
        let reads = reads_after_a_change(10_000, 20_000, 1_000, 20_000, (Within::Drawn, Within::Drawn), true, false, 7);
        assert!(!reads[0].1, "just after the change nothing holds");
        assert!(reads.last().unwrap().1, "40 s later it holds");
    }

    #[test]
    fn config_is_validated() {
        let ok = ProbeConfig::default();
        assert_eq!(ok.clone().validate(), Ok(ok.clone()));
        let zero = ProbeConfig { fast_interval: Duration::ZERO, ..ok.clone() };
        assert_eq!(zero.validate(), Err(ProbeConfigError::ZeroFastInterval));
        let inverted = ProbeConfig { slow_interval: ms(50), ..ok.clone() };
        assert_eq!(inverted.validate(), Err(ProbeConfigError::SlowFasterThanFast { fast: ms(100), slow: ms(50) }));
        let none = ProbeConfig { down_probes: 0, ..ok.clone() };
        assert_eq!(none.validate(), Err(ProbeConfigError::ZeroDownProbes));
        let small = ProbeConfig { loss_window: ms(50), ..ok };
        assert!(matches!(LinkEstimator::new(small), Err(ProbeConfigError::WindowTooSmall { .. })));
    }
}
