//! Peeks at request and response headers without decoding bodies.
//!
//! The request peek yields what routing, telemetry and the acks=0 rule need: api key, version,
//! correlation id, client id and where the body starts. Response headers only carry the
//! correlation id (and tagged fields in flexible versions).

use std::ops::Range;
use std::sync::OnceLock;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;

use super::cursor::{DecodeError, Reader};

const LENGTH_PREFIX: usize = 4;

/// The request header fields the sidecar looks at, with offsets into the whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// Where the client id sits in the frame (empty when absent or null).
    pub client_id: Range<usize>,
    /// Where the body starts in the frame; `None` for api keys the sidecar does not know, whose
    /// header layout it cannot tell.
    pub body_offset: Option<usize>,
}

impl RequestHeader {
    pub fn client_id<'a>(&self, frame: &'a [u8]) -> &'a str {
        std::str::from_utf8(&frame[self.client_id.clone()]).unwrap_or("<invalid utf-8>")
    }

    /// Whether this request is answered at all: Produce with acks=0 is not.
    pub fn expects_response(&self, frame: &[u8]) -> Result<bool, DecodeError> {
        if self.api_key != ApiKey::Produce as i16 {
            return Ok(true);
        }
        let body = self.body_offset.ok_or(DecodeError::Invalid("produce header"))?;
        let mut reader = Reader::new(&frame[body..]);
        if self.api_version >= 3 {
            reader.nullable_string(self.api_version >= 9)?; // transactional_id
        }
        Ok(reader.i16()? != 0)
    }
}

/// Reads the request header of a whole frame (length prefix included).
pub fn peek_request_header(frame: &[u8]) -> Result<RequestHeader, DecodeError> {
    let mut reader = Reader::new(frame);
    reader.skip(LENGTH_PREFIX)?;
    let api_key = reader.i16()?;
    let api_version = reader.i16()?;
    let correlation_id = reader.i32()?;
    let header_version = ApiKey::try_from(api_key).ok().map(|key| key.request_header_version(api_version));
    let mut client_id = 0..0;
    if header_version.is_some_and(|v| v >= 1) {
        let start = reader.position();
        if let Some(id) = reader.nullable_string(false)? {
            client_id = (start + 2)..(start + 2 + id.len());
        }
        if header_version == Some(2) {
            reader.skip_tagged_fields()?;
        }
    }
    let body_offset = header_version.map(|_| reader.position());
    Ok(RequestHeader { api_key, api_version, correlation_id, client_id, body_offset })
}

/// The correlation id of a whole response frame.
pub fn response_correlation_id(frame: &[u8]) -> Result<i32, DecodeError> {
    let mut reader = Reader::new(frame);
    reader.skip(LENGTH_PREFIX)?;
    reader.i32()
}

/// Where the correlation id sits in a whole request frame (after api key and version).
const REQUEST_CORRELATION_ID: usize = LENGTH_PREFIX + 4;
/// Where it sits in a whole response frame.
const RESPONSE_CORRELATION_ID: usize = LENGTH_PREFIX;

/// A copy of a whole request frame under another correlation id.
pub fn with_request_correlation_id(frame: &[u8], correlation_id: i32) -> Result<BytesMut, DecodeError> {
    with_correlation_id(frame, REQUEST_CORRELATION_ID, correlation_id)
}

/// A copy of a whole response frame under another correlation id.
pub fn with_response_correlation_id(frame: &[u8], correlation_id: i32) -> Result<BytesMut, DecodeError> {
    with_correlation_id(frame, RESPONSE_CORRELATION_ID, correlation_id)
}

fn with_correlation_id(frame: &[u8], at: usize, correlation_id: i32) -> Result<BytesMut, DecodeError> {
    let mut copy = BytesMut::from(frame);
    let field = copy.get_mut(at..at + 4).ok_or(DecodeError::Invalid("frame shorter than its header"))?;
    field.copy_from_slice(&correlation_id.to_be_bytes());
    Ok(copy)
}

/// Where the body of a response to `api_key` at `api_version` starts in the whole frame.
pub fn response_body_offset(frame: &[u8], api_key: ApiKey, api_version: i16) -> Result<usize, DecodeError> {
    let mut reader = Reader::new(frame);
    reader.skip(LENGTH_PREFIX + 4)?;
    if api_key.response_header_version(api_version) >= 1 {
        reader.skip_tagged_fields()?;
    }
    Ok(reader.position())
}

/// The top-level error code of a response, for the APIs that carry one at a fixed place (after
/// `throttle_time_ms` where the version has it); `None` for the others.
pub fn response_error_code(api_key: i16, api_version: i16, frame: &[u8]) -> Option<i16> {
    let key = ApiKey::try_from(api_key).ok()?;
    let body = response_body_offset(frame, key, api_version).ok()?;
    let mut reader = Reader::new(&frame[body..]);
    reader.skip(top_level_error_offset(key, api_version)?).ok()?;
    reader.i16().ok()
}

