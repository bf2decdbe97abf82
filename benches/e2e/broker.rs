//! A broker stand-in for the end-to-end benchmark: answers from memory, at once, so that the
//! proxy in front of it is what limits throughput.
//!
//! It serves one node (`--node-id`) with any number of listeners, each advertising its own
//! address in Metadata and FindCoordinator (`--listen 127.0.0.1:9092=127.0.0.1:19092` listens on
//! 9092 and tells clients to come back on 19092, where an L4 proxy forwards to it). Every topic
//! exists with one partition led by this node. Produce is acknowledged with a running offset per
//! partition; Fetch returns one record batch from the requested offset on, as large as the
//! request allows (up to 1 MiB), of values whose size ends the topic name (`bench-100`: 100 B;
//! otherwise 1 KiB). It never stores what it is sent.
//!
//! Large answers on demand: a Fetch whose first topic is named `answer-<bytes>`
//! (`answer-52428800`) is answered, whatever its limits and offsets, with a frame of exactly that
//! many bytes (length prefix excluded): that topic, partition 0, one record batch of about 1 KiB
//! records from offset 0. The frame is built once per size and version and shared by every such
//! answer, which goes to the socket without a copy; frames up to `--max-frame-bytes` are read
//! and answered (default 100 MiB, as the sidecar's).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_sidecar::wire::{FrameCodec, RequestHeader, peek_request_header};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::common;

/// Largest record batch a Fetch answer carries.
const MAX_FETCH_BYTES: usize = 1024 * 1024;
/// Size of a record batch header (magic 2) before the first record.
const BATCH_HEADER: usize = 61;
const UNSUPPORTED_VERSION: i16 = 35;

/// The APIs and versions the stand-in answers. Fetch stops at v12 (v13+ names topics by id),
/// Produce at v9, below the versions whose responses carry KIP-951 endpoints.
const API_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 4, 12),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `LISTEN_ADDR[=ADVERTISED_ADDR]`; repeat for more listeners. Without `=`, a listener
    /// advertises the address it listens on.
    #[arg(long = "listen", required = true)]
    listeners: Vec<String>,
    /// The node id this broker reports.
    #[arg(long, default_value_t = 1)]
    node_id: i32,
    /// Largest frame read or answered (length prefix excluded).
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    max_frame_bytes: usize,
}

/// Where clients are told to find this broker, per listener.
#[derive(Debug, Clone)]
struct Advertised {
    host: StrBytes,
    port: i32,
}

#[derive(Debug, Default)]
struct State {
    node_id: i32,
    max_frame_bytes: usize,
    /// Next offset of each partition produced to.
    offsets: Mutex<HashMap<(TopicName, i32), i64>>,
    /// Record batch templates by (value size, record count).
    batches: Mutex<HashMap<(usize, usize), Bytes>>,
    /// `answer-<bytes>` Fetch answers by (version, frame bytes), correlation id 0.
    large_answers: Mutex<HashMap<(i16, usize), Bytes>>,
}

/// An answer: a whole frame, or a large Fetch answer as its length and correlation id followed by
/// the rest of a frame shared by every answer of its size.
enum Answer {
    Frame(Bytes),
    Shared { head: Bytes, rest: Bytes },
}

pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let state =
            Arc::new(State { node_id: args.node_id, max_frame_bytes: args.max_frame_bytes, ..State::default() });
        let mut listening = Vec::new();
        for spec in &args.listeners {
            let (listen, advertise) = spec.split_once('=').unwrap_or((spec, spec));
            let advertise: SocketAddr = advertise.parse().with_context(|| format!("advertised address {advertise}"))?;
            let listener = TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
            let advertised =
                Advertised { host: StrBytes::from_string(advertise.ip().to_string()), port: advertise.port().into() };
            listening.push(format!("\"{}\"", listener.local_addr()?));
            tokio::spawn(accept(listener, state.clone(), advertised));
        }
        println!("{{\"listening\": [{}], \"node_id\": {}}}", listening.join(", "), args.node_id);
        std::future::pending::<Result<()>>().await
    })
}

async fn accept(listener: TcpListener, state: Arc<State>, advertised: Advertised) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (state, advertised) = (state.clone(), advertised.clone());
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, &state, &advertised).await {
                        eprintln!("broker: connection from {peer}: {error:#}");
                    }
                });
            }
            Err(error) => eprintln!("broker: accept: {error}"),
        }
    }
}

async fn serve(stream: TcpStream, state: &State, advertised: &Advertised) -> Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut requests = FramedRead::new(read, FrameCodec::requests(state.max_frame_bytes));
    let mut responses = FramedWrite::new(write, FrameCodec::responses(state.max_frame_bytes));
    while let Some(frame) = requests.next().await {
        let frame = frame?;
        let header = peek_request_header(&frame)?;
        match state.answer(&header, &frame, advertised)? {
            Some(Answer::Frame(response)) => responses.feed(response).await?,
            Some(Answer::Shared { head, rest }) => {
                // Past FramedWrite, which would copy it into its buffer.
                responses.flush().await?;
                let socket = responses.get_mut();
                socket.write_all(&head).await?;
                socket.write_all(&rest).await?;
            }
            None => {}
        }
        // Answers to pipelined requests go out together.
        if !holds_whole_frame(requests.read_buffer()) {
            responses.flush().await?;
        }
    }
    Ok(())
}

