//! Topology files as an operator sees them: each kind of mistake is reported naming its field, all
//! mistakes in a file are reported at once, and the committed topologies load.

use std::path::{Path, PathBuf};

use lightpath::id::NodeId;
use lightpath::topology::{check_topology, Address, CheckErrors, Role, Topology};

/// A valid three-node mesh; tests break one line of it at a time. Each replaced line is unique.
const BASE: &str = r#"
[[regions]]
name = "eu"
lat = 53.3
lon = -6.3

[[regions]]
name = "us"
lat = 39.0
lon = -77.5

[[nodes]]
id = "origin-eu"
region = "eu"
roles = ["origin"]
mesh = "127.0.0.1:7101"
http = "127.0.0.1:8101"

[[nodes]]
id = "relay-us"
region = "us"
roles = ["relay"]
mesh = "127.0.0.1:7102"
http = "127.0.0.1:8102"

[[nodes]]
id = "edge-us"
region = "us"
roles = ["edge"]
mesh = "127.0.0.1:7103"
http = "127.0.0.1:8103"

[[links]]
a = "origin-eu"
b = "relay-us"
latency_ms = 38.0

[[links]]
a = "relay-us"
b = "edge-us"
latency_ms = 2.0
"#;

fn broken(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} must occur once in BASE");
    BASE.replacen(from, to, 1)
}

fn errors(text: &str) -> CheckErrors {
    match Topology::parse(text, "mesh.toml") {
        Ok(t) => panic!("accepted: {t:?}"),
        Err(e) => e,
    }
}

