//! Building a new frame from an old one by replacing byte ranges, so that the parts the sidecar
//! does not change are copied as they came instead of being decoded and re-encoded.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Replacements of byte ranges of one frame, recorded in order.
#[derive(Debug, Default)]
pub struct Splices {
    edits: Vec<(Range<usize>, BytesMut)>,
}

impl Splices {
    /// Replaces `range` of the frame with `bytes`. Ranges must be recorded in ascending order and
    /// must not overlap.
    pub fn replace(&mut self, range: Range<usize>, bytes: BytesMut) {
        debug_assert!(self.edits.last().is_none_or(|(last, _)| last.end <= range.start), "splices out of order");
        self.edits.push((range, bytes));
    }

    /// Removes `range` from the frame.
    pub fn remove(&mut self, range: Range<usize>) {
        self.replace(range, BytesMut::new());
    }

    /// Appends another set of replacements that all come after this set's.
    pub fn extend(&mut self, other: Splices) {
        debug_assert!(match (self.edits.last(), other.edits.first()) {
            (Some((last, _)), Some((first, _))) => last.end <= first.start,
            _ => true,
        });
        self.edits.extend(other.edits);
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// The frame with every replacement applied and its length prefix recomputed.
    pub fn apply(&self, frame: &[u8]) -> Bytes {
        let added: usize = self.edits.iter().map(|(_, bytes)| bytes.len()).sum();
        let mut out = BytesMut::with_capacity(frame.len() + added);
        out.extend_from_slice(&[0; 4]);
        let mut copied = 4;
        for (range, bytes) in &self.edits {
            out.extend_from_slice(&frame[copied..range.start]);
            out.extend_from_slice(bytes);
            copied = range.end;
        }
        out.extend_from_slice(&frame[copied..]);
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_removes_and_fixes_the_length() {
        let frame = [0, 0, 0, 6, 1, 2, 3, 4, 5, 6];
        let mut splices = Splices::default();
        splices.replace(5..6, BytesMut::from(&[9, 9, 9][..]));
        splices.remove(7..9);
        assert_eq!(&splices.apply(&frame)[..], &[0, 0, 0, 6, 1, 9, 9, 9, 3, 6]);
    }
}
