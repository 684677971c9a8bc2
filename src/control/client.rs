//! The node's side of the control plane: report measurements, take route tables.
//!
//! A node keeps a connection to every control replica, over its own mesh endpoint (so the link impairments
//! and partitions that its mesh traffic sees apply to it too). It sends each its latest [`Report`] whenever it
//! changes (at most every [`REPORT_EVERY`]) and at least every second as a heartbeat, so every replica sees
//! the same reports and computes the same tables; the mesh keeps the newest table from any of them. A
//! replica that goes away is redialed with backoff; meanwhile the node keeps forwarding on its last table.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use rand::Rng;
use tokio::sync::watch;

use crate::id::NodeId;
use crate::mesh::peer::{read_frame, write_frame};
use crate::topology::ControlSpec;
use crate::wire::{Frame, Report, Routes, PROTOCOL_VERSION};

/// Shortest time between two reports.
pub const REPORT_EVERY: Duration = Duration::from_millis(100);
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Stays connected to one replica for as long as the node runs.
pub(crate) async fn run(
    endpoint: quinn::Endpoint,
    me: NodeId,
    control: ControlSpec,
    reports: watch::Receiver<Report>,
    on_routes: impl Fn(Routes) + Send + Sync + 'static,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&endpoint, &me, &control, reports.clone(), &on_routes).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                if matches!(e.downcast_ref(), Some(quinn::ConnectError::EndpointStopping)) {
                    return;
                }
                tracing::warn!(control = %control.id, error = %format!("{e:#}"), "control session ended");
            }
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
    on_routes: &impl Fn(Routes),
) -> Result<()> {
    let addr = *control.mesh.resolve().await?.first().context("resolved to nothing")?;
    let conn = tokio::time::timeout(Duration::from_secs(3), endpoint.connect(addr, control.id.as_str())?)
        .await
        .context("handshake timed out")??;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, &Frame::Hello { node: me.clone(), protocol: PROTOCOL_VERSION }).await?;
    let mut buf = BytesMut::new();
    match tokio::time::timeout(Duration::from_secs(3), read_frame(&mut recv, &mut buf)).await?? {
        Some(Frame::Hello { node, .. }) if node == control.id => {}
        other => bail!("expected hello from {}, got {other:?}", control.id),
    }
    tracing::info!(control = %control.id, "connected to the control plane");
    let reader = async {
        loop {
            match read_frame(&mut recv, &mut buf).await? {
                Some(Frame::Routes(routes)) => on_routes(routes),
                Some(other) => bail!("unexpected frame from the control plane: {other:?}"),
                None => bail!("the control plane closed the session"),
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
