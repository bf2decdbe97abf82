//! Writes the seed corpora in fuzz/seeds/: real frames encoded with kafka-protocol, laid out as
//! each fuzz target reads its input. Run after changing a target's input layout:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds
//!
//! Output is deterministic; each file is named after its content's FNV-1a hash.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterResponse, ElectLeadersRequest, ElectLeadersResponse, FindCoordinatorResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, TopicName, UpdateFeaturesRequest, UpdateFeaturesResponse,
};
use kafka_protocol::protocol::{Encodable, Message, StrBytes};
use kafka_sidecar::wire::{encode_request, encode_response};

const NOT_CONTROLLER: i16 = 41;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

fn body(value: &impl Encodable, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    value.encode(&mut buf, version).expect("encodable at this version");
    buf.freeze()
}

/// A whole response frame without its length prefix, as `rewrite_responses` reads it.
fn response(key: ApiKey, version: i16, value: &impl Encodable) -> Bytes {
    encode_response(key, version, 4242, value).expect("encodable").slice(4..)
}

struct Seeds {
    dir: PathBuf,
    written: usize,
}

impl Seeds {
    fn new(root: &Path, target: &str) -> Self {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create seed directory");
        Seeds { dir, written: 0 }
    }

    fn write(&mut self, bytes: &[u8]) {
        // FNV-1a: the same names with every Rust release.
        let hash =
            bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
        std::fs::write(self.dir.join(format!("{hash:016x}")), bytes).expect("write seed");
        self.written += 1;
    }
}

fn frame_codec(root: &Path) -> usize {
    let mut seeds = Seeds::new(root, "frame_codec");
    let produce = |version: i16, acks: i16| {
        let data = TopicProduceData::default()
            .with_name(topic("orders"))
            .with_partition_data(vec![PartitionProduceData::default().with_records(Some(Bytes::from_static(b"rec")))]);
        let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![data]);
        encode_request(ApiKey::Produce, version, 1, &request).expect("produce")
    };
    let metadata = |version: i16| {
        let topics = Some(vec![MetadataRequestTopic::default().with_name(Some(topic("orders")))]);
        encode_request(ApiKey::Metadata, version, 2, &MetadataRequest::default().with_topics(topics)).expect("metadata")
    };
    let api_versions = encode_request(ApiKey::ApiVersions, 3, 3, &ApiVersionsRequest::default()).expect("apiversions");
    let min_produce = ProduceRequest::VERSIONS.min;
    let streams: Vec<Vec<Bytes>> = vec![
        vec![api_versions.clone(), metadata(1), metadata(12)],
        vec![produce(min_produce, 0), produce(9, 1), produce(ProduceRequest::VERSIONS.max, -1)],
        vec![metadata(4), api_versions.clone()],
    ];
    for (i, stream) in streams.iter().enumerate() {
        let bytes: Vec<u8> = stream.iter().flat_map(|frame| frame.iter().copied()).collect();
        // Request codec with a 64 KiB limit, in chunks of 1, 7 and 22 bytes.
        for chunking in [0u8, 2, 7] {
            let control = (chunking << 5) | (12 << 1); // bit 0 clear: requests
            seeds.write(&[&[control][..], &bytes].concat());
        }
        // A truncated stream.
        seeds.write(&[&[24u8][..], &bytes[..bytes.len() - 1 - i]].concat());
    }
    let responses: Vec<u8> = [
        encode_response(ApiKey::Metadata, 12, 7, &MetadataResponse::default()).unwrap(),
        encode_response(ApiKey::ApiVersions, 3, 8, &ApiVersionsResponse::default()).unwrap(),
    ]
    .iter()
    .flat_map(|frame| frame.iter().copied())
    .collect();
    seeds.write(&[&[25u8][..], &responses].concat());
    seeds.write(&[&[25u8][..], b"GET /metrics HTTP/1.1\r\n\r\n"].concat());
    seeds.write(&[0u8, 0x16, 0x03, 0x01, 0x00, 0x05]);
    seeds.written
}

