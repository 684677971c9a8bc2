//! Generated meshes for scenarios: many nodes per region of a base topology (`regions`, the scale scenario),
//! or a public-Internet model where direct paths are often not the fastest (`internet`).
//!
//! Both are pure and deterministic: the same base and seed give the same [`Topology`]. Node ids are
//! `{region}-{i}`; addresses are placeholders (`{id}.sim.invalid`, never resolved).

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::id::NodeId;
use crate::topology::{great_circle_km, Address, LinkSpec, NodeSpec, Role, Topology, FIBRE_KM_PER_MS};

/// The Internet model's worst path is five times the great-circle one.
const MAX_EXTRA_PATH: f64 = 4.0;

/// How a scenario's mesh is generated from its base topology (`[generate]` with `kind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Generate {
    /// `nodes_per_region` nodes in each region of the base topology. In a region: a ring (so that it is
    /// connected) plus `chords` links from each node to a random other one, 0.3-3 ms each. Between regions:
    /// the first `gateways` nodes of two regions whose base nodes are linked are linked pairwise, with the
    /// base link's latency plus 0.5 ms. Gateways are relays; the others edges and relays; node 0 of a region
    /// whose base node is an origin is an origin too.
    Regions {
        /// Nodes in each region (at least 2).
        nodes_per_region: usize,
        /// Extra in-region links per node, beyond the ring.
        #[serde(default = "default_chords")]
        chords: usize,
        /// Nodes per region linked to other regions (at least 1, at most `nodes_per_region`).
        #[serde(default = "default_gateways")]
        gateways: usize,
    },
    /// `nodes_per_region` nodes in each region of the base topology, every pair linked by its direct
    /// Internet path: great-circle distance at the speed of light in fibre, stretched by a per-pair
    /// inflation factor (`1 + lognormal(inflation_mu, inflation_sigma)`, at most 5: routes detour through
    /// distant exchanges, some badly), plus each end's access delay (0.2-2 ms). With the defaults most pairs have a
    /// faster path through some third node, as measurements of the public Internet find for 68-85 % of
    /// pairs; [`detour_fraction`] measures it. Every node is a relay and an edge; node 0 of a region whose
    /// base node is an origin is an origin too.
    Internet {
        /// Nodes in each region (at least 1).
        #[serde(default = "default_internet_nodes")]
        nodes_per_region: usize,
        /// Location of the log of the extra path length (as a fraction of the great-circle one).
        #[serde(default = "default_mu")]
        inflation_mu: f64,
        /// Spread of the log of the extra path length.
        #[serde(default = "default_sigma")]
        inflation_sigma: f64,
    },
}

fn default_chords() -> usize {
    1
}
fn default_gateways() -> usize {
    2
}
fn default_internet_nodes() -> usize {
    1
}
fn default_mu() -> f64 {
    0.2
}
fn default_sigma() -> f64 {
    1.0
}

