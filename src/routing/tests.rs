use super::*;
use crate::id::NodeId;
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::HashMap;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn graph(links: &[(&str, &str, Cost)]) -> Graph {
    let mut g = Graph::new();
    for &(a, b, c) in links {
        g.handle_link(&id(a), &id(b), c);
    }
    g
}

fn hop(table: &RouteTable, dest: &str) -> Option<(String, Cost)> {
    table.next_hop(&id(dest)).map(|h| (h.via.to_string(), h.cost))
}

#[test]
fn diamond_breaks_the_tie_by_lowest_id_whatever_the_insertion_order() {
    let links = [("s", "b", 10), ("b", "d", 10), ("s", "a", 10), ("a", "d", 10)];
    let mut reversed = links;
    reversed.reverse();
    for g in [graph(&links), graph(&reversed)] {
        let s = RouteTable::compute(&g, &id("s"));
        assert_eq!(hop(&s, "d"), Some(("a".into(), 20)));
        assert_eq!(hop(&s, "b"), Some(("b".into(), 10)));
        let d = RouteTable::compute(&g, &id("d"));
        assert_eq!(hop(&d, "s"), Some(("a".into(), 20)));
        assert_eq!(s.len(), 3);
    }
}

#[test]
fn detour_through_a_relay_beats_a_slow_direct_link() {
    let mut g = graph(&[("a", "c", 150), ("a", "relay", 40), ("relay", "c", 40)]);
    assert_eq!(hop(&RouteTable::compute(&g, &id("a")), "c"), Some(("relay".into(), 80)));
    g.handle_link(&id("a"), &id("c"), 70);
    assert_eq!(hop(&RouteTable::compute(&g, &id("a")), "c"), Some(("c".into(), 70)));
    g.handle_link(&id("a"), &id("c"), 150);
    g.handle_link_down(&id("relay"), &id("c"));
    assert_eq!(hop(&RouteTable::compute(&g, &id("a")), "c"), Some(("c".into(), 150)));
    assert_eq!(hop(&RouteTable::compute(&g, &id("a")), "relay"), Some(("relay".into(), 40)));
}

#[test]
fn disconnected_nodes_have_no_route() {
    let mut g = graph(&[("a", "b", 5), ("c", "d", 5)]);
    g.add_node(&id("lonely"));
    let a = RouteTable::compute(&g, &id("a"));
    assert_eq!(a.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(), ["b"]);
    assert!(a.next_hop(&id("a")).is_none(), "no route to itself");
    assert!(RouteTable::compute(&g, &id("lonely")).is_empty());
    assert!(RouteTable::compute(&g, &id("unknown")).is_empty());

    g.handle_node_down(&id("b"));
    assert!(RouteTable::compute(&g, &id("a")).is_empty());
    assert_eq!(g.link_cost(&id("a"), &id("b")), None);
    assert_eq!(g.nodes().count(), 5, "a failed node stays known");
}

#[test]
fn links_are_undirected_and_costs_clamped() {
    let mut g = graph(&[("a", "b", 0), ("b", "c", u64::MAX), ("c", "c", 7)]);
    assert_eq!(g.link_cost(&id("b"), &id("a")), Some(1));
    assert_eq!(g.link_cost(&id("c"), &id("b")), Some(MAX_LINK_COST));
    assert_eq!(g.link_cost(&id("c"), &id("c")), None);
    g.handle_link_down(&id("b"), &id("a"));
    g.handle_link_down(&id("b"), &id("zz"));
    assert_eq!(g.link_cost(&id("a"), &id("b")), None);
    let paths = g.shortest_paths(g.index_of(&id("c")).unwrap());
    assert_eq!(paths.cost(g.index_of(&id("b")).unwrap()), Some(MAX_LINK_COST));
    assert_eq!(paths.cost(g.index_of(&id("a")).unwrap()), None);
    assert_eq!(paths.cost(paths.source()), Some(0));
    assert_eq!(paths.first_hop(paths.source()), None);
}

/// A random connected graph: a random spanning tree plus extra links, node names shuffled so that index
/// order and id order differ, costs drawn mostly from 1..=4 so that equal-cost paths abound.
#[derive(Debug, Clone)]
struct Spec {
    ids: Vec<NodeId>,
    links: Vec<(usize, usize, Cost)>,
}

