//! Link probing estimator (placeholder until the full estimator lands).
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkMetrics {
    pub rtt: Duration,
    pub jitter: Duration,
    pub loss: f64,
}

#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub fast: Duration,
    pub slow: Duration,
    pub down_after: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self { fast: Duration::from_millis(100), slow: Duration::from_secs(1), down_after: Duration::from_millis(350) }
    }
}

#[derive(Debug, Clone)]
pub struct LinkEstimator {
    settings: ProbeSettings,
    active: bool,
    next_seq: u64,
    next_probe: Duration,
    sent: std::collections::VecDeque<(u64, Duration, bool)>,
    srtt: Option<Duration>,
    rttvar: Duration,
    last_reply: Option<Duration>,
    started: Duration,
}

impl LinkEstimator {
    pub fn new(settings: ProbeSettings, now: Duration) -> Self {
        Self {
            settings,
            active: false,
            next_seq: 0,
            next_probe: now,
            sent: Default::default(),
            srtt: None,
            rttvar: Duration::ZERO,
            last_reply: None,
            started: now,
        }
    }
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }
    fn interval(&self) -> Duration {
        if self.active {
            self.settings.fast
        } else {
            self.settings.slow
        }
    }
    pub fn poll_probe(&mut self, now: Duration) -> Option<u64> {
        if now < self.next_probe {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.next_probe = now + self.interval();
        self.sent.push_back((seq, now, false));
        while self.sent.len() > 100 {
            self.sent.pop_front();
        }
        Some(seq)
    }
    pub fn poll_timeout(&self) -> Duration {
        self.next_probe
    }
    pub fn handle_probe_reply(&mut self, now: Duration, seq: u64) {
        let Some(entry) = self.sent.iter_mut().find(|(s, _, _)| *s == seq) else { return };
        if entry.2 {
            return;
        }
        entry.2 = true;
        let sample = now.saturating_sub(entry.1);
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
        self.last_reply = Some(now);
    }
    pub fn metrics(&self) -> Option<LinkMetrics> {
        let srtt = self.srtt?;
        let judged: Vec<_> = self.sent.iter().filter(|(_, _, got)| *got).collect();
        let lost = self
            .sent
            .iter()
            .filter(|(_, at, got)| {
                !got && self.sent.back().is_some_and(|b| b.1 > *at + srtt * 3 + Duration::from_millis(50))
            })
            .count();
        let total = judged.len() + lost;
        Some(LinkMetrics {
            rtt: srtt,
            jitter: self.rttvar,
            loss: if total == 0 { 0.0 } else { lost as f64 / total as f64 },
        })
    }
    pub fn is_down(&self, now: Duration) -> bool {
        // Silent since the first probe sent after the last reply.
        let since = self.last_reply.unwrap_or(self.started);
        let first_unanswered = self.sent.iter().find(|(_, at, got)| !got && *at >= since).map(|(_, at, _)| *at);
        let threshold = self.settings.down_after.max(self.srtt.unwrap_or_default() * 3);
        first_unanswered.is_some_and(|at| now.saturating_sub(at) > threshold)
    }
}
