//! Serving viewers at an edge: `GET`/`HEAD /live/{stream}/{file}` from the local cache.
//!
//! A request for an object that has not arrived waits for it (up to `edge.wait_ms`); the first request for
//! a stream subscribes the edge to it, and however many viewers wait, the mesh brings each object once.
//! Playlists get a short `Cache-Control` (they change every segment), everything else a long one; `Age`
//! counts from the moment the origin received the object. A stream nobody announced is 404; one whose origin
//! this edge cannot reach is 503 with `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use crate::cache::Object;
use crate::hls::media::{is_playlist, known_content_type};
use crate::http::{text, Reply};
use crate::id::{ObjectName, StreamName};
use crate::mesh::Mesh;
use crate::origin::unix_ms;

/// The viewer-facing side of a node.
pub struct Edge {
    mesh: Mesh,
    wait: Duration,
}

impl Edge {
    pub fn new(mesh: Mesh, wait: Duration) -> Self {
        Self { mesh, wait }
    }

    /// Answers a viewer's `GET` or `HEAD`.
    pub async fn get(&self, method: &Method, stream: &StreamName, name: &ObjectName) -> Reply {
        let cache = self.mesh.cache();
        let reach = self.mesh.reach(stream);
        let cached = cache.get(stream, name);
        match (reach, cached) {
            (None, None) => return text(StatusCode::NOT_FOUND, format!("no stream {stream}")),
            (Some((false, _)), _) if is_playlist(name) => return self.unreachable(stream),
            (_, Some(obj)) => return serve(method, &obj),
            (Some((false, _)), None) => return self.unreachable(stream),
            (Some((true, receiving)), None) => {
                if !receiving {
                    self.mesh.want(stream);
                }
            }
        }
        match cache.wait_for(stream, name, self.wait).await {
            Some(obj) => serve(method, &obj),
            None => match self.mesh.reach(stream) {
                Some((false, _)) => self.unreachable(stream),
                _ => text(
                    StatusCode::NOT_FOUND,
                    format!("{stream}/{name} did not arrive within {} ms", self.wait.as_millis()),
                ),
            },
        }
    }
}

impl Edge {
    fn unreachable(&self, stream: &StreamName) -> Reply {
        let origin = self.mesh.stream(stream).map(|s| s.origin.to_string()).unwrap_or_default();
        let mut resp = text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the origin of stream {stream} ({origin}) is unreachable from this edge; retry shortly"),
        );
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        resp
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
