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

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsResponse, ApiKey, ApiVersionsResponse, BrokerId, DescribeClusterResponse,
    ElectLeadersResponse, EndTxnResponse, FindCoordinatorResponse, HeartbeatResponse, InitProducerIdResponse,
    JoinGroupResponse, LeaveGroupResponse, ListGroupsResponse, ListPartitionReassignmentsResponse, MetadataResponse,
    ResponseHeader, SaslAuthenticateResponse, SaslHandshakeResponse, SyncGroupResponse, TopicName,
    UpdateFeaturesResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use kafka_sidecar::config::{Config, Settings, parse_duration};
use kafka_sidecar::rewrite::{self, Advertised, Endpoint, Rewritten, clamp_limit};
use kafka_sidecar::wire::{FrameCodec, encode_response, response_error_code};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

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

// --------------------------------------------------------------- strategies --

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

#[derive(Debug, Clone)]
struct Broker {
    node_id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
    fenced: bool,
    tags: BTreeMap<i32, Bytes>,
}

fn broker() -> impl Strategy<Value = Broker> {
    (0..1000i32, text(40), any::<i32>(), option::of(text(12)), any::<bool>(), tagged_fields(0))
        .prop_map(|(node_id, host, port, rack, fenced, tags)| Broker { node_id, host, port, rack, fenced, tags })
}

#[derive(Debug, Clone)]
struct Partition {
    error_code: i16,
    index: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline: Vec<i32>,
}

fn partition() -> impl Strategy<Value = Partition> {
    let nodes = || vec(-1..1000i32, 0..4);
    (any::<i16>(), any::<i32>(), -1..1000i32, any::<i32>(), nodes(), nodes(), nodes()).prop_map(
        |(error_code, index, leader, leader_epoch, replicas, isr, offline)| Partition {
            error_code,
            index,
            leader,
            leader_epoch,
            replicas,
            isr,
            offline,
        },
    )
}

#[derive(Debug, Clone)]
struct Topic {
    error_code: i16,
    name: Option<String>,
    id: [u8; 16],
    internal: bool,
    partitions: Vec<Partition>,
    operations: i32,
    tags: BTreeMap<i32, Bytes>,
}

fn topic() -> impl Strategy<Value = Topic> {
    (any::<i16>(), option::of(text(20)), any::<[u8; 16]>(), any::<bool>(), vec(partition(), 0..3), any::<i32>())
        .prop_flat_map(|fields| (Just(fields), tagged_fields(0)))
        .prop_map(|((error_code, name, id, internal, partitions, operations), tags)| Topic {
            error_code,
            name,
            id,
            internal,
            partitions,
            operations,
            tags,
        })
}

#[derive(Debug, Clone)]
struct Cluster {
    brokers: Vec<Broker>,
    cluster_id: Option<String>,
    controller_id: i32,
    topics: Vec<Topic>,
    throttle_time_ms: i32,
    error_code: i16,
    error_message: Option<String>,
    operations: i32,
    tags: BTreeMap<i32, Bytes>,
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (
        vec(broker(), 0..6),
        option::of(text(24)),
        -1..1000i32,
        vec(topic(), 0..3),
        any::<i32>(),
        any::<i16>(),
        option::of(text(16)),
        any::<i32>(),
        tagged_fields(0),
    )
        .prop_map(
            |(
                brokers,
                cluster_id,
                controller_id,
                topics,
                throttle_time_ms,
                error_code,
                error_message,
                operations,
                tags,
            )| {
                Cluster {
                    brokers,
                    cluster_id,
                    controller_id,
                    topics,
                    throttle_time_ms,
                    error_code,
                    error_message,
                    operations,
                    tags,
                }
            },
        )
}

// ----------------------------------------------- responses at each version --

/// `value` where `version` has the field, else the field's default.
fn since<T>(version: i16, first: i16, value: T, default: T) -> T {
    if version >= first { value } else { default }
}