fn rewrite_responses(root: &Path) -> usize {
    let mut seeds = Seeds::new(root, "rewrite_responses");
    let mut write = |api: u8, version: i16, frame: Bytes| {
        // The target reads the version as (byte % (max + 4)) - 1 and the port base big-endian.
        let [hi, lo] = 9100u16.to_be_bytes();
        seeds.write(&[&[api, (version + 1) as u8, hi, lo][..], &frame].concat());
    };
    let brokers =
        [(1, "b-1.kafka.example.com", 9092, Some("use1-az1")), (2, "b-2", 9094, None), (3, "b-3", 9092, None)];

    for version in 0..=4 {
        let mut response = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default().with_api_key(0).with_min_version(3).with_max_version(12),
            ApiVersion::default().with_api_key(3).with_min_version(0).with_max_version(13),
            ApiVersion::default().with_api_key(18).with_min_version(0).with_max_version(4),
            ApiVersion::default().with_api_key(55).with_min_version(2).with_max_version(3),
            ApiVersion::default().with_api_key(60).with_min_version(0).with_max_version(2),
            ApiVersion::default().with_api_key(10).with_min_version(7).with_max_version(8),
        ]);
        if version >= 3 {
            response = response
                .with_supported_features(vec![
                    SupportedFeatureKey::default().with_name(s("metadata.version")).with_max_version(20),
                ])
                .with_finalized_features_epoch(7)
                .with_finalized_features(vec![
                    FinalizedFeatureKey::default()
                        .with_name(s("metadata.version"))
                        .with_max_version_level(14)
                        .with_min_version_level(14),
                ]);
        }
        write(0, version, self::response(ApiKey::ApiVersions, version, &response));
    }
    // An error answer passes through.
    write(0, 0, self::response(ApiKey::ApiVersions, 0, &ApiVersionsResponse::default().with_error_code(35)));

    for version in MetadataResponse::VERSIONS.min..=MetadataResponse::VERSIONS.max {
        let brokers = brokers
            .iter()
            .map(|&(id, host, port, rack)| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(s(host))
                    .with_port(port)
                    .with_rack(if version >= 1 { rack.map(s) } else { None })
            })
            .collect();
        let partition = MetadataResponsePartition::default()
            .with_leader_id(BrokerId(1))
            .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
            .with_isr_nodes(vec![BrokerId(1)]);
        let topic = MetadataResponseTopic::default().with_name(Some(topic("orders"))).with_partitions(vec![partition]);
        let mut response = MetadataResponse::default().with_brokers(brokers).with_topics(vec![topic]);
        if version >= 1 {
            response = response.with_controller_id(BrokerId(2));
        }
        if version >= 2 {
            response = response.with_cluster_id(Some(s("lkc-1")));
        }
        if (8..=10).contains(&version) {
            response = response.with_cluster_authorized_operations(0);
        }
        write(1, version, self::response(ApiKey::Metadata, version, &response));
    }

    for version in FindCoordinatorResponse::VERSIONS.min..=FindCoordinatorResponse::VERSIONS.max {
        let response = if version < 4 {
            FindCoordinatorResponse::default().with_node_id(BrokerId(3)).with_host(s("b-3")).with_port(9092)
        } else {
            FindCoordinatorResponse::default().with_coordinators(vec![
                Coordinator::default()
                    .with_key(s("group"))
                    .with_node_id(BrokerId(3))
                    .with_host(s("b-3"))
                    .with_port(9092),
                Coordinator::default().with_key(s("gone")).with_node_id(BrokerId(-1)).with_error_code(15),
            ])
        };
        write(2, version, self::response(ApiKey::FindCoordinator, version, &response));
    }

    for version in DescribeClusterResponse::VERSIONS.min..=DescribeClusterResponse::VERSIONS.max {
        let brokers = brokers
            .iter()
            .map(|&(id, host, port, rack)| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(id))
                    .with_host(s(host))
                    .with_port(port)
                    .with_rack(rack.map(s))
                    .with_is_fenced(version >= 2 && id == 3)
            })
            .collect();
        let response = DescribeClusterResponse::default()
            .with_cluster_id(s("lkc-1"))
            .with_controller_id(BrokerId(1))
            .with_brokers(brokers);
        write(3, version, self::response(ApiKey::DescribeCluster, version, &response));
        if version >= 1 {
            let controllers = response.with_endpoint_type(2);
            write(3, version, self::response(ApiKey::DescribeCluster, version, &controllers));
        }
    }
    seeds.written
}

