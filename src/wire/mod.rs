//! The mesh protocol's frames and their byte encoding.
//!
//! Neighbours exchange [`Frame`]s over QUIC: `Hello`, `Announce`, `Withdraw`, `Subscribe` and `Unsubscribe`
//! on a connection's control (bidirectional) stream, and an `Object` header at the start of each object's
//! unidirectional stream, followed there by the object's body. This module only turns frames into bytes and
//! back; it owns no streams and no state, does no I/O and never looks at a clock. The `mesh` module reads
//! from quinn streams into a buffer and calls [`decode_from`]; everything it decodes from a peer has been
//! checked here (lengths, names, strings), so a frame is safe to act on.
//!
//! A frame is one type byte, the payload length as a QUIC varint, then the payload:
//!
//! | type | frame         | payload fields                                                              |
//! | ---- | ------------- | --------------------------------------------------------------------------- |
//! | 0x01 | `Hello`       | node, protocol                                                              |
//! | 0x02 | `Announce`    | stream, origin, epoch, backup                                               |
//! | 0x03 | `Withdraw`    | stream, origin, epoch                                                       |
//! | 0x04 | `Subscribe`   | stream                                                                      |
//! | 0x05 | `Unsubscribe` | stream                                                                      |
//! | 0x06 | `Object`      | stream, name, version, seq, content_type, duration_ms, born_unix_ms, len    |
//! | 0x07 | `Report`      | node, count, (peer, rtt_us, jitter_us, loss_ppm, up)*, count, (stream, origin, upstream, epoch, phase, viewers)*, count, (stream, version, active, reason)*, draining |
//! | 0x08 | `Routes`      | version, count, (dest, via, backup)*                                        |
//! | 0x09 | `Unavailable` | stream                                                                      |
//! | 0x0a | `Takedown`    | stream, version, active, reason                                             |
//!
//! `Report` and `Routes` travel between a node and a control-plane replica, on the same kind of control
//! stream; so does `Takedown`, which a replica also sends to nodes. An optional node id (`upstream`, `backup`) is an empty string when absent. Probes ride QUIC
//! datagrams, outside any stream: [`Probe`] is nine bytes, a type byte and a big-endian sequence number.
//!
//! Integers are varints, strings a varint byte length then UTF-8. A payload must be used up exactly. Every
//! varint must take its shortest form, so the encoding is canonical: a decoded frame re-encodes to the very
//! bytes it came from.

mod varint;

pub use varint::VARINT_MAX;

use crate::id::{NameError, NodeId, ObjectName, StreamName};

/// The protocol version sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 5;
/// Largest encoded frame accepted (type + length + payload).
pub const MAX_FRAME: usize = 64 * 1024;
/// Longest `content_type` accepted, in bytes.
pub const MAX_CONTENT_TYPE: usize = 127;
/// Longest takedown `reason` accepted, in bytes.
pub const MAX_REASON: usize = 256;

const HELLO: u8 = 0x01;
const ANNOUNCE: u8 = 0x02;
const WITHDRAW: u8 = 0x03;
const SUBSCRIBE: u8 = 0x04;
const UNSUBSCRIBE: u8 = 0x05;
const OBJECT: u8 = 0x06;
const REPORT: u8 = 0x07;
const ROUTES: u8 = 0x08;
const UNAVAILABLE: u8 = 0x09;
const TAKEDOWN: u8 = 0x0a;

/// One message of the mesh protocol.
///
/// The `u64` fields are sent as QUIC varints and so must not exceed [`VARINT_MAX`] (2^62 - 1); [`Frame::encode`]
/// panics otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame each way on a connection's control (bidirectional) stream.
    Hello { node: NodeId, protocol: u32 },
    /// `stream` is live at `origin`; flooded to every node. `epoch` grows each time the stream starts again,
    /// at any origin: the newest epoch is the stream's owner. `backup`: the origin holds the stream as a
    /// configured backup, and yields it to any other origin whose publisher comes (back).
    Announce { stream: StreamName, origin: NodeId, epoch: u64, backup: bool },
    /// `stream` has ended at `origin` (same epoch as its announcement).
    Withdraw { stream: StreamName, origin: NodeId, epoch: u64 },
    /// Downstream asks its upstream neighbour for a stream's objects.
    Subscribe { stream: StreamName },
    /// Downstream no longer wants the stream.
    Unsubscribe { stream: StreamName },
    /// First frame on an object's own unidirectional stream; `len` body bytes follow it on that stream.
    Object(ObjectHeader),
    /// A node's measurements and streams, sent to the control plane.
    Report(Report),
    /// A node's route table, pushed by the control plane.
    Routes(Routes),
    /// Upstream tells a downstream subscriber that it cannot get `stream` other than through that subscriber
    /// (or at all): the subscriber should take it from another neighbour. Sent instead of subscribing back,
    /// which would close a loop.
    Unavailable { stream: StreamName },
    /// An operator took `stream` down everywhere (`active`), or lifted that (`!active`), with a reason for
    /// viewers and publishers. Flooded to every node; the highest `version` wins.
    Takedown { stream: StreamName, version: u64, active: bool, reason: String },
}

