//! NOT_CONTROLLER detection, request subsetting and response merging for every controller-bound
//! API across the versions a Kafka 3.x broker accepts. Fixtures are encoded with kafka-protocol
//! where it knows the version and by hand where it no longer does (CreateTopics v0–v1,
//! DeleteTopics v0, as kafka-go sends them).

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::layout::{self, ResponseLayout};
use super::plan::{self, NOT_CONTROLLER, Path};
use crate::wire::encode_request;
use crate::wire::{peek_request_header, response_body_offset};

const CORRELATION_ID: i32 = 77;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn topic(text: &str) -> TopicName {
    TopicName(s(text))
}

pub(super) fn request(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
    encode_request(api_key, version, CORRELATION_ID, body).unwrap()
}

pub(super) fn response(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
    crate::wire::encode_response(api_key, version, CORRELATION_ID, body).unwrap()
}

fn finish(mut buf: BytesMut) -> Bytes {
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

fn decode<T: Decodable>(api_key: ApiKey, version: i16, frame: &Bytes, response: bool) -> T {
    let mut buf = frame.slice(4..);
    if response {
        ResponseHeader::decode(&mut buf, api_key.response_header_version(version)).unwrap();
    } else {
        RequestHeader::decode(&mut buf, api_key.request_header_version(version)).unwrap();
    }
    let value = T::decode(&mut buf, version).unwrap();
    assert!(buf.is_empty(), "{api_key:?} v{version}: trailing bytes");
    value
}

pub(super) fn response_layout(api_key: ApiKey, version: i16, frame: &[u8]) -> ResponseLayout {
    let body = response_body_offset(frame, api_key, version).unwrap();
    layout::response(api_key, version, frame, body).unwrap()
}

fn paths(keys: &[&[&str]]) -> HashSet<Path> {
    keys.iter().map(|path| path.iter().map(|k| k.as_bytes().to_vec()).collect()).collect()
}

/// Leaf (key path, error code) pairs of a response, in order.
pub(super) fn leaves(api_key: ApiKey, version: i16, frame: &[u8]) -> Vec<(String, i16)> {
    fn walk(array: &layout::Array, prefix: &str, out: &mut Vec<(String, i16)>) {
        for entry in &array.entries {
            let key = if entry.key.len() == 4 && !prefix.is_empty() {
                i32::from_be_bytes(entry.key[..].try_into().unwrap()).to_string()
            } else {
                String::from_utf8_lossy(&entry.key).into_owned()
            };
            let path = if prefix.is_empty() { key } else { format!("{prefix}/{key}") };
            match &entry.children {
                Some(children) => walk(children, &path, out),
                None => out.push((path, entry.error_code)),
            }
        }
    }
    let mut out = Vec::new();
    if let Some(results) = response_layout(api_key, version, frame).results {
        walk(&results, "", &mut out);
    }
    out
}

/// Runs one retry round on the layouts: the subset request keeps exactly the failed entries,
/// and merging the retry's answers gives `expected` in the client's order.
fn round(
    api_key: ApiKey,
    version: i16,
    request: &Bytes,
    first: &Bytes,
    failed: &[&[&str]],
    retry: &Bytes,
    expected: &[(&str, i16)],
) -> Bytes {
    let first_layout = response_layout(api_key, version, first);
    assert!(plan::has_not_controller(&first_layout), "{api_key:?} v{version}: 41 not detected");
    let failed_paths = plan::not_controller_paths(&first_layout);
    assert_eq!(failed_paths, paths(failed), "{api_key:?} v{version}");

    let header = peek_request_header(request).unwrap();
    let requested = layout::request(api_key, version, request, header.body_offset.unwrap()).unwrap();
    let subset = plan::subset_request(request, &requested, &failed_paths);
    let subset_layout = layout::request(api_key, version, &subset, header.body_offset.unwrap()).unwrap();
    assert_eq!(subset_layout.timeout_ms, requested.timeout_ms, "{api_key:?} v{version}: timeout kept");
    assert_eq!(subset[4..12], request[4..12], "header kept");

    let merged = plan::merge(first, &first_layout, retry, &response_layout(api_key, version, retry));
    let got = leaves(api_key, version, &merged);
    let expected: Vec<(String, i16)> = expected.iter().map(|(k, c)| (k.to_string(), *c)).collect();
    assert_eq!(got, expected, "{api_key:?} v{version}");
    assert_eq!(merged[4..8], first[4..8], "client's correlation id kept");
    subset
}

/// [`round`] over a request with one array of topics: `first` is the first answer, `retry` the
/// controller's answer to the topics that said 41, `expected` what the client gets. Returns the
/// request and the subset re-sent.
fn topics_round(
    api_key: ApiKey,
    version: i16,
    request_of: impl Fn(&[&str]) -> Bytes,
    response_of: impl Fn(&[(&str, i16)]) -> Bytes,
    [first, retry, expected]: [&[(&str, i16)]; 3],
) -> (Bytes, Bytes) {
    let names: Vec<&str> = first.iter().map(|(name, _)| *name).collect();
    let failed: Vec<[&str; 1]> = first.iter().filter(|(_, code)| *code == NOT_CONTROLLER).map(|(n, _)| [*n]).collect();
    let failed: Vec<&[&str]> = failed.iter().map(|path| &path[..]).collect();
    let request = request_of(&names);
    let subset = round(api_key, version, &request, &response_of(first), &failed, &response_of(retry), expected);
    (request, subset)
}

// === CreateTopics ===

pub(super) fn create_topics_request(version: i16, names: &[&str]) -> Bytes {
    if version >= 2 {
        let topics = names
            .iter()
            .map(|n| {
                CreatableTopic::default()
                    .with_name(topic(n))
                    .with_num_partitions(3)
                    .with_replication_factor(1)
                    .with_configs(vec![
                        CreatableTopicConfig::default().with_name(s("retention.ms")).with_value(Some(s("1000"))),
                    ])
            })
            .collect();
        let body = CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(5000).with_validate_only(true);
        return request(ApiKey::CreateTopics, version, &body);
    }
    // v0–v1 by hand: topics[name, num_partitions, replication_factor, assignments[], configs[]],
    // timeout_ms, (v1) validate_only.
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i16(19);
    buf.put_i16(version);
    buf.put_i32(CORRELATION_ID);
    buf.put_i16(8);
    buf.put_slice(b"kafka-go");
    buf.put_i32(names.len() as i32);
    for name in names {
        buf.put_i16(name.len() as i16);
        buf.put_slice(name.as_bytes());
        buf.put_i32(3);
        buf.put_i16(1);
        buf.put_i32(1); // one assignment: partition 0 on brokers [1, 2]
        buf.put_i32(0);
        buf.put_i32(2);
        buf.put_i32(1);
        buf.put_i32(2);
        buf.put_i32(0); // configs
    }
    buf.put_i32(5000);
    if version == 1 {
        buf.put_u8(1);
    }
    finish(buf)
}

pub(super) fn create_topics_response(version: i16, results: &[(&str, i16)]) -> Bytes {
    if version >= 2 {
        let topics = results
            .iter()
            .map(|(n, code)| {
                let result = CreatableTopicResult::default().with_name(topic(n)).with_error_code(*code);
                if version >= 5 && *code == 0 {
                    result.with_num_partitions(3).with_replication_factor(1).with_configs(Some(vec![]))
                } else {
                    result.with_num_partitions(-1).with_replication_factor(-1)
                }
            })
            .collect();
        return response(ApiKey::CreateTopics, version, &CreateTopicsResponse::default().with_topics(topics));
    }
    legacy_results(results, version == 1)
}

#[test]
fn create_topics_every_version() {
    for version in 0..=7 {
        let (request, subset) = topics_round(
            ApiKey::CreateTopics,
            version,
            |names| create_topics_request(version, names),
            |results| create_topics_response(version, results),
            [
                &[("a", 0), ("b", NOT_CONTROLLER), ("c", NOT_CONTROLLER)],
                &[("c", 36), ("b", 0)],
                &[("a", 0), ("b", 0), ("c", 36)],
            ],
        );
        if version >= 2 {
            let original: CreateTopicsRequest = decode(ApiKey::CreateTopics, version, &request, false);
            let cut: CreateTopicsRequest = decode(ApiKey::CreateTopics, version, &subset, false);
            let mut expected = original.clone();
            expected.topics.remove(0);
            assert_eq!(cut, expected, "v{version}: only b and c, validate_only and timeout kept");
        } else {
            assert_eq!(subset, create_topics_request(version, &["b", "c"]), "v{version}");
        }
    }
}

#[test]
fn create_topics_success_is_not_a_retry() {
    for version in [0, 4, 7] {
        let ok = create_topics_response(version, &[("a", 0), ("b", 36)]);
        assert!(!plan::has_not_controller(&response_layout(ApiKey::CreateTopics, version, &ok)));
    }
}

/// A response whose body is only `[name, error_code, (error_message)]`, as CreateTopics v0–v1
/// and DeleteTopics v0 answer, encoded by hand (kafka-protocol no longer knows these versions).
fn legacy_results(results: &[(&str, i16)], error_message: bool) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i32(CORRELATION_ID);
    buf.put_i32(results.len() as i32);
    for (name, code) in results {
        buf.put_i16(name.len() as i16);
        buf.put_slice(name.as_bytes());
        buf.put_i16(*code);
        if error_message {
            buf.put_i16(-1); // null
        }
    }
    finish(buf)
}

