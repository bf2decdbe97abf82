//! Large frames stream through the sidecar instead of being held whole (cut-through relay):
//! - the first half of a 50 MiB Fetch answer reaches the client while the broker still holds back
//!   the rest;
//! - eight clients each send a 50 MiB Produce request and read a 50 MiB Fetch answer slowly, every
//!   byte arrives intact and in order, and the sidecar's peak resident memory stays under 64 MiB;
//! - a response the sidecar must hold whole to rewrite it (Metadata) that is over
//!   `--max-buffered-frame-bytes` closes only the client that asked, while a Produce request over
//!   that cap, which the sidecar only passes on, still goes through.
//!
//! The broker is a stand-in ([`stand_in_broker`]) that never holds a large frame either: Produce
//! records and Fetch answers are numbered pages of a pattern per client and direction
//! ([`write_pages`]), checked page by page as they arrive ([`read_pages`]).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::Sidecar;
use support::process::{mib, proc_status_kib};
use support::scripted::{
    RequestHead, api_versions_v0, response, serve_streaming, two_broker_metadata_v1, two_broker_metadata_v1_with_topics,
};

const MIB: usize = 1 << 20;
/// Records in each large Produce request and Fetch answer.
const LARGE: usize = 50 * MIB;
/// The pattern's unit: a page starts with its stream and page numbers.
const PAGE: usize = 4096;
/// How much the clients and the stand-in broker write or read at a time.
const CHUNK: usize = 256 * 1024;
/// Read and write timeout of the clients' sockets: no single step waits longer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the stand-in holds a Fetch answer at its halfway point before it gives up and closes.
const GATE_TIMEOUT: Duration = Duration::from_secs(30);
/// The topic of every Produce request and Fetch answer.
const TOPIC: &str = "streamed";
/// Metadata requests from this client id get an answer of about 2 MiB.
const BIG_METADATA_CLIENT: &str = "big-metadata";
/// Produce answer error code for records that differ from the client's pattern.
const CORRUPT_MESSAGE: i16 = 2;

#[test]
fn first_half_of_a_large_fetch_answer_reaches_the_client_before_the_rest() {
    const FIRST_HALF_WITHIN: Duration = Duration::from_secs(10);
    let gate = Arc::new(Gate::default());
    let sidecar = Sidecar::start(&stand_in_broker(Some(gate.clone())), &[]);
    let mut client = connect(&sidecar.bootstrap(), FIRST_HALF_WITHIN).unwrap();
    let correlation_id = 7;
    client.write_all(&fetch_request(correlation_id, &client_id(0))).unwrap();
    let asked = Instant::now();

    // The broker has sent the answer's head and the first 25 MiB of records, and waits.
    let first_half = expect_bytes(&mut client, &fetch_answer_head(correlation_id, LARGE), "the answer's head")
        .and_then(|()| {
            read_pages(&mut client, fetched_stream(0), 0..LARGE / 2, Duration::ZERO, asked + FIRST_HALF_WITHIN)
        });
    if let Err(error) = first_half {
        let broker = match gate.halfway_at() {
            Some(at) => format!("had written all of it {:.1?} after the request", at - asked),
            None => "had not written all of it yet".to_owned(),
        };
        panic!(
            "the first half of a 50 MiB Fetch answer did not reach the client within {FIRST_HALF_WITHIN:?} ({error}); \
             the broker {broker} and holds back the rest until the client has it"
        );
    }
    println!(
        "first half of the Fetch answer received {:.1?} after the request, the rest still held back",
        asked.elapsed()
    );

    gate.open();
    let rest =
        read_pages(&mut client, fetched_stream(0), LARGE / 2..LARGE, Duration::ZERO, Instant::now() + IO_TIMEOUT);
    rest.unwrap_or_else(|error| panic!("the second half of the Fetch answer: {error}"));
    // Nothing more came with the answer: the next answer on the connection is the next request's.
    client.write_all(&raw::raw_request(3, 1, 8, "streaming", &(-1i32).to_be_bytes())).unwrap();
    let mut head = [0u8; 8];
    client.read_exact(&mut head).unwrap();
    assert_eq!(i32::from_be_bytes(head[4..].try_into().unwrap()), 8, "the Metadata answer after the Fetch answer");
}

