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
//! | 0x02 | `Announce`    | stream, origin, epoch                                                       |
//! | 0x03 | `Withdraw`    | stream, origin, epoch                                                       |
//! | 0x04 | `Subscribe`   | stream                                                                      |
//! | 0x05 | `Unsubscribe` | stream                                                                      |
//! | 0x06 | `Object`      | stream, name, version, seq, content_type, duration_ms, born_unix_ms, len    |
//!
//! Integers are varints, strings a varint byte length then UTF-8. A payload must be used up exactly. Every
//! varint must take its shortest form, so the encoding is canonical: a decoded frame re-encodes to the very
//! bytes it came from.

mod varint;

pub use varint::VARINT_MAX;

use crate::id::{NameError, NodeId, ObjectName, StreamName};

/// The protocol version sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest encoded frame accepted (type + length + payload).
pub const MAX_FRAME: usize = 64 * 1024;
/// Longest `content_type` accepted, in bytes.
pub const MAX_CONTENT_TYPE: usize = 127;

const HELLO: u8 = 0x01;
const ANNOUNCE: u8 = 0x02;
const WITHDRAW: u8 = 0x03;
const SUBSCRIBE: u8 = 0x04;
const UNSUBSCRIBE: u8 = 0x05;
const OBJECT: u8 = 0x06;

/// One message of the mesh protocol.
///
/// The `u64` fields are sent as QUIC varints and so must not exceed [`VARINT_MAX`] (2^62 - 1); [`Frame::encode`]
/// panics otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame each way on a connection's control (bidirectional) stream.
    Hello { node: NodeId, protocol: u32 },
    /// `stream` is live at `origin`; flooded to every node. `epoch` grows each time the origin (re)starts the stream.
    Announce { stream: StreamName, origin: NodeId, epoch: u64 },
    /// `stream` has ended at `origin` (same epoch as its announcement).
    Withdraw { stream: StreamName, origin: NodeId, epoch: u64 },
    /// Downstream asks its upstream neighbour for a stream's objects.
    Subscribe { stream: StreamName },
    /// Downstream no longer wants the stream.
    Unsubscribe { stream: StreamName },
    /// First frame on an object's own unidirectional stream; `len` body bytes follow it on that stream.
    Object(ObjectHeader),
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
    /// `content_type` is longer than [`MAX_CONTENT_TYPE`] or holds a byte outside printable ASCII.
    #[error("content type is not printable ASCII of at most {MAX_CONTENT_TYPE} bytes")]
    BadContentType,
    /// The payload does not hold exactly its fields: one runs past its end, bytes are left over after the
    /// last, a varint is longer than needed, or an integer does not fit its field.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
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
            Frame::Announce { origin, epoch, .. } | Frame::Withdraw { origin, epoch, .. } => {
                put_str(origin.as_str(), out);
                varint::put(*epoch, out);
            }
            Frame::Subscribe { .. } | Frame::Unsubscribe { .. } => {}
            Frame::Object(h) => {
                put_str(h.name.as_str(), out);
                varint::put(h.version, out);
                varint::put(h.seq, out);
                put_str(&h.content_type, out);
                varint::put(u64::from(h.duration_ms), out);
                varint::put(h.born_unix_ms, out);
                varint::put(h.len, out);
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
        if !(HELLO..=OBJECT).contains(&ty) {
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
            ANNOUNCE => Frame::Announce { stream: r.name()?, origin: r.name()?, epoch: r.varint()? },
            WITHDRAW => Frame::Withdraw { stream: r.name()?, origin: r.name()?, epoch: r.varint()? },
            SUBSCRIBE => Frame::Subscribe { stream: r.name()? },
            UNSUBSCRIBE => Frame::Unsubscribe { stream: r.name()? },
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
