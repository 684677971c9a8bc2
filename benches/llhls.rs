//! Low-Latency HLS at the demo's farthest edge (Singapore, two emulated hops from the origin in Dublin):
//!
//! 1. **Glass to glass**: hls.js in headless Chromium (`tests/browser/play.mjs`) plays the edge for
//!    [`PLAY_S`] seconds in low-latency mode, then as a plain HLS player (the same stream, parts ignored);
//!    each second it samples now minus the playhead's `EXT-X-PROGRAM-DATE-TIME` (the publisher's clock when
//!    the segment's first chunk left it) and hls.js's own latency estimate.
//! 2. **Parked reloads**: [`PARKED`] connections each send a blocking reload for a part a second or more
//!    ahead and wait; the demo process's resident memory is read before and while they are held, and the
//!    time from the first answer (the playlist listing the part has landed) to each other answer is
//!    measured, each answer timed by the kernel as it reached its client's socket (`SO_TIMESTAMPNS`).
//!
//! `lightpath demo` runs as a separate process on fresh loopback ports. Needs chromium, node and
//! `npm ci --prefix tests/browser`. Run: `cargo bench --bench llhls` (about 2 minutes; `-- parked` runs only
//! the second part, without the browser). Figures go to BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{free_port, play_in_browser, spawn_demo, Killed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PLAY_S: u32 = 30;
const PARKED: usize = 10_000;
/// Client source addresses the parked connections spread over (the edge admits 256 per address).
const SOURCES: usize = 50;

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "floor") {
        let addr = args.get(at + 1).context("floor ADDR LEN")?.parse()?;
        let len = args.get(at + 2).context("floor ADDR LEN")?.parse()?;
        return rt.block_on(floor(addr, len));
    }
    rt.block_on(run())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run() -> Result<()> {
    let _ = lightpath::cache::sealed::raise_fd_limit();
    let dir = tempfile::tempdir()?;
    let (demo, edge) = spawn_demo(dir.path(), "edge-ap", "warn");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let playlist = format!("http://{edge}/live/demo/stream0.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(&playlist).send().await {
            if resp.text().await.is_ok_and(|t| t.contains("#EXTINF")) {
                break;
            }
        }
        ensure!(Instant::now() < deadline, "the demo stream never reached edge-ap");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if std::env::args().any(|a| a == "parked") {
        return parked(edge, &client, demo.0.id()).await;
    }
    println!("glass to glass at edge-ap, {PLAY_S} s of hls.js each (seconds):");
    println!("| player | samples | glass p50 | glass p99 | hls.js latency p50 | parts buffered | stalls |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for mode in ["low", "plain"] {
        let seen = play_in_browser(&format!("http://{edge}/live/demo/index.m3u8"), PLAY_S, mode, "").await;
        let series = |key: &str| {
            let mut v: Vec<f64> = seen[key].as_array().into_iter().flatten().filter_map(|x| x.as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (glass, latency) = (series("glass"), series("latency"));
        ensure!(!glass.is_empty(), "no samples: {seen}");
        println!(
            "| hls.js {} | {} | {:.3} | {:.3} | {:.3} | {} | {} |",
            if mode == "low" { "lowLatencyMode" } else { "plain HLS" },
            glass.len(),
            percentile(&glass, 0.5),
            percentile(&glass, 0.99),
            latency.get(latency.len() / 2).copied().unwrap_or(f64::NAN),
            seen["parts"],
            seen["stalls"]
        );
    }

    parked(edge, &client, demo.0.id()).await
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

async fn parked(edge: SocketAddr, client: &reqwest::Client, pid: u32) -> Result<()> {
    let playlist = format!("http://{edge}/live/demo/stream0.m3u8");
    let open_msn = |text: &str| lightpath::hls::ll::Position::read(text).map(|p| p.open_msn);
    // Start right after a segment opens, then park on a late part of the next one: about 3.6 s away, time
    // enough to connect every client before it lands, and within the three target durations a reload may
    // be held.
    let first = open_msn(&client.get(&playlist).send().await?.text().await?).context("a media playlist")?;
    let (opened, body_len) = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let text = client.get(&playlist).send().await?.text().await?;
        match open_msn(&text) {
            Some(msn) if msn != first => break (msn, text.len()),
            _ => {}
        }
    };
    let (msn, part) = (opened + 1, 8u64);
    let before = rss_kib(pid)?;
    let request =
        format!("GET /live/demo/stream0.m3u8?_HLS_msn={msn}&_HLS_part={part} HTTP/1.1\r\nHost: {edge}\r\n\r\n");
    let edge_run = park(edge, &request, || rss_kib(pid)).await?;

    // The floor: a bare tokio server in its own process that reads each request, holds it, and then writes
    // one prepared answer of the playlist's size to every connection at once.
    let floor_addr: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse()?;
    let floor = Killed(
        Command::new(std::env::current_exe()?)
            .args(["floor", &floor_addr.to_string(), &body_len.to_string()])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(floor_addr).await.is_err() {
        ensure!(Instant::now() < deadline, "the floor server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let floor_pid = floor.0.id();
    let floor_run = park(floor_addr, &request, || rss_kib(floor_pid)).await?;

    println!();
    println!("{PARKED} blocking reloads parked at edge-ap, and at a bare server that only holds them:");
    println!("Answers are timed when they reached the client's socket (kernel receive timestamps), after the first");
    println!("one; the last column times them when the client tasks, sharing the cores with the server, read them.");
    println!("| server | connected in | RSS before | while parked | per parked request | answers after the first: p50 | p99 | last | answered before all were sent | read by the client: p99 |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, before, run) in [("lightpath edge", before, edge_run), ("bare tokio floor", floor_run.before, floor_run)]
    {
        println!(
            "| {name} | {:.2} s | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.1} ms |",
            run.connected_in.as_secs_f64(),
            before as f64 / 1024.0,
            run.held as f64 / 1024.0,
            run.held.saturating_sub(before) as f64 / PARKED as f64,
            percentile(&run.after_first, 0.5),
            percentile(&run.after_first, 0.99),
            run.after_first.last().copied().unwrap_or(f64::NAN),
            run.not_parked,
            percentile(&run.read_after_first, 0.99),
        );
    }
    Ok(())
}

/// What one parking run saw.
struct Parked {
    connected_in: Duration,
    /// The server's resident KiB before the clients connected and while they were held.
    before: u64,
    held: u64,
    /// Each answer's arrival at its client's socket (the kernel's receive timestamp) after the first one's,
    /// in ms, sorted.
    after_first: Vec<f64>,
    /// The same, timed when each client task read its answer.
    read_after_first: Vec<f64>,
    /// Answers that came before the last request was sent (so not truly parked).
    not_parked: usize,
}

/// Opens [`PARKED`] connections to `server`, each sending `request`, reads the server's RSS once all are
/// sent, and waits for every answer.
async fn park(server: SocketAddr, request: &str, rss: impl Fn() -> Result<u64>) -> Result<Parked> {
    let before = rss()?;
    let started = Instant::now();
    // Every client connects in its own task, so all are parked within a fraction of the wait.
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel::<()>(PARKED);
    let mut tasks = Vec::with_capacity(PARKED);
    for i in 0..PARKED {
        let source: SocketAddr = format!("127.0.100.{}:0", 1 + i % SOURCES).parse()?;
        let (request, sent) = (request.to_owned(), sent_tx.clone());
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(source).ok()?;
            let mut tcp = socket.connect(server).await.ok()?;
            receive_timestamps(&tcp).ok()?;
            tcp.write_all(request.as_bytes()).await.ok()?;
            let _ = sent.send(()).await;
            let read = read_stamped(&tcp).await;
            let at = Instant::now();
            Some((read, at, tcp))
        }));
    }
    drop(sent_tx);
    let mut sent = 0;
    while sent < PARKED && sent_rx.recv().await.is_some() {
        sent += 1;
    }
    let connected_in = started.elapsed();
    ensure!(sent == PARKED, "only {sent} of {PARKED} clients could connect and send to {server}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = rss()?;
    let sent_all = started + connected_in;
    let mut answers = Vec::with_capacity(PARKED);
    let mut wrong = std::collections::BTreeMap::<String, usize>::new();
    // Every connection stays open until all are answered: a client that hung up while others still wait
    // would make the server close connections in the middle of the burst it is timed on.
    let mut open = Vec::with_capacity(PARKED);
    let mut arrived = Vec::with_capacity(PARKED);
    for task in tasks {
        let Some((read, at, tcp)) = task.await? else { bail!("a client could not connect to {server}") };
        open.push(tcp);
        match read {
            Ok((head, stamp)) if head.starts_with("HTTP/1.1 200 ") => {
                answers.push(at);
                arrived.push(stamp.context("an answer without a receive timestamp")?);
            }
            Ok((head, _)) if head.is_empty() => *wrong.entry("closed without an answer".into()).or_default() += 1,
            Ok((head, _)) => *wrong.entry(head).or_default() += 1,
            Err(e) => *wrong.entry(e.to_string()).or_default() += 1,
        }
    }
    drop(open);
    ensure!(wrong.is_empty(), "{server}: {} of {PARKED} parked requests got no 200: {wrong:?}", PARKED - answers.len());
    let not_parked = answers.iter().filter(|&&at| at < sent_all).count();
    let read_after_first = after_first(answers.iter().map(|at| at.duration_since(started).as_secs_f64() * 1000.0));
    let after_first = after_first(arrived.iter().map(|&ns| ns as f64 / 1e6));
    Ok(Parked { connected_in, before, held, after_first, read_after_first, not_parked })
}

/// Each of `ms` (times in ms, on any one clock) after the earliest of them, sorted. The playlist listing the
/// part lands right after the part: the first answer marks it.
fn after_first(ms: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut ms: Vec<f64> = ms.collect();
    let first = ms.iter().copied().fold(f64::INFINITY, f64::min);
    for t in &mut ms {
        *t -= first;
    }
    ms.sort_by(f64::total_cmp);
    ms
}

/// Asks the kernel to stamp each segment this socket receives with the time it arrived (`SO_TIMESTAMPNS`),
/// so an answer is timed when it reached the client's socket, not when a client task sharing the cores with
/// 9,999 others got to read it.
fn receive_timestamps(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and an int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads the start of the answer and the kernel's receive time of its first segment (ns since the epoch).
async fn read_stamped(tcp: &tokio::net::TcpStream) -> std::io::Result<(String, Option<i128>)> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 16];
    loop {
        tcp.readable().await?;
        let got = tcp.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let mut control = [0u64; 16];
            // SAFETY: msghdr is plain data; every pointer set below outlives the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: a valid socket descriptor and a msghdr whose buffers are live and sized as declared.
            let n = unsafe { libc::recvmsg(tcp.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut stamp = None;
            // SAFETY: the cmsg walk stays within the control buffer the kernel filled in (msg_controllen).
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                        let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                        stamp = Some(ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128);
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
            }
            Ok((n as usize, stamp))
        });
        match got {
            Ok((n, stamp)) => return Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), stamp)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The floor server: accepts connections, reads a request head from each, and once [`PARKED`] are held
/// (and a second has passed for the client to measure memory) answers them all with one prepared reply.
async fn floor(addr: SocketAddr, body_len: usize) -> Result<()> {
    let _ = lightpath::cache::sealed::raise_fd_limit();
    // The listen backlog a node's HTTP listener has, so its clients connect as the edge's do.
    let listener = lightpath::listen::bind_http(addr)?;
    let reply: std::sync::Arc<[u8]> = {
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n").into_bytes();
        r.resize(r.len() + body_len, b'#');
        r.into()
    };
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Ok(Ok((mut tcp, _))) = tokio::time::timeout(Duration::from_secs(1), listener.accept()).await else {
            continue;
        };
        let (reply, mut go, held, go_tx) = (reply.clone(), go_rx.clone(), held.clone(), go_tx.clone());
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(256);
            let mut buf = [0u8; 256];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if held.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == PARKED {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = go_tx.send(true);
                });
            }
            let _ = go.wait_for(|&go| go).await;
            let _ = tcp.write_all(&reply).await;
            let _ = tcp.read(&mut buf).await;
        });
    }
    Ok(())
}