impl Spec {
    fn graph(&self) -> Graph {
        let mut g = Graph::new();
        for &(a, b, c) in &self.links {
            g.handle_link(&self.ids[a], &self.ids[b], c);
        }
        g
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (20usize..=60).prop_flat_map(|n| {
        let cost = prop_oneof![4 => 1..=4u64, 1 => 1..=1000u64];
        let tree = proptest::collection::vec((any::<Index>(), cost.clone()), n - 1);
        let extra = proptest::collection::vec((0..n, 0..n, cost), 0..=2 * n);
        let names = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        (tree, extra, names).prop_map(move |(tree, extra, names)| {
            let ids = names.iter().map(|i| id(&format!("n{i}"))).collect();
            let mut links: Vec<_> = tree.iter().enumerate().map(|(i, (p, c))| (i + 1, p.index(i + 1), *c)).collect();
            links.extend(extra);
            Spec { ids, links }
        })
    })
}

/// The link cost matrix, read back from the graph.
fn weights(g: &Graph, ids: &[NodeId]) -> Vec<Vec<Option<Cost>>> {
    ids.iter().map(|a| ids.iter().map(|b| g.link_cost(a, b)).collect()).collect()
}

/// All-pairs shortest costs by Floyd–Warshall, independent of the code under test.
fn oracle(w: &[Vec<Option<Cost>>]) -> Vec<Vec<Option<Cost>>> {
    let mut d = w.to_vec();
    for (i, row) in d.iter_mut().enumerate() {
        row[i] = Some(0);
    }
    for k in 0..w.len() {
        let via_k = d[k].clone();
        for row in &mut d {
            let Some(ik) = row[k] else { continue };
            for (ij, kj) in row.iter_mut().zip(&via_k) {
                if let Some(kj) = kj {
                    if ij.is_none_or(|ij| ik + kj < ij) {
                        *ij = Some(ik + kj);
                    }
                }
            }
        }
    }
    d
}

/// Every node's table routes to exactly the reachable nodes, at the true shortest cost, through the
/// lowest-id neighbour that starts a shortest path; and following next hops hop by hop reaches the
/// destination at that cost within n hops.
fn check_routes(g: &Graph, ids: &[NodeId]) -> Result<(), TestCaseError> {
    let n = ids.len();
    let w = weights(g, ids);
    let dist = oracle(&w);
    let pos: HashMap<&NodeId, usize> = ids.iter().enumerate().map(|(i, x)| (x, i)).collect();
    // next[s][d]: the position of s's next hop toward d.
    let mut next = vec![vec![None; n]; n];
    for s in 0..n {
        let table = RouteTable::compute(g, &ids[s]);
        for d in (0..n).filter(|&d| d != s) {
            let route = table.next_hop(&ids[d]);
            let Some(best) = dist[s][d] else {
                prop_assert!(route.is_none(), "{} routes to unreachable {}", ids[s], ids[d]);
                continue;
            };
            let route = route.ok_or_else(|| TestCaseError::fail(format!("{} has no route to {}", ids[s], ids[d])))?;
            prop_assert_eq!(route.cost, best);
            let expected_via = (0..n)
                .filter(|&v| w[s][v].zip(dist[v][d]).is_some_and(|(c, rest)| c + rest == best))
                .map(|v| &ids[v])
                .min();
            prop_assert_eq!(Some(&route.via), expected_via);
            next[s][d] = Some(pos[&route.via]);
        }
    }
    for s in 0..n {
        for d in (0..n).filter(|&d| dist[s][d].is_some()) {
            let (mut at, mut walked) = (s, 0);
            for _ in 0..n {
                if at == d {
                    break;
                }
                let via = next[at][d].expect("a node on the way has no route");
                walked += w[at][via].expect("next hop is not a neighbour");
                at = via;
            }
            prop_assert_eq!(at, d, "{} -> {}: forwarding loops", &ids[s], &ids[d]);
            prop_assert_eq!(Some(walked), dist[s][d]);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn routes_are_shortest_and_loop_free(spec in spec()) {
        check_routes(&spec.graph(), &spec.ids)?;
    }

    #[test]
    fn tables_do_not_depend_on_insertion_order(spec in spec()) {
        let g = spec.graph();
        let mut reversed = spec.clone();
        reversed.links.reverse();
        // Reversing may change which duplicate link's cost wins; re-apply the final costs in reverse order.
        let mut h = Graph::new();
        for &(a, b, _) in &reversed.links {
            if let Some(c) = g.link_cost(&spec.ids[a], &spec.ids[b]) {
                h.handle_link(&spec.ids[a], &spec.ids[b], c);
            }
        }
        for s in &spec.ids {
            prop_assert_eq!(RouteTable::compute(&g, s), RouteTable::compute(&h, s));
        }
    }

    #[test]
    fn one_link_failure_keeps_a_connected_graph_routed(spec in spec(), which in any::<Index>()) {
        let mut g = spec.graph();
        let (a, b, _) = spec.links[which.index(spec.links.len())];
        g.handle_link_down(&spec.ids[a], &spec.ids[b]);
        let connected = oracle(&weights(&g, &spec.ids)).iter().flatten().all(Option::is_some);
        if connected {
            for s in &spec.ids {
                prop_assert_eq!(RouteTable::compute(&g, s).len(), spec.ids.len() - 1);
            }
        }
        // Connected or not, what is left is still routed correctly.
        check_routes(&g, &spec.ids)?;
    }
}
