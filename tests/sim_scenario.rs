//! Scenario files: mistakes are errors that name the field; the simulator's module stays pure.

use std::path::{Path, PathBuf};

use lightpath::sim::{run_file, SimError};

/// Writes a scenario into a fresh folder and returns its path; `TOPOLOGY` stands for the world topology.
fn scenario(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sim-scenario-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/world.toml");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text.replace("TOPOLOGY", &topology.display().to_string())).unwrap();
    path
}

const BASE: &str = r#"
topology = "TOPOLOGY"
duration_s = 20
seed = 3
[workload]
streams = [{ name = "s", origin = "westeurope", segment_ms = 500 }]
"#;

fn error_of(name: &str, text: &str) -> String {
    match run_file(&scenario(name, text), None, 1, None, None) {
        Ok(_) => panic!("{name}: accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_small_scenario_runs() {
    let s = run_file(&scenario("small", BASE), None, 1, None, None).unwrap();
    assert_eq!(s.streams["s"].edges, 50);
    assert_eq!(s.streams["s"].all.overlay.lost, 0);
    assert!(s.faults.is_empty());
}

#[test]
fn a_link_fault_is_routed_around() {
    // westeurope's direct link to northeurope fails; northeurope must be served through another node.
    let text =
        format!("{BASE}\n[[faults]]\nat_s = 10\nkind = \"link_down\"\na = \"westeurope\"\nb = \"northeurope\"\n");
    let s = run_file(&scenario("linkdown", &text), None, 1, None, None).unwrap();
    let fault = &s.faults[0];
    assert_eq!(fault.target, "westeurope-northeurope");
    assert!(fault.affected >= 1, "{fault:?}");
    assert!(fault.reroute_us.is_some_and(|r| r <= 2_000_000), "{fault:?}");
}

#[test]
fn a_slower_link_is_left_for_a_detour() {
    // The direct westeurope—northeurope link (about 10 ms) becomes 100 ms at 10 s. The overlay measures it
    // and, after its hold time, moves northeurope's stream onto a detour; the static tree keeps the slow link.
    let text = BASE.replace("segment_ms = 500 }", "segment_ms = 500, edges = [\"northeurope\"] }").replace("20", "40")
        + "\n[[faults]]\nat_s = 10\nkind = \"latency\"\na = \"westeurope\"\nb = \"northeurope\"\nvalue = 100\n";
    let s = run_file(&scenario("latency", &text), None, 1, None, None).unwrap();
    let stream = &s.streams["s"];
    assert_eq!(stream.all.overlay.lost, 0);
    assert!(stream.all.static_tree.latency_us.p50 >= 100_000, "{stream:?}");
    assert!(stream.all.overlay.latency_us.p50 < 50_000, "{stream:?}");
    assert_eq!((s.faults[0].affected, s.faults[0].reroute_us), (0, Some(0)));
}

#[test]
fn unknown_fields_and_nodes_are_named() {
    let typo = BASE.replace("duration_s", "duration");
    assert!(error_of("typo", &typo).contains("duration"), "{}", error_of("typo", &typo));
    let node = BASE.replace("westeurope", "atlantis");
    let e = error_of("node", &node);
    assert!(e.contains("workload.streams[0].origin") && e.contains("atlantis"), "{e}");
    let fault = format!("{BASE}\n[[faults]]\nat_s = 5\nkind = \"link_down\"\na = \"westeurope\"\n");
    assert!(error_of("fault", &fault).contains("faults[0].b"), "{}", error_of("fault", &fault));
    let kind = format!("{BASE}\n[[faults]]\nat_s = 5\nkind = \"meteor\"\na = \"westeurope\"\n");
    assert!(error_of("kind", &kind).contains("meteor"), "{}", error_of("kind", &kind));
    let late = format!("{BASE}\n[[faults]]\nat_s = 50\nkind = \"node_crash\"\na = \"westeurope\"\n");
    assert!(error_of("late", &late).contains("faults[0].at_s"), "{}", error_of("late", &late));
    assert!(matches!(
        run_file(Path::new("/nonexistent/scenario.toml"), None, 1, None, None),
        Err(SimError::Read { .. })
    ));
}

#[test]
fn the_pure_modules_are_pure() {
    // The core the live node and the simulator share takes time and measurements as arguments: no runtime,
    // no sockets, no clock. The relay core and the control planner are in it.
    fn check(dir: &Path, files: &mut usize) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                check(&path, files);
                continue;
            }
            *files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for banned in ["tokio", "quinn", "Instant", "SystemTime", "std::net", "UdpSocket", "TcpStream"] {
                    assert!(!code.contains(banned), "{}:{}: uses {banned}", path.display(), i + 1);
                }
            }
        }
    }
    for module in ["src/relay", "src/sim", "src/routing", "src/wire", "src/hls"] {
        let mut files = 0;
        check(&Path::new(env!("CARGO_MANIFEST_DIR")).join(module), &mut files);
        assert!(files > 0, "{module} has no source files");
    }
}

