//! The proxy against a real broker (Tansu), spoken to in raw Kafka protocol: address rewriting
//! across versions, old versions passing through, acks=0, hostile input and shutdown.

use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeClusterRequest, DescribeClusterResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_sidecar_test_support::{self as support, raw};
use raw::{RawClient, create_topics_v0, raw_request, read_topic_errors_v0};
use support::{Sidecar, Tansu};

fn broker_and_sidecar() -> (Tansu, Sidecar) {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    (tansu, sidecar)
}

fn tansu_port(tansu: &Tansu) -> u16 {
    tansu.addr().rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn no_broker_address_reaches_the_client_in_any_version() {
    let (tansu, sidecar) = broker_and_sidecar();
    let real_port = tansu_port(&tansu);
    let local_port = sidecar.broker_port_base() as i32 + 111;
    let mut client = RawClient::connect(&sidecar.bootstrap());

    for version in 1..=12 {
        let request = MetadataRequest::default().with_topics(None);
        let response: MetadataResponse = client.request(ApiKey::Metadata, version, &request);
        assert_eq!(response.brokers.len(), 1, "Metadata v{version}");
        for broker in &response.brokers {
            assert_eq!(broker.host.as_str(), "127.0.0.1", "Metadata v{version}");
            assert_eq!(broker.port, local_port, "Metadata v{version}");
            assert_ne!(broker.port, real_port as i32);
        }
        assert_eq!(response.controller_id.0, 111, "Metadata v{version}");
    }
    for version in 0..=4 {
        let group = StrBytes::from_static_str("group-1");
        let request = if version < 4 {
            FindCoordinatorRequest::default().with_key(group)
        } else {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![group])
        };
        let response: FindCoordinatorResponse = client.request(ApiKey::FindCoordinator, version, &request);
        let ports: Vec<i32> =
            if version < 4 { vec![response.port] } else { response.coordinators.iter().map(|c| c.port).collect() };
        assert_eq!(ports, [local_port], "FindCoordinator v{version}");
    }
    for version in 0..=1 {
        let request = DescribeClusterRequest::default().with_endpoint_type(1);
        let response: DescribeClusterResponse = client.request(ApiKey::DescribeCluster, version, &request);
        let ports: Vec<i32> = response.brokers.iter().map(|b| b.port).collect();
        assert_eq!(ports, [local_port], "DescribeCluster v{version}");
    }
}

#[test]
fn api_versions_are_clamped_to_what_the_sidecar_rewrites() {
    let (_tansu, sidecar) = broker_and_sidecar();
    let mut client = RawClient::connect(&sidecar.bootstrap());
    for version in 0..=3 {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("raw"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let response: ApiVersionsResponse = client.request(ApiKey::ApiVersions, version, &request);
        let max = |key: ApiKey| response.api_keys.iter().find(|a| a.api_key == key as i16).map(|a| a.max_version);
        assert_eq!(response.error_code, 0);
        assert!(max(ApiKey::Produce).unwrap() <= 9, "v{version}");
        assert!(max(ApiKey::Fetch).unwrap() <= 15, "v{version}");
        assert!(max(ApiKey::Metadata).unwrap() <= 13, "v{version}");
        // Not clamped: admin APIs keep the broker's full range.
        assert_eq!(max(ApiKey::CreateTopics), Some(7), "v{version}");
    }
}

#[test]
fn old_versions_kafka_go_sends_pass_through() {
    let (_tansu, sidecar) = broker_and_sidecar();
    let mut client = RawClient::connect(&sidecar.bootstrap());

    // kafka-go's Conn.Controller(): Metadata v1 without asking ApiVersions.
    let metadata: MetadataResponse = client.request(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None));
    assert_eq!(metadata.controller_id.0, 111);
    assert_eq!(metadata.brokers[0].port, sidecar.broker_port_base() as i32 + 111);

    // kafka-go's Conn.CreateTopics(): CreateTopics v0, first for a new topic, then again.
    client.send_bytes(&create_topics_v0(7, "kafka-go-topic")).unwrap();
    assert_eq!(read_topic_errors_v0(&client.recv().unwrap()), (7, vec![("kafka-go-topic".into(), 0)]));
    client.send_bytes(&create_topics_v0(8, "kafka-go-topic")).unwrap();
    assert_eq!(read_topic_errors_v0(&client.recv().unwrap()), (8, vec![("kafka-go-topic".into(), 36)]));
}

#[test]
fn unknown_api_keys_pass_through() {
    let (_tansu, sidecar) = broker_and_sidecar();
    let mut client = RawClient::connect(&sidecar.bootstrap());
    // An api key no broker knows: whatever the broker does (answer or close), the sidecar must
    // neither crash nor hang, and keep serving other clients.
    client.send_bytes(&raw_request(30_000, 0, 5, "raw", &[])).unwrap();
    let _ = client.recv();
    let mut other = RawClient::connect(&sidecar.bootstrap());
    let metadata: MetadataResponse = other.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    assert_eq!(metadata.brokers.len(), 1);
}

