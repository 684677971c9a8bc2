//! The queue of every impaired link of one socket, as a pure state machine: [`Scheduler::admit`] decides
//! each datagram's fate (dropped, sent now, or queued until a due time) and [`Scheduler::pop_due`] hands
//! out what is due. No I/O and no clock of its own: `now` is an argument, so its tests step time by hand.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use quinn::udp::{EcnCodepoint, Transmit};
use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use super::impairment::Plan;
use super::table::link_key;

/// Most datagram bytes that may wait for one link (delay line and rate queue together); more is dropped.
pub const LINK_BACKLOG_MAX: usize = 4 << 20;
/// Most datagram bytes that may wait for all the links of one socket together; more is dropped.
pub const SOCKET_BACKLOG_MAX: usize = 16 << 20;

/// What [`Scheduler::admit`] did with a batch.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Nothing to delay or drop: send the batch as it is, now.
    Direct,
    /// Queued or dropped; `wake` = the scheduling task must look at the queue earlier than it planned.
    Taken { wake: bool },
}

/// The state of one link with datagrams queued.
#[derive(Debug, Clone, Copy)]
struct LinkState {
    /// Due time of the link's last queued datagram: none after it may be due earlier (FIFO).
    last_due: Instant,
    /// When the capped rate lets the next datagram start to leave.
    next_free: Instant,
    packets: usize,
    bytes: usize,
}

impl LinkState {
    fn idle(now: Instant) -> Self {
        Self { last_due: now, next_free: now, packets: 0, bytes: 0 }
    }
}

/// One datagram waiting for its due time.
#[derive(Debug)]
pub(super) struct Queued {
    due: Instant,
    /// Admission order, so that datagrams due at the same instant leave in the order they came.
    seq: u64,
    pub(super) destination: SocketAddr,
    pub(super) ecn: Option<EcnCodepoint>,
    pub(super) src_ip: Option<IpAddr>,
    pub(super) contents: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The queue of every impaired link of one socket: decides each datagram's fate and due time, and hands
/// out what is due. No I/O and no clock of its own: `now` is an argument.
pub(super) struct Scheduler {
    /// rand 0.8's `SmallRng` needs a feature this crate does not enable; ChaCha12 costs a few ns per draw,
    /// little next to copying the datagram.
    rng: StdRng,
    queue: BinaryHeap<Reverse<Queued>>,
    /// Only links with datagrams queued.
    links: HashMap<SocketAddr, LinkState>,
    next_seq: u64,
    backlog_bytes: usize,
    /// Reused per batch: each kept datagram's byte range and due time.
    scratch: Vec<(Range<usize>, Instant)>,
}

impl Scheduler {
    pub(super) fn new(rng: StdRng) -> Self {
        Self {
            rng,
            queue: BinaryHeap::new(),
            links: HashMap::new(),
            next_seq: 0,
            backlog_bytes: 0,
            scratch: Vec::new(),
        }
    }

    /// Applies `plan` to every datagram of `transmit` at `now`: drops some, queues the others, or lets the
    /// whole batch go out directly when none is dropped or delayed and nothing of that link is still queued.
    pub(super) fn admit(&mut self, now: Instant, plan: &Plan, transmit: &Transmit) -> Verdict {
        let key = link_key(transmit.destination);
        let mut link = self.links.get(&key).copied().unwrap_or(LinkState::idle(now));
        let len = transmit.contents.len();
        let segment = match transmit.segment_size {
            Some(n) if n > 0 => n,
            _ => len.max(1),
        };
        let count = len.div_ceil(segment).max(1);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let mut dropped = false;
        for i in 0..count {
            let range = i * segment..((i + 1) * segment).min(len);
            if !plan.up || (plan.loss > 0.0 && self.rng.gen::<f64>() < plan.loss) {
                dropped = true;
                continue;
            }
            let mut departure = now;
            if plan.rate_kbps > 0 {
                let start = link.next_free.max(now);
                if start - now > plan.queue_limit {
                    dropped = true;
                    continue;
                }
                departure = start + plan.tx_time(range.len());
                link.next_free = departure;
            }
            let mut due = departure + plan.delay;
            if !plan.jitter.is_zero() {
                let nanos = plan.jitter.as_nanos() as f64 * self.rng.gen::<f64>();
                due += Duration::from_nanos(nanos as u64);
            }
            due = due.max(link.last_due);
            link.last_due = due;
            scratch.push((range, due));
        }

        let verdict = if !dropped && link.packets == 0 && scratch.iter().all(|(_, due)| *due <= now) {
            Verdict::Direct
        } else {
            let earliest = self.next_due();
            let mut wake = false;
            for (range, due) in scratch.drain(..) {
                let size = range.len();
                if link.bytes + size > LINK_BACKLOG_MAX || self.backlog_bytes + size > SOCKET_BACKLOG_MAX {
                    continue;
                }
                wake |= earliest.is_none_or(|e| due < e);
                self.queue.push(Reverse(Queued {
                    due,
                    seq: self.next_seq,
                    destination: transmit.destination,
                    ecn: transmit.ecn,
                    src_ip: transmit.src_ip,
                    contents: transmit.contents[range].to_vec(),
                }));
                self.next_seq += 1;
                link.packets += 1;
                link.bytes += size;
                self.backlog_bytes += size;
            }
            if link.packets > 0 {
                self.links.insert(key, link);
            }
            Verdict::Taken { wake }
        };
        self.scratch = scratch;
        verdict
    }

