//! Serving viewers at an edge: `GET`/`HEAD /live/{stream}/{file}` from the local cache.
//!
//! A request for an object that has not arrived waits for it (up to `edge.wait_ms`); the first request for
//! a stream subscribes the edge to it, and however many viewers wait, the mesh brings each object once.
//! Only a name that may still come is waited for ([`expect`]): one far beyond the stream's newest segment,
//! or older than it and gone from the live window, is 404 at once. Replies ([`reply`]) carry a content
//! `ETag`, `Last-Modified`, `Age` (from the moment the origin received the object) and `Cache-Control`
//! (short for playlists, `edge.segment_max_age_s` for segments), and answer conditional and range requests.
//! A stream nobody announced is 404; one whose origin this edge cannot reach is 503 with `Retry-After`.
//! Each refusal is an [`EdgeError`], which knows its status, whether a retry makes sense and which side
//! failed.

mod error;
pub mod expect;
pub mod reply;

pub use error::EdgeError;

use std::time::Duration;

use http::Method;

use crate::hls::media::is_playlist;
use crate::http::Reply;
use crate::id::{ObjectName, StreamName};
use crate::mesh::Mesh;

/// The viewer-facing side of a node.
pub struct Edge {
    mesh: Mesh,
    wait: Duration,
    /// `max-age` of segments ([`reply::serve`]).
    segment_max_age: Duration,
}

impl Edge {
    pub fn new(mesh: Mesh, wait: Duration) -> Self {
        Self { mesh, wait, segment_max_age: Duration::from_secs(crate::config::EdgeConfig::DEFAULT_SEGMENT_MAX_AGE_S) }
    }

    /// How long downstream caches may keep a segment (`edge.segment_max_age_s`).
    pub fn with_segment_max_age(self, segment_max_age: Duration) -> Self {
        Self { segment_max_age, ..self }
    }

    /// Answers a viewer's `GET` or `HEAD`: the object, or why not.
    pub async fn get(&self, method: &Method, stream: &StreamName, name: &ObjectName) -> Result<Reply, EdgeError> {
        let cache = self.mesh.cache();
        let reach = self.mesh.reach(stream);
        let cached = cache.get(stream, name);
        match (reach, cached) {
            (None, None) => return Err(EdgeError::NoStream { stream: stream.clone() }),
            (Some((false, _)), _) if is_playlist(name) => return Err(self.unreachable(stream)),
            (_, Some(obj)) => return Ok(reply::serve(method, &obj, self.segment_max_age)),
            (Some((false, _)), None) => return Err(self.unreachable(stream)),
            (Some((true, receiving)), None) => {
                if !receiving {
                    self.mesh.want(stream);
                } else {
                    self.worth_waiting(stream, name)?;
                }
            }
        }
        match cache.wait_for(stream, name, self.wait).await {
            Some(obj) => Ok(reply::serve(method, &obj, self.segment_max_age)),
            None => match self.mesh.reach(stream) {
                Some((false, _)) => Err(self.unreachable(stream)),
                _ => Err(EdgeError::NotArrived { stream: stream.clone(), name: name.clone(), waited: self.wait }),
            },
        }
    }

    /// Refuses at once a name that will not arrive within the wait ([`expect::expect`]), judged by what
    /// the cache holds of a stream this edge receives.
    fn worth_waiting(&self, stream: &StreamName, name: &ObjectName) -> Result<(), EdgeError> {
        let window = self.mesh.cache().window(stream);
        match expect::expect(name.as_str(), window.iter().map(|o| &**o)) {
            expect::Expectation::Wait => Ok(()),
            expect::Expectation::TooFar { newest } => {
                Err(EdgeError::BeyondLiveEdge { stream: stream.clone(), name: name.clone(), newest })
            }
            expect::Expectation::Gone { newest } => {
                Err(EdgeError::LeftLiveWindow { stream: stream.clone(), name: name.clone(), newest })
            }
        }
    }

    fn unreachable(&self, stream: &StreamName) -> EdgeError {
        EdgeError::OriginUnreachable { stream: stream.clone(), origin: self.mesh.stream(stream).map(|s| s.origin) }
    }
}
