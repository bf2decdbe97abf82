//! Series that exist from the first scrape, and label cardinality under many topics and client
//! ids.

use std::collections::BTreeSet;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse,
};
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::{Sidecar, Tansu};

use super::{Sample, new_topic, parse_samples, request_as, scrape, sum_of, topic_name, wait_for_metrics};

/// Label values known in advance, each a series at 0 from the first scrape (docs/metrics.md).
const RETRIED_APIS: [&str; 8] = [
    "CreateTopics",
    "DeleteTopics",
    "CreatePartitions",
    "ElectLeaders",
    "AlterUserScramCredentials",
    "AlterPartitionReassignments",
    "ListPartitionReassignments",
    "UpdateFeatures",
];
const RETRY_OUTCOMES: [&str; 3] = ["recovered", "exhausted", "lost"];
const PROTOCOL_ERROR_KINDS: [&str; 11] = [
    "tls_on_plaintext",
    "http_on_kafka",
    "frame_too_large",
    "buffered_frame_too_large",
    "negative_length",
    "truncated_header",
    "truncated_frame",
    "tls_handshake",
    "bad_request_header",
    "bad_request_body",
    "bad_response_body",
];
const DISCONNECT_CAUSES: [&str; 8] = [
    "client_closed",
    "broker_closed",
    "idle",
    "protocol_error",
    "upstream_unavailable",
    "retry_lost",
    "shutdown",
    "unauthenticated",
];
const CLIENT_AUTH_REFUSALS: [&str; 9] = [
    "tls_no_certificate",
    "tls_untrusted_certificate",
    "tls_invalid_certificate",
    "tls_handshake",
    "sasl_unknown_user",
    "sasl_wrong_password",
    "sasl_unsupported_mechanism",
    "sasl_malformed",
    "unauthenticated_request",
];

/// A fresh sidecar's first scrape, before any client request (its only clients are the start-up
/// probes of the test harness) and with no broker to reach, already has every series whose labels
/// form a closed set, at 0: `rate()` sees the first retry, and an alert can tell "none" from "not
/// scraped". Node-labelled series are not there yet.
#[test]
fn closed_label_sets_are_exported_at_zero_from_the_first_scrape() {
    let nowhere = support::free_port_base(1);
    let sidecar = Sidecar::start(&format!("127.0.0.1:{nowhere}"), &[]);
    let text = scrape(&sidecar);
    let samples = parse_samples(&text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let found: Vec<&Sample> = samples.iter().filter(|s| s.matches(name, labels)).collect();
        assert_eq!(found.len(), 1, "one series {name} {labels:?} in the first scrape:\n{text}");
        found[0].value
    };

    let line = "kafka_sidecar_not_controller_retries_total{api=\"CreateTopics\",outcome=\"recovered\"} 0";
    assert!(text.lines().any(|l| l == line), "no `{line}` in the first scrape:\n{text}");
    for api in RETRIED_APIS {
        for outcome in RETRY_OUTCOMES {
            assert_eq!(value("kafka_sidecar_not_controller_retries_total", &[("api", api), ("outcome", outcome)]), 0.0);
        }
    }
    for kind in PROTOCOL_ERROR_KINDS {
        assert_eq!(value("kafka_sidecar_protocol_errors_total", &[("kind", kind)]), 0.0, "kind {kind}");
    }
    let kinds = samples.iter().filter(|s| s.name == "kafka_sidecar_protocol_errors_total").count();
    assert_eq!(kinds, PROTOCOL_ERROR_KINDS.len(), "no other protocol error kind:\n{text}");
    for cause in DISCONNECT_CAUSES {
        let count = value("kafka_sidecar_disconnects_total", &[("cause", cause)]);
        // The harness's readiness probe may have ended already, for want of a broker.
        if !["client_closed", "upstream_unavailable"].contains(&cause) {
            assert_eq!(count, 0.0, "cause {cause}");
        }
    }
    for direction in ["client_to_sidecar", "sidecar_to_broker", "broker_to_sidecar", "sidecar_to_client"] {
        assert_eq!(value("kafka_sidecar_bytes_total", &[("direction", direction)]), 0.0, "direction {direction}");
    }
    for name in [
        "kafka_sidecar_stray_responses_total",
        "kafka_sidecar_upstream_timeouts_total",
        "kafka_sidecar_controller_changes_total",
        "kafka_sidecar_broker_listeners",
        "kafka_sidecar_insecure_remote_clients",
    ] {
        assert_eq!(value(name, &[]), 0.0, "{name}");
    }
    for cause in CLIENT_AUTH_REFUSALS {
        assert_eq!(value("kafka_sidecar_client_auth_refusals_total", &[("cause", cause)]), 0.0, "cause {cause}");
    }
    assert_eq!(value("kafka_sidecar_metadata_refreshes_total", &[("result", "ok")]), 0.0);
    value("kafka_sidecar_metadata_refreshes_total", &[("result", "error")]);
    value("kafka_sidecar_client_connections_total", &[]);

    // Labels learned at run time stay lazy: no request has come, no controller is known.
    for lazy in ["kafka_sidecar_requests_total", "kafka_sidecar_response_errors_total", "kafka_sidecar_controller_id"] {
        assert!(samples.iter().all(|s| s.name != lazy), "{lazy} before any request:\n{text}");
    }
    let zeros = samples.iter().filter(|s| s.value == 0.0 && !s.name.contains("_duration_")).count();
    eprintln!("[observability] first scrape: {} series, {zeros} of them (histograms aside) at 0", samples.len());
}