/// What a node tells the control plane: its links as it measures them, and the streams it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub node: NodeId,
    pub links: Vec<LinkReport>,
    pub streams: Vec<StreamReport>,
    /// Every takedown the node knows (lifted ones too), so that each replica learns those issued elsewhere.
    pub takedowns: Vec<(StreamName, Takedown)>,
    /// An operator is draining the node: the control plane routes new trees around it (see
    /// [`Planner::handle_draining`](crate::routing::Planner::handle_draining)) and directors send no viewer
    /// to it.
    pub draining: bool,
    /// A number the node drew at random when it started (0 where nobody drew one: the simulator; at most
    /// [`VARINT_MAX`]). The
    /// node's `/healthz` answers with the same number (the `lightpath-boot` header), so a director can tell
    /// a report of the run that answers its health checks from one an earlier run sent before it was killed.
    pub boot: u64,
}

/// An operator's word on a stream: taken down (`active`) or lifted, with a reason for viewers and publishers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Takedown {
    /// Grows with every change; the highest wins.
    pub version: u64,
    pub active: bool,
    pub reason: String,
}

/// One link as its node measures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReport {
    pub peer: NodeId,
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u64,
    /// Round-trip variation, microseconds.
    pub jitter_us: u64,
    /// Probe loss in parts per million.
    pub loss_ppm: u32,
    /// Whether the link answers probes.
    pub up: bool,
}

/// A stream a node knows: its owner, the neighbour it receives it from (none at the origin, or when it does
/// not receive it), its phase, and how many viewers watch it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    pub stream: StreamName,
    pub origin: NodeId,
    pub upstream: Option<NodeId>,
    /// The owner's epoch (see [`Frame::Announce`]).
    pub epoch: u64,
    pub phase: StreamPhase,
    /// Distinct viewers at this node over the last 30 s (0 where nobody watches, or on a relay).
    pub viewers: u32,
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamPhase {
    /// Its publisher is pushing.
    Live,
    /// Its publisher stopped (or the playlist was deleted): players are told the stream ended.
    Ended,
    /// An operator took it down.
    TakenDown,
}

impl StreamPhase {
    fn code(self) -> u64 {
        match self {
            StreamPhase::Live => 0,
            StreamPhase::Ended => 1,
            StreamPhase::TakenDown => 2,
        }
    }

    fn from_code(code: u64) -> Result<Self, DecodeError> {
        match code {
            0 => Ok(StreamPhase::Live),
            1 => Ok(StreamPhase::Ended),
            2 => Ok(StreamPhase::TakenDown),
            _ => Err(DecodeError::Malformed("unknown stream phase")),
        }
    }
}

/// A node's route table toward the origins, as the control plane computed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routes {
    /// Grows with every change (the replica's time of the change, in ms); a node keeps the newest table of
    /// the replicas it is in session with.
    pub version: u64,
    pub routes: Vec<Route>,
}

/// The next hop, and a loop-free backup, toward one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dest: NodeId,
    pub via: NodeId,
    pub backup: Option<NodeId>,
}

/// A link probe, carried in one QUIC datagram: a request, or the reply echoing its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Please echo `seq`.
    Request { seq: u64 },
    /// The echo of a request's `seq`.
    Reply { seq: u64 },
}

impl Probe {
    /// The nine-byte datagram.
    pub fn encode(self) -> [u8; 9] {
        let (ty, seq) = match self {
            Probe::Request { seq } => (0x01, seq),
            Probe::Reply { seq } => (0x02, seq),
        };
        let mut out = [0u8; 9];
        out[0] = ty;
        out[1..].copy_from_slice(&seq.to_be_bytes());
        out
    }