fn admin_retry(root: &Path) -> usize {
    let mut seeds = Seeds::new(root, "admin_retry");
    // api index (as in the target), version, then the request body, first and retry response bodies.
    let mut write = |api: u8, version: i16, request: Bytes, first: Bytes, retry: Bytes| {
        if request.len() > 255 || first.len() > 255 {
            return;
        }
        let head = [api, version as u8, request.len() as u8, first.len() as u8];
        seeds.write(&[&head[..], &request, &first, &retry].concat());
    };
    let names = ["a", "b", "c"];
    // Response bodies start after the header; the target adds the correlation id and header.
    for version in CreateTopicsRequest::VERSIONS.min..=CreateTopicsRequest::VERSIONS.max {
        let topics = names
            .iter()
            .map(|name| {
                let mut topic = CreatableTopic::default()
                    .with_name(topic(name))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_configs(vec![
                        CreatableTopicConfig::default().with_name(s("retention.ms")).with_value(Some(s("1"))),
                    ]);
                if *name == "c" {
                    topic = topic.with_num_partitions(-1).with_assignments(vec![
                        CreatableReplicaAssignment::default()
                            .with_partition_index(0)
                            .with_broker_ids(vec![BrokerId(1)]),
                    ]);
                }
                topic
            })
            .collect();
        let request = CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(5000);
        let results = |codes: [i16; 3]| {
            let topics = names
                .iter()
                .zip(codes)
                .map(|(name, code)| CreatableTopicResult::default().with_name(topic(name)).with_error_code(code))
                .collect();
            CreateTopicsResponse::default().with_topics(topics)
        };
        let first = results([NOT_CONTROLLER, 0, NOT_CONTROLLER]);
        let retry = results([0, 36, 0]);
        write(0, version, body(&request, version), body(&first, version), body(&retry, version));
    }
    for version in DeleteTopicsRequest::VERSIONS.min..=DeleteTopicsRequest::VERSIONS.max {
        let request = if version >= 6 {
            DeleteTopicsRequest::default().with_topics(
                names.iter().map(|name| DeleteTopicState::default().with_name(Some(topic(name)))).collect(),
            )
        } else {
            DeleteTopicsRequest::default().with_topic_names(names.iter().map(|name| topic(name)).collect())
        };
        let request = request.with_timeout_ms(5000);
        let results = |codes: [i16; 3]| {
            let topics = names
                .iter()
                .zip(codes)
                .map(|(name, code)| DeletableTopicResult::default().with_name(Some(topic(name))).with_error_code(code))
                .collect();
            DeleteTopicsResponse::default().with_responses(topics)
        };
        let first = results([0, NOT_CONTROLLER, NOT_CONTROLLER]);
        let retry = results([0, 0, 3]);
        write(1, version, body(&request, version), body(&first, version), body(&retry, version));
    }
    for version in CreatePartitionsRequest::VERSIONS.min..=CreatePartitionsRequest::VERSIONS.max {
        let request = CreatePartitionsRequest::default()
            .with_topics(
                names
                    .iter()
                    .map(|name| CreatePartitionsTopic::default().with_name(topic(name)).with_count(3))
                    .collect(),
            )
            .with_timeout_ms(5000);
        let results = |codes: [i16; 3]| {
            let results = names
                .iter()
                .zip(codes)
                .map(|(name, code)| CreatePartitionsTopicResult::default().with_name(topic(name)).with_error_code(code))
                .collect();
            CreatePartitionsResponse::default().with_results(results)
        };
        let first = results([NOT_CONTROLLER, NOT_CONTROLLER, NOT_CONTROLLER]);
        let retry = results([0, 37, 0]);
        write(2, version, body(&request, version), body(&first, version), body(&retry, version));
    }
    for version in ElectLeadersRequest::VERSIONS.min..=ElectLeadersRequest::VERSIONS.max {
        let request = ElectLeadersRequest::default()
            .with_topic_partitions(Some(vec![
                TopicPartitions::default().with_topic(topic("a")).with_partitions(vec![0, 1, 2]),
                TopicPartitions::default().with_topic(topic("b")).with_partitions(vec![0]),
            ]))
            .with_timeout_ms(5000);
        let results = |codes: [i16; 4]| {
            let partition = |id, code| PartitionResult::default().with_partition_id(id).with_error_code(code);
            ElectLeadersResponse::default().with_replica_election_results(vec![
                ReplicaElectionResult::default().with_topic(topic("a")).with_partition_result(vec![
                    partition(0, codes[0]),
                    partition(1, codes[1]),
                    partition(2, codes[2]),
                ]),
                ReplicaElectionResult::default()
                    .with_topic(topic("b"))
                    .with_partition_result(vec![partition(0, codes[3])]),
            ])
        };
        let first = results([0, NOT_CONTROLLER, 0, NOT_CONTROLLER]);
        let retry = results([0, 0, 0, 84]);
        write(3, version, body(&request, version), body(&first, version), body(&retry, version));
    }
    let request = AlterUserScramCredentialsRequest::default()
        .with_deletions(vec![ScramCredentialDeletion::default().with_name(s("a")).with_mechanism(1)])
        .with_upsertions(
            ["b", "c"]
                .iter()
                .map(|user| {
                    ScramCredentialUpsertion::default()
                        .with_name(s(user))
                        .with_mechanism(2)
                        .with_iterations(8192)
                        .with_salt(Bytes::from_static(b"salt"))
                        .with_salted_password(Bytes::from_static(&[7; 32]))
                })
                .collect(),
        );
    let results = |codes: [i16; 3]| {
        let results = names
            .iter()
            .zip(codes)
            .map(|(user, code)| AlterUserScramCredentialsResult::default().with_user(s(user)).with_error_code(code))
            .collect();
        AlterUserScramCredentialsResponse::default().with_results(results)
    };
    let first = results([NOT_CONTROLLER, 0, NOT_CONTROLLER]);
    let retry = results([0, 0, 0]);
    write(4, 0, body(&request, 0), body(&first, 0), body(&retry, 0));
    let version = AlterPartitionReassignmentsRequest::VERSIONS.min;
    write(
        5,
        version,
        body(&AlterPartitionReassignmentsRequest::default().with_timeout_ms(5000), version),
        body(&AlterPartitionReassignmentsResponse::default().with_error_code(NOT_CONTROLLER), version),
        body(&AlterPartitionReassignmentsResponse::default(), version),
    );
    for version in 0..=1 {
        write(
            7,
            version,
            body(&UpdateFeaturesRequest::default().with_timeout_ms(5000), version),
            body(&UpdateFeaturesResponse::default().with_error_code(NOT_CONTROLLER), version),
            body(&UpdateFeaturesResponse::default(), version),
        );
    }
    seeds.written
}

