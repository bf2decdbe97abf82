//! A thousand held connections and a connection storm.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest};
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::http::scrape_metric;
use support::process::{mib, open_fds, proc_status_kib};
use support::{Sidecar, Tansu};

use super::{count_lines, metadata, percentile, whole_machine};

/// Makes sure this process (and the sidecar and broker it starts, which inherit the limit) may
/// open `needed` files, raising the soft limit to the hard one with prlimit(1) if it is lower.
fn ensure_fd_limit(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("no open-files limit");
    let values: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let (soft, hard) = (values[0], values[1]);
    if soft >= needed {
        return;
    }
    assert!(hard >= needed, "this test needs {needed} open files; the hard limit is {hard}");
    let status = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={hard}:{hard}")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "cannot raise the open-files limit from {soft} to {hard}");
}

async fn round_trip(stream: &mut tokio::net::TcpStream, frame: &[u8]) -> std::io::Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(frame).await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await?;
    if body.get(..4) != frame.get(8..12) {
        return Err(std::io::Error::other("response to another request"));
    }
    Ok(body.len())
}

/// A thousand clients connect, ask for metadata and stay; then 5,000 more connect within 10 s,
/// each asking ApiVersions and leaving. Every request is answered, the sidecar's memory stays
/// bounded and it is healthy afterwards, with every connection and descriptor given back.
#[test]
fn thousand_held_connections_and_a_connection_storm() {
    let _machine = whole_machine();
    const HELD: usize = 1000;
    const STORM: u32 = 5000;
    const STORM_SPAN: Duration = Duration::from_secs(10);
    ensure_fd_limit(8192);
    let tansu = Tansu::start();
    // Room for the held connections and the storm's few concurrent ones; beyond it clients
    // would wait for a free slot (they are not refused).
    // Each held client keeps a broker connection of its own: the connect-rate limit is raised so
    // that a thousand open in seconds.
    let sidecar = Sidecar::start(&tansu.addr(), &["--max-client-connections", "1100", "--broker-connect-rate", "2000"]);
    assert_eq!(sidecar.wait_for_readyz(200, Duration::from_secs(10)).0, 200);
    let pid = sidecar.pid();
    let (rss_start, fds_start) = (proc_status_kib(pid, "VmRSS"), open_fds(pid));
    let bootstrap = sidecar.bootstrap();
    let metadata_frame =
        kafka_sidecar::wire::encode_request(ApiKey::Metadata, 4, 7, &MetadataRequest::default().with_topics(None))
            .unwrap();
    let api_versions = kafka_sidecar::wire::encode_request(
        ApiKey::ApiVersions,
        0,
        9,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // A thousand held connections.
    let started = Instant::now();
    let mut held = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..HELD {
            let (bootstrap, metadata_frame) = (bootstrap.clone(), metadata_frame.clone());
            tasks.spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&bootstrap).await?;
                tokio::time::timeout(Duration::from_secs(30), round_trip(&mut stream, &metadata_frame))
                    .await
                    .map_err(std::io::Error::other)??;
                Ok::<_, std::io::Error>(stream)
            });
        }
        let mut held = Vec::new();
        while let Some(result) = tasks.join_next().await {
            held.push(result.unwrap().expect("a held client's Metadata request failed"));
        }
        held
    });
    let held_after = started.elapsed();
    assert_eq!(held.len(), HELD);
    assert_eq!(sidecar.metric("kafka_sidecar_client_connections", &[]), HELD as f64);
    let (rss_held, fds_held) = (proc_status_kib(pid, "VmRSS"), open_fds(pid));

    // The storm, on top of the held connections, with the open connections sampled meanwhile.
    let storm_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (admin, over) = (sidecar.admin_addr(), storm_over.clone());
        thread::spawn(move || {
            let mut peak = 0f64;
            while !over.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(scrape_metric(&admin, "kafka_sidecar_client_connections", &[]));
                thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let started = Instant::now();
    let mut latencies = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        for i in 0..STORM {
            tokio::time::sleep_until(start + STORM_SPAN * i / STORM).await;
            let (bootstrap, api_versions) = (bootstrap.clone(), api_versions.clone());
            tasks.spawn(async move {
                let asked = Instant::now();
                let mut stream = tokio::net::TcpStream::connect(&bootstrap).await?;
                tokio::time::timeout(Duration::from_secs(30), round_trip(&mut stream, &api_versions))
                    .await
                    .map_err(std::io::Error::other)??;
                Ok::<_, std::io::Error>(asked.elapsed())
            });
        }
        let (mut latencies, mut failures) = (Vec::new(), Vec::new());
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(latency) => latencies.push(latency),
                Err(error) => failures.push(error.to_string()),
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {STORM} storm connections failed: {:?}",
            failures.len(),
            &failures[..5.min(failures.len())]
        );
        latencies
    });
    let storm_took = started.elapsed();
    storm_over.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let waited = count_lines(&sidecar.logs(), "client connection limit reached");
    latencies.sort_unstable();

    // The held clients are still served, then leave.
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for mut stream in held.drain(..) {
            let metadata_frame = metadata_frame.clone();
            tasks.spawn(async move { round_trip(&mut stream, &metadata_frame).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().expect("a held client was not served after the storm");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while sidecar.metric("kafka_sidecar_client_connections", &[]) > 0.0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    let hwm = proc_status_kib(pid, "VmHWM");
    let (rss_end, fds_end) = (proc_status_kib(pid, "VmRSS"), open_fds(pid));
    eprintln!(
        "[faults] load: {HELD} held connections up in {held_after:.2?} (RSS {:.1} -> {:.1} MiB, fds {fds_start} -> \
         {fds_held}); storm of {STORM} took {storm_took:.2?}, ApiVersions latency p50 {:.1?} p99 {:.1?} max \
         {:.1?}, at most {peak} connections open when sampled (limit reached {waited} times); VmHWM {:.1} MiB; \
         after: RSS {:.1} MiB, fds {fds_end}",
        mib(rss_start),
        mib(rss_held),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        mib(hwm),
        mib(rss_end),
    );
    assert_eq!(latencies.len(), STORM as usize);
    assert_eq!(sidecar.metric("kafka_sidecar_client_connections", &[]), 0.0, "every session ended");
    assert!(fds_end <= fds_start + 10, "descriptors given back: {fds_start} at start, {fds_end} at the end");
    assert!(hwm < 160 * 1024, "VmHWM {} MiB", mib(hwm));
    assert_eq!(sidecar.admin_get("/readyz").0, 200);
    let mut client = RawClient::connect(&sidecar.bootstrap());
    assert_eq!(metadata(&mut client).brokers.len(), 1);
    drop(tansu);
}