#[test]
fn the_readme_example_scenario_runs() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("```toml\ntopology = ").expect("README has the example scenario") + "```toml\n".len();
    let text = &readme[start..start + readme[start..].find("```").unwrap()];
    let text = text.replace("../topology/world.toml", "TOPOLOGY");
    let s = run_file(&scenario("readme", &text), None, 1, None, None).unwrap();
    assert_eq!(s.nodes, 20 * 51);
    assert_eq!(s.faults[0].target, "westeurope-0-westeurope-1");
    assert_eq!(s.steady.overlay.lost, 0);
    assert!(s.all.overlay.due > 0);
}

#[test]
fn every_fault_kind_runs_and_does_what_it_says() {
    // westeurope's stream, watched in northeurope and in the two Australian regions.
    let base = BASE.replace("duration_s = 20", "duration_s = 90").replace(
        "segment_ms = 500 }",
        "segment_ms = 500, edges = [\"northeurope\", \"australiaeast\", \"australiasoutheast\"] }",
    );
    let faults = r#"
[[faults]]
at_s = 10
kind = "control_down"
[[faults]]
at_s = 15
kind = "link_down"
a = "westeurope"
b = "northeurope"
[[faults]]
at_s = 25
kind = "control_up"
[[faults]]
at_s = 30
kind = "partition"
region = "australiaeast"
[[faults]]
at_s = 40
kind = "heal"
region = "australiaeast"
[[faults]]
at_s = 50
kind = "flap"
a = "westeurope"
b = "australiasoutheast"
period_s = 2
until_s = 60
[[faults]]
at_s = 65
kind = "node_crash"
a = "australiaeast"
[[faults]]
at_s = 75
kind = "node_recover"
a = "australiaeast"
"#;
    let s = run_file(&scenario("kinds", &format!("{base}{faults}")), None, 1, None, None).unwrap();
    let kinds: Vec<&str> = s.faults.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["control_down", "link_down", "control_up", "partition", "heal", "flap", "node_crash", "node_recover"]
    );
    let f = |kind: &str| s.faults.iter().find(|f| f.kind == kind).unwrap();
    // With the control plane down, northeurope's edge still moves to its backup by itself, within a second.
    let cut = f("link_down");
    assert!(cut.affected >= 1 && cut.reroute_us.is_some_and(|r| r < 1_000_000), "{cut:?}");
    // A partitioned region receives nothing until it heals: it has no path for those 10 s, which is told
    // apart from the reroute (the edges cut off are not waiting for one).
    let partition = f("partition");
    assert!(partition.affected >= 1 && partition.lost >= 15, "{partition:?}");
    assert!(partition.no_path >= 1 && partition.no_path_us.is_some_and(|t| t >= 10_000_000), "{partition:?}");
    assert!(partition.reroute_us.is_some_and(|r| r < 10_000_000), "{partition:?}");
    // A flapping link costs at most a few objects per flip, and every edge is served again.
    assert!(f("flap").reroute_us.is_some(), "{:?}", f("flap"));
    // Nothing else is lost: every loss belongs to a fault window and every fault recovered.
    assert_eq!(s.steady.overlay.lost, 0);
    assert!(s.faults.iter().all(|f| f.reroute_us.is_some()), "{:?}", s.faults);
}