    /// Reads a datagram; anything but exactly nine bytes of a known type is rejected.
    pub fn decode(buf: &[u8]) -> Result<Probe, DecodeError> {
        let [ty, rest @ ..] = buf else { return Err(DecodeError::Incomplete) };
        let seq: [u8; 8] = rest.try_into().map_err(|_| DecodeError::Malformed("a probe is exactly nine bytes"))?;
        let seq = u64::from_be_bytes(seq);
        match ty {
            0x01 => Ok(Probe::Request { seq }),
            0x02 => Ok(Probe::Reply { seq }),
            &other => Err(DecodeError::UnknownType(other)),
        }
    }
}

/// What the mesh knows about an object besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHeader {
    pub stream: StreamName,
    pub name: ObjectName,
    /// Version of this name (a playlist is re-uploaded under the same name; higher wins).
    pub version: u64,
    /// Origin-assigned sequence number, increasing per stream, used for priority (newest first).
    pub seq: u64,
    /// MIME type, e.g. "video/mp2t"; printable ASCII, at most 127 bytes (see [`is_valid_content_type`]).
    pub content_type: String,
    /// Media duration in milliseconds (0 when not media).
    pub duration_ms: u32,
    /// Unix time in milliseconds when the origin finished receiving the object (for `Age`).
    pub born_unix_ms: u64,
    /// Body length in bytes.
    pub len: u64,
}