// === DeleteTopics ===

fn delete_topics_request(version: i16, names: &[&str]) -> Bytes {
    if version == 0 {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        buf.put_i16(20);
        buf.put_i16(0);
        buf.put_i32(CORRELATION_ID);
        buf.put_i16(-1);
        buf.put_i32(names.len() as i32);
        for name in names {
            buf.put_i16(name.len() as i16);
            buf.put_slice(name.as_bytes());
        }
        buf.put_i32(5000);
        return finish(buf);
    }
    let body = if version >= 6 {
        DeleteTopicsRequest::default().with_topics(
            names
                .iter()
                .map(|n| delete_topics_request::DeleteTopicState::default().with_name(Some(topic(n))))
                .collect(),
        )
    } else {
        DeleteTopicsRequest::default().with_topic_names(names.iter().map(|n| topic(n)).collect())
    };
    request(ApiKey::DeleteTopics, version, &body.with_timeout_ms(5000))
}

fn delete_topics_response(version: i16, results: &[(&str, i16)]) -> Bytes {
    if version == 0 {
        return legacy_results(results, false);
    }
    let responses = results
        .iter()
        .map(|(n, code)| DeletableTopicResult::default().with_name(Some(topic(n))).with_error_code(*code))
        .collect();
    response(ApiKey::DeleteTopics, version, &DeleteTopicsResponse::default().with_responses(responses))
}

