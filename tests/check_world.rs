//! `topology/world.toml` is generated from the measured Azure inter-region latency matrix copied into
//! `topology/data/azure-latency/` (sources in `topology/NOTICE`). This test rebuilds the file's text from
//! that data and fails if the committed file differs, so the file and its data cannot drift apart.
//! `LIGHTPATH_REGENERATE_WORLD=1 cargo test --test check_world` rewrites the file instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lightpath::id::NodeId;
use lightpath::topology::{Role, Topology};

/// Regions that also get the origin role: large hubs on three continents.
const ORIGINS: &[&str] = &["eastus", "westus2", "westeurope", "southeastasia"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Coordinates {
    lat: f64,
    lon: f64,
    display_name: String,
}

/// The text of `topology/world.toml`, from the csv and json copies.
fn generate() -> String {
    let data = root().join("topology/data/azure-latency");
    let csv = std::fs::read_to_string(data.join("latency.csv")).expect("latency.csv");
    let json = std::fs::read_to_string(data.join("region-coordinates.json")).expect("region-coordinates.json");
    let coords: BTreeMap<String, Coordinates> = serde_json::from_str(&json).expect("region-coordinates.json");
    let key_of: BTreeMap<&str, &str> = coords.iter().map(|(k, c)| (c.display_name.as_str(), k.as_str())).collect();
    let key = |display: &str| -> String {
        (*key_of.get(display).unwrap_or_else(|| panic!("{display:?} is not in region-coordinates.json"))).to_owned()
    };

    // Directed round-trip times, source -> destination, by region key.
    let mut lines = csv.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().expect("header row").split(',').collect();
    assert_eq!(header[0], "Source");
    let mut rtt: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut regions: BTreeSet<String> = header[1..].iter().map(|d| key(d)).collect();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "row {:?} has {} cells", cells[0], cells.len());
        let source = key(cells[0]);
        regions.insert(source.clone());
        for (dest, cell) in header[1..].iter().zip(&cells[1..]) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            let ms: f64 = cell.parse().unwrap_or_else(|_| panic!("{cell:?} is not a number"));
            let dest = key(dest);
            if dest != source {
                rtt.insert((source.clone(), dest), ms);
            }
        }
    }

    // One undirected link per pair with a figure: half the round trip, averaging both directions.
    let mut links: BTreeMap<(String, String), (f64, String)> = BTreeMap::new();
    for ((a, b), ms) in &rtt {
        let pair = if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
        if links.contains_key(&pair) {
            continue;
        }
        let back = rtt.get(&(b.clone(), a.clone()));
        let (avg, note) = match back {
            Some(back) if back != ms => ((ms + back) / 2.0, format!("rtt {ms} / {back} ms")),
            Some(_) => (*ms, format!("rtt {ms} ms")),
            None => (*ms, format!("rtt {ms} ms, {a} to {b} only")),
        };
        links.insert(pair, (avg / 2.0, note));
    }

    let mut out = String::new();
    out.push_str(
        "# The world mesh: one node per Azure region, linked by measured latency.\n\
         #\n\
         # Generated from topology/data/azure-latency/ (see topology/NOTICE for the sources and licences) by\n\
         # tests/check_world.rs; do not edit by hand. To rebuild after changing the data or the generator:\n\
         #   LIGHTPATH_REGENERATE_WORLD=1 cargo test --test check_world\n\
         #\n\
         # Regions are named by Azure's lower-case region names, with their coordinates. Every node is a relay\n\
         # and an edge; a few hubs are origins too. Addresses are placeholders under example.net.\n\
         # latency_ms is the one-way latency: half the monthly median round-trip time, the average of both\n\
         # directions where both were measured. Pairs without a figure have no link.\n\
         #\n\
         # The figures are a private cloud backbone's: few region pairs have a faster detour through a third\n\
         # region, unlike the public Internet.\n\n",
    );

    out.push_str("regions = [\n");
    for r in &regions {
        let c = &coords[r];
        writeln!(out, "  {{ name = \"{r}\", lat = {:?}, lon = {:?} }}, # {}", c.lat, c.lon, c.display_name).unwrap();
    }
    out.push_str("]\n\nnodes = [\n");
    for r in &regions {
        let roles = if ORIGINS.contains(&r.as_str()) { r#""origin", "relay", "edge""# } else { r#""relay", "edge""# };
        writeln!(
            out,
            "  {{ id = \"{r}\", region = \"{r}\", roles = [{roles}], mesh = \"{r}.mesh.example.net:4433\", \
             http = \"{r}.example.net:443\" }},"
        )
        .unwrap();
    }
    out.push_str("]\n\nlinks = [\n");
    for ((a, b), (ms, note)) in &links {
        writeln!(out, "  {{ a = \"{a}\", b = \"{b}\", latency_ms = {ms:?} }}, # {note}").unwrap();
    }
    out.push_str("]\n");
    out
}

