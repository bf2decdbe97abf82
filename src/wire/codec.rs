//! Length-prefixed Kafka framing as a tokio-util codec.
//!
//! A frame is kept whole, its 4-byte length prefix included, so that a frame the sidecar does not
//! rewrite is forwarded as the very bytes it arrived in.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

const LENGTH_PREFIX: usize = 4;

/// Why a byte stream could not be split into Kafka frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("TLS handshake received on plaintext listener")]
    TlsOnPlaintext,
    #[error("HTTP request received on Kafka listener")]
    HttpOnKafka,
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("frame of {len} bytes is too short for a header of {min} bytes")]
    TruncatedHeader { len: usize, min: usize },
    #[error("{what} of {len} bytes exceeds --max-buffered-frame-bytes ({max}); it must be held whole")]
    TooLargeToHold { what: &'static str, len: usize, max: usize },
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    TruncatedFrame { buffered: usize },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

labels! {
    /// What [`FrameError::kind`] names: a closed set, for metric labels.
    pub enum FrameErrorKind {
        TlsOnPlaintext => "tls_on_plaintext",
        HttpOnKafka => "http_on_kafka",
        FrameTooLarge => "frame_too_large",
        BufferedFrameTooLarge => "buffered_frame_too_large",
        NegativeLength => "negative_length",
        TruncatedHeader => "truncated_header",
        TruncatedFrame => "truncated_frame",
        Io => "io",
    }
}

impl FrameError {
    /// A short, closed-set label for metrics.
    pub fn kind(&self) -> FrameErrorKind {
        match self {
            FrameError::TlsOnPlaintext => FrameErrorKind::TlsOnPlaintext,
            FrameError::HttpOnKafka => FrameErrorKind::HttpOnKafka,
            FrameError::TooLarge { .. } => FrameErrorKind::FrameTooLarge,
            FrameError::TooLargeToHold { .. } => FrameErrorKind::BufferedFrameTooLarge,
            FrameError::NegativeLength(_) => FrameErrorKind::NegativeLength,
            FrameError::TruncatedHeader { .. } => FrameErrorKind::TruncatedHeader,
            FrameError::TruncatedFrame { .. } => FrameErrorKind::TruncatedFrame,
            FrameError::Io(_) => FrameErrorKind::Io,
        }
    }
}

/// Splits a byte stream into whole frames and writes frames back out unchanged.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
    min_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec for client requests: api key, version and correlation id must be present.
    pub fn requests(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes, min_frame_bytes: 8 }
    }

    /// A codec for broker responses: a correlation id must be present.
    pub fn responses(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes, min_frame_bytes: 4 }
    }

    /// The whole length (prefix included) of the frame `src` starts with, once its length prefix
    /// is there; refuses what is no Kafka frame or breaks the size limits.
    pub fn frame_len(&self, src: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = src.first_chunk::<LENGTH_PREFIX>() else {
            return Ok(None);
        };
        // A TLS record starts 0x16 0x03; read as a length it would claim ~369 MB.
        if prefix[0] == 0x16 && prefix[1] == 0x03 {
            return Err(FrameError::TlsOnPlaintext);
        }
        if matches!(prefix, b"GET " | b"POST" | b"HEAD" | b"PUT ") {
            return Err(FrameError::HttpOnKafka);
        }
        let len = i32::from_be_bytes(*prefix);
        if len < 0 {
            return Err(FrameError::NegativeLength(len));
        }
        let len = len as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge { len, max: self.max_frame_bytes });
        }
        if len < self.min_frame_bytes {
            return Err(FrameError::TruncatedHeader { len, min: self.min_frame_bytes });
        }
        Ok(Some(LENGTH_PREFIX + len))
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(total) = self.frame_len(src)? else {
            return Ok(None);
        };
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        Ok(Some(src.split_to(total).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::TruncatedFrame { buffered: src.len() }),
        }
    }
}

/// Whether `buf`, the unread bytes of a connection, starts with a whole frame, so that reading
/// the next frame will not wait for the peer. (An invalid length counts as not whole: reading
/// then fails at once, which does not wait either.)
pub fn holds_whole_frame(buf: &[u8]) -> bool {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else { return false };
    let len = i32::from_be_bytes(*prefix);
    usize::try_from(len).is_ok_and(|len| buf.len() - LENGTH_PREFIX >= len)
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&frame);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Result<Option<Bytes>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        codec.decode(&mut buf)
    }

    #[test]
    fn whole_frames_are_told_from_partial_ones() {
        let frame = [0, 0, 0, 4, 1, 2, 3, 4];
        assert!(holds_whole_frame(&frame));
        assert!(holds_whole_frame(&[&frame[..], &[0, 0]].concat()));
        assert!(!holds_whole_frame(&frame[..7]));
        assert!(!holds_whole_frame(&frame[..3]));
        assert!(!holds_whole_frame(&[]));
        assert!(!holds_whole_frame(&[0xff, 0xff, 0xff, 0xff]));
    }

    #[test]
    fn whole_frame_keeps_its_length_prefix() {
        let bytes = [0, 0, 0, 8, 0, 3, 0, 1, 0, 0, 0, 7];
        let frame = decode_all(&mut FrameCodec::requests(1024), &bytes).unwrap().unwrap();
        assert_eq!(&frame[..], &bytes[..]);
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let bytes = [0, 0, 0, 8, 0, 3, 0];
        assert!(decode_all(&mut FrameCodec::requests(1024), &bytes).unwrap().is_none());
    }

    #[test]
    fn tls_client_hello_is_named() {
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        let err = decode_all(&mut FrameCodec::requests(1024), &hello).unwrap_err();
        assert!(matches!(err, FrameError::TlsOnPlaintext));
        assert_eq!(err.to_string(), "TLS handshake received on plaintext listener");
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let err = decode_all(&mut FrameCodec::requests(1024), &[0, 0, 4, 1]).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: 1025, max: 1024 }));
    }

    #[test]
    fn request_shorter_than_its_header_is_refused() {
        let err = decode_all(&mut FrameCodec::requests(1024), &[0, 0, 0, 3, 1, 2, 3]).unwrap_err();
        assert!(matches!(err, FrameError::TruncatedHeader { len: 3, min: 8 }));
    }

    #[test]
    fn negative_length_is_refused() {
        let err = decode_all(&mut FrameCodec::requests(1024), &[0xff, 0xff, 0xff, 0xfe]).unwrap_err();
        assert!(matches!(err, FrameError::NegativeLength(-2)));
    }

    #[test]
    fn eof_mid_frame_is_an_error() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 9, 0, 3][..]);
        let err = FrameCodec::requests(1024).decode_eof(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TruncatedFrame { buffered: 6 }));
    }
}