/// Why bytes did not decode into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `buf` ends before the frame does; read more and retry (not an error of the peer).
    #[error("frame is incomplete")]
    Incomplete,
    /// The type byte names no frame of this protocol version.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The frame declares a payload of this many bytes, which makes it larger than [`MAX_FRAME`].
    #[error("frame declares a {0}-byte payload, which exceeds the {MAX_FRAME}-byte frame limit")]
    TooLarge(u64),
    /// A stream, object or node name field is not a valid name.
    #[error("bad name: {0}")]
    BadName(#[from] NameError),
    /// A string field is not UTF-8.
    #[error("string field is not UTF-8")]
    BadString,
    /// A takedown reason is longer than [`MAX_REASON`] or holds a control character.
    #[error("takedown reason is not text of at most {MAX_REASON} bytes")]
    BadReason,
    /// `content_type` is longer than [`MAX_CONTENT_TYPE`] or holds a byte outside printable ASCII.
    #[error("content type is not printable ASCII of at most {MAX_CONTENT_TYPE} bytes")]
    BadContentType,
    /// The payload does not hold exactly its fields: one runs past its end, bytes are left over after the
    /// last, a varint is longer than needed, or an integer does not fit its field.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// Whether `s` may be a takedown reason: at most [`MAX_REASON`] bytes of text without control characters
/// (it goes into logs and HTTP bodies).
pub fn is_valid_reason(s: &str) -> bool {
    s.len() <= MAX_REASON && !s.chars().any(char::is_control)
}

/// Whether `s` may be an object's content type: printable ASCII (space included), at most 127 bytes.
pub fn is_valid_content_type(s: &str) -> bool {
    s.len() <= MAX_CONTENT_TYPE && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

impl Frame {
    /// Appends the encoding of `self` to `out`.
    ///
    /// A frame that [`Frame::decode`] would reject (a bad content type, a frame over [`MAX_FRAME`]) is
    /// encoded all the same; the receiver rejects it.
    ///
    /// # Panics
    ///
    /// When a `u64` field exceeds [`VARINT_MAX`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (ty, stream) = match self {
            Frame::Hello { .. } => (HELLO, None),
            Frame::Announce { stream, .. } => (ANNOUNCE, Some(stream)),
            Frame::Withdraw { stream, .. } => (WITHDRAW, Some(stream)),
            Frame::Subscribe { stream } => (SUBSCRIBE, Some(stream)),
            Frame::Unsubscribe { stream } => (UNSUBSCRIBE, Some(stream)),
            Frame::Object(h) => (OBJECT, Some(&h.stream)),
            Frame::Report(_) => (REPORT, None),
            Frame::Routes(_) => (ROUTES, None),
            Frame::Unavailable { stream } => (UNAVAILABLE, Some(stream)),
            Frame::Takedown { stream, .. } => (TAKEDOWN, Some(stream)),
        };
        out.push(ty);
        let start = out.len();
        if let Some(stream) = stream {
            put_str(stream.as_str(), out);
        }
        match self {
            Frame::Hello { node, protocol } => {
                put_str(node.as_str(), out);
                varint::put(u64::from(*protocol), out);
            }
            Frame::Announce { origin, epoch, backup, .. } => {
                put_str(origin.as_str(), out);
                varint::put(*epoch, out);
                varint::put(u64::from(*backup), out);
            }
            Frame::Withdraw { origin, epoch, .. } => {
                put_str(origin.as_str(), out);
                varint::put(*epoch, out);
            }
            Frame::Takedown { version, active, reason, .. } => {
                varint::put(*version, out);
                varint::put(u64::from(*active), out);
                put_str(reason, out);
            }
            Frame::Subscribe { .. } | Frame::Unsubscribe { .. } | Frame::Unavailable { .. } => {}
            Frame::Object(h) => {
                put_str(h.name.as_str(), out);
                varint::put(h.version, out);
                varint::put(h.seq, out);
                put_str(&h.content_type, out);
                varint::put(u64::from(h.duration_ms), out);
                varint::put(h.born_unix_ms, out);
                varint::put(h.len, out);
            }
            Frame::Report(r) => {
                put_str(r.node.as_str(), out);
                varint::put(r.links.len() as u64, out);
                for l in &r.links {
                    put_str(l.peer.as_str(), out);
                    varint::put(l.rtt_us, out);
                    varint::put(l.jitter_us, out);
                    varint::put(u64::from(l.loss_ppm), out);
                    varint::put(u64::from(l.up), out);
                }
                varint::put(r.streams.len() as u64, out);
                for s in r.streams.iter() {
                    put_str(s.stream.as_str(), out);
                    put_str(s.origin.as_str(), out);
                    put_str(s.upstream.as_ref().map_or("", |u| u.as_str()), out);
                    varint::put(s.epoch, out);
                    varint::put(s.phase.code(), out);
                    varint::put(u64::from(s.viewers), out);
                }
                varint::put(r.takedowns.len() as u64, out);
                for (stream, t) in &r.takedowns {
                    put_str(stream.as_str(), out);
                    varint::put(t.version, out);
                    varint::put(u64::from(t.active), out);
                    put_str(&t.reason, out);
                }
                varint::put(u64::from(r.draining), out);
                varint::put(r.boot, out);
            }
            Frame::Routes(t) => {
                varint::put(t.version, out);
                varint::put(t.routes.len() as u64, out);
                for r in &t.routes {
                    put_str(r.dest.as_str(), out);
                    put_str(r.via.as_str(), out);
                    put_str(r.backup.as_ref().map_or("", |b| b.as_str()), out);
                }
            }
        }
        // The payload's length is known only now: append it, then rotate it in front of the payload.
        let payload_len = (out.len() - start) as u64;
        varint::put(payload_len, out);
        out[start..].rotate_right(varint::len(payload_len));
    }

    /// Decodes one frame from the front of `buf`; returns it and the number of bytes it used.
    ///
    /// Never panics. A declared length over [`MAX_FRAME`] is rejected as soon as it is readable, before its
    /// bytes arrive.
    pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
        let (&ty, rest) = buf.split_first().ok_or(DecodeError::Incomplete)?;
        if !(HELLO..=TAKEDOWN).contains(&ty) {
            return Err(DecodeError::UnknownType(ty));
        }
        let (payload_len, len_len) = varint::get(rest)?;
        // Cannot overflow: payload_len <= VARINT_MAX.
        let total = 1 + len_len as u64 + payload_len;
        if total > MAX_FRAME as u64 {
            return Err(DecodeError::TooLarge(payload_len));
        }
        let total = total as usize;
        let payload = buf.get(1 + len_len..total).ok_or(DecodeError::Incomplete)?;

        let mut r = Payload(payload);
        let frame = match ty {
            HELLO => Frame::Hello { node: r.name()?, protocol: r.u32()? },
            ANNOUNCE => Frame::Announce { stream: r.name()?, origin: r.name()?, epoch: r.varint()?, backup: r.flag()? },
            WITHDRAW => Frame::Withdraw { stream: r.name()?, origin: r.name()?, epoch: r.varint()? },
            SUBSCRIBE => Frame::Subscribe { stream: r.name()? },
            UNSUBSCRIBE => Frame::Unsubscribe { stream: r.name()? },
            UNAVAILABLE => Frame::Unavailable { stream: r.name()? },
            TAKEDOWN => {
                Frame::Takedown { stream: r.name()?, version: r.varint()?, active: r.flag()?, reason: r.reason()? }
            }
            REPORT => {
                let node = r.name()?;
                let mut links = Vec::new();
                for _ in 0..r.count()? {
                    links.push(LinkReport {
                        peer: r.name()?,
                        rtt_us: r.varint()?,
                        jitter_us: r.varint()?,
                        loss_ppm: r.u32()?,
                        up: r.flag()?,
                    });
                }
                let mut streams = Vec::new();
                for _ in 0..r.count()? {
                    streams.push(StreamReport {
                        stream: r.name()?,
                        origin: r.name()?,
                        upstream: r.optional_name()?,
                        epoch: r.varint()?,
                        phase: StreamPhase::from_code(r.varint()?)?,
                        viewers: r.u32()?,
                    });
                }
                let mut takedowns = Vec::new();
                for _ in 0..r.count()? {
                    let stream = r.name()?;
                    takedowns.push((stream, Takedown { version: r.varint()?, active: r.flag()?, reason: r.reason()? }));
                }
                Frame::Report(Report { node, links, streams, takedowns, draining: r.flag()?, boot: r.varint()? })
            }
            ROUTES => {
                let version = r.varint()?;
                let mut routes = Vec::new();
                for _ in 0..r.count()? {
                    routes.push(Route { dest: r.name()?, via: r.name()?, backup: r.optional_name()? });
                }
                Frame::Routes(Routes { version, routes })
            }
            _ => Frame::Object(ObjectHeader {
                stream: r.name()?,
                name: r.name()?,
                version: r.varint()?,
                seq: r.varint()?,
                content_type: r.content_type()?,
                duration_ms: r.u32()?,
                born_unix_ms: r.varint()?,
                len: r.varint()?,
            }),
        };
        if !r.0.is_empty() {
            return Err(DecodeError::Malformed("bytes left over after the payload's fields"));
        }
        Ok((frame, total))
    }
}

