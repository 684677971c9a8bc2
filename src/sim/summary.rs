//! A run's results: delivery latency, loss and lateness per strategy (overall and per stream), path stretch,
//! bytes per link and origin egress, and the reroute time of every fault, as a table for people and JSON for
//! tools (integers in µs, maps sorted, so the same run gives the same bytes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::engine::{Micros, Outcome, Tally, STRATEGIES};
use super::histogram::{Histogram, Percentiles};
use super::scenario::Scenario;
use crate::id::NodeId;

/// Deliveries by one strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// How many (object, edge) deliveries were due.
    pub due: u64,
    pub lost: u64,
    /// Delivered, but later than the workload's `late_ms`.
    pub late: u64,
    pub latency_us: Percentiles,
}

impl Delivery {
    fn of(tally: &Tally) -> Delivery {
        Delivery { due: tally.due, lost: tally.lost, late: tally.late, latency_us: tally.latency.percentiles() }
    }
}

/// The same deliveries by each strategy; `direct` only where origins have direct links to edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Strategies {
    pub overlay: Delivery,
    #[serde(rename = "static")]
    pub static_tree: Delivery,
    pub direct: Option<Delivery>,
}

impl Strategies {
    fn of(tallies: &[Tally; 3]) -> Strategies {
        Strategies {
            overlay: Delivery::of(&tallies[0]),
            static_tree: Delivery::of(&tallies[1]),
            direct: (tallies[2].due > 0).then(|| Delivery::of(&tallies[2])),
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
    pub all: Strategies,
    /// Objects emitted before the first fault.
    pub steady: Strategies,
}

/// What one strategy cost the network and how far from the optimum its paths were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Path latency over the true optimum at emission, in thousandths (1000 = the best path there was).
    pub stretch_permille: Percentiles,
    /// Bytes carried by all links together, and by the busiest one.
    pub link_bytes: u64,
    pub busiest_link_bytes: u64,
    /// The busiest links (at most 10), as `a-b`, and their bytes, busiest first; links that carried the same
    /// bytes in the order of their names.
    pub busiest_links: Vec<(String, u64)>,
    /// Links that carried exactly as many bytes as the last one listed but did not fit in the list: in a tree
    /// every link carries each object once, so many tie, and ten names of them say little on their own.
    pub busiest_unlisted_ties: u64,
    /// Bytes the origins sent, all together and by origin.
    pub origin_egress_bytes: u64,
    pub egress_by_origin: BTreeMap<String, u64>,
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
    /// 0 when nothing was lost, `None` when some affected edge never receives again. Only losses while the
    /// edge had a path count, from when it had one.
    pub reroute_us: Option<Micros>,
    /// (stream, edge) pairs left with no path at all at some point of the window.
    pub no_path: u64,
    /// The longest such a pair went without a path, from the fault; `None` when some pair never had one again.
    pub no_path_us: Option<Micros>,
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
    /// Route-table changes pushed to nodes once the workload had started (a node's first table is not one):
    /// in all, and the most any one node got.
    pub table_changes: u64,
    pub table_changes_per_node_max: u64,
    /// Control-plane recomputations run, and skipped because nothing could change.
    pub recomputations: u64,
    pub recomputations_skipped: u64,
    /// Links the nodes judged down, and how many of those verdicts fell on a link that was working.
    pub down_verdicts: u64,
    pub false_down_verdicts: u64,
    /// What the scenario promises: every reroute within this many ms.
    pub reroute_within_ms: u64,
    pub late_ms: u64,
    /// Every stream together, by strategy: the whole run and before the first fault.
    pub all: Strategies,
    pub steady: Strategies,
    pub traffic: BTreeMap<String, Traffic>,
    pub streams: BTreeMap<String, StreamSummary>,
    pub faults: Vec<FaultSummary>,
}

/// Every stream's tallies merged, per strategy.
pub(super) fn merged(outcome: &Outcome, steady: bool) -> [Tally; 3] {
    let mut all: [Tally; 3] = Default::default();
    for stream in &outcome.streams {
        let tallies = if steady { &stream.steady } else { &stream.all };
        for (mine, theirs) in all.iter_mut().zip(tallies) {
            mine.merge(theirs);
        }
    }
    all
}

/// How many links [`busiest`] lists.
const BUSIEST: usize = 10;

/// The links that carried the most bytes, busiest first, names ordering only links of equal bytes; and how
/// many more links carried as much as the last one listed.
fn busiest(ids: &[NodeId], links: &[(u32, u32)], bytes: &[u64]) -> (Vec<(String, u64)>, u64) {
    let mut ranked: Vec<(u64, u32)> = bytes.iter().zip(0u32..).filter(|(&b, _)| b > 0).map(|(&b, l)| (b, l)).collect();
    // By bytes alone first: names are built and compared only within the cut's ties.
    ranked.sort_unstable_by_key(|&(bytes, _)| std::cmp::Reverse(bytes));
    let Some(&(cut, _)) = ranked.get(BUSIEST.min(ranked.len()).saturating_sub(1)) else {
        return (Vec::new(), 0);
    };
    let name = |l: u32| {
        let (a, b) = links[l as usize];
        format!("{}-{}", ids[a as usize], ids[b as usize])
    };
    let mut named: Vec<(u64, String)> =
        ranked.iter().take_while(|(b, _)| *b >= cut).map(|&(b, l)| (b, name(l))).collect();
    named.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
    let unlisted = named.len().saturating_sub(BUSIEST) as u64;
    (named.into_iter().take(BUSIEST).map(|(bytes, name)| (name, bytes)).collect(), unlisted)
}

/// One strategy's busiest links for the table: links of equal bytes together, with how many more tie.
fn busiest_line(strategy: &str, traffic: &Traffic) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let mut groups: Vec<(u64, Vec<&str>)> = Vec::new();
    for (name, bytes) in &traffic.busiest_links {
        match groups.last_mut() {
            Some((b, names)) if b == bytes => names.push(name),
            _ => groups.push((*bytes, vec![name])),
        }
    }
    let last = groups.len().saturating_sub(1);
    let parts: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, (bytes, names))| {
            let more = if i == last { traffic.busiest_unlisted_ties as usize } else { 0 };
            match names.len() + more {
                1 => format!("{} {}", names[0], mib(*bytes)),
                n if more > 0 => format!("{n} links at {} each ({} and {more} more)", mib(*bytes), names.join(", ")),
                n => format!("{n} links at {} each ({})", mib(*bytes), names.join(", ")),
            }
        })
        .collect();
    format!("busiest links, {strategy}: {}", parts.join("; "))
}