    /// Moves every datagram due at `now` into `out`, earliest first.
    pub(super) fn pop_due(&mut self, now: Instant, out: &mut Vec<Queued>) {
        while self.queue.peek().is_some_and(|Reverse(q)| q.due <= now) {
            let Some(Reverse(datagram)) = self.queue.pop() else { break };
            let key = link_key(datagram.destination);
            if let Some(link) = self.links.get_mut(&key) {
                link.packets = link.packets.saturating_sub(1);
                link.bytes = link.bytes.saturating_sub(datagram.contents.len());
                if link.packets == 0 {
                    self.links.remove(&key);
                }
            }
            self.backlog_bytes = self.backlog_bytes.saturating_sub(datagram.contents.len());
            out.push(datagram);
        }
    }

    /// When the next datagram is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(q)| q.due)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::netem::Impairment;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn transmit(to: SocketAddr, contents: &[u8]) -> Transmit<'_> {
        Transmit { destination: to, ecn: None, contents, segment_size: None, src_ip: None }
    }

    fn scheduler() -> Scheduler {
        Scheduler::new(StdRng::seed_from_u64(7))
    }

    fn plan(imp: Impairment) -> Plan {
        Plan::new(&imp)
    }

    /// Pops everything, returning (due - start, payload).
    fn drain(s: &mut Scheduler, start: Instant) -> Vec<(Duration, Vec<u8>)> {
        let mut out = Vec::new();
        s.pop_due(start + Duration::from_secs(3600), &mut out);
        out.into_iter().map(|q| (q.due - start, q.contents)).collect()
    }

    #[test]
    fn delay_and_jitter_keep_fifo_order() {
        let mut s = scheduler();
        let start = Instant::now();
        let p = plan(Impairment { delay_ms: 10.0, jitter_ms: 40.0, ..Default::default() });
        for i in 0..500u32 {
            let now = start + Duration::from_micros(100 * u64::from(i));
            let v = s.admit(now, &p, &transmit(addr(9), &i.to_be_bytes()));
            assert!(matches!(v, Verdict::Taken { .. }));
        }
        let out = drain(&mut s, start);
        assert_eq!(out.len(), 500);
        let order: Vec<u32> = out.iter().map(|(_, c)| u32::from_be_bytes(c[..4].try_into().unwrap())).collect();
        assert_eq!(order, (0..500).collect::<Vec<_>>());
        for (i, (wait, _)) in out.iter().enumerate() {
            let sent = Duration::from_micros(100 * i as u64);
            assert!(*wait >= sent + Duration::from_millis(10), "datagram {i} left early");
            // FIFO holds a datagram behind earlier late ones, but never beyond the latest any could be.
            assert!(*wait <= sent + Duration::from_millis(50), "datagram {i} too late");
        }
        // Jitter did spread the due times (without it each would be exactly sent + 10 ms).
        assert!(out.iter().enumerate().any(|(i, (w, _))| *w > Duration::from_micros(100 * i as u64 + 20_000)));
        assert!(s.links.is_empty() && s.backlog_bytes == 0);
    }

    #[test]
    fn loss_drops_about_the_configured_share() {
        let mut s = scheduler();
        let start = Instant::now();
        let p = plan(Impairment { loss: 0.3, ..Default::default() });
        let mut direct = 0;
        for i in 0..10_000u32 {
            if s.admit(start, &p, &transmit(addr(9), &i.to_be_bytes())) == Verdict::Direct {
                direct += 1;
            }
        }
        // Loss only: survivors go straight out, nothing is queued.
        assert!(s.queue.is_empty());
        assert!((6700..7300).contains(&direct), "{direct} of 10000 kept");
    }

