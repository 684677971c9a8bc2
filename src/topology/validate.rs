//! Reading a topology file and checking it as a whole.
//!
//! Fields are read one by one (see `check`), so that a bad value in one entry does not hide problems in the
//! others; then the file is checked across entries: unique ids, regions and addresses, links between known
//! nodes, at least one origin, and a path over links from every node to every origin. Each problem names
//! the field it is about by its position in the file (`nodes[2].mesh`).

use std::collections::{HashMap, HashSet};

use super::check::{CheckErrors, TableReader};
use super::{Address, ControlSpec, LinkSpec, NodeSpec, Region, Role, Topology};
use crate::id::NodeId;

/// The longest one-way latency a link may have: a minute, beyond any real link (a larger figure is a typo,
/// and would overflow the microsecond costs routing works in).
const MAX_LATENCY_MS: f64 = 60_000.0;

/// A region as read, with the fields that could be read.
struct RegionEntry {
    index: usize,
    name: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

/// A node as read.
struct NodeEntry {
    index: usize,
    id: Option<NodeId>,
    region: Option<String>,
    roles: Option<Vec<Role>>,
    mesh: Option<Address>,
    http: Option<Address>,
}

/// A link as read.
struct LinkEntry {
    index: usize,
    a: Option<NodeId>,
    b: Option<NodeId>,
    latency_ms: Option<f64>,
}

impl RegionEntry {
    fn complete(self) -> Option<Region> {
        Some(Region { name: self.name?, lat: self.lat?, lon: self.lon? })
    }
}

impl NodeEntry {
    fn complete(self) -> Option<NodeSpec> {
        Some(NodeSpec { id: self.id?, region: self.region?, roles: self.roles?, mesh: self.mesh?, http: self.http? })
    }
}

impl LinkEntry {
    fn complete(self) -> Option<LinkSpec> {
        Some(LinkSpec { a: self.a?, b: self.b?, latency_ms: self.latency_ms? })
    }
}

pub(super) fn parse(text: &str, source: &str) -> Result<Topology, CheckErrors> {
    let mut errors = CheckErrors::new(source);
    let Some(table) = super::parse_table(text, &mut errors) else {
        return Err(errors);
    };
    let mut root = TableReader::new(&table, "");

    let mut regions = Vec::new();
    for (index, mut r) in root.tables("regions", &mut errors) {
        regions.push(RegionEntry {
            index,
            name: r.required("name", "the region's name", &mut errors),
            lat: r.required("lat", "latitude in degrees", &mut errors),
            lon: r.required("lon", "longitude in degrees", &mut errors),
        });
        r.finish(&mut errors);
    }

    let mut nodes = Vec::new();
    for (index, mut r) in root.tables("nodes", &mut errors) {
        nodes.push(NodeEntry {
            index,
            id: r.required("id", "the node's id", &mut errors),
            region: r.required("region", "the name of a [[regions]] entry", &mut errors),
            roles: read_roles(&mut r, &mut errors),
            mesh: r.required("mesh", "the QUIC address, host:port", &mut errors),
            http: r.required("http", "the HTTP address, host:port", &mut errors),
        });
        r.finish(&mut errors);
    }

    let mut links = Vec::new();
    for (index, mut r) in root.tables("links", &mut errors) {
        links.push(LinkEntry {
            index,
            a: r.required("a", "a node id", &mut errors),
            b: r.required("b", "a node id", &mut errors),
            latency_ms: r.required("latency_ms", "one-way latency in milliseconds", &mut errors),
        });
        r.finish(&mut errors);
    }
    let mut controls = Vec::new();
    for (index, mut r) in root.tables("controls", &mut errors) {
        let id: Option<NodeId> = r.required("id", "the replica's id", &mut errors);
        let mesh: Option<Address> = r.required("mesh", "the QUIC address nodes report to, host:port", &mut errors);
        let http: Option<Address> = r.required("http", "the operator API's HTTP address, host:port", &mut errors);
        r.finish(&mut errors);
        if let Some(id) = &id {
            if nodes.iter().any(|n| n.id.as_ref() == Some(id)) {
                errors.push(format!("controls[{index}].id"), format!("\"{id}\" is also a node id"));
            }
        }
        for (field, addr) in [("mesh", &mesh), ("http", &http)] {
            let taken = addr.as_ref().is_some_and(|a| {
                nodes.iter().any(|n| {
                    [&n.mesh, &n.http].iter().any(|x| x.as_ref().map(Address::canonical) == Some(a.canonical()))
                }) || controls
                    .iter()
                    .any(|c: &ControlSpec| c.mesh.canonical() == a.canonical() || c.http.canonical() == a.canonical())
            });
            if taken {
                errors.push(
                    format!("controls[{index}].{field}"),
                    format!("address {} is already used", addr.as_ref().unwrap()),
                );
            }
        }
        if let (Some(id), Some(mesh), Some(http)) = (id, mesh, http) {
            if controls.iter().any(|c| c.id == id) {
                errors.push(format!("controls[{index}].id"), format!("duplicate control id \"{id}\""));
            }
            controls.push(ControlSpec { id, mesh, http });
        }
    }
    root.finish(&mut errors);

    check_regions(&regions, &mut errors);
    check_nodes(&nodes, &regions, &mut errors);
    check_links(&links, &nodes, &mut errors);
    check_origins(&nodes, &links, &mut errors);

    errors.finish(|| Topology {
        regions: regions.into_iter().filter_map(RegionEntry::complete).collect(),
        nodes: nodes.into_iter().filter_map(NodeEntry::complete).collect(),
        links: links.into_iter().filter_map(LinkEntry::complete).collect(),
        controls,
    })
}

/// `roles` element by element, so that each bad role is named by its index.
fn read_roles(r: &mut TableReader<'_>, errors: &mut CheckErrors) -> Option<Vec<Role>> {
    let field = r.path_of("roles");
    let Some(value) = r.raw("roles") else {
        errors.push(field, "missing (one or more of \"origin\", \"relay\", \"edge\")");
        return None;
    };
    let Some(items) = value.as_array() else {
        errors.push(field, format!("expected an array of roles, found {}", value.type_str()));
        return None;
    };
    if items.is_empty() {
        errors.push(field, "no roles (expected one or more of \"origin\", \"relay\", \"edge\")");
        return None;
    }
    let mut roles = Vec::with_capacity(items.len());
    let mut ok = true;
    for (k, item) in items.iter().enumerate() {
        let role = match item.as_str() {
            Some(text) => item
                .clone()
                .try_into::<Role>()
                .map_err(|_| format!("unknown role {text:?} (expected \"origin\", \"relay\" or \"edge\")")),
            None => Err(format!("expected a role name, found {}", item.type_str())),
        };
        match role {
            Ok(role) if roles.contains(&role) => {
                errors.push(format!("{field}[{k}]"), format!("role \"{role}\" is listed twice"));
                ok = false;
            }
            Ok(role) => roles.push(role),
            Err(message) => {
                errors.push(format!("{field}[{k}]"), message);
                ok = false;
            }
        }
    }
    ok.then_some(roles)
}

fn check_regions(regions: &[RegionEntry], errors: &mut CheckErrors) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in regions {
        if let Some(name) = &r.name {
            let good =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !good {
                errors.push(
                    format!("regions[{}].name", r.index),
                    format!("region name {name:?} must be non-empty and use only [A-Za-z0-9._-]"),
                );
            } else if let Some(first) = seen.get(name.as_str()) {
                errors.push(
                    format!("regions[{}].name", r.index),
                    format!("duplicate region {name:?} (also regions[{first}])"),
                );
            } else {
                seen.insert(name, r.index);
            }
        }
        for (field, value, limit) in [("lat", r.lat, 90.0), ("lon", r.lon, 180.0)] {
            if let Some(v) = value {
                if !(v.is_finite() && (-limit..=limit).contains(&v)) {
                    errors.push(
                        format!("regions[{}].{field}", r.index),
                        format!("{v} is out of range (expected -{limit} to {limit} degrees)"),
                    );
                }
            }
        }
    }
}