#[test]
fn large_produce_and_fetch_frames_stream_with_bounded_memory() {
    const CLIENTS: u64 = 8;
    const PEAK_RSS_LIMIT_MIB: f64 = 64.0;
    /// Each client reads its Fetch answer a chunk at a time, pausing this long after each.
    const SLOW_READER_PAUSE: Duration = Duration::from_millis(5);
    let sidecar = Sidecar::start(&stand_in_broker(None), &[]);
    let bootstrap = sidecar.bootstrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let results: Vec<Result<Duration, String>> = thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let bootstrap = bootstrap.as_str();
                scope.spawn(move || produce_then_fetch(bootstrap, n, SLOW_READER_PAUSE, deadline))
            })
            .collect();
        clients.into_iter().map(|client| client.join().unwrap_or_else(|_| Err("panicked".to_owned()))).collect()
    });
    let peak = mib(proc_status_kib(sidecar.pid(), "VmHWM"));
    println!("sidecar peak RSS (VmHWM): {peak:.1} MiB; client durations: {results:.1?}");

    let failures: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(n, result)| Some(format!("client {n}: {}", result.as_ref().err()?)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        peak < PEAK_RSS_LIMIT_MIB,
        "the sidecar's peak RSS (VmHWM) was {peak:.1} MiB, over {PEAK_RSS_LIMIT_MIB} MiB, while {CLIENTS} clients \
         each sent a 50 MiB Produce request and read a 50 MiB Fetch answer: it held large frames whole"
    );
}

#[test]
fn metadata_answer_over_the_buffer_cap_closes_only_that_client() {
    let sidecar = Sidecar::start(&stand_in_broker(None), &["--max-buffered-frame-bytes", "1048576"]);
    let broker_ports = vec![i32::from(sidecar.broker_port_base()) + 1, i32::from(sidecar.broker_port_base()) + 2];
    let ask = |client: &mut RawClient| -> Vec<i32> {
        let metadata: MetadataResponse =
            client.request(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None));
        metadata.brokers.iter().map(|broker| broker.port).collect()
    };
    let mut healthy = RawClient::connect(&sidecar.bootstrap());
    assert_eq!(ask(&mut healthy), broker_ports);

    let mut big = RawClient::connect(&sidecar.bootstrap());
    big.send_bytes(&raw::raw_request(3, 1, 9, BIG_METADATA_CLIENT, &(-1i32).to_be_bytes())).unwrap();
    assert!(big.is_closed_by_peer(), "the client whose Metadata answer is over the cap is disconnected unanswered");
    assert!(sidecar.wait_for_log("exceeds --max-buffered-frame-bytes", Duration::from_secs(5)), "{}", sidecar.logs());
    let refused = sidecar.metric("kafka_sidecar_protocol_errors_total", &["kind=\"buffered_frame_too_large\""]);
    assert_eq!(refused, 1.0, "kafka_sidecar_protocol_errors_total{{kind=\"buffered_frame_too_large\"}}");

    assert_eq!(ask(&mut healthy), broker_ports, "the other client keeps working");
    // The cap is for frames the sidecar holds: a larger Produce request is only passed on.
    let mut produce = produce_request_head(10, &client_id(1), 2 * MIB);
    write_pages(&mut produce, produced_stream(1), 0..2 * MIB).unwrap();
    healthy.send_bytes(&produce).unwrap();
    assert_eq!(healthy.recv().unwrap()[..], produce_answer(10, 0)[..], "the answer to a 2 MiB Produce request");
}

/// A relayed request still falls under --client-idle-timeout: a client that starts a large
/// Produce request and then sends nothing more is cut off, cause "idle", as one that sends
/// nothing at all is; a client that keeps sending is not.
#[test]
fn a_client_that_stalls_inside_a_relayed_request_is_cut_off_when_idle() {
    const IDLE: Duration = Duration::from_secs(1);
    let sidecar = Sidecar::start(&stand_in_broker(None), &["--client-idle-timeout", "1s"]);
    let mut stalled = connect(&sidecar.bootstrap(), IO_TIMEOUT).unwrap();
    stalled.write_all(&produce_request_head(1, &client_id(0), 4 * MIB)).unwrap();
    write_pages(&mut stalled, produced_stream(0), 0..MIB).unwrap();
    let stalled_at = Instant::now();
    // The broker gets what was relayed and then the end of the connection; the stand-in answers
    // a cut Produce request with an error, a Kafka broker not at all. Either way the client's
    // connection then ends.
    let mut rest = Vec::new();
    let read = stalled.read_to_end(&mut rest);
    let cut_after = stalled_at.elapsed();
    assert!(read.is_ok(), "the stalled client's connection ends: {read:?}");
    assert!(cut_after >= IDLE && cut_after < IDLE * 5, "cut off after {cut_after:?}");
    let idle = sidecar.metric("kafka_sidecar_disconnects_total", &["cause=\"idle\""]);
    assert_eq!(idle, 1.0, "counted with cause idle");
}

