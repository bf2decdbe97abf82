//! Answers the fixture's front ends give themselves instead of passing a request on: the
//! NOT_CONTROLLER (41) replies of a broker that is not the controller, and the controller's own
//! CreatePartitions reply (Tansu has no CreatePartitions).
//!
//! NOT_CONTROLLER goes where a ZooKeeper-mode Kafka broker puts it:
//! - CreateTopics, DeleteTopics, CreatePartitions, AlterUserScramCredentials: one entry per topic
//!   or user (these responses have no top-level error);
//! - ElectLeaders: one entry per partition, top-level NONE (a request for all partitions, whose
//!   partitions the fixture does not know, gets a top-level 41 from v1 on and no entries);
//! - AlterPartitionReassignments, ListPartitionReassignments: the top-level error only;
//! - UpdateFeatures: the top-level error, plus one per feature in versions with results (0–1).
//!
//! Every error entry carries Kafka's standard message. [`Answer::not_controller_entries`] counts
//! the 41 codes a reply holds, top-level ones included.

use anyhow::{Result, bail};
use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsResponse, ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, ElectLeadersRequest, ElectLeadersResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, UpdateFeaturesRequest,
    UpdateFeaturesResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::legacy;
use super::wire::{RequestHead, decode_request, encode_response};

pub const NONE: i16 = 0;
pub const INVALID_PARTITIONS: i16 = 37;
pub const NOT_CONTROLLER: i16 = 41;

/// The APIs only the controller serves in ZooKeeper mode.
pub const CONTROLLER_ONLY: [ApiKey; 8] = [
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::ElectLeaders,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::UpdateFeatures,
    ApiKey::AlterUserScramCredentials,
];

/// A reply frame (without length prefix) and how many NOT_CONTROLLER codes it holds.
pub struct Answer {
    pub frame: Bytes,
    pub not_controller_entries: u64,
}

/// Kafka's message for an error code the fixture sends; `None` for NONE.
pub fn error_message(code: i16) -> Option<StrBytes> {
    let text = match code {
        NONE => return None,
        NOT_CONTROLLER => "This is not the correct controller for this cluster.",
        INVALID_PARTITIONS => "Number of partitions must be larger than 0.",
        _ => "Error.",
    };
    Some(StrBytes::from_static_str(text))
}

/// Encodes `body` as the reply to `head`, holding `entries` NOT_CONTROLLER codes.
fn answer(key: ApiKey, head: RequestHead, body: &impl Encodable, entries: usize) -> Result<Answer> {
    let frame = encode_response(key, head.version, head.correlation_id, body)?;
    Ok(Answer { frame, not_controller_entries: entries as u64 })
}

/// The NOT_CONTROLLER reply of a non-controller broker to a controller-only request.
pub fn not_controller(key: ApiKey, head: RequestHead, frame: &Bytes) -> Result<Answer> {
    match key {
        ApiKey::CreateTopics if head.version < 2 => legacy::create_topics_not_controller(head, frame),
        ApiKey::CreateTopics => create_topics(head, frame),
        ApiKey::DeleteTopics if head.version < 1 => legacy::delete_topics_not_controller(head, frame),
        ApiKey::DeleteTopics => delete_topics(head, frame),
        ApiKey::CreatePartitions => create_partitions(head, frame, |_| NOT_CONTROLLER),
        ApiKey::ElectLeaders => elect_leaders(head, frame),
        ApiKey::AlterPartitionReassignments => alter_partition_reassignments(head, frame),
        ApiKey::ListPartitionReassignments => list_partition_reassignments(head, frame),
        ApiKey::UpdateFeatures => update_features(head, frame),
        ApiKey::AlterUserScramCredentials => alter_user_scram_credentials(head, frame),
        other => bail!("{other:?} is not a controller-only API"),
    }
}

/// The controller's own CreatePartitions reply: NONE for every topic, INVALID_PARTITIONS for a
/// `count` ≤ 0. Nothing is checked against the topic (its existence, its current partitions) and
/// nothing changes in Tansu.
pub fn controller_create_partitions(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    create_partitions(head, frame, |count| if count <= 0 { INVALID_PARTITIONS } else { NONE })
}

fn create_topics(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let request: CreateTopicsRequest = decode_request(ApiKey::CreateTopics, head.version, frame)?;
    let topics: Vec<_> = request
        .topics
        .into_iter()
        .map(|topic| {
            CreatableTopicResult::default()
                .with_name(topic.name)
                .with_error_code(NOT_CONTROLLER)
                .with_error_message(error_message(NOT_CONTROLLER))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(None)
        })
        .collect();
    let entries = topics.len();
    answer(ApiKey::CreateTopics, head, &CreateTopicsResponse::default().with_topics(topics), entries)
}

