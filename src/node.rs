//! One mesh node: its QUIC endpoint, its cache, and its HTTP listener, with the roles the topology gives
//! it (origin: ingest; edge: viewers; every node: `/metrics` and `/healthz`).
//!
//! [`run`] takes already-bound listeners and a shutdown future, so tests and the demo start real nodes on
//! ports they own; [`Listeners::bind`] binds the addresses a config names.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::ca::Identity;
use crate::cache::Cache;
use crate::config::{EdgeConfig, IngestConfig, NodeConfig};
use crate::edge::Edge;
use crate::http::{count, live_path, text, Handler, Reply};
use crate::id::NodeId;
use crate::mesh::Mesh;
use crate::origin::Ingest;
use crate::topology::{Role, Topology};

/// Everything a node runs with.
#[derive(Clone)]
pub struct NodeParams {
    pub id: NodeId,
    pub topology: Arc<Topology>,
    pub identity: Identity,
    pub cache_bytes: u64,
    pub ingest: IngestConfig,
    pub edge: EdgeConfig,
}

impl NodeParams {
    /// From a checked config file and its topology; reads the TLS files.
    pub fn from_config(config: NodeConfig, topology: Topology) -> Result<Self> {
        let identity = Identity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)
            .context("loading the node's TLS files")?;
        Ok(Self {
            id: config.node,
            topology: Arc::new(topology),
            identity,
            cache_bytes: config.cache.max_bytes,
            ingest: config.ingest,
            edge: config.edge,
        })
    }
}

/// A node's bound sockets.
pub struct Listeners {
    pub mesh: std::net::UdpSocket,
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the mesh and HTTP addresses a config names (a node's or a control replica's): the `*_listen`
    /// overrides, or else the topology's literal addresses.
    pub async fn bind(config: &NodeConfig, topology: &Topology) -> Result<Self> {
        // A checked config always yields both addresses.
        let mesh_addr = config.mesh_bind(topology).context("no mesh address to bind")?;
        let http_addr = config.http_bind(topology).context("no HTTP address to bind")?;
        let mesh =
            std::net::UdpSocket::bind(mesh_addr).with_context(|| format!("binding the mesh socket {mesh_addr}"))?;
        let http =
            TcpListener::bind(http_addr).await.with_context(|| format!("binding the HTTP listener {http_addr}"))?;
        Ok(Self { mesh, http })
    }
}

/// Runs a node until `shutdown` completes.
pub async fn run(params: NodeParams, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<()> {
    let spec =
        params.topology.node(&params.id).with_context(|| format!("node {} is not in the topology", params.id))?.clone();
    crate::telemetry::metrics(); // install the recorder before the first count
    if crate::ca::peer_node_id(&params.identity.chain[0], [&params.id]).is_none() {
        tracing::warn!(node = %params.id, "this node's certificate does not name it; every peer will refuse it");
    }
    let cache = Cache::new(params.cache_bytes, params.id.as_str());
    let mesh = Mesh::start(params.id.clone(), &params.topology, &params.identity, listeners.mesh, cache)?;
    tracing::info!(
        node = %params.id,
        mesh = %mesh.local_addr()?,
        http = %listeners.http.local_addr()?,
        roles = ?spec.roles,
        "node running"
    );
    let site = Arc::new(Site {
        node: params.id.to_string(),
        ingest: spec.has_role(Role::Origin).then(|| Ingest::new(mesh.clone(), params.ingest.clone())),
        edge: (spec.has_role(Role::Edge) || spec.has_role(Role::Origin))
            .then(|| Edge::new(mesh.clone(), Duration::from_millis(params.edge.wait_ms))),
    });
    crate::http::serve(listeners.http, site, shutdown).await;
    mesh.close();
    Ok(())
}

/// A node's HTTP side: dispatches by path and method to ingest, edge and metrics.
struct Site {
    node: String,
    ingest: Option<Ingest>,
    edge: Option<Edge>,
}

impl Handler for Site {
    async fn handle(self: Arc<Self>, req: http::Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let reply = self.route(req).await;
        let status = reply.status();
        count(&self.node, &method, status);
        if status.is_client_error() || status.is_server_error() {
            tracing::info!(node = %self.node, %method, %path, status = status.as_u16(), reason = %reason(&reply), "request refused");
        }
        reply
    }
}

impl Site {
    async fn route(&self, req: http::Request<Incoming>) -> Reply {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/metrics") => {
                let mut resp = text(StatusCode::OK, crate::telemetry::metrics().render());
                resp.headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
                return resp;
            }
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok"),
            _ => {}
        }
        let (stream, name) = match live_path(path) {
            Ok(p) => p,
            Err(e) => return text(e.status(), e.to_string()),
        };
        let method = req.method().clone();
        match method {
            Method::GET | Method::HEAD => match &self.edge {
                Some(edge) => edge.get(&method, &stream, &name).await,
                None => text(StatusCode::NOT_FOUND, "this node serves no viewers"),
            },
            Method::PUT | Method::POST | Method::DELETE => {
                let Some(ingest) = &self.ingest else {
                    return text(StatusCode::METHOD_NOT_ALLOWED, "this node is not an origin");
                };
                let (parts, body) = req.into_parts();
                let result = if method == Method::DELETE {
                    ingest.delete(&parts.headers, stream, name)
                } else {
                    ingest.put(&parts.headers, body, stream, name).await
                };
                result.unwrap_or_else(|e| text(e.status(), e.to_string()))
            }
            _ => text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not served here")),
        }
    }
}

/// The one-line reason of a plain-text error reply.
fn reason(reply: &Reply) -> String {
    use http_body_util::BodyExt;
    // Error replies are built by `text`, whose body is a single ready frame.
    let body = reply.body().clone();
    futures_util::FutureExt::now_or_never(body.collect())
        .and_then(|r| r.ok())
        .map(|c| String::from_utf8_lossy(&c.to_bytes()).trim().to_owned())
        .unwrap_or_default()
}