// ------------------------------------------------------------------------------------------------
// Clients

fn client_id(n: u64) -> String {
    format!("client-{n}")
}

/// `n` of client id `client-<n>` (0 for any other).
fn client_number(client_id: &str) -> u64 {
    client_id.strip_prefix("client-").and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The pattern stream client `n` produces.
fn produced_stream(n: u64) -> u64 {
    2 * n
}

/// The pattern stream of client `n`'s Fetch answers.
fn fetched_stream(n: u64) -> u64 {
    2 * n + 1
}

/// A connection to `addr` whose reads and writes time out after `timeout`.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).and_then(|()| stream.set_write_timeout(Some(timeout))).unwrap();
    Ok(stream)
}

/// Client `n`'s session: a Produce request with LARGE bytes of records, its answer, then a Fetch
/// whose answer (LARGE bytes of records) it reads a chunk at a time, pausing `pause` after each.
/// Checks every byte; returns how long it all took.
fn produce_then_fetch(bootstrap: &str, n: u64, pause: Duration, deadline: Instant) -> Result<Duration, String> {
    let started = Instant::now();
    let mut connection = connect(bootstrap, IO_TIMEOUT)?;
    let id = client_id(n);
    connection
        .write_all(&produce_request_head(1, &id, LARGE))
        .and_then(|()| write_pages(&mut connection, produced_stream(n), 0..LARGE))
        .map_err(|e| io_failure("sending the Produce request", &e))?;
    expect_bytes(&mut connection, &produce_answer(1, 0), "the Produce answer")?;
    connection.write_all(&fetch_request(2, &id)).map_err(|e| io_failure("sending the Fetch request", &e))?;
    expect_bytes(&mut connection, &fetch_answer_head(2, LARGE), "the Fetch answer's head")?;
    read_pages(&mut connection, fetched_stream(n), 0..LARGE, pause, deadline)
        .map_err(|e| format!("the Fetch answer: {e}"))?;
    Ok(started.elapsed())
}

// ------------------------------------------------------------------------------------------------
// The pattern

/// What follows the stream and page numbers in every page.
fn filler() -> &'static [u8] {
    static FILLER: OnceLock<Vec<u8>> = OnceLock::new();
    FILLER.get_or_init(|| (0..PAGE - 16).map(|i| (i * 7 + i / 251) as u8).collect())
}

/// Page `page` of stream `stream`: the two numbers, then the filler.
fn fill_page(stream: u64, page: usize, out: &mut [u8]) {
    out[..8].copy_from_slice(&stream.to_be_bytes());
    out[8..16].copy_from_slice(&(page as u64).to_be_bytes());
    out[16..].copy_from_slice(filler());
}

/// Chunks of `range`, which must be whole pages: (offset, length).
fn chunks(range: Range<usize>) -> impl Iterator<Item = (usize, usize)> {
    assert!(range.start.is_multiple_of(PAGE) && range.end.is_multiple_of(PAGE), "{range:?} is not whole pages");
    range.clone().step_by(CHUNK).map(move |start| (start, CHUNK.min(range.end - start)))
}

/// Writes bytes `range` of pattern stream `stream` to `out`, a chunk at a time.
fn write_pages<W: Write + ?Sized>(out: &mut W, stream: u64, range: Range<usize>) -> io::Result<()> {
    let mut chunk = vec![0u8; CHUNK];
    for (start, len) in chunks(range) {
        for (i, page) in chunk[..len].chunks_exact_mut(PAGE).enumerate() {
            fill_page(stream, start / PAGE + i, page);
        }
        out.write_all(&chunk[..len])?;
    }
    Ok(())
}

