//! The simulated failover lab (`simulations/failover.toml`) takes the paths the live failover lab takes and
//! states its expected outcome; this test checks both. `cargo bench --bench failover` compares its reroute
//! time with the live one.

use std::path::Path;

use lightpath::sim::{run_file, Summary};

fn run(seed: Option<u64>) -> Summary {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/failover.toml");
    run_file(&path, seed, None, None).expect("the failover scenario runs")
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
