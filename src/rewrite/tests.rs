//! Byte-level tests of every rewriter across its whole version range.
//!
//! Fixtures are encoded with kafka-protocol (a trusted encoder), rewritten, then decoded again:
//! every broker address must be the sidecar's and every other field must survive unchanged.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, SupportedFeatureKey};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, DescribeClusterResponse, FindCoordinatorResponse, MetadataResponse,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

use super::*;

const CORRELATION_ID: i32 = 4242;

fn advertised() -> Advertised {
    Advertised { host: "127.0.0.1".into(), port_base: 19100 }
}

fn frame(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
    crate::wire::encode_response(api_key, version, CORRELATION_ID, body).unwrap()
}

fn decode<T: Decodable>(api_key: ApiKey, version: i16, frame: &Bytes) -> T {
    let mut buf = frame.slice(4..);
    ResponseHeader::decode(&mut buf, api_key.response_header_version(version)).unwrap();
    let body = T::decode(&mut buf, version).unwrap();
    assert!(buf.is_empty(), "trailing bytes after {api_key:?} v{version}");
    body
}

fn rewrite(api_key: ApiKey, version: i16, frame: &Bytes) -> Rewritten {
    let rewritten = response(api_key as i16, version, frame, &advertised()).unwrap().unwrap();
    let len = i32::from_be_bytes(rewritten.frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, rewritten.frame.len() - 4, "length prefix must match");
    assert_eq!(rewritten.frame[4..8], frame[4..8], "correlation id must be kept");
    rewritten
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn real_brokers() -> Vec<(i32, &'static str, i32)> {
    vec![
        (1, "b-1.msk.eu-west-1.amazonaws.com", 9092),
        (2, "b-2.msk.eu-west-1.amazonaws.com", 9092),
        (3, "b-3.msk.eu-west-1.amazonaws.com", 9094),
    ]
}

fn learned() -> Vec<Endpoint> {
    real_brokers().into_iter().map(|(node_id, host, port)| Endpoint { node_id, host: host.into(), port }).collect()
}

fn metadata(version: i16) -> MetadataResponse {
    let brokers = real_brokers()
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(str(host))
                .with_port(port)
                .with_rack((version >= 1).then(|| str("use1-az1")))
        })
        .collect();
    let partition = |i: i32| {
        MetadataResponsePartition::default()
            .with_partition_index(i)
            .with_leader_id(BrokerId(i % 3 + 1))
            .with_leader_epoch(if version >= 7 { 5 } else { -1 })
            .with_replica_nodes(vec![BrokerId(1), BrokerId(2), BrokerId(3)])
            .with_isr_nodes(vec![BrokerId(1), BrokerId(2)])
    };
    let topic = MetadataResponseTopic::default()
        .with_name(Some(TopicName(str("orders"))))
        .with_is_internal(false)
        .with_partitions((0..6).map(partition).collect());
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id((version >= 2).then(|| str("cluster-1")))
        .with_controller_id(BrokerId(if version >= 1 { 2 } else { -1 }))
        .with_topics(vec![topic])
}

#[test]
fn metadata_every_version() {
    for version in MetadataResponse::VERSIONS.min..=MetadataResponse::VERSIONS.max {
        let original = metadata(version);
        let rewritten = rewrite(ApiKey::Metadata, version, &frame(ApiKey::Metadata, version, &original));
        let decoded: MetadataResponse = decode(ApiKey::Metadata, version, &rewritten.frame);

        let mut expected = original.clone();
        for broker in &mut expected.brokers {
            broker.host = str("127.0.0.1");
            broker.port = 19100 + broker.node_id.0;
        }
        assert_eq!(decoded, expected, "v{version}");
        assert_eq!(rewritten.brokers, learned(), "v{version}");
        assert_eq!(rewritten.controller_id, (version >= 1).then_some(2), "v{version}");
    }
}

