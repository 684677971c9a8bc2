//! The world scenario (`simulations/world.toml`) states its expected outcome; these tests check it, and that
//! the simulator is deterministic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lightpath::sim::{run_file, Summary};

fn world() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/world.toml")
}

fn run(seed: Option<u64>) -> Summary {
    run_file(&world(), seed, lightpath::sim::default_threads(), None, None).expect("the world scenario runs")
}

/// The run with the scenario's own seed, shared by the tests (a debug build takes seconds per run).
fn scenario_run() -> &'static Summary {
    static RUN: OnceLock<Summary> = OnceLock::new();
    RUN.get_or_init(|| run(None))
}

/// The outcome `simulations/world.toml` promises, for any seed.
fn check_expected_outcome(s: &Summary) {
    assert_eq!(s.streams.len(), 4);
    for (name, stream) in &s.streams {
        assert!(stream.steady.overlay.due > 0, "{name}: no object delivered in steady state");
        assert_eq!(stream.steady.overlay.lost, 0, "{name}: objects lost in steady state");
        // The overlay routes on measured costs; it must do no worse than the shortest paths over the topology's
        // true latencies, fixed at t = 0, while nothing fails.
        assert!(
            stream.steady.overlay.latency_us.p99 <= stream.steady.static_tree.latency_us.p99,
            "{name}: overlay p99 {} µs, static tree p99 {} µs",
            stream.steady.overlay.latency_us.p99,
            stream.steady.static_tree.latency_us.p99
        );
        assert!(
            stream.steady.overlay.latency_us.p50 > 1_000,
            "{name}: implausible latencies {:?}",
            stream.steady.overlay.latency_us
        );
    }
    assert_eq!(s.faults.len(), 1);
    let crash = &s.faults[0];
    assert_eq!((crash.kind.as_str(), crash.target.as_str(), crash.at_us), ("node_crash", "francesouth", 30_000_000));
    // The crash must hit some route, or the bound below proves nothing.
    assert!(crash.affected > 0, "the crash affected no edge: {crash:?}");
    let reroute = crash.reroute_us.expect("every affected edge receives objects again");
    assert!(reroute <= s.reroute_within_ms * 1000, "reroute took {reroute} µs, more than {} ms", s.reroute_within_ms);
    // Objects lost to the crash are those of the reroute window only: at most one object per 250 ms part per
    // affected edge while it lasts.
    assert!(crash.lost <= crash.affected * (reroute / 250_000 + 1), "{crash:?}");
    // The static tree has no failover: the edges below the crashed node lose everything from then on.
    let overlay_lost: u64 = s.streams.values().map(|st| st.all.overlay.lost).sum();
    let static_lost: u64 = s.streams.values().map(|st| st.all.static_tree.lost).sum();
    assert!(static_lost > 10 * overlay_lost, "static tree lost {static_lost}, overlay {overlay_lost}");
}

#[test]
fn world_meets_its_expected_outcome() {
    let s = scenario_run();
    assert_eq!(s.seed, 1);
    check_expected_outcome(s);
}

#[test]
fn same_seed_gives_identical_json() {
    let dir = std::env::temp_dir().join(format!("lightpath-sim-{}", std::process::id()));
    // A second run, given the scenario's seed explicitly, writing its JSON.
    let second = run_file(&world(), Some(1), lightpath::sim::default_threads(), Some(&dir), None).expect("runs");
    let written = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    // The plots: a latency CDF with a line per strategy, and a timeline around the crash.
    let cdf = std::fs::read_to_string(dir.join("latency-cdf.svg")).expect("latency-cdf.svg written");
    assert!(cdf.starts_with("<svg") && ["overlay", "static", "direct"].iter().all(|s| cdf.contains(s)));
    // Each strategy's legend says what share of its due deliveries arrived (its curve's top).
    assert_eq!(cdf.matches("% delivered").count(), 3, "{cdf}");
    // The world mesh is partial: direct covers fewer deliveries than the overlay, and says so.
    assert!(cdf.contains("edges linked to the origin"), "{cdf}");
    assert!(second.table().contains("direct covers "), "{}", second.table());
    let crash = std::fs::read_to_string(dir.join("fault-1.svg")).expect("fault-1.svg written");
    assert!(crash.contains("node_crash francesouth") && crash.contains("<polyline"));
    // Its title gives the table's count for the fault, beside what the plotted seconds show.
    let table_lost = format!("{} lost until the next fault (the table's figure)", second.faults[0].lost);
    assert!(crash.contains(&table_lost), "{crash}");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(written, second.to_json());
    assert_eq!(scenario_run().to_json(), written, "a second run with the same seed differs");
}

#[test]
fn another_seed_changes_figures_not_the_conclusion() {
    let (one, two) = (scenario_run(), run(Some(2)));
    assert_ne!(one.to_json(), two.to_json());
    assert_eq!(two.seed, 2);
    // Latencies (to 0.4 %) and the reroute time (to the µs) depend on the jitter drawn.
    let figures = |s: &Summary| {
        let mut f: Vec<u64> =
            s.streams.values().flat_map(|st| [st.all.overlay.latency_us.p50, st.all.overlay.latency_us.p95]).collect();
        f.push(s.faults[0].reroute_us.unwrap_or(0));
        f
    };
    assert_ne!(figures(one), figures(&two), "jitter-dependent figures did not move");
    check_expected_outcome(&two);
}