    #[test]
    fn gso_batches_are_split_and_lose_single_datagrams() {
        let mut s = scheduler();
        let start = Instant::now();
        let data: Vec<u8> = (0..250u8).collect();
        let batch = Transmit { segment_size: Some(100), ..transmit(addr(9), &data) };
        let p = plan(Impairment { delay_ms: 5.0, ..Default::default() });
        assert_eq!(s.admit(start, &p, &batch), Verdict::Taken { wake: true });
        let out = drain(&mut s, start);
        let sizes: Vec<usize> = out.iter().map(|(_, c)| c.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(out.into_iter().flat_map(|(_, c)| c).collect::<Vec<_>>(), data);

        // With loss, a batch that loses a datagram sends its survivors through the queue, due now.
        let p = plan(Impairment { loss: 0.5, ..Default::default() });
        let big: Vec<u8> = vec![1; 100 * 40];
        let batch = Transmit { segment_size: Some(100), ..transmit(addr(9), &big) };
        assert!(matches!(s.admit(start, &p, &batch), Verdict::Taken { .. }));
        let out = drain(&mut s, start);
        assert!(out.len() > 5 && out.len() < 35, "{} of 40 kept", out.len());
        assert!(out.iter().all(|(w, c)| w.is_zero() && c.len() == 100));
    }

    #[test]
    fn rate_cap_spaces_datagrams_and_tail_drops() {
        let mut s = scheduler();
        let start = Instant::now();
        // 8,000 kbit/s = 1,000 bytes per ms; the queue holds 200 ms = 200,000 bytes.
        let p = plan(Impairment { rate_kbps: 8_000, ..Default::default() });
        let payload = [0u8; 1000];
        for _ in 0..1000 {
            s.admit(start, &p, &transmit(addr(9), &payload));
        }
        let out = drain(&mut s, start);
        // 200 start within the 200 ms queue limit, plus the one that starts exactly at its edge.
        assert!((200..=202).contains(&out.len()), "{} queued", out.len());
        for (i, (wait, _)) in out.iter().enumerate() {
            assert_eq!(*wait, Duration::from_millis(i as u64 + 1));
        }
        // Once drained, the link takes a new burst at full rate again.
        let later = start + Duration::from_secs(1);
        s.admit(later, &p, &transmit(addr(9), &payload));
        assert_eq!(drain(&mut s, later)[0].0, Duration::from_millis(1));
    }

    #[test]
    fn partitioned_link_drops_everything() {
        let mut s = scheduler();
        let start = Instant::now();
        let p = plan(Impairment { up: false, delay_ms: 5.0, ..Default::default() });
        for _ in 0..100 {
            assert_eq!(s.admit(start, &p, &transmit(addr(9), &[0; 100])), Verdict::Taken { wake: false });
        }
        assert!(s.queue.is_empty() && s.links.is_empty());
    }

    #[test]
    fn backlog_is_bounded() {
        let mut s = scheduler();
        let start = Instant::now();
        let p = plan(Impairment { delay_ms: 60_000.0, ..Default::default() });
        let payload = vec![0u8; 1200];
        for port in 0..8u16 {
            for _ in 0..10_000 {
                s.admit(start, &p, &transmit(addr(port), &payload));
            }
        }
        assert!(s.backlog_bytes <= SOCKET_BACKLOG_MAX);
        assert!(s.links.values().all(|l| l.bytes <= LINK_BACKLOG_MAX));
        assert_eq!(s.links[&addr(0)].bytes, LINK_BACKLOG_MAX / 1200 * 1200);
        let queued: usize = s.queue.iter().map(|Reverse(q)| q.contents.len()).sum();
        assert_eq!(queued, s.backlog_bytes);
    }

    #[test]
    fn later_datagram_due_earlier_wakes_the_task() {
        let mut s = scheduler();
        let start = Instant::now();
        let slow = plan(Impairment { delay_ms: 100.0, ..Default::default() });
        let fast = plan(Impairment { delay_ms: 10.0, ..Default::default() });
        assert_eq!(s.admit(start, &slow, &transmit(addr(1), b"a")), Verdict::Taken { wake: true });
        assert_eq!(s.admit(start, &slow, &transmit(addr(1), b"b")), Verdict::Taken { wake: false });
        assert_eq!(s.admit(start, &fast, &transmit(addr(2), b"c")), Verdict::Taken { wake: true });
        assert_eq!(s.next_due(), Some(start + Duration::from_millis(10)));
        // A faster setting on a link with datagrams queued still waits behind them.
        assert_eq!(s.admit(start, &fast, &transmit(addr(1), b"d")), Verdict::Taken { wake: false });
        let order: Vec<Vec<u8>> = drain(&mut s, start).into_iter().map(|(_, c)| c).collect();
        assert_eq!(order, [b"c".to_vec(), b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]);
    }
}
