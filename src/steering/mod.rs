//! Steering: which edge a viewer is sent to. Pure: no sockets, no clock, no tokio.
//!
//! The director ([`crate::director`]) answers a viewer's first request, by an HTTP redirect or a DNS
//! answer, with the edge [`choose`] picks here; both ask the same function, so HTTP and DNS steering never
//! disagree. The inputs are the viewer's region (from a coverage-zone file, [`zones`], or else the
//! director's own region), the edges as the control plane and the director's health checks see them
//! ([`EdgeState`]), and how far apart regions are ([`RegionDistances`]: the RTT the mesh measured between
//! them where it has a link, else an estimate from their coordinates).
//!
//! The rule, in order:
//! 1. only edges that are up and below their viewer capacity are candidates (none: no answer, the viewer is
//!    told to retry);
//! 2. the nearest candidates win: those within [`NEAR_MS`] of the nearest one's RTT from the viewer's
//!    region (a handful of milliseconds is below what a viewer notices, and lets the next rule act);
//! 3. among those, an edge that already receives the stream wins (its cache is warm, and the mesh carries
//!    no new copy of it);
//! 4. then the least loaded (viewers over capacity), then the node id, so equal inputs give equal answers.

pub mod zones;

use std::collections::HashMap;

use crate::id::NodeId;

/// How much further than the nearest candidate an edge may be and still count as near, in ms of RTT.
pub const NEAR_MS: f64 = 10.0;

/// An edge as steering sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeState {
    pub node: NodeId,
    /// The region it is in.
    pub region: String,
    /// Whether the control plane hears from it and it answers health checks.
    pub up: bool,
    /// Viewers it serves now (distinct addresses, as its reports count them).
    pub viewers: u32,
    /// Viewers it may serve (`director.capacity`).
    pub capacity: u32,
    /// Whether it receives the stream asked for.
    pub has_stream: bool,
}

impl EdgeState {
    /// Up and below capacity.
    pub fn eligible(&self) -> bool {
        self.up && self.viewers < self.capacity
    }

    fn load(&self) -> f64 {
        f64::from(self.viewers) / f64::from(self.capacity.max(1))
    }
}

/// Round-trip times between regions, in ms: measured where the mesh has a link between them, else
/// estimated from their coordinates.
#[derive(Debug, Clone, Default)]
pub struct RegionDistances {
    /// Each region's coordinates (degrees).
    places: HashMap<String, (f64, f64)>,
    /// Measured RTTs, both ways: `measured[a][b]`.
    measured: HashMap<String, HashMap<String, f64>>,
}

impl RegionDistances {
    /// Regions by name and coordinates (latitude, longitude in degrees).
    pub fn new<'a>(regions: impl IntoIterator<Item = (&'a str, f64, f64)>) -> Self {
        Self {
            places: regions.into_iter().map(|(n, lat, lon)| (n.to_owned(), (lat, lon))).collect(),
            ..Self::default()
        }
    }

    /// A link measured between regions `a` and `b`; the shortest of several stands.
    pub fn measured(&mut self, a: &str, b: &str, rtt_ms: f64) {
        if a == b || !rtt_ms.is_finite() || rtt_ms < 0.0 {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            let rtt = self.measured.entry(x.to_owned()).or_default().entry(y.to_owned()).or_insert(rtt_ms);
            *rtt = rtt.min(rtt_ms);
        }
    }

    /// The RTT between two regions: 0 within one, measured if the mesh links them, else estimated from
    /// their great-circle distance (light in fibre, 200 km per ms each way, over a path half as long again
    /// as the great circle). An unknown region is infinitely far.
    pub fn rtt_ms(&self, a: &str, b: &str) -> f64 {
        if a == b {
            return 0.0;
        }
        if let Some(rtt) = self.measured.get(a).and_then(|m| m.get(b)) {
            return *rtt;
        }
        match (self.places.get(a), self.places.get(b)) {
            (Some(p), Some(q)) => great_circle_km(*p, *q) * 1.5 * 2.0 / 200.0,
            _ => f64::INFINITY,
        }
    }
}

