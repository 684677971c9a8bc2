//! How many object streams a peer may have open at once: granted as the peer uses them, up to
//! `quic.max_object_streams`.
//!
//! quinn keeps a receive state for every stream a peer may open, and hands a finished stream's state, with
//! the reassembly queue it grew to (about 56 bytes per packet that arrived before it was read), to the stream
//! that its end permits, the credit further on. So every permitted stream ends up holding a state as large as
//! the largest backlog it ever queued, for the connection's life, whether or not the peer ever needs that
//! many streams at once. Granting all of `quic.max_object_streams` (128) at once made an edge's memory creep
//! for an hour under a single stream of 500 kB segments, as states reached backlogs seen once in a while
//! (BENCHMARKS.md, "Soak").
//!
//! So a connection starts with [`INITIAL`] streams and doubles its grant, up to the configured most, when
//! the peer uses most of it: when three quarters of the grant are open at once (long streams: objects cut
//! through as a publisher uploads them), or when the peer opened half the grant within one round trip
//! (short streams: a burst of parts and playlists). A peer held back by its grant opens all of it each round
//! trip, or keeps all of it open, so it is raised within a round trip or two. A grant is never taken back:
//! quinn would keep the states anyway.

use std::time::Duration;

/// The streams a connection starts with.
pub const INITIAL: u32 = 16;

/// The shortest window over which streams opened are counted, for round trips shorter than it (loopback).
const MIN_WINDOW: Duration = Duration::from_millis(1);

/// One connection's grant of object streams.
#[derive(Debug, Clone)]
pub struct StreamCredit {
    granted: u32,
    max: u32,
    window_start: Duration,
    opened_in_window: u32,
}

impl StreamCredit {
    /// A connection's grant, which may grow to `max` (at least 1).
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        Self { granted: INITIAL.min(max), max, window_start: Duration::ZERO, opened_in_window: 0 }
    }

    /// The streams granted now.
    pub fn granted(&self) -> u32 {
        self.granted
    }

    /// The peer opened a stream at `now` (any clock), with `open` streams open now counting this one, on a
    /// connection whose round trip is `rtt`. Returns the new grant when it grows.
    pub fn opened(&mut self, now: Duration, rtt: Duration, open: u32) -> Option<u32> {
        if now.saturating_sub(self.window_start) >= rtt.max(MIN_WINDOW) {
            self.window_start = now;
            self.opened_in_window = 0;
        }
        self.opened_in_window += 1;
        let crowded = open.saturating_mul(4) >= self.granted.saturating_mul(3);
        let busy = self.opened_in_window.saturating_mul(2) >= self.granted;
        if (crowded || busy) && self.granted < self.max {
            self.granted = self.granted.saturating_mul(2).min(self.max);
            self.window_start = now;
            self.opened_in_window = 0;
            return Some(self.granted);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_light_peer_keeps_the_initial_grant() {
        // A live stream's objects: a part and a playlist every 200 ms, each done before the next.
        let mut credit = StreamCredit::new(128);
        for k in 0..10_000u64 {
            assert_eq!(credit.opened(ms(k * 100), RTT, 1), None);
        }
        assert_eq!(credit.granted(), INITIAL);
    }

    #[test]
    fn short_streams_opened_faster_than_the_grant_allows_raise_it_to_the_most() {
        // A peer held back by its grant opens all of it every round trip.
        let mut credit = StreamCredit::new(128);
        let mut raised = Vec::new();
        let mut now = Duration::ZERO;
        for _ in 0..8 {
            for _ in 0..credit.granted() {
                if let Some(g) = credit.opened(now, RTT, 1) {
                    raised.push(g);
                }
            }
            now += RTT;
        }
        assert_eq!(raised, [32, 64, 128]);
        assert_eq!(credit.granted(), 128);
    }

    #[test]
    fn long_streams_that_fill_the_grant_raise_it() {
        // Cut-through segments of many live streams: each stays open for seconds, few open per round trip.
        let mut credit = StreamCredit::new(100);
        let mut open = 0;
        let mut now = Duration::ZERO;
        while open < 100 {
            now += ms(500);
            open = (open + 1).min(credit.granted());
            credit.opened(now, RTT, open);
        }
        assert_eq!(credit.granted(), 100, "raised to the configured most, and not past it");
    }

    #[test]
    fn a_grant_never_passes_the_configured_most() {
        let mut credit = StreamCredit::new(4);
        assert_eq!(credit.granted(), 4);
        assert_eq!(credit.opened(ms(0), RTT, 4), None);
        let credit = StreamCredit::new(0);
        assert_eq!(credit.granted(), 1);
    }

    #[test]
    fn streams_counted_in_one_round_trip_only() {
        // Seven streams a round trip, against a grant of 16: not half of it.
        let mut credit = StreamCredit::new(128);
        for trip in 0..100u64 {
            for k in 0..7u64 {
                assert_eq!(credit.opened(RTT * trip as u32 + ms(k) + ms(1), RTT, 1), None);
            }
        }
    }
}
