//! [`crate::wire`] frames on a QUIC stream: one write per frame, and a reader that buffers until a whole
//! frame is in. Used for control streams (mesh peers and control sessions alike); object streams carry a
//! header frame and then raw body bytes, which the mesh reads itself.

use bytes::BytesMut;

use crate::wire::{self, DecodeError, Frame};

/// Why a frame could not be read or written. Every variant leaves the stream unusable.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes on the stream are not a frame: the peer is broken or hostile.
    #[error("bad control frame: {0}")]
    Malformed(DecodeError),
    /// The peer finished the stream in the middle of a frame.
    #[error("control stream ended inside a frame")]
    Truncated,
    /// Reading failed: the stream was reset or the connection is gone.
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
    /// Writing failed: the peer stopped the stream or the connection is gone.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
}

/// Writes one frame on a control stream.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), FrameError> {
    let mut out = Vec::with_capacity(64);
    frame.encode(&mut out);
    send.write_all(&out).await?;
    Ok(())
}

/// Reads the next frame of a control stream, keeping bytes read past it in `buf` for the next call;
/// `None` when the peer finished the stream between two frames.
pub async fn read_frame(recv: &mut quinn::RecvStream, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    loop {
        if let Some(frame) = wire::decode_from(buf).map_err(FrameError::Malformed)? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(wire::MAX_FRAME, true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None if buf.is_empty() => return Ok(None),
            None => return Err(FrameError::Truncated),
        }
    }
}