impl Generate {
    /// Checks the figures; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        match *self {
            Generate::Regions { nodes_per_region, chords, gateways } => {
                if nodes_per_region < 2 {
                    return fail("nodes_per_region", format!("must be at least 2, not {nodes_per_region}"));
                }
                if chords >= nodes_per_region {
                    return fail("chords", format!("must be below nodes_per_region ({nodes_per_region})"));
                }
                if gateways == 0 || gateways > nodes_per_region {
                    return fail("gateways", format!("must be from 1 to nodes_per_region ({nodes_per_region})"));
                }
            }
            Generate::Internet { nodes_per_region, inflation_mu, inflation_sigma } => {
                if nodes_per_region == 0 {
                    return fail("nodes_per_region", "must be at least 1".into());
                }
                if !inflation_mu.is_finite() {
                    return fail("inflation_mu", format!("must be a finite number, not {inflation_mu}"));
                }
                if !(inflation_sigma >= 0.0 && inflation_sigma.is_finite()) {
                    return fail("inflation_sigma", format!("must be at least 0, not {inflation_sigma}"));
                }
            }
        }
        Ok(())
    }

    /// At most how many nodes and links [`Generate::build`] makes from `base`, computed without building it,
    /// so that a scenario asking for more than the simulator should hold is refused before it allocates.
    pub fn size_bound(&self, base: &Topology) -> (u64, u64) {
        let regions = base.regions.len() as u64;
        match *self {
            Generate::Regions { nodes_per_region, chords, gateways } => {
                let nodes = regions.saturating_mul(nodes_per_region as u64);
                let inside = nodes.saturating_mul(1 + chords as u64);
                (nodes, inside.saturating_add((base.links.len() as u64).saturating_mul(gateways as u64)))
            }
            Generate::Internet { nodes_per_region, .. } => {
                let nodes = regions.saturating_mul(nodes_per_region as u64);
                (nodes, nodes.saturating_mul(nodes.saturating_sub(1)) / 2)
            }
        }
    }

    /// The mesh generated from `base` (its regions, their links and origins) with `seed`.
    pub fn build(&self, base: &Topology, seed: u64) -> Topology {
        let mut rng = StdRng::seed_from_u64(seed);
        // Regions that hold an origin of the base topology.
        let origin_regions: BTreeSet<&str> = base.origins().map(|n| n.region.as_str()).collect();
        let mut topology = Topology { regions: base.regions.clone(), ..Topology::default() };
        let per_region = match *self {
            Generate::Regions { nodes_per_region, .. } | Generate::Internet { nodes_per_region, .. } => {
                nodes_per_region
            }
        };
        let gateways = match *self {
            Generate::Regions { gateways, .. } => gateways,
            Generate::Internet { .. } => 0,
        };
        for region in &base.regions {
            for i in 0..per_region {
                let id = node_id(&region.name, i);
                let mut roles = if i < gateways { vec![Role::Relay] } else { vec![Role::Relay, Role::Edge] };
                if i == 0 && origin_regions.contains(region.name.as_str()) {
                    roles.insert(0, Role::Origin);
                }
                let address = Address { host: format!("{id}.sim.invalid"), port: 1 };
                topology.nodes.push(NodeSpec {
                    id,
                    region: region.name.clone(),
                    roles,
                    mesh: address.clone(),
                    http: address,
                });
            }
        }
        match *self {
            Generate::Regions { nodes_per_region, chords, gateways } => {
                for region in &base.regions {
                    let mut linked = BTreeSet::new();
                    let mut link = |a: usize, b: usize, rng: &mut StdRng, links: &mut Vec<LinkSpec>| {
                        if a != b && linked.insert((a.min(b), a.max(b))) {
                            let latency_ms = (rng.gen_range(0.3..3.0f64) * 100.0).round() / 100.0;
                            links.push(LinkSpec {
                                a: node_id(&region.name, a),
                                b: node_id(&region.name, b),
                                latency_ms,
                            });
                        }
                    };
                    for i in 0..nodes_per_region {
                        link(i, (i + 1) % nodes_per_region, &mut rng, &mut topology.links);
                        for _ in 0..chords {
                            let j = rng.gen_range(0..nodes_per_region);
                            link(i, j, &mut rng, &mut topology.links);
                        }
                    }
                }
                let region_of = |id: &NodeId| base.node(id).map(|n| n.region.as_str());
                let mut linked = BTreeSet::new();
                for l in &base.links {
                    let (Some(a), Some(b)) = (region_of(&l.a), region_of(&l.b)) else { continue };
                    if a == b || !linked.insert((a.min(b), a.max(b))) {
                        continue;
                    }
                    for g in 0..gateways {
                        topology.links.push(LinkSpec {
                            a: node_id(a, g),
                            b: node_id(b, g),
                            latency_ms: l.latency_ms + 0.5,
                        });
                    }
                }
            }
            Generate::Internet { inflation_mu, inflation_sigma, .. } => {
                let nodes: Vec<(NodeId, f64, f64, f64)> = topology
                    .nodes
                    .iter()
                    .map(|n| {
                        let r = base.region(&n.region).expect("nodes are placed in the base's regions");
                        (n.id.clone(), r.lat, r.lon, rng.gen_range(0.2..2.0))
                    })
                    .collect();
                for (i, a) in nodes.iter().enumerate() {
                    for b in &nodes[i + 1..] {
                        let km = great_circle_km(a.1, a.2, b.1, b.2);
                        let extra = (inflation_mu + inflation_sigma * standard_normal(&mut rng)).exp();
                        let inflation = 1.0 + extra.min(MAX_EXTRA_PATH);
                        let latency_ms = km / FIBRE_KM_PER_MS * inflation + a.3 + b.3;
                        topology.links.push(LinkSpec {
                            a: a.0.clone(),
                            b: b.0.clone(),
                            latency_ms: (latency_ms * 100.0).round() / 100.0,
                        });
                    }
                }
            }
        }
        topology
    }
}

fn node_id(region: &str, i: usize) -> NodeId {
    NodeId::new(format!("{region}-{i}")).expect("region names are valid node ids and so is the suffix")
}

