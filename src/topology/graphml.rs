//! Research topologies in: GraphML files in the style of the Internet Topology Zoo (nodes that carry
//! `Latitude` and `Longitude` data, undirected edges between them) become lightpath topology files, with
//! every link's latency the great-circle distance between its ends in fibre ([`FIBRE_KM_PER_MS`]) times a
//! stated path inflation, so that engineers can simulate the networks they already study.
//!
//! Pure: text in, text out ([`import`]); `lightpath topology import` reads the file and writes the result,
//! which [`Topology::parse`] checks before it is handed back. Nothing is guessed silently: a node without
//! coordinates, a duplicate id, an edge to an unknown node or a graph in several parts is an error that names
//! the node or edge (with an option to leave the unplaced nodes or the smaller parts out, each one then a
//! warning), and a self-loop or a parallel edge is a warning. Every node becomes a relay and an edge, in a
//! region of its own at its coordinates, with placeholder `*.invalid` addresses: enough for `lightpath sim`
//! and `lightpath check topology`, not for running real nodes.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{great_circle_km, CheckErrors, Topology, FIBRE_KM_PER_MS};

/// Fibre follows roads, railways and coasts: real routes run about 1.2 to 2 times the great circle.
pub const DEFAULT_INFLATION: f64 = 1.5;
/// The shortest link written: two nodes in one city (or at the same coordinates) are still a hop apart.
pub const MIN_LATENCY_MS: f64 = 0.1;
/// A path more than ten times the great circle is a typo, not a route.
const MAX_INFLATION: f64 = 10.0;
/// How many nodes an error or warning about a group of nodes names before it says "and N more".
const NAMED: usize = 5;

/// How to turn a graph into a topology.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// Fibre path length over the great circle, from 1 to 10.
    pub inflation: f64,
    /// The nodes with the origin role, each by GraphML id, label or the id it is given; none: the node with
    /// the most links (the first such in the file).
    pub origins: Vec<String>,
    /// Leave nodes without coordinates out (with their edges), each a warning, instead of refusing the file.
    pub skip_unplaced: bool,
    /// Import only the largest connected part of a graph in several parts, the others a warning.
    pub keep_largest: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { inflation: DEFAULT_INFLATION, origins: Vec::new(), skip_unplaced: false, keep_largest: false }
    }
}

/// One reason a file cannot be imported. Positions are the file's lines.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    /// The text is not well-formed XML (or declares a DTD, which is refused).
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// The XML is not a GraphML document with a graph in it.
    #[error("not GraphML: {0}")]
    NotGraphml(String),
    /// No `<key>` declares node coordinates, so no latency can be computed.
    #[error(
        "no <key> declares node Latitude and Longitude (attr.name \"Latitude\" and \"Longitude\", for nodes): \
         link latencies come from the nodes' coordinates"
    )]
    NoCoordinateKeys,
    /// The inflation option is out of range.
    #[error("inflation {0} is out of range: from 1 (straight fibre along the great circle) to {MAX_INFLATION}")]
    Inflation(f64),
    /// A `<node>` without an `id` attribute.
    #[error("the <node> at line {line} has no id attribute")]
    NodeWithoutId { line: u32 },
    /// Two `<node>`s with the same id.
    #[error("node \"{id}\" at line {line} is a duplicate (first at line {first})")]
    DuplicateNode { id: String, line: u32, first: u32 },
    /// A node lacks a coordinate.
    #[error("node \"{id}\"{label} at line {line} has no {field} (give it one, or leave such nodes out with --skip-unplaced)")]
    Unplaced { id: String, label: String, line: u32, field: &'static str },
    /// A coordinate that is not a number in range.
    #[error("node \"{id}\" at line {line}: {field} {value:?} is not a number of degrees from -{limit} to {limit}")]
    BadCoordinate { id: String, line: u32, field: &'static str, value: String, limit: u32 },
    /// An `<edge>` without a `source` or `target`.
    #[error("the <edge> at line {line} has no {attribute} attribute")]
    EdgeWithoutEnd { line: u32, attribute: &'static str },
    /// An edge names a node the file does not have.
    #[error("the edge {from} - {to} at line {line} names node \"{node}\", which the file does not have")]
    UnknownNode { from: String, to: String, line: u32, node: String },
    /// Some nodes have no path to the others.
    #[error(
        "the graph is not connected: {cut_off} of its {nodes} nodes ({named}) have no path to the largest part; \
         add the missing edges, or import only the largest part with --keep-largest"
    )]
    Disconnected { nodes: usize, cut_off: usize, named: String },
    /// No node to import.
    #[error("the graph has no node with coordinates")]
    Empty,
    /// An origin option that matches no node.
    #[error("origin {0:?} names no node (give a GraphML id, a label, or the id the node is given)")]
    UnknownOrigin(String),
    /// The written topology does not check; a defect of this importer, reported rather than written.
    #[error("the imported topology does not check: {0}")]
    Invalid(String),
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportErrors(pub Vec<ImportError>);

impl std::fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportErrors {}

/// A graph turned into a topology.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The topology file's text, with a header that says how it was made.
    pub text: String,
    /// The same, parsed and checked.
    pub topology: Topology,
    /// What was left out or merged, each naming the node or edge.
    pub warnings: Vec<String>,
}

