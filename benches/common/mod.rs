//! Kafka frames for the benchmarks, built with kafka-protocol so that they are what real clients
//! and brokers send: requests with their header, responses with theirs, each as one whole frame
//! (length prefix included), as `FrameCodec` yields it.
//!
//! Shared by `benches/wire.rs`, `benches/allocations.rs` and the end-to-end tools in
//! `benches/e2e/`; each uses a part of it.

#![allow(dead_code)]

pub mod sink;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, FindCoordinatorResponse, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, Record, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};

/// The client id every benchmark request carries (the length librdkafka's default `rdkafka` has,
/// give or take).
pub const CLIENT_ID: &str = "bench-client";

/// Encodes `header` and `body` as one frame, length prefix included.
pub fn request_frame<B: Encodable>(api_key: ApiKey, version: i16, correlation_id: i32, body: &B) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, api_key.request_header_version(version)).expect("encode request header");
    body.encode(&mut buf, version).expect("encode request body");
    finish(buf)
}

/// Encodes a response with its header as one frame, length prefix included.
pub fn response_frame<B: Encodable>(api_key: ApiKey, version: i16, correlation_id: i32, body: &B) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))
        .expect("encode response header");
    body.encode(&mut buf, version).expect("encode response body");
    finish(buf)
}

fn finish(mut buf: BytesMut) -> Bytes {
    let len = i32::try_from(buf.len() - 4).expect("frame fits an i32");
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// One uncompressed record batch (magic 2) of `count` records, each with a `value_size`-byte
/// value and no key, starting at `base_offset`, CRC included.
pub fn record_batch(count: usize, value_size: usize, base_offset: i64) -> Bytes {
    batch_of_values(&vec![value_size; count], base_offset)
}

/// One uncompressed record batch (magic 2) with a record for each of `value_sizes`, a value of
/// that many bytes and no key, starting at `base_offset`, CRC included.
fn batch_of_values(value_sizes: &[usize], base_offset: i64) -> Bytes {
    let value = Bytes::from(vec![b'x'; value_sizes.iter().copied().max().unwrap_or(0)]);
    let records: Vec<Record> = value_sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: base_offset + i as i64,
            // The encoder starts a new batch wherever `offset - sequence` changes; counting up
            // from -1 keeps one batch whose base sequence is -1 (no idempotence).
            sequence: NO_SEQUENCE.wrapping_add(i as i32),
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(value.slice(..size)),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode record batch");
    buf.freeze()
}

/// A Produce request for one partition carrying `records` (one or more record batches).
pub fn produce_request(version: i16, correlation_id: i32, acks: i16, topic: &str, records: Bytes) -> Bytes {
    let body = ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))]),
    ]);
    request_frame(ApiKey::Produce, version, correlation_id, &body)
}

/// A Produce request with one batch of `count` records of `value_size` bytes, acks=1.
pub fn produce_frame(version: i16, count: usize, value_size: usize) -> Bytes {
    produce_request(version, 1, 1, "bench", record_batch(count, value_size, 0))
}

/// A Produce request whose whole frame is about `frame_bytes` long (one batch of 1 KiB records).
pub fn produce_frame_of(version: i16, frame_bytes: usize) -> Bytes {
    let count = (frame_bytes / 1024).max(1);
    let overhead = produce_frame(version, count, 0).len();
    let per_record = (frame_bytes.saturating_sub(overhead) / count).max(1);
    // Record overhead (length, attributes, deltas, key and value lengths) is a few bytes each.
    produce_frame(version, count, per_record.saturating_sub(8).max(1))
}

/// The frame `frame(records)` sized to exactly `frame_bytes` bytes, length prefix excluded (as
/// `--max-frame-bytes` counts), `records` being one batch of records of about 1 KiB whose value
/// sizes are adjusted until it fits. None when no such batch fits (`frame_bytes` below about
/// 1 KiB, or too close above `frame`'s own overhead).
pub fn frame_of_exactly(frame_bytes: usize, frame: impl Fn(Bytes) -> Bytes) -> Option<Bytes> {
    let target = (frame_bytes + 4) as isize;
    let count = (frame_bytes / 1024).max(1);
    let mut sizes = vec![(frame_bytes / count).saturating_sub(16).max(64); count];
    // Each value byte is a frame byte, but for the varints that grow with the sizes (record and
    // records lengths): a few rounds of spreading the difference over the values settle it.
    for _ in 0..8 {
        let built = frame(batch_of_values(&sizes, 0));
        let diff = target - built.len() as isize;
        if diff == 0 {
            return Some(built);
        }
        let (each, rest) = (diff / count as isize, diff % count as isize);
        for (i, size) in sizes.iter_mut().enumerate() {
            let add = each + if i + 1 == count { rest } else { 0 };
            *size = usize::try_from(*size as isize + add).ok()?;
        }
    }
    None
}