/// A standard normal draw (Box-Muller).
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The fraction of linked node pairs for which a path through one third node is strictly faster than their
/// direct link.
pub fn detour_fraction(topology: &Topology) -> f64 {
    let index: std::collections::HashMap<&NodeId, usize> =
        topology.nodes.iter().enumerate().map(|(i, n)| (&n.id, i)).collect();
    let n = topology.nodes.len();
    let mut latency = vec![f64::INFINITY; n * n];
    for l in &topology.links {
        let (a, b) = (index[&l.a], index[&l.b]);
        latency[a * n + b] = l.latency_ms;
        latency[b * n + a] = l.latency_ms;
    }
    let mut pairs = 0;
    let mut detours = 0;
    for l in &topology.links {
        let (a, b) = (index[&l.a], index[&l.b]);
        pairs += 1;
        if (0..n).any(|c| c != a && c != b && latency[a * n + c] + latency[c * n + b] < l.latency_ms) {
            detours += 1;
        }
    }
    if pairs == 0 {
        0.0
    } else {
        detours as f64 / pairs as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn world() -> Topology {
        Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/world.toml")).expect("world loads")
    }

    fn connected(t: &Topology) -> bool {
        let index: std::collections::HashMap<&NodeId, usize> =
            t.nodes.iter().enumerate().map(|(i, n)| (&n.id, i)).collect();
        let mut adjacency = vec![Vec::new(); t.nodes.len()];
        for l in &t.links {
            adjacency[index[&l.a]].push(index[&l.b]);
            adjacency[index[&l.b]].push(index[&l.a]);
        }
        let mut seen = vec![false; t.nodes.len()];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(x) = stack.pop() {
            for &y in &adjacency[x] {
                if !seen[y] {
                    seen[y] = true;
                    stack.push(y);
                }
            }
        }
        seen.iter().all(|&s| s)
    }

    #[test]
    fn regions_give_a_connected_mesh_of_the_asked_size_and_are_deterministic() {
        let base = world();
        let spec = Generate::Regions { nodes_per_region: 100, chords: 1, gateways: 2 };
        spec.validate().unwrap();
        let t = spec.build(&base, 7);
        assert_eq!(t.nodes.len(), 100 * base.regions.len());
        assert!(connected(&t));
        let degree = 2.0 * t.links.len() as f64 / t.nodes.len() as f64;
        assert!((3.0..6.0).contains(&degree), "average degree {degree}");
        assert_eq!(t.origins().count(), base.origins().map(|n| &n.region).collect::<BTreeSet<_>>().len());
        assert!(t.links.iter().all(|l| l.latency_ms > 0.0 && l.a != l.b));
        assert_eq!(t, spec.build(&base, 7));
        assert_ne!(t, spec.build(&base, 8));
    }

    #[test]
    fn the_internet_model_has_detours_for_most_pairs() {
        let base = world();
        let spec =
            Generate::Internet { nodes_per_region: 1, inflation_mu: default_mu(), inflation_sigma: default_sigma() };
        for seed in 1..=5 {
            let t = spec.build(&base, seed);
            assert_eq!(t.links.len(), t.nodes.len() * (t.nodes.len() - 1) / 2);
            let fraction = detour_fraction(&t);
            assert!((0.68..=0.85).contains(&fraction), "seed {seed}: {fraction}");
        }
        // The measured cloud backbone is nothing like it.
        assert!(detour_fraction(&base) < 0.5, "{}", detour_fraction(&base));
    }

    #[test]
    fn bad_figures_name_their_field() {
        let bad = [
            (Generate::Regions { nodes_per_region: 1, chords: 0, gateways: 1 }, "nodes_per_region"),
            (Generate::Regions { nodes_per_region: 5, chords: 5, gateways: 1 }, "chords"),
            (Generate::Regions { nodes_per_region: 5, chords: 1, gateways: 0 }, "gateways"),
            (Generate::Internet { nodes_per_region: 0, inflation_mu: 0.0, inflation_sigma: 1.0 }, "nodes_per_region"),
            (Generate::Internet { nodes_per_region: 1, inflation_mu: f64::NAN, inflation_sigma: 1.0 }, "inflation_mu"),
            (Generate::Internet { nodes_per_region: 1, inflation_mu: 0.0, inflation_sigma: -1.0 }, "inflation_sigma"),
        ];
        for (spec, field) in bad {
            assert_eq!(spec.validate().unwrap_err().0, field, "{spec:?}");
        }
    }
}