#[test]
fn find_coordinator_single_and_batched() {
    for version in FindCoordinatorResponse::VERSIONS.min..=FindCoordinatorResponse::VERSIONS.max {
        let original = if version < 4 {
            FindCoordinatorResponse::default()
                .with_error_message(Some(str(if version >= 1 { "none" } else { "" })))
                .with_node_id(BrokerId(3))
                .with_host(str("b-3.msk.eu-west-1.amazonaws.com"))
                .with_port(9094)
        } else {
            let coordinator = |key: &str, id: i32, host: &str| {
                Coordinator::default()
                    .with_key(str(key))
                    .with_node_id(BrokerId(id))
                    .with_host(str(host))
                    .with_port(9092)
            };
            FindCoordinatorResponse::default().with_coordinators(vec![
                coordinator("group-a", 1, "b-1.msk.eu-west-1.amazonaws.com"),
                coordinator("group-b", 2, "b-2.msk.eu-west-1.amazonaws.com"),
                coordinator("missing", -1, "").with_error_code(15),
            ])
        };
        let rewritten = rewrite(ApiKey::FindCoordinator, version, &frame(ApiKey::FindCoordinator, version, &original));
        let decoded: FindCoordinatorResponse = decode(ApiKey::FindCoordinator, version, &rewritten.frame);
        let mut expected = original.clone();
        if version < 4 {
            expected.host = str("127.0.0.1");
            expected.port = 19103;
        } else {
            for c in expected.coordinators.iter_mut().filter(|c| c.node_id.0 >= 0) {
                c.host = str("127.0.0.1");
                c.port = 19100 + c.node_id.0;
            }
        }
        assert_eq!(decoded, expected, "v{version}");
        assert!(rewritten.brokers.iter().all(|b| b.host.starts_with("b-")), "v{version}");
    }
}

#[test]
fn find_coordinator_error_without_node_is_left_alone() {
    let original = FindCoordinatorResponse::default()
        .with_error_code(15)
        .with_node_id(BrokerId(-1))
        .with_host(str(""))
        .with_port(-1);
    let bytes = frame(ApiKey::FindCoordinator, 2, &original);
    let rewritten = rewrite(ApiKey::FindCoordinator, 2, &bytes);
    assert_eq!(rewritten.frame, bytes);
    assert!(rewritten.brokers.is_empty());
}

#[test]
fn describe_cluster_every_version() {
    for version in DescribeClusterResponse::VERSIONS.min..=DescribeClusterResponse::VERSIONS.max {
        let brokers = real_brokers()
            .into_iter()
            .map(|(id, host, port)| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(id))
                    .with_host(str(host))
                    .with_port(port)
                    .with_is_fenced(version >= 2 && id == 3)
            })
            .collect();
        let original = DescribeClusterResponse::default()
            .with_endpoint_type(1)
            .with_cluster_id(str("cluster-1"))
            .with_controller_id(BrokerId(3))
            .with_brokers(brokers)
            .with_cluster_authorized_operations(-2147483648);
        let rewritten = rewrite(ApiKey::DescribeCluster, version, &frame(ApiKey::DescribeCluster, version, &original));
        let decoded: DescribeClusterResponse = decode(ApiKey::DescribeCluster, version, &rewritten.frame);
        let mut expected = original.clone();
        for b in &mut expected.brokers {
            b.host = str("127.0.0.1");
            b.port = 19100 + b.broker_id.0;
        }
        assert_eq!(decoded, expected, "v{version}");
        assert_eq!(rewritten.brokers, learned());
        assert_eq!(rewritten.controller_id, Some(3));
    }
}

