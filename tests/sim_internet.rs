//! The internet scenario (`simulations/internet.toml`) states its expected outcome; this test checks it.

use std::path::Path;

use lightpath::sim::{run_file, Summary};

fn run(seed: Option<u64>) -> Summary {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/internet.toml");
    run_file(&path, seed, lightpath::sim::default_threads(), None, None).expect("the internet scenario runs")
}

#[test]
fn the_overlay_beats_direct_delivery_on_the_public_internet() {
    let s = run(None);
    let direct = s.all.direct.as_ref().expect("every edge has a direct path");
    let steady_direct = s.steady.direct.as_ref().expect("every edge has a direct path");
    assert_eq!(s.all.overlay.due, direct.due);
    // Faster, at the median and at the tail, in steady state and over the whole run.
    for (overlay, direct) in [(&s.steady.overlay, steady_direct), (&s.all.overlay, direct)] {
        assert!(overlay.latency_us.p50 < direct.latency_us.p50, "{overlay:?} vs {direct:?}");
        assert!(overlay.latency_us.p99 < direct.latency_us.p99, "{overlay:?} vs {direct:?}");
    }
    assert_eq!(s.steady.overlay.lost, 0);
    // Link failures cost direct delivery (and the static tree) every object over the failed path until it
    // is repaired; the overlay routes around them.
    assert!(s.all.overlay.lost < direct.lost, "overlay lost {}, direct {}", s.all.overlay.lost, direct.lost);
    assert!(s.all.overlay.lost < s.all.static_tree.lost);
    // Near the best path there is at the median; fewer copies out of the origins than one per edge.
    let (overlay, direct) = (&s.traffic["overlay"], &s.traffic["direct"]);
    assert!(overlay.stretch_permille.p50 <= 1_100, "{:?}", overlay.stretch_permille);
    assert!(overlay.origin_egress_bytes < direct.origin_egress_bytes);
    // Every fault's losses end within the stated time; none leaves an edge without objects.
    assert!(s.faults.len() >= 180);
    for f in &s.faults {
        let reroute = f.reroute_us.unwrap_or_else(|| panic!("never recovered: {f:?}"));
        assert!(reroute <= s.reroute_within_ms * 1000, "{f:?}");
    }
}
