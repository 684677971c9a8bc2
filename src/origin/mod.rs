//! Ingest at an origin: publishers push a live stream over plain HTTP, exactly as ffmpeg's HLS muxer does
//! with `-method PUT`.
//!
//! `PUT`/`POST /live/{stream}/{file}` stores a segment, part, init segment or playlist (chunked bodies
//! without Content-Length included) and hands it to the mesh, which sends every object down the stream's
//! tree. Re-uploading a playlist makes a new version of it. `DELETE` of a segment (from `-hls_flags
//! delete_segments`) removes the object here only: downstream caches age their live windows out on their
//! own, so a viewer a few seconds behind is never cut short. `DELETE` of a playlist ends the stream.
//!
//! Every object is claimed from the mesh first ([`Mesh::claim`]): a stream belongs to one origin at a time,
//! so a publisher pushing a stream that is live at another origin gets 409 naming it (unless this origin
//! is the stream's configured backup and the owner has gone silent), and one pushing a stream an operator
//! took down gets 403. A publisher that starts over (its playlist's media sequence goes back, or it
//! re-sends a segment name with other bytes) starts a new epoch, whose versions are above the old ones
//! everywhere, and every cache drops the old epoch's objects: a reused name never serves old bytes.
//!
//! Publishing needs the stream's key, in `Authorization: Bearer KEY` or `X-Lightpath-Key: KEY` (ffmpeg:
//! `-headers "Authorization: Bearer KEY"`). Bodies are bounded in size (`ingest.max_body_bytes`, 413) and in
//! time: an upload that sends nothing of its body for `http.body_timeout_ms` is cut with 408, and nothing of
//! it is stored (a publisher stalled half way through a segment would otherwise hold its part for ever).

mod limits;
mod low_latency;

pub use limits::OverLimit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use limits::Limits;

use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::cache::{Inserted, Object};
use crate::clock::unix_ms;
use crate::config::IngestConfig;
use crate::hls::dash::{dash_name, part_name, DashName};
use crate::hls::fmp4::{Chunks, InitInfo};
use crate::hls::media::{content_type, is_playlist};
use crate::hls::parts::{Part, PartCutter};
use crate::hls::tags;
use crate::http::{bearer, same_secret, text, Reply};
use crate::id::{ObjectName, StreamName};
use crate::mesh::{Claim, Mesh, Refused};
use crate::wire::ObjectHeader;

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// No key in the request.
    #[error("publishing stream {0} needs its key (Authorization: Bearer KEY)")]
    NoKey(StreamName),
    /// A key that is not this stream's.
    #[error("wrong key for stream {0}")]
    WrongKey(StreamName),
    /// The body is larger than `ingest.max_body_bytes`.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// The body could not be read (the publisher went away mid-upload).
    #[error("body not received: {0}")]
    Body(String),
    /// The body stopped arriving for longer than `http.body_timeout_ms`.
    #[error("nothing of the body arrived for {0:?}; the upload is dropped")]
    BodyStalled(Duration),
    /// The stream is another origin's, or taken down.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The node is shutting down.
    #[error("the origin is stopping")]
    Stopping,
    /// The key publishes too many streams, or the stream pushes too fast.
    #[error(transparent)]
    OverLimit(#[from] OverLimit),
    /// A CMAF upload that is not the fragmented MP4 its name says.
    #[error("{name}: {error}")]
    Media {
        /// The file.
        name: ObjectName,
        /// What is wrong with it.
        error: crate::hls::fmp4::Fmp4Error,
    },
    /// A CMAF segment of a rendition whose init segment never came (or a rendition too many).
    #[error("{name}: upload the rendition's init segment ({init}) first (at most {max} renditions a stream)", max = low_latency::MAX_RENDITIONS)]
    NoInit {
        /// The segment.
        name: ObjectName,
        /// The init segment it needs.
        init: String,
    },
}