fn check_nodes(nodes: &[NodeEntry], regions: &[RegionEntry], errors: &mut CheckErrors) {
    let region_names: HashSet<&str> = regions.iter().filter_map(|r| r.name.as_deref()).collect();
    let mut ids: HashMap<&NodeId, usize> = HashMap::new();
    let mut mesh_seen: HashMap<String, usize> = HashMap::new();
    let mut http_seen: HashMap<String, usize> = HashMap::new();
    for n in nodes {
        let i = n.index;
        if let Some(id) = &n.id {
            if let Some(first) = ids.get(id) {
                errors.push(format!("nodes[{i}].id"), format!("duplicate node id \"{id}\" (also nodes[{first}].id)"));
            } else {
                ids.insert(id, i);
            }
        }
        if let Some(region) = &n.region {
            if !region_names.contains(region.as_str()) {
                errors.push(
                    format!("nodes[{i}].region"),
                    format!("unknown region {region:?} (no [[regions]] entry has that name)"),
                );
            }
        }
        for (field, addr, seen) in [("mesh", &n.mesh, &mut mesh_seen), ("http", &n.http, &mut http_seen)] {
            let Some(addr) = addr else { continue };
            if addr.ip().is_some_and(|ip| ip.is_unspecified()) {
                errors.push(
                    format!("nodes[{i}].{field}"),
                    format!(
                        "{addr} is an unspecified address that other nodes cannot connect to \
                         (to bind to all interfaces, set {field}_listen in the node config)"
                    ),
                );
            }
            match seen.get(&addr.canonical()) {
                Some(first) => errors.push(
                    format!("nodes[{i}].{field}"),
                    format!("duplicate {field} address {addr} (also nodes[{first}].{field})"),
                ),
                None => {
                    seen.insert(addr.canonical(), i);
                }
            }
        }
    }
}