#[test]
fn figures_out_of_range_duplicates_and_role_mismatches_are_named() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("long", BASE.replace("duration_s = 20", "duration_s = 18446744073710"), "duration_s"),
        ("twice", BASE.replace("segment_ms = 500 }]", "segment_ms = 500 }, { name = \"s\", origin = \"westeurope\", segment_ms = 500 }]"), "workload.streams[1].name"),
        ("role", BASE.replace("origin = \"westeurope\"", "origin = \"westindia\""), "workload.streams[0].origin"),
        ("no-edges", BASE.replace("segment_ms = 500 }", "segment_ms = 500, edges = [] }"), "workload.streams[0].edges"),
        ("zero-rate", BASE.replace("segment_ms = 500 }", "segment_ms = 500, bitrate_kbps = 0 }"), "workload.streams[0].bitrate_kbps"),
        (
            "far",
            format!("{BASE}\n[[faults]]\nat_s = 5\nkind = \"latency\"\na = \"westeurope\"\nb = \"northeurope\"\nvalue = 1e300\n"),
            "faults[0].value",
        ),
        (
            "fast-flap",
            format!(
                "{BASE}\n[[faults]]\nat_s = 5\nkind = \"flap\"\na = \"westeurope\"\nb = \"northeurope\"\nperiod_s = 1e-6\nuntil_s = 10\n"
            ),
            "faults[0].period_s",
        ),
        ("jitter", format!("{BASE}\n[links]\njitter_ms = 1e300\n"), "links.jitter_ms"),
        // A link of a trillionth of a Mbit/s would queue one object past the clock's end.
        ("trickle", format!("{BASE}\n[links]\nbandwidth_mbps = 1e-12\n"), "links.bandwidth_mbps"),
        ("fast-probes", format!("{BASE}\n[probes]\nfast_ms = 1\nslow_ms = 1000\n"), "probes.fast_ms"),
        ("fast-control", format!("{BASE}\n[control]\nrecompute_ms = 1\n"), "control.recompute_ms"),
        (
            "same-edge",
            BASE.replace("segment_ms = 500 }", "segment_ms = 500, edges = [\"northeurope\", \"northeurope\"] }"),
            "workload.streams[0].edges[1]",
        ),
        (
            "many-streams",
            BASE.replace("[workload]", "[workload]\ngenerate = { streams = 100000000, edges_per_stream = 5, segment_ms = 500 }"),
            "workload.generate.streams",
        ),
        (
            "many-failures",
            format!("{BASE}\n[random_faults]\nlink_failures = 10000000000\nrepair_s = 1\nfrom_s = 1\n"),
            "random_faults.link_failures",
        ),
        (
            "huge-mesh",
            format!("{BASE}\n[generate]\nkind = \"internet\"\nnodes_per_region = 1000000\n"),
            "generate.nodes_per_region",
        ),
        (
            "congested",
            format!("{BASE}\n[random_faults]\ncongestions = 1\ncongestion_factor = 1e300\nrepair_s = 1\nfrom_s = 1\n"),
            "random_faults.congestion_factor",
        ),
        (
            // Every 100 ms for a month: 26 million link changes, each an event held from the start.
            "month-of-flaps",
            BASE.replace("duration_s = 20", "duration_s = 2592000")
                + "\n[[faults]]\nat_s = 5\nkind = \"flap\"\na = \"westeurope\"\nb = \"northeurope\"\nperiod_s = 0.1\nuntil_s = 2591000\n",
            "faults[0].until_s",
        ),
    ];
    for (name, text, field) in cases {
        let e = error_of(name, &text);
        assert!(e.contains(field), "{name}: {e}");
    }
}

#[test]
fn an_edge_list_naming_a_node_without_the_edge_role_is_refused() {
    let path = scenario("roles", "");
    std::fs::write(
        path.parent().unwrap().join("roles-topology.toml"),
        "regions = [{ name = \"lab\", lat = 0.0, lon = 0.0 }]\n\
         nodes = [\n\
           { id = \"origin\", region = \"lab\", roles = [\"origin\"], mesh = \"127.0.0.1:1\", http = \"127.0.0.1:2\" },\n\
           { id = \"relay\", region = \"lab\", roles = [\"relay\"], mesh = \"127.0.0.1:3\", http = \"127.0.0.1:4\" },\n\
         ]\n\
         links = [{ a = \"origin\", b = \"relay\", latency_ms = 5.0 }]\n",
    )
    .unwrap();
    let text = "topology = \"roles-topology.toml\"\nduration_s = 10\nseed = 1\n[workload]\n\
                streams = [{ name = \"s\", origin = \"origin\", segment_ms = 500, edges = [\"relay\"] }]\n";
    let e = error_of("roles", text);
    assert!(e.contains("workload.streams[0].edges[0]") && e.contains("edge role"), "{e}");
}