/// Reads bytes `range` of pattern stream `stream` from `input` a chunk at a time, pausing `pause`
/// after each, and checks every page. Fails on a page that differs, on a read error, or once
/// `deadline` has passed, saying how far it got.
fn read_pages<R: Read + ?Sized>(
    input: &mut R,
    stream: u64,
    range: Range<usize>,
    pause: Duration,
    deadline: Instant,
) -> Result<(), String> {
    let (mut chunk, mut expected) = (vec![0u8; CHUNK], vec![0u8; PAGE]);
    for (start, len) in chunks(range.clone()) {
        let done = start - range.start;
        let got = input.read_exact(&mut chunk[..len]);
        got.map_err(|e| io_failure(&format!("after {done} of {} bytes", range.len()), &e))?;
        for (i, page) in chunk[..len].chunks_exact(PAGE).enumerate() {
            let number = start / PAGE + i;
            fill_page(stream, number, &mut expected);
            if page != expected {
                return Err(format!(
                    "page {number} of stream {stream} differs: it begins {:02x?}, expected {:02x?}",
                    &page[..16],
                    &expected[..16]
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("too slow: {} of {} bytes when the deadline passed", done + len, range.len()));
        }
        thread::sleep(pause);
    }
    Ok(())
}

/// Reads as many bytes as `expected` has and compares them.
fn expect_bytes(input: &mut impl Read, expected: &[u8], what: &str) -> Result<(), String> {
    let mut got = vec![0u8; expected.len()];
    input.read_exact(&mut got).map_err(|e| io_failure(what, &e))?;
    match got == expected {
        true => Ok(()),
        false => Err(format!("{what}: got {got:02x?}, expected {expected:02x?}")),
    }
}

fn io_failure(what: &str, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("{what}: timed out waiting for bytes"),
        _ => format!("{what}: {error}"),
    }
}

// ------------------------------------------------------------------------------------------------
// Frames

fn push_string(out: &mut Vec<u8>, value: &str) {
    out.extend_from_slice(&(value.len() as i16).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// `frame` with its length prefix counting `trailing` more bytes, which are sent after it.
fn with_trailing(mut frame: Vec<u8>, trailing: usize) -> Vec<u8> {
    let len = i32::try_from(frame.len() - 4 + trailing).unwrap();
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// A Produce v3 request body (acks=1, partition 0 of [`TOPIC`]) up to its `records` bytes of
/// records.
fn produce_body_head(records: usize) -> Vec<u8> {
    let mut body = (-1i16).to_be_bytes().to_vec(); // transactional id
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&30_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    push_string(&mut body, TOPIC);
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&0i32.to_be_bytes()); // partition index
    body.extend_from_slice(&i32::try_from(records).unwrap().to_be_bytes());
    body
}

/// A Produce request up to its records, which the client sends after it.
fn produce_request_head(correlation_id: i32, client_id: &str, records: usize) -> Vec<u8> {
    with_trailing(raw::raw_request(0, 3, correlation_id, client_id, &produce_body_head(records)), records)
}

/// The Produce v3 answer for partition 0 of [`TOPIC`].
fn produce_answer(correlation_id: i32, error_code: i16) -> Vec<u8> {
    let mut body = 1i32.to_be_bytes().to_vec(); // topics
    push_string(&mut body, TOPIC);
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&0i32.to_be_bytes()); // partition index
    body.extend_from_slice(&error_code.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes()); // base offset
    body.extend_from_slice(&(-1i64).to_be_bytes()); // log append time
    body.extend_from_slice(&0i32.to_be_bytes()); // throttle time
    response(&correlation_id.to_be_bytes(), &body)
}

/// A Fetch v4 request for partition 0 of [`TOPIC`] from offset 0.
fn fetch_request(correlation_id: i32, client_id: &str) -> Vec<u8> {
    let mut body = (-1i32).to_be_bytes().to_vec(); // replica id
    body.extend_from_slice(&500i32.to_be_bytes()); // max wait
    body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&i32::MAX.to_be_bytes()); // max bytes
    body.push(0); // isolation level
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    push_string(&mut body, TOPIC);
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&0i32.to_be_bytes()); // partition index
    body.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
    body.extend_from_slice(&i32::MAX.to_be_bytes()); // partition max bytes
    raw::raw_request(1, 4, correlation_id, client_id, &body)
}

/// A Fetch v4 answer for partition 0 of [`TOPIC`] up to its `records` bytes of records, which the
/// broker sends after it.
fn fetch_answer_head(correlation_id: i32, records: usize) -> Vec<u8> {
    let mut body = 0i32.to_be_bytes().to_vec(); // throttle time
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    push_string(&mut body, TOPIC);
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&0i32.to_be_bytes()); // partition index
    body.extend_from_slice(&0i16.to_be_bytes()); // error code
    body.extend_from_slice(&1i64.to_be_bytes()); // high watermark
    body.extend_from_slice(&1i64.to_be_bytes()); // last stable offset
    body.extend_from_slice(&0i32.to_be_bytes()); // aborted transactions
    body.extend_from_slice(&i32::try_from(records).unwrap().to_be_bytes());
    with_trailing(response(&correlation_id.to_be_bytes(), &body), records)
}

