//! `lightpath topology import` as a network engineer uses it: a Topology Zoo style GraphML file becomes a
//! topology that `lightpath check topology` accepts and `lightpath sim` runs, and what it cannot place is
//! named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lightpath(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightpath")).args(args).output().expect("lightpath runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn graphml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nordic-ring.graphml")
}

#[test]
fn a_node_without_coordinates_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nordic.toml");
    let run = lightpath(&["topology", "import", graphml().to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(stderr.contains("node \"8\" (Peering (external)) at line 48 has no Latitude"), "{stderr}");
    assert!(stderr.contains("--skip-unplaced"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn an_imported_network_checks_and_simulates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nordic.toml");
    let run = lightpath(&[
        "topology",
        "import",
        graphml().to_str().unwrap(),
        "--skip-unplaced",
        "--inflation",
        "1.8",
        "--origin",
        "Stockholm",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // What was left out or merged is said, naming the node or the edge.
    for warning in [
        "node \"8\" (Peering (external)) at line 48 has no Latitude: left out",
        "the edge 2 - 3 at line 60 repeats the one at line 59",
        "line 62 links node \"4\" (Helsinki) to itself",
    ] {
        assert!(stderr.contains(warning), "{warning}: {stderr}");
    }
    let topology = std::fs::read_to_string(&out).unwrap();
    assert!(topology.contains("x inflation 1.8"), "the inflation is stated in the file: {topology}");
    // Oslo to Stockholm is 417 km of great circle: 2.08 ms in straight fibre, 3.75 ms at 1.8.
    assert!(topology.contains("a = \"stockholm\"\nb = \"oslo\"\nlatency_ms = 3.75"), "{topology}");

    let check = lightpath(&["check", "topology", out.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert_eq!(text(&check.stdout).trim(), "ok: 8 nodes, 10 links, 8 regions");

    // Stockholm's stream to every other city; its link to Helsinki fails and Helsinki is served via Tallinn.
    let scenario = dir.path().join("nordic-sim.toml");
    std::fs::write(
        &scenario,
        "topology = \"nordic.toml\"\nduration_s = 30\nseed = 1\n\
         [workload]\nstreams = [{ name = \"tv\", origin = \"stockholm\", segment_ms = 500 }]\n\
         [[faults]]\nat_s = 15\nkind = \"link_down\"\na = \"stockholm\"\nb = \"helsinki\"\n",
    )
    .unwrap();
    let results = dir.path().join("results");
    let sim = lightpath(&["sim", scenario.to_str().unwrap(), "--out", results.to_str().unwrap()]);
    let table = text(&sim.stdout);
    assert!(sim.status.success(), "{}", text(&sim.stderr));
    assert!(table.contains("8 nodes, 10 links"), "{table}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("summary.json")).unwrap()).unwrap();
    let overlay = &summary["streams"]["tv"]["all"]["overlay"];
    assert_eq!(summary["streams"]["tv"]["edges"], 7, "every other city watches: {summary}");
    assert!(overlay["due"].as_u64().unwrap() > 7 * 40, "{overlay}");
    assert_eq!(summary["steady"]["overlay"]["lost"], 0, "{summary}");
    let reroute = summary["faults"][0]["reroute_us"].as_u64().expect("Helsinki keeps a path and gets objects again");
    assert!(reroute < 2_000_000, "{}", summary["faults"][0]);
}
