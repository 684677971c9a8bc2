//! A latency histogram with bounded relative error, so that a run of millions of deliveries keeps its
//! percentiles and its CDF in kilobytes.
//!
//! Values below 256 have a bucket each; above, each power of two is split into 256 buckets, so a value's
//! bucket starts at most 0.4 % below it. Percentiles and CDF points report a bucket's lower bound, which is
//! exact below 256 µs and deterministic everywhere.

use serde::Serialize;

const SUB_BITS: u32 = 8;
const SUB: u64 = 1 << SUB_BITS;

/// Counts of values (µs, or any integer measure) by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

/// Nearest-rank percentiles; zero when the histogram is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
}

fn bucket_of(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exp = 63 - value.leading_zeros();
    let mantissa = value >> (exp - SUB_BITS);
    (SUB + u64::from(exp - SUB_BITS) * SUB + (mantissa - SUB)) as usize
}

fn lower_bound(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB {
        return bucket;
    }
    let exp = (bucket - SUB) / SUB;
    let mantissa = SUB + (bucket - SUB) % SUB;
    mantissa << exp
}

impl Histogram {
    pub fn add(&mut self, value: u64) {
        let bucket = bucket_of(value);
        if bucket >= self.counts.len() {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        self.total += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The smallest bucket bound with at least `p` of the values at or below it (nearest rank).
    pub fn quantile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return lower_bound(bucket);
            }
        }
        unreachable!("the counts add up to the total")
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles { p50: self.quantile(0.50), p95: self.quantile(0.95), p99: self.quantile(0.99) }
    }

    /// The non-empty buckets as (lower bound, count), in increasing order.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(b, &c)| (lower_bound(b), c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_at_most_one_percent_below_their_values() {
        for value in (0..5_000).chain([123_456, 9_999_999, u64::MAX / 3, u64::MAX]) {
            let low = lower_bound(bucket_of(value));
            assert!(low <= value, "{value}: bucket starts at {low}");
            assert!((value - low) as f64 <= value as f64 / 256.0, "{value}: bucket starts at {low}");
            assert_eq!(bucket_of(low), bucket_of(value));
        }
        assert_eq!(lower_bound(bucket_of(100)), 100);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut h = Histogram::default();
        for v in (1..=100).rev() {
            h.add(v);
        }
        assert_eq!(h.percentiles(), Percentiles { p50: 50, p95: 95, p99: 99 });
        assert_eq!(Histogram::default().percentiles(), Percentiles::default());
        let mut one = Histogram::default();
        one.add(7);
        assert_eq!(one.percentiles(), Percentiles { p50: 7, p95: 7, p99: 7 });
    }

    #[test]
    fn merging_adds_counts() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.add(10);
        b.add(1_000_000);
        b.add(20);
        a.merge(&b);
        assert_eq!(a.total(), 3);
        assert_eq!(a.buckets().map(|(_, c)| c).sum::<u64>(), 3);
        assert_eq!(a.quantile(1.0), lower_bound(bucket_of(1_000_000)));
    }
}