impl Summary {
    pub fn new(name: &str, seed: u64, scenario: &Scenario, outcome: &Outcome) -> Summary {
        let streams = scenario
            .workload
            .streams
            .iter()
            .zip(&outcome.streams)
            .map(|(spec, out)| {
                let summary = StreamSummary {
                    origin: spec.origin.to_string(),
                    edges: out.edges,
                    objects: out.objects,
                    all: Strategies::of(&out.all),
                    steady: Strategies::of(&out.steady),
                };
                (spec.name.to_string(), summary)
            })
            .collect();
        let traffic = STRATEGIES
            .iter()
            .enumerate()
            .filter(|&(k, _)| outcome.link_bytes[k].iter().any(|&b| b > 0))
            .map(|(k, strategy)| {
                let (busiest_links, busiest_unlisted_ties) =
                    busiest(&outcome.ids, &outcome.links, &outcome.link_bytes[k]);
                let traffic = Traffic {
                    stretch_permille: outcome.stretch[k].percentiles(),
                    link_bytes: outcome.link_bytes[k].iter().sum(),
                    busiest_link_bytes: outcome.link_bytes[k].iter().copied().max().unwrap_or(0),
                    busiest_links,
                    busiest_unlisted_ties,
                    origin_egress_bytes: outcome.origin_egress[k].iter().sum(),
                    egress_by_origin: outcome
                        .origins
                        .iter()
                        .zip(&outcome.origin_egress[k])
                        .map(|(o, &b)| (o.to_string(), b))
                        .collect(),
                };
                (strategy.as_str().to_owned(), traffic)
            })
            .collect();
        let faults = outcome
            .faults
            .iter()
            .map(|f| {
                let fault = &scenario.faults[f.index];
                FaultSummary {
                    at_us: f.at,
                    kind: fault.kind.as_str().to_owned(),
                    target: fault.target(),
                    affected: f.affected,
                    lost: f.lost,
                    reroute_us: f.reroute,
                    no_path: f.no_path,
                    no_path_us: f.no_path_for,
                }
            })
            .collect();
        Summary {
            scenario: name.to_owned(),
            seed,
            duration_s: scenario.duration_s,
            nodes: outcome.ids.len(),
            links: outcome.links.len(),
            events: outcome.events,
            table_versions: outcome.table_versions,
            table_changes: outcome.table_changes.iter().map(|&c| u64::from(c)).sum(),
            table_changes_per_node_max: outcome.table_changes.iter().max().map_or(0, |&c| u64::from(c)),
            recomputations: outcome.recomputations,
            recomputations_skipped: outcome.recomputations_skipped,
            down_verdicts: outcome.down_verdicts,
            false_down_verdicts: outcome.false_down_verdicts,
            reroute_within_ms: scenario.expect.reroute_within_ms,
            late_ms: scenario.workload.late_ms,
            all: Strategies::of(&merged(outcome, false)),
            steady: Strategies::of(&merged(outcome, true)),
            traffic,
            streams,
            faults,
        }
    }

