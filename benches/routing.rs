//! Route computation on random geometric meshes of 100, 1,000 and 10,000 nodes (mean degree about 8).
//!
//! Run with `cargo bench --bench routing`. Prints one table; every case is bounded so that the whole run
//! takes well under 90 s in release on a two-core machine. Cases:
//!
//! - full recomputation toward 10 origins: `compute_all` (name-keyed tables for every node) and the route
//!   trees alone (what the simulator and `MeshRoutes` use);
//! - all-pairs next hops (every node toward every node) at 100 and 1,000 nodes; at 10,000 nodes the trees for
//!   a sample of destinations, scaled up (the name-keyed tables, 10^8 entries, would not fit in memory);
//! - an incremental update after one link change (cost up or down by up to 30 %, failure, or repair) with
//!   `MeshRoutes`, toward 10 origins and toward every node;
//! - one node's own table with backups (`RouteTable::compute`), and one damping round (`RouteDamper`).

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use lightpath::id::NodeId;
use lightpath::routing::{compute_all, Cost, DampingConfig, Graph, MeshRoutes, RouteDamper, RouteTable, RouteTree};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random geometric graph: `n` points in the unit square, linked when closer than the radius that gives a
/// mean degree of 8, components joined to the largest by their closest pair. A link costs 0.5 ms plus 100 ms
/// per unit of distance (one way).
struct Mesh {
    graph: Graph,
    ids: Vec<NodeId>,
    links: Vec<(usize, usize, Cost)>,
}