/// The path of `topology/world.toml`, rewritten first (once per run) when `LIGHTPATH_REGENERATE_WORLD=1`.
fn world_path() -> PathBuf {
    static REGENERATE: std::sync::Once = std::sync::Once::new();
    let path = root().join("topology/world.toml");
    REGENERATE.call_once(|| {
        if std::env::var_os("LIGHTPATH_REGENERATE_WORLD").is_some_and(|v| v == "1") {
            std::fs::write(&path, generate()).expect("writing topology/world.toml");
        }
    });
    path
}

#[test]
fn world_toml_is_generated_from_the_committed_data() {
    let path = world_path();
    let text = generate();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "topology/world.toml differs from what its data gives; \
         rebuild it with LIGHTPATH_REGENERATE_WORLD=1 cargo test --test check_world"
    );
}

#[test]
fn world_toml_loads_with_the_measured_figures() {
    let t = Topology::load(&world_path()).unwrap_or_else(|e| panic!("{e}"));
    // 50 sources and 50 destinations in the matrix; 49 regions are both.
    assert_eq!(t.regions.len(), 51);
    assert_eq!(t.nodes.len(), 51);
    assert_eq!(t.links.len(), 1226);
    let origins: Vec<&str> = t.origins().map(|n| n.id.as_str()).collect();
    assert_eq!(origins, ["eastus", "southeastasia", "westeurope", "westus2"]);
    assert!(t.nodes.iter().all(|n| n.has_role(Role::Relay) && n.has_role(Role::Edge)));

    let latency = |a: &str, b: &str| {
        let a = NodeId::new(a).unwrap();
        let found = t.neighbours(&a).find(|(n, _)| n.id.as_str() == b).map(|(_, ms)| ms);
        found
    };
    // latency.csv: East US -> West Europe 83, West Europe -> East US 85.
    assert_eq!(latency("eastus", "westeurope"), Some(42.0));
    assert_eq!(latency("westeurope", "eastus"), Some(42.0));
    // Central India -> Germany North 136, back 142.
    assert_eq!(latency("germanynorth", "centralindia"), Some(69.5));
    // Indonesia Central is only a source, West India only a destination: one direction each.
    assert_eq!(latency("eastus", "indonesiacentral"), Some(119.0));
    assert_eq!(latency("eastus", "westindia"), Some(90.5));
    // Jio India West has few figures; it has no figure with West Europe.
    assert_eq!(latency("jioindiawest", "westeurope"), None);

    let dublin = t.region("northeurope").unwrap();
    assert_eq!((dublin.lat, dublin.lon), (53.3478, -6.2597));
    let eastus = t.node(&NodeId::new("eastus").unwrap()).unwrap();
    assert_eq!(eastus.mesh.to_string(), "eastus.mesh.example.net:4433");
    assert_eq!(eastus.mesh.socket_addr(), None);
}
