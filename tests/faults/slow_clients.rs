//! Hostile clients: slowloris, clients that never read their responses, and clients that
//! pipeline without limit.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::process::{mib, proc_status_kib};
use support::{Sidecar, Tansu};

use super::{metadata, metadata_frame, mute_broker, percentile, shared_machine};

/// A client that asks for metadata every `every` on one connection until `stop`, recording
/// each round trip's latency.
fn steady_client(
    addr: String,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<Vec<Duration>> {
    thread::spawn(move || {
        let mut client = RawClient::connect(&addr);
        let mut latencies = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let asked = Instant::now();
            assert_eq!(metadata(&mut client).brokers.len(), 1);
            latencies.push(asked.elapsed());
            thread::sleep(every);
        }
        latencies
    })
}

/// Clients that send their request one byte per second are cut off by --client-idle-timeout
/// (the timer runs from the last complete request, so trickling bytes does not extend it), while
/// a client sharing the sidecar keeps its usual latency.
#[test]
fn slowloris_clients_are_cut_off_by_the_idle_timeout() {
    let _machine = shared_machine();
    const SLOW: usize = 50;
    const IDLE: Duration = Duration::from_secs(3);
    let tansu = Tansu::start();
    // Each slow client holds a broker connection: the connect-rate limit is raised so that all
    // fifty connect at once and their idle timers start together.
    let sidecar = Sidecar::start(&tansu.addr(), &["--client-idle-timeout", "3s", "--broker-connect-rate", "500"]);
    let idle_before = sidecar.metric("kafka_sidecar_disconnects_total", &["cause=\"idle\""]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_client(sidecar.bootstrap(), Duration::from_millis(50), stop.clone());

    let slow: Vec<_> = (0..SLOW)
        .map(|i| {
            let addr = sidecar.bootstrap();
            thread::spawn(move || {
                let frame = metadata_frame(i as i32);
                let mut stream = TcpStream::connect(&addr).unwrap();
                let connected = Instant::now();
                // The read timeout paces the bytes: one a second, until the sidecar hangs up.
                stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut sent = 0;
                for byte in &frame {
                    if stream.write_all(std::slice::from_ref(byte)).is_err() {
                        return (Some(connected.elapsed()), sent);
                    }
                    sent += 1;
                    match stream.read(&mut [0u8; 1]) {
                        Ok(0) => return (Some(connected.elapsed()), sent),
                        Ok(_) => panic!("a response to an incomplete request"),
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return (Some(connected.elapsed()), sent),
                    }
                }
                (None, sent)
            })
        })
        .collect();
    let cut: Vec<_> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = steady.join().unwrap();
    latencies.sort_unstable();
    let idle = sidecar.metric("kafka_sidecar_disconnects_total", &["cause=\"idle\""]) - idle_before;
    let times: Vec<Duration> = cut.iter().filter_map(|(after, _)| *after).collect();
    assert_eq!(times.len(), SLOW, "every slow client is cut off: {cut:?}");
    let (first, last) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    let most_bytes = cut.iter().map(|(_, sent)| sent).max().unwrap();
    eprintln!(
        "[faults] slowloris: {} of {SLOW} slow clients cut off between {first:.2?} and {last:.2?} after connecting \
         (at most {most_bytes} bytes sent); idle disconnects +{idle}; steady client: {} requests, p50 {:.1?}, max \
         {:.1?}",
        times.len(),
        latencies.len(),
        percentile(&latencies, 0.5),
        latencies.last().unwrap()
    );
    assert!(first >= IDLE - Duration::from_millis(100), "{first:?}");
    assert!(last <= IDLE + Duration::from_secs(2), "{last:?}");
    assert_eq!(idle, SLOW as f64, "each counted with cause idle");
    assert!(*latencies.last().unwrap() < Duration::from_secs(1), "the steady client was held up");
    assert!(latencies.len() >= 40, "the steady client kept going: {} requests", latencies.len());
}

/// A Fetch v4 request frame: up to 1 MiB from offset 0 of `topic`'s partition 0.
fn fetch_frame(topic: &str, correlation_id: i32) -> Vec<u8> {
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
    use kafka_protocol::protocol::StrBytes;
    let partition = FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20);
    // Waits up to 500 ms for at least a byte, as clients do: Tansu answers a Fetch that may not
    // wait (max_wait_ms 0) with nothing at all.
    let request =
        FetchRequest::default().with_max_wait_ms(500).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![partition]),
        ]);
    kafka_sidecar::wire::encode_request(ApiKey::Fetch, 4, correlation_id, &request).unwrap().to_vec()
}