/// A `<node>` as read.
struct GraphNode {
    gid: String,
    label: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    line: u32,
}

impl GraphNode {
    /// `"id" (label)` for messages.
    fn describe(&self) -> String {
        match &self.label {
            Some(label) => format!("\"{}\" ({})", self.gid, one_line(label)),
            None => format!("\"{}\"", self.gid),
        }
    }
}

/// What a `<key>` declares.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    Latitude,
    Longitude,
    Label,
}

/// Turns the GraphML text `xml` into a topology file; `source` names the file in the header.
pub fn import(xml: &str, source: &str, options: &ImportOptions) -> Result<Imported, ImportErrors> {
    let fail = |e: ImportError| ImportErrors(vec![e]);
    if !(1.0..=MAX_INFLATION).contains(&options.inflation) {
        return Err(fail(ImportError::Inflation(options.inflation)));
    }
    // DTDs are refused (roxmltree's default): a GraphML file has no use for one, and entities are a way to
    // make a small file expand.
    let doc = roxmltree::Document::parse(xml).map_err(|e| fail(ImportError::Xml(e.to_string())))?;
    let line = |n: roxmltree::Node<'_, '_>| doc.text_pos_at(n.range().start).row;
    let root = doc.root_element();
    if root.tag_name().name() != "graphml" {
        return Err(fail(ImportError::NotGraphml(format!(
            "the root element is <{}>, not <graphml>",
            root.tag_name().name()
        ))));
    }
    let mut keys: HashMap<&str, Field> = HashMap::new();
    for key in root.children().filter(|n| n.tag_name().name() == "key") {
        let for_nodes = key.attribute("for").is_none_or(|f| f == "node" || f == "all");
        let field = match key.attribute("attr.name").map(str::to_ascii_lowercase).as_deref() {
            Some("latitude") => Field::Latitude,
            Some("longitude") => Field::Longitude,
            Some("label") => Field::Label,
            _ => continue,
        };
        if let (true, Some(id)) = (for_nodes, key.attribute("id")) {
            keys.insert(id, field);
        }
    }
    if ![Field::Latitude, Field::Longitude].iter().all(|f| keys.values().any(|k| k == f)) {
        return Err(fail(ImportError::NoCoordinateKeys));
    }
    let Some(graph) = root.children().find(|n| n.tag_name().name() == "graph") else {
        return Err(fail(ImportError::NotGraphml("no <graph> element in <graphml>".into())));
    };

    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut nodes: Vec<GraphNode> = Vec::new();
    let mut by_gid: HashMap<String, usize> = HashMap::new();
    for n in graph.children().filter(|n| n.tag_name().name() == "node") {
        let Some(gid) = n.attribute("id") else {
            errors.push(ImportError::NodeWithoutId { line: line(n) });
            continue;
        };
        if let Some(&first) = by_gid.get(gid) {
            errors.push(ImportError::DuplicateNode { id: gid.into(), line: line(n), first: nodes[first].line });
            continue;
        }
        let mut node = GraphNode { gid: gid.into(), label: None, lat: None, lon: None, line: line(n) };
        for data in n.children().filter(|d| d.tag_name().name() == "data") {
            let Some(&field) = data.attribute("key").and_then(|k| keys.get(k)) else { continue };
            let text = data.text().unwrap_or("").trim();
            let (name, limit, slot) = match field {
                Field::Label => {
                    node.label = (!text.is_empty()).then(|| text.to_owned());
                    continue;
                }
                Field::Latitude => ("Latitude", 90, &mut node.lat),
                Field::Longitude => ("Longitude", 180, &mut node.lon),
            };
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() && v.abs() <= f64::from(limit) => *slot = Some(v),
                _ => errors.push(ImportError::BadCoordinate {
                    id: gid.into(),
                    line: node.line,
                    field: name,
                    value: text.into(),
                    limit,
                }),
            }
        }
        by_gid.insert(node.gid.clone(), nodes.len());
        nodes.push(node);
    }

    // Nodes without coordinates: refused, or left out.
    let mut placed = vec![true; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let missing = match (n.lat, n.lon) {
            (Some(_), Some(_)) => continue,
            (None, _) => "Latitude",
            (Some(_), None) => "Longitude",
        };
        placed[i] = false;
        // A coordinate that was there but bad has its own error already.
        if errors.iter().any(|e| matches!(e, ImportError::BadCoordinate { id, .. } if *id == n.gid)) {
            continue;
        }
        if options.skip_unplaced {
            warnings.push(format!(
                "node {} at line {} has no {missing}: left out, with its edges",
                n.describe(),
                n.line
            ));
        } else {
            let label = n.label.as_ref().map_or(String::new(), |l| format!(" ({})", one_line(l)));
            errors.push(ImportError::Unplaced { id: n.gid.clone(), label, line: n.line, field: missing });
        }
    }

    // Edges: undirected, one link per pair.
    let mut pairs: HashMap<(usize, usize), u32> = HashMap::new();
    let mut links: Vec<(usize, usize)> = Vec::new();
    for e in graph.children().filter(|n| n.tag_name().name() == "edge") {
        let at = line(e);
        let (Some(source), Some(target)) = (e.attribute("source"), e.attribute("target")) else {
            let attribute = if e.attribute("source").is_none() { "source" } else { "target" };
            errors.push(ImportError::EdgeWithoutEnd { line: at, attribute });
            continue;
        };
        let mut ends = [None, None];
        for (end, id) in ends.iter_mut().zip([source, target]) {
            match by_gid.get(id) {
                Some(&i) => *end = Some(i),
                None => errors.push(ImportError::UnknownNode {
                    from: source.into(),
                    to: target.into(),
                    line: at,
                    node: id.into(),
                }),
            }
        }
        let [Some(a), Some(b)] = ends else { continue };
        if a == b {
            warnings.push(format!("the edge at line {at} links node {} to itself: left out", nodes[a].describe()));
            continue;
        }
        if !(placed[a] && placed[b]) {
            continue;
        }
        let key = (a.min(b), a.max(b));
        if let Some(first) = pairs.get(&key) {
            warnings.push(format!(
                "the edge {source} - {target} at line {at} repeats the one at line {first}: one link kept"
            ));
            continue;
        }
        pairs.insert(key, at);
        links.push((a, b));
    }
    if !errors.is_empty() {
        return Err(ImportErrors(errors));
    }

    // One connected graph: routes run from every node to every origin.
    let kept: Vec<usize> = (0..nodes.len()).filter(|&i| placed[i]).collect();
    if kept.is_empty() {
        return Err(fail(ImportError::Empty));
    }
    let part = parts(nodes.len(), &links);
    let mut sizes: HashMap<usize, usize> = HashMap::new();
    for &i in &kept {
        *sizes.entry(part[i]).or_default() += 1;
    }
    // The largest part; among equals, the one of the earliest node.
    let largest = kept.iter().map(|&i| part[i]).max_by_key(|p| (sizes[p], std::cmp::Reverse(*p))).expect("kept");
    let outside: Vec<usize> = kept.iter().copied().filter(|&i| part[i] != largest).collect();
    if !outside.is_empty() {
        let named = name_some(outside.iter().map(|&i| nodes[i].describe()), outside.len());
        if !options.keep_largest {
            return Err(fail(ImportError::Disconnected { nodes: kept.len(), cut_off: outside.len(), named }));
        }
        warnings.push(format!(
            "{} of the {} nodes ({named}) have no path to the largest part: left out",
            outside.len(),
            kept.len()
        ));
        for &i in &outside {
            placed[i] = false;
        }
        links.retain(|&(a, b)| placed[a] && placed[b]);
    }
    let kept: Vec<usize> = (0..nodes.len()).filter(|&i| placed[i]).collect();

    // Ids: the label's (or the GraphML id's) letters and digits, made unique.
    let mut ids: Vec<String> = vec![String::new(); nodes.len()];
    let mut taken = std::collections::HashSet::new();
    for &i in &kept {
        let n = &nodes[i];
        let base = n.label.as_deref().map(slug).filter(|s| !s.is_empty()).unwrap_or_else(|| {
            let g = slug(&n.gid);
            if g.is_empty() {
                "node".into()
            } else {
                format!("n{g}")
            }
        });
        let mut id = base.clone();
        let mut k = 2;
        while !taken.insert(id.clone()) {
            let suffix = format!("-{k}");
            id = format!("{}{suffix}", truncate(&base, 63 - suffix.len()));
            k += 1;
        }
        ids[i] = id;
    }

    // Origins: as asked, or the best-connected node.
    let mut origin = vec![false; nodes.len()];
    if options.origins.is_empty() {
        let mut degree = vec![0usize; nodes.len()];
        for &(a, b) in &links {
            degree[a] += 1;
            degree[b] += 1;
        }
        let best = kept.iter().copied().max_by_key(|&i| (degree[i], std::cmp::Reverse(i))).expect("kept");
        origin[best] = true;
    } else {
        for wanted in &options.origins {
            let found = kept.iter().copied().find(|&i| {
                nodes[i].gid == *wanted || nodes[i].label.as_deref() == Some(wanted.as_str()) || ids[i] == *wanted
            });
            match found {
                Some(i) => origin[i] = true,
                None => errors.push(ImportError::UnknownOrigin(wanted.clone())),
            }
        }
        if !errors.is_empty() {
            return Err(ImportErrors(errors));
        }
    }

    let text = write_topology(source, options, &nodes, &kept, &ids, &origin, &links);
    let topology =
        Topology::parse(&text, source).map_err(|e: CheckErrors| fail(ImportError::Invalid(e.to_string())))?;
    Ok(Imported { text, topology, warnings })
}

