//! Reads Kafka frames from a connection a piece at a time, with a bounded buffer.
//!
//! A session first waits for the start of the next frame ([`FrameReader::peek`]): its length and
//! as much of its head as the session needs to decide what to do with it. Then it either takes the
//! frame whole ([`FrameReader::take_whole`], for the few frames the sidecar changes, re-sends or
//! answers itself) or relays it in chunks as they arrive ([`FrameReader::take_available`] and
//! [`FrameReader::fill`], or [`relay_frame`] into a [`FrameWriter`]), so that memory stays bounded
//! whatever the frame size. It never decides what to do with a frame; framing rules (size limits,
//! what is no Kafka frame) come from [`FrameCodec`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::frame_writer::FrameWriter;
use crate::wire::{FrameCodec, FrameError, holds_whole_frame};

/// Bytes asked of the connection per read while relaying. HAProxy's default buffer size: on
/// loopback, 64 KiB writes cost the sidecar 0.6 s of CPU per GB relayed to a librdkafka consumer
/// against 0.35 s with 16 KiB (docs/performance.md), as each write then outruns the reader's
/// window and the rest is pushed out as its acknowledgements arrive.
pub const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    codec: FrameCodec,
    buf: BytesMut,
    /// Bytes of the current frame not yet taken (0 between frames).
    frame_left: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, codec: FrameCodec) -> Self {
        FrameReader { io, codec, buf: BytesMut::new(), frame_left: 0 }
    }

    /// Waits until the next frame's length and its first `want` bytes (the whole frame if
    /// shorter) are buffered, and returns the frame's whole length, prefix included; `None` when
    /// the connection ends between frames. Cancel-safe: what was read stays buffered.
    pub async fn peek(&mut self, want: usize) -> Result<Option<usize>, FrameError> {
        loop {
            if let Some(total) = self.peeked(want)? {
                return Ok(Some(total));
            }
            if self.read_some().await? == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    buffered => Err(FrameError::TruncatedFrame { buffered }),
                };
            }
        }
    }

    /// What [`FrameReader::peek`] would return at once, without reading: the next frame's whole
    /// length when its length and first `want` bytes are buffered already, `None` otherwise.
    pub fn peeked(&self, want: usize) -> Result<Option<usize>, FrameError> {
        debug_assert_eq!(self.frame_left, 0, "peek between frames only");
        Ok(self.codec.frame_len(&self.buf)?.filter(|&total| self.buf.len() >= total.min(want)))
    }

    /// What is buffered of the frame `peek` found (its whole length is `total`).
    pub fn head(&self, total: usize) -> &[u8] {
        &self.buf[..self.buf.len().min(total)]
    }

    /// Reads the rest of the frame `peek` found and takes it whole.
    pub async fn take_whole(&mut self, total: usize) -> Result<Bytes, FrameError> {
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
        }
        while self.buf.len() < total {
            if self.read_some().await? == 0 {
                return Err(FrameError::TruncatedFrame { buffered: self.buf.len() });
            }
        }
        Ok(self.buf.split_to(total).freeze())
    }

    /// Starts relaying the frame `peek` found: the rest comes from `take_available`.
    pub fn start_relay(&mut self, total: usize) {
        self.frame_left = total;
    }

    /// Bytes of the frame being relayed that are still to come.
    pub fn frame_left(&self) -> usize {
        self.frame_left
    }

    /// The buffered bytes of the frame being relayed, at most `READ_CHUNK`-ish: empty when
    /// nothing is buffered (then [`FrameReader::fill`]).
    pub fn take_available(&mut self) -> Bytes {
        let n = self.buf.len().min(self.frame_left);
        self.frame_left -= n;
        self.buf.split_to(n).freeze()
    }

    /// Reads more of the frame being relayed; a connection that ends first is an error.
    pub async fn fill(&mut self) -> Result<(), FrameError> {
        if self.read_some().await? == 0 {
            return Err(FrameError::TruncatedFrame { buffered: self.buf.len() });
        }
        Ok(())
    }

    /// The connection, when it stands between frames with nothing read ahead; `None` otherwise.
    pub fn into_inner(self) -> Option<R> {
        (self.buf.is_empty() && self.frame_left == 0).then_some(self.io)
    }

    /// Whether a whole next frame is already buffered, so reading it will not wait.
    pub fn holds_whole_frame(&self) -> bool {
        self.frame_left == 0 && holds_whole_frame(&self.buf)
    }

    async fn read_some(&mut self) -> Result<usize, FrameError> {
        // Relayed chunks are dropped once written, so the same allocation comes back here.
        self.buf.reserve(READ_CHUNK);
        Ok(self.io.read_buf(&mut self.buf).await?)
    }
}

