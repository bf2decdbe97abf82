//! A blocking, raw Kafka client for tests: sends exactly the bytes a test wants (old versions,
//! hostile frames) and reads whole response frames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_sidecar::wire::encode_request;

pub struct RawClient {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl RawClient {
    pub fn connect(addr: &str) -> RawClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        RawClient { stream, next_correlation_id: 100 }
    }

    pub fn next_correlation_id(&mut self) -> i32 {
        self.next_correlation_id += 1;
        self.next_correlation_id
    }

    /// Sends a request encoded by kafka-protocol; returns its correlation id.
    pub fn send(&mut self, api_key: ApiKey, version: i16, body: &impl Encodable) -> i32 {
        let correlation_id = self.next_correlation_id();
        let frame = encode_request(api_key, version, correlation_id, body).unwrap();
        self.stream.write_all(&frame).unwrap();
        correlation_id
    }

    /// Sends raw bytes as they are.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one whole response frame (length prefix included).
    pub fn recv(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut frame = vec![0u8; 4 + i32::from_be_bytes(len) as usize];
        frame[..4].copy_from_slice(&len);
        self.stream.read_exact(&mut frame[4..])?;
        Ok(frame.into())
    }

    /// Sends a request and decodes its response, checking the correlation id.
    pub fn request<R: Decodable>(&mut self, api_key: ApiKey, version: i16, body: &impl Encodable) -> R {
        let correlation_id = self.send(api_key, version, body);
        let frame = self.recv().unwrap();
        decode_response(api_key, version, correlation_id, &frame)
    }

    /// True when the peer has closed the connection (EOF or reset) within the read timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
        }
    }
}

pub fn decode_response<R: Decodable>(api_key: ApiKey, version: i16, correlation_id: i32, frame: &Bytes) -> R {
    let mut buf = frame.slice(4..);
    let header = ResponseHeader::decode(&mut buf, api_key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, correlation_id, "{api_key:?} response out of order");
    let response = R::decode(&mut buf, version).unwrap();
    assert_eq!(buf.remaining(), 0, "{api_key:?} v{version}: trailing bytes");
    response
}

/// Builds a request frame from raw header fields and body bytes (for versions kafka-protocol no
/// longer encodes).
pub fn raw_request(api_key: i16, version: i16, correlation_id: i32, client_id: &str, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    frame.extend_from_slice(client_id.as_bytes());
    frame.extend_from_slice(body);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// A CreateTopics v0 request as kafka-go's `Conn.CreateTopics` sends it (kafka-protocol 0.18 can
/// no longer encode this version).
pub fn create_topics_v0(correlation_id: i32, topic: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes()); // num_partitions
    body.extend_from_slice(&1i16.to_be_bytes()); // replication_factor
    body.extend_from_slice(&0i32.to_be_bytes()); // assignments
    body.extend_from_slice(&0i32.to_be_bytes()); // configs
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout_ms
    raw_request(19, 0, correlation_id, "kafka-go", &body)
}

/// Reads a CreateTopics v0 or DeleteTopics v0 response: (correlation id, [(topic, error_code)]).
pub fn read_topic_errors_v0(frame: &[u8]) -> (i32, Vec<(String, i16)>) {
    let correlation_id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
    let mut pos = 8;
    let count = i32::from_be_bytes(frame[pos..pos + 4].try_into().unwrap());
    pos += 4;
    let mut topics = Vec::new();
    for _ in 0..count {
        let len = i16::from_be_bytes(frame[pos..pos + 2].try_into().unwrap()) as usize;
        let name = String::from_utf8(frame[pos + 2..pos + 2 + len].to_vec()).unwrap();
        pos += 2 + len;
        topics.push((name, i16::from_be_bytes(frame[pos..pos + 2].try_into().unwrap())));
        pos += 2;
    }
    (correlation_id, topics)
}

/// A DeleteTopics v0 request (kafka-protocol 0.18 no longer encodes this version either).
pub fn delete_topics_v0(correlation_id: i32, topic: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout_ms
    raw_request(20, 0, correlation_id, "kafka-go", &body)
}

/// A record batch (magic 2, uncompressed) holding one record with `value`.
pub fn record_batch(value: &str) -> Bytes {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from(value.to_owned())),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, [&record], &options).unwrap();
    buf.freeze()
}
