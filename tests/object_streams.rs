//! What a mesh connection keeps of the object streams it received: as much as its grant of streams allows
//! (16 at first, up to `quic.max_object_streams` for a peer that uses more: `quic::credit`), reached early,
//! and then no more however many objects follow.
//!
//! quinn keeps a receive state for every stream a peer may open and reuses the state of a stream that
//! ended, with the reassembly queue it grew to, for a later one. One stream per object therefore made a
//! connection hold more with every object until all permitted streams had been used: with 1,024 permitted,
//! an edge's memory crept for half an hour of a soak (BENCHMARKS.md, "Soak"). This test sends objects
//! over real QUIC with the mesh's transport settings and mesh certificates, between two endpoints on
//! loopback in this process, and counts the heap bytes live with its own allocator. Each object is read
//! only once all of it has been acknowledged, as happens whenever a busy node's reading task runs behind
//! the network, so each stream's reassembly queue holds the whole object.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lightpath::ca::{create_ca, issue, CaFiles, Identity};
use lightpath::config::QuicConfig;
use lightpath::id::NodeId;
use tokio::sync::mpsc;

/// Heap bytes this process holds now.
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting the bytes live.
struct Counting;

// SAFETY: every call is passed on to `System` unchanged; the counter is only arithmetic beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// An object's size: a 1 Mbit/s segment of 2 s, about 220 packets.
const OBJECT: usize = 256 << 10;

fn endpoint(ca: &CaFiles, node: &str, transport: &Arc<quinn::TransportConfig>) -> quinn::Endpoint {
    let files = issue(ca, &NodeId::new(node).unwrap(), 1).unwrap();
    let identity = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem).unwrap();
    let server = lightpath::quic::server_config(&identity, transport.clone()).unwrap();
    let mut endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(lightpath::quic::client_config(&identity, transport.clone()).unwrap());
    endpoint
}

/// Sends `count` objects over `conn`, one at a time, each on its own stream, and returns once `reader`
/// has read the last; `arrived` tells the reader that an object was acknowledged whole.
async fn send_objects(
    conn: &quinn::Connection,
    body: &Bytes,
    count: usize,
    arrived: &mpsc::Sender<()>,
    read: &mut mpsc::Receiver<()>,
) {
    for _ in 0..count {
        let mut send = conn.open_uni().await.unwrap();
        send.write_chunk(body.clone()).await.unwrap();
        send.finish().unwrap();
        // Every byte acknowledged: the whole object waits in the receiver's reassembly queue.
        assert_eq!(send.stopped().await.unwrap(), None, "the peer refused an object");
        arrived.send(()).await.unwrap();
        read.recv().await.expect("the reader stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_keeps_no_more_per_object_once_its_permitted_streams_were_used() {
    // The streams a connection starts with; a mesh node grants more only to a peer that uses them.
    let max = QuicConfig::default().max_object_streams;
    let permitted = lightpath::quic::credit::INITIAL.min(max);
    let transport = Arc::new(lightpath::quic::transport(max));
    let ca = create_ca("object streams test CA").unwrap();
    let (a, b) = (endpoint(&ca, "a", &transport), endpoint(&ca, "b", &transport));
    let accepting = tokio::spawn({
        let b = b.clone();
        async move { b.accept().await.unwrap().await.unwrap() }
    });
    let sender = a.connect(b.local_addr().unwrap(), "b").unwrap().await.unwrap();
    let receiver = accepting.await.unwrap();

    let body: Bytes = (0..OBJECT).map(|i| (i * 31 + i / 1500) as u8).collect::<Vec<u8>>().into();
    let (arrived_tx, mut arrived_rx) = mpsc::channel::<()>(1);
    let (read_tx, mut read_rx) = mpsc::channel::<()>(1);
    let reader = tokio::spawn({
        let body = body.clone();
        async move {
            let mut objects = 0usize;
            while let Ok(mut recv) = receiver.accept_uni().await {
                if arrived_rx.recv().await.is_none() {
                    break;
                }
                let got = recv.read_to_end(OBJECT).await.expect("an object read whole");
                assert!(got == body[..], "object {objects} arrived with other bytes");
                drop(got);
                objects += 1;
                if read_tx.send(()).await.is_err() {
                    break;
                }
            }
            objects
        }
    });

    // A warm-up of 256 objects (about four minutes of a stream's segments and playlists): with the default
    // permitted streams every reusable receive state exists by then and has held a whole object.
    let warm_up = 256;
    send_objects(&sender, &body, warm_up, &arrived_tx, &mut read_rx).await;
    let warm = LIVE.load(Ordering::Relaxed);
    // 512 objects more: with 1,024 permitted streams this added about 512 new states of 14 KiB each.
    let more = 512;
    send_objects(&sender, &body, more, &arrived_tx, &mut read_rx).await;
    let after = LIVE.load(Ordering::Relaxed);

    sender.close(0u32.into(), b"done");
    drop((arrived_tx, read_rx));
    assert_eq!(reader.await.unwrap(), warm_up + more, "every object was read");
    let grown = after - warm;
    eprintln!(
        "{permitted} permitted object streams: heap {:.2} MiB after {warm_up} objects of {} KiB, {:.2} MiB after \
         {more} more ({grown:+} bytes, {:.0} bytes per object)",
        warm as f64 / (1 << 20) as f64,
        OBJECT >> 10,
        after as f64 / (1 << 20) as f64,
        grown as f64 / more as f64
    );
    // Nothing kept per object: the bound is a few hundred bytes of quinn's bookkeeping in all.
    assert!(
        grown < 256 << 10,
        "the connection kept {grown} bytes more after {more} objects ({} per object)",
        grown / more as isize
    );
}