fn tags_if(flexible: bool, tags: &BTreeMap<i32, Bytes>) -> BTreeMap<i32, Bytes> {
    if flexible { tags.clone() } else { BTreeMap::new() }
}

fn metadata(c: &Cluster, v: i16) -> MetadataResponse {
    let flexible = v >= 9;
    let brokers = c
        .brokers
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(s(&b.host))
                .with_port(b.port)
                .with_rack(since(v, 1, b.rack.as_deref().map(s), None))
                .with_unknown_tagged_fields(tags_if(flexible, &b.tags))
        })
        .collect();
    let topics = c
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_error_code(p.error_code)
                        .with_partition_index(p.index)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(since(v, 7, p.leader_epoch, -1))
                        .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                        .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
                        .with_offline_replicas(since(v, 5, p.offline.iter().copied().map(BrokerId).collect(), vec![]))
                        .with_unknown_tagged_fields(tags_if(flexible, &t.tags))
                })
                .collect();
            // Names are nullable from v12 on.
            let name = since(v, 12, t.name.clone(), Some(t.name.clone().unwrap_or_default()));
            let topic = if v >= 10 { topic_with_id(t.id) } else { MetadataResponseTopic::default() };
            topic
                .with_error_code(t.error_code)
                .with_name(name.map(|n| TopicName(s(&n))))
                .with_is_internal(since(v, 1, t.internal, false))
                .with_partitions(partitions)
                .with_topic_authorized_operations(since(v, 8, t.operations, i32::MIN))
                .with_unknown_tagged_fields(tags_if(flexible, &t.tags))
        })
        .collect();
    MetadataResponse::default()
        .with_throttle_time_ms(since(v, 3, c.throttle_time_ms, 0))
        .with_brokers(brokers)
        .with_cluster_id(since(v, 2, c.cluster_id.as_deref().map(s), None))
        .with_controller_id(BrokerId(since(v, 1, c.controller_id, -1)))
        .with_topics(topics)
        .with_cluster_authorized_operations(if (8..=10).contains(&v) { c.operations } else { i32::MIN })
        .with_error_code(since(v, 13, c.error_code, 0))
        .with_unknown_tagged_fields(tags_if(flexible, &c.tags))
}

fn describe_cluster(c: &Cluster, v: i16, endpoint_type: i8) -> DescribeClusterResponse {
    let brokers = c
        .brokers
        .iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(s(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(s))
                .with_is_fenced(since(v, 2, b.fenced, false))
                .with_unknown_tagged_fields(b.tags.clone())
        })
        .collect();
    DescribeClusterResponse::default()
        .with_throttle_time_ms(c.throttle_time_ms)
        .with_error_code(c.error_code)
        .with_error_message(c.error_message.as_deref().map(s))
        .with_endpoint_type(since(v, 1, endpoint_type, 1))
        .with_cluster_id(s(c.cluster_id.as_deref().unwrap_or_default()))
        .with_controller_id(BrokerId(c.controller_id))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(c.operations)
        .with_unknown_tagged_fields(c.tags.clone())
}

#[derive(Debug, Clone)]
struct CoordinatorEntry {
    key: String,
    broker: Broker,
    error_code: i16,
    error_message: Option<String>,
}

fn coordinator() -> impl Strategy<Value = CoordinatorEntry> {
    // Node id -1 is "no coordinator": its address is left as it is and not learned.
    (text(20), broker(), prop_oneof![4 => Just(false), 1 => Just(true)], any::<i16>(), option::of(text(16))).prop_map(
        |(key, mut broker, none, error_code, error_message)| {
            if none {
                broker.node_id = -1;
            }
            CoordinatorEntry { key, broker, error_code, error_message }
        },
    )
}

