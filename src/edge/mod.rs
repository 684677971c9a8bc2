//! Serving viewers at an edge: `GET`/`HEAD /live/{stream}/{file}` from the local cache.
//!
//! A request for an object that has not arrived waits for it (up to `edge.wait_ms`); the first request for
//! a stream subscribes the edge to it, and however many viewers wait, the mesh brings each object once.
//! Playlists get a short `Cache-Control` (they change every segment), everything else a long one; `Age`
//! counts from the moment the origin received the object. A stream nobody announced is 404; one whose origin
//! this edge cannot reach is 503 with `Retry-After`. Each refusal is an [`EdgeError`], which knows its
//! status, whether a retry makes sense and which side failed.

mod error;

pub use error::EdgeError;

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response};
use http_body_util::Full;

use crate::cache::Object;
use crate::clock::unix_ms;
use crate::hls::media::{is_playlist, known_content_type};
use crate::http::Reply;
use crate::id::{ObjectName, StreamName};
use crate::mesh::Mesh;

/// The viewer-facing side of a node.
pub struct Edge {
    mesh: Mesh,
    wait: Duration,
}

impl Edge {
    pub fn new(mesh: Mesh, wait: Duration) -> Self {
        Self { mesh, wait }
    }

    /// Answers a viewer's `GET` or `HEAD`: the object, or why not.
    pub async fn get(&self, method: &Method, stream: &StreamName, name: &ObjectName) -> Result<Reply, EdgeError> {
        let cache = self.mesh.cache();
        let reach = self.mesh.reach(stream);
        let cached = cache.get(stream, name);
        match (reach, cached) {
            (None, None) => return Err(EdgeError::NoStream { stream: stream.clone() }),
            (Some((false, _)), _) if is_playlist(name) => return Err(self.unreachable(stream)),
            (_, Some(obj)) => return Ok(serve(method, &obj)),
            (Some((false, _)), None) => return Err(self.unreachable(stream)),
            (Some((true, receiving)), None) => {
                if !receiving {
                    self.mesh.want(stream);
                }
            }
        }
        match cache.wait_for(stream, name, self.wait).await {
            Some(obj) => Ok(serve(method, &obj)),
            None => match self.mesh.reach(stream) {
                Some((false, _)) => Err(self.unreachable(stream)),
                _ => Err(EdgeError::NotArrived { stream: stream.clone(), name: name.clone(), waited: self.wait }),
            },
        }
    }

    fn unreachable(&self, stream: &StreamName) -> EdgeError {
        EdgeError::OriginUnreachable { stream: stream.clone(), origin: self.mesh.stream(stream).map(|s| s.origin) }
    }
}

fn serve(method: &Method, obj: &Object) -> Reply {
    let h = &obj.header;
    let body = if method == Method::HEAD { Bytes::new() } else { obj.body.clone() };
    let mut resp = Response::new(Full::new(body));
    let headers = resp.headers_mut();
    // The usual types without a copy; anything else (from another origin's version) validated.
    let content_type = match known_content_type(&h.content_type) {
        Some(t) => Ok(HeaderValue::from_static(t)),
        None => HeaderValue::from_str(&h.content_type),
    };
    if let Ok(v) = content_type {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let cache_control = if is_playlist(&h.name) { "public, max-age=1" } else { "public, max-age=86400" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    let age = unix_ms().saturating_sub(h.born_unix_ms) / 1000;
    headers.insert(header::AGE, HeaderValue::from(age));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.body.len()));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}
