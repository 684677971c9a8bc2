//! The WAN emulation on real sockets on loopback, and QUIC connections across it.
//!
//! These check behaviour (what arrives, in which order, what a partition does); a delay is bounded exactly
//! from below and only loosely (10x) from above, to catch a hang. The figures (how close a delay comes to
//! the configured one, what a lost tail costs) are `benches/netem.rs`'s.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use quinn::udp::Transmit;
use quinn::AsyncUdpSocket;

use super::socket::ImpairedSocket;
use super::*;
use crate::ca::{create_ca, issue, CaFiles, Identity};
use crate::id::NodeId;

fn transmit(to: SocketAddr, contents: &[u8]) -> Transmit<'_> {
    Transmit { destination: to, ecn: None, contents, segment_size: None, src_ip: None }
}

// --- Real sockets on loopback. ---

/// Ends a run of datagrams: the receiving thread stops when it sees it.
const END: &[u8] = b"end";
/// How long a receiver waits for the next datagram before it gives up: only a guard against a hang.
const HANG: Duration = Duration::from_secs(10);

async fn send_to(sock: &Arc<dyn AsyncUdpSocket>, to: SocketAddr, payload: &[u8]) {
    let t = transmit(to, payload);
    loop {
        match sock.try_send(&t) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut poller = sock.clone().create_io_poller();
                std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await.unwrap();
            }
            Err(e) => panic!("send to {to}: {e}"),
        }
    }
}

fn sender(table: &Impairments) -> Arc<dyn AsyncUdpSocket> {
    impaired_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), table.clone()).unwrap()
}

/// Datagrams with their arrival times.
type Arrivals = Vec<(StdInstant, Vec<u8>)>;

/// A receiving socket served by its own thread, so that a busy test runtime neither delays nor overflows
/// it. The thread returns every datagram before [`END`] with its arrival time.
fn receive_in_thread() -> (SocketAddr, std::thread::JoinHandle<Arrivals>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(HANG)).unwrap();
    let addr = sock.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = sock.recv(&mut buf) {
            if &buf[..n] == END {
                break;
            }
            out.push((StdInstant::now(), buf[..n].to_vec()));
        }
        out
    });
    (addr, thread)
}

async fn receiver() -> (tokio::net::UdpSocket, SocketAddr) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    (sock, addr)
}

/// Whether any datagram reaches `sock` within `window`.
async fn anything_within(sock: &tokio::net::UdpSocket, window: Duration) -> bool {
    let mut buf = [0u8; 2048];
    tokio::time::timeout(window, sock.recv(&mut buf)).await.is_ok()
}

/// The shortest of `tries` one-way trips to `to`; every one of them is at least `floor`.
async fn one_way(
    sock: &Arc<dyn AsyncUdpSocket>,
    to: SocketAddr,
    rx: &tokio::net::UdpSocket,
    tries: u32,
    floor: Duration,
) -> Duration {
    let mut shortest = Duration::MAX;
    for _ in 0..tries {
        let sent = StdInstant::now();
        send_to(sock, to, b"ping").await;
        let mut buf = [0u8; 64];
        tokio::time::timeout(HANG, rx.recv(&mut buf)).await.expect("datagram lost").unwrap();
        let took = sent.elapsed();
        assert!(took >= floor, "a datagram took {took:?}, less than {floor:?}");
        shortest = shortest.min(took);
    }
    shortest
}

#[test]
fn needs_a_runtime_and_does_not_panic_without_one() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(impaired_socket(sock, Impairments::default()).is_err());
}

