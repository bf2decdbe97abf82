//! NOT_CONTROLLER replies for the versions kafka-protocol 0.18 no longer decodes: CreateTopics
//! v0–1 (kafka-go's `Conn.CreateTopics` sends v0) and DeleteTopics v0, which Kafka 3.x brokers
//! still accept. Requests are parsed in full (so a malformed one is refused) and replies encoded
//! by hand:
//!
//! - CreateTopics v0 request: `topics[name, num_partitions i32, replication_factor i16,
//!   assignments[partition i32, broker_ids[i32]], configs[name, value nullable]], timeout_ms i32`;
//!   v1 adds `validate_only bool`. Reply: `topics[name, error_code i16]`; v1 adds a nullable
//!   `error_message` per topic.
//! - DeleteTopics v0 request: `topic_names[string], timeout_ms i32`. Reply:
//!   `responses[name, error_code i16]`.

use anyhow::Result;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use super::answers::{Answer, NOT_CONTROLLER, error_message};
use super::wire::{Reader, RequestHead, put_nullable_string, put_string, request_body, response_frame};

pub fn create_topics_not_controller(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let body = request_body(ApiKey::CreateTopics, head.version, frame)?;
    let topics = create_topics_names(head.version, &body)?;
    topic_errors(ApiKey::CreateTopics, head, &topics, head.version >= 1)
}

pub fn delete_topics_not_controller(head: RequestHead, frame: &Bytes) -> Result<Answer> {
    let body = request_body(ApiKey::DeleteTopics, head.version, frame)?;
    let topics = delete_topics_names(&body)?;
    topic_errors(ApiKey::DeleteTopics, head, &topics, false)
}

/// The topic names of a CreateTopics v0 or v1 request body.
fn create_topics_names(version: i16, body: &[u8]) -> Result<Vec<String>> {
    let mut reader = Reader::new(body);
    let mut names = Vec::new();
    for _ in 0..reader.array_len()? {
        names.push(reader.string()?);
        reader.i32()?; // num_partitions
        reader.i16()?; // replication_factor
        for _ in 0..reader.array_len()? {
            reader.i32()?; // partition
            for _ in 0..reader.array_len()? {
                reader.i32()?; // broker id
            }
        }
        for _ in 0..reader.array_len()? {
            reader.string()?; // config name
            reader.nullable_string()?; // config value
        }
    }
    reader.i32()?; // timeout_ms
    if version >= 1 {
        reader.bool()?; // validate_only
    }
    reader.finish()?;
    Ok(names)
}

/// The topic names of a DeleteTopics v0 request body.
fn delete_topics_names(body: &[u8]) -> Result<Vec<String>> {
    let mut reader = Reader::new(body);
    let names = (0..reader.array_len()?).map(|_| reader.string()).collect::<Result<Vec<_>>>()?;
    reader.i32()?; // timeout_ms
    reader.finish()?;
    Ok(names)
}

/// A reply that is an array of `(name, NOT_CONTROLLER[, message])`, one per topic.
fn topic_errors(key: ApiKey, head: RequestHead, topics: &[String], with_message: bool) -> Result<Answer> {
    let message = error_message(NOT_CONTROLLER);
    let frame = response_frame(key, head.version, head.correlation_id, |buf: &mut BytesMut| {
        buf.put_i32(topics.len() as i32);
        for topic in topics {
            put_string(buf, topic);
            buf.put_i16(NOT_CONTROLLER);
            if with_message {
                put_nullable_string(buf, message.as_deref());
            }
        }
        Ok(())
    })?;
    Ok(Answer { frame, not_controller_entries: topics.len() as u64 })
}
