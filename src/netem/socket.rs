//! The quinn socket wrapper: [`impaired_socket`] puts a [`Scheduler`] between quinn and a UDP socket, and
//! runs one task per socket that sends queued datagrams when they are due.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{self, AtomicBool};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::scheduler::{Queued, Scheduler, Verdict};
use super::table::Impairments;

/// Wraps a std UDP socket for quinn: datagrams to an address with an impairment are dropped, delayed or
/// rate-limited; the others pass untouched. Must be called inside a tokio runtime, which runs the socket's
/// scheduling task until the socket is dropped.
///
/// Cost on a perfect link: one atomic load per send while no link of the table is impaired, else a read
/// lock and a hash lookup; no copy, no lock shared with the scheduling task.
///
/// GSO: batches to unimpaired addresses keep their segments, and [`AsyncUdpSocket::max_transmit_segments`]
/// is the inner socket's, so an unimpaired link runs at full speed; a batch to an impaired address is split
/// into its datagrams. The receive path (including GRO) is the inner socket's.
pub fn impaired_socket(socket: std::net::UdpSocket, table: Impairments) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    ImpairedSocket::start(socket, table).map(|s| s as Arc<dyn AsyncUdpSocket>)
}

pub(super) struct ImpairedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    table: Impairments,
    pub(super) shared: Arc<Shared>,
}

/// What the socket and its scheduling task share.
pub(super) struct Shared {
    scheduler: Mutex<Scheduler>,
    /// Wakes the task: a datagram is due earlier than it planned, or the socket is gone.
    wake: Notify,
    closed: AtomicBool,
}

impl Shared {
    fn scheduler(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ImpairedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpairedSocket").field("inner", &self.inner).field("table", &self.table).finish()
    }
}

impl ImpairedSocket {
    pub(super) fn start(socket: std::net::UdpSocket, table: Impairments) -> io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("an impaired socket must be created inside a tokio runtime"))?;
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        let shared = Arc::new(Shared {
            scheduler: Mutex::new(Scheduler::new(StdRng::from_entropy())),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        runtime.spawn(run(shared.clone(), inner.clone()));
        Ok(Arc::new(Self { inner, table, shared }))
    }
}

impl Drop for ImpairedSocket {
    fn drop(&mut self) {
        self.shared.closed.store(true, atomic::Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl AsyncUdpSocket for ImpairedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let plan = match self.table.plan(transmit.destination) {
            Some(plan) if !plan.is_perfect() => plan,
            _ => return self.inner.try_send(transmit),
        };
        let verdict = self.shared.scheduler().admit(Instant::now(), &plan, transmit);
        match verdict {
            Verdict::Direct => self.inner.try_send(transmit),
            Verdict::Taken { wake } => {
                if wake {
                    self.shared.wake.notify_one();
                }
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The socket's scheduling task: sends every queued datagram at its due time, until the socket is dropped.
async fn run(shared: Arc<Shared>, inner: Arc<dyn AsyncUdpSocket>) {
    let mut poller = inner.clone().create_io_poller();
    let mut due = Vec::new();
    loop {
        let next = {
            let mut scheduler = shared.scheduler();
            if shared.closed.load(atomic::Ordering::Acquire) {
                return;
            }
            scheduler.pop_due(Instant::now(), &mut due);
            scheduler.next_due()
        };
        for datagram in due.drain(..) {
            send(&*inner, &mut poller, &datagram).await;
        }
        match next {
            // Sending may have taken a while: look again before sleeping, letting other tasks run first.
            Some(at) if at <= Instant::now() => tokio::task::yield_now().await,
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Sends one queued datagram, waiting while the socket's buffer is full. A datagram the socket refuses is
/// lost, as it would be on a real link.
async fn send(inner: &dyn AsyncUdpSocket, poller: &mut Pin<Box<dyn UdpPoller>>, datagram: &Queued) {
    let transmit = Transmit {
        destination: datagram.destination,
        ecn: datagram.ecn,
        contents: &datagram.contents,
        segment_size: None,
        src_ip: datagram.src_ip,
    };
    loop {
        match inner.try_send(&transmit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::trace!(to = %datagram.destination, error = %e, "impaired link: send failed");
                return;
            }
            Ok(()) => return,
        }
    }
}
