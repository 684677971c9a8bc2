//! A run's results: per-stream delivery latency and loss, the static tree's for comparison, and the reroute
//! time of every fault, as a table for people and JSON for tools (integers in µs, maps sorted, so the same
//! run gives the same bytes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::engine::{Micros, Outcome, Sample};
use super::scenario::Scenario;

/// Latency percentiles in µs (nearest rank); zero when nothing was delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: Micros,
    pub p95: Micros,
    pub p99: Micros,
}

impl Percentiles {
    fn of(mut values: Vec<Micros>) -> Percentiles {
        values.sort_unstable();
        let rank = |p: f64| {
            if values.is_empty() {
                0
            } else {
                values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1]
            }
        };
        Percentiles { p50: rank(0.50), p95: rank(0.95), p99: rank(0.99) }
    }
}

/// Delivery through the overlay's routes and along the static tree, over the same objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// How many (object, edge) deliveries were due.
    pub due: u64,
    pub overlay_lost: u64,
    pub overlay_us: Percentiles,
    pub static_lost: u64,
    pub static_us: Percentiles,
}

impl Delivery {
    fn of<'s>(samples: impl Iterator<Item = &'s Sample>) -> Delivery {
        let (mut due, mut overlay, mut fixed) = (0, Vec::new(), Vec::new());
        for s in samples {
            due += 1;
            overlay.extend(s.overlay);
            fixed.extend(s.fixed);
        }
        Delivery {
            due,
            overlay_lost: due - overlay.len() as u64,
            overlay_us: Percentiles::of(overlay),
            static_lost: due - fixed.len() as u64,
            static_us: Percentiles::of(fixed),
        }
    }
}

/// One stream's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSummary {
    pub origin: String,
    pub edges: usize,
    /// Objects the origin emitted.
    pub objects: u64,
    /// The whole run.
    pub all: Delivery,
    /// Objects emitted before the first fault.
    pub steady: Delivery,
}

/// One fault's effect on the overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultSummary {
    pub at_us: Micros,
    pub kind: String,
    pub target: String,
    /// (stream, edge) pairs that lost at least one object emitted between this fault and the next.
    pub affected: u64,
    /// Objects lost in that window.
    pub lost: u64,
    /// From the fault to the moment the last affected edge receives, after its last loss, an object again;
    /// 0 when nothing was lost, `None` when some affected edge never receives again.
    pub reroute_us: Option<Micros>,
}

/// A run's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub duration_s: u64,
    pub nodes: usize,
    pub links: usize,
    pub events: u64,
    pub table_versions: u64,
    /// What the scenario promises: every reroute within this many ms.
    pub reroute_within_ms: u64,
    pub streams: BTreeMap<String, StreamSummary>,
    pub faults: Vec<FaultSummary>,
}