fn find_coordinator(entries: &[CoordinatorEntry], throttle: i32, v: i16) -> FindCoordinatorResponse {
    let flexible = v >= 3;
    if v < 4 {
        let one = &entries[0];
        return FindCoordinatorResponse::default()
            .with_throttle_time_ms(since(v, 1, throttle, 0))
            .with_error_code(one.error_code)
            .with_error_message(since(v, 1, one.error_message.as_deref().map(s), Some(s(""))))
            .with_node_id(BrokerId(one.broker.node_id))
            .with_host(s(&one.broker.host))
            .with_port(one.broker.port)
            .with_unknown_tagged_fields(tags_if(flexible, &one.broker.tags));
    }
    let coordinators = entries
        .iter()
        .map(|c| {
            Coordinator::default()
                .with_key(s(&c.key))
                .with_node_id(BrokerId(c.broker.node_id))
                .with_host(s(&c.broker.host))
                .with_port(c.broker.port)
                .with_error_code(c.error_code)
                .with_error_message(c.error_message.as_deref().map(s))
                .with_unknown_tagged_fields(c.broker.tags.clone())
        })
        .collect();
    FindCoordinatorResponse::default()
        .with_throttle_time_ms(throttle)
        .with_coordinators(coordinators)
        .with_unknown_tagged_fields(entries[0].broker.tags.clone())
}

fn endpoint(b: &Broker) -> Endpoint {
    Endpoint { node_id: b.node_id, host: b.host.clone(), port: b.port }
}

// -------------------------------------------------------- rewrite round trips --

proptest! {
    #[test]
    fn metadata_round_trips_every_version(cluster in cluster(), advertised in advertised()) {
        for version in MetadataResponse::VERSIONS.min..=MetadataResponse::VERSIONS.max {
            let original = metadata(&cluster, version);
            let (rewritten, decoded) = round_trip(ApiKey::Metadata, version, &original, &advertised);

            let mut expected = original.clone();
            for broker in &mut expected.brokers {
                broker.host = s(&advertised.host);
                broker.port = sidecar_port(&advertised, broker.node_id.0);
            }
            prop_assert_eq!(&decoded, &expected, "v{}", version);
            prop_assert_eq!(&rewritten.brokers, &cluster.brokers.iter().map(endpoint).collect::<Vec<_>>());
            prop_assert_eq!(rewritten.controller_id, (version >= 1).then_some(cluster.controller_id));
        }
    }

    #[test]
    fn find_coordinator_round_trips_every_version(
        entries in vec(coordinator(), 1..5),
        throttle in any::<i32>(),
        advertised in advertised(),
    ) {
        for version in FindCoordinatorResponse::VERSIONS.min..=FindCoordinatorResponse::VERSIONS.max {
            let original = find_coordinator(&entries, throttle, version);
            let (rewritten, decoded) = round_trip(ApiKey::FindCoordinator, version, &original, &advertised);

            let mut expected = original.clone();
            if version < 4 {
                if expected.node_id.0 >= 0 {
                    expected.host = s(&advertised.host);
                    expected.port = sidecar_port(&advertised, expected.node_id.0);
                }
            } else {
                for c in expected.coordinators.iter_mut().filter(|c| c.node_id.0 >= 0) {
                    c.host = s(&advertised.host);
                    c.port = sidecar_port(&advertised, c.node_id.0);
                }
            }
            prop_assert_eq!(&decoded, &expected, "v{}", version);
            let used = if version < 4 { &entries[..1] } else { &entries[..] };
            let learned: Vec<_> = used.iter().map(|c| &c.broker).filter(|b| b.node_id >= 0).map(endpoint).collect();
            prop_assert_eq!(&rewritten.brokers, &learned, "v{}", version);
            prop_assert_eq!(rewritten.controller_id, None);
        }
    }

    #[test]
    fn describe_cluster_round_trips_every_version(
        cluster in cluster(),
        endpoint_type in prop_oneof![3 => Just(1i8), 1 => Just(2i8)],
        advertised in advertised(),
    ) {
        for version in DescribeClusterResponse::VERSIONS.min..=DescribeClusterResponse::VERSIONS.max {
            let original = describe_cluster(&cluster, version, endpoint_type);
            let (rewritten, decoded) = round_trip(ApiKey::DescribeCluster, version, &original, &advertised);

            let mut expected = original.clone();
            for broker in &mut expected.brokers {
                broker.host = s(&advertised.host);
                broker.port = sidecar_port(&advertised, broker.broker_id.0);
            }
            prop_assert_eq!(&decoded, &expected, "v{}", version);
            // Controllers (endpoint type 2) are hidden too, but neither learned nor taken as controller.
            let lists_brokers = original.endpoint_type == 1;
            let learned: Vec<_> =
                if lists_brokers { cluster.brokers.iter().map(endpoint).collect() } else { Vec::new() };
            prop_assert_eq!(&rewritten.brokers, &learned, "v{}", version);
            prop_assert_eq!(rewritten.controller_id, lists_brokers.then_some(cluster.controller_id));
        }
    }
}

