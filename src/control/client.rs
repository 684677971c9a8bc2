//! The node's side of the control plane: report measurements, take route tables.
//!
//! A node keeps a connection to every control replica, over its own mesh endpoint (so the link impairments
//! and partitions that its mesh traffic sees apply to it too). It sends each its latest [`Report`] whenever it
//! changes (at most every [`REPORT_EVERY`]) and at least every second as a heartbeat, so every replica sees
//! the same reports and computes the same tables; the mesh keeps the newest table from any of them (or, once
//! the session with the replica whose table it runs ended, any replica's next: `Relay::handle_routes`). A
//! replica also sends operators' stream takedowns ([`FromControl::Takedown`]). A replica that goes away is
//! redialed with backoff; meanwhile the node keeps forwarding on its last table.

use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;
use tokio::sync::watch;

use crate::id::{NodeId, StreamName};
use crate::quic::{self, read_frame, write_frame, DialError, FrameError};
use crate::relay::Takedown;
use crate::topology::ControlSpec;
use crate::wire::{Frame, Report, Routes, PROTOCOL_VERSION};

/// Shortest time between two reports.
pub const REPORT_EVERY: Duration = Duration::from_millis(100);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a replica has to complete the handshake, and then to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// What a replica tells a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromControl {
    /// A route table.
    Routes(Routes),
    /// An operator's takedown of a stream, or its lift.
    Takedown { stream: StreamName, takedown: Takedown },
    /// The session with the replica ended (or a dial failed): the node may take any replica's next table
    /// over this one's, whatever their versions.
    Ended,
}

/// Why a session with a control replica ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No connection; [`DialError::is_final`] says whether redialing makes sense.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The connection ended before the control stream opened.
    #[error("opening the control stream: {0}")]
    Open(#[from] quinn::ConnectionError),
    /// A frame could not be read or written: the connection or the stream is gone, or the replica sent
    /// bytes that are not a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The replica did not answer the hello in time.
    #[error("no hello from the control plane within {0:?}")]
    NoHello(Duration),
    /// The replica answered with something other than its own hello.
    #[error("expected hello from {expected}, got {got:?}")]
    BadHello {
        /// The replica dialed.
        expected: NodeId,
        /// What it sent instead (`None`: it finished the stream).
        got: Option<Box<Frame>>,
    },
    /// The replica sent a frame that replicas never send.
    #[error("unexpected frame from the control plane: {0:?}")]
    Unexpected(Box<Frame>),
    /// The replica finished the session.
    #[error("the control plane closed the session")]
    Closed,
}

/// Stays connected to one replica for as long as the node runs (until its endpoint stops).
pub(crate) async fn run(
    endpoint: quinn::Endpoint,
    me: NodeId,
    control: ControlSpec,
    reports: watch::Receiver<Report>,
    on_message: impl Fn(FromControl) + Send + Sync + 'static,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let ended = session(&endpoint, &me, &control, reports.clone(), &on_message).await;
        on_message(FromControl::Ended);
        match ended {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(SessionError::Dial(e)) if e.is_final() => return,
            Err(e) => tracing::warn!(control = %control.id, error = %e, "control session ended"),
        }
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn session(
    endpoint: &quinn::Endpoint,
    me: &NodeId,
    control: &ControlSpec,
    mut reports: watch::Receiver<Report>,
    on_message: &impl Fn(FromControl),
) -> Result<(), SessionError> {
    let conn = quic::dial(endpoint, &control.id, &control.mesh, HELLO_TIMEOUT).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, &Frame::Hello { node: me.clone(), protocol: PROTOCOL_VERSION }).await?;
    let mut buf = BytesMut::new();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, &mut buf))
        .await
        .map_err(|_| SessionError::NoHello(HELLO_TIMEOUT))??;
    match hello {
        Some(Frame::Hello { node, .. }) if node == control.id => {}
        other => return Err(SessionError::BadHello { expected: control.id.clone(), got: other.map(Box::new) }),
    }
    tracing::info!(control = %control.id, "connected to the control plane");
    let reader = async {
        loop {
            match read_frame(&mut recv, &mut buf).await? {
                Some(Frame::Routes(routes)) => on_message(FromControl::Routes(routes)),
                Some(Frame::Takedown { stream, version, active, reason }) => {
                    on_message(FromControl::Takedown { stream, takedown: Takedown { version, active, reason } })
                }
                Some(other) => return Err(SessionError::Unexpected(Box::new(other))),
                None => return Err(SessionError::Closed),
            }
        }
    };
    let writer = async {
        loop {
            let report = reports.borrow_and_update().clone();
            write_frame(&mut send, &Frame::Report(report)).await?;
            tokio::time::sleep(REPORT_EVERY).await;
            // Wait for a change, but send a heartbeat at least every second.
            let _ = tokio::time::timeout(HEARTBEAT, reports.changed()).await;
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}