impl Summary {
    pub fn new(name: &str, seed: u64, scenario: &Scenario, outcome: &Outcome) -> Summary {
        let mut faults: Vec<(Micros, usize)> =
            scenario.faults.iter().enumerate().map(|(i, f)| ((f.at_s * 1e6).round() as Micros, i)).collect();
        faults.sort();
        let first_fault = faults.first().map_or(Micros::MAX, |f| f.0);
        let streams = scenario
            .workload
            .streams
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let samples = &outcome.samples[i];
                let edges: std::collections::BTreeSet<u32> = samples.iter().map(|s| s.edge).collect();
                let summary = StreamSummary {
                    origin: spec.origin.to_string(),
                    edges: edges.len(),
                    objects: outcome.emitted[i],
                    all: Delivery::of(samples.iter()),
                    steady: Delivery::of(samples.iter().filter(|s| s.sent < first_fault)),
                };
                (spec.name.to_string(), summary)
            })
            .collect();
        let faults = faults
            .iter()
            .enumerate()
            .map(|(k, &(at, i))| {
                let until = faults.get(k + 1).map_or(Micros::MAX, |f| f.0);
                let fault = &scenario.faults[i];
                let target = match &fault.b {
                    Some(b) => format!("{}-{b}", fault.a),
                    None => fault.a.to_string(),
                };
                let (affected, lost, reroute_us) = reroute(&outcome.samples, at, until);
                FaultSummary { at_us: at, kind: fault.kind.as_str().to_owned(), target, affected, lost, reroute_us }
            })
            .collect();
        Summary {
            scenario: name.to_owned(),
            seed,
            duration_s: scenario.duration_s,
            nodes: outcome.ids.len(),
            links: outcome.links,
            events: outcome.events,
            table_versions: outcome.table_versions,
            reroute_within_ms: scenario.expect.reroute_within_ms,
            streams,
            faults,
        }
    }

    /// The JSON form, keys sorted (serde_json's maps are ordered by key).
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a summary always serializes");
        serde_json::to_string_pretty(&value).expect("a JSON value always serializes") + "\n"
    }

    /// The table form.
    pub fn table(&self) -> String {
        let ms = |us: Micros| format!("{:.1}", us as f64 / 1000.0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {} (seed {}): {} nodes, {} links, {} s simulated, {} events, {} route table versions",
            self.scenario, self.seed, self.nodes, self.links, self.duration_s, self.events, self.table_versions
        );
        let _ = writeln!(
            out,
            "\n{:<12} {:<16} {:>5} {:>7} | {:>8} {:>8} {:>8} {:>6} | {:>8} {:>6} | {:>8} {:>6}",
            "stream",
            "origin",
            "edges",
            "objects",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "lost",
            "static99",
            "lost",
            "steady99",
            "static"
        );
        for (name, s) in &self.streams {
            let _ = writeln!(
                out,
                "{:<12} {:<16} {:>5} {:>7} | {:>8} {:>8} {:>8} {:>6} | {:>8} {:>6} | {:>8} {:>6}",
                name,
                s.origin,
                s.edges,
                s.objects,
                ms(s.all.overlay_us.p50),
                ms(s.all.overlay_us.p95),
                ms(s.all.overlay_us.p99),
                s.all.overlay_lost,
                ms(s.all.static_us.p99),
                s.all.static_lost,
                ms(s.steady.overlay_us.p99),
                ms(s.steady.static_us.p99),
            );
        }
        if !self.faults.is_empty() {
            let _ = writeln!(
                out,
                "\n{:>8} {:<11} {:<24} {:>8} {:>6} {:>11}",
                "at s", "fault", "target", "affected", "lost", "reroute ms"
            );
            for f in &self.faults {
                let reroute = f.reroute_us.map_or("never".to_owned(), ms);
                let _ = writeln!(
                    out,
                    "{:>8.3} {:<11} {:<24} {:>8} {:>6} {:>11}",
                    f.at_us as f64 / 1e6,
                    f.kind,
                    f.target,
                    f.affected,
                    f.lost,
                    reroute
                );
            }
            let _ = writeln!(out, "\nexpected: every reroute within {} ms", self.reroute_within_ms);
        }
        out
    }
}

/// Over the overlay's samples emitted in `at..until`: the (stream, edge) pairs that lost something, the
/// objects lost, and the reroute time (see [`FaultSummary::reroute_us`]).
fn reroute(streams: &[Vec<Sample>], at: Micros, until: Micros) -> (u64, u64, Option<Micros>) {
    let (mut affected, mut lost, mut worst) = (0, 0, Some(0));
    for samples in streams {
        // Per edge: the last loss, then the first delivery after it.
        let mut last_loss: BTreeMap<u32, Micros> = BTreeMap::new();
        for s in samples.iter().filter(|s| (at..until).contains(&s.sent) && s.overlay.is_none()) {
            lost += 1;
            last_loss.insert(s.edge, s.sent);
        }
        for (edge, last) in last_loss {
            affected += 1;
            let back = samples.iter().find(|s| s.edge == edge && s.sent > last && s.overlay.is_some());
            worst = match (worst, back) {
                (Some(w), Some(s)) => Some(w.max(s.sent + s.overlay.unwrap_or(0) - at)),
                _ => None,
            };
        }
    }
    (affected, lost, worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(edge: u32, sent: Micros, overlay: Option<Micros>) -> Sample {
        Sample { edge, sent, overlay, fixed: overlay }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().collect());
        assert_eq!((p.p50, p.p95, p.p99), (50, 95, 99));
        assert_eq!(Percentiles::of(vec![7]), Percentiles { p50: 7, p95: 7, p99: 7 });
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }

    #[test]
    fn reroute_runs_to_the_last_affected_edge_delivering_after_its_last_loss() {
        let fault = 1_000;
        let samples = vec![vec![
            sample(1, 900, None), // before the fault: not this fault's
            sample(1, 1_000, None),
            sample(2, 1_000, Some(40)),
            sample(1, 1_250, Some(30)),
            sample(2, 1_250, None),
            sample(2, 1_500, None),
            sample(1, 1_500, Some(30)),
            sample(2, 1_750, Some(50)),
        ]];
        // Edge 1 is back at 1_280, edge 2 at 1_800.
        assert_eq!(reroute(&samples, fault, Micros::MAX), (2, 3, Some(800)));
        // An edge that never receives again makes the reroute time unknown.
        assert_eq!(reroute(&samples, 1_500, Micros::MAX), (1, 1, Some(300)));
        assert_eq!(reroute(&[vec![sample(3, 2_000, None)]], fault, Micros::MAX), (1, 1, None));
        assert_eq!(reroute(&samples, 2_000, Micros::MAX), (0, 0, Some(0)));
    }
}