impl IngestError {
    /// The status the publisher sees.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::NoKey(_) => StatusCode::UNAUTHORIZED,
            IngestError::WrongKey(_) => StatusCode::FORBIDDEN,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Body(_) => StatusCode::BAD_REQUEST,
            IngestError::BodyStalled(_) => StatusCode::REQUEST_TIMEOUT,
            IngestError::Refused(Refused::TakenDown { .. }) => StatusCode::FORBIDDEN,
            IngestError::Refused(Refused::Owned { .. } | Refused::Standby { .. }) => StatusCode::CONFLICT,
            IngestError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::OverLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Media { .. } | IngestError::NoInit { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

/// What ingest remembers of a stream's publisher to tell that it started over.
#[derive(Default)]
struct Publisher {
    /// Each media playlist's last media sequence.
    sequences: HashMap<ObjectName, u64>,
    /// The target duration its playlists give.
    target: Option<Duration>,
    /// Names of the objects sent since the last playlist (a few at most); their bytes are the cache's.
    since_playlist: Vec<ObjectName>,
    /// While this origin stands by as the stream's backup: the publisher's newest objects (a few at most),
    /// published the moment it takes over, so that its first playlist's segments are there.
    standby: Vec<(ObjectName, bytes::Bytes)>,
}

/// The most objects kept to be sent again when a publisher turns out to have started over.
const MAX_CARRIED: usize = 8;
/// The most objects a backup keeps while it stands by: a live playlist's window and its init segment.
const MAX_STANDBY: usize = 16;

/// The ingest side of an origin node.
pub struct Ingest {
    mesh: Mesh,
    config: IngestConfig,
    /// How long an upload may send nothing of its body.
    body_timeout: Duration,
    publishers: Mutex<HashMap<StreamName, Publisher>>,
    /// Streams per key and bytes per stream, with when quiet publishers were last forgotten.
    limits: Mutex<(Limits, Duration)>,
    started: Instant,
    /// Each CMAF rendition's state between uploads.
    renditions: low_latency::Renditions,
}

/// Which key a publisher presented: a stream's own, or the key for any stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Stream,
    Any,
}

impl Ingest {
    pub fn new(mesh: Mesh, config: IngestConfig, body_timeout: Duration) -> Self {
        let limits = Limits::new(config.max_streams_per_key, config.max_stream_kbps, config.max_body_bytes);
        Self {
            mesh,
            config,
            body_timeout,
            publishers: Mutex::new(HashMap::new()),
            limits: Mutex::new((limits, Duration::ZERO)),
            started: Instant::now(),
            renditions: low_latency::Renditions::default(),
        }
    }

    /// Counts an upload against its key's and its stream's limits.
    fn admit(&self, key: Key, stream: &StreamName, bytes: u64) -> Result<(), OverLimit> {
        let now = self.started.elapsed();
        let mut guard = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let (limits, forgot) = &mut *guard;
        if now.saturating_sub(*forgot) >= limits::ACTIVE_FOR {
            limits.forget_quiet(now);
            *forgot = now;
            // What was remembered of publishers whose streams the mesh has forgotten (ended a while ago).
            let mut publishers = self.publishers.lock().unwrap_or_else(|e| e.into_inner());
            publishers.retain(|s, _| self.mesh.stream(s).is_some());
            self.renditions.retain(|s| self.mesh.stream(s).is_some());
        }
        let key = match key {
            Key::Stream => format!("stream:{stream}"),
            Key::Any => "any".to_owned(),
        };
        limits.admit(now, &key, stream, bytes)
    }

    /// Checks the request's key against the stream's; says which key it was.
    pub fn authorize(&self, headers: &HeaderMap, stream: &StreamName) -> Result<Key, IngestError> {
        let given = bearer(headers)
            .or_else(|| headers.get("x-lightpath-key").and_then(|v| v.to_str().ok()).map(str::trim))
            .ok_or_else(|| IngestError::NoKey(stream.clone()))?;
        if self.config.stream_keys.get(stream).is_some_and(|k| same_secret(k, given)) {
            Ok(Key::Stream)
        } else if self.config.any_stream_key.as_deref().is_some_and(|k| same_secret(k, given)) {
            Ok(Key::Any)
        } else {
            Err(IngestError::WrongKey(stream.clone()))
        }
    }

