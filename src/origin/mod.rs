//! Ingest at an origin: publishers push a live stream over plain HTTP, exactly as ffmpeg's HLS muxer does
//! with `-method PUT`.
//!
//! `PUT`/`POST /live/{stream}/{file}` stores a segment, part, init segment or playlist (chunked bodies
//! without Content-Length included) and hands it to the mesh, which announces the stream on its first
//! object and sends every object down the stream's tree. Re-uploading a playlist makes a new version of it.
//! `DELETE` (from `-hls_flags delete_segments`) removes the object here only: downstream caches age their
//! live windows out on their own, so a viewer a few seconds behind is never cut short.
//!
//! Publishing needs the stream's key, in `Authorization: Bearer KEY` or `X-Lightpath-Key: KEY` (ffmpeg:
//! `-headers "Authorization: Bearer KEY"`). Bodies are bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::cache::{Inserted, Object};
use crate::clock::unix_ms;
use crate::config::IngestConfig;
use crate::hls::media::content_type;
use crate::http::{text, Reply};
use crate::id::{ObjectName, StreamName};
use crate::mesh::Mesh;
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
}

impl IngestError {
    /// The status the publisher sees.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::NoKey(_) => StatusCode::UNAUTHORIZED,
            IngestError::WrongKey(_) => StatusCode::FORBIDDEN,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Body(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Per-stream sequence numbering at this origin.
struct Sequence {
    next: u64,
}

/// The ingest side of an origin node.
pub struct Ingest {
    mesh: Mesh,
    config: IngestConfig,
    sequences: Mutex<HashMap<StreamName, Sequence>>,
}

impl Ingest {
    pub fn new(mesh: Mesh, config: IngestConfig) -> Self {
        Self { mesh, config, sequences: Mutex::new(HashMap::new()) }
    }

    /// Checks the request's key against the stream's.
    pub fn authorize(&self, headers: &HeaderMap, stream: &StreamName) -> Result<(), IngestError> {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("x-lightpath-key").and_then(|v| v.to_str().ok()))
            .map(str::trim)
            .ok_or_else(|| IngestError::NoKey(stream.clone()))?;
        let ok = self.config.stream_keys.get(stream).is_some_and(|k| same_key(k, given))
            || self.config.any_stream_key.as_deref().is_some_and(|k| same_key(k, given));
        if ok {
            Ok(())
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
        self.authorize(headers, &stream)?;
        let limit = self.config.max_body_bytes;
        let declared =
            headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(IngestError::TooLarge(limit));
        }
        let body = match Limited::new(body, limit as usize).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(IngestError::TooLarge(limit)),
            Err(e) => return Err(IngestError::Body(e.to_string())),
        };
        let created = self.publish(stream, name, body);
        Ok(text(if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT }, ""))
    }

    /// Stores one object as this origin's newest version of its name and hands it to the mesh. Returns
    /// whether the name is new.
    pub fn publish(&self, stream: StreamName, name: ObjectName, body: bytes::Bytes) -> bool {
        let now = unix_ms();
        let seq = {
            let mut seqs = self.sequences.lock().unwrap_or_else(|e| e.into_inner());
            // Sequence numbers start from the clock so that they keep growing across origin restarts:
            // a restarted origin's playlist must win over the old one in every cache.
            let s = seqs.entry(stream.clone()).or_insert(Sequence { next: now * 1000 });
            s.next += 1;
            s.next
        };
        let existed = self.mesh.cache().get(&stream, &name).is_some();
        let header = ObjectHeader {
            content_type: content_type(&name).to_owned(),
            stream,
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
        !existed
    }

    /// `DELETE`: forgets the object at this origin.
    pub fn delete(&self, headers: &HeaderMap, stream: StreamName, name: ObjectName) -> Result<Reply, IngestError> {
        self.authorize(headers, &stream)?;
        let status =
            if self.mesh.cache().remove(&stream, &name) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND };
        Ok(text(status, ""))
    }
}

/// Compares two keys in time independent of where they differ.
pub fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