/// How relaying one frame failed: reading it from one side or writing it to the other.
pub enum Relay {
    Read(FrameError),
    Write(std::io::Error),
    /// Nothing more of the frame came for the idle limit.
    Idle,
}

/// Relays the frame `from` peeked (`total` bytes) to `to` as it arrives: whatever is buffered is
/// queued, and when the rest has yet to come, what is queued is written first. One read chunk
/// and what is queued are all a connection holds per direction, and a side that stops reading
/// stops the relay, so TCP's backpressure reaches the sender. With `idle`, a sender that sends
/// nothing more of the frame for that long ends it.
pub async fn relay_frame<R, W>(
    from: &mut FrameReader<R>,
    to: &mut FrameWriter<W>,
    total: usize,
    idle: Option<Duration>,
) -> Result<(), Relay>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    from.start_relay(total);
    loop {
        to.feed(from.take_available());
        if from.frame_left() == 0 {
            return Ok(());
        }
        to.flush().await.map_err(Relay::Write)?;
        match idle {
            None => from.fill().await.map_err(Relay::Read)?,
            Some(idle) => {
                tokio::time::timeout(idle, from.fill()).await.map_err(|_| Relay::Idle)?.map_err(Relay::Read)?
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        [&(body.len() as u32).to_be_bytes()[..], body].concat()
    }

    fn reader(bytes: Vec<u8>) -> FrameReader<std::io::Cursor<Vec<u8>>> {
        FrameReader::new(std::io::Cursor::new(bytes), FrameCodec::responses(1 << 20))
    }

    #[tokio::test]
    async fn whole_frames_come_back_as_they_were_sent() {
        let (a, b) = (frame(&[1; 10]), frame(&[2; 20]));
        let mut reader = reader([a.clone(), b.clone()].concat());
        let total = reader.peek(8).await.unwrap().unwrap();
        assert_eq!(total, a.len());
        assert!(reader.holds_whole_frame());
        assert_eq!(&reader.take_whole(total).await.unwrap()[..], &a[..]);
        let total = reader.peek(usize::MAX).await.unwrap().unwrap();
        assert_eq!(&reader.take_whole(total).await.unwrap()[..], &b[..]);
        assert_eq!(reader.peek(8).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_relayed_frame_comes_in_pieces_and_ends_at_its_length() {
        let big = frame(&vec![7; 3 * READ_CHUNK]);
        let next = frame(&[9; 5]);
        let mut reader = reader([big.clone(), next.clone()].concat());
        let total = reader.peek(8).await.unwrap().unwrap();
        reader.start_relay(total);
        let mut relayed = Vec::new();
        while reader.frame_left() > 0 {
            let chunk = reader.take_available();
            if chunk.is_empty() {
                reader.fill().await.unwrap();
                continue;
            }
            assert!(chunk.len() <= 2 * READ_CHUNK);
            relayed.extend_from_slice(&chunk);
        }
        assert_eq!(relayed, big);
        let total = reader.peek(8).await.unwrap().unwrap();
        assert_eq!(&reader.take_whole(total).await.unwrap()[..], &next[..]);
    }

    #[tokio::test]
    async fn a_connection_that_ends_inside_a_frame_is_an_error() {
        let cut = frame(&[1; 100])[..50].to_vec();
        let mut reader = reader(cut.clone());
        let total = reader.peek(8).await.unwrap().unwrap();
        reader.start_relay(total);
        let _ = reader.take_available();
        assert!(matches!(reader.fill().await, Err(FrameError::TruncatedFrame { .. })));
        let mut reader = super::FrameReader::new(std::io::Cursor::new(cut), FrameCodec::responses(1 << 20));
        assert!(matches!(reader.peek(usize::MAX).await, Err(FrameError::TruncatedFrame { buffered: 50 })));
    }

    #[tokio::test]
    async fn framing_rules_are_the_codec_s() {
        let mut reader = super::FrameReader::new(std::io::Cursor::new(frame(&[0; 2048])), FrameCodec::requests(1024));
        assert!(matches!(reader.peek(8).await, Err(FrameError::TooLarge { len: 2048, max: 1024 })));
    }
}
