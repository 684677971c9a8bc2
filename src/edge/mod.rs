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
//! Media playlists answer Low-Latency HLS requests ([`crate::hls::ll`]): a blocking reload (`_HLS_msn`,
//! `_HLS_part`) is held until the cached playlist lists what it asks for ([`parking`]: one watcher per
//! playlist judges each new version and wakes only the requests it settles), and is answered the moment it
//! does; one more than two segments ahead is 400 and one not satisfied within three target durations (or
//! `edge.block_ms`) 503. At most `edge.max_blocked` are held at once. `_HLS_skip=YES` gets the delta update of the playlist.
//!
//! The edge counts its viewers per stream (distinct client addresses over the last 30 s) for the control
//! plane's reports.

mod error;
pub mod expect;
mod parking;
pub mod reply;
pub mod tls;
pub mod token;

pub use error::EdgeError;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;

use crate::cache::Object;
use crate::hls::ll::{blocking, delta, Blocking, Position, Reload};
use crate::hls::media::is_playlist;
use crate::hls::tags::with_endlist;
use crate::http::Reply;
use crate::id::{ObjectName, StreamName};
use crate::mesh::Mesh;
use crate::wire::StreamPhase;
use parking::Parking;

/// Counts a held blocking reload out when it ends, however it ends.
struct Release<'a>(&'a AtomicU32);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

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
    /// Blocking reloads held now, and the most allowed (`edge.max_blocked`).
    blocked: AtomicU32,
    max_blocked: u32,
    /// The longest a blocking reload is held (`edge.block_ms`).
    block: Duration,
    /// Where blocking reloads wait, and each playlist's position.
    parking: Arc<Parking>,
}

impl Edge {
    pub fn new(mesh: Mesh, wait: Duration) -> Self {
        Self {
            mesh,
            wait,
            viewers: Mutex::new(HashMap::new()),
            segment_max_age: Duration::from_secs(crate::config::EdgeConfig::DEFAULT_SEGMENT_MAX_AGE_S),
            blocked: AtomicU32::new(0),
            max_blocked: crate::config::EdgeConfig::default().max_blocked,
            block: Duration::from_millis(crate::config::EdgeConfig::default().block_ms),
            parking: Arc::default(),
        }
    }

    /// How many blocking reloads may be held at once, and for how long at most.
    pub fn with_blocking(self, max_blocked: u32, block: Duration) -> Self {
        Self { max_blocked, block, ..self }
    }

    /// How long downstream caches may keep a segment (`edge.segment_max_age_s`).
    pub fn with_segment_max_age(self, segment_max_age: Duration) -> Self {
        Self { segment_max_age, ..self }
    }

    /// Answers a viewer's `GET` or `HEAD`: the object, or why not. `client` is the viewer's address.
    /// `query` is the request's query string (LL-HLS's `_HLS_` parameters for playlists).
    pub async fn get(
        &self,
        method: &Method,
        stream: &StreamName,
        name: &ObjectName,
        query: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Reply, EdgeError> {
        if let Some(reason) = self.mesh.taken_down(stream) {
            return Err(EdgeError::TakenDown { stream: stream.clone(), reason });
        }
        if !is_playlist(name) {
            return self.object(method, stream, name).await;
        }
        if let Some(client) = client {
            self.seen(stream, client);
        }
        let reload = Reload::parse(query).map_err(|error| EdgeError::BadReload {
            stream: stream.clone(),
            name: name.clone(),
            error,
        })?;
        let Some((msn, part)) = reload.block else {
            let reply = self.object(method, stream, name).await?;
            return Ok(if reload.skip { self.delta_of(method, stream, name).unwrap_or(reply) } else { reply });
        };
        let held = self.hold(stream, name, msn, part).await?;
        if reload.skip {
            if let Some(reply) = self.delta_of(method, stream, name) {
                return Ok(reply);
            }
        }
        Ok(self.serve(method, &held))
    }

    /// The delta update of the cached playlist, when it allows one and has segments to skip.
    fn delta_of(&self, method: &Method, stream: &StreamName, name: &ObjectName) -> Option<Reply> {
        let obj = self.mesh.cache().get(stream, name)?;
        let text = delta(std::str::from_utf8(&obj.body).ok()?)?;
        let header = crate::wire::ObjectHeader { len: text.len() as u64, ..obj.header.clone() };
        Some(reply::serve(method, &Object::new(header, text.into()), self.segment_max_age))
    }

    /// Holds a blocking reload until the playlist lists segment `msn` (part `part` of it): the playlist,
    /// or why not.
    async fn hold(
        &self,
        stream: &StreamName,
        name: &ObjectName,
        msn: u64,
        part: Option<u64>,
    ) -> Result<Arc<Object>, EdgeError> {
        let held = self.blocked.fetch_add(1, Ordering::Relaxed);
        let _release = Release(&self.blocked);
        if held >= self.max_blocked {
            return Err(EdgeError::TooManyBlocked(self.max_blocked));
        }
        let start = tokio::time::Instant::now();
        let timeout = tokio::time::sleep(self.block);
        tokio::pin!(timeout);
        if !self.mesh.reach(stream).is_some_and(|(_, receiving)| receiving) {
            match self.mesh.reach(stream) {
                None if self.mesh.cache().get(stream, name).is_none() => {
                    return Err(EdgeError::NoStream { stream: stream.clone() })
                }
                Some((false, _)) => return Err(self.unreachable(stream)),
                _ => self.mesh.want(stream),
            }
        }
        loop {
            // Parked before the playlist is read, so a version landing in between still wakes this request.
            let lot = self.parking.park(self.mesh.cache(), stream, name, (msn, part));
            let woken = lot.settled.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some((obj, position)) = self.position(stream, name) {
                // The specification's bound: three target durations.
                let three = start + Duration::from_secs(3 * position.target_duration as u64);
                if three < timeout.deadline() {
                    timeout.as_mut().reset(three);
                }
                match blocking(&position, msn, part) {
                    Blocking::Ready => return Ok(obj),
                    Blocking::TooFar => {
                        return Err(EdgeError::ReloadTooFar {
                            stream: stream.clone(),
                            name: name.clone(),
                            msn,
                            newest: position.last_complete,
                        })
                    }
                    Blocking::Wait => {}
                }
            }
            tokio::select! {
                _ = woken => {
                    if let Some(ready) = lot.ready.get() {
                        return Ok(ready.clone());
                    }
                }
                _ = &mut timeout => {
                    return Err(EdgeError::ReloadTimedOut {
                        stream: stream.clone(),
                        name: name.clone(),
                        waited: start.elapsed(),
                    })
                }
            }
        }
    }

    /// The cached playlist and its position, read once per version.
    fn position(&self, stream: &StreamName, name: &ObjectName) -> Option<(Arc<Object>, Position)> {
        self.parking.position(self.mesh.cache(), stream, name)
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