/// The topology file.
fn write_topology(
    source: &str,
    options: &ImportOptions,
    nodes: &[GraphNode],
    kept: &[usize],
    ids: &[String],
    origin: &[bool],
    links: &[(usize, usize)],
) -> String {
    let mut out = String::new();
    let origins: Vec<&str> = kept.iter().filter(|&&i| origin[i]).map(|&i| ids[i].as_str()).collect();
    let _ = writeln!(out, "# Imported from {} by `lightpath topology import`.", one_line(source));
    let _ = writeln!(out, "# {} nodes, {} links.", kept.len(), links.len());
    let _ = writeln!(
        out,
        "# Link latency (one way): great-circle distance / {FIBRE_KM_PER_MS} km per ms (light in fibre) x inflation {},\n\
         # at least {MIN_LATENCY_MS} ms.",
        options.inflation
    );
    let _ =
        writeln!(out, "# Every node is a relay and an edge in a region of its own; origins: {}.", origins.join(", "));
    let _ = writeln!(
        out,
        "# Addresses are placeholders (*.invalid): enough for `lightpath sim`, to be replaced before real nodes run."
    );
    for &i in kept {
        let n = &nodes[i];
        let label = n.label.as_ref().map_or(String::new(), |l| format!("    # {}", one_line(l)));
        let _ = writeln!(
            out,
            "\n[[regions]]\nname = \"{}\"{label}\nlat = {:?}\nlon = {:?}",
            ids[i],
            n.lat.expect("placed"),
            n.lon.expect("placed")
        );
    }
    for &i in kept {
        let roles = if origin[i] { r#"["origin", "relay", "edge"]"# } else { r#"["relay", "edge"]"# };
        let _ = writeln!(
            out,
            "\n[[nodes]]\nid = \"{id}\"\nregion = \"{id}\"\nroles = {roles}\nmesh = \"{id}.invalid:4433\"\nhttp = \"{id}.invalid:8080\"",
            id = ids[i]
        );
    }
    for &(a, b) in links {
        let (na, nb) = (&nodes[a], &nodes[b]);
        let km = great_circle_km(
            na.lat.expect("placed"),
            na.lon.expect("placed"),
            nb.lat.expect("placed"),
            nb.lon.expect("placed"),
        );
        let latency = latency_ms(km, options.inflation);
        let _ = writeln!(
            out,
            "\n[[links]]\na = \"{}\"\nb = \"{}\"\nlatency_ms = {latency:.2}    # {km:.0} km",
            ids[a], ids[b]
        );
    }
    out
}

/// A link's one-way latency for `km` of great circle: in fibre, inflated, at least [`MIN_LATENCY_MS`], to
/// the hundredth of a millisecond.
pub fn latency_ms(km: f64, inflation: f64) -> f64 {
    ((km / FIBRE_KM_PER_MS * inflation * 100.0).round() / 100.0).max(MIN_LATENCY_MS)
}

/// Each node's part (the index of a representative node), by union-find over `links`.
fn parts(n: usize, links: &[(usize, usize)]) -> Vec<usize> {
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut parent: Vec<usize> = (0..n).collect();
    for &(a, b) in links {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        // The smaller index represents a part, so that parts are numbered by their earliest node.
        let (low, high) = (ra.min(rb), ra.max(rb));
        parent[high] = low;
    }
    (0..n).map(|i| root(&mut parent, i)).collect()
}

/// A name as a node id: lower-case letters and digits, runs of anything else one `-`, at most 56 bytes (room
/// for a suffix that makes it unique).
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    truncate(out.trim_end_matches('-'), 56).trim_end_matches('-').to_owned()
}