/// Decodes one frame from the front of a buffer that reads keep appending to.
///
/// Returns `Ok(None)`, leaving `buf` as it is, while the frame is incomplete; on success removes the frame's
/// bytes from `buf`. An error means the peer sent garbage: the stream cannot be resynchronised.
pub fn decode_from(buf: &mut bytes::BytesMut) -> Result<Option<Frame>, DecodeError> {
    match Frame::decode(buf) {
        Ok((frame, used)) => {
            bytes::Buf::advance(buf, used);
            Ok(Some(frame))
        }
        Err(DecodeError::Incomplete) => Ok(None),
        Err(e) => Err(e),
    }
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    varint::put(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// The unread rest of a frame's payload. The payload is complete, so running out of it is the peer's
/// error, never `Incomplete`.
struct Payload<'a>(&'a [u8]);

impl<'a> Payload<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let (v, n) = varint::get(self.0).map_err(|e| match e {
            DecodeError::Incomplete => DecodeError::Malformed("integer runs past the end of the payload"),
            e => e,
        })?;
        self.0 = &self.0[n..];
        Ok(v)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::Malformed("integer does not fit 32 bits"))
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).ok().filter(|&len| len <= self.0.len());
        let len = len.ok_or(DecodeError::Malformed("string runs past the end of the payload"))?;
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(s).map_err(|_| DecodeError::BadString)
    }

    fn name<T: TryFrom<String, Error = NameError>>(&mut self) -> Result<T, DecodeError> {
        Ok(T::try_from(self.str()?.to_owned())?)
    }

    /// An element count; each element takes at least one byte, so a count beyond the bytes left is a lie.
    fn count(&mut self) -> Result<u64, DecodeError> {
        let n = self.varint()?;
        if n > self.0.len() as u64 {
            return Err(DecodeError::Malformed("element count exceeds the payload"));
        }
        Ok(n)
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.varint()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed("a flag is 0 or 1")),
        }
    }

    fn optional_name(&mut self) -> Result<Option<NodeId>, DecodeError> {
        let s = self.str()?;
        if s.is_empty() {
            return Ok(None);
        }
        Ok(Some(NodeId::new(s.to_owned())?))
    }

    fn reason(&mut self) -> Result<String, DecodeError> {
        let s = self.str()?;
        if !is_valid_reason(s) {
            return Err(DecodeError::BadReason);
        }
        Ok(s.to_owned())
    }

    fn content_type(&mut self) -> Result<String, DecodeError> {
        let s = self.str()?;
        if !is_valid_content_type(s) {
            return Err(DecodeError::BadContentType);
        }
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests;
