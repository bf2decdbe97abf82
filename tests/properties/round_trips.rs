//! Rewrite round trips: Metadata, FindCoordinator and DescribeCluster responses built from
//! arbitrary clusters, rewritten and decoded again.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeClusterResponse, FindCoordinatorResponse, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::Message;
use kafka_sidecar::rewrite::Endpoint;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::{advertised, round_trip, s, sidecar_port, since, tagged_fields, tags_if, text, topic_with_id};

// --------------------------------------------------------------- strategies --

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