/// The first `max` bytes of an ASCII text.
fn truncate(text: &str, max: usize) -> &str {
    &text[..text.len().min(max)]
}

/// A label or a file name on one line of a comment: control characters as spaces, at most 80 characters.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(80).collect()
}

/// The first few of `count` names, then how many more.
fn name_some(names: impl Iterator<Item = String>, count: usize) -> String {
    let shown: Vec<String> = names.take(NAMED).collect();
    let more = if count > shown.len() { format!(" and {} more", count - shown.len()) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEAD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key attr.name="Latitude" attr.type="double" for="node" id="d1" />
  <key attr.name="Longitude" attr.type="double" for="node" id="d2" />
  <key attr.name="label" attr.type="string" for="node" id="d3" />
  <graph edgedefault="undirected">
"#;

    fn node(id: &str, label: &str, lat: f64, lon: f64) -> String {
        format!(
            "<node id=\"{id}\"><data key=\"d3\">{label}</data><data key=\"d1\">{lat}</data><data key=\"d2\">{lon}</data></node>\n"
        )
    }

    fn edge(a: &str, b: &str) -> String {
        format!("<edge source=\"{a}\" target=\"{b}\" />\n")
    }

    fn graph(parts: &[String]) -> String {
        format!("{HEAD}{}</graph></graphml>\n", parts.concat())
    }

    fn errors(xml: &str, options: &ImportOptions) -> Vec<ImportError> {
        import(xml, "t.graphml", options).expect_err("refused").0
    }

    #[test]
    fn latency_is_great_circle_in_fibre_times_inflation() {
        // London to Paris: about 344 km of great circle.
        let xml = graph(&[node("0", "London", 51.5074, -0.1278), node("1", "Paris", 48.8566, 2.3522), edge("0", "1")]);
        let imported = import(&xml, "t.graphml", &ImportOptions { inflation: 2.0, ..Default::default() }).unwrap();
        let link = &imported.topology.links[0];
        let km = great_circle_km(51.5074, -0.1278, 48.8566, 2.3522);
        assert!((340.0..350.0).contains(&km), "{km}");
        assert_eq!(link.latency_ms, (km / 200.0 * 2.0 * 100.0).round() / 100.0);
        assert!(imported.text.contains("x inflation 2,"), "{}", imported.text);
        assert_eq!(imported.topology.origins().count(), 1);
        assert_eq!(latency_ms(0.0, 1.5), MIN_LATENCY_MS);
    }

    #[test]
    fn each_bad_part_is_named() {
        let opts = ImportOptions::default();
        let unplaced = format!(
            "{HEAD}<node id=\"x\"><data key=\"d3\">Nowhere</data></node>{}</graph></graphml>",
            node("0", "A", 1.0, 1.0)
        );
        assert!(
            matches!(&errors(&unplaced, &opts)[..], [ImportError::Unplaced { id, field: "Latitude", .. }] if id == "x")
        );
        let dup = graph(&[node("0", "A", 1.0, 1.0), node("0", "B", 2.0, 2.0)]);
        assert!(matches!(&errors(&dup, &opts)[..], [ImportError::DuplicateNode { id, .. }] if id == "0"));
        let unknown = graph(&[node("0", "A", 1.0, 1.0), edge("0", "7")]);
        assert!(matches!(&errors(&unknown, &opts)[..], [ImportError::UnknownNode { node, .. }] if node == "7"));
        let apart =
            graph(&[node("0", "A", 1.0, 1.0), node("1", "B", 2.0, 2.0), node("2", "C", 3.0, 3.0), edge("0", "1")]);
        let e = errors(&apart, &opts);
        assert!(matches!(&e[..], [ImportError::Disconnected { cut_off: 1, .. }]), "{e:?}");
        assert!(e[0].to_string().contains("\"2\" (C)"), "{}", e[0]);
        let far = graph(&[node("0", "A", 91.0, 1.0)]);
        assert!(matches!(&errors(&far, &opts)[..], [ImportError::BadCoordinate { field: "Latitude", .. }]));
        assert!(matches!(&errors("<graphml", &opts)[..], [ImportError::Xml(_)]));
        assert!(matches!(&errors("<svg/>", &opts)[..], [ImportError::NotGraphml(_)]));
        let bomb = "<!DOCTYPE g [<!ENTITY a \"aaaa\">]><graphml/>";
        assert!(matches!(&errors(bomb, &opts)[..], [ImportError::Xml(_)]));
        let bad = ImportOptions { inflation: 0.5, ..Default::default() };
        assert!(matches!(&errors(&apart, &bad)[..], [ImportError::Inflation(_)]));
        let missing = ImportOptions { origins: vec!["Atlantis".into()], ..Default::default() };
        let two = graph(&[node("0", "A", 1.0, 1.0), node("1", "B", 2.0, 2.0), edge("0", "1")]);
        assert!(matches!(&errors(&two, &missing)[..], [ImportError::UnknownOrigin(o)] if o == "Atlantis"));
    }

    #[test]
    fn self_loops_repeats_and_left_out_parts_are_warnings() {
        let xml = format!(
            "{HEAD}<node id=\"x\" />{}</graph></graphml>",
            [
                node("0", "A", 1.0, 1.0),
                node("1", "A", 2.0, 2.0),
                node("2", "C", 3.0, 3.0),
                node("3", "D", 4.0, 4.0),
                edge("0", "1"),
                edge("1", "0"),
                edge("1", "1"),
                edge("1", "2"),
                edge("x", "2"),
            ]
            .concat()
        );
        let opts =
            ImportOptions { skip_unplaced: true, keep_largest: true, origins: vec!["C".into()], ..Default::default() };
        let imported = import(&xml, "t.graphml", &opts).unwrap();
        let ids: Vec<&str> = imported.topology.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "a-2", "c"], "two nodes labelled A get distinct ids; D is cut off");
        assert_eq!(imported.topology.links.len(), 2);
        let w = imported.warnings.join("\n");
        for expected in ["node \"x\"", "repeats the one", "to itself", "\"3\" (D)"] {
            assert!(w.contains(expected), "{expected}: {w}");
        }
        assert_eq!(imported.topology.origins().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["c"]);
    }

    proptest! {
        /// Any text: an import or an error, never a panic; an import always checks.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            if let Ok(imported) = import(&text, "t", &ImportOptions::default()) {
                prop_assert!(Topology::parse(&imported.text, "t").is_ok());
            }
        }

        /// A connected graph of placed nodes imports whole: one node per node, one link per distinct pair,
        /// latencies from the coordinates; and a graph with an edge cut out of a chain is refused.
        #[test]
        fn connected_graphs_import_whole(
            coords in prop::collection::vec((-90.0f64..=90.0, -180.0f64..=180.0), 1..30),
            extra in prop::collection::vec((0usize..30, 0usize..30), 0..40),
            labels in prop::collection::vec("[ -~]{0,12}", 30),
        ) {
            let n = coords.len();
            let mut parts: Vec<String> = coords
                .iter()
                .enumerate()
                .map(|(i, &(lat, lon))| node(&i.to_string(), &xml_escape(&labels[i]), lat, lon))
                .collect();
            // A chain makes it connected; the extra edges may repeat pairs or loop.
            let mut pairs = std::collections::HashSet::new();
            for i in 1..n {
                parts.push(edge(&(i - 1).to_string(), &i.to_string()));
                pairs.insert((i - 1, i));
            }
            for &(a, b) in &extra {
                let (a, b) = (a % n, b % n);
                parts.push(edge(&a.to_string(), &b.to_string()));
                if a != b {
                    pairs.insert((a.min(b), a.max(b)));
                }
            }
            let imported = import(&graph(&parts), "t", &ImportOptions::default()).unwrap();
            prop_assert_eq!(imported.topology.nodes.len(), n);
            prop_assert_eq!(imported.topology.links.len(), pairs.len());
            for l in &imported.topology.links {
                prop_assert!(l.latency_ms >= MIN_LATENCY_MS && l.latency_ms <= 20_040.0 / 200.0 * DEFAULT_INFLATION + 0.01);
            }
            if n >= 2 && extra.is_empty() {
                // Without its last edge the chain's last node is cut off.
                parts.retain(|p| *p != edge(&(n - 2).to_string(), &(n - 1).to_string()));
                let refused = import(&graph(&parts), "t", &ImportOptions::default()).is_err();
                prop_assert!(refused);
            }
        }
    }

    fn xml_escape(text: &str) -> String {
        text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
    }
}