// ------------------------------------------------------------ ApiVersions clamp --

fn api_key() -> impl Strategy<Value = i16> {
    // Mostly real api keys, the clamped ones among them, sometimes any number.
    prop_oneof![
        3 => proptest::sample::select(vec![0i16, 1, 3, 10, 18, 55, 60]),
        3 => 0..80i16,
        1 => any::<i16>(),
    ]
}

fn version_number() -> impl Strategy<Value = i16> {
    prop_oneof![4 => -1..20i16, 1 => any::<i16>()]
}

fn api_range() -> impl Strategy<Value = (i16, i16, i16, BTreeMap<i32, Bytes>)> {
    (api_key(), version_number(), version_number(), tagged_fields(0))
        .prop_map(|(key, a, b, tags)| (key, a.min(b), a.max(b), tags))
}

#[derive(Debug, Clone, Default)]
struct Features {
    supported: Vec<(String, i16, i16)>,
    epoch: i64,
    finalized: Vec<(String, i16, i16)>,
    zk_migration_ready: bool,
    tags: BTreeMap<i32, Bytes>,
}

fn features() -> impl Strategy<Value = Features> {
    let keys = || vec((text(16), any::<i16>(), any::<i16>()), 0..3);
    // Often the defaults, which the rewrite drops from the tagged fields.
    let epoch = prop_oneof![Just(-1i64), any::<i64>()];
    (keys(), epoch, keys(), any::<bool>(), tagged_fields(4)).prop_map(
        |(supported, epoch, finalized, zk_migration_ready, tags)| Features {
            supported,
            epoch,
            finalized,
            zk_migration_ready,
            tags,
        },
    )
}