fn check_links(links: &[LinkEntry], nodes: &[NodeEntry], errors: &mut CheckErrors) {
    let known: HashSet<&NodeId> = nodes.iter().filter_map(|n| n.id.as_ref()).collect();
    let mut pairs: HashMap<(&NodeId, &NodeId), usize> = HashMap::new();
    for l in links {
        let i = l.index;
        for (field, end) in [("a", &l.a), ("b", &l.b)] {
            if let Some(id) = end {
                if !known.contains(id) {
                    errors.push(format!("links[{i}].{field}"), format!("unknown node \"{id}\""));
                }
            }
        }
        if let (Some(a), Some(b)) = (&l.a, &l.b) {
            if a == b {
                errors.push(format!("links[{i}].b"), format!("self-link: links node \"{a}\" to itself"));
            } else {
                let key = if a < b { (a, b) } else { (b, a) };
                match pairs.get(&key) {
                    Some(first) => errors.push(
                        format!("links[{i}]"),
                        format!(
                            "duplicate link between \"{a}\" and \"{b}\" (also links[{first}]; links are undirected)"
                        ),
                    ),
                    None => {
                        pairs.insert(key, i);
                    }
                }
            }
        }
        if let Some(ms) = l.latency_ms {
            if !(ms > 0.0 && ms <= MAX_LATENCY_MS) {
                errors.push(
                    format!("links[{i}].latency_ms"),
                    format!("{ms} is not a latency (expected milliseconds above 0, at most {MAX_LATENCY_MS})"),
                );
            }
        }
    }
}