#[test]
fn a_permanent_cut_reads_never_and_a_repaired_one_a_time() {
    // origin -- relay -- edge: cutting relay--edge leaves the edge no path at all.
    let path = scenario("chain", "");
    let dir = path.parent().unwrap();
    std::fs::write(
        dir.join("chain-topology.toml"),
        "regions = [{ name = \"lab\", lat = 0.0, lon = 0.0 }]\n\
         nodes = [\n\
           { id = \"origin\", region = \"lab\", roles = [\"origin\"], mesh = \"127.0.0.1:1\", http = \"127.0.0.1:2\" },\n\
           { id = \"relay\", region = \"lab\", roles = [\"relay\"], mesh = \"127.0.0.1:3\", http = \"127.0.0.1:4\" },\n\
           { id = \"edge\", region = \"lab\", roles = [\"edge\"], mesh = \"127.0.0.1:5\", http = \"127.0.0.1:6\" },\n\
         ]\n\
         links = [{ a = \"origin\", b = \"relay\", latency_ms = 5.0 }, { a = \"relay\", b = \"edge\", latency_ms = 5.0 }]\n",
    )
    .unwrap();
    let chain = "topology = \"chain-topology.toml\"\nduration_s = 30\nseed = 3\n[workload]\n\
                 streams = [{ name = \"s\", origin = \"origin\", segment_ms = 500 }]\n\
                 [[faults]]\nat_s = 10\nkind = \"link_down\"\na = \"relay\"\nb = \"edge\"\n";
    let s = run_file(&scenario("chain", chain), None, 1, None, None).unwrap();
    let fault = &s.faults[0];
    assert!(fault.affected >= 1, "{fault:?}");
    assert_eq!(fault.no_path, 1, "the edge had no path: {fault:?}");
    assert_eq!(fault.no_path_us, None, "and never had one again: {fault:?}");
    assert_eq!(fault.reroute_us, Some(0), "no loss while a path existed: {fault:?}");
    assert!(s.table().contains("1, never"), "{}", s.table());
    assert!(s.table().contains("1 never had one again"), "{}", s.table());

    // Repaired at 20 s: ten seconds without a path, told apart from the reroute once the path is back.
    let repaired = format!("{chain}\n[[faults]]\nat_s = 20\nkind = \"link_up\"\na = \"relay\"\nb = \"edge\"\n");
    let s = run_file(&scenario("chain", &repaired), None, 1, None, None).unwrap();
    let fault = &s.faults[0];
    assert_eq!(fault.no_path, 1, "{fault:?}");
    let pathless = fault.no_path_us.expect("the path came back");
    assert!((10_000_000..=10_500_000).contains(&pathless), "no path from the cut to the repair: {fault:?}");
    assert!(fault.reroute_us.is_some_and(|r| r < 5_000_000), "the reroute counts from the repair: {fault:?}");
    let repair = &s.faults[1];
    assert_eq!(repair.no_path, 0, "{repair:?}");
    assert!(repair.reroute_us.is_some_and(|r| r < 5_000_000), "{repair:?}");
}

