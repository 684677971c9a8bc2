//! One link's impairment as operators and tests write it ([`Impairment`], checked by
//! [`Impairment::validate`]), and the [`Plan`] the send path uses: the same figures clamped into range and
//! turned into durations.

use std::time::Duration;

/// Largest delay or jitter a link may have, ms. More is not a WAN any more, and the cap keeps every
/// deadline computation in range.
pub const MAX_DELAY_MS: f64 = 60_000.0;

/// How much backlog a rate-capped link queues, in time at the link's rate; a datagram that would wait
/// longer than this before it starts to leave is dropped (tail drop), the way a router's buffer behaves.
pub const QUEUE_TIME: Duration = Duration::from_millis(200);
/// The rate-capped queue holds at least this many bytes (ten full-size datagrams), so that a very slow link
/// still takes a burst.
const QUEUE_MIN_BYTES: u64 = 15_000;
/// The rate-capped queue holds at most this many bytes, however fast the link.
const QUEUE_MAX_BYTES: u64 = 1 << 20;

/// How one link (this node -> one remote address) misbehaves. `Default` = a perfect link.
///
/// The fields apply in this order to every datagram: `up`, `loss`, `rate_kbps` (queue and serialisation
/// at the capped rate), then `delay_ms` plus `jitter_ms`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Impairment {
    /// One-way delay added to every datagram, ms, at most [`MAX_DELAY_MS`].
    pub delay_ms: f64,
    /// Uniform random extra delay in `[0, jitter_ms]`, ms, at most [`MAX_DELAY_MS`]. Jitter never reorders:
    /// a datagram is never scheduled before the previous one of the same link, so when datagrams follow
    /// each other more closely than the jitter, the late ones hold back those behind them (as in a real
    /// FIFO path) and the mean extra delay is larger than `jitter_ms / 2`.
    pub jitter_ms: f64,
    /// Probability in `[0, 1]` that a datagram is dropped, independently of the others.
    pub loss: f64,
    /// Bandwidth cap in kbit/s of UDP payload (IP and UDP headers not counted); 0 = no cap. Datagrams queue
    /// (at most [`QUEUE_TIME`] worth, tail drop beyond) and leave at that rate.
    pub rate_kbps: u64,
    /// `false` = partitioned: every datagram to this address is dropped.
    pub up: bool,
}

impl Default for Impairment {
    fn default() -> Self {
        Self { delay_ms: 0.0, jitter_ms: 0.0, loss: 0.0, rate_kbps: 0, up: true }
    }
}

/// Why an [`Impairment`] is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImpairError {
    /// A field is NaN or infinite.
    #[error("{field}: {value} is not a finite number")]
    NotFinite {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A delay is negative.
    #[error("{field}: {value} ms is negative")]
    Negative {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A delay is longer than [`MAX_DELAY_MS`].
    #[error("{field}: {value} ms is more than the maximum of {MAX_DELAY_MS} ms")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// `loss` is outside `[0, 1]`.
    #[error("loss: {value} is not a probability in [0, 1]")]
    Loss {
        /// Its value.
        value: f64,
    },
}

impl Impairment {
    /// Checks every field; the error names the first bad one. The socket itself accepts any value (it
    /// clamps NaN and negative figures to 0 and the rest into range), so this is for configuration input.
    pub fn validate(&self) -> Result<(), ImpairError> {
        for (field, value) in [("delay_ms", self.delay_ms), ("jitter_ms", self.jitter_ms)] {
            if !value.is_finite() {
                return Err(ImpairError::NotFinite { field, value });
            }
            if value < 0.0 {
                return Err(ImpairError::Negative { field, value });
            }
            if value > MAX_DELAY_MS {
                return Err(ImpairError::TooLong { field, value });
            }
        }
        if !self.loss.is_finite() {
            return Err(ImpairError::NotFinite { field: "loss", value: self.loss });
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(ImpairError::Loss { value: self.loss });
        }
        Ok(())
    }

    /// Whether this link is perfect: datagrams to it pass straight through.
    pub fn is_perfect(&self) -> bool {
        Plan::new(self).is_perfect()
    }
}

/// An [`Impairment`] turned into the figures the send path uses, every value in range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Plan {
    pub(super) up: bool,
    pub(super) loss: f64,
    pub(super) delay: Duration,
    pub(super) jitter: Duration,
    /// 0 = no cap.
    pub(super) rate_kbps: u64,
    /// Longest wait in the rate queue before a datagram starts to leave.
    pub(super) queue_limit: Duration,
}