/// The great-circle distance between two points (latitude, longitude in degrees), in km.
pub fn great_circle_km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The edge a viewer from `client_region` is sent to, by the rule in the module doc; `None` when no edge
/// is up and below capacity.
pub fn choose<'a>(client_region: &str, edges: &'a [EdgeState], distances: &RegionDistances) -> Option<&'a EdgeState> {
    let rtt = |e: &EdgeState| distances.rtt_ms(client_region, &e.region);
    let nearest = edges.iter().filter(|e| e.eligible()).map(rtt).min_by(f64::total_cmp)?;
    edges
        .iter()
        .filter(|e| e.eligible() && rtt(e) <= nearest + NEAR_MS)
        .min_by(|a, b| b.has_stream.cmp(&a.has_stream).then(a.load().total_cmp(&b.load())).then(a.node.cmp(&b.node)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn distances() -> RegionDistances {
        RegionDistances::new([("eu-west", 53.35, -6.26), ("us-east", 39.04, -77.49), ("ap-southeast", 1.35, 103.82)])
    }

    fn edge(node: &str, region: &str) -> EdgeState {
        EdgeState {
            node: NodeId::new(node).unwrap(),
            region: region.into(),
            up: true,
            viewers: 0,
            capacity: 100,
            has_stream: false,
        }
    }

    #[test]
    fn the_viewers_region_then_the_nearest() {
        let d = distances();
        let edges = [edge("edge-us", "us-east"), edge("edge-ap", "ap-southeast")];
        assert_eq!(choose("ap-southeast", &edges, &d).unwrap().node.as_str(), "edge-ap");
        assert_eq!(choose("us-east", &edges, &d).unwrap().node.as_str(), "edge-us");
        // Dublin is nearer Virginia than Singapore.
        assert_eq!(choose("eu-west", &edges, &d).unwrap().node.as_str(), "edge-us");
        // A measured RTT overrides the estimate.
        let mut measured = d.clone();
        measured.measured("eu-west", "ap-southeast", 20.0);
        assert_eq!(choose("eu-west", &edges, &measured).unwrap().node.as_str(), "edge-ap");
    }

    #[test]
    fn down_and_full_edges_are_skipped() {
        let d = distances();
        let mut edges = [edge("edge-us", "us-east"), edge("edge-ap", "ap-southeast")];
        edges[1].up = false;
        assert_eq!(choose("ap-southeast", &edges, &d).unwrap().node.as_str(), "edge-us");
        edges[1].up = true;
        edges[1].viewers = 100;
        assert_eq!(choose("ap-southeast", &edges, &d).unwrap().node.as_str(), "edge-us");
        edges[0].up = false;
        assert_eq!(choose("ap-southeast", &edges, &d), None);
    }

    #[test]
    fn near_edges_with_the_stream_then_the_least_loaded() {
        let d = distances();
        let mut edges = [edge("edge-us-1", "us-east"), edge("edge-us-2", "us-east"), edge("edge-ap", "ap-southeast")];
        edges[0].viewers = 10;
        assert_eq!(choose("us-east", &edges, &d).unwrap().node.as_str(), "edge-us-2");
        edges[0].has_stream = true;
        assert_eq!(choose("us-east", &edges, &d).unwrap().node.as_str(), "edge-us-1");
        // A far edge with the stream does not beat a near one without.
        edges[0].up = false;
        edges[2].has_stream = true;
        assert_eq!(choose("us-east", &edges, &d).unwrap().node.as_str(), "edge-us-2");
    }

    fn any_edge() -> impl Strategy<Value = EdgeState> {
        (0usize..6, 0usize..3, any::<bool>(), 0u32..5, 1u32..5, any::<bool>()).prop_map(
            |(n, r, up, viewers, capacity, has_stream)| EdgeState {
                node: NodeId::new(format!("edge-{n}")).unwrap(),
                region: ["eu-west", "us-east", "ap-southeast"][r].into(),
                up,
                viewers,
                capacity,
                has_stream,
            },
        )
    }

    proptest! {
        /// The choice is up and below capacity; no candidate is nearer by more than NEAR_MS; a near
        /// candidate with the stream is never passed over for one without; and there is a choice whenever
        /// there is a candidate.
        #[test]
        fn the_choice_keeps_the_rule(edges in proptest::collection::vec(any_edge(), 0..8), client in 0usize..3) {
            let d = distances();
            let client = ["eu-west", "us-east", "ap-southeast"][client];
            let chosen = choose(client, &edges, &d);
            let candidates: Vec<&EdgeState> = edges.iter().filter(|e| e.eligible()).collect();
            prop_assert_eq!(chosen.is_some(), !candidates.is_empty());
            if let Some(c) = chosen {
                prop_assert!(c.eligible());
                let nearest = candidates.iter().map(|e| d.rtt_ms(client, &e.region)).fold(f64::INFINITY, f64::min);
                prop_assert!(d.rtt_ms(client, &c.region) <= nearest + NEAR_MS, "{} is not near", c.node);
                for other in candidates.iter().filter(|e| d.rtt_ms(client, &e.region) <= nearest + NEAR_MS) {
                    prop_assert!(c.has_stream || !other.has_stream, "{} has the stream, {} not", other.node, c.node);
                }
            }
        }
    }
}