#[test]
fn delete_topics_every_version() {
    for version in 0..=6 {
        let (_, subset) = topics_round(
            ApiKey::DeleteTopics,
            version,
            |names| delete_topics_request(version, names),
            |results| delete_topics_response(version, results),
            [
                &[("a", NOT_CONTROLLER), ("b", 3), ("c", NOT_CONTROLLER)],
                &[("a", 0), ("c", 0)],
                &[("a", 0), ("b", 3), ("c", 0)],
            ],
        );
        assert_eq!(subset, delete_topics_request(version, &["a", "c"]), "v{version}");
    }
}

// === CreatePartitions ===

#[test]
fn create_partitions_every_version() {
    for version in 0..=3 {
        let request_of = |names: &[&str]| {
            let topics =
                names.iter().map(|n| CreatePartitionsTopic::default().with_name(topic(n)).with_count(6)).collect();
            let body =
                CreatePartitionsRequest::default().with_topics(topics).with_timeout_ms(5000).with_validate_only(true);
            request(ApiKey::CreatePartitions, version, &body)
        };
        let response_of = |results: &[(&str, i16)]| {
            let results = results
                .iter()
                .map(|(n, code)| CreatePartitionsTopicResult::default().with_name(topic(n)).with_error_code(*code))
                .collect();
            response(ApiKey::CreatePartitions, version, &CreatePartitionsResponse::default().with_results(results))
        };
        let (_, subset) = topics_round(
            ApiKey::CreatePartitions,
            version,
            request_of,
            response_of,
            [&[("a", NOT_CONTROLLER), ("b", 0)], &[("a", 37)], &[("a", 37), ("b", 0)]],
        );
        assert_eq!(subset, request_of(&["a"]), "v{version}");
    }
}

