//! The connection type every HTTP server hands to hyper: a `TcpStream` that sends slices of sealed cached
//! bodies ([`crate::cache::sealed`]) with `sendfile(2)` from their memory file instead of copying them.
//!
//! hyper writes an HTTP/1.1 response as one vectored write of its head and its body. When a slice of such a
//! write lies inside a sealed body, [`SendfileStream`] sends the slices before it with `sendmsg(MSG_MORE)`
//! (so the head leaves in the same packet as the start of the body) and then the sealed slice with
//! `sendfile` at its offset in the file; the kernel then queues references to the file's pages rather than
//! a copy of them. It returns how many bytes went, as any partial write does, and hyper offers the rest
//! again. Everything else (requests, small bodies, bodies that stayed on the heap) takes `TcpStream`'s
//! ordinary path. HTTP/2 writes its DATA frames in slices of 16 KiB, below
//! [`MIN_SEALED_BYTES`](crate::cache::sealed::MIN_SEALED_BYTES), so HTTP/2 responses keep being copied.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::cache::sealed::SealedSlice;

/// Bytes sent with `sendfile` by every stream of this process, for tests and benchmarks to confirm that
/// the zero-copy path is taken.
static SENT_FROM_SEALED: AtomicU64 = AtomicU64::new(0);

/// A viewer connection that sends sealed bodies without copying them.
pub struct SendfileStream {
    tcp: TcpStream,
    sent_from_sealed: u64,
}

impl SendfileStream {
    pub fn new(tcp: TcpStream) -> Self {
        Self { tcp, sent_from_sealed: 0 }
    }

    /// Bytes this stream sent from sealed bodies with `sendfile`.
    pub fn sent_from_sealed(&self) -> u64 {
        self.sent_from_sealed
    }

    /// Bytes all streams of this process sent from sealed bodies with `sendfile`.
    pub fn all_sent_from_sealed() -> u64 {
        SENT_FROM_SEALED.load(Ordering::Relaxed)
    }