#[test]
fn describe_cluster_controllers_are_hidden_but_not_learned() {
    let original = DescribeClusterResponse::default()
        .with_endpoint_type(2)
        .with_cluster_id(str("cluster-1"))
        .with_controller_id(BrokerId(3000))
        .with_brokers(vec![
            DescribeClusterBroker::default().with_broker_id(BrokerId(3000)).with_host(str("c-1")).with_port(9093),
        ]);
    let rewritten = rewrite(ApiKey::DescribeCluster, 1, &frame(ApiKey::DescribeCluster, 1, &original));
    let decoded: DescribeClusterResponse = decode(ApiKey::DescribeCluster, 1, &rewritten.frame);
    assert_eq!((decoded.brokers[0].host.as_str(), decoded.brokers[0].port), ("127.0.0.1", 22100));
    assert!(rewritten.brokers.is_empty());
    assert_eq!(rewritten.controller_id, None);
}

fn api_versions(version: i16) -> ApiVersionsResponse {
    let range = |key: ApiKey, min: i16, max: i16| {
        ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
    };
    ApiVersionsResponse::default()
        .with_api_keys(vec![
            range(ApiKey::Produce, 3, 13),
            range(ApiKey::Fetch, 4, 18),
            range(ApiKey::Metadata, 0, 14),
            range(ApiKey::OffsetCommit, 0, 9),
            range(ApiKey::FindCoordinator, 0, 6),
            range(ApiKey::ApiVersions, 0, 5),
            range(ApiKey::CreateTopics, 2, 7),
            range(ApiKey::DescribeCluster, 0, 2),
            // Only versions above the sidecar's limit: the entry must go.
            range(ApiKey::DescribeQuorum, 2, 2),
        ])
        .with_throttle_time_ms(if version >= 1 { 10 } else { 0 })
        .with_supported_features(if version >= 3 {
            vec![
                SupportedFeatureKey::default()
                    .with_name(str("metadata.version"))
                    .with_min_version(1)
                    .with_max_version(27),
            ]
        } else {
            vec![]
        })
}

#[test]
fn api_versions_clamps_every_version() {
    for version in ApiVersionsResponse::VERSIONS.min..=ApiVersionsResponse::VERSIONS.max {
        let original = api_versions(version);
        let rewritten = rewrite(ApiKey::ApiVersions, version, &frame(ApiKey::ApiVersions, version, &original));
        let decoded: ApiVersionsResponse = decode(ApiKey::ApiVersions, version, &rewritten.frame);
        let ranges: Vec<(i16, i16, i16)> =
            decoded.api_keys.iter().map(|a| (a.api_key, a.min_version, a.max_version)).collect();
        assert_eq!(
            ranges,
            [(0, 3, 9), (1, 4, 15), (3, 0, 13), (8, 0, 9), (10, 0, 6), (18, 0, 4), (19, 2, 7), (60, 0, 2)],
            "v{version}"
        );
        assert_eq!(decoded.throttle_time_ms, original.throttle_time_ms);
        assert_eq!(decoded.supported_features, original.supported_features);
    }
}

#[test]
fn api_versions_error_replies_pass_through_unchanged() {
    // Kafka answers an unknown ApiVersions version with UNSUPPORTED_VERSION in the v0 layout.
    let fallback = ApiVersionsResponse::default()
        .with_error_code(35)
        .with_api_keys(vec![ApiVersion::default().with_api_key(18).with_min_version(0).with_max_version(2)]);
    let kafka_reply = frame(ApiKey::ApiVersions, 0, &fallback);
    // librdkafka's mock broker answers ApiVersions v3 in a layout of its own (captured on the wire).
    let mock_reply = unhex("000000110000000100230100120000000200000000");
    for reply in [kafka_reply, mock_reply] {
        let rewritten = response(ApiKey::ApiVersions as i16, 3, &reply, &advertised()).unwrap().unwrap();
        assert_eq!(rewritten.frame, reply);
    }
}

#[test]
fn truncated_responses_are_errors_at_every_cut() {
    let bytes = frame(ApiKey::Metadata, 9, &metadata(9));
    // Every cut inside the walked part (header, brokers, cluster id, controller id) must fail cleanly.
    for cut in 4..60 {
        let mut truncated = BytesMut::from(&bytes[..cut]);
        let len = (truncated.len() - 4) as i32;
        truncated[..4].copy_from_slice(&len.to_be_bytes());
        let result = response(ApiKey::Metadata as i16, 9, &truncated.freeze(), &advertised());
        assert!(matches!(result, Err(RewriteError::Malformed { .. })), "cut at {cut}: {result:?}");
    }
}