#[test]
fn bad_input_closes_only_that_client() {
    let (_tansu, sidecar) = broker_and_sidecar();
    let mut healthy = RawClient::connect(&sidecar.bootstrap());
    let mut check_healthy = || {
        let response: MetadataResponse =
            healthy.request(ApiKey::Metadata, 9, &MetadataRequest::default().with_topics(None));
        assert_eq!(response.brokers.len(), 1);
    };
    check_healthy();

    let tls_client_hello = [0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03];
    let oversized = (200 * 1024 * 1024i32).to_be_bytes();
    let mut garbage = vec![0x7f, 0xff, 0xff, 0xff];
    garbage.extend_from_slice(b"\xde\xad\xbe\xef");
    let header_too_short = [0, 0, 0, 2, 0, 3];
    let bad_inputs: [(&str, &[u8], &str); 4] = [
        ("TLS ClientHello", &tls_client_hello, "TLS handshake received on plaintext listener"),
        ("oversized frame", &oversized, "exceeds the 104857600-byte limit"),
        ("garbage", &garbage, "exceeds the 104857600-byte limit"),
        ("header too short", &header_too_short, "too short for a header"),
    ];
    for (what, bytes, log_line) in bad_inputs {
        let mut bad = RawClient::connect(&sidecar.bootstrap());
        bad.send_bytes(bytes).unwrap();
        assert!(bad.is_closed_by_peer(), "{what}: connection must be closed");
        check_healthy();
        let logs = sidecar.wait_for_log(log_line, Duration::from_secs(5));
        assert!(logs, "{what}: expected log line {log_line:?} in:\n{}", sidecar.logs());
    }

    // A frame cut short by the client closing: nothing to forward, the sidecar stays up.
    let mut truncated = RawClient::connect(&sidecar.bootstrap());
    truncated.send_bytes(&[0, 0, 0, 40, 0, 3, 0, 9]).unwrap();
    drop(truncated);
    check_healthy();
    assert!(sidecar.wait_for_log("connection closed in the middle of a frame", Duration::from_secs(5)));
}

/// A Produce request with acks=0 carrying one record with `value` to partition 0 of `topic`.
fn acks_zero_produce(topic: &'static str, value: &str) -> ProduceRequest {
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(raw::record_batch(value)));
    ProduceRequest::default().with_acks(0).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_data(vec![partition]),
    ])
}

/// A raw client of the sidecar's bootstrap port, after creating `topic` through it.
fn client_with_topic(sidecar: &Sidecar, topic: &str) -> RawClient {
    let mut client = RawClient::connect(&sidecar.bootstrap());
    client.send_bytes(&create_topics_v0(1, topic)).unwrap();
    client.recv().unwrap();
    client
}

#[test]
fn acks_zero_produce_never_pairs_a_stray_answer_with_the_next_request() {
    let (_tansu, sidecar) = broker_and_sidecar();
    let mut client = client_with_topic(&sidecar, "acks0");
    let produce = acks_zero_produce("acks0", "fire-and-forget");
    let started = Instant::now();
    for _ in 0..50 {
        client.send(ApiKey::Produce, 8, &produce);
    }
    // The next answered request must get its own response, not a broker's stray acks=0 answer.
    let metadata_id = client.send(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    let frame = client.recv().unwrap();
    let metadata: MetadataResponse = raw::decode_response(ApiKey::Metadata, 4, metadata_id, &frame);
    assert_eq!(metadata.brokers.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5), "acks=0 produce stalled the connection");
    // Tansu does answer acks=0: the sidecar must have dropped those answers.
    let strays = sidecar.metric("kafka_sidecar_stray_responses_total", &[]);
    assert_eq!(strays, 50.0, "every acks=0 answer is dropped");
}

/// Requests a client pipelines in one write, with unanswered acks=0 produce requests among them
/// (whose stray answers from Tansu the sidecar drops), all get their answers, in order, none
/// held back in a queue while the sidecar waits for more.
#[test]
fn pipelined_requests_are_answered_in_order_and_none_is_held_back() {
    use kafka_sidecar::wire::encode_request;

    let (_tansu, sidecar) = broker_and_sidecar();
    let mut client = client_with_topic(&sidecar, "pipelined");
    let produce = acks_zero_produce("pipelined", "queued");
    for round in 0..3 {
        let mut burst = Vec::new();
        let mut answered = Vec::new();
        for i in 0..200 {
            let correlation_id = round * 1000 + i;
            let frame = if i % 3 == 1 {
                encode_request(ApiKey::Produce, 8, correlation_id, &produce).unwrap()
            } else {
                answered.push(correlation_id);
                encode_request(ApiKey::ApiVersions, 3, correlation_id, &ApiVersionsRequest::default()).unwrap()
            };
            burst.extend_from_slice(&frame);
        }
        let started = Instant::now();
        client.send_bytes(&burst).unwrap();
        for &correlation_id in &answered {
            let frame = client.recv().expect("every answered request is answered");
            let _: ApiVersionsResponse = raw::decode_response(ApiKey::ApiVersions, 3, correlation_id, &frame);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "round {round}: a response was held back");
    }
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let (_tansu, mut sidecar) = broker_and_sidecar();
    let mut client = RawClient::connect(&sidecar.bootstrap());
    let _: MetadataResponse = client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    // A request in flight when SIGTERM arrives still gets its answer.
    let id = client.send(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    sidecar.terminate();
    let frame = client.recv().expect("in-flight response delivered during drain");
    let _: MetadataResponse = raw::decode_response(ApiKey::Metadata, 4, id, &frame);
    let status = sidecar.wait_exit(Duration::from_secs(10)).expect("sidecar exits within the drain deadline");
    assert!(status.success(), "exit status {status:?}");
}

/// Names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/<pid>/task");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn worker_threads_size_the_runtime() {
    let tansu = Tansu::start();
    for (args, workers) in [(&[][..], 1), (&["--worker-threads", "3"][..], 3)] {
        let sidecar = Sidecar::start(&tansu.addr(), args);
        sidecar.kcat_round_trip(&format!("workers-{workers}"), 20);
        let names = thread_names(sidecar.pid());
        let runtime_threads = names.iter().filter(|name| *name == "sidecar-worker").count();
        assert_eq!(runtime_threads, workers, "{args:?}: threads {names:?}");
    }
}
