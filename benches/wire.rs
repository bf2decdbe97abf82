//! Micro-benchmarks of the per-frame work: header peek, frame pass-through and the rewrites.
//!
//! `cargo bench --bench wire`; `scripts/bench.sh` runs it with shorter warm-up and measurement
//! times. See docs/performance.md for the latest figures.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Waker};

use bytes::{Bytes, BytesMut};
use common::sink::Discard;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::ApiKey;
use kafka_sidecar::frame_writer::FrameWriter;
use kafka_sidecar::rewrite::{self, Advertised};
use kafka_sidecar::wire::{FrameCodec, peek_request_header};
use tokio_util::codec::Decoder;

mod common;

const MAX_FRAME: usize = 100 * 1024 * 1024;
const FRAME_SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (64 * 1024, "64KiB"), (1024 * 1024, "1MiB")];

fn advertised() -> Advertised {
    Advertised { host: "127.0.0.1".into(), port_base: 9100 }
}

/// What the request half of a session does with every frame before forwarding it: read the
/// header, and for Produce the acks.
fn peek(frame: &Bytes) -> bool {
    let header = peek_request_header(frame).expect("valid header");
    header.expects_response(frame).expect("valid produce")
}

fn header_peek(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_peek");
    let produce = common::produce_frame(9, 1, 100);
    group.bench_function("produce_v9+acks", |b| b.iter(|| peek(black_box(&produce))));
    let fetch = common::fetch_request(12, 1, "bench", 0);
    group.bench_function("fetch_v12", |b| b.iter(|| peek(black_box(&fetch))));
    group.finish();
}

/// A read buffer that holds one frame and hands it to the codec again and again without copying
/// it in each time, so that only the decode path is measured.
struct Refill {
    buf: BytesMut,
    start: *const u8,
    len: usize,
}

impl Refill {
    fn new(frame: &[u8]) -> Self {
        // Exactly the frame's size, so that reclaiming the allocation moves back to its start.
        let buf = BytesMut::from(frame);
        assert_eq!(buf.capacity(), frame.len());
        Refill { start: buf.as_ptr(), buf, len: frame.len() }
    }

    /// Makes the frame readable again once the previous decode's frame is dropped: `reserve`
    /// reclaims the (now unshared) allocation and moves the start back to the frame's first byte,
    /// as `FramedRead`'s own reserve does between reads.
    fn refill(&mut self) -> &mut BytesMut {
        if self.buf.is_empty() {
            self.buf.reserve(self.len);
            assert_eq!(self.buf.as_ptr(), self.start, "buffer reclaimed in place");
            // SAFETY: the reclaimed allocation is the one `new` copied the frame into, and it is
            // back at its start (checked above) with room for the frame; nothing wrote to it since
            // (decoded frames are only read), so its first `len` bytes still hold the frame.
            unsafe { self.buf.set_len(self.len) };
        }
        &mut self.buf
    }
}

/// Per frame size: a Produce frame decoded by `FrameCodec::requests` from a buffer that already
/// holds it, header peeked, then handed to `after_decode`.
fn bench_each_frame_size(c: &mut Criterion, group: &str, mut after_decode: impl FnMut(Bytes)) {
    let mut group = c.benchmark_group(group);
    for (size, name) in FRAME_SIZES {
        let frame = common::produce_frame_of(9, size);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut codec = FrameCodec::requests(MAX_FRAME);
            let mut refill = Refill::new(&frame);
            b.iter(|| {
                let out = codec.decode(refill.refill()).expect("valid frame").expect("whole frame");
                black_box(peek(&out));
                after_decode(out);
            });
            assert_eq!(refill.refill()[..], frame[..], "the buffer still holds the frame");
        });
    }
    group.finish();
}

/// Decoding alone: it splits the frame off the read buffer without touching its bytes, so the
/// cost does not grow with the frame.
fn frame_decode(c: &mut Criterion) {
    bench_each_frame_size(c, "frame_decode", drop);
}

/// What a session does per request frame short of the system calls: decode, peek, and the
/// `FrameWriter` queueing the frame and handing it to the connection (here one that takes
/// everything at once), without copying it.
fn frame_pass_through(c: &mut Criterion) {
    let mut context = Context::from_waker(Waker::noop());
    let mut writer = FrameWriter::new(Discard);
    bench_each_frame_size(c, "frame_pass_through", |frame| {
        writer.feed(frame);
        let written = pin!(writer.flush()).poll(&mut context);
        assert!(written.is_ready() && !writer.has_queued());
    });
}

fn rewrites(c: &mut Criterion) {
    let advertised = advertised();
    let mut group = c.benchmark_group("rewrite");

    let metadata = common::metadata_frame(12, 6, 1000);
    group.throughput(Throughput::Bytes(metadata.len() as u64));
    group.bench_function("metadata_v12_6_brokers_1000_partitions", |b| {
        b.iter(|| rewrite::response(ApiKey::Metadata as i16, 12, black_box(&metadata), &advertised).unwrap())
    });

    let api_versions = common::api_versions_frame(3);
    group.throughput(Throughput::Bytes(api_versions.len() as u64));
    group.bench_function("api_versions_v3_clamp", |b| {
        b.iter(|| rewrite::response(ApiKey::ApiVersions as i16, 3, black_box(&api_versions), &advertised).unwrap())
    });

    let find_coordinator = common::find_coordinator_frame(4, 32, 6);
    group.throughput(Throughput::Bytes(find_coordinator.len() as u64));
    group.bench_function("find_coordinator_v4_32_groups", |b| {
        b.iter(|| {
            rewrite::response(ApiKey::FindCoordinator as i16, 4, black_box(&find_coordinator), &advertised).unwrap()
        })
    });
    group.finish();
}

/// Fails the run if a benchmark input is not what it claims to be (the rewrites must change
/// something, the clamp must lower the versions).
fn check_inputs() {
    let advertised = advertised();
    let metadata = common::metadata_frame(12, 6, 1000);
    let rewritten = rewrite::response(ApiKey::Metadata as i16, 12, &metadata, &advertised).unwrap().unwrap();
    assert_eq!(rewritten.brokers.len(), 6);
    assert_ne!(rewritten.frame, metadata);
    let find_coordinator = common::find_coordinator_frame(4, 32, 6);
    let rewritten =
        rewrite::response(ApiKey::FindCoordinator as i16, 4, &find_coordinator, &advertised).unwrap().unwrap();
    assert_eq!(rewritten.brokers.len(), 32);
    let api_versions = common::api_versions_frame(3);
    let rewritten = rewrite::response(ApiKey::ApiVersions as i16, 3, &api_versions, &advertised).unwrap().unwrap();
    assert_ne!(rewritten.frame, api_versions, "the clamp changed the response");
}

fn inputs(_: &mut Criterion) {
    check_inputs();
}

criterion_group!(benches, inputs, header_peek, frame_decode, frame_pass_through, rewrites);
criterion_main!(benches);