// Each of these bounds a delay exactly from below; from above only at ten times the figure, so that a hang
// fails them and a busy machine does not. How close the delays come is `benches/netem.rs`'s figure.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_applies_to_the_impaired_address_only() {
    let table = Impairments::default();
    let tx = sender(&table);
    let (slow_rx, slow) = receiver().await;
    let (fast_rx, fast) = receiver().await;
    table.set(slow, Impairment { delay_ms: 100.0, ..Default::default() });
    let t = one_way(&tx, slow, &slow_rx, 5, Duration::from_millis(100)).await;
    assert!(t < Duration::from_millis(1000), "{t:?}");
    let t = one_way(&tx, fast, &fast_rx, 5, Duration::ZERO).await;
    assert!(t < Duration::from_millis(500), "unimpaired link took {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_drops_about_thirty_percent() {
    let table = Impairments::default();
    let tx = sender(&table);
    let (to, receiving) = receive_in_thread();
    table.set(to, Impairment { loss: 0.3, ..Default::default() });
    for i in 0..2000u32 {
        send_to(&tx, to, &i.to_be_bytes()).await;
        if i % 50 == 49 {
            // Paced so that the receiver's socket buffer never overflows.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    table.clear(to);
    send_to(&tx, to, END).await;
    let got = receiving.join().unwrap().len();
    assert!((1250..1550).contains(&got), "{got} of 2000 arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_and_runtime_changes_apply_to_later_datagrams() {
    let table = Impairments::default();
    let tx = sender(&table);
    let (rx, to) = receiver().await;
    table.set(to, Impairment { up: false, ..Default::default() });
    for _ in 0..20 {
        send_to(&tx, to, b"lost").await;
    }
    assert!(!anything_within(&rx, Duration::from_millis(300)).await, "crossed a partition");

    table.set(to, Impairment { delay_ms: 50.0, ..table.get(to).unwrap() });
    send_to(&tx, to, b"lost").await;
    assert!(!anything_within(&rx, Duration::from_millis(200)).await, "still partitioned");
    table.set(to, Impairment { up: true, ..table.get(to).unwrap() });
    let t = one_way(&tx, to, &rx, 3, Duration::from_millis(50)).await;
    assert!(t < Duration::from_millis(500), "{t:?}");

    table.clear(to);
    let t = one_way(&tx, to, &rx, 3, Duration::ZERO).await;
    assert!(t < Duration::from_millis(500), "{t:?} after clear");
    assert!(!anything_within(&rx, Duration::from_millis(100)).await, "a dropped datagram came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_never_reorders() {
    let table = Impairments::default();
    let tx = sender(&table);
    let (to, receiving) = receive_in_thread();
    table.set(to, Impairment { delay_ms: 10.0, jitter_ms: 30.0, ..Default::default() });
    for i in 0..300u32 {
        send_to(&tx, to, &i.to_be_bytes()).await;
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    send_to(&tx, to, END).await;
    let got: Vec<u32> =
        receiving.join().unwrap().into_iter().map(|(_, c)| u32::from_be_bytes(c[..4].try_into().unwrap())).collect();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_cap_limits_throughput() {
    // 8,000 kbit/s = 1,000 bytes per ms. 150 kB fit in the 200 ms queue: all arrive, and the last no
    // sooner than 150 ms after the first was sent.
    let table = Impairments::default();
    let tx = sender(&table);
    let (to, receiving) = receive_in_thread();
    table.set(to, Impairment { rate_kbps: 8_000, ..Default::default() });
    let started = StdInstant::now();
    for _ in 0..150 {
        send_to(&tx, to, &[0u8; 1000]).await;
    }
    send_to(&tx, to, END).await;
    let got = receiving.join().unwrap();
    assert_eq!(got.len(), 150);
    let took = got[149].0 - started;
    assert!(took >= Duration::from_millis(150), "150 kB crossed a 1 MB/s link in {took:?}");
    assert!(took < Duration::from_millis(1500), "150 kB took {took:?} on a 1 MB/s link");

    // 400 kB do not fit: what is beyond the queue is dropped (the exact count is the scheduler's test).
    let (to, receiving) = receive_in_thread();
    table.set(to, Impairment { rate_kbps: 8_000, ..Default::default() });
    for _ in 0..400 {
        send_to(&tx, to, &[0u8; 1000]).await;
    }
    // The end marker queues behind the backlog and may be tail-dropped itself: send it until it arrives.
    while !receiving.is_finished() {
        send_to(&tx, to, END).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrived = receiving.join().unwrap().len();
    assert!((190..400).contains(&arrived), "{arrived} of 400 datagrams arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gso_batch_to_an_impaired_address_arrives_as_datagrams() {
    let table = Impairments::default();
    let tx = sender(&table);
    let (to, receiving) = receive_in_thread();
    table.set(to, Impairment { delay_ms: 5.0, ..Default::default() });
    let data: Vec<u8> = (0..=255u8).cycle().take(350).collect();
    tx.try_send(&Transmit { segment_size: Some(100), ..transmit(to, &data) }).unwrap();
    send_to(&tx, to, END).await;
    let got = receiving.join().unwrap();
    let sizes: Vec<usize> = got.iter().map(|(_, c)| c.len()).collect();
    assert_eq!(sizes, [100, 100, 100, 50]);
    assert_eq!(got.into_iter().flat_map(|(_, c)| c).collect::<Vec<_>>(), data);
}

#[tokio::test]
async fn dropping_the_socket_ends_its_task_and_frees_the_port() {
    let table = Impairments::default();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let tx = ImpairedSocket::start(socket, table.clone()).unwrap();
    let shared = Arc::downgrade(&tx.shared);
    let (_rx, to) = receiver().await;
    table.set(to, Impairment { delay_ms: 10_000.0, ..Default::default() });
    let tx: Arc<dyn AsyncUdpSocket> = tx;
    send_to(&tx, to, b"never sent").await;
    drop(tx);
    // The task wakes at once and drops its queue and the inner socket.
    for _ in 0..100 {
        if shared.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(shared.upgrade().is_none(), "the scheduling task outlived its socket");
    std::net::UdpSocket::bind(local).expect("the port is still held");
}

// --- QUIC end to end. ---

fn endpoint(ca: &CaFiles, node: &str, table: &Impairments, transport: Arc<quinn::TransportConfig>) -> quinn::Endpoint {
    let id = NodeId::new(node).unwrap();
    let files = issue(ca, &id, 1).unwrap();
    let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem).unwrap();
    let server = crate::quic::server_config(&identity, transport.clone()).unwrap();
    let client = crate::quic::client_config(&identity, transport).unwrap();
    let socket = impaired_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), table.clone()).unwrap();
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    endpoint.set_default_client_config(client);
    endpoint
}

struct Pair {
    a: quinn::Endpoint,
    b: quinn::Endpoint,
    a_table: Impairments,
    a_conn: quinn::Connection,
    b_conn: quinn::Connection,
}

/// Two endpoints, each with its own table; `a` dials `b` after `setup` has impaired the tables.
async fn pair(idle: Duration, setup: impl FnOnce(&Impairments, SocketAddr, &Impairments, SocketAddr)) -> Pair {
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(idle.try_into().unwrap()));
    transport.keep_alive_interval(Some(Duration::from_millis(300)));
    pair_with(Arc::new(transport), setup).await
}

async fn pair_with(
    transport: Arc<quinn::TransportConfig>,
    setup: impl FnOnce(&Impairments, SocketAddr, &Impairments, SocketAddr),
) -> Pair {
    let ca = create_ca("impair test CA").unwrap();
    let (a_table, b_table) = (Impairments::default(), Impairments::default());
    let a = endpoint(&ca, "node-a", &a_table, transport.clone());
    let b = endpoint(&ca, "node-b", &b_table, transport);
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    setup(&a_table, b_addr, &b_table, a_addr);
    let accepting = {
        let b = b.clone();
        tokio::spawn(async move { b.accept().await.unwrap().await.unwrap() })
    };
    let a_conn = a.connect(b_addr, "node-b").unwrap().await.unwrap();
    let b_conn = accepting.await.unwrap();
    Pair { a, b, a_table, a_conn, b_conn }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_rtt_is_twice_the_one_way_delay() {
    let delay = Impairment { delay_ms: 20.0, ..Default::default() };
    let p = pair(Duration::from_secs(10), |a, b_addr, b, a_addr| {
        a.set(b_addr, delay);
        b.set(a_addr, delay);
    })
    .await;
    let echo = {
        let conn = p.b_conn.clone();
        tokio::spawn(async move {
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let mut buf = [0u8; 16];
            while recv.read_exact(&mut buf).await.is_ok() {
                send.write_all(&buf).await.unwrap();
            }
        })
    };
    let (mut send, mut recv) = p.a_conn.open_bi().await.unwrap();
    let mut buf = [0u8; 16];
    for i in 0..10u8 {
        let started = StdInstant::now();
        send.write_all(&[i; 16]).await.unwrap();
        recv.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [i; 16]);
        let round_trip = started.elapsed();
        assert!(round_trip >= Duration::from_millis(40), "round trip {i} took {round_trip:?}");
    }
    for (side, rtt) in [("a", p.a_conn.rtt()), ("b", p.b_conn.rtt())] {
        assert!(rtt >= Duration::from_millis(40) && rtt < Duration::from_millis(400), "{side}: rtt {rtt:?}");
    }
    send.finish().unwrap();
    drop(send);
    echo.await.unwrap();
    p.a.close(0u32.into(), b"done");
    p.b.close(0u32.into(), b"done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_partition_stalls_then_recovers_or_times_out() {
    let p = pair(Duration::from_secs(3), |a, b_addr, b, a_addr| {
        let delay = Impairment { delay_ms: 5.0, ..Default::default() };
        a.set(b_addr, delay);
        b.set(a_addr, delay);
    })
    .await;
    let b_addr = p.b.local_addr().unwrap();
    let down = Impairment { up: false, ..p.a_table.get(b_addr).unwrap() };

    // A partition shorter than the idle timeout: the data waits, then arrives.
    p.a_table.set(b_addr, down);
    let mut send = p.a_conn.open_uni().await.unwrap();
    send.write_all(b"across the partition").await.unwrap();
    send.finish().unwrap();
    let b_conn = p.b_conn.clone();
    let mut receiving = tokio::spawn(async move {
        let mut recv = b_conn.accept_uni().await.unwrap();
        recv.read_to_end(1024).await.unwrap()
    });
    let stalled = tokio::time::timeout(Duration::from_secs(1), &mut receiving).await;
    assert!(stalled.is_err(), "data crossed a partitioned link");
    p.a_table.set(b_addr, Impairment { up: true, ..down });
    let got = tokio::time::timeout(Duration::from_secs(10), receiving).await.expect("no recovery").unwrap();
    assert_eq!(got, b"across the partition");

    // A partition longer than the idle timeout: the side that hears nothing gives up.
    p.a_table.set(b_addr, down);
    let closed = tokio::time::timeout(Duration::from_secs(30), p.b_conn.closed()).await.expect("never timed out");
    assert_eq!(closed, quinn::ConnectionError::TimedOut);
}

/// Sends `count` objects of `len` bytes one after the other from `a` to `b`, each on its own stream, and
/// checks that each arrives whole before the next leaves.
async fn send_objects(p: &Pair, count: usize, len: usize) {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let b_conn = p.b_conn.clone();
    let receiver = tokio::spawn(async move {
        while let Ok(mut recv) = b_conn.accept_uni().await {
            let got = recv.read_to_end(len).await.unwrap();
            let _ = done_tx.send(got);
        }
    });
    let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
    for i in 0..count {
        let mut send = p.a_conn.open_uni().await.unwrap();
        send.write_all(&body).await.unwrap();
        send.finish().unwrap();
        let got = tokio::time::timeout(HANG, done_rx.recv()).await.expect("an object never arrived").unwrap();
        assert!(got == body, "object {i} arrived with {} bytes, not the {len} sent", got.len());
    }
    receiver.abort();
}

/// With 3 % loss each way, some objects lose packets, their last ones included, which only the probe
/// timeout finds: every object still arrives whole on the mesh's transport. What such a loss costs in time
/// (a few ms with the transport's 2 ms ACK delay, over 25 ms with QUIC's default) is `benches/netem.rs`'s
/// figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_link_delivers_every_object_whole_on_the_mesh_transport() {
    let p = pair_with(
        Arc::new(crate::quic::transport(crate::config::QuicConfig::default().max_object_streams)),
        |a, b_addr, b, a_addr| {
            let loss = Impairment { loss: 0.03, ..Default::default() };
            a.set(b_addr, loss);
            b.set(a_addr, loss);
        },
    )
    .await;
    send_objects(&p, 300, 12_000).await;
    p.a.close(0u32.into(), b"done");
    p.b.close(0u32.into(), b"done");
}