/// Topic names for a Metadata v1 answer of about `bytes` bytes (109 bytes a topic).
fn many_topics(bytes: usize) -> Vec<String> {
    (0..bytes / 109).map(|i| format!("{i:0>100}")).collect()
}

// ------------------------------------------------------------------------------------------------
// The stand-in broker

/// Holds the stand-in's Fetch answers at their halfway point until the test opens it.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    open: bool,
    /// When an answer's first half was all written.
    halfway_at: Option<Instant>,
}

impl Gate {
    /// The broker has written an answer's first half: waits until the gate opens, or fails after
    /// [`GATE_TIMEOUT`] (closing the connection without the rest).
    fn wait_halfway(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.halfway_at = Some(Instant::now());
        let (_state, waited) = self.changed.wait_timeout_while(state, GATE_TIMEOUT, |state| !state.open).unwrap();
        match waited.timed_out() {
            true => Err(io::Error::other("the gate stayed closed")),
            false => Ok(()),
        }
    }

    fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    fn halfway_at(&self) -> Option<Instant> {
        self.state.lock().unwrap().halfway_at
    }
}

/// Starts a stand-in broker on a free port; returns its address. It answers ApiVersions and
/// Metadata (brokers 1 and 2, both itself; [`BIG_METADATA_CLIENT`] gets 2 MiB of topics too),
/// checks Produce records against the client's pattern (answering CORRUPT_MESSAGE, with the reason
/// on stderr, when they differ), and answers every Fetch with LARGE bytes of records in the
/// client's pattern; with a `gate`, only the first half until the gate opens.
fn stand_in_broker(gate: Option<Arc<Gate>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_streaming(
        listener,
        Arc::new(move |head: &RequestHead, body: &mut dyn Read, out: &mut TcpStream| {
            let correlation_id = head.correlation_id.to_be_bytes();
            match head.api_key {
                18 => out.write_all(&api_versions_v0(&correlation_id)),
                3 if head.client_id == BIG_METADATA_CLIENT => {
                    let topics = many_topics(2 * MIB);
                    out.write_all(&two_broker_metadata_v1_with_topics(&correlation_id, [port, port], &topics))
                }
                3 => out.write_all(&two_broker_metadata_v1(&correlation_id, [port, port])),
                0 => {
                    let error_code = check_produce(head, body)?;
                    out.write_all(&produce_answer(head.correlation_id, error_code))
                }
                1 => answer_fetch(head, out, gate.as_deref()),
                _ => Err(io::Error::other(format!("the stand-in broker does not answer {head:?}"))),
            }
        }),
    );
    format!("127.0.0.1:{port}")
}

/// Reads a Produce request's body, checking it against the client's pattern; returns the error
/// code to answer with.
fn check_produce(head: &RequestHead, body: &mut dyn Read) -> io::Result<i16> {
    let head_len = produce_body_head(0).len();
    let records = head.body_len.saturating_sub(head_len);
    let mut got = vec![0u8; head.body_len.min(head_len)];
    body.read_exact(&mut got)?;
    let checked = match got == produce_body_head(records) {
        true => {
            let stream = produced_stream(client_number(&head.client_id));
            read_pages(body, stream, 0..records, Duration::ZERO, Instant::now() + IO_TIMEOUT * 4)
        }
        false => Err(format!("unexpected body {got:02x?}")),
    };
    match checked {
        Ok(()) => Ok(0),
        Err(reason) => {
            eprintln!("stand-in broker: Produce request from {}: {reason}", head.client_id);
            Ok(CORRUPT_MESSAGE)
        }
    }
}

fn answer_fetch(head: &RequestHead, out: &mut TcpStream, gate: Option<&Gate>) -> io::Result<()> {
    let stream = fetched_stream(client_number(&head.client_id));
    out.write_all(&fetch_answer_head(head.correlation_id, LARGE))?;
    write_pages(out, stream, 0..LARGE / 2)?;
    if let Some(gate) = gate {
        gate.wait_halfway()?;
    }
    write_pages(out, stream, LARGE / 2..LARGE)
}
