//! The scale scenario (`simulations/scale.toml`: 9,996 nodes, 100 streams, an hour with 60 faults) states its
//! expected outcome; this test checks it. Its wall time and memory are benchmarked in `benches/sim_scale.sh`.

use std::path::Path;

use lightpath::sim::run_file;

#[test]
fn ten_thousand_nodes_for_an_hour_meet_the_stated_outcome() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/scale.toml");
    let s = run_file(&path, None, lightpath::sim::default_threads(), None, None).expect("the scale scenario runs");
    assert_eq!((s.nodes, s.duration_s, s.streams.len()), (9_996, 3_600, 100));
    assert!(s.links > 20_000, "{} links", s.links);
    assert!(s.streams.values().all(|st| st.edges == 100 && st.objects >= 1_790));
    assert_eq!(s.steady.overlay.lost, 0, "{:?}", s.steady.overlay);
    assert!(s.steady.overlay.due > 100_000, "{:?}", s.steady.overlay);
    assert!(s.steady.overlay.latency_us.p99 <= s.steady.static_tree.latency_us.p99, "{:?}", s.steady);
    assert_eq!(s.faults.len(), 120);
    for f in &s.faults {
        let reroute = f.reroute_us.unwrap_or_else(|| panic!("never recovered: {f:?}"));
        assert!(reroute <= s.reroute_within_ms * 1000, "{f:?}");
    }
    // The faults must hit routes for the bound above to mean something.
    assert!(s.faults.iter().filter(|f| f.affected > 0).count() >= 5, "{:?}", s.faults);
    assert!(s.all.overlay.lost * 10 <= s.all.static_tree.lost, "{:?}", s.all);
}