/// The report has a problem for `field` whose message contains `words`, and its display shows it as
/// `mesh.toml: FIELD: ...`.
#[track_caller]
fn assert_reports(e: &CheckErrors, field: &str, words: &str) {
    assert!(
        e.errors.iter().any(|x| x.field == field && x.message.contains(words)),
        "no {field:?} problem containing {words:?} in:\n{e}"
    );
    assert!(e.to_string().lines().any(|l| l.starts_with(&format!("mesh.toml: {field}: "))), "{e}");
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn base_is_valid() {
    let t = Topology::parse(BASE, "mesh.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.summary(), "3 nodes, 2 links, 2 regions");
}

#[test]
fn syntax_error_gives_line_and_column() {
    let e = errors(&broken("latency_ms = 2.0", "latency_ms = = 2.0"));
    assert_eq!(e.errors.len(), 1, "{e}");
    // `latency_ms = 2.0` is the last line but one of BASE (line 41 counting the leading newline).
    let line = BASE.lines().position(|l| l == "latency_ms = 2.0").unwrap() + 1;
    assert!(e.errors[0].field.starts_with(&format!("line {line}, column ")), "{e}");
    assert!(e.errors[0].message.contains("TOML syntax error"), "{e}");
}

#[test]
fn every_unknown_key_is_reported() {
    let text = broken("mesh = \"127.0.0.1:7102\"", "mseh = \"127.0.0.1:7102\"")
        .replacen("latency_ms = 38.0", "latency_ms = 38.0\nlatency = 38", 1)
        .replacen("\n[[regions]]", "version = 2\n\n[[regions]]", 1);
    let e = errors(&text);
    assert_reports(&e, "nodes[1].mseh", "did you mean `mesh`");
    assert_reports(&e, "links[0].latency", "unknown key");
    assert_reports(&e, "version", "unknown key");
    // And the key it replaced is missing.
    assert_reports(&e, "nodes[1].mesh", "missing");
}

#[test]
fn missing_field_is_named() {
    let e = errors(&broken("http = \"127.0.0.1:8101\"", ""));
    assert_reports(&e, "nodes[0].http", "missing");
}

#[test]
fn bad_node_id() {
    let e = errors(&broken("id = \"relay-us\"", "id = \"relay us\""));
    assert_reports(&e, "nodes[1].id", "relay us");
}

#[test]
fn duplicate_node_id() {
    let e = errors(&broken("id = \"edge-us\"", "id = \"relay-us\""));
    assert_reports(&e, "nodes[2].id", "duplicate node id \"relay-us\" (also nodes[1].id)");
}

#[test]
fn duplicate_region() {
    let e = errors(&broken("name = \"us\"", "name = \"eu\""));
    assert_reports(&e, "regions[1].name", "duplicate region \"eu\"");
}

#[test]
fn node_in_unknown_region() {
    let e = errors(&broken("region = \"eu\"", "region = \"mars\""));
    assert_reports(&e, "nodes[0].region", "unknown region \"mars\"");
}

#[test]
fn empty_roles() {
    let e = errors(&broken("roles = [\"relay\"]", "roles = []"));
    assert_reports(&e, "nodes[1].roles", "no roles");
}

#[test]
fn unknown_role() {
    let e = errors(&broken("roles = [\"edge\"]", "roles = [\"edge\", \"director\"]"));
    assert_reports(&e, "nodes[2].roles[1]", "unknown role \"director\"");
}

#[test]
fn address_without_port() {
    let e = errors(&broken("mesh = \"127.0.0.1:7102\"", "mesh = \"relay.example.net\""));
    assert_reports(&e, "nodes[1].mesh", "no port");
}

#[test]
fn address_with_port_zero() {
    let e = errors(&broken("http = \"127.0.0.1:8103\"", "http = \"127.0.0.1:0\""));
    assert_reports(&e, "nodes[2].http", "port 0");
}

#[test]
fn address_with_bad_host() {
    let e = errors(&broken("mesh = \"127.0.0.1:7101\"", "mesh = \"bad_host!:7101\""));
    assert_reports(&e, "nodes[0].mesh", "bad host");
    let e = errors(&broken("mesh = \"127.0.0.1:7101\"", "mesh = \"::1:7101\""));
    assert_reports(&e, "nodes[0].mesh", "brackets");
}

#[test]
fn unspecified_address_cannot_be_connected_to() {
    let e = errors(&broken("mesh = \"127.0.0.1:7101\"", "mesh = \"0.0.0.0:7101\""));
    assert_reports(&e, "nodes[0].mesh", "mesh_listen");
}

#[test]
fn duplicate_mesh_address() {
    let e = errors(&broken("mesh = \"127.0.0.1:7103\"", "mesh = \"127.0.0.1:7101\""));
    assert_reports(&e, "nodes[2].mesh", "also nodes[0].mesh");
}

#[test]
fn duplicate_http_address_in_another_spelling() {
    let text = broken("http = \"127.0.0.1:8101\"", "http = \"[::1]:8101\"").replacen(
        "http = \"127.0.0.1:8102\"",
        "http = \"[0:0::1]:8101\"",
        1,
    );
    let e = errors(&text);
    assert_reports(&e, "nodes[1].http", "also nodes[0].http");
}

#[test]
fn ipv6_and_host_names_are_accepted() {
    let text = broken("mesh = \"127.0.0.1:7101\"", "mesh = \"[::1]:7101\"").replacen(
        "http = \"127.0.0.1:8101\"",
        "http = \"origin.example.net:443\"",
        1,
    );
    let t = Topology::parse(&text, "mesh.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.nodes[0].mesh, "[::1]:7101".parse::<Address>().unwrap());
    assert_eq!(t.nodes[0].http.host, "origin.example.net");
}

#[test]
fn link_to_unknown_node() {
    let e = errors(&broken("b = \"edge-us\"", "b = \"edge-xx\""));
    assert_reports(&e, "links[1].b", "unknown node \"edge-xx\"");
}

#[test]
fn self_link() {
    let e = errors(&format!("{BASE}\n[[links]]\na = \"edge-us\"\nb = \"edge-us\"\nlatency_ms = 1.0\n"));
    assert_reports(&e, "links[2].b", "itself");
}

#[test]
fn duplicate_link_in_either_direction() {
    let e = errors(&format!("{BASE}\n[[links]]\na = \"edge-us\"\nb = \"relay-us\"\nlatency_ms = 3.0\n"));
    assert_reports(&e, "links[2]", "duplicate link");
    assert!(e.to_string().contains("also links[1]"), "{e}");
}

#[test]
fn latency_must_be_finite_and_positive() {
    for bad in ["0.0", "-1.0", "nan", "inf"] {
        let e = errors(&broken("latency_ms = 38.0", &format!("latency_ms = {bad}")));
        assert_reports(&e, "links[0].latency_ms", "not a latency");
    }
    let e = errors(&broken("latency_ms = 38.0", "latency_ms = \"38\""));
    assert_reports(&e, "links[0].latency_ms", "string");
}

#[test]
fn coordinates_out_of_range() {
    let e = errors(&broken("lat = 53.3", "lat = 91.0").replacen("lon = -77.5", "lon = -181", 1));
    assert_reports(&e, "regions[0].lat", "out of range");
    assert_reports(&e, "regions[1].lon", "out of range");
}

#[test]
fn no_origin_node() {
    let e = errors(&broken("roles = [\"origin\"]", "roles = [\"relay\"]"));
    assert_reports(&e, "nodes", "no node has the origin role");
}

#[test]
fn empty_file_has_no_nodes() {
    let e = errors("");
    assert_reports(&e, "nodes", "no nodes");
}

#[test]
fn unreachable_node_is_named() {
    let text = format!(
        "{BASE}\n[[nodes]]\nid = \"edge-ap\"\nregion = \"us\"\nroles = [\"edge\"]\n\
         mesh = \"127.0.0.1:7104\"\nhttp = \"127.0.0.1:8104\"\n"
    );
    let e = errors(&text);
    assert_reports(&e, "nodes[3].id", "unreachable node \"edge-ap\"");
    assert!(e.to_string().contains("origin \"origin-eu\""), "{e}");
    assert_eq!(e.errors.len(), 1, "{e}");
}

#[test]
fn several_problems_are_reported_at_once() {
    let text = broken("id = \"relay-us\"", "id = \"relay us\"")
        .replacen("mesh = \"127.0.0.1:7103\"", "mesh = \"127.0.0.1\"", 1)
        .replacen("latency_ms = 38.0", "latency_ms = -5.0", 1)
        .replacen("region = \"eu\"", "region = \"mars\"", 1)
        .replacen("lat = 53.3", "lat = 100.0\ncolour = \"blue\"", 1);
    let e = errors(&text);
    for field in ["nodes[1].id", "nodes[2].mesh", "links[0].latency_ms", "nodes[0].region", "regions[0].lat"] {
        assert!(e.mentions(field), "{field} not reported in:\n{e}");
    }
    assert!(e.mentions("regions[0].colour"), "{e}");
    assert_eq!(e.to_string().lines().count(), e.errors.len());
    assert!(e.to_string().lines().all(|l| l.starts_with("mesh.toml: ")), "{e}");
}

#[test]
fn missing_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let e = Topology::load(&path).unwrap_err();
    assert_eq!(e.file, path.display().to_string());
    assert!(e.to_string().starts_with(&format!("{}: cannot read the file", path.display())), "{e}");
}

#[test]
fn load_reads_a_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, broken("latency_ms = 2.0", "latency_ms = 0")).unwrap();
    let e = Topology::load(&path).unwrap_err();
    assert_eq!(
        e.to_string().lines().next().unwrap(),
        format!(
            "{}: links[1].latency_ms: 0 is not a latency (expected milliseconds above 0, at most 60000)",
            path.display()
        )
    );
    std::fs::write(&path, BASE).unwrap();
    assert_eq!(check_topology(&path).unwrap(), "ok: 3 nodes, 2 links, 2 regions");
}

