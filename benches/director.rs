//! The director end to end: answers per second and latency of its HTTP (302) and DNS servers, over loopback.
//!
//! A real mesh runs from the built binary ([`common::bin`]; `LIGHTPATH_BIN` picks another build): an
//! origin, two edges (edge-ap, edge-us) and a control replica `control-1` with a `[director]` on HTTP and
//! DNS and a coverage-zone file that puts 127.0.0.1 in ap. Once the director sends a viewer from 127.0.0.1
//! to edge-ap (both edges report a link up and pass their health checks), the replica's process is pinned
//! to CPU 0 (`taskset -a -p`) and this process, the load generator, to CPU 1: the director has one core.
//!
//! - **HTTP**: `HTTP_CONNECTIONS` (32) keep-alive HTTP/1.1 connections from 127.0.0.1, each sending `GET
//!   /live/s/index.m3u8?token=...` and reading the whole `302 Found` before the next; every answer must be
//!   a 302 to edge-ap.
//! - **DNS**: `DNS_IN_FLIGHT` (32) UDP sockets, each sending an A query for the director's name with an
//!   EDNS Client Subnet (a /24 of ap's zone) and waiting for its answer before the next (a query unanswered
//!   within 1 s is counted lost and sent again); every answer must be edge-ap's address.
//!
//! Each phase runs `DURATION_S` (5) seconds after a 1 s warm-up, and at most `MAX_REQUESTS` (5,000,000)
//! requests. Reported: answers per second, p50/p99/max latency of single requests (send to whole answer),
//! and the director's CPU over the phase (utime + stime of the replica process; 100 % is its one core) and
//! per answer. On a machine where other work shares the director's core, or the generator's, the CPU per
//! answer is the steadier figure: one core's worth of answers per second is 1 s over it.
//!
//! Run: `cargo bench --bench director` (about 20 s after the build).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{free_port, Cluster, NodeSpec};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(run())
}

/// The replica's CPU time so far (utime + stime), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("no ')' in stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

fn pin(pid: u32, cpu: u32) -> Result<()> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("taskset (util-linux) is required")?;
    ensure!(out.status.success(), "taskset: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// What one phase measured.
struct Phase {
    answers: u64,
    lost: u64,
    window: Duration,
    latencies: Vec<Duration>,
    cpu: Duration,
}

impl Phase {
    fn print(&mut self, name: &str) {
        self.latencies.sort_unstable();
        let at = |p: f64| self.latencies[((self.latencies.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name:<26} {:>7.0}/s   p50 {:>6.1} us   p99 {:>7.1} us   max {:>8.1} us   director CPU {:>3.0} %, {:.1} us per answer{}",
            self.answers as f64 / self.window.as_secs_f64(),
            at(0.5).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6,
            self.latencies.last().unwrap().as_secs_f64() * 1e6,
            100.0 * self.cpu.as_secs_f64() / self.window.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e6 / self.answers as f64,
            if self.lost > 0 { format!("   ({} lost)", self.lost) } else { String::new() },
        );
    }
}

/// Runs `workers` copies of `work` for the warm-up then the window; each returns its answers, losses and
/// latencies (those it finished inside the window).
async fn phase<F, Fut>(pid: u32, workers: usize, work: F) -> Result<Phase>
where
    F: Fn(usize, Arc<AtomicBool>, Arc<AtomicBool>, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(u64, u64, Vec<Duration>)>> + Send + 'static,
{
    let duration = Duration::from_secs(env_or("DURATION_S", 5));
    let per_worker = env_or("MAX_REQUESTS", 5_000_000) / workers as u64;
    let (measuring, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let tasks: Vec<_> =
        (0..workers).map(|i| tokio::spawn(work(i, measuring.clone(), stop.clone(), per_worker))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, t0) = (cpu_time(pid)?, Instant::now());
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let (cpu, window) = (cpu_time(pid)? - cpu0, t0.elapsed());
    let mut out = Phase { answers: 0, lost: 0, window, latencies: Vec::new(), cpu };
    for task in tasks {
        let (answers, lost, latencies) = task.await??;
        out.answers += answers;
        out.lost += lost;
        out.latencies.extend(latencies);
    }
    ensure!(out.answers > 0, "no answer in the window");
    Ok(out)
}

/// Keep-alive GETs on one connection: each must be a 302 to `want`.
async fn http_worker(
    director: SocketAddr,
    want: String,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    limit: u64,
) -> Result<(u64, u64, Vec<Duration>)> {
    let mut tcp = tokio::net::TcpStream::connect(director).await?;
    tcp.set_nodelay(true)?;
    let request = b"GET /live/s/index.m3u8?token=k1.1800000000.abcdef HTTP/1.1\r\nHost: director\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    let (mut answers, mut latencies) = (0, Vec::new());
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) && sent < limit {
        let t = Instant::now();
        tcp.write_all(request).await?;
        sent += 1;
        // Read the head, then as much body as Content-Length says.
        let mut have = 0;
        let (head_end, length) = loop {
            let n = tcp.read(&mut buf[have..]).await?;
            ensure!(n > 0, "the director closed the connection");
            have += n;
            if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end])?;
                ensure!(head.starts_with("HTTP/1.1 302"), "not a 302: {head}");
                ensure!(head.contains(&want), "not sent to {want}: {head}");
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .context("no content-length")?
                    .parse::<usize>()?;
                break (end + 4, length);
            }
            ensure!(have < buf.len(), "a head longer than {} bytes", buf.len());
        };
        while have < head_end + length {
            let n = tcp.read(&mut buf[have..]).await?;
            ensure!(n > 0, "the director closed the connection mid-body");
            have += n;
        }
        if measuring.load(Ordering::Relaxed) {
            answers += 1;
            latencies.push(t.elapsed());
        }
    }
    Ok((answers, 0, latencies))
}

