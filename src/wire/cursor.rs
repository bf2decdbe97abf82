//! A bounds-checked reader and a small writer for Kafka's primitive types.
//!
//! Every length read from the wire is checked against the bytes that remain before it is used, so a
//! hostile length can neither allocate nor read out of bounds. Positions are kept so that callers
//! can splice rewritten fields into the original frame instead of re-encoding it.

use bytes::{BufMut, BytesMut};

/// Why a message body could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated at byte {at}: {need} more bytes needed")]
    Truncated { at: usize, need: usize },
    #[error("invalid length {len} at byte {at}")]
    InvalidLength { at: usize, len: i64 },
    #[error("unexpected null at byte {at}")]
    UnexpectedNull { at: usize },
    #[error("varint too long at byte {at}")]
    VarintTooLong { at: usize },
    #[error("{0}")]
    Invalid(&'static str),
}

/// Reads primitives from a byte slice, tracking its position.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Where the next read starts, counted from the start of the slice.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { at: self.pos, need: n - self.remaining() });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(|_| ())
    }

    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(self.take(1)?[0] as i8)
    }

    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// A length-prefixed byte run (`BYTES`: int32 length, compact in flexible versions); `None`
    /// for null.
    pub fn nullable_bytes(&mut self, flexible: bool) -> Result<Option<&'a [u8]>, DecodeError> {
        self.length_prefixed(flexible, Self::i32)
    }

    /// A null (-1) or a run of bytes whose length comes first: a compact varint (length + 1) in
    /// flexible versions, else read by `length`.
    fn length_prefixed<T: Into<i64>>(
        &mut self,
        flexible: bool,
        length: fn(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<&'a [u8]>, DecodeError> {
        let at = self.pos;
        let len: i64 = if flexible { i64::from(self.unsigned_varint()?) - 1 } else { length(self)?.into() };
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::InvalidLength { at, len: n }),
            n => self.take(usize::try_from(n).map_err(|_| DecodeError::InvalidLength { at, len: n })?).map(Some),
        }
    }

    pub fn unsigned_varint(&mut self) -> Result<u32, DecodeError> {
        let start = self.pos;
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintTooLong { at: start })
    }

    /// A length-prefixed string or byte run: `None` for null. Flexible versions use compact
    /// (varint, length + 1) prefixes; older ones an int16.
    pub fn nullable_string(&mut self, flexible: bool) -> Result<Option<&'a [u8]>, DecodeError> {
        self.length_prefixed(flexible, Self::i16)
    }

    pub fn string(&mut self, flexible: bool) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        self.nullable_string(flexible)?.ok_or(DecodeError::UnexpectedNull { at })
    }

    /// An array's element count: `None` for a null array. The count is checked against the bytes
    /// left, since every element takes at least one byte.
    pub fn nullable_array_len(&mut self, flexible: bool) -> Result<Option<usize>, DecodeError> {
        let at = self.pos;
        let len: i64 = if flexible { i64::from(self.unsigned_varint()?) - 1 } else { i64::from(self.i32()?) };
        match len {
            -1 => Ok(None),
            n if n < 0 || n as usize > self.remaining() => Err(DecodeError::InvalidLength { at, len: n }),
            n => Ok(Some(n as usize)),
        }
    }

    pub fn array_len(&mut self, flexible: bool) -> Result<usize, DecodeError> {
        let at = self.pos;
        self.nullable_array_len(flexible)?.ok_or(DecodeError::UnexpectedNull { at })
    }

    /// Skips a tagged-field section (flexible versions only).
    pub fn skip_tagged_fields(&mut self) -> Result<(), DecodeError> {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            self.unsigned_varint()?;
            let size = self.unsigned_varint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }
}

/// Writes primitives into a growable buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: BytesMut::with_capacity(capacity) }
    }

    pub fn i16(&mut self, value: i16) -> &mut Self {
        self.buf.put_i16(value);
        self
    }

    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.buf.put_i32(value);
        self
    }

    pub fn unsigned_varint(&mut self, mut value: u32) -> &mut Self {
        while value >= 0x80 {
            self.buf.put_u8((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.put_u8(value as u8);
        self
    }

    pub fn string(&mut self, value: &[u8], flexible: bool) -> &mut Self {
        if flexible {
            self.unsigned_varint(value.len() as u32 + 1);
        } else {
            self.i16(value.len() as i16);
        }
        self.buf.put_slice(value);
        self
    }

    pub fn array_len(&mut self, len: usize, flexible: bool) -> &mut Self {
        if flexible { self.unsigned_varint(len as u32 + 1) } else { self.i32(len as i32) }
    }

    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.buf.put_slice(value);
        self
    }

    pub fn into_inner(self) -> BytesMut {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for value in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut w = Writer::default();
            w.unsigned_varint(value);
            let bytes = w.into_inner();
            assert_eq!(Reader::new(&bytes).unsigned_varint().unwrap(), value);
        }
    }

    #[test]
    fn hostile_array_length_is_refused_without_allocating() {
        let bytes = [0x7f, 0xff, 0xff, 0xff, 0, 0];
        let err = Reader::new(&bytes).array_len(false).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidLength { at: 0, .. }));
    }

    #[test]
    fn string_longer_than_buffer_is_truncated() {
        let bytes = [0, 10, b'a'];
        assert!(matches!(Reader::new(&bytes).string(false), Err(DecodeError::Truncated { at: 2, need: 9 })));
    }

    #[test]
    fn compact_null_string() {
        assert_eq!(Reader::new(&[0]).nullable_string(true).unwrap(), None);
        assert_eq!(Reader::new(&[0xff, 0xff]).nullable_string(false).unwrap(), None);
    }

    #[test]
    fn overlong_varint_is_refused() {
        let bytes = [0xff; 6];
        assert!(matches!(Reader::new(&bytes).unsigned_varint(), Err(DecodeError::VarintTooLong { at: 0 })));
    }
}