#[test]
fn demo_topology_loads() {
    let path = repo("topology/demo.toml");
    assert_eq!(check_topology(&path).unwrap(), "ok: 4 nodes, 3 links, 3 regions");
    let t = Topology::load(&path).unwrap();
    let id = |s: &str| NodeId::new(s).unwrap();
    let origins: Vec<&str> = t.origins().map(|n| n.id.as_str()).collect();
    assert_eq!(origins, ["origin-eu"]);
    let relay = id("relay-us");
    let mut around: Vec<(&str, f64)> = t.neighbours(&relay).map(|(n, ms)| (n.id.as_str(), ms)).collect();
    around.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(around, [("edge-ap", 105.0), ("edge-us", 2.0), ("origin-eu", 38.0)]);
    // Edges reach the origin only through the relay.
    let edge_ap = id("edge-ap");
    let from_ap: Vec<&str> = t.neighbours(&edge_ap).map(|(n, _)| n.id.as_str()).collect();
    assert_eq!(from_ap, ["relay-us"]);
    let edge_us = t.node(&id("edge-us")).unwrap();
    assert_eq!(edge_us.region, "us-east");
    assert!(edge_us.has_role(Role::Edge) && !edge_us.has_role(Role::Origin));
    assert_eq!(edge_us.mesh.socket_addr(), Some("127.0.0.1:47103".parse().unwrap()));
    assert_eq!(edge_us.http.to_string(), "127.0.0.1:48103");
}

#[test]
fn world_topology_loads() {
    let summary = check_topology(&repo("topology/world.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary, "ok: 51 nodes, 1226 links, 51 regions");
}

#[test]
fn a_topology_serializes_back_to_an_equal_one() {
    let t = Topology::load(&repo("topology/demo.toml")).unwrap();
    let text = toml::to_string(&t).unwrap();
    assert_eq!(Topology::parse(&text, "round-trip").unwrap_or_else(|e| panic!("{e}\n{text}")), t);
}
