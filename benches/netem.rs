//! The WAN emulation's figures (`src/netem/`): how closely an impaired socket keeps a configured delay, a
//! rate cap and a round-trip time, and what a lost tail costs an object on the mesh's QUIC transport.
//!
//! The tests in `src/netem/tests.rs` check behaviour and bound times only loosely (10x, against a hang);
//! the targets are here, where a busy machine makes a figure worse instead of failing a test run.
//!
//! - **one-way delay**: datagrams through a socket whose link to the receiver has 100 ms of delay, and
//!   through the same socket to an unimpaired receiver (target: within 5 ms above 100 ms, under 1 ms).
//! - **rate cap**: 150 datagrams of 1,000 bytes over an 8,000 kbit/s link (1,000 bytes per ms): the time
//!   from the first send to the last arrival (target: 150 ms, from below; within 20 % above).
//! - **QUIC round trip**: 20 ms of delay each way; echo round trips and quinn's RTT estimate (target: 40 ms,
//!   under 80 ms).
//! - **lost tail**: 500 objects of 12 KB, one after the other, over a link with 3 % loss each way, with the
//!   mesh's transport (which asks its peer to acknowledge within 2 ms) and with quinn's default (25 ms ACK
//!   delay). An object whose last packet is lost waits for the probe timeout, which includes the peer's
//!   ACK delay (target with the mesh's transport: at most 3 objects over 20 ms).
//!
//! Run: `cargo bench --bench netem` (about 20 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lightpath::ca::{create_ca, issue, CaFiles, Identity};
use lightpath::id::NodeId;
use lightpath::netem::{impaired_socket, Impairment, Impairments};
use quinn::udp::Transmit;
use quinn::AsyncUdpSocket;

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    println!("{:<52} {:>10} {:>10} {:>10} {:>10}  target", "case", "min", "p50", "p99", "max");
    one_way_delay().await?;
    rate_cap().await?;
    quic_round_trip().await?;
    let ca = create_ca("netem bench CA")?;
    for (name, transport) in [
        ("mesh transport", lightpath::quic::transport(lightpath::config::QuicConfig::default().max_object_streams)),
        ("quinn default", default_transport()),
    ] {
        lost_tail(&ca, name, transport).await?;
    }
    Ok(())
}

/// Prints one row: the distribution of `samples`.
fn row(case: &str, mut samples: Vec<Duration>, target: &str) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!(
        "{case:<52} {:>10} {:>10} {:>10} {:>10}  {target}",
        ms(samples[0]),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*samples.last().expect("samples"))
    );
}

fn sender(table: &Impairments) -> Result<Arc<dyn AsyncUdpSocket>> {
    Ok(impaired_socket(std::net::UdpSocket::bind("127.0.0.1:0")?, table.clone())?)
}

async fn send_to(sock: &Arc<dyn AsyncUdpSocket>, to: SocketAddr, payload: &[u8]) -> Result<()> {
    let transmit = Transmit { destination: to, ecn: None, contents: payload, segment_size: None, src_ip: None };
    loop {
        match sock.try_send(&transmit) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut poller = sock.clone().create_io_poller();
                std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await?;
            }
            Err(e) => return Err(e).with_context(|| format!("sending to {to}")),
        }
    }
}

async fn one_way_delay() -> Result<()> {
    let table = Impairments::default();
    let tx = sender(&table)?;
    for (case, delay_ms, target) in
        [("one-way delay, 100 ms link (100 datagrams)", 100.0, "100-105 ms"), ("one-way, unimpaired", 0.0, "< 1 ms")]
    {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let to = rx.local_addr()?;
        if delay_ms > 0.0 {
            table.set(to, Impairment { delay_ms, ..Impairment::default() });
        }
        let mut times = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..100 {
            let sent = Instant::now();
            send_to(&tx, to, b"ping").await?;
            tokio::time::timeout(Duration::from_secs(10), rx.recv(&mut buf)).await.context("datagram lost")??;
            times.push(sent.elapsed());
        }
        row(case, times, target);
    }
    Ok(())
}

async fn rate_cap() -> Result<()> {
    let table = Impairments::default();
    let tx = sender(&table)?;
    let mut times = Vec::new();
    for _ in 0..10 {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
        rx.set_read_timeout(Some(Duration::from_secs(10)))?;
        let to = rx.local_addr()?;
        table.set(to, Impairment { rate_kbps: 8_000, ..Impairment::default() });
        // A thread receives, so that a busy runtime does not delay the arrivals it times.
        let receiving = std::thread::spawn(move || -> std::io::Result<Instant> {
            let mut buf = [0u8; 2048];
            for _ in 0..150 {
                rx.recv(&mut buf)?;
            }
            Ok(Instant::now())
        });
        let started = Instant::now();
        for _ in 0..150 {
            send_to(&tx, to, &[0u8; 1000]).await?;
        }
        let last = receiving.join().expect("receiver thread")?;
        times.push(last - started);
    }
    row("rate cap: 150 kB over 8,000 kbit/s (10 runs)", times, "150-180 ms");
    Ok(())
}