/// A client pipelines Fetch requests (1 MiB answers) and Metadata requests and never reads.
/// Once the responses back up, the sidecar stops reading from that client (TCP flow control
/// all the way), so its memory stays flat and other clients keep their latency; after
/// --user-timeout of a zero window the kernel gives up on the stalled socket and the sidecar
/// closes that one session. A client that only pauses reading gets every response, in order.
#[test]
fn client_that_never_reads_cannot_grow_the_sidecar() {
    let _machine = shared_machine();
    const USER_TIMEOUT: Duration = Duration::from_secs(5);
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &["--user-timeout", "5s", "--log-level", "kafka_sidecar=debug"]);
    let topic = "faults-unread";
    support::create_topics(&sidecar.bootstrap(), &[topic], 1);
    let record = "x".repeat(16 * 1024);
    let input: String = (0..64).map(|i| format!("{i}{record}\n")).collect();
    let produced = support::kcat_with_input(&["-b", &sidecar.bootstrap(), "-P", "-t", topic], &input);
    support::expect_success("kcat -P", &produced);
    let mut probe = RawClient::connect(&sidecar.bootstrap());
    probe.send_bytes(&fetch_frame(topic, 1)).unwrap();
    let fetch_size = probe.recv().unwrap().len();
    assert!(fetch_size > 512 * 1024, "a Fetch answer of {fetch_size} bytes");
    drop(probe);

    let pid = sidecar.pid();
    let rss_before = proc_status_kib(pid, "VmRSS");
    let read_before = sidecar.metric("kafka_sidecar_requests_total", &["node=\"111\""]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_client(sidecar.bootstrap(), Duration::from_millis(100), stop.clone());

    // Every tenth request a Fetch: 10,000 Fetch requests would ask for 10 GiB of answers.
    const REQUESTS: i32 = 100_000;
    let hog_addr = sidecar.broker_addr(support::TANSU_NODE_ID);
    let topic_name = topic.to_owned();
    let hog = thread::spawn(move || {
        let mut stream = TcpStream::connect(&hog_addr).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut written = 0;
        for i in 0..REQUESTS {
            let frame = if i % 10 == 0 { fetch_frame(&topic_name, i) } else { metadata_frame(i) };
            if stream.write_all(&frame).is_err() {
                break;
            }
            written += 1;
        }
        (stream, written)
    });
    // A client that pauses reading for less than --user-timeout gets everything, in order.
    let late_addr = sidecar.broker_addr(support::TANSU_NODE_ID);
    let topic_name = topic.to_owned();
    let late_reader = thread::spawn(move || {
        const LATE: i32 = 1000;
        let mut client = RawClient::connect(&late_addr);
        for i in 0..LATE {
            let frame = if i % 10 == 0 { fetch_frame(&topic_name, i) } else { metadata_frame(i) };
            client.send_bytes(&frame).unwrap();
        }
        thread::sleep(USER_TIMEOUT / 2);
        let mut bytes = 0;
        for i in 0..LATE {
            let frame = client.recv().expect("a response after the pause");
            assert_eq!(frame[4..8], i.to_be_bytes(), "responses in request order");
            bytes += frame.len();
        }
        (LATE, bytes)
    });
    let started = Instant::now();
    let mut rss_max = rss_before;
    while started.elapsed() < USER_TIMEOUT + Duration::from_secs(4) {
        rss_max = rss_max.max(proc_status_kib(pid, "VmRSS"));
        thread::sleep(Duration::from_millis(250));
    }
    let (mut hog, written) = hog.join().unwrap();
    let (late_answered, late_bytes) = late_reader.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = steady.join().unwrap();
    latencies.sort_unstable();
    let read_by_sidecar = sidecar.metric("kafka_sidecar_requests_total", &["node=\"111\""]) - read_before;

    // What the hog finds when it finally reads.
    hog.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (mut received, mut buf) = (0usize, vec![0u8; 1 << 16]);
    let end = loop {
        match hog.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => received += n,
            Err(e) => break Some(e),
        }
    };
    let logs = sidecar.logs();
    // The longest session on the broker port is the hog's (kcat's and the probe's are short).
    let session = logs
        .lines()
        .filter(|l| l.contains("client connection closed") && l.contains("node=111"))
        .filter_map(|l| l.rsplit_once("duration=").map(|(_, d)| logged_duration(d)))
        .max()
        .unwrap_or_default();
    let hwm = proc_status_kib(pid, "VmHWM");
    eprintln!(
        "[faults] never-reading client: wrote {written} requests ({} Fetch) into its socket, the sidecar read \
         {read_by_sidecar} of them; sidecar RSS {:.1} MiB before, at most {:.1} MiB while it stalled, VmHWM {:.1} MiB; \
         steady client p50 {:.1?} max {:.1?}; the stalled session was closed after {session:.2?}; the hog then read \
         {received} bytes and got {end:?}; a client that paused reading for {:?} got all {late_answered} \
         responses ({:.0} MiB) in order",
        written / 10,
        mib(rss_before),
        mib(rss_max),
        mib(hwm),
        percentile(&latencies, 0.5),
        latencies.last().unwrap(),
        USER_TIMEOUT / 2,
        late_bytes as f64 / (1 << 20) as f64,
    );
    assert!(rss_max < rss_before + 32 * 1024, "sidecar RSS grew from {} to {} MiB", mib(rss_before), mib(rss_max));
    assert!((read_by_sidecar as i32) < written, "the sidecar stopped reading from the stalled client");
    assert!(*latencies.last().unwrap() < Duration::from_secs(1), "the steady client was held up");
    assert!(
        logs.contains("client went away before its response") && logs.contains("Connection timed out"),
        "the kernel's TCP_USER_TIMEOUT ended the stalled session:\n{logs}"
    );
    assert!(
        end.as_ref().is_some_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "the stalled client is reset: {end:?}"
    );
    assert!(session >= USER_TIMEOUT && session <= USER_TIMEOUT + Duration::from_secs(3), "{session:?}");
}