// === ElectLeaders: per partition ===

#[test]
fn elect_leaders_every_version() {
    for version in 0..=2 {
        let request_of = |topics: &[(&str, &[i32])]| {
            let topics = topics
                .iter()
                .map(|(t, ps)| TopicPartitions::default().with_topic(topic(t)).with_partitions(ps.to_vec()))
                .collect();
            let body = ElectLeadersRequest::default().with_topic_partitions(Some(topics)).with_timeout_ms(5000);
            request(ApiKey::ElectLeaders, version, &body)
        };
        let response_of = |topics: &[(&str, &[(i32, i16)])]| {
            let results = topics
                .iter()
                .map(|(t, ps)| {
                    ReplicaElectionResult::default().with_topic(topic(t)).with_partition_result(
                        ps.iter()
                            .map(|(p, code)| PartitionResult::default().with_partition_id(*p).with_error_code(*code))
                            .collect(),
                    )
                })
                .collect();
            response(
                ApiKey::ElectLeaders,
                version,
                &ElectLeadersResponse::default().with_replica_election_results(results),
            )
        };
        let partition = |p: i32| p.to_be_bytes().iter().map(|b| *b as char).collect::<String>();
        let p1 = partition(1);
        let subset = round(
            ApiKey::ElectLeaders,
            version,
            &request_of(&[("x", &[0, 1]), ("y", &[0])]),
            &response_of(&[("x", &[(0, 0), (1, NOT_CONTROLLER)]), ("y", &[(0, 0)])]),
            &[&["x", &p1]],
            &response_of(&[("x", &[(1, 0)])]),
            &[("x/0", 0), ("x/1", 0), ("y/0", 0)],
        );
        assert_eq!(subset, request_of(&[("x", &[1])]), "v{version}: only x/1 re-sent");
    }
}

// === AlterUserScramCredentials: per user, across two arrays ===

#[test]
fn alter_user_scram_credentials_per_user() {
    let request_of = |deleted: &[&str], upserted: &[&str]| {
        let body = AlterUserScramCredentialsRequest::default()
            .with_deletions(
                deleted.iter().map(|u| ScramCredentialDeletion::default().with_name(s(u)).with_mechanism(1)).collect(),
            )
            .with_upsertions(
                upserted
                    .iter()
                    .map(|u| {
                        ScramCredentialUpsertion::default()
                            .with_name(s(u))
                            .with_mechanism(2)
                            .with_iterations(8192)
                            .with_salt(Bytes::from_static(b"salt"))
                            .with_salted_password(Bytes::from_static(b"secret"))
                    })
                    .collect(),
            );
        request(ApiKey::AlterUserScramCredentials, 0, &body)
    };
    let response_of = |results: &[(&str, i16)]| {
        let results = results
            .iter()
            .map(|(u, code)| AlterUserScramCredentialsResult::default().with_user(s(u)).with_error_code(*code))
            .collect();
        response(
            ApiKey::AlterUserScramCredentials,
            0,
            &AlterUserScramCredentialsResponse::default().with_results(results),
        )
    };
    let subset = round(
        ApiKey::AlterUserScramCredentials,
        0,
        &request_of(&["alice", "bob"], &["carol", "alice"]),
        &response_of(&[("alice", NOT_CONTROLLER), ("bob", 0), ("carol", NOT_CONTROLLER)]),
        &[&["alice"], &["carol"]],
        &response_of(&[("alice", 0), ("carol", 0)]),
        &[("alice", 0), ("bob", 0), ("carol", 0)],
    );
    assert_eq!(subset, request_of(&["alice"], &["carol", "alice"]));
}
