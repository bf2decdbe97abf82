//! Allocation check of the per-frame hot path, with a counting global allocator.
//!
//! `cargo bench --bench allocations` prints, for each step of what a session does with a Produce
//! or Fetch frame, the heap allocations per frame, and exits non-zero when a step that must not
//! allocate does:
//!
//! - `request codec`: `FrameCodec::requests` decoding Produce and Fetch requests from a buffer
//!   that already holds them, header peeked, acks checked: 0 allocations per frame.
//! - `response codec`: `FrameCodec::responses` decoding Produce and Fetch responses, correlation
//!   id and error code read, `rewrite::response` deciding to pass them through: 0 per frame.
//! - `framed relay`: `FrameReader` → peek → `relay_frame` → `FrameWriter`, as the session uses them, over an
//!   in-memory reader and a discarding writer, frames of 100 B to 1 MiB: once the read buffer has
//!   grown to the largest frame, 0 per frame.
//! - `telemetry`: the metric calls the session makes per request (bytes by direction, request
//!   counter, latency histogram) with the sidecar's Prometheus recorder. Reported, not bounded:
//!   the histogram stores every sample until the next upkeep, in blocks of 64.
//!
//! Run by `cargo test --all-targets` too (without `--bench`), with fewer frames.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::sink::Discard;
use kafka_sidecar::frame_reader::{FrameReader, relay_frame};
use kafka_sidecar::frame_writer::FrameWriter;
use kafka_sidecar::rewrite;
use kafka_sidecar::telemetry::{self, Direction, RequestCounters};
use kafka_sidecar::wire::{FrameCodec, peek_request_header, response_correlation_id, response_error_code};
use tokio_util::codec::Decoder;

mod common;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations of at least `BUFFER_BYTES`: read and write buffers growing to hold a frame.
static BUFFER_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// `FramedRead` and `FramedWrite` start with 8 KiB buffers; anything this large is a buffer.
const BUFFER_BYTES: usize = 8 * 1024;

