//! The one bounds-checked walk over a frame's body, shared by the response rewriter and the
//! NOT_CONTROLLER layouts.
//!
//! A [`Walker`] reads a body with a [`Reader`] and knows where that body sits in the whole frame,
//! so positions can be told both ways: relative to the body (what the reader counts) and as frame
//! offsets (what splices and entry ranges use). It skips the shapes both users pass over (strings,
//! arrays, tagged fields). Pure: it never allocates from a wire length and never awaits.

use super::cursor::{DecodeError, Reader};

pub struct Walker<'a> {
    pub reader: Reader<'a>,
    frame: &'a [u8],
    body: usize,
}

impl<'a> Walker<'a> {
    /// A walk over `frame`'s body, which starts at `body`.
    pub fn new(frame: &'a [u8], body: usize) -> Self {
        Walker { reader: Reader::new(&frame[body..]), frame, body }
    }

    /// The whole frame.
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }

    /// The body: what the reader walks.
    pub fn body(&self) -> &'a [u8] {
        &self.frame[self.body..]
    }

    /// The frame offset of a body position.
    pub fn frame_offset(&self, body_position: usize) -> usize {
        self.body + body_position
    }

    /// The reader's position as a frame offset.
    pub fn at(&self) -> usize {
        self.frame_offset(self.reader.position())
    }

    /// Reads past a (nullable) string.
    pub fn skip_string(&mut self, flexible: bool) -> Result<(), DecodeError> {
        self.reader.nullable_string(flexible).map(|_| ())
    }

    /// Reads past an array of i32.
    pub fn skip_i32_array(&mut self, flexible: bool) -> Result<(), DecodeError> {
        let len = self.reader.nullable_array_len(flexible)?.unwrap_or(0);
        self.reader.skip(len.checked_mul(4).ok_or(DecodeError::Invalid("array too long"))?)
    }

    /// Reads past an array whose elements `element` reads, skipping each element's tagged fields
    /// after it.
    pub fn skip_array(
        &mut self,
        flexible: bool,
        mut element: impl FnMut(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let len = self.reader.nullable_array_len(flexible)?.unwrap_or(0);
        for _ in 0..len {
            element(self)?;
            self.tags(flexible)?;
        }
        Ok(())
    }

    /// Reads past the tagged fields of a flexible version; nothing otherwise.
    pub fn tags(&mut self, flexible: bool) -> Result<(), DecodeError> {
        if flexible { self.reader.skip_tagged_fields() } else { Ok(()) }
    }
}
