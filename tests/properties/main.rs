//! Property tests of the pure, byte-level parts of the sidecar.
//!
//! - Rewrite round trips: Metadata (v0–v13), FindCoordinator (v0–v6) and DescribeCluster (v0–v2)
//!   responses built from arbitrary clusters are encoded with kafka-protocol, rewritten and decoded
//!   again: every field is the original's except each broker's host and port, which are the
//!   sidecar's, and the learned endpoints are the originals.
//! - The ApiVersions clamp: each range is cut to `rewrite::clamp_limit`, emptied ranges are gone,
//!   everything else is unchanged.
//! - Framing: a byte stream decodes to the same frames and the same error however it is split.
//! - Top-level error codes are read where each api keeps them.
//!
//! Each property runs proptest's default 256 cases. Regression tests for bugs found by fuzzing or
//! by these properties are at the end.
//!
//! Layout: `round_trips` (rewrites), `clamp` (ApiVersions), `framing`, `error_codes`; helpers
//! here.

mod clamp;
mod error_codes;
mod framing;
mod round_trips;

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{AlterPartitionReassignmentsResponse, ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_sidecar::config::{Config, Settings, parse_duration};
use kafka_sidecar::rewrite::{self, Advertised, Rewritten};
use kafka_sidecar::wire::{encode_response, response_error_code};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

const CORRELATION_ID: i32 = 0x5eed;

// ------------------------------------------------------------------ helpers --

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn frame(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
    encode_response(api_key, version, CORRELATION_ID, body)
        .unwrap_or_else(|e| panic!("kafka-protocol cannot encode the generated {api_key:?} v{version}: {e}"))
}

fn decode<T: Decodable>(api_key: ApiKey, version: i16, frame: &Bytes) -> T {
    let mut buf = frame.slice(4..);
    let header = ResponseHeader::decode(&mut buf, api_key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, CORRELATION_ID);
    let body = T::decode(&mut buf, version).unwrap_or_else(|e| panic!("cannot decode {api_key:?} v{version}: {e}"));
    assert!(buf.is_empty(), "trailing bytes after {api_key:?} v{version}");
    body
}

/// Encodes `original`, checks that kafka-protocol itself round-trips it (so the generated value
/// only uses fields of `version`), rewrites it and returns the rewrite and the decoded result.
fn round_trip<T>(api_key: ApiKey, version: i16, original: &T, advertised: &Advertised) -> (Rewritten, T)
where
    T: Encodable + Decodable + PartialEq + std::fmt::Debug,
{
    let bytes = frame(api_key, version, original);
    assert_eq!(&decode::<T>(api_key, version, &bytes), original, "generator made a value {api_key:?} v{version} lacks");
    let rewritten = rewrite::response(api_key as i16, version, &bytes, advertised)
        .unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"))
        .expect("the api is rewritten");
    let len = i32::from_be_bytes(rewritten.frame[..4].try_into().unwrap());
    assert_eq!(len as usize, rewritten.frame.len() - 4, "length prefix of the rewritten frame");
    let decoded = decode(api_key, version, &rewritten.frame);
    (rewritten, decoded)
}

fn sidecar_port(advertised: &Advertised, node_id: i32) -> i32 {
    i32::from(advertised.port_base) + node_id
}

/// A topic id: kafka-protocol does not re-export its Uuid type, so a topic carrying `id` is
/// decoded from a minimal Metadata v10 topic.
fn topic_with_id(id: [u8; 16]) -> MetadataResponseTopic {
    let mut bytes = vec![0, 0, 1]; // error_code, empty compact name
    bytes.extend_from_slice(&id);
    bytes.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0]); // is_internal, no partitions, operations, tags
    MetadataResponseTopic::decode(&mut Bytes::from(bytes), 10).unwrap()
}

// ------------------------------------------------------- shared strategies --

/// Any text without control characters, multi-byte characters included.
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{0,{max_chars}}}")).unwrap()
}

fn advertised() -> impl Strategy<Value = Advertised> {
    // Node ids go up to 999, so every port_base + node_id is a port.
    (text(30).prop_filter("advertised host is never empty", |h| !h.is_empty()), 0..=(u16::MAX - 999))
        .prop_map(|(host, port_base)| Advertised { host, port_base })
}

fn tagged_fields(first_tag: i32) -> impl Strategy<Value = BTreeMap<i32, Bytes>> {
    btree_map(first_tag..first_tag + 40, vec(any::<u8>(), 0..6).prop_map(Bytes::from), 0..3)
}

/// `value` where `version` has the field, else the field's default.
fn since<T>(version: i16, first: i16, value: T, default: T) -> T {
    if version >= first { value } else { default }
}

fn tags_if(flexible: bool, tags: &BTreeMap<i32, Bytes>) -> BTreeMap<i32, Bytes> {
    if flexible { tags.clone() } else { BTreeMap::new() }
}

// ----------------------------------------------------------- regression tests --

/// AlterPartitionReassignments v1 responses (KIP-860) carry `allow_replication_factor_change`
/// between `throttle_time_ms` and `error_code`: the error code, and so a v1 NOT_CONTROLLER
/// answer, is found after it.
#[test]
fn alter_partition_reassignments_v1_error_code_is_found() {
    let body = AlterPartitionReassignmentsResponse::default().with_error_code(41);
    let bytes = encode_response(ApiKey::AlterPartitionReassignments, 1, CORRELATION_ID, &body).unwrap();
    assert_eq!(response_error_code(ApiKey::AlterPartitionReassignments as i16, 1, &bytes), Some(41));
}

/// Found by the `config` fuzz target: a duration too large for milliseconds in a u64 is refused,
/// not multiplied into an overflow (a panic with overflow checks, a wrong value without).
#[test]
fn huge_durations_are_refused_not_wrapped() {
    for text in ["18446744073709552s", "307445734561826m", "5124095576031h", "18446744073709551615s"] {
        assert!(parse_duration(text).is_err(), "{text} must be refused, not wrapped");
    }
    let settings: Settings =
        toml::from_str("bootstrap-servers = [\"b-1:9092\"]\nconnect-timeout = \"18446744073709552s\"\n").unwrap();
    let error = Config::from_settings(settings).expect_err("an overflowing duration is invalid");
    assert_eq!(error.problems[0].0, "connect-timeout");
}