#[test]
fn hostile_broker_count_is_refused() {
    let mut bytes = BytesMut::new();
    bytes.put_i32(0);
    bytes.put_i32(CORRELATION_ID);
    bytes.put_i32(i32::MAX); // brokers array length, v0
    bytes.put_i32(1);
    let len = (bytes.len() - 4) as i32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    let result = response(ApiKey::Metadata as i16, 0, &bytes.freeze(), &advertised());
    assert!(matches!(result, Err(RewriteError::Malformed { .. })));
}

#[test]
fn node_id_beyond_the_port_range_is_an_error() {
    let original = metadata(1)
        .with_brokers(vec![MetadataResponseBroker::default().with_node_id(BrokerId(60000)).with_host(str("b"))]);
    let result = response(ApiKey::Metadata as i16, 1, &frame(ApiKey::Metadata, 1, &original), &advertised());
    assert!(matches!(result, Err(RewriteError::NodeIdOutOfRange { node_id: 60000, .. })));
}

#[test]
fn other_apis_pass_through() {
    let bytes = Bytes::from_static(&[0, 0, 0, 4, 0, 0, 0, 1]);
    assert!(response(ApiKey::Produce as i16, 9, &bytes, &advertised()).unwrap().is_none());
    assert!(response(9999, 0, &bytes, &advertised()).unwrap().is_none());
}

/// ApiVersions v3 as Tansu 0.6.0 answers it, captured on the wire: every feature tagged field is
/// present with its default value, which librdkafka 2.0 cannot parse.
const TANSU_API_VERSIONS_V3: &str = "000001140000000100002400080000000900001c000000040000450000000000000c0000000400000d00000005000047000000000000000000000b0000160000000500004b000000000000140000000600001d0000000300000f00000005000024000000020000100000000500002a0000000200000b000000090000090000000900000a00000006000001000000110000200000000400003c000000010000030000000c00001900000004000015000000020000320000000000003300000000000012000000040000180000000500002e00000000000002000000090000130000000700001e000000030000110000000100000e0000000500002c000000010000000000040001010108ffffffffffffffff020101030100";

fn unhex(hex: &str) -> Bytes {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect::<Vec<_>>().into()
}

#[test]
fn api_versions_default_tagged_fields_are_dropped() {
    let captured = unhex(TANSU_API_VERSIONS_V3);
    let rewritten = rewrite(ApiKey::ApiVersions, 3, &captured);
    let original: ApiVersionsResponse = decode(ApiKey::ApiVersions, 3, &captured);
    let decoded: ApiVersionsResponse = decode(ApiKey::ApiVersions, 3, &rewritten.frame);
    // Same meaning, but the tagged-field section is now empty: one 0x00 byte at the very end.
    assert_eq!(decoded.supported_features, original.supported_features);
    assert_eq!(decoded.finalized_features_epoch, -1);
    assert_eq!(rewritten.frame.last(), Some(&0));
    assert_eq!(&rewritten.frame[rewritten.frame.len() - 5..], &[0, 0, 0, 0, 0], "throttle then no tags");
    let produce = decoded.api_keys.iter().find(|a| a.api_key == 0).unwrap();
    assert_eq!(produce.max_version, 9);
}

#[test]
fn api_versions_non_default_tagged_fields_are_kept() {
    let original = api_versions(3).with_finalized_features_epoch(7);
    let rewritten = rewrite(ApiKey::ApiVersions, 3, &frame(ApiKey::ApiVersions, 3, &original));
    let decoded: ApiVersionsResponse = decode(ApiKey::ApiVersions, 3, &rewritten.frame);
    assert_eq!(decoded.finalized_features_epoch, 7);
    assert_eq!(decoded.supported_features, original.supported_features);
}