fn holds_whole_frame(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf.len() >= 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

impl State {
    fn answer(&self, header: &RequestHeader, frame: &Bytes, advertised: &Advertised) -> Result<Option<Answer>> {
        let (version, correlation_id) = (header.api_version, header.correlation_id);
        let Ok(key) = ApiKey::try_from(header.api_key) else { bail!("unknown api key {}", header.api_key) };
        let Some(&(_, min, max)) = API_VERSIONS.iter().find(|(k, _, _)| *k == key) else {
            bail!("{key:?} is not served by the stand-in");
        };
        let mut body = frame.slice(header.body_offset.context("request header")?..);
        if key == ApiKey::ApiVersions {
            return Ok(Some(Answer::Frame(api_versions(version, correlation_id))));
        }
        if version < min || version > max {
            bail!("{key:?} v{version} not offered (v{min}-v{max})");
        }
        let response = match key {
            ApiKey::Metadata => {
                let request = MetadataRequest::decode(&mut body, version)?;
                let topics = request.topics.unwrap_or_default().into_iter().filter_map(|t| t.name).collect();
                common::response_frame(key, version, correlation_id, &self.metadata(topics, advertised))
            }
            ApiKey::Produce => {
                let request = ProduceRequest::decode(&mut body, version)?;
                let response = self.produce(&request);
                if request.acks == 0 {
                    return Ok(None);
                }
                common::response_frame(key, version, correlation_id, &response)
            }
            ApiKey::Fetch => {
                let request = FetchRequest::decode(&mut body, version)?;
                if let Some(size) = request.topics.first().and_then(|topic| answer_size(&topic.topic)) {
                    return self.large_answer(version, correlation_id, size).map(Some);
                }
                common::response_frame(key, version, correlation_id, &self.fetch(&request))
            }
            ApiKey::FindCoordinator => {
                let request = FindCoordinatorRequest::decode(&mut body, version)?;
                let response = self.find_coordinator(version, &request, advertised);
                common::response_frame(key, version, correlation_id, &response)
            }
            ApiKey::ListOffsets => {
                let request = ListOffsetsRequest::decode(&mut body, version)?;
                common::response_frame(key, version, correlation_id, &list_offsets(&request))
            }
            _ => unreachable!("checked against API_VERSIONS"),
        };
        Ok(Some(Answer::Frame(response)))
    }

    fn metadata(&self, topics: Vec<TopicName>, advertised: &Advertised) -> MetadataResponse {
        let node = BrokerId(self.node_id);
        MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(node)
                    .with_host(advertised.host.clone())
                    .with_port(advertised.port),
            ])
            .with_cluster_id(Some(StrBytes::from_static_str("bench-stand-in")))
            .with_controller_id(node)
            .with_topics(
                topics
                    .into_iter()
                    .map(|name| {
                        MetadataResponseTopic::default().with_name(Some(name)).with_partitions(vec![
                            MetadataResponsePartition::default()
                                .with_partition_index(0)
                                .with_leader_id(node)
                                .with_replica_nodes(vec![node])
                                .with_isr_nodes(vec![node]),
                        ])
                    })
                    .collect(),
            )
    }

    fn produce(&self, request: &ProduceRequest) -> ProduceResponse {
        let mut offsets = self.offsets.lock().expect("offsets");
        ProduceResponse::default().with_responses(
            request
                .topic_data
                .iter()
                .map(|topic| {
                    TopicProduceResponse::default().with_name(topic.name.clone()).with_partition_responses(
                        topic
                            .partition_data
                            .iter()
                            .map(|partition| {
                                let next = offsets.entry((topic.name.clone(), partition.index)).or_default();
                                let base_offset = *next;
                                *next += partition.records.as_deref().map_or(0, record_count);
                                PartitionProduceResponse::default()
                                    .with_index(partition.index)
                                    .with_base_offset(base_offset)
                                    .with_log_append_time_ms(-1)
                            })
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    fn fetch(&self, request: &FetchRequest) -> FetchResponse {
        let limit = usize::try_from(request.max_bytes).unwrap_or(MAX_FETCH_BYTES).min(MAX_FETCH_BYTES);
        FetchResponse::default().with_responses(
            request
                .topics
                .iter()
                .map(|topic| {
                    let value_size = value_size(&topic.topic);
                    FetchableTopicResponse::default().with_topic(topic.topic.clone()).with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|partition| {
                                let room = usize::try_from(partition.partition_max_bytes).unwrap_or(0).min(limit);
                                let count = (room.saturating_sub(BATCH_HEADER) / (value_size + 12)).clamp(1, 10_000);
                                let records = self.batch(value_size, count, partition.fetch_offset);
                                let high_watermark = partition.fetch_offset + 100 * count as i64;
                                PartitionData::default()
                                    .with_partition_index(partition.partition)
                                    .with_high_watermark(high_watermark)
                                    .with_last_stable_offset(high_watermark)
                                    .with_records(Some(records))
                            })
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    /// The answer to a Fetch for `answer-<size>`: a frame of exactly `size` bytes past the length.
    fn large_answer(&self, version: i16, correlation_id: i32, size: usize) -> Result<Answer> {
        if size > self.max_frame_bytes {
            bail!("answer of {size} bytes asked for, above --max-frame-bytes {}", self.max_frame_bytes);
        }
        let mut answers = self.large_answers.lock().expect("large answers");
        let frame = match answers.get(&(version, size)) {
            Some(frame) => frame.clone(),
            None => {
                let topic = TopicName(StrBytes::from_string(format!("answer-{size}")));
                let frame = common::frame_of_exactly(size, |records| {
                    let partition = PartitionData::default()
                        .with_high_watermark(1 << 40)
                        .with_last_stable_offset(1 << 40)
                        .with_records(Some(records));
                    let response = FetchResponse::default().with_responses(vec![
                        FetchableTopicResponse::default().with_topic(topic.clone()).with_partitions(vec![partition]),
                    ]);
                    common::response_frame(ApiKey::Fetch, version, 0, &response)
                })
                .with_context(|| format!("no Fetch answer of exactly {size} bytes"))?;
                answers.insert((version, size), frame.clone());
                frame
            }
        };
        let mut head = BytesMut::from(&frame[..8]);
        head[4..].copy_from_slice(&correlation_id.to_be_bytes());
        Ok(Answer::Shared { head: head.freeze(), rest: frame.slice(8..) })
    }

    /// A batch of `count` records of `value_size` bytes starting at `base_offset`. The CRC does
    /// not cover the base offset, so one template per shape serves every offset.
    fn batch(&self, value_size: usize, count: usize, base_offset: i64) -> Bytes {
        let template = self
            .batches
            .lock()
            .expect("batches")
            .entry((value_size, count))
            .or_insert_with(|| common::record_batch(count, value_size, 0))
            .clone();
        let mut batch = BytesMut::from(&template[..]);
        batch[..8].copy_from_slice(&base_offset.to_be_bytes());
        batch.freeze()
    }

    fn find_coordinator(
        &self,
        version: i16,
        request: &FindCoordinatorRequest,
        advertised: &Advertised,
    ) -> FindCoordinatorResponse {
        let node = BrokerId(self.node_id);
        if version < 4 {
            return FindCoordinatorResponse::default()
                .with_node_id(node)
                .with_host(advertised.host.clone())
                .with_port(advertised.port);
        }
        FindCoordinatorResponse::default().with_coordinators(
            request
                .coordinator_keys
                .iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(node)
                        .with_host(advertised.host.clone())
                        .with_port(advertised.port)
                })
                .collect(),
        )
    }
}

fn api_versions(version: i16, correlation_id: i32) -> Bytes {
    let body = ApiVersionsResponse::default().with_api_keys(
        API_VERSIONS
            .iter()
            .map(|&(key, min, max)| {
                ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
            })
            .collect(),
    );
    if version > 3 {
        // As Kafka does: UNSUPPORTED_VERSION in the v0 layout, the client retries with v3.
        let body = body.with_error_code(UNSUPPORTED_VERSION);
        return common::response_frame(ApiKey::ApiVersions, 0, correlation_id, &body);
    }
    common::response_frame(ApiKey::ApiVersions, version, correlation_id, &body)
}

fn list_offsets(request: &ListOffsetsRequest) -> ListOffsetsResponse {
    ListOffsetsResponse::default().with_topics(
        request
            .topics
            .iter()
            .map(|topic| {
                ListOffsetsTopicResponse::default().with_name(topic.name.clone()).with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|partition| {
                            // Earliest (-2) is 0; latest and any timestamp are far ahead.
                            let offset = if partition.timestamp == -2 { 0 } else { 1 << 40 };
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(partition.partition_index)
                                .with_timestamp(-1)
                                .with_offset(offset)
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// The number of records in a run of record batches (magic 2).
fn record_count(records: &[u8]) -> i64 {
    let mut rest = records;
    let mut count = 0i64;
    while rest.len() >= BATCH_HEADER {
        let batch_len = 12 + i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]).max(0) as usize;
        count += i64::from(i32::from_be_bytes([rest[57], rest[58], rest[59], rest[60]]));
        rest = &rest[batch_len.min(rest.len())..];
    }
    count
}

/// The answer size a topic named `answer-<bytes>` asks for.
fn answer_size(topic: &TopicName) -> Option<usize> {
    topic.0.strip_prefix("answer-")?.parse().ok()
}

/// The value size a topic name asks for: the number after its last `-` (`bench-100`), else 1 KiB.
fn value_size(topic: &TopicName) -> usize {
    topic.0.rsplit_once('-').and_then(|(_, size)| size.parse().ok()).filter(|&size| size <= 1 << 20).unwrap_or(1024)
}
