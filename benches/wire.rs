//! Micro-benchmarks of the per-frame work: header peek, frame pass-through and the rewrites.

use std::hint::black_box;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_sidecar::rewrite::{self, Advertised};
use kafka_sidecar::wire::{FrameCodec, peek_request_header};
use tokio_util::codec::Decoder;

fn produce_frame(value_bytes: usize) -> Bytes {
    let mut body = BytesMut::new();
    body.put_i16(0); // api key
    body.put_i16(8);
    body.put_i32(1);
    body.put_i16(8);
    body.put_slice(b"producer");
    body.put_i16(-1); // transactional id
    body.put_i16(1); // acks
    body.put_slice(&vec![0u8; value_bytes]);
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    frame.freeze()
}

fn metadata_frame(brokers: i32, partitions: i32) -> Bytes {
    let version = 12;
    let response = MetadataResponse::default()
        .with_brokers(
            (1..=brokers)
                .map(|id| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(format!("b-{id}.cluster.kafka.eu-west-1.amazonaws.com")))
                        .with_port(9092)
                })
                .collect(),
        )
        .with_controller_id(BrokerId(1))
        .with_topics(
            (0..partitions / 50)
                .map(|t| {
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(format!("topic-{t}")))))
                        .with_partitions(
                            (0..50)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(p % brokers + 1))
                                        .with_replica_nodes(vec![BrokerId(1), BrokerId(2), BrokerId(3)])
                                        .with_isr_nodes(vec![BrokerId(1), BrokerId(2), BrokerId(3)])
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(1)
        .encode(&mut buf, ApiKey::Metadata.response_header_version(version))
        .unwrap();
    response.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

fn header_peek(c: &mut Criterion) {
    let frame = produce_frame(1024);
    c.bench_function("peek_request_header+acks", |b| {
        b.iter(|| {
            let header = peek_request_header(black_box(&frame)).unwrap();
            black_box(header.expects_response(&frame).unwrap())
        })
    });
}

fn pass_through(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_pass_through");
    for size in [1024, 64 * 1024, 1024 * 1024] {
        let frame = produce_frame(size);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("{size}B"), |b| {
            let mut codec = FrameCodec::requests(100 * 1024 * 1024);
            b.iter(|| {
                let mut buf = BytesMut::from(&frame[..]);
                let out = codec.decode(&mut buf).unwrap().unwrap();
                black_box(peek_request_header(&out).unwrap())
            })
        });
    }
    group.finish();
}

fn metadata_rewrite(c: &mut Criterion) {
    let frame = metadata_frame(6, 1000);
    let advertised = Advertised { host: "127.0.0.1".into(), port_base: 9100 };
    c.bench_function("metadata_rewrite_6_brokers_1000_partitions", |b| {
        b.iter(|| rewrite::response(ApiKey::Metadata as i16, 12, black_box(&frame), &advertised).unwrap())
    });
}

criterion_group!(benches, header_peek, pass_through, metadata_rewrite);
criterion_main!(benches);
