//! Kafka framing for the ZooKeeper-mode fixture: reading and writing length-prefixed frames,
//! splitting a request into its header and body, building response frames, and the few
//! hand-coded primitives needed where kafka-protocol has no codec (old versions, Produce acks).
//!
//! A frame here is the bytes after the 4-byte big-endian length prefix: header, then body.

use anyhow::{Context, Result, bail, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Larger frames are refused: the fixture only serves tests.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Reads one frame; `None` on a clean end of stream before its length prefix.
pub async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("read frame length"),
    }
    let len = i32::from_be_bytes(len);
    ensure!(len >= 8 && len as usize <= MAX_FRAME, "bad frame length {len}");
    let mut frame = vec![0u8; len as usize];
    reader.read_exact(&mut frame).await.context("read frame body")?;
    Ok(Some(frame.into()))
}

/// Writes one frame with its length prefix.
pub async fn write_frame(writer: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> Result<()> {
    writer.write_all(&(frame.len() as i32).to_be_bytes()).await?;
    writer.write_all(frame).await?;
    Ok(())
}

/// The fixed start of every request header.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
}

impl RequestHead {
    pub fn parse(frame: &[u8]) -> Result<RequestHead> {
        let mut reader = Reader::new(frame);
        Ok(RequestHead { api_key: reader.i16()?, version: reader.i16()?, correlation_id: reader.i32()? })
    }

    /// The API, or `None` for an API key kafka-protocol does not know.
    pub fn key(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }
}

/// Skips the request header (whose layout depends on the API and version); returns the body.
pub fn request_body(api_key: ApiKey, version: i16, frame: &Bytes) -> Result<Bytes> {
    let mut buf = frame.clone();
    RequestHeader::decode(&mut buf, api_key.request_header_version(version)).context("request header")?;
    Ok(buf)
}

/// Decodes a request body with kafka-protocol, refusing trailing bytes.
pub fn decode_request<R: Decodable>(api_key: ApiKey, version: i16, frame: &Bytes) -> Result<R> {
    let mut body = request_body(api_key, version, frame)?;
    let request = R::decode(&mut body, version).with_context(|| format!("decode {api_key:?} v{version} request"))?;
    ensure!(body.is_empty(), "{api_key:?} v{version} request: {} trailing bytes", body.len());
    Ok(request)
}

/// A response frame: the response header for `api_key`/`version`, then what `body` writes.
pub fn response_frame(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: impl FnOnce(&mut BytesMut) -> Result<()>,
) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, api_key.response_header_version(version))?;
    body(&mut buf).with_context(|| format!("encode {api_key:?} v{version} response"))?;
    Ok(buf.freeze())
}

/// A response frame whose body kafka-protocol encodes.
pub fn encode_response(api_key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Result<Bytes> {
    response_frame(api_key, version, correlation_id, |buf| body.encode(buf, version))
}

/// The correlation id of a response frame.
pub fn response_correlation_id(frame: &[u8]) -> Result<i32> {
    Reader::new(frame).i32()
}

/// Whether a Produce request expects a response: not with acks=0.
pub fn produce_expects_response(version: i16, body: &[u8]) -> Result<bool> {
    let mut reader = Reader::new(body);
    match version {
        ..=2 => {}
        3..=8 => {
            reader.nullable_string()?; // transactional_id
        }
        _ => {
            reader.compact_nullable_string()?; // transactional_id
        }
    }
    Ok(reader.i16()? != 0)
}

// ------------------------------------------------------------------------------------------------
// Hand-coded primitives (non-flexible and compact encodings).

/// A bounds-checked cursor over a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        ensure!(len <= self.buf.len() - self.pos, "truncated: {len} bytes wanted at offset {}", self.pos);
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.array::<1>()?[0] != 0)
    }

    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn unsigned_varint(&mut self) -> Result<u32> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.array::<1>()?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("unsigned varint longer than 5 bytes")
    }

    /// An INT32-counted array; a null (-1) array is refused.
    pub fn array_len(&mut self) -> Result<usize> {
        let len = self.i32()?;
        ensure!(len >= 0, "null or negative array length {len}");
        ensure!(len as usize <= self.buf.len() - self.pos, "array length {len} exceeds the frame");
        Ok(len as usize)
    }

    pub fn string(&mut self) -> Result<String> {
        self.nullable_string()?.context("null string where a string is required")
    }

    pub fn nullable_string(&mut self) -> Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.utf8(len as usize).map(Some)
    }

    pub fn compact_nullable_string(&mut self) -> Result<Option<String>> {
        match self.unsigned_varint()? {
            0 => Ok(None),
            len => self.utf8(len as usize - 1).map(Some),
        }
    }

    fn utf8(&mut self, len: usize) -> Result<String> {
        Ok(std::str::from_utf8(self.take(len)?).context("string is not UTF-8")?.to_owned())
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self) -> Result<()> {
        ensure!(self.pos == self.buf.len(), "{} trailing bytes", self.buf.len() - self.pos);
        Ok(())
    }
}

/// Writes an INT16-length string.
pub fn put_string(buf: &mut BytesMut, value: &str) {
    buf.put_i16(value.len() as i16);
    buf.put_slice(value.as_bytes());
}

/// Writes an INT16-length nullable string.
pub fn put_nullable_string(buf: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(buf, value),
        None => buf.put_i16(-1),
    }
}
