//! ApiVersions responses: each API's version range is cut to what the sidecar can serve.
//!
//! For the APIs whose responses the sidecar rewrites, the range offered to the client is the
//! intersection of the broker's and the sidecar's; Produce, Fetch and DescribeQuorum are capped
//! below the versions whose responses would carry broker endpoints the sidecar does not rewrite.
//! An error reply (UNSUPPORTED_VERSION for a version the broker does not know) passes through
//! untouched: its layout varies by broker (Kafka uses v0's, librdkafka's mock its own) and the
//! client only reads it to pick the version to ask again with, whose answer is then clamped.

use bytes::BytesMut;

use super::{RewriteError, Walk, read};
use crate::wire::Writer;

const FIRST_FLEXIBLE: i16 = 3;

/// The highest version of `api_key` the sidecar can carry, where it has a limit.
pub fn clamp_limit(api_key: i16) -> Option<i16> {
    crate::policy::policy(api_key).max_version
}

pub(super) fn rewrite(w: &mut Walk<'_>) -> Result<(), RewriteError> {
    let error_code = read!(w, i16);
    if error_code != 0 {
        return Ok(());
    }
    let flexible = w.version >= FIRST_FLEXIBLE;
    let count_start = w.walker.reader.position();
    let count = read!(w, array_len, flexible);
    let count_end = w.walker.reader.position();
    let mut kept = count;
    let mut entry_splices = Vec::new();
    for _ in 0..count {
        let entry_start = w.walker.reader.position();
        let api_key = read!(w, i16);
        let min_version = read!(w, i16);
        let max_at = w.walker.reader.position();
        let max_version = read!(w, i16);
        if flexible {
            read!(w, skip_tagged_fields);
        }
        let Some(limit) = clamp_limit(api_key).filter(|limit| max_version > *limit) else {
            continue;
        };
        if min_version > limit {
            entry_splices.push((entry_start..w.walker.reader.position(), BytesMut::new()));
            kept -= 1;
        } else {
            let mut writer = Writer::with_capacity(2);
            writer.i16(limit);
            entry_splices.push((max_at..max_at + 2, writer.into_inner()));
        }
    }
    if kept != count {
        let mut writer = Writer::with_capacity(5);
        writer.array_len(kept, flexible);
        w.splice(count_start..count_end, writer.into_inner());
    }
    for (range, bytes) in entry_splices {
        w.splice(range, bytes);
    }
    if w.version >= 1 {
        read!(w, i32); // throttle_time_ms
    }
    if flexible {
        drop_default_tagged_fields(w)?;
    }
    Ok(())
}

/// Rewrites the top-level tagged fields without those that hold their default value, as Kafka
/// itself encodes them. Some brokers send every feature field even when empty, which older
/// librdkafka releases (2.0.x) fail to parse ("Read underflow").
fn drop_default_tagged_fields(w: &mut Walk<'_>) -> Result<(), RewriteError> {
    const EMPTY_COMPACT_ARRAY: &[u8] = &[0x01];
    const NO_EPOCH: &[u8] = &[0xff; 8];
    const FALSE: &[u8] = &[0x00];
    let start = w.walker.reader.position();
    let count = read!(w, unsigned_varint);
    let mut kept = Vec::new();
    for _ in 0..count {
        let field_start = w.walker.reader.position();
        let tag = read!(w, unsigned_varint);
        let size = read!(w, unsigned_varint) as usize;
        let value = read!(w, take, size);
        let is_default = match tag {
            0 | 2 => value == EMPTY_COMPACT_ARRAY, // supported / finalized features
            1 => value == NO_EPOCH,                // finalized features epoch
            3 => value == FALSE,                   // zk_migration_ready
            _ => false,
        };
        if !is_default {
            kept.push(field_start..w.walker.reader.position());
        }
    }
    if kept.len() as u32 == count {
        return Ok(());
    }
    let body = w.walker.body();
    let mut writer = Writer::with_capacity(w.walker.reader.position() - start);
    writer.unsigned_varint(kept.len() as u32);
    for field in kept {
        writer.bytes(&body[field]);
    }
    w.splice(start..w.walker.reader.position(), writer.into_inner());
    Ok(())
}