    /// `PUT`/`POST`: stores the object and sends it down the tree.
    pub async fn put(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        stream: StreamName,
        name: ObjectName,
    ) -> Result<Reply, IngestError> {
        let key = self.authorize(headers, &stream)?;
        let limit = self.config.max_body_bytes;
        let declared =
            headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(IngestError::TooLarge(limit));
        }
        let dash = dash_name(name.as_str());
        if let Some(DashName::Media { rendition, number, width }) = dash {
            let rendition = rendition.to_owned();
            return self.put_segment(key, body, stream, name, &rendition, (number, width)).await;
        }
        let body = read_body(body, limit, self.body_timeout).await.inspect_err(|e| self.stalled(e))?;
        match dash {
            // The origin writes HLS playlists itself; a DASH manifest is accepted and not served.
            Some(DashName::Manifest) => return Ok(text(StatusCode::NO_CONTENT, "")),
            Some(DashName::Init { rendition }) => {
                let info = InitInfo::parse(&body).map_err(|error| IngestError::Media { name: name.clone(), error })?;
                if !self.renditions.init(&stream, rendition, name.as_str(), info) {
                    return Err(IngestError::NoInit { init: name.to_string(), name });
                }
            }
            _ => {}
        }
        self.admit(key, &stream, body.len() as u64)?;
        let created = self.publish(stream, name, body).await?;
        Ok(text(if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT }, ""))
    }

    fn stalled(&self, e: &IngestError) {
        if matches!(e, IngestError::BodyStalled(_)) {
            crate::telemetry::Bounds::new(self.mesh.me().as_str()).timed_out("body");
        }
    }

    /// A CMAF segment from `ffmpeg -f dash`, received as it is encoded: each part is published the moment
    /// it closes (then the playlist listing it), the whole segment when the upload ends. An upload cut
    /// short (stalled, malformed, over a limit) still completes its segment with the parts published, so
    /// that the playlist never lists a segment that will not come.
    async fn put_segment(
        &self,
        key: Key,
        body: Incoming,
        stream: StreamName,
        name: ObjectName,
        rendition: &str,
        number: (u64, usize),
    ) -> Result<Reply, IngestError> {
        let Some(info) = self.renditions.timing(&stream, rendition) else {
            return Err(IngestError::NoInit { name, init: format!("init-{rendition}.m4s") });
        };
        let ticks_per_ms = info.timescale as u64 / 1000;
        let target = self.config.part_target_ms * info.timescale as u64 / 1000;
        let mut chunks = Chunks::new(info);
        let mut cutter = PartCutter::new(target, ticks_per_ms.max(1));
        let mut segment = Segment {
            key,
            stream: &stream,
            rendition,
            number,
            index: 0,
            bytes: bytes::BytesMut::new(),
            started: unix_ms(),
            timescale: info.timescale,
        };
        let mut body = body;
        let result = loop {
            let frame = match tokio::time::timeout(self.body_timeout, body.frame()).await {
                Err(_) => break Err(IngestError::BodyStalled(self.body_timeout)),
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => break Err(IngestError::Body(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            if segment.bytes.len() as u64 + data.len() as u64 > self.config.max_body_bytes {
                break Err(IngestError::TooLarge(self.config.max_body_bytes));
            }
            let chunks = match chunks.push(&data) {
                Ok(c) => c,
                Err(error) => break Err(IngestError::Media { name: name.clone(), error }),
            };
            let mut failed = None;
            for chunk in chunks {
                if chunk.duration > target + ticks_per_ms {
                    tracing::warn!(%stream, object = %name, chunk_ms = chunk.duration * 1000 / info.timescale as u64,
                        part_target_ms = self.config.part_target_ms, "a CMAF chunk is longer than the part target (ingest.part_target_ms): lower the encoder's -frag_duration");
                }
                for part in cutter.push(chunk) {
                    if let Err(e) = self.publish_part(&mut segment, part).await {
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
        };
        if let Err(e) = &result {
            self.stalled(e);
        }
        let result = match result {
            Ok(()) => match chunks.finish() {
                Ok(_) => match cutter.finish() {
                    Some(part) => self.publish_part(&mut segment, part).await,
                    None => Ok(()),
                },
                Err(error) => Err(IngestError::Media { name: name.clone(), error }),
            },
            Err(e) => Err(e),
        };
        // The segment is the parts published, whatever became of the rest of the upload.
        if segment.index > 0 {
            let whole = std::mem::take(&mut segment.bytes).freeze();
            self.publish(stream.clone(), name.clone(), whole).await?;
            if let Some((playlist, text)) = self.renditions.segment_done(&stream, rendition) {
                self.publish(stream.clone(), ObjectName::new(playlist).expect("a valid name"), text.into()).await?;
            }
        }
        result?;
        Ok(text(StatusCode::CREATED, ""))
    }

    /// Publishes the segment's next part, then the playlists that list it.
    async fn publish_part(&self, segment: &mut Segment<'_>, part: Part) -> Result<(), IngestError> {
        self.admit(segment.key, segment.stream, part.bytes.len() as u64)?;
        let (number, width) = segment.number;
        let part_name = ObjectName::new(part_name(segment.rendition, number, width, segment.index))
            .expect("rendition names are plain");
        let seconds = part.duration as f64 / segment.timescale as f64;
        segment.bytes.extend_from_slice(&part.bytes);
        let bytes = part.bytes.len();
        self.publish(segment.stream.clone(), part_name, part.bytes).await?;
        let shape = (
            self.config.target_duration_s,
            self.config.part_target_ms as f64 / 1000.0,
            self.config.window_segments as usize,
        );
        let published = self.renditions.part(
            segment.stream,
            segment.rendition,
            segment.number,
            segment.index,
            seconds,
            bytes,
            part.independent,
            segment.started,
            shape,
        );
        segment.index += 1;
        if let Some(published) = published {
            let (playlist, text) = published.playlist;
            self.publish(segment.stream.clone(), ObjectName::new(playlist).expect("a valid name"), text.into()).await?;
            if let Some(text) = published.multivariant {
                self.publish(segment.stream.clone(), ObjectName::new("index.m3u8").expect("valid"), text.into())
                    .await?;
            }
        }
        Ok(())
    }

    /// Claims the object's version from the mesh, stores it as this origin's newest version of its name and
    /// hands it to the mesh. Returns whether the name is new.
    pub async fn publish(&self, stream: StreamName, name: ObjectName, body: bytes::Bytes) -> Result<bool, IngestError> {
        let held = self.mesh.cache().get(&stream, &name);
        let (restart, target, carried) = self.started_over(&stream, &name, &body, held.as_deref());
        // Taken now, before the new epoch's claim purges the old one's objects.
        let carried: Vec<_> = carried
            .into_iter()
            .filter_map(|n| Some((n.clone(), self.mesh.cache().get(&stream, &n)?.body.clone())))
            .collect();
        let existed = held.is_some() && !restart;
        match self.store(&stream, name.clone(), body.clone(), restart, target).await {
            Err(IngestError::Refused(refused @ Refused::Standby { .. })) => {
                self.stand_by(&stream, name, body);
                return Err(refused.into());
            }
            result => result?,
        }
        let standby = self.publisher(&stream, |p| std::mem::take(&mut p.standby));
        if !standby.is_empty() {
            tracing::info!(%stream, objects = standby.len(), "this backup origin took the stream over");
            for (name, body) in standby {
                self.store(&stream, name, body, false, target).await?;
            }
        }
        if restart {
            tracing::info!(%stream, object = %name, "the publisher started over; the stream starts a new epoch");
            // What the new publisher sent before it showed itself (its init segment, say) went out in the old
            // epoch and was purged with it: it goes again in the new one.
            for (name, body) in carried {
                self.store(&stream, name, body, false, target).await?;
            }
        }
        Ok(!existed)
    }

    fn publisher<T>(&self, stream: &StreamName, f: impl FnOnce(&mut Publisher) -> T) -> T {
        let mut publishers = self.publishers.lock().unwrap_or_else(|e| e.into_inner());
        f(publishers.entry(stream.clone()).or_default())
    }

    /// Keeps a standing-by publisher's object (the newest version of each name, the newest few names).
    fn stand_by(&self, stream: &StreamName, name: ObjectName, body: bytes::Bytes) {
        self.publisher(stream, |p| {
            p.standby.retain(|(n, _)| *n != name);
            p.standby.push((name, body));
            if p.standby.len() > MAX_STANDBY {
                // The oldest segment goes; an init segment (named once, early) is worth keeping.
                let oldest = p.standby.iter().position(|(n, _)| !n.as_str().starts_with("init")).unwrap_or(0);
                p.standby.remove(oldest);
            }
        });
    }

    async fn store(
        &self,
        stream: &StreamName,
        name: ObjectName,
        body: bytes::Bytes,
        restart: bool,
        target: Option<Duration>,
    ) -> Result<(), IngestError> {
        let now = unix_ms();
        let claim = Claim { backup: self.config.backup_for.contains(stream), restart, unix_ms: now, target };
        let seq = self.mesh.claim(stream, claim).await.ok_or(IngestError::Stopping)??;
        let header = ObjectHeader {
            content_type: content_type(&name).to_owned(),
            stream: stream.clone(),
            name,
            version: seq,
            seq,
            duration_ms: 0,
            born_unix_ms: now,
            len: body.len() as u64,
        };
        let labels = [("node", self.mesh.me().to_string()), ("stream", header.stream.to_string())];
        metrics::counter!("lightpath_ingest_objects_total", &labels).increment(1);
        metrics::counter!("lightpath_ingest_bytes_total", &labels).increment(body.len() as u64);
        tracing::debug!(stream = %header.stream, object = %header.name, bytes = body.len(), seq, "ingested");
        let object = Arc::new(Object::new(header, body));
        if self.mesh.cache().insert(object.clone()) == Inserted::New {
            self.mesh.ingested(object);
        }
        Ok(())
    }

    /// Whether this upload shows that the publisher started over (a media playlist whose sequence went
    /// back; a segment name sent again with other bytes), the stream's target duration as its playlists
    /// give it, and, on a restart, the names of the objects sent since the last playlist (the new
    /// publisher's first).
    fn started_over(
        &self,
        stream: &StreamName,
        name: &ObjectName,
        body: &bytes::Bytes,
        held: Option<&Object>,
    ) -> (bool, Option<Duration>, Vec<ObjectName>) {
        let mut publishers = self.publishers.lock().unwrap_or_else(|e| e.into_inner());
        let p = publishers.entry(stream.clone()).or_default();
        let restart = if is_playlist(name) {
            let text = std::str::from_utf8(body).unwrap_or("");
            p.target = tags::target_duration(text).or(p.target);
            let sequence = tags::media_sequence(text);
            let back = sequence.is_some_and(|seq| p.sequences.get(name).is_some_and(|last| seq < *last));
            if back {
                p.sequences.clear();
            }
            if let Some(seq) = sequence {
                p.sequences.insert(name.clone(), seq);
            }
            back
        } else {
            held.is_some_and(|o| o.body != *body)
        };
        let carried = if restart { std::mem::take(&mut p.since_playlist) } else { Vec::new() };
        if is_playlist(name) {
            p.since_playlist.clear();
        } else if p.since_playlist.len() < MAX_CARRIED {
            p.since_playlist.push(name.clone());
        }
        (restart, p.target, carried)
    }

    /// `DELETE`: forgets a segment at this origin; a playlist's deletion ends the stream (every edge's
    /// playlist gets `EXT-X-ENDLIST`).
    pub fn delete(&self, headers: &HeaderMap, stream: StreamName, name: ObjectName) -> Result<Reply, IngestError> {
        self.authorize(headers, &stream)?;
        if is_playlist(&name) {
            let found = self.mesh.cache().get(&stream, &name).is_some();
            if found {
                self.publishers.lock().unwrap_or_else(|e| e.into_inner()).remove(&stream);
                self.renditions.forget(&stream);
                self.mesh.end(&stream);
            }
            return Ok(text(if found { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }, ""));
        }
        let status =
            if self.mesh.cache().remove(&stream, &name) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND };
        Ok(text(status, ""))
    }
}

/// A CMAF segment being received.
struct Segment<'a> {
    key: Key,
    stream: &'a StreamName,
    rendition: &'a str,
    /// Its number and the digits it is written with.
    number: (u64, usize),
    /// The next part's index.
    index: u64,
    /// The parts published so far.
    bytes: bytes::BytesMut,
    /// When its first byte arrived, Unix ms: its `EXT-X-PROGRAM-DATE-TIME`.
    started: u64,
    timescale: u32,
}

/// Reads a whole upload body of at most `limit` bytes, each part within `stall` of the one before (or of
/// the start). What was read of a body that fails is dropped here.
pub async fn read_body<B>(body: B, limit: u64, stall: Duration) -> Result<bytes::Bytes, IngestError>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let mut read = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(IngestError::BodyStalled(stall)),
            Ok(None) => return Ok(read.freeze()),
            Ok(Some(Err(e))) => return Err(IngestError::Body(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if read.len() as u64 + data.len() as u64 > limit {
                return Err(IngestError::TooLarge(limit));
            }
            read.extend_from_slice(&data);
        }
    }
}

/// Compares two keys in time independent of where they differ.
pub fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    type Frame = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>;
    type Parts = futures_util::stream::Iter<std::vec::IntoIter<Frame>>;

    fn body_of(parts: &[&'static [u8]]) -> StreamBody<Parts> {
        let frames: Vec<Frame> =
            parts.iter().map(|p| Ok(hyper::body::Frame::data(bytes::Bytes::from_static(p)))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_are_read_whole_within_their_limit() {
        let s = Duration::from_secs(10);
        assert_eq!(read_body(body_of(&[b"abc", b"de"]), 5, s).await.unwrap(), &b"abcde"[..]);
        assert_eq!(read_body(body_of(&[b"abc", b"def"]), 5, s).await.unwrap_err(), IngestError::TooLarge(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_is_cut_at_the_body_timeout() {
        use futures_util::StreamExt;
        let stall = Duration::from_secs(10);
        // Two parts a second apart, then nothing.
        let parts = futures_util::stream::iter([&b"ab"[..], b"cd"])
            .then(|p| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(p)))
            })
            .chain(futures_util::stream::pending());
        let start = tokio::time::Instant::now();
        let result = read_body(StreamBody::new(Box::pin(parts)), 1 << 20, stall).await;
        assert_eq!(result.unwrap_err(), IngestError::BodyStalled(stall));
        assert_eq!(start.elapsed(), Duration::from_secs(12));
        assert_eq!(IngestError::BodyStalled(stall).status(), StatusCode::REQUEST_TIMEOUT);
    }
}