fn api_versions(
    ranges: &[(i16, i16, i16, BTreeMap<i32, Bytes>)],
    throttle: i32,
    f: &Features,
    v: i16,
) -> ApiVersionsResponse {
    let flexible = v >= 3;
    let api_keys = ranges
        .iter()
        .map(|(key, min, max, tags)| {
            ApiVersion::default()
                .with_api_key(*key)
                .with_min_version(*min)
                .with_max_version(*max)
                .with_unknown_tagged_fields(tags_if(flexible, tags))
        })
        .collect();
    let response =
        ApiVersionsResponse::default().with_api_keys(api_keys).with_throttle_time_ms(since(v, 1, throttle, 0));
    if !flexible {
        return response;
    }
    response
        .with_supported_features(
            f.supported
                .iter()
                .map(|(name, min, max)| {
                    SupportedFeatureKey::default().with_name(s(name)).with_min_version(*min).with_max_version(*max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(f.epoch)
        .with_finalized_features(
            f.finalized
                .iter()
                .map(|(name, min, max)| {
                    FinalizedFeatureKey::default()
                        .with_name(s(name))
                        .with_min_version_level(*min)
                        .with_max_version_level(*max)
                })
                .collect(),
        )
        .with_zk_migration_ready(f.zk_migration_ready)
        .with_unknown_tagged_fields(f.tags.clone())
}

proptest! {
    #[test]
    fn api_versions_are_clamped_and_nothing_else_changes(
        ranges in vec(api_range(), 0..12),
        throttle in any::<i32>(),
        features in features(),
        advertised in advertised(),
    ) {
        for version in ApiVersionsResponse::VERSIONS.min..=ApiVersionsResponse::VERSIONS.max {
            let original = api_versions(&ranges, throttle, &features, version);
            let (rewritten, decoded) = round_trip(ApiKey::ApiVersions, version, &original, &advertised);

            // Each range intersected with 0..=limit; an empty intersection drops the entry.
            let mut expected = original.clone();
            expected.api_keys.retain(|api| clamp_limit(api.api_key).is_none_or(|limit| api.min_version <= limit));
            for api in &mut expected.api_keys {
                if let Some(limit) = clamp_limit(api.api_key) {
                    api.max_version = api.max_version.min(limit);
                }
            }
            prop_assert_eq!(&decoded, &expected, "v{}", version);
            prop_assert!(rewritten.brokers.is_empty());
            prop_assert_eq!(rewritten.controller_id, None);
        }
    }

    #[test]
    fn api_versions_error_answers_pass_unchanged(
        error_code in any::<i16>().prop_filter("an error", |code| *code != 0),
        ranges in vec(api_range(), 0..6),
        advertised in advertised(),
    ) {
        for version in ApiVersionsResponse::VERSIONS.min..=ApiVersionsResponse::VERSIONS.max {
            let original = api_versions(&ranges, 0, &Features::default(), version).with_error_code(error_code);
            let bytes = frame(ApiKey::ApiVersions, version, &original);
            let rewritten = rewrite::response(ApiKey::ApiVersions as i16, version, &bytes, &advertised).unwrap();
            prop_assert_eq!(rewritten.unwrap().frame, bytes, "v{}", version);
        }
    }
}

// ------------------------------------------------------------------- framing --

/// Frames decoded from a stream fed in `pieces`, and how the stream ended (`None`: cleanly).
fn decode_stream(mut codec: FrameCodec, pieces: &[&[u8]]) -> (Vec<Bytes>, Option<String>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(format!("{}: {e}", e.kind()))),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(format!("{}: {e}", e.kind()))),
        }
    }
}

/// A byte stream: whole frames (some too short or too long for the codec), then maybe garbage.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<Bytes>)> {
    let frame = vec(any::<u8>(), 0..80).prop_map(|body| {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        Bytes::from(frame)
    });
    let tail = prop_oneof![3 => Just(Vec::new()), 1 => vec(any::<u8>(), 1..12)];
    (vec(frame, 0..8), tail).prop_map(|(frames, tail)| {
        let mut bytes: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        bytes.extend_from_slice(&tail);
        (bytes, frames)
    })
}

proptest! {
    #[test]
    fn framing_does_not_depend_on_how_the_stream_is_split(
        (bytes, frames) in prop_oneof![3 => stream(), 1 => vec(any::<u8>(), 0..64).prop_map(|b| (b, Vec::new()))],
        cuts in vec(any::<proptest::sample::Index>(), 0..10),
        requests in any::<bool>(),
        max in prop_oneof![Just(1024usize), 4..100usize],
    ) {
        let codec = || if requests { FrameCodec::requests(max) } else { FrameCodec::responses(max) };
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            pieces.push(&bytes[at..cut]);
            at = cut;
        }

        let whole = decode_stream(codec(), &[&bytes]);
        let split = decode_stream(codec(), &pieces);
        prop_assert_eq!(&split, &whole);
        // The frames decoded are those the stream was made of, length prefix included (garbage at
        // the end may happen to form one more).
        prop_assert!(whole.0.iter().zip(&frames).all(|(decoded, made)| decoded == made));
        if whole.1.is_none() {
            prop_assert_eq!(whole.0.iter().map(Bytes::len).sum::<usize>(), bytes.len());
        }
    }
}

