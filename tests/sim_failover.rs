//! The simulated failover lab (`simulations/failover.toml`) takes the paths the live failover lab takes and
//! states its expected outcome; this test checks both. `cargo bench --bench failover` compares its reroute
//! time with the live one.

use std::path::Path;

use lightpath::sim::{run_file, Summary};

fn run(seed: Option<u64>) -> Summary {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/failover.toml");
    run_file(&path, seed, lightpath::sim::default_threads(), None, None).expect("the failover scenario runs")
}

fn bytes_on(s: &Summary, link: &str) -> u64 {
    let overlay = &s.traffic["overlay"];
    overlay.busiest_links.iter().find(|(name, _)| name == link).map_or(0, |&(_, bytes)| bytes)
}

#[test]
fn the_edge_moves_from_the_dead_relay_to_the_other_within_the_stated_time() {
    for seed in [1, 2, 3] {
        let s = run(Some(seed));
        let stream = &s.streams["s"];
        let crash = &s.faults[0];
        assert_eq!((crash.kind.as_str(), crash.target.as_str()), ("node_crash", "relay-a"));
        // One 2,000-byte object every 100 ms from 5 s; those emitted before the crash at 20.05 s went through
        // relay-a (1 ms nearer than relay-b, more than the jitter can hide), the others through relay-b, the
        // few emitted before the edge noticed the crash were lost.
        let object = 2_000;
        let before = 151;
        assert_eq!(bytes_on(&s, "origin-relay-a"), before * object, "seed {seed}: {:?}", s.traffic);
        assert_eq!(bytes_on(&s, "relay-a-edge"), before * object);
        let after = stream.objects - before - crash.lost;
        assert_eq!(bytes_on(&s, "origin-relay-b"), after * object, "seed {seed}: {:?}", s.traffic);
        assert_eq!(bytes_on(&s, "relay-b-edge"), after * object);
        assert_eq!(stream.steady.overlay.lost, 0);
        assert_eq!(stream.all.overlay.lost, crash.lost);
        let reroute = crash.reroute_us.expect("the edge receives again");
        assert!(reroute <= s.reroute_within_ms * 1000, "seed {seed}: reroute {reroute} µs");
        // Detection needs three overdue 100 ms probes: the reroute cannot be much faster than 300 ms either.
        assert!(reroute >= 250_000, "seed {seed}: reroute {reroute} µs is faster than detection can be");
        assert!(crash.lost <= reroute / 100_000 + 1, "{crash:?}");
        // Without failover, everything after the crash is lost.
        assert_eq!(stream.all.static_tree.lost, stream.objects - before);
    }
}

/// The failover lab with relay-a drained at 20 s and crashed at 30 s: the simulator runs the control plane's
/// drain rule (the planner's), so the edge moves to relay-b before the crash and loses nothing to it.
#[test]
fn a_drained_relay_is_left_before_it_stops_and_its_crash_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/failover-lab.toml");
    let scenario = format!(
        "topology = {topology:?}\nduration_s = 40\nseed = 1\n\n[links]\njitter_ms = 0.2\nloss = 0.0\n\n\
         [workload]\nstart_s = 5\nstreams = [{{ name = \"s\", origin = \"origin\", segment_ms = 100, bitrate_kbps = 160, edges = [\"edge\"] }}]\n\n\
         [[faults]]\nat_s = 20.05\nkind = \"drain\"\na = \"relay-a\"\n\n\
         [[faults]]\nat_s = 30.05\nkind = \"node_crash\"\na = \"relay-a\"\n\n[expect]\nreroute_within_ms = 700\n"
    );
    let path = dir.path().join("drain.toml");
    std::fs::write(&path, scenario).unwrap();
    let s = run_file(&path, None, lightpath::sim::default_threads(), None, None).expect("the drain scenario runs");
    let stream = &s.streams["s"];
    let (drain, crash) = (&s.faults[0], &s.faults[1]);
    assert_eq!((drain.kind.as_str(), crash.kind.as_str()), ("drain", "node_crash"));
    assert_eq!((drain.lost, crash.lost), (0, 0), "{:?}", s.faults);
    assert_eq!(stream.all.overlay.lost, 0);
    // Objects went through relay-a until the drain moved the route (the next round, the damper's 2 s hold,
    // then 2 s of make-before-break through both), then through relay-b only: relay-a carried none of the
    // objects of the seconds before its crash (251 were emitted before it).
    let (via_a, via_b) = (bytes_on(&s, "relay-a-edge") / 2_000, bytes_on(&s, "relay-b-edge") / 2_000);
    assert!((152..=220).contains(&via_a), "through relay-a: {via_a} objects");
    assert!(via_b >= stream.objects - via_a, "through relay-b: {via_b} of {} objects", stream.objects);
}