    /// Writes `head` (ordinary bytes, maybe none) and then as much of `body` as the socket takes, with one
    /// readiness wait. Never reports `WouldBlock` once some bytes went: it returns their count instead.
    fn poll_send(&mut self, cx: &mut Context<'_>, head: &[IoSlice<'_>], body: &SealedSlice) -> Poll<io::Result<usize>> {
        let head_len: usize = head.iter().map(|b| b.len()).sum();
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let result = self.tcp.try_io(Interest::WRITABLE, || {
                let mut sent = 0;
                if head_len > 0 {
                    let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
                    sent = rustix::net::sendmsg(&self.tcp, head, &mut SendAncillaryBuffer::default(), flags)?;
                    if sent < head_len {
                        return Ok((sent, 0));
                    }
                }
                let mut offset = body.offset();
                match rustix::fs::sendfile(&self.tcp, body.file(), Some(&mut offset), body.len()) {
                    Ok(n) => Ok((sent, n)),
                    // The head went: report it; the next call meets the full buffer (or the error) again.
                    Err(_) if sent > 0 => Ok((sent, 0)),
                    Err(e) => Err(e.into()),
                }
            });
            match result {
                Ok((head_sent, body_sent)) => {
                    self.sent_from_sealed += body_sent as u64;
                    SENT_FROM_SEALED.fetch_add(body_sent as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(head_sent + body_sent));
                }
                // `try_io` cleared the readiness: the next `poll_write_ready` waits for the socket.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match SealedSlice::find(buf) {
            Some(body) => self.poll_send(cx, &[], &body),
            None => Pin::new(&mut self.tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let sealed = bufs.iter().enumerate().find_map(|(i, b)| Some((i, SealedSlice::find(b)?)));
        match sealed {
            Some((at, body)) => self.poll_send(cx, &bufs[..at], &body),
            None => Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // hyper queues head and body as separate slices only for a vectored stream; otherwise it copies the
        // body behind the head in its own buffer.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket};

    use super::*;
    use crate::cache::sealed::{self, MIN_SEALED_BYTES};

    /// Distinct bytes at every offset, so a shifted or reordered copy would not compare equal.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8) ^ seed).collect()
    }

    /// How a write of head + body went on the sending side.
    #[derive(Debug, Default)]
    struct Sent {
        /// `poll_write_vectored` calls that returned a count.
        writes: usize,
        /// Calls that found the socket full and waited.
        waits: usize,
        /// Bytes of the body that went with `sendfile`.
        zero_copy: u64,
    }

    /// Writes `head` then `body` with vectored writes, as hyper does, until all went.
    async fn send(stream: &mut SendfileStream, head: &[u8], body: &[u8]) -> Sent {
        let mut sent = Sent::default();
        let mut done = 0;
        let total = head.len() + body.len();
        while done < total {
            let slices = if done < head.len() {
                vec![IoSlice::new(&head[done..]), IoSlice::new(body)]
            } else {
                vec![IoSlice::new(&body[done - head.len()..])]
            };
            let n = poll_fn(|cx| {
                let poll = Pin::new(&mut *stream).poll_write_vectored(cx, &slices);
                if poll.is_pending() {
                    sent.waits += 1;
                }
                poll
            })
            .await
            .unwrap();
            assert!(n > 0);
            sent.writes += 1;
            done += n;
        }
        sent.zero_copy = stream.sent_from_sealed();
        sent
    }

    /// A connected pair on loopback: the sending side as a `SendfileStream`, the receiving side raw.
    async fn pair(recv_buffer: Option<u32>) -> (SendfileStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let (client, accepted) = tokio::join!(socket.connect(listener.local_addr().unwrap()), listener.accept());
        (SendfileStream::new(accepted.unwrap().0), client.unwrap())
    }

    #[tokio::test]
    async fn a_sealed_body_arrives_byte_identical_without_a_copy() {
        let data = pattern(MIN_SEALED_BYTES * 16 + 123, 1);
        let body = sealed::seal(&data, usize::MAX).unwrap();
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1048699\r\n\r\n";
        let (mut server, mut client) = pair(None).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let sent = send(&mut server, head, &body[..]).await;
        drop(server);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), head.len() + data.len());
        assert!(got[..head.len()] == head[..], "head mangled");
        assert!(got[head.len()..] == data[..], "body differs");
        assert_eq!(sent.zero_copy, data.len() as u64, "every body byte went with sendfile: {sent:?}");
    }

    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_through_partial_writes() {
        let data = pattern(MIN_SEALED_BYTES * 8, 2);
        let body = sealed::seal(&data, usize::MAX).unwrap();
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let (mut server, mut client) = pair(Some(4096)).await;
        rustix::net::sockopt::set_socket_send_buffer_size(&server.tcp, 4096).unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 1500];
            loop {
                let n = client.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&chunk[..n]);
                if got.len() % 16 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let sent = send(&mut server, head, &body[..]).await;
        drop(server);
        let got = reader.await.unwrap();
        assert!(got[..head.len()] == head[..], "head mangled");
        assert!(got[head.len()..] == data[..], "body differs after {sent:?}");
        assert!(sent.writes > 10 && sent.waits > 0, "the socket never filled up: {sent:?}");
        // Near the end of the body the rest is shorter than MIN_SEALED_BYTES and is copied.
        assert!(sent.zero_copy >= (data.len() - MIN_SEALED_BYTES) as u64, "{sent:?}");
    }

    #[tokio::test]
    async fn many_concurrent_connections_each_get_their_body() {
        let bodies: Vec<(Vec<u8>, Bytes)> = (0..4)
            .map(|i| {
                let data = pattern(MIN_SEALED_BYTES * (4 + i) + i, i as u8);
                let body = sealed::seal(&data, usize::MAX).unwrap();
                (data, body)
            })
            .collect();
        let bodies = Arc::new(bodies);
        let mut tasks = Vec::new();
        for n in 0..64 {
            let bodies = bodies.clone();
            tasks.push(tokio::spawn(async move {
                let (data, body) = &bodies[n % bodies.len()];
                let (mut server, mut client) = pair(None).await;
                let reader = tokio::spawn(async move {
                    let mut got = Vec::new();
                    client.read_to_end(&mut got).await.unwrap();
                    got
                });
                let head = format!("response {n}\r\n");
                let sent = send(&mut server, head.as_bytes(), body).await;
                drop(server);
                let got = reader.await.unwrap();
                assert!(got[..head.len()] == *head.as_bytes(), "connection {n}: head mangled");
                assert!(got[head.len()..] == data[..], "connection {n}: body differs");
                assert!(sent.zero_copy > 0, "connection {n}: {sent:?}");
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_body_left_on_the_heap_is_copied() {
        let data = pattern(MIN_SEALED_BYTES * 4, 3);
        assert!(matches!(sealed::seal(&data, 0), Err(sealed::SealError::Budget(_))));
        let (mut server, mut client) = pair(None).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let sent = send(&mut server, b"head\r\n", &data).await;
        drop(server);
        let got = reader.await.unwrap();
        assert!(got[6..] == data[..], "body differs");
        assert_eq!(sent.zero_copy, 0);
    }
}
