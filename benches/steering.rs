//! Steering and token costs, in process, on one thread.
//!
//! - **Steering decisions**: the director's whole choice for one viewer ([`Steering::pick`]: the coverage
//!   zone lookup among `ZONES` (10,000) zones, then [`lightpath::steering::choose`] over the edges) for the
//!   fleet of `topology/world.toml` (51 regions; its edges reported up, with viewers and streams, from real
//!   `Report` values), by random client addresses: picks per second on one core and the p50/p99/max of
//!   single picks. This is what an HTTP 302 or a DNS answer costs the director beyond the server that
//!   carries it.
//! - **Token checks**: the edge's gate ([`Gate::admit`]) for a request of a stream that needs a token
//!   (`token=`, HMAC-SHA256; and Alibaba type A `auth_key=`, MD5), against the same call for an open stream
//!   without a credential, in the same run; and the playlist rewrite ([`Gate::carry`]) of a 6-segment
//!   playlist.
//!
//! Run: `cargo bench --bench steering` (a few seconds after the build).

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lightpath::config::DirectorConfig;
use lightpath::director::{Reports, Steering};
use lightpath::edge::token::{sign, Gate, Policy};
use lightpath::id::{NodeId, StreamName};
use lightpath::steering::zones::{CoverageZones, Network};
use lightpath::topology::{Role, Topology};
use lightpath::wire::{LinkReport, Report, StreamPhase, StreamReport};
use rand::{Rng, SeedableRng};

const ZONES: usize = 10_000;
const PICKS: usize = 200_000;
const CHECKS: usize = 200_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `f` `n` times, timing each call: calls per second (from the whole loop) and the sorted call times.
fn measure(n: usize, mut f: impl FnMut(usize)) -> (f64, Vec<Duration>) {
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        times.push(t.elapsed());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    times.sort_unstable();
    (rate, times)
}

fn report(name: &str, rate: f64, times: &[Duration]) {
    println!(
        "{name:<44} {:>10.0}/s   p50 {:>6.2} us   p99 {:>6.2} us   max {:>7.2} us",
        rate,
        percentile(times, 0.5).as_secs_f64() * 1e6,
        percentile(times, 0.99).as_secs_f64() * 1e6,
        times.last().unwrap().as_secs_f64() * 1e6
    );
}

fn steering() {
    let mut topology = Topology::load(std::path::Path::new("topology/world.toml")).expect("topology/world.toml");
    // One edge per region, as a world CDN would have.
    for node in topology.nodes.iter_mut() {
        if !node.has_role(Role::Edge) {
            node.roles.push(Role::Edge);
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let regions: Vec<String> = topology.regions.iter().map(|r| r.name.clone()).collect();
    let mut zones = CoverageZones::default();
    while zones.len() < ZONES {
        let len = rng.gen_range(12..=28u8);
        let net = Network::containing(std::net::IpAddr::V4(rng.gen::<u32>().into()), len);
        zones.insert(net, &regions[rng.gen_range(0..regions.len())]);
    }
    let stream = StreamName::new("s").unwrap();
    let now = Instant::now();
    let reports: BTreeMap<NodeId, (Report, Instant)> = topology
        .nodes
        .iter()
        .map(|n| {
            let links = topology
                .neighbours(&n.id)
                .map(|(peer, ms)| LinkReport {
                    peer: peer.id.clone(),
                    rtt_us: (ms * 2000.0) as u64,
                    jitter_us: 100,
                    loss_ppm: 0,
                    up: true,
                })
                .collect();
            let streams = vec![StreamReport {
                stream: stream.clone(),
                origin: topology.nodes[0].id.clone(),
                upstream: rng.gen_bool(0.5).then(|| topology.nodes[0].id.clone()),
                epoch: 1,
                phase: StreamPhase::Live,
                viewers: rng.gen_range(0..5000),
            }];
            (n.id.clone(), (Report { node: n.id.clone(), links, streams, takedowns: vec![], draining: false }, now))
        })
        .collect();
    let reports: Reports = Arc::new(reports);
    let healthy: HashMap<NodeId, bool> = topology.nodes.iter().map(|n| (n.id.clone(), true)).collect();
    let config = DirectorConfig { region: Some(regions[0].clone()), ..DirectorConfig::default() };
    let steering = Steering::new(zones, regions[0].clone());
    steering.refresh(&topology, &config, &reports, &healthy);
    let clients: Vec<std::net::IpAddr> = (0..4096).map(|_| std::net::IpAddr::V4(rng.gen::<u32>().into())).collect();
    let edges = topology.nodes.len();
    println!("steering: {edges} edges in {} regions, {ZONES} coverage zones, {PICKS} picks", regions.len());
    let (rate, times) = measure(PICKS, |i| {
        black_box(steering.pick(clients[i % clients.len()], 128, Some(&stream)));
    });
    report("pick (HTTP: whole address, stream known)", rate, &times);
    let (rate, times) = measure(PICKS, |i| {
        black_box(steering.pick(clients[i % clients.len()], 24, None));
    });
    report("pick (DNS: a /24 client subnet)", rate, &times);
}

fn tokens() {
    let gate = Gate::new(
        [("k1", "first-secret-0123456789")],
        Some(("alibaba-private-key-0123", 1800)),
        Policy::Open,
        BTreeMap::from([("paid".to_owned(), Policy::Token)]),
    );
    let now = 1_800_000_000;
    let token = sign("k1", "first-secret-0123456789", now + 600, "/live/paid/index.m3u8");
    let query = format!("token={token}");
    let path = "/live/paid/seg123.ts";
    let paid = |q: &str| gate.admit("paid", path, Some(q), now).is_ok();
    assert!(paid(&query), "the bench's token does not pass");
    println!("token checks: {CHECKS} each, alternating in one loop");
    // Open and signed requests alternate in one loop, so that both see the same machine.
    let mut open = Vec::with_capacity(CHECKS);
    let mut signed = Vec::with_capacity(CHECKS);
    let start = Instant::now();
    for _ in 0..CHECKS {
        let t = Instant::now();
        black_box(gate.admit("free", "/live/free/seg123.ts", None, now).is_ok());
        open.push(t.elapsed());
        let t = Instant::now();
        black_box(paid(&query));
        signed.push(t.elapsed());
    }
    let total = start.elapsed().as_secs_f64();
    let per = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64() / v.len() as f64;
    open.sort_unstable();
    signed.sort_unstable();
    report("admit, open stream, no credential", 1.0 / per(&open), &open);
    report("admit, token= (HMAC-SHA256)", 1.0 / per(&signed), &signed);
    println!("(loop of both: {:.2} s)", total);
    let hash = {
        use md5::Digest as _;
        let d = md5::Md5::digest(format!("{path}-{now}-0-0-alibaba-private-key-0123").as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let auth = format!("auth_key={now}-0-0-{hash}");
    assert!(paid(&auth), "the bench's auth_key does not pass");
    let (rate, times) = measure(CHECKS, |_| {
        black_box(paid(&auth));
    });
    report("admit, auth_key= (Alibaba type A, MD5)", rate, &times);
    let credential = gate.admit("paid", path, Some(&query), now).unwrap().unwrap();
    let playlist: String = std::iter::once("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:118\n".to_owned())
        .chain((118..124).map(|n| format!("#EXTINF:2.000,\nseg{n}.ts\n")))
        .collect();
    let (rate, times) = measure(CHECKS / 4, |_| {
        black_box(gate.carry(&credential, &playlist, "/live/paid/index.m3u8"));
    });
    report("carry: token into a 6-segment playlist", rate, &times);
}

fn main() {
    steering();
    tokens();
}
