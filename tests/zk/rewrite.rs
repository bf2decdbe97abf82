//! Rewrites Tansu's responses so that clients see the fixture's cluster: N brokers (the front
//! ends, ids 1..=N on 127.0.0.1) and the controller the brokers currently report.
//!
//! - Metadata: brokers → front ends, `controller_id` → reported controller, every partition with
//!   a leader → leader `(partition % N) + 1`, replicas and ISR all N, no offline replicas.
//! - DescribeCluster: brokers → front ends, `controller_id` → reported controller.
//! - FindCoordinator: every coordinator found → node 1 (v0–3 single, v4+ batched).
//! - CreateTopics (v2+, from the controller): topics whose names Kafka refuses get
//!   INVALID_TOPIC_EXCEPTION (17), as a real controller validates them and Tansu does not.
//! - ApiVersions: CreatePartitions v0–3 is added (the controller front end answers it itself);
//!   a reply carrying an error (e.g. UNSUPPORTED_VERSION, laid out as v0) passes unchanged.
//!
//! Responses are decoded and re-encoded with the request's version; anything else passes as is.

use anyhow::{Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsResponse, DescribeClusterResponse, FindCoordinatorResponse,
    MetadataResponse, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::wire::{Reader, RequestHead, encode_response};

const HOST: &str = "127.0.0.1";

/// Versions of CreatePartitions the fixture advertises and answers.
const CREATE_PARTITIONS_VERSIONS: (i16, i16) = (0, 3);

/// The cluster as the fixture presents it at the time of a response.
pub struct Advertised<'a> {
    /// Front-end ports; node id `i + 1` listens on `ports[i]`.
    pub ports: &'a [u16],
    /// The controller id brokers report now.
    pub controller: i32,
}

impl Advertised<'_> {
    fn node_ids(&self) -> impl Iterator<Item = (BrokerId, i32)> + '_ {
        self.ports.iter().enumerate().map(|(i, &port)| (BrokerId(i as i32 + 1), i32::from(port)))
    }

    fn all_nodes(&self) -> Vec<BrokerId> {
        self.node_ids().map(|(id, _)| id).collect()
    }

    fn leader_of(&self, partition: i32) -> BrokerId {
        BrokerId(partition.rem_euclid(self.ports.len() as i32) + 1)
    }
}

/// The response to `head` as clients of the fixture see it.
pub fn response(head: RequestHead, frame: Bytes, cluster: &Advertised<'_>) -> Result<Bytes> {
    let Some(key) = head.key() else { return Ok(frame) };
    match key {
        ApiKey::Metadata => edit(key, head.version, &frame, |r| metadata(r, cluster)),
        ApiKey::DescribeCluster => edit(key, head.version, &frame, |r| describe_cluster(r, cluster)),
        ApiKey::FindCoordinator => edit(key, head.version, &frame, |r| find_coordinator(r, head.version, cluster)),
        ApiKey::CreateTopics if head.version >= 2 => edit(key, head.version, &frame, refuse_invalid_topic_names),
        ApiKey::ApiVersions if api_versions_failed(&frame)? => Ok(frame),
        ApiKey::ApiVersions => edit(key, head.version, &frame, api_versions),
        _ => Ok(frame),
    }
}

/// Decodes a response, applies `change` and encodes it again with the same version.
fn edit<R: Decodable + Encodable>(
    key: ApiKey,
    version: i16,
    frame: &Bytes,
    change: impl FnOnce(&mut R),
) -> Result<Bytes> {
    let mut buf = frame.clone();
    let header = ResponseHeader::decode(&mut buf, key.response_header_version(version)).context("response header")?;
    let mut body = R::decode(&mut buf, version).with_context(|| format!("decode {key:?} v{version} response"))?;
    change(&mut body);
    encode_response(key, version, header.correlation_id, &body)
}

fn metadata(response: &mut MetadataResponse, cluster: &Advertised<'_>) {
    response.brokers = cluster
        .node_ids()
        .map(|(id, port)| {
            MetadataResponseBroker::default()
                .with_node_id(id)
                .with_host(StrBytes::from_static_str(HOST))
                .with_port(port)
        })
        .collect();
    response.controller_id = BrokerId(cluster.controller);
    let partitions = response.topics.iter_mut().flat_map(|topic| topic.partitions.iter_mut());
    for partition in partitions.filter(|p| p.leader_id.0 >= 0) {
        partition.leader_id = cluster.leader_of(partition.partition_index);
        partition.replica_nodes = cluster.all_nodes();
        partition.isr_nodes = cluster.all_nodes();
        partition.offline_replicas.clear();
    }
}

fn describe_cluster(response: &mut DescribeClusterResponse, cluster: &Advertised<'_>) {
    response.brokers = cluster
        .node_ids()
        .map(|(id, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(id)
                .with_host(StrBytes::from_static_str(HOST))
                .with_port(port)
        })
        .collect();
    response.controller_id = BrokerId(cluster.controller);
}

fn find_coordinator(response: &mut FindCoordinatorResponse, version: i16, cluster: &Advertised<'_>) {
    let (node_id, port) = cluster.node_ids().next().expect("the fixture has brokers");
    let host = StrBytes::from_static_str(HOST);
    if version < 4 {
        if response.error_code == 0 {
            (response.node_id, response.host, response.port) = (node_id, host, port);
        }
        return;
    }
    for coordinator in response.coordinators.iter_mut().filter(|c| c.error_code == 0) {
        (coordinator.node_id, coordinator.host, coordinator.port) = (node_id, host.clone(), port);
    }
}

/// Kafka's topic name rule: 1–249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
fn is_valid_topic_name(name: &str) -> bool {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty() && name.len() <= 249 && name != "." && name != ".." && name.chars().all(legal)
}

fn refuse_invalid_topic_names(response: &mut CreateTopicsResponse) {
    const INVALID_TOPIC_EXCEPTION: i16 = 17;
    for topic in response.topics.iter_mut().filter(|t| !is_valid_topic_name(&t.name.0)) {
        topic.error_code = INVALID_TOPIC_EXCEPTION;
        topic.error_message = Some(StrBytes::from_string(format!("Topic name {:?} is illegal", topic.name.0.as_str())));
        topic.num_partitions = -1;
        topic.replication_factor = -1;
        topic.configs = None;
    }
}

/// Whether an ApiVersions reply carries an error (its header is always v0: correlation id only).
fn api_versions_failed(frame: &[u8]) -> Result<bool> {
    let mut reader = Reader::new(frame);
    reader.i32()?; // correlation id
    Ok(reader.i16()? != 0)
}

fn api_versions(response: &mut ApiVersionsResponse) {
    let key = ApiKey::CreatePartitions as i16;
    if response.api_keys.iter().any(|api| api.api_key == key) {
        return;
    }
    let (min, max) = CREATE_PARTITIONS_VERSIONS;
    response.api_keys.push(ApiVersion::default().with_api_key(key).with_min_version(min).with_max_version(max));
}