/// Where the top-level error code sits in a response body, for the APIs that keep one there.
pub fn top_level_error_offset(key: ApiKey, api_version: i16) -> Option<usize> {
    const THROTTLE: usize = 4;
    if key == ApiKey::AlterPartitionReassignments && api_version >= 1 {
        return Some(THROTTLE + 1); // allow_replication_factor_change (KIP-860) comes first
    }
    let throttle_first_from = match key {
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => i16::MAX,
        ApiKey::FindCoordinator if api_version >= 4 => return None,
        ApiKey::FindCoordinator | ApiKey::Heartbeat | ApiKey::LeaveGroup | ApiKey::SyncGroup | ApiKey::ListGroups => 1,
        ApiKey::ElectLeaders if api_version == 0 => return None,
        ApiKey::JoinGroup => 2,
        ApiKey::InitProducerId
        | ApiKey::EndTxn
        | ApiKey::DescribeCluster
        | ApiKey::ElectLeaders
        | ApiKey::AlterPartitionReassignments
        | ApiKey::ListPartitionReassignments
        | ApiKey::UpdateFeatures => 0,
        _ => return None,
    };
    Some(if api_version >= throttle_first_from { THROTTLE } else { 0 })
}

/// The protocol name of an error code ("NotController", "TopicAlreadyExists", …), or "Unknown".
pub fn error_name(code: i16) -> &'static str {
    const LOWEST: i16 = -1;
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (LOWEST..=200)
            .map(|code| match ResponseError::try_from_code(code) {
                None => "None".to_owned(),
                Some(ResponseError::Unknown(_)) => "Unknown".to_owned(),
                Some(error) => format!("{error:?}"),
            })
            .collect()
    });
    usize::try_from(i32::from(code) - i32::from(LOWEST))
        .ok()
        .and_then(|i| names.get(i))
        .map_or("Unknown", String::as_str)
}

/// The protocol name of an api key ("Produce", "Metadata", …), or "Unknown".
pub fn api_name(api_key: i16) -> &'static str {
    static NAMES: OnceLock<Vec<(i16, String)>> = OnceLock::new();
    let names = NAMES.get_or_init(|| ApiKey::iter().map(|key| (key as i16, format!("{key:?}"))).collect());
    names.binary_search_by_key(&api_key, |(key, _)| *key).map(|i| names[i].1.as_str()).unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn frame(body: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut buf = BytesMut::new();
        body(&mut buf);
        let mut out = (buf.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out
    }

    fn produce(version: i16, transactional_id: Option<&str>, acks: i16) -> Vec<u8> {
        frame(|b| {
            b.put_i16(0);
            b.put_i16(version);
            b.put_i32(42);
            b.put_i16(3);
            b.put_slice(b"app");
            if version >= 9 {
                b.put_u8(0); // header tagged fields
            }
            if version >= 3 {
                match (transactional_id, version >= 9) {
                    (None, true) => b.put_u8(0),
                    (None, false) => b.put_i16(-1),
                    (Some(id), true) => {
                        b.put_u8(id.len() as u8 + 1);
                        b.put_slice(id.as_bytes());
                    }
                    (Some(id), false) => {
                        b.put_i16(id.len() as i16);
                        b.put_slice(id.as_bytes());
                    }
                }
            }
            b.put_i16(acks);
            b.put_i32(30_000);
        })
    }

    #[test]
    fn peeks_produce_header_and_acks_across_versions() {
        for version in [0, 2, 3, 8, 9, 11] {
            for (txn, acks, expects) in [(None, 0, false), (Some("tx-1"), 1, true), (None, -1, true)] {
                let bytes = produce(version, txn, acks);
                let header = peek_request_header(&bytes).unwrap();
                assert_eq!(header.correlation_id, 42);
                assert_eq!(header.client_id(&bytes), "app");
                assert_eq!(header.expects_response(&bytes).unwrap(), expects, "v{version} acks {acks}");
            }
        }
    }

    #[test]
    fn unknown_api_key_still_yields_correlation_id() {
        let bytes = frame(|b| {
            b.put_i16(9999);
            b.put_i16(0);
            b.put_i32(7);
        });
        let header = peek_request_header(&bytes).unwrap();
        assert_eq!((header.correlation_id, header.body_offset), (7, None));
        assert_eq!(api_name(9999), "Unknown");
    }

    #[test]
    fn truncated_client_id_is_an_error() {
        let bytes = frame(|b| {
            b.put_i16(3);
            b.put_i16(1);
            b.put_i32(7);
            b.put_i16(50);
            b.put_slice(b"abc");
        });
        assert!(peek_request_header(&bytes).is_err());
    }

    #[test]
    fn error_names_come_from_the_protocol() {
        assert_eq!(error_name(41), "NotController");
        assert_eq!(error_name(36), "TopicAlreadyExists");
        assert_eq!(error_name(-1), "UnknownServerError");
        assert_eq!(error_name(9999), "Unknown");
        assert_eq!(error_name(i16::MAX), "Unknown");
        assert_eq!(error_name(i16::MIN), "Unknown");
    }

    #[test]
    fn top_level_error_codes_are_found_where_each_api_keeps_them() {
        // Heartbeat v1: correlation id, throttle_time_ms, error_code.
        let heartbeat = frame(|b| {
            b.put_i32(1);
            b.put_i32(0);
            b.put_i16(27);
        });
        assert_eq!(response_error_code(12, 1, &heartbeat), Some(27));
        // ApiVersions: error_code first, whatever the version.
        let api_versions = frame(|b| {
            b.put_i32(1);
            b.put_i16(35);
        });
        assert_eq!(response_error_code(18, 3, &api_versions), Some(35));
        assert_eq!(response_error_code(0, 9, &api_versions), None, "Produce has no top-level error");
    }

    #[test]
    fn api_names_come_from_the_protocol() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(3), "Metadata");
        assert_eq!(api_name(18), "ApiVersions");
    }
}
