//! Serving viewers at an edge: `GET`/`HEAD /live/{stream}/{file}` from the local cache.
//!
//! A request for an object that has not arrived waits for it (up to `edge.wait_ms`); the first request for
//! a stream subscribes the edge to it, and however many viewers wait, the mesh brings each object once.
//! Only a name that may still come is waited for ([`expect`]): one far beyond the stream's newest segment,
//! or older than it and gone from the live window, is 404 at once. Replies ([`reply`]) carry a content
//! `ETag`, `Last-Modified`, `Age` (from the moment the origin received the object) and `Cache-Control`
//! (short for playlists, `edge.segment_max_age_s` for segments), and answer conditional and range requests.
//! A stream nobody announced is 404; one whose origin this edge cannot reach is 503 with `Retry-After`; one
//! an operator took down is 451 with the reason. Each refusal is an [`EdgeError`], which knows its status,
//! whether a retry makes sense and which side failed. A stream that ended is served with `EXT-X-ENDLIST` in
//! its media playlists (the origin sends them so; an edge that missed that version adds the tag itself), so
//! players stop instead of polling forever.
//!
//! The edge counts its viewers per stream (distinct client addresses over the last 30 s) for the control
//! plane's reports.

mod error;
pub mod expect;
pub mod reply;
pub mod tls;
pub mod token;

pub use error::EdgeError;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;

use crate::cache::Object;
use crate::hls::media::is_playlist;
use crate::hls::tags::with_endlist;
use crate::http::Reply;
use crate::id::{ObjectName, StreamName};
use crate::mesh::Mesh;
use crate::wire::StreamPhase;

/// Viewers are counted over this window.
const VIEWER_WINDOW: Duration = Duration::from_secs(30);

/// The viewer-facing side of a node.
pub struct Edge {
    mesh: Mesh,
    wait: Duration,
    /// Each stream's viewers: when each client address last asked for a playlist.
    viewers: Mutex<HashMap<StreamName, HashMap<IpAddr, Instant>>>,
    /// `max-age` of segments ([`reply::serve`]).
    segment_max_age: Duration,
}

impl Edge {
    pub fn new(mesh: Mesh, wait: Duration) -> Self {
        Self {
            mesh,
            wait,
            viewers: Mutex::new(HashMap::new()),
            segment_max_age: Duration::from_secs(crate::config::EdgeConfig::DEFAULT_SEGMENT_MAX_AGE_S),
        }
    }

    /// How long downstream caches may keep a segment (`edge.segment_max_age_s`).
    pub fn with_segment_max_age(self, segment_max_age: Duration) -> Self {
        Self { segment_max_age, ..self }
    }

    /// Answers a viewer's `GET` or `HEAD`: the object, or why not. `client` is the viewer's address.
    pub async fn get(
        &self,
        method: &Method,
        stream: &StreamName,
        name: &ObjectName,
        client: Option<IpAddr>,
    ) -> Result<Reply, EdgeError> {
        if let Some(reason) = self.mesh.taken_down(stream) {
            return Err(EdgeError::TakenDown { stream: stream.clone(), reason });
        }
        if is_playlist(name) {
            if let Some(client) = client {
                self.seen(stream, client);
            }
        }
        let reply = self.object(method, stream, name).await?;
        Ok(reply)
    }

    /// Counts a viewer: players ask for the playlist every target duration.
    fn seen(&self, stream: &StreamName, client: IpAddr) {
        let mut viewers = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        match viewers.get_mut(stream) {
            Some(clients) => {
                clients.insert(client, Instant::now());
            }
            None => {
                viewers.insert(stream.clone(), HashMap::from([(client, Instant::now())]));
            }
        }
    }

    /// Tells the mesh how many viewers each stream has (distinct addresses over the last 30 s), forgetting
    /// older ones; streams nobody watches any more are reported once with 0, then dropped.
    pub fn report_viewers(&self) {
        let now = Instant::now();
        let mut viewers = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        viewers.retain(|stream, clients| {
            clients.retain(|_, at| now.duration_since(*at) < VIEWER_WINDOW);
            self.mesh.viewers(stream, clients.len() as u32);
            !clients.is_empty()
        });
    }

    async fn object(&self, method: &Method, stream: &StreamName, name: &ObjectName) -> Result<Reply, EdgeError> {
        let cache = self.mesh.cache();
        let reach = self.mesh.reach(stream);
        let cached = cache.get(stream, name);
        match (reach, cached) {
            (None, None) => return Err(EdgeError::NoStream { stream: stream.clone() }),
            (Some((false, _)), _) if is_playlist(name) => return Err(self.unreachable(stream)),
            (_, Some(obj)) => return Ok(self.serve(method, &obj)),
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
            Some(obj) => Ok(self.serve(method, &obj)),
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

    /// The object's reply; a media playlist of a stream that ended says so, whichever version is here.
    fn serve(&self, method: &Method, obj: &Arc<Object>) -> Reply {
        if is_playlist(&obj.header.name)
            && self.mesh.stream(&obj.header.stream).is_some_and(|s| s.phase == StreamPhase::Ended)
        {
            if let Some(ended) = std::str::from_utf8(&obj.body).ok().and_then(with_endlist) {
                let header = crate::wire::ObjectHeader { len: ended.len() as u64, ..obj.header.clone() };
                return reply::serve(method, &Arc::new(Object::new(header, ended.into())), self.segment_max_age);
            }
        }
        reply::serve(method, obj, self.segment_max_age)
    }
}