/// A duration as the sidecar logs it (`Debug` of `Duration`: `5.42s`, `2.7ms`, `222.3µs`).
fn logged_duration(text: &str) -> Duration {
    let text = text.trim();
    let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, *scale)))
        .unwrap_or_else(|| panic!("not a duration: {text}"));
    Duration::from_secs_f64(number.parse::<f64>().unwrap_or_else(|_| panic!("not a duration: {text}")) * scale)
}

/// --max-inflight bounds the requests awaiting a response on one client connection: a client
/// pipelining requests to a broker that does not answer gets no more than that many forwarded,
/// so neither the broker nor the sidecar's bookkeeping grows with what the client sends.
#[test]
fn pipelined_requests_are_bounded_by_max_inflight() {
    let _machine = shared_machine();
    const MAX_INFLIGHT: usize = 16;
    const SENT: i32 = 200_000;
    let (broker, per_connection) = mute_broker();
    let sidecar = Sidecar::start(&broker, &["--max-inflight", &MAX_INFLIGHT.to_string()]);
    let pid = sidecar.pid();
    let rss_before = proc_status_kib(pid, "VmRSS");

    let addr = sidecar.bootstrap();
    let writer = thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let (mut written, mut batch) = (0, Vec::new());
        for i in 0..SENT {
            batch.extend_from_slice(&metadata_frame(i));
            if batch.len() > 64 * 1024 || i == SENT - 1 {
                if stream.write_all(&batch).is_err() {
                    break;
                }
                written = i + 1;
                batch.clear();
            }
        }
        (stream, written)
    });
    thread::sleep(Duration::from_secs(3));
    let (_stream, written) = writer.join().unwrap();
    thread::sleep(Duration::from_millis(500));
    // The client's session is the busiest connection (the control connection sends ApiVersions).
    let forwarded = per_connection.lock().unwrap().iter().copied().max().unwrap_or(0);
    let rss_after = proc_status_kib(pid, "VmRSS");
    eprintln!(
        "[faults] mute broker, --max-inflight {MAX_INFLIGHT}: the client wrote {written} requests, the sidecar \
         forwarded {forwarded}; RSS {:.1} -> {:.1} MiB",
        mib(rss_before),
        mib(rss_after)
    );
    assert!(forwarded <= 2 * MAX_INFLIGHT + 1, "{forwarded} requests forwarded with --max-inflight {MAX_INFLIGHT}");
}