fn config(root: &Path) -> usize {
    let mut seeds = Seeds::new(root, "config");
    let files = [
        "bootstrap-servers = [\"b-1.example:9092\", \"b-2.example:9092\"]\n",
        concat!(
            "bootstrap-servers = [\"b-1:9092\"]\nlisten-host = \"0.0.0.0\"\nbootstrap-port = 9092\n",
            "broker-port-base = 9100\nadvertised-host = \"kafka.local\"\nadmin-listen = \"0.0.0.0:9080\"\n",
            "max-frame-bytes = 104857600\nmax-inflight = 1024\nmax-client-connections = 100\n",
            "client-idle-timeout = \"10m\"\nconnect-timeout = \"5s\"\nconnect-attempts = 3\n",
            "connect-backoff = \"100ms\"\nkeepalive-idle = \"60s\"\nkeepalive-interval = \"10s\"\n",
            "keepalive-count = 3\nuser-timeout = \"30s\"\nmetadata-refresh = \"30s\"\nshutdown-delay = \"5s\"\n",
            "drain-timeout = \"25s\"\nadmin-retry-backoff = \"100ms\"\nadmin-retry-backoff-max = \"1s\"\n",
            "admin-retry-budget = \"30s\"\nlog-format = \"json\"\nlog-level = \"debug\"\n",
        ),
        concat!(
            "bootstrap-servers = [\"b-1:9096\"]\ntls = true\ntls-ca-file = \"/etc/ca.pem\"\n",
            "tls-cert-file = \"/etc/client.pem\"\ntls-key-file = \"/etc/client.key\"\n",
            "sasl-mechanism = \"SCRAM-SHA-512\"\nsasl-username = \"app\"\nsasl-password = \"secret\"\n",
        ),
        concat!(
            "bootstrap-servers = [\"b-1:9098\"]\ntls = true\n",
            "sasl-mechanism = \"AWS_MSK_IAM\"\naws-region = \"eu-west-1\"\n",
        ),
        concat!(
            "bootstrap-servers = [\"b-1:9092\"]\nlistener-tls-cert-file = \"/etc/l.pem\"\n",
            "listener-tls-key-file = \"/etc/l.key\"\nsasl-mechanism = \"PLAIN\"\nsasl-username = \"u\"\n",
        ),
        concat!(
            "bootstrap-servers = [\"nohost\", \":9092\"]\nlisten-host = \"localhost\"\n",
            "keepalive-idle = \"soon\"\nlog-format = \"xml\"\n",
        ),
        "bootstrap-servers = [\"b:1\"]\nmax-frame-bytes = 12\nmax-inflight = 0\nadmin-retry-backoff = \"0ms\"\n",
    ];
    for file in files {
        seeds.write(file.as_bytes());
    }
    seeds.written
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, generate) in [
        ("frame_codec", frame_codec as fn(&Path) -> usize),
        ("rewrite_responses", rewrite_responses),
        ("admin_retry", admin_retry),
        ("config", config),
    ] {
        let _ = std::fs::remove_dir_all(root.join(target));
        let written = generate(&root);
        println!("{target}: {written} seeds");
    }
}