/// One client id's work: create `topics` through the bootstrap port, ask Metadata for them, and
/// produce one record to each of the first two through the broker port of node 111.
fn touch_topics(sidecar: &Sidecar, client_id: &str, topics: &[String]) {
    let mut bootstrap = RawClient::connect(&sidecar.bootstrap());
    let create = CreateTopicsRequest::default()
        .with_topics(topics.iter().map(|t| new_topic(t)).collect())
        .with_timeout_ms(10_000);
    let created: CreateTopicsResponse = request_as(&mut bootstrap, client_id, ApiKey::CreateTopics, 4, &create);
    assert!(created.topics.iter().all(|t| t.error_code == 0), "{client_id}: create failed: {created:?}");

    let wanted = topics.iter().map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t)))).collect();
    let metadata = MetadataRequest::default().with_topics(Some(wanted)).with_allow_auto_topic_creation(false);
    let answer: MetadataResponse = request_as(&mut bootstrap, client_id, ApiKey::Metadata, 7, &metadata);
    assert_eq!(answer.topics.len(), topics.len(), "{client_id}: metadata {answer:?}");
    assert!(answer.topics.iter().all(|t| t.error_code == 0), "{client_id}: metadata errors {answer:?}");

    let mut broker = RawClient::connect(&sidecar.broker_addr(support::TANSU_NODE_ID));
    for topic in topics.iter().take(2) {
        let produce = ProduceRequest::default().with_acks(1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(raw::record_batch(topic))),
            ]),
        ]);
        let produced: ProduceResponse = request_as(&mut broker, client_id, ApiKey::Produce, 7, &produce);
        let code = produced.responses[0].partition_responses[0].error_code;
        assert_eq!(code, 0, "{client_id}: produce to {topic}: {produced:?}");
    }
}

/// The series of /metrics once every client connection has closed.
fn settled_series(sidecar: &Sidecar) -> (BTreeSet<String>, String) {
    let text = wait_for_metrics(sidecar, "client connections to close", Duration::from_secs(15), |samples| {
        sum_of(samples, "kafka_sidecar_client_connections", &[]) == 0.0
    });
    (parse_samples(&text).iter().map(Sample::key).collect(), text)
}

#[test]
fn topics_and_client_ids_never_become_series() {
    const CLIENT_IDS: usize = 50;
    const TOPICS: usize = 500;
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);

    // Warm-up: the same APIs through the same ports, one client id, two topics.
    let warm_topics = vec!["obs-warm-topic-a".to_owned(), "obs-warm-topic-b".to_owned()];
    touch_topics(&sidecar, "obs-warm-client", &warm_topics);
    let (before, _) = settled_series(&sidecar);

    let topics: Vec<String> = (0..TOPICS).map(|i| format!("obs-card-topic-{i:03}")).collect();
    let client_ids: Vec<String> = (0..CLIENT_IDS).map(|i| format!("obs-card-client-{i:02}")).collect();
    for (client_id, batch) in client_ids.iter().zip(topics.chunks(TOPICS / CLIENT_IDS)) {
        touch_topics(&sidecar, client_id, batch);
    }
    let (after, text) = settled_series(&sidecar);
    let samples = parse_samples(&text);
    assert_eq!(
        sum_of(&samples, "kafka_sidecar_requests_total", &[("api", "CreateTopics")]),
        (1 + CLIENT_IDS) as f64,
        "every request was counted"
    );

    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "series added by {TOPICS} topics and {CLIENT_IDS} client ids: {added:#?}");
    assert_eq!(after.len(), before.len(), "series count changed");
    for name in topics.iter().chain(&client_ids).chain(&warm_topics).map(String::as_str).chain(["obs-warm-client"]) {
        let line = text.lines().find(|line| line.contains(name));
        assert!(line.is_none(), "{name} leaked into /metrics: {line:?}");
    }
    assert!(!text.contains("obs-"), "a topic or client id leaked into /metrics");
    eprintln!("[observability] {} series before and after {TOPICS} topics / {CLIENT_IDS} client ids", after.len());
}