impl Plan {
    pub(super) fn new(imp: &Impairment) -> Self {
        let loss = if imp.loss.is_nan() { 0.0 } else { imp.loss.clamp(0.0, 1.0) };
        let mut plan = Self {
            up: imp.up,
            loss,
            delay: ms_to_duration(imp.delay_ms),
            jitter: ms_to_duration(imp.jitter_ms),
            rate_kbps: imp.rate_kbps,
            queue_limit: Duration::ZERO,
        };
        if plan.rate_kbps > 0 {
            // QUEUE_TIME at the link's rate: kbit/s * 1000 / 8 bytes per second, times 0.2 s.
            let bytes = (u128::from(plan.rate_kbps) * 1000 / 8 * QUEUE_TIME.as_millis() / 1000)
                .clamp(u128::from(QUEUE_MIN_BYTES), u128::from(QUEUE_MAX_BYTES));
            plan.queue_limit = plan.tx_time(bytes as usize);
        }
        plan
    }

    pub(super) fn is_perfect(&self) -> bool {
        self.up && self.loss == 0.0 && self.delay.is_zero() && self.jitter.is_zero() && self.rate_kbps == 0
    }

    /// How long `bytes` take to leave at the capped rate (zero without a cap).
    pub(super) fn tx_time(&self, bytes: usize) -> Duration {
        if self.rate_kbps == 0 {
            return Duration::ZERO;
        }
        // bits / (kbit/s * 1000) seconds = bytes * 8 * 10^6 / kbit/s nanoseconds.
        let nanos = bytes as u128 * 8_000_000 / u128::from(self.rate_kbps);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn ms_to_duration(ms: f64) -> Duration {
    if ms.is_nan() || ms <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(ms.min(MAX_DELAY_MS) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(imp: Impairment) -> Plan {
        Plan::new(&imp)
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert_eq!(Impairment::default().validate(), Ok(()));
        let ok = Impairment { delay_ms: 20.0, jitter_ms: 5.0, loss: 1.0, rate_kbps: 1, up: false };
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (Impairment { delay_ms: -1.0, ..Default::default() }, "delay_ms"),
            (Impairment { delay_ms: f64::NAN, ..Default::default() }, "delay_ms"),
            (Impairment { delay_ms: 1e9, ..Default::default() }, "delay_ms"),
            (Impairment { jitter_ms: f64::INFINITY, ..Default::default() }, "jitter_ms"),
            (Impairment { jitter_ms: -0.5, ..Default::default() }, "jitter_ms"),
            (Impairment { loss: 1.5, ..Default::default() }, "loss"),
            (Impairment { loss: -0.1, ..Default::default() }, "loss"),
            (Impairment { loss: f64::NAN, ..Default::default() }, "loss"),
        ];
        for (imp, field) in cases {
            let err = imp.validate().expect_err(field);
            assert!(err.to_string().starts_with(field), "{err} should name {field}");
        }
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_keys() {
        let imp: Impairment = toml::from_str("delay_ms = 20\nloss = 0.01").unwrap();
        assert_eq!(imp, Impairment { delay_ms: 20.0, loss: 0.01, ..Default::default() });
        assert!(imp.validate().is_ok());
        assert!(toml::from_str::<Impairment>("delay = 20").is_err());
        let empty: Impairment = toml::from_str("").unwrap();
        assert!(empty.is_perfect());
        assert!(!Impairment { up: false, ..Default::default() }.is_perfect());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_fatal() {
        let p = plan(Impairment { delay_ms: f64::INFINITY, jitter_ms: -3.0, loss: f64::NAN, ..Default::default() });
        assert_eq!(p.delay, Duration::from_secs(60));
        assert_eq!(p.jitter, Duration::ZERO);
        assert_eq!(p.loss, 0.0);
        let p = plan(Impairment { loss: 7.0, rate_kbps: u64::MAX, ..Default::default() });
        assert_eq!(p.loss, 1.0);
        assert_eq!(p.tx_time(65_535), Duration::ZERO);
        let p = plan(Impairment { rate_kbps: 1, ..Default::default() });
        assert_eq!(p.tx_time(1000), Duration::from_secs(8));
        assert_eq!(p.queue_limit, p.tx_time(QUEUE_MIN_BYTES as usize));
    }
}