fn delete_topics(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let request: DeleteTopicsRequest = decode_request(ApiKey::DeleteTopics, head.version, frame)?;
    let by_name = request.topic_names.into_iter().map(|name| DeletableTopicResult::default().with_name(Some(name)));
    let by_state = request
        .topics
        .into_iter()
        .map(|topic| DeletableTopicResult::default().with_name(topic.name).with_topic_id(topic.topic_id));
    let responses: Vec<_> = by_name
        .chain(by_state)
        .map(|result| result.with_error_code(NOT_CONTROLLER).with_error_message(error_message(NOT_CONTROLLER)))
        .collect();
    let entries = responses.len();
    answer(ApiKey::DeleteTopics, head, &DeleteTopicsResponse::default().with_responses(responses), entries)
}

/// A CreatePartitions reply with one result per topic, its code chosen from the requested count.
fn create_partitions(head: RequestHead, frame: &Bytes, code_for_count: impl Fn(i32) -> i16) -> Result<Answer> {
    let request: CreatePartitionsRequest = decode_request(ApiKey::CreatePartitions, head.version, frame)?;
    let results: Vec<_> = request
        .topics
        .into_iter()
        .map(|topic| {
            let code = code_for_count(topic.count);
            CreatePartitionsTopicResult::default()
                .with_name(topic.name)
                .with_error_code(code)
                .with_error_message(error_message(code))
        })
        .collect();
    let entries = results.iter().filter(|r| r.error_code == NOT_CONTROLLER).count();
    answer(ApiKey::CreatePartitions, head, &CreatePartitionsResponse::default().with_results(results), entries)
}

fn elect_leaders(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let request: ElectLeadersRequest = decode_request(ApiKey::ElectLeaders, head.version, frame)?;
    let Some(topics) = request.topic_partitions else {
        let top_level = if head.version >= 1 { NOT_CONTROLLER } else { NONE };
        let response = ElectLeadersResponse::default().with_error_code(top_level);
        return answer(ApiKey::ElectLeaders, head, &response, usize::from(top_level == NOT_CONTROLLER));
    };
    let results: Vec<_> = topics
        .into_iter()
        .map(|topic| {
            let partitions = topic.partitions.into_iter().map(|partition| {
                PartitionResult::default()
                    .with_partition_id(partition)
                    .with_error_code(NOT_CONTROLLER)
                    .with_error_message(error_message(NOT_CONTROLLER))
            });
            ReplicaElectionResult::default().with_topic(topic.topic).with_partition_result(partitions.collect())
        })
        .collect();
    let entries = results.iter().map(|r| r.partition_result.len()).sum();
    let response = ElectLeadersResponse::default().with_error_code(NONE).with_replica_election_results(results);
    answer(ApiKey::ElectLeaders, head, &response, entries)
}

fn alter_partition_reassignments(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let _: AlterPartitionReassignmentsRequest =
        decode_request(ApiKey::AlterPartitionReassignments, head.version, frame)?;
    let response = AlterPartitionReassignmentsResponse::default()
        .with_error_code(NOT_CONTROLLER)
        .with_error_message(error_message(NOT_CONTROLLER));
    answer(ApiKey::AlterPartitionReassignments, head, &response, 1)
}

fn list_partition_reassignments(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let _: ListPartitionReassignmentsRequest = decode_request(ApiKey::ListPartitionReassignments, head.version, frame)?;
    let response = ListPartitionReassignmentsResponse::default()
        .with_error_code(NOT_CONTROLLER)
        .with_error_message(error_message(NOT_CONTROLLER));
    answer(ApiKey::ListPartitionReassignments, head, &response, 1)
}

fn update_features(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let request: UpdateFeaturesRequest = decode_request(ApiKey::UpdateFeatures, head.version, frame)?;
    // Version 2 dropped the per-feature results.
    let results: Vec<_> = if head.version <= 1 {
        let results = request.feature_updates.into_iter().map(|update| {
            UpdatableFeatureResult::default()
                .with_feature(update.feature)
                .with_error_code(NOT_CONTROLLER)
                .with_error_message(error_message(NOT_CONTROLLER))
        });
        results.collect()
    } else {
        Vec::new()
    };
    let entries = 1 + results.len();
    let response = UpdateFeaturesResponse::default()
        .with_error_code(NOT_CONTROLLER)
        .with_error_message(error_message(NOT_CONTROLLER))
        .with_results(results);
    answer(ApiKey::UpdateFeatures, head, &response, entries)
}

fn alter_user_scram_credentials(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let request: AlterUserScramCredentialsRequest =
        decode_request(ApiKey::AlterUserScramCredentials, head.version, frame)?;
    let names = request.deletions.into_iter().map(|d| d.name).chain(request.upsertions.into_iter().map(|u| u.name));
    let mut users: Vec<StrBytes> = Vec::new();
    for name in names {
        if !users.contains(&name) {
            users.push(name);
        }
    }
    let results: Vec<_> = users
        .into_iter()
        .map(|user| {
            AlterUserScramCredentialsResult::default()
                .with_user(user)
                .with_error_code(NOT_CONTROLLER)
                .with_error_message(error_message(NOT_CONTROLLER))
        })
        .collect();
    let entries = results.len();
    let response = AlterUserScramCredentialsResponse::default().with_results(results);
    answer(ApiKey::AlterUserScramCredentials, head, &response, entries)
}
