//! Publishing limits per key and per stream, as pure bookkeeping: how many streams one key may publish at
//! once, and how fast one stream may push bytes. Time is passed in, so the rules are tested without a clock.
//!
//! A stream counts as published by its key while it uploaded something in the last [`ACTIVE_FOR`]; a key at
//! its limit is refused a new stream (429) until one of its streams has been quiet that long. A stream's bytes
//! go through a token bucket: its rate is the configured bit rate, and its depth the larger of two seconds at
//! that rate and the largest body allowed, so a publisher's usual bursts (a whole segment at once) pass.

use std::collections::HashMap;
use std::time::Duration;

use crate::id::StreamName;

/// A stream counts against its key while it uploaded something this recently.
pub const ACTIVE_FOR: Duration = Duration::from_secs(30);

/// Why an upload is over a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    /// The key already publishes as many streams as it may.
    #[error("this key already publishes {0} streams (ingest.max_streams_per_key); end one first")]
    Streams(u32),
    /// The stream pushes bytes faster than it may.
    #[error("stream {stream} pushes more than {kbps} kbit/s (ingest.max_stream_kbps); slow down")]
    Rate { stream: StreamName, kbps: u64 },
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be sent now.
    tokens: f64,
    at: Duration,
}

/// The bookkeeping of one origin's publishers.
#[derive(Debug)]
pub struct Limits {
    max_streams_per_key: u32,
    /// Bytes per second a stream may push, and the bucket's depth.
    rate: f64,
    depth: f64,
    kbps: u64,
    /// Each key's streams, by when they last uploaded.
    keys: HashMap<String, HashMap<StreamName, Duration>>,
    buckets: HashMap<StreamName, Bucket>,
}

impl Limits {
    pub fn new(max_streams_per_key: u32, max_stream_kbps: u64, max_body_bytes: u64) -> Self {
        let rate = max_stream_kbps as f64 * 1000.0 / 8.0;
        Self {
            max_streams_per_key,
            rate,
            depth: (2.0 * rate).max(max_body_bytes as f64),
            kbps: max_stream_kbps,
            keys: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// An upload of `bytes` to `stream` with `key` at `now`: counted, or refused.
    pub fn admit(&mut self, now: Duration, key: &str, stream: &StreamName, bytes: u64) -> Result<(), OverLimit> {
        let streams = self.keys.entry(key.to_owned()).or_default();
        streams.retain(|_, last| now.saturating_sub(*last) < ACTIVE_FOR);
        if !streams.contains_key(stream) && streams.len() >= self.max_streams_per_key as usize {
            return Err(OverLimit::Streams(self.max_streams_per_key));
        }
        let bucket = self.buckets.entry(stream.clone()).or_insert(Bucket { tokens: self.depth, at: now });
        bucket.tokens = (bucket.tokens + now.saturating_sub(bucket.at).as_secs_f64() * self.rate).min(self.depth);
        bucket.at = now;
        if bucket.tokens < bytes as f64 {
            return Err(OverLimit::Rate { stream: stream.clone(), kbps: self.kbps });
        }
        bucket.tokens -= bytes as f64;
        streams.insert(stream.clone(), now);
        Ok(())
    }

    /// Forgets streams and keys quiet for [`ACTIVE_FOR`], so that the bookkeeping shrinks when publishers go.
    pub fn forget_quiet(&mut self, now: Duration) {
        for streams in self.keys.values_mut() {
            streams.retain(|_, last| now.saturating_sub(*last) < ACTIVE_FOR);
        }
        self.keys.retain(|_, streams| !streams.is_empty());
        let depth = self.depth;
        let rate = self.rate;
        // A full bucket is the same as none.
        self.buckets.retain(|_, b| b.tokens + now.saturating_sub(b.at).as_secs_f64() * rate < depth);
    }

    /// Streams and buckets held.
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        (self.keys.values().map(HashMap::len).sum(), self.buckets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> StreamName {
        StreamName::new(name).unwrap()
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_key_publishes_at_most_its_streams_until_one_goes_quiet() {
        let mut limits = Limits::new(2, 10_000, 1 << 20);
        assert!(limits.admit(SEC, "k", &s("a"), 100).is_ok());
        assert!(limits.admit(SEC, "k", &s("b"), 100).is_ok());
        assert_eq!(limits.admit(SEC, "k", &s("c"), 100), Err(OverLimit::Streams(2)));
        // Its own streams go on; another key is not affected.
        assert!(limits.admit(2 * SEC, "k", &s("a"), 100).is_ok());
        assert!(limits.admit(2 * SEC, "other", &s("c"), 100).is_ok());
        // b goes quiet: after ACTIVE_FOR, c may start.
        assert!(limits.admit(SEC + ACTIVE_FOR, "k", &s("c"), 100).is_ok());
    }

    #[test]
    fn a_stream_may_burst_a_segment_but_not_push_faster_than_its_rate() {
        // 8,000 kbit/s = 1 MB/s; bursts up to 2 MB.
        let mut limits = Limits::new(10, 8_000, 1 << 20);
        assert!(limits.admit(SEC, "k", &s("a"), 2_000_000).is_ok(), "a burst of two seconds passes");
        assert!(matches!(limits.admit(SEC, "k", &s("a"), 10_000), Err(OverLimit::Rate { kbps: 8_000, .. })));
        // At its rate it goes on for ever.
        for i in 1..=100u32 {
            assert!(limits.admit(SEC + SEC * i / 10, "k", &s("a"), 100_000).is_ok(), "upload {i}");
        }
    }

    #[test]
    fn quiet_publishers_are_forgotten() {
        let mut limits = Limits::new(10, 8_000, 1 << 20);
        for i in 0..5 {
            limits.admit(SEC, &format!("k{i}"), &s(&format!("s{i}")), 500_000).unwrap();
        }
        assert_eq!(limits.held(), (5, 5));
        limits.forget_quiet(SEC + ACTIVE_FOR);
        assert_eq!(limits.held(), (0, 0));
    }
}