/// A Produce request (acks=1) for partition 0 of `topic` whose frame is exactly `frame_bytes`
/// long, length prefix excluded (see [`frame_of_exactly`]).
pub fn produce_frame_exactly(version: i16, correlation_id: i32, topic: &str, frame_bytes: usize) -> Option<Bytes> {
    frame_of_exactly(frame_bytes, |records| produce_request(version, correlation_id, 1, topic, records))
}

/// A consumer's Fetch request for partition 0 of `topic` from `offset`.
pub fn fetch_request(version: i16, correlation_id: i32, topic: &str, offset: i64) -> Bytes {
    let body = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 * 1024 * 1024)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_owned()))).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1024 * 1024),
            ]),
        ]);
    request_frame(ApiKey::Fetch, version, correlation_id, &body)
}

/// A Produce response for partition 0 of `topic`.
pub fn produce_response(version: i16, correlation_id: i32, topic: &str, base_offset: i64) -> Bytes {
    let body = ProduceResponse::default().with_responses(vec![
        TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_responses(vec![
                PartitionProduceResponse::default()
                    .with_index(0)
                    .with_base_offset(base_offset)
                    .with_log_append_time_ms(-1),
            ]),
    ]);
    response_frame(ApiKey::Produce, version, correlation_id, &body)
}

/// A Fetch response for partition 0 of `topic` carrying `records`.
pub fn fetch_response(version: i16, correlation_id: i32, topic: &str, records: Bytes, high_watermark: i64) -> Bytes {
    let body = FetchResponse::default().with_responses(vec![
        FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![
                PartitionData::default()
                    .with_partition_index(0)
                    .with_high_watermark(high_watermark)
                    .with_last_stable_offset(high_watermark)
                    .with_log_start_offset(0)
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_records(Some(records)),
            ]),
    ]);
    response_frame(ApiKey::Fetch, version, correlation_id, &body)
}

/// The body of a Metadata response from `brokers` brokers for `partitions` partitions (topics of
/// 50 partitions, three replicas each), with MSK-length broker host names.
pub fn metadata_response_body(brokers: i32, partitions: i32) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(
            (1..=brokers)
                .map(|id| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(format!("b-{id}.cluster.kafka.eu-west-1.amazonaws.com")))
                        .with_port(9092)
                        .with_rack(Some(StrBytes::from_string(format!("euw1-az{}", id % 3 + 1))))
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_static_str("k5mX1f4tQxS9tWq0d3m3Gw")))
        .with_controller_id(BrokerId(1))
        .with_topics(
            (0..(partitions + 49) / 50)
                .map(|t| {
                    let count = (partitions - t * 50).min(50);
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(format!("orders.events.v1-{t}")))))
                        .with_partitions(
                            (0..count)
                                .map(|p| {
                                    let leader = p % brokers + 1;
                                    let replicas: Vec<BrokerId> =
                                        (0..3).map(|r| BrokerId((leader - 1 + r) % brokers + 1)).collect();
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(leader))
                                        .with_replica_nodes(replicas.clone())
                                        .with_isr_nodes(replicas)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

/// A whole Metadata response frame (see [`metadata_response_body`]).
pub fn metadata_frame(version: i16, brokers: i32, partitions: i32) -> Bytes {
    response_frame(ApiKey::Metadata, version, 1, &metadata_response_body(brokers, partitions))
}

/// The ApiVersions response of an Apache Kafka 3.7 broker: every api key, with the ranges that
/// the sidecar clamps (Produce, Fetch, Metadata, FindCoordinator, DescribeCluster,
/// DescribeQuorum) above its limits.
pub fn api_versions_frame(version: i16) -> Bytes {
    let max = |key: ApiKey| match key {
        ApiKey::Produce => 11,
        ApiKey::Fetch => 16,
        ApiKey::Metadata => 12,
        ApiKey::FindCoordinator => 5,
        ApiKey::DescribeCluster => 1,
        ApiKey::DescribeQuorum => 2,
        ApiKey::ApiVersions => 3,
        _ => 4,
    };
    let body = ApiVersionsResponse::default().with_api_keys(
        ApiKey::iter().map(|key| ApiVersion::default().with_api_key(key as i16).with_max_version(max(key))).collect(),
    );
    response_frame(ApiKey::ApiVersions, version, 1, &body)
}

/// A batched FindCoordinator (v4+) response naming a coordinator among `brokers` brokers for
/// each of `keys` groups.
pub fn find_coordinator_frame(version: i16, keys: i32, brokers: i32) -> Bytes {
    let body = FindCoordinatorResponse::default().with_coordinators(
        (0..keys)
            .map(|k| {
                let id = k % brokers + 1;
                Coordinator::default()
                    .with_key(StrBytes::from_string(format!("payments-consumer-group-{k}")))
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(format!("b-{id}.cluster.kafka.eu-west-1.amazonaws.com")))
                    .with_port(9092)
            })
            .collect(),
    );
    response_frame(ApiKey::FindCoordinator, version, 1, &body)
}

/// `count` copies of `frame` back to back, as a socket read would buffer them.
pub fn repeated(frame: &[u8], count: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(frame.len() * count);
    for _ in 0..count {
        buf.extend_from_slice(frame);
    }
    buf
}