/// At least one origin, and a path over links from every node to every origin: routes are computed from
/// every node toward every origin, so a node cut off from one could not carry that origin's streams.
fn check_origins(nodes: &[NodeEntry], links: &[LinkEntry], errors: &mut CheckErrors) {
    if nodes.is_empty() {
        if !errors.mentions("nodes") {
            errors.push("nodes", "no nodes (a mesh needs at least one [[nodes]] entry with the origin role)");
        }
        return;
    }
    let is_origin = |n: &NodeEntry| n.roles.as_ref().is_some_and(|r| r.contains(&Role::Origin));
    if !nodes.iter().any(is_origin) {
        // A node whose roles could not be read may have been meant as the origin; its own error says so.
        if nodes.iter().all(|n| n.roles.is_some()) {
            errors.push("nodes", "no node has the origin role (streams enter the mesh at origins)");
        }
        return;
    }

    // Union-find over the first node with each valid id.
    let mut slot: HashMap<&NodeId, usize> = HashMap::new();
    for n in nodes {
        if let Some(id) = &n.id {
            let next = slot.len();
            slot.entry(id).or_insert(next);
        }
    }
    let mut parent: Vec<usize> = (0..slot.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for l in links {
        if let (Some(a), Some(b)) = (l.a.as_ref().and_then(|a| slot.get(a)), l.b.as_ref().and_then(|b| slot.get(b))) {
            let (ra, rb) = (root(&mut parent, *a), root(&mut parent, *b));
            parent[ra] = rb;
        }
    }

    let mut origins: Vec<(&NodeId, usize)> =
        nodes.iter().filter(|n| is_origin(n)).filter_map(|n| Some((n.id.as_ref()?, slot[n.id.as_ref()?]))).collect();
    let mut listed = HashSet::new();
    origins.retain(|(_, s)| listed.insert(*s));
    let mut reported = HashSet::new();
    for n in nodes {
        let Some(id) = &n.id else { continue };
        if !reported.insert(id) {
            continue;
        }
        let me = root(&mut parent, slot[id]);
        let cut_off: Vec<String> =
            origins.iter().filter(|(_, o)| root(&mut parent, *o) != me).map(|(o, _)| format!("\"{o}\"")).collect();
        if cut_off.is_empty() {
            continue;
        }
        let shown = cut_off.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        let more = if cut_off.len() > 3 { format!(" and {} more", cut_off.len() - 3) } else { String::new() };
        let noun = if cut_off.len() == 1 { "origin" } else { "origins" };
        errors.push(
            format!("nodes[{}].id", n.index),
            format!("unreachable node \"{id}\": no path over links to {noun} {shown}{more}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::Topology;
    use super::*;

    const SMALL: &str = r#"
        [[regions]]
        name = "r"
        lat = 1
        lon = 2

        [[nodes]]
        id = "o"
        region = "r"
        roles = ["origin"]
        mesh = "127.0.0.1:1"
        http = "127.0.0.1:2"

        [[nodes]]
        id = "e"
        region = "r"
        roles = ["edge", "relay"]
        mesh = "127.0.0.1:3"
        http = "127.0.0.1:4"

        [[links]]
        a = "o"
        b = "e"
        latency_ms = 5
    "#;

    #[test]
    fn reads_integers_as_floats_and_matches_plain_serde() {
        let t = Topology::parse(SMALL, "small").unwrap();
        assert_eq!(t.regions[0].lat, 1.0);
        assert_eq!(t.links[0].latency_ms, 5.0);
        assert_eq!(t.nodes[1].roles, vec![Role::Edge, Role::Relay]);
        let plain: Topology = toml::from_str(SMALL).unwrap();
        assert_eq!(plain, t);
    }

    #[test]
    fn neighbours_are_found_from_either_end() {
        let t = Topology::parse(SMALL, "small").unwrap();
        let o = NodeId::new("o").unwrap();
        let e = NodeId::new("e").unwrap();
        let from_o: Vec<_> = t.neighbours(&o).map(|(n, ms)| (n.id.as_str(), ms)).collect();
        let from_e: Vec<_> = t.neighbours(&e).map(|(n, ms)| (n.id.as_str(), ms)).collect();
        assert_eq!(from_o, vec![("e", 5.0)]);
        assert_eq!(from_e, vec![("o", 5.0)]);
        assert!(t.node(&e).unwrap().has_role(Role::Relay));
        assert!(!t.node(&e).unwrap().has_role(Role::Origin));
    }

    #[test]
    fn a_node_cut_off_from_one_of_two_origins_is_reported() {
        let text = SMALL.to_owned()
            + r#"
            [[nodes]]
            id = "o2"
            region = "r"
            roles = ["origin"]
            mesh = "127.0.0.1:5"
            http = "127.0.0.1:6"
        "#;
        let e = Topology::parse(&text, "t").unwrap_err();
        // o2 cannot reach o; o and e cannot reach o2.
        assert!(e.mentions("nodes[0].id") && e.mentions("nodes[1].id") && e.mentions("nodes[2].id"), "{e}");
        assert_eq!(e.errors.len(), 3, "{e}");
    }

    #[test]
    fn a_role_listed_twice_is_reported() {
        let text = SMALL.replace(r#"["edge", "relay"]"#, r#"["edge", "edge"]"#);
        let e = Topology::parse(&text, "t").unwrap_err();
        assert!(e.mentions("nodes[1].roles[1]"), "{e}");
    }
}