// ------------------------------------------------------ top-level error codes --

/// Encodes a response with `code` as its top-level error and checks `response_error_code` finds it
/// at every version kafka-protocol knows (from `from` on).
macro_rules! top_level_error {
    ($key:expr, $ty:ty, $code:expr, $throttle:expr, from $from:expr) => {
        for version in i16::max($from, <$ty>::VERSIONS.min)..=<$ty>::VERSIONS.max {
            let body = <$ty>::default().with_error_code($code).with_throttle_time_ms($throttle);
            let bytes = encode_response($key, version, CORRELATION_ID, &body)
                .or_else(|_| encode_response($key, version, CORRELATION_ID, &<$ty>::default().with_error_code($code)))
                .unwrap();
            prop_assert_eq!(response_error_code($key as i16, version, &bytes), Some($code), "{:?} v{}", $key, version);
        }
    };
    ($key:expr, $ty:ty, $code:expr, without throttle) => {
        for version in <$ty>::VERSIONS.min..=<$ty>::VERSIONS.max {
            let bytes =
                encode_response($key, version, CORRELATION_ID, &<$ty>::default().with_error_code($code)).unwrap();
            prop_assert_eq!(response_error_code($key as i16, version, &bytes), Some($code), "{:?} v{}", $key, version);
        }
    };
}

proptest! {
    #[test]
    fn top_level_error_codes_are_read_where_each_api_keeps_them(code in any::<i16>(), throttle in any::<i32>()) {
        top_level_error!(ApiKey::ApiVersions, ApiVersionsResponse, code, throttle, from 0);
        top_level_error!(ApiKey::SaslHandshake, SaslHandshakeResponse, code, without throttle);
        top_level_error!(ApiKey::SaslAuthenticate, SaslAuthenticateResponse, code, without throttle);
        top_level_error!(ApiKey::Heartbeat, HeartbeatResponse, code, throttle, from 0);
        top_level_error!(ApiKey::LeaveGroup, LeaveGroupResponse, code, throttle, from 0);
        top_level_error!(ApiKey::SyncGroup, SyncGroupResponse, code, throttle, from 0);
        top_level_error!(ApiKey::ListGroups, ListGroupsResponse, code, throttle, from 0);
        top_level_error!(ApiKey::JoinGroup, JoinGroupResponse, code, throttle, from 0);
        top_level_error!(ApiKey::InitProducerId, InitProducerIdResponse, code, throttle, from 0);
        top_level_error!(ApiKey::EndTxn, EndTxnResponse, code, throttle, from 0);
        top_level_error!(ApiKey::DescribeCluster, DescribeClusterResponse, code, throttle, from 0);
        top_level_error!(ApiKey::ElectLeaders, ElectLeadersResponse, code, throttle, from 1);
        let key = ApiKey::ListPartitionReassignments;
        top_level_error!(key, ListPartitionReassignmentsResponse, code, throttle, from 0);
        top_level_error!(ApiKey::UpdateFeatures, UpdateFeaturesResponse, code, throttle, from 0);
        // v1 (an extra field before the error code) is the regression test below.
        let bytes = encode_response(
            ApiKey::AlterPartitionReassignments,
            0,
            CORRELATION_ID,
            &AlterPartitionReassignmentsResponse::default().with_error_code(code).with_throttle_time_ms(throttle),
        )
        .unwrap();
        prop_assert_eq!(response_error_code(ApiKey::AlterPartitionReassignments as i16, 0, &bytes), Some(code));
        // FindCoordinator keeps one only before v4 (then per coordinator).
        for version in 0..=3 {
            let body = FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_throttle_time_ms(since(version, 1, throttle, 0));
            let bytes = encode_response(ApiKey::FindCoordinator, version, CORRELATION_ID, &body).unwrap();
            prop_assert_eq!(response_error_code(ApiKey::FindCoordinator as i16, version, &bytes), Some(code));
        }
    }
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