fn record(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    if size >= BUFFER_BYTES {
        BUFFER_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What was allocated while something ran.
#[derive(Debug, Clone, Copy, Default)]
struct Allocated {
    count: u64,
    bytes: u64,
    buffers: u64,
}

fn snapshot() -> Allocated {
    Allocated {
        count: ALLOCATIONS.load(Ordering::SeqCst),
        bytes: ALLOCATED_BYTES.load(Ordering::SeqCst),
        buffers: BUFFER_ALLOCATIONS.load(Ordering::SeqCst),
    }
}

/// Runs `f` and counts what it allocated.
fn count<T>(f: impl FnOnce() -> T) -> (T, Allocated) {
    let before = snapshot();
    let out = f();
    let after = snapshot();
    let allocated = Allocated {
        count: after.count - before.count,
        bytes: after.bytes - before.bytes,
        buffers: after.buffers - before.buffers,
    };
    (out, allocated)
}

const MAX_FRAME: usize = 100 * 1024 * 1024;

/// The request frames of the check: Produce v9 (flexible) and v7 with a 100 B record, a 16 KiB
/// batch, and a consumer's Fetch v12 and v11.
fn request_frames() -> Vec<Bytes> {
    vec![
        common::produce_frame(9, 1, 100),
        common::produce_frame(7, 16, 1024),
        common::fetch_request(12, 1, "bench", 0),
        common::fetch_request(11, 1, "bench", 0),
    ]
}

/// The response frames: Produce v9 and v7, Fetch v12 and v11 with a 64 KiB batch.
fn response_frames() -> Vec<(i16, i16, Bytes)> {
    let batch = common::record_batch(64, 1000, 0);
    vec![
        (0, 9, common::produce_response(9, 1, "bench", 0)),
        (0, 7, common::produce_response(7, 1, "bench", 0)),
        (1, 12, common::fetch_response(12, 1, "bench", batch.clone(), 64)),
        (1, 11, common::fetch_response(11, 1, "bench", batch, 64)),
    ]
}

struct Outcome {
    name: &'static str,
    frames: u64,
    allocated: Allocated,
    elapsed: Duration,
    /// Most allocations allowed over the whole run (`None`: reported only).
    bound: Option<u64>,
    /// Whether read and write buffers growing to hold a frame (allocations of `BUFFER_BYTES` or
    /// more, at most one per frame) are left out of the bound: they are the frame's own buffer.
    buffers_exempt: bool,
    note: &'static str,
}

impl Outcome {
    /// Allocations that count against the bound.
    fn bounded(&self) -> u64 {
        if self.buffers_exempt {
            self.allocated.count - self.allocated.buffers.min(self.frames)
        } else {
            self.allocated.count
        }
    }

    fn within_bound(&self) -> bool {
        self.bound.is_none_or(|bound| self.bounded() <= bound)
    }
}

fn request_codec(rounds: usize) -> Outcome {
    let frames = request_frames();
    let stream: Vec<u8> = (0..rounds).flat_map(|_| frames.iter().flat_map(|f| f.iter().copied())).collect();
    let mut buf = bytes::BytesMut::from(&stream[..]);
    let mut codec = FrameCodec::requests(MAX_FRAME);
    // The first split turns the read buffer into shared storage (one allocation per buffer, not
    // per frame); a session's read buffer did that with its first frame.
    drop(codec.decode(&mut buf).unwrap().unwrap());
    let start = Instant::now();
    let (decoded, allocated) = count(|| {
        let mut decoded = 1u64;
        while let Some(frame) = codec.decode(&mut buf).expect("valid frame") {
            let header = peek_request_header(&frame).expect("valid header");
            assert!(header.expects_response(&frame).expect("valid produce"));
            decoded += 1;
        }
        decoded
    });
    assert_eq!(decoded, (rounds * frames.len()) as u64);
    Outcome {
        name: "request codec",
        frames: decoded,
        allocated,
        elapsed: start.elapsed(),
        bound: Some(0),
        buffers_exempt: false,
        note: "FrameCodec::requests decode + peek_request_header + acks",
    }
}

fn response_codec(rounds: usize) -> Outcome {
    let frames = response_frames();
    let stream: Vec<u8> = (0..rounds).flat_map(|_| frames.iter().flat_map(|(_, _, f)| f.iter().copied())).collect();
    let mut buf = bytes::BytesMut::from(&stream[..]);
    let mut codec = FrameCodec::responses(MAX_FRAME);
    let advertised = rewrite::Advertised { host: "127.0.0.1".into(), port_base: 9100 };
    drop(codec.decode(&mut buf).unwrap().unwrap());
    let start = Instant::now();
    let (decoded, allocated) = count(|| {
        let mut decoded = 1usize;
        while let Some(frame) = codec.decode(&mut buf).expect("valid frame") {
            let (api_key, version, _) = &frames[decoded % frames.len()];
            assert_eq!(response_correlation_id(&frame).unwrap(), 1);
            assert_eq!(response_error_code(*api_key, *version, &frame), None);
            assert!(rewrite::response(*api_key, *version, &frame, &advertised).unwrap().is_none());
            decoded += 1;
        }
        decoded as u64
    });
    assert_eq!(decoded, (rounds * frames.len()) as u64);
    Outcome {
        name: "response codec",
        frames: decoded,
        allocated,
        elapsed: start.elapsed(),
        bound: Some(0),
        buffers_exempt: false,
        note: "FrameCodec::responses decode + correlation id + error code + rewrite pass",
    }
}

/// `FrameReader::peek` → header peek → `relay_frame` into a `FrameWriter`, flushed whenever the
/// reader holds no further whole frame, as the session does, frames of 100 B, 1 KiB, 16 KiB,
/// 64 KiB and 1 MiB in turn.
fn framed_relay(rounds: usize) -> Outcome {
    const WARM_UP_ROUNDS: usize = 3;
    const HEAD: usize = 66 * 1024;
    let frames: Vec<Bytes> = [100, 1024, 16 * 1024, 64 * 1024, 1024 * 1024]
        .into_iter()
        .map(|size| if size <= 100 { common::produce_frame(9, 1, size) } else { common::produce_frame_of(9, size) })
        .collect();
    let stream: Vec<u8> =
        (0..rounds + WARM_UP_ROUNDS).flat_map(|_| frames.iter().flat_map(|f| f.iter().copied())).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut reader = FrameReader::new(&stream[..], FrameCodec::requests(MAX_FRAME));
    let mut writer = FrameWriter::new(Discard);
    let mut relay = async |limit: usize| {
        let mut relayed = 0u64;
        while relayed < limit as u64 {
            let Some(total) = reader.peek(HEAD).await.expect("valid frame") else { break };
            let header = peek_request_header(reader.head(total)).expect("valid header");
            assert!(header.expects_response(reader.head(total)).expect("valid produce"));
            if relay_frame(&mut reader, &mut writer, total, None).await.is_err() {
                panic!("relay failed");
            }
            if !reader.holds_whole_frame() {
                writer.flush().await.expect("write");
            }
            relayed += 1;
        }
        relayed
    };
    // A few rounds first, so that the read buffer has reached its working size.
    let warm_up = WARM_UP_ROUNDS * frames.len();
    assert_eq!(runtime.block_on(relay(warm_up)), warm_up as u64);
    let start = Instant::now();
    let (relayed, allocated) = count(|| runtime.block_on(relay(usize::MAX)));
    assert_eq!(relayed, (rounds * frames.len()) as u64);
    Outcome {
        name: "framed relay",
        frames: relayed,
        allocated,
        elapsed: start.elapsed(),
        bound: Some(0),
        buffers_exempt: true,
        note: "FrameReader peek -> header -> relay_frame -> FrameWriter, 100 B..1 MiB frames",
    }
}

/// The metric calls a session makes for each answered request.
fn telemetry_per_request(requests: usize) -> Outcome {
    let handle = telemetry::install().expect("install the Prometheus recorder");
    let mut counters = RequestCounters::new("111".to_owned());
    let per_request = |counters: &mut RequestCounters| {
        telemetry::bytes(Direction::ClientToSidecar, 1100);
        counters.count(0);
        telemetry::bytes(Direction::SidecarToBroker, 1100);
        telemetry::bytes(Direction::BrokerToSidecar, 60);
        telemetry::bytes(Direction::SidecarToClient, 60);
        telemetry::request_duration(0, Duration::from_micros(250));
    };
    per_request(&mut counters);
    handle.run_upkeep();
    let start = Instant::now();
    let ((), allocated) = count(|| (0..requests).for_each(|_| per_request(&mut counters)));
    let elapsed = start.elapsed();
    handle.run_upkeep();
    Outcome {
        name: "telemetry",
        frames: requests as u64,
        allocated,
        elapsed,
        bound: None,
        buffers_exempt: false,
        note: "bytes x4 + request counter + latency histogram (Prometheus recorder)",
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, and a
    // quick pass is enough there.
    let full = std::env::args().any(|arg| arg == "--bench");
    let rounds = if full { 25_000 } else { 500 };
    let outcomes = [
        request_codec(rounds),
        response_codec(rounds),
        framed_relay(if full { 200 } else { 10 }),
        telemetry_per_request(if full { 100_000 } else { 2_000 }),
    ];
    println!(
        "{:<15} {:>7} {:>7} {:>8} {:>10} {:>8} {:>9}  result",
        "step", "frames", "allocs", "buffers", "per frame", "B/frame", "ns/frame"
    );
    for o in &outcomes {
        let result = match o.bound {
            None => "reported".to_owned(),
            Some(bound) if o.within_bound() => format!("ok (bound {bound})"),
            Some(bound) => format!("FAILED: {} > bound {bound}", o.bounded()),
        };
        println!(
            "{:<15} {:>7} {:>7} {:>8} {:>10.4} {:>8.1} {:>9.0}  {result}: {}",
            o.name,
            o.frames,
            o.allocated.count,
            o.allocated.buffers,
            o.allocated.count as f64 / o.frames as f64,
            o.allocated.bytes as f64 / o.frames as f64,
            o.elapsed.as_nanos() as f64 / o.frames as f64,
            o.note,
        );
    }
    if outcomes.iter().any(|o| !o.within_bound()) {
        eprintln!("allocations: a hot-path step allocated more than its bound");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