fn cost_of(p: (f64, f64), q: (f64, f64)) -> Cost {
    500 + (((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt() * 100_000.0) as Cost
}

fn geometric(n: usize, seed: u64) -> Mesh {
    let mut rng = StdRng::seed_from_u64(seed);
    let pts: Vec<(f64, f64)> = (0..n).map(|_| (rng.gen(), rng.gen())).collect();
    let radius = (8.0 / (std::f64::consts::PI * n as f64)).sqrt();
    let cells = ((1.0 / radius) as usize).max(1);
    let cell = |p: (f64, f64)| {
        ((p.0 * cells as f64) as usize).min(cells - 1) * cells + ((p.1 * cells as f64) as usize).min(cells - 1)
    };
    let mut grid = vec![Vec::new(); cells * cells];
    for (i, &p) in pts.iter().enumerate() {
        grid[cell(p)].push(i);
    }
    let mut links = Vec::new();
    for (i, &p) in pts.iter().enumerate() {
        let (cx, cy) = (cell(p) / cells, cell(p) % cells);
        for x in cx.saturating_sub(1)..=(cx + 1).min(cells - 1) {
            for y in cy.saturating_sub(1)..=(cy + 1).min(cells - 1) {
                for &j in &grid[x * cells + y] {
                    let q = pts[j];
                    if j > i && (p.0 - q.0).powi(2) + (p.1 - q.1).powi(2) < radius * radius {
                        links.push((i, j, cost_of(p, q)));
                    }
                }
            }
        }
    }
    // Join components to the largest one.
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &(a, b, _) in &links {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        parent[ra] = rb;
    }
    let roots: Vec<usize> = (0..n).map(|i| find(&mut parent, i)).collect();
    let mut sizes = vec![0usize; n];
    for &r in &roots {
        sizes[r] += 1;
    }
    let main = (0..n).max_by_key(|&r| sizes[r]).unwrap();
    let in_main: Vec<usize> = (0..n).filter(|&i| roots[i] == main).collect();
    let mut joined = HashSet::new();
    for i in 0..n {
        if roots[i] != main && joined.insert(roots[i]) {
            let members: Vec<usize> = (0..n).filter(|&k| roots[k] == roots[i]).collect();
            let (a, b) = members
                .iter()
                .flat_map(|&a| in_main.iter().map(move |&b| (a, b)))
                .min_by_key(|&(a, b)| cost_of(pts[a], pts[b]))
                .unwrap();
            links.push((a, b, cost_of(pts[a], pts[b])));
        }
    }
    let ids: Vec<NodeId> = (0..n).map(|i| NodeId::new(format!("n{i:05}")).unwrap()).collect();
    let mut graph = Graph::new();
    for &(a, b, c) in &links {
        graph.handle_link(&ids[a], &ids[b], c);
    }
    Mesh { graph, ids, links }
}

/// Runs `f` `runs` times (after one warm-up); returns the median and the slowest run.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    black_box(f());
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

fn fmt(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }
}

fn row(case: &str, mesh: &Mesh, dests: usize, (median, max): (Duration, Duration), target: &str) {
    println!(
        "| {case:<44} | {:>6} | {:>6} | {dests:>6} | {:>10} | {:>10} | {target:<8} |",
        mesh.ids.len(),
        mesh.links.len(),
        fmt(median),
        fmt(max)
    );
}

/// One random link change: a cost change of up to ±30 % (70 %), a failure (15 %) or a repair of the last
/// failure (15 %).
fn change(mesh: &Mesh, routes: &mut MeshRoutes, rng: &mut StdRng, down: &mut Vec<usize>) {
    let roll = rng.gen_range(0..100);
    if roll < 15 && !down.is_empty() {
        let (a, b, c) = mesh.links[down.pop().unwrap()];
        routes.handle_link(&mesh.ids[a], &mesh.ids[b], c);
    } else if roll < 30 {
        let k = rng.gen_range(0..mesh.links.len());
        let (a, b, _) = mesh.links[k];
        routes.handle_link_down(&mesh.ids[a], &mesh.ids[b]);
        down.push(k);
    } else {
        let (a, b, c) = mesh.links[rng.gen_range(0..mesh.links.len())];
        let c = (c as f64 * rng.gen_range(0.7..1.3)) as Cost;
        routes.handle_link(&mesh.ids[a], &mesh.ids[b], c);
    }
}

fn incremental(case: &str, mesh: &Mesh, dests: &[NodeId], changes: usize, target: &str) {
    let mut routes = MeshRoutes::new(mesh.graph.clone(), dests);
    let mut rng = StdRng::seed_from_u64(11);
    let mut down = Vec::new();
    let mut times: Vec<Duration> = (0..changes)
        .map(|_| {
            let start = Instant::now();
            change(mesh, &mut routes, &mut rng, &mut down);
            start.elapsed()
        })
        .collect();
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    println!(
        "| {case:<44} | {:>6} | {:>6} | {:>6} | {:>10} | {:>10} | {target:<8} |",
        mesh.ids.len(),
        mesh.links.len(),
        dests.len(),
        fmt(times[times.len() / 2]),
        format!("p99 {}", fmt(p99)),
    );
    // The incremental result is what a fresh computation gives.
    for tree in routes.trees() {
        assert!(*tree == RouteTree::compute(routes.graph(), tree.destination()), "incremental update diverged");
    }
}

fn main() {
    let started = Instant::now();
    println!(
        "| {:<44} | {:>6} | {:>6} | {:>6} | {:>10} | {:>10} | {:<8} |",
        "case", "nodes", "links", "dests", "median", "max", "target"
    );
    println!("|{:-<46}|{:-<8}|{:-<8}|{:-<8}|{:-<12}|{:-<12}|{:-<10}|", "", "", "", "", "", "", "");
    for (n, runs) in [(100, 200), (1_000, 50), (10_000, 5)] {
        let mesh = geometric(n, 1);
        let origins: Vec<NodeId> = mesh.ids.iter().step_by(n / 10).take(10).cloned().collect();
        let target = match n {
            1_000 => "≤ 50 ms",
            10_000 => "≤ 2 s",
            _ => "",
        };
        row(
            "full, toward 10 origins: compute_all",
            &mesh,
            10,
            time(runs, || compute_all(&mesh.graph, &origins)),
            target,
        );
        let trees = || {
            origins.iter().map(|o| RouteTree::compute(&mesh.graph, mesh.graph.index_of(o).unwrap())).collect::<Vec<_>>()
        };
        row("full, toward 10 origins: trees only", &mesh, 10, time(runs, trees), "");
        match n {
            100 => row("all pairs: compute_all", &mesh, n, time(50, || compute_all(&mesh.graph, &mesh.ids)), ""),
            1_000 => row("all pairs: compute_all", &mesh, n, time(3, || compute_all(&mesh.graph, &mesh.ids)), ""),
            _ => {
                // 200 of the 10,000 destinations, scaled by 50.
                let sample: Vec<_> = mesh.ids.iter().step_by(50).map(|d| mesh.graph.index_of(d).unwrap()).collect();
                let (median, max) =
                    time(1, || sample.iter().for_each(|&d| drop(black_box(RouteTree::compute(&mesh.graph, d)))));
                row("all pairs: trees only (200 dests x 50)", &mesh, n, (median * 50, max * 50), "");
            }
        }
        let me = &mesh.ids[n / 2];
        row(
            "one node's own table (RouteTable::compute)",
            &mesh,
            n - 1,
            time(runs, || RouteTable::compute(&mesh.graph, me)),
            "",
        );
        let fresh = trees();
        let mut damper = RouteDamper::new(DampingConfig::default()).unwrap();
        let mut round = 0u64;
        let damp = time(runs, || {
            round += 1;
            damper.handle_routes(Duration::from_secs(round), &mesh.graph, &fresh)
        });
        row("damping round, toward 10 origins", &mesh, 10, damp, "");
        if n >= 1_000 {
            incremental(
                "incremental, one link change, 10 origins",
                &mesh,
                &origins,
                2_000,
                if n == 1_000 { "≤ 5 ms" } else { "" },
            );
        }
        if n == 1_000 {
            incremental("incremental, one link change, all pairs", &mesh, &mesh.ids, 100, "");
        }
    }
    println!("\ntotal bench time: {}", fmt(started.elapsed()));
}