    /// The JSON form, keys sorted (serde_json's maps are ordered by key).
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a summary always serializes");
        serde_json::to_string_pretty(&value).expect("a JSON value always serializes") + "\n"
    }

    /// Reroute times of the faults, where every affected edge recovered: their percentiles and the worst,
    /// and how many faults left some edge without objects to the end.
    pub fn reroutes(&self) -> (Percentiles, Micros, usize) {
        let mut times = Histogram::default();
        let mut worst = 0;
        for t in self.faults.iter().filter_map(|f| f.reroute_us) {
            times.add(t);
            worst = worst.max(t);
        }
        (times.percentiles(), worst, self.faults.iter().filter(|f| f.reroute_us.is_none()).count())
    }

    /// The table form.
    pub fn table(&self) -> String {
        let ms = |us: Micros| format!("{:.1}", us as f64 / 1000.0);
        let mib = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {} (seed {}): {} nodes, {} links, {} s simulated, {} events, {} route table versions, \
             {} recomputations ({} skipped: nothing could change), {} down verdicts on links ({} on a link that \
             was working)",
            self.scenario,
            self.seed,
            self.nodes,
            self.links,
            self.duration_s,
            self.events,
            self.table_versions,
            self.recomputations + self.recomputations_skipped,
            self.recomputations_skipped,
            self.down_verdicts,
            self.false_down_verdicts,
        );
        let _ = writeln!(
            out,
            "\n{:<9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>8} {:>8} | {:>10} {:>10} {:>10}",
            "strategy",
            "deliveries",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "lost",
            "late",
            "stretch50",
            "stretch99",
            "links MiB",
            "busiest",
            "egress MiB"
        );
        let rows = [
            ("overlay", Some(&self.all.overlay)),
            ("static", Some(&self.all.static_tree)),
            ("direct", self.all.direct.as_ref()),
        ];
        for (name, delivery) in rows {
            let Some(d) = delivery else { continue };
            let t = self.traffic.get(name);
            let stretch = |f: fn(&Percentiles) -> u64| {
                t.map_or("-".into(), |t| format!("{:.3}", f(&t.stretch_permille) as f64 / 1000.0))
            };
            let _ = writeln!(
                out,
                "{:<9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>9} {:>9} | {:>10} {:>10} {:>10}",
                name,
                d.due,
                ms(d.latency_us.p50),
                ms(d.latency_us.p95),
                ms(d.latency_us.p99),
                d.lost,
                d.late,
                stretch(|p| p.p50),
                stretch(|p| p.p99),
                t.map_or("-".into(), |t| mib(t.link_bytes)),
                t.map_or("-".into(), |t| mib(t.busiest_link_bytes)),
                t.map_or("-".into(), |t| mib(t.origin_egress_bytes)),
            );
        }
        let _ = writeln!(
            out,
            "steady state (before the first fault): overlay p99 {} ms, lost {}; static p99 {} ms, lost {}{}",
            ms(self.steady.overlay.latency_us.p99),
            self.steady.overlay.lost,
            ms(self.steady.static_tree.latency_us.p99),
            self.steady.static_tree.lost,
            self.steady.direct.as_ref().map_or(String::new(), |d| format!(
                "; direct p99 {} ms, lost {}",
                ms(d.latency_us.p99),
                d.lost
            )),
        );
        if let Some(direct) = &self.all.direct {
            if direct.due < self.all.overlay.due {
                let _ = writeln!(
                    out,
                    "direct covers {} of the {} due deliveries ({:.1} %): only edges with a link from their origin",
                    direct.due,
                    self.all.overlay.due,
                    100.0 * direct.due as f64 / self.all.overlay.due.max(1) as f64
                );
            }
        }
        for (strategy, traffic) in &self.traffic {
            let _ = writeln!(out, "{}", busiest_line(strategy, traffic));
        }
        const STREAM_ROWS: usize = 20;
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
            "direct99",
            "lost"
        );
        for (name, s) in self.streams.iter().take(STREAM_ROWS) {
            let (o, st) = (&s.all.overlay, &s.all.static_tree);
            let direct = s.all.direct.as_ref();
            let _ = writeln!(
                out,
                "{:<12} {:<16} {:>5} {:>7} | {:>8} {:>8} {:>8} {:>6} | {:>8} {:>6} | {:>8} {:>6}",
                name,
                s.origin,
                s.edges,
                s.objects,
                ms(o.latency_us.p50),
                ms(o.latency_us.p95),
                ms(o.latency_us.p99),
                o.lost,
                ms(st.latency_us.p99),
                st.lost,
                direct.map_or("-".into(), |d| ms(d.latency_us.p99)),
                direct.map_or("-".into(), |d| d.lost.to_string()),
            );
        }
        if self.streams.len() > STREAM_ROWS {
            let _ = writeln!(out, "... and {} more streams (all in the JSON)", self.streams.len() - STREAM_ROWS);
        }
        if !self.faults.is_empty() {
            const FAULT_ROWS: usize = 20;
            let _ = writeln!(
                out,
                "\n{:>8} {:<12} {:<32} {:>8} {:>6} {:>11} {:>20}",
                "at s", "fault", "target", "affected", "lost", "reroute ms", "no path: pairs, ms"
            );
            for f in self.faults.iter().take(FAULT_ROWS) {
                let reroute = f.reroute_us.map_or("never".to_owned(), ms);
                let no_path = match f.no_path {
                    0 => "-".to_owned(),
                    n => format!("{n}, {}", f.no_path_us.map_or("never".to_owned(), ms)),
                };
                let _ = writeln!(
                    out,
                    "{:>8.3} {:<12} {:<32} {:>8} {:>6} {:>11} {:>20}",
                    f.at_us as f64 / 1e6,
                    f.kind,
                    f.target,
                    f.affected,
                    f.lost,
                    reroute,
                    no_path
                );
            }
            if self.faults.len() > FAULT_ROWS {
                let _ = writeln!(out, "... and {} more faults (all in the JSON)", self.faults.len() - FAULT_ROWS);
            }
            let (p, worst, never) = self.reroutes();
            let _ = writeln!(
                out,
                "\n{} faults: reroute p50 {} ms, p99 {} ms, worst {} ms; {} never recovered; expected: every reroute \
                 within {} ms",
                self.faults.len(),
                ms(p.p50),
                ms(p.p99),
                ms(worst),
                never,
                self.reroute_within_ms
            );
            let pathless: Vec<&FaultSummary> = self.faults.iter().filter(|f| f.no_path > 0).collect();
            if !pathless.is_empty() {
                let longest = pathless.iter().filter_map(|f| f.no_path_us).max().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "edges with no path at all after {} of the faults (not counted in the reroute times): longest {} \
                     ms; {} never had one again",
                    pathless.len(),
                    ms(longest),
                    pathless.iter().filter(|f| f.no_path_us.is_none()).count()
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId::new(format!("n{i:02}")).unwrap()).collect()
    }

    #[test]
    fn busiest_links_rank_by_bytes_and_name_only_among_equals() {
        // A star: link k joins n00 and n{k+1}. Names run against bytes: the later the name, the more bytes.
        let ids = ids(6);
        let links: Vec<(u32, u32)> = (1..6).map(|k| (0, k)).collect();
        let (listed, ties) = busiest(&ids, &links, &[10, 30, 20, 30, 0]);
        let names: Vec<(&str, u64)> = listed.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        assert_eq!(names, [("n00-n02", 30), ("n00-n04", 30), ("n00-n03", 20), ("n00-n01", 10)]);
        assert_eq!(ties, 0);
    }

    #[test]
    fn a_tree_whose_links_all_tie_says_how_many_more_tie() {
        // Fifteen tree links that each carried every object once, and one that carried them twice.
        let ids = ids(17);
        let links: Vec<(u32, u32)> = (1..17).map(|k| (k - 1, k)).collect();
        let mut bytes = vec![1_048_576; 16];
        bytes[12] = 2 * 1_048_576;
        let (listed, ties) = busiest(&ids, &links, &bytes);
        assert_eq!(listed[0], ("n12-n13".to_owned(), 2 * 1_048_576));
        assert_eq!(listed.len(), BUSIEST);
        assert_eq!(listed[1].0, "n00-n01");
        assert_eq!(ties, 15 - (BUSIEST as u64 - 1), "fifteen tie, nine of them listed");
        let traffic = Traffic {
            stretch_permille: Histogram::default().percentiles(),
            link_bytes: bytes.iter().sum(),
            busiest_link_bytes: 2 * 1_048_576,
            busiest_links: listed,
            busiest_unlisted_ties: ties,
            origin_egress_bytes: 0,
            egress_by_origin: BTreeMap::new(),
        };
        let line = busiest_line("overlay", &traffic);
        assert!(
            line.starts_with("busiest links, overlay: n12-n13 2.0 MiB; 15 links at 1.0 MiB each (n00-n01, "),
            "{line}"
        );
        assert!(line.ends_with("n08-n09 and 6 more)"), "{line}");
    }
}