/// A query with the client subnet `subnet`/24, id `id`.
fn query(id: u16, name: &Name, subnet: std::net::IpAddr) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).add_query(Query::query(name.clone(), RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(subnet, 24, 0)));
    m.set_edns(edns);
    m.to_vec().expect("a query encodes")
}

/// One query at a time on one socket: each answer must be an A record of `want`.
async fn dns_worker(
    dns: SocketAddr,
    name: Name,
    want: std::net::IpAddr,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    limit: u64,
) -> Result<(u64, u64, Vec<Duration>)> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(dns).await?;
    let mut buf = vec![0u8; 2048];
    let (mut answers, mut lost, mut latencies) = (0, 0, Vec::new());
    let mut id: u16 = 0;
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) && sent < limit {
        id = id.wrapping_add(1);
        let t = Instant::now();
        socket.send(&query(id, &name, "127.0.0.0".parse()?)).await?;
        sent += 1;
        let answer = loop {
            match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
                Err(_) => break None,
                Ok(n) => {
                    let m = Message::from_vec(&buf[..n?])?;
                    if m.id() == id {
                        break Some(m);
                    }
                }
            }
        };
        let Some(answer) = answer else {
            lost += 1;
            continue;
        };
        let got = answer.answers().first().and_then(|r| match r.data() {
            Some(RData::A(a)) => Some(std::net::IpAddr::V4(a.0)),
            _ => None,
        });
        ensure!(got == Some(want), "answered {:?} ({}), not {want}", got, answer.response_code());
        if measuring.load(Ordering::Relaxed) {
            answers += 1;
            latencies.push(t.elapsed());
        }
    }
    Ok((answers, lost, latencies))
}

async fn run() -> Result<()> {
    let base = 167;
    let mut mesh = Cluster::with_controls(
        base,
        &[
            NodeSpec { id: "origin", roles: &["origin"] },
            NodeSpec { id: "edge-ap", roles: &["edge"] },
            NodeSpec { id: "edge-us", roles: &["edge"] },
        ],
        &[("origin", "edge-ap", 1.0), ("origin", "edge-us", 1.0)],
        &["control-1"],
        "",
    );
    mesh.place(
        &[("eu", 53.35, -6.26), ("us", 39.04, -77.49), ("ap", 1.35, 103.82)],
        &[("origin", "eu"), ("edge-ap", "ap"), ("edge-us", "us")],
    );
    let ip = mesh.node("control-1").http.ip().to_string();
    let http: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse()?;
    let dns: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse()?;
    std::fs::write(mesh.dir.path().join("zones.txt"), "127.0.0.0/24 ap\n")?;
    mesh.append_config(
        "control-1",
        &format!(
            "\n[director]\nlisten = \"{http}\"\nregion = \"eu\"\ncoverage_zones = \"zones.txt\"\n\
             dns_listen = \"{dns}\"\ndns_name = \"live.bench\"\n"
        ),
    );
    mesh.start_all();
    mesh.wait_healthy().await;
    println!("director from {} (control-1 pinned to CPU 0, load on CPU 1)", common::bin());
    let want = format!("http://{}/live/s/index.m3u8", mesh.http("edge-ap"));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client.get(format!("http://{http}/live/s/index.m3u8")).send().await?;
        if resp.headers().get("location").is_some_and(|l| l.to_str().is_ok_and(|l| l.starts_with(&want))) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the director never sent a viewer to edge-ap:\n{}", mesh.log("control-1"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = mesh.pid("control-1").context("control-1 runs")?;
    pin(pid, 0)?;
    pin(std::process::id(), 1)?;

    let connections = env_or("HTTP_CONNECTIONS", 32) as usize;
    let mut http_phase = phase(pid, connections, |_, m, s, limit| http_worker(http, want.clone(), m, s, limit)).await?;
    http_phase.print(&format!("HTTP 302, {connections} connections"));

    let in_flight = env_or("DNS_IN_FLIGHT", 32) as usize;
    let name = Name::from_ascii("live.bench.")?;
    let edge_ip = mesh.http("edge-ap").ip();
    let mut dns_phase =
        phase(pid, in_flight, |_, m, s, limit| dns_worker(dns, name.clone(), edge_ip, m, s, limit)).await?;
    dns_phase.print(&format!("DNS A + ECS, {in_flight} in flight"));
    Ok(())
}