/// quinn's transport with its defaults and a short idle timeout.
fn default_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(10).try_into().expect("10 s fits")));
    t
}

/// A quinn endpoint with node `id`'s certificate on an impaired 127.0.0.1 socket.
fn endpoint(
    ca: &CaFiles,
    id: &str,
    table: &Impairments,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::Endpoint> {
    let files = issue(ca, &NodeId::new(id)?, 1)?;
    let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem)?;
    let server = lightpath::quic::server_config(&identity, transport.clone())?;
    let client = lightpath::quic::client_config(&identity, transport)?;
    let socket = impaired_socket(std::net::UdpSocket::bind("127.0.0.1:0")?, table.clone())?;
    let runtime = quinn::default_runtime().context("no runtime")?;
    let mut endpoint =
        quinn::Endpoint::new_with_abstract_socket(quinn::EndpointConfig::default(), Some(server), socket, runtime)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Two endpoints, each impairing its link to the other with `imp`, and a connection from `a` to `b`.
async fn pair(
    ca: &CaFiles,
    transport: quinn::TransportConfig,
    imp: Impairment,
) -> Result<(quinn::Endpoint, quinn::Endpoint, quinn::Connection, quinn::Connection)> {
    let transport = Arc::new(transport);
    let (a_table, b_table) = (Impairments::default(), Impairments::default());
    let a = endpoint(ca, "node-a", &a_table, transport.clone())?;
    let b = endpoint(ca, "node-b", &b_table, transport)?;
    a_table.set(b.local_addr()?, imp);
    b_table.set(a.local_addr()?, imp);
    let accepting = {
        let b = b.clone();
        tokio::spawn(async move { anyhow::Ok(b.accept().await.context("b closed")?.await?) })
    };
    let a_conn = a.connect(b.local_addr()?, "node-b")?.await?;
    let b_conn = accepting.await??;
    Ok((a, b, a_conn, b_conn))
}

async fn quic_round_trip() -> Result<()> {
    let ca = create_ca("netem bench CA")?;
    let delay = Impairment { delay_ms: 20.0, ..Impairment::default() };
    let (a, b, a_conn, b_conn) = pair(&ca, default_transport(), delay).await?;
    let echo = tokio::spawn(async move {
        let (mut send, mut recv) = b_conn.accept_bi().await?;
        let mut buf = [0u8; 16];
        while recv.read_exact(&mut buf).await.is_ok() {
            send.write_all(&buf).await?;
        }
        anyhow::Ok(b_conn)
    });
    let (mut send, mut recv) = a_conn.open_bi().await?;
    let mut buf = [0u8; 16];
    let mut times = Vec::new();
    for i in 0..50u8 {
        let started = Instant::now();
        send.write_all(&[i; 16]).await?;
        recv.read_exact(&mut buf).await?;
        times.push(started.elapsed());
    }
    send.finish()?;
    drop(send);
    let b_conn = echo.await??;
    row("QUIC echo round trip, 20 ms each way (50)", times, "40-45 ms");
    row("QUIC RTT estimate (a, b)", vec![a_conn.rtt(), b_conn.rtt()], "40 ms, < 80 ms");
    a.close(0u32.into(), b"done");
    b.close(0u32.into(), b"done");
    Ok(())
}

async fn lost_tail(ca: &CaFiles, name: &str, transport: quinn::TransportConfig) -> Result<()> {
    const OBJECTS: usize = 500;
    const LEN: usize = 12_000;
    let loss = Impairment { loss: 0.03, ..Impairment::default() };
    let (a, b, a_conn, b_conn) = pair(ca, transport, loss).await?;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let receiver = tokio::spawn(async move {
        while let Ok(mut recv) = b_conn.accept_uni().await {
            let got = recv.read_to_end(LEN).await?;
            anyhow::ensure!(got.len() == LEN, "an object arrived with {} bytes", got.len());
            let _ = done_tx.send(());
        }
        anyhow::Ok(())
    });
    let body = vec![7u8; LEN];
    let mut times = Vec::with_capacity(OBJECTS);
    for _ in 0..OBJECTS {
        let started = Instant::now();
        let mut send = a_conn.open_uni().await?;
        send.write_all(&body).await?;
        send.finish()?;
        tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await.context("an object never arrived")?;
        times.push(started.elapsed());
    }
    receiver.abort();
    let late = times.iter().filter(|t| **t > Duration::from_millis(20)).count();
    let target = if name == "mesh transport" { "<= 3 over 20 ms" } else { "" };
    row(&format!("lost tail, 3 % loss, {name}: {late} of {OBJECTS} over 20 ms"), times, target);
    a.close(0u32.into(), b"done");
    b.close(0u32.into(), b"done");
    Ok(())
}