/// A region cut off: its edges have no path for the partition's length, reported apart from the reroute of
/// the edges outside, which kept theirs.
#[test]
fn a_partition_reports_no_path_time_apart_from_the_reroute_of_edges_that_kept_a_path() {
    let path = scenario("partition", "");
    let dir = path.parent().unwrap();
    // Two regions: `a` holds the origin, two relays and an edge; `b` one edge behind a single link.
    std::fs::write(
        dir.join("partition-topology.toml"),
        "regions = [{ name = \"a\", lat = 0.0, lon = 0.0 }, { name = \"b\", lat = 1.0, lon = 1.0 }]\n\
         nodes = [\n\
           { id = \"origin\", region = \"a\", roles = [\"origin\"], mesh = \"127.0.0.1:1\", http = \"127.0.0.1:2\" },\n\
           { id = \"relay-1\", region = \"a\", roles = [\"relay\"], mesh = \"127.0.0.1:3\", http = \"127.0.0.1:4\" },\n\
           { id = \"relay-2\", region = \"a\", roles = [\"relay\"], mesh = \"127.0.0.1:5\", http = \"127.0.0.1:6\" },\n\
           { id = \"edge-a\", region = \"a\", roles = [\"edge\"], mesh = \"127.0.0.1:7\", http = \"127.0.0.1:8\" },\n\
           { id = \"edge-b\", region = \"b\", roles = [\"edge\"], mesh = \"127.0.0.1:9\", http = \"127.0.0.1:10\" },\n\
         ]\n\
         links = [\n\
           { a = \"origin\", b = \"relay-1\", latency_ms = 5.0 }, { a = \"origin\", b = \"relay-2\", latency_ms = 8.0 },\n\
           { a = \"relay-1\", b = \"edge-a\", latency_ms = 5.0 }, { a = \"relay-2\", b = \"edge-a\", latency_ms = 5.0 },\n\
           { a = \"relay-1\", b = \"edge-b\", latency_ms = 20.0 },\n\
         ]\n",
    )
    .unwrap();
    let text = "topology = \"partition-topology.toml\"\nduration_s = 40\nseed = 5\n[workload]\n\
                streams = [{ name = \"s\", origin = \"origin\", segment_ms = 500 }]\n\
                [[faults]]\nat_s = 10\nkind = \"partition\"\nregion = \"b\"\n\
                [[faults]]\nat_s = 10\nkind = \"node_crash\"\na = \"relay-1\"\n\
                [[faults]]\nat_s = 25\nkind = \"heal\"\nregion = \"b\"\n\
                [[faults]]\nat_s = 25\nkind = \"node_recover\"\na = \"relay-1\"\n";
    let out = dir.join("partition-plots");
    let s = run_file(&scenario("partition", text), None, 1, Some(&out), None).unwrap();
    println!("{}", s.table());
    // The partition's plot: while edge-b is cut off, the worst latency is edge-a's alone, drawn as hollow
    // points off the line rather than as a drop.
    let plot = std::fs::read_to_string(out.join("fault-1.svg")).expect("fault-1.svg");
    assert!(plot.contains("partition b") && plot.contains("class=\"partial\""), "{plot}");
    assert!(plot.contains("some edges got"), "{plot}");
    std::fs::remove_dir_all(&out).ok();
    let cut: Vec<_> = s.faults.iter().filter(|f| f.no_path > 0).collect();
    assert_eq!(cut.len(), 1, "one window left edge-b without a path: {:?}", s.faults);
    let pathless = cut[0].no_path_us.expect("the path came back at the heal");
    assert!((14_500_000..=15_500_000).contains(&pathless), "no path for the partition's 15 s: {:?}", cut[0]);
    for f in &s.faults {
        assert!(f.reroute_us.is_some_and(|r| r < 10_000_000), "edge-a's reroute is its own, not the 15 s: {f:?}");
    }
}

#[test]
fn the_outcome_is_the_same_on_any_number_of_threads() {
    // A generated mesh of 204 nodes at the live probe intervals, with links and nodes failing and coming
    // back: the probes that run late on several threads at once must leave the run as one thread does.
    let text = r#"
topology = "TOPOLOGY"
duration_s = 100
seed = 7
[generate]
kind = "regions"
nodes_per_region = 4
chords = 1
gateways = 2
[links]
jitter_ms = 1.0
[workload]
start_s = 5
[workload.generate]
streams = 6
edges_per_stream = 20
segment_ms = 1000
bitrate_kbps = 1000
[random_faults]
link_failures = 6
node_crashes = 3
repair_s = 8
"#;
    let path = scenario("threads", text);
    let runs: Vec<String> =
        [1, 2, 3].into_iter().map(|threads| run_file(&path, None, threads, None, None).unwrap().to_json()).collect();
    let one: serde_json::Value = serde_json::from_str(&runs[0]).unwrap();
    // Each failure and its repair, and some of them cut streams off for a while.
    let faults = one["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 18, "{faults:?}");
    assert!(faults.iter().any(|f| f["lost"].as_u64() > Some(0)), "{faults:?}");
    assert_eq!(runs[1], runs[0], "two threads differ from one");
    assert_eq!(runs[2], runs[0], "three threads differ from one");
}
