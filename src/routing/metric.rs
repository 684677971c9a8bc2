//! The routing metric: what a measured link costs.
//!
//! A [`LinkMetrics`] is what a node's [`LinkEstimator`](super::LinkEstimator) knows about one neighbour link
//! (smoothed round-trip time, jitter, loss); [`LinkMetrics::cost`] turns it into the [`Cost`] that the
//! [`Graph`](super::Graph) and every route computation use. The cost is an estimate of the one-way delay an
//! object sees on the link, in microseconds:
//!
//! ```text
//! cost = rtt / 2  +  jitter / 2  +  loss × 1 s        (at least 1, at most MAX_LINK_COST)
//! ```
//!
//! - `rtt / 2`: probes measure the round trip; objects travel one way.
//! - `jitter / 2`: the jitter is measured on the round trip too; half of it is a margin for the variation the
//!   one-way delay sees, which a viewer's player has to buffer.
//! - `loss × 1 s`, i.e. **10 ms per 1 % of loss**: a lost QUIC packet is recovered after about one extra round
//!   trip plus the loss-detection delay, and it stalls the object (a segment or part) that carried it. A link
//!   that loses 5 % therefore looks 50 ms slower, enough to move streams to a clean path of similar latency but
//!   not to send them around the world; a link that loses everything looks a second slower and is left to the
//!   estimator's down detection.

use std::time::Duration;

use super::graph::{Cost, MAX_LINK_COST};

/// The extra cost, in microseconds, of a link that loses every packet: 1 s, i.e. 10 ms per 1 % of loss.
pub const LOSS_PENALTY: Cost = 1_000_000;

/// What a link's probes measured, smoothed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkMetrics {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Smoothed variation between consecutive round-trip times.
    pub jitter: Duration,
    /// Fraction of recent probes that got no reply, from 0.0 to 1.0.
    pub loss: f64,
}

impl LinkMetrics {
    /// The link's routing cost in microseconds: `rtt/2 + jitter/2 + loss × LOSS_PENALTY`, clamped to
    /// `1..=MAX_LINK_COST`. A loss outside `0.0..=1.0` is clamped; a NaN loss counts as total loss.
    pub fn cost(&self) -> Cost {
        let loss = if self.loss.is_nan() { 1.0 } else { self.loss.clamp(0.0, 1.0) };
        let micros = |d: Duration| d.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(d.subsec_micros()));
        let latency = micros(self.rtt) / 2;
        let jitter = micros(self.jitter) / 2;
        // Most links lose nothing: their penalty needs no rounding.
        let penalty = if loss == 0.0 { 0 } else { (loss * LOSS_PENALTY as f64).round() as u64 };
        latency.saturating_add(jitter).saturating_add(penalty).clamp(1, MAX_LINK_COST)
    }

    /// The cost a link has in the control plane's graph: [`cost`](Self::cost), in microseconds. It used to
    /// be rounded up to whole milliseconds, which made every link cost at least 1 ms and so biased routes
    /// toward fewer hops (a path of three 0.3 ms links read as 3 ms against a 2 ms one). Noise is kept out
    /// where it enters, in the reports ([`LinkEstimator::report`](super::LinkEstimator::report)), not by
    /// coarse costs.
    pub fn graph_cost(&self) -> Cost {
        self.cost()
    }
}

/// Whether, and at what cost, a link belongs in the control plane's graph, from what its ends report: each
/// item is one end's report, its metrics or `None` when that end declares the link down. The link is in when
/// at least one end reports it and none reports it down; its cost is the worse end's
/// [`graph_cost`](LinkMetrics::graph_cost), so that both directions agree. The live control plane and the
/// simulator both decide with this.
pub fn graph_link(ends: impl IntoIterator<Item = Option<LinkMetrics>>) -> Option<Cost> {
    let mut cost = None;
    for end in ends {
        cost = Some(cost.unwrap_or(0).max(end?.graph_cost()));
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(rtt_ms: u64, jitter_ms: u64, loss: f64) -> LinkMetrics {
        LinkMetrics { rtt: Duration::from_millis(rtt_ms), jitter: Duration::from_millis(jitter_ms), loss }
    }

    #[test]
    fn cost_is_one_way_latency_plus_jitter_margin_plus_loss_penalty() {
        assert_eq!(metrics(80, 0, 0.0).cost(), 40_000);
        assert_eq!(metrics(80, 4, 0.0).cost(), 42_000);
        // 1 % loss costs like 10 ms of latency.
        assert_eq!(metrics(80, 0, 0.01).cost(), 50_000);
        assert_eq!(metrics(80, 0, 0.05).cost(), 90_000);
        // A clean 100 ms path beats a 60 ms path that loses 5 %.
        assert!(metrics(100, 2, 0.0).cost() < metrics(60, 2, 0.05).cost());
    }

    #[test]
    fn a_link_is_in_the_graph_at_its_worse_ends_cost_in_microseconds_unless_an_end_says_down() {
        assert_eq!(graph_link([Some(metrics(80, 0, 0.0))]), Some(40_000));
        assert_eq!(graph_link([Some(metrics(80, 1, 0.0)), Some(metrics(90, 0, 0.0))]), Some(45_000));
        // 40.5 ms stays 40.5 ms; a sub-millisecond link costs what it measures, never 0.
        assert_eq!(graph_link([Some(metrics(81, 0, 0.0))]), Some(40_500));
        let short = LinkMetrics { rtt: Duration::from_micros(600), jitter: Duration::ZERO, loss: 0.0 };
        assert_eq!(graph_link([Some(short)]), Some(300));
        assert_eq!(graph_link([Some(metrics(0, 0, 0.0))]), Some(1));
        assert_eq!(graph_link([Some(metrics(80, 0, 0.0)), None]), None);
        assert_eq!(graph_link([]), None);
    }

    #[test]
    fn cost_is_never_zero_and_never_overflows() {
        assert_eq!(metrics(0, 0, 0.0).cost(), 1);
        assert_eq!(LinkMetrics { rtt: Duration::from_nanos(900), jitter: Duration::ZERO, loss: 0.0 }.cost(), 1);
        assert_eq!(LinkMetrics { rtt: Duration::MAX, jitter: Duration::MAX, loss: 1.0 }.cost(), MAX_LINK_COST);
        assert_eq!(metrics(10, 0, f64::NAN).cost(), metrics(10, 0, 1.0).cost());
        assert_eq!(metrics(10, 0, -0.5).cost(), metrics(10, 0, 0.0).cost());
        assert_eq!(metrics(10, 0, 7.0).cost(), metrics(10, 0, 1.0).cost());
    }
}
