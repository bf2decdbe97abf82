//! Writes whole frames to a connection without copying them.
//!
//! Frames are queued as the `Bytes` they arrived in (or were rewritten into) and go out with
//! vectored writes, as many queued frames per system call as the kernel takes. A session queues
//! a frame with [`FrameWriter::feed`] and flushes when nothing more is ready to be sent at once:
//! requests or responses that arrived together leave together, and nothing waits in the queue
//! while the session waits for something else. Pieces of a frame relayed as they arrive are
//! queued the same way.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Most frames handed to one vectored write (the kernel's limit, IOV_MAX, is 1024).
const MAX_SLICES_PER_WRITE: usize = 64;

#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    queue: VecDeque<Bytes>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        FrameWriter { io, queue: VecDeque::new() }
    }

    /// Queues `frame`; it is written by the next [`FrameWriter::flush`].
    pub fn feed(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.queue.push_back(frame);
        }
    }

    /// Whether frames are queued and not yet written.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Queues `frame` and writes everything queued.
    pub async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        self.feed(frame);
        self.flush().await
    }

    /// Writes every queued frame, then flushes the connection.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.queue.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES_PER_WRITE];
                let count =
                    self.queue.iter().zip(&mut slices).map(|(frame, slice)| *slice = IoSlice::new(frame)).count();
                self.io.write_vectored(&slices[..count]).await?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
        }
        self.io.flush().await
    }

    /// The connection, once nothing is queued; `None` while something is.
    pub fn into_inner(self) -> Option<W> {
        self.queue.is_empty().then_some(self.io)
    }

    /// Writes every queued frame and shuts the connection's write side down.
    pub async fn close(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }

    /// Drops `written` bytes from the front of the queue.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let front = self.queue.front_mut().expect("only queued bytes are written");
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A connection that takes at most `limit` bytes per write and records each write.
    struct Recorder {
        limit: usize,
        writes: Vec<Vec<u8>>,
        shut_down: bool,
    }

    impl Recorder {
        fn new(limit: usize) -> Recorder {
            Recorder { limit, writes: Vec::new(), shut_down: false }
        }

        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut taken = Vec::new();
            for buf in bufs {
                let room = self.limit - taken.len();
                taken.extend_from_slice(&buf[..buf.len().min(room)]);
            }
            let n = taken.len();
            self.writes.push(taken);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut_down = true;
            Poll::Ready(Ok(()))
        }
    }

    fn frames() -> Vec<Bytes> {
        (0..5u8).map(|i| Bytes::from(vec![i; 10 + usize::from(i)])).collect()
    }

    #[tokio::test]
    async fn queued_frames_leave_in_one_write() {
        let mut writer = FrameWriter::new(Recorder::new(usize::MAX));
        for frame in frames() {
            writer.feed(frame);
        }
        assert!(writer.has_queued());
        writer.flush().await.unwrap();
        assert!(!writer.has_queued());
        assert_eq!(writer.io.writes.len(), 1);
        assert_eq!(writer.io.bytes(), frames().concat());
    }

    #[tokio::test]
    async fn partial_writes_resume_where_they_stopped() {
        let mut writer = FrameWriter::new(Recorder::new(7));
        for frame in frames() {
            writer.feed(frame);
        }
        writer.feed(Bytes::new());
        writer.close().await.unwrap();
        assert_eq!(writer.io.bytes(), frames().concat());
        assert!(writer.io.writes.iter().all(|write| write.len() <= 7));
        assert!(writer.io.shut_down);
    }

    #[tokio::test]
    async fn more_frames_than_one_write_takes_are_all_written() {
        let mut writer = FrameWriter::new(Recorder::new(usize::MAX));
        let many: Vec<Bytes> = (0..200u32).map(|i| Bytes::from(i.to_be_bytes().to_vec())).collect();
        for frame in &many {
            writer.feed(frame.clone());
        }
        writer.flush().await.unwrap();
        assert_eq!(writer.io.bytes(), many.concat());
        assert_eq!(writer.io.writes.len(), 200usize.div_ceil(MAX_SLICES_PER_WRITE));
    }
}
