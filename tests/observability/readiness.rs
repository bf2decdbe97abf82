//! Readiness through start-up, cluster loss and shutdown.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataResponse};
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::scripted::{api_versions_v0, metadata_v1, scripted_broker};
use support::{Sidecar, Tansu};

use super::{parse_samples, scrape, sum_of, wait_for_metrics};

/// Polls `path` until it answers `status`; returns the body.
fn wait_for_status(sidecar: &Sidecar, path: &str, status: u16, timeout: Duration) -> String {
    let (got, body) = sidecar.wait_for_status(path, status, timeout);
    assert_eq!(got, status, "{path} still {got} {body:?} after {timeout:?}\n{}", sidecar.logs());
    body
}

#[test]
fn readyz_follows_the_first_metadata_and_the_cluster() {
    // A broker that is not up yet: its port is reserved, nothing listens there.
    let port = support::free_port_base(1);
    let sidecar = Sidecar::start(&format!("127.0.0.1:{port}"), &["--metadata-refresh", "1s"]);
    wait_for_metrics(&sidecar, "two failed metadata refreshes", Duration::from_secs(15), |samples| {
        sum_of(samples, "kafka_sidecar_metadata_refreshes_total", &[("result", "error")]) >= 2.0
    });
    assert_eq!(sidecar.admin_get("/readyz"), (503, "not ready: no metadata from the cluster yet\n".to_owned()));
    assert_eq!(sidecar.admin_get("/healthz"), (200, "ok\n".to_owned()));
    let samples = parse_samples(&scrape(&sidecar));
    assert!(
        sum_of(&samples, "kafka_sidecar_upstream_connects_total", &[("node", "control"), ("result", "refused")]) >= 2.0
    );
    assert_eq!(sum_of(&samples, "kafka_sidecar_metadata_refreshes_total", &[("result", "ok")]), 0.0);

    // The broker comes up on that port.
    let mut tansu = Tansu::start_on(port).unwrap_or_else(|logs| panic!("Tansu on reserved port {port}: {logs}"));
    let started = Instant::now();
    assert_eq!(wait_for_status(&sidecar, "/readyz", 200, Duration::from_secs(10)), "ready\n");
    let became_ready = started.elapsed();
    assert!(
        sum_of(&parse_samples(&scrape(&sidecar)), "kafka_sidecar_metadata_refreshes_total", &[("result", "ok")]) >= 1.0
    );

    // It goes away again: ready no more, healthy still.
    tansu.kill();
    let body = wait_for_status(&sidecar, "/readyz", 503, Duration::from_secs(10));
    assert_eq!(body, "not ready: cluster unreachable\n");
    assert_eq!(sidecar.admin_get("/healthz"), (200, "ok\n".to_owned()));
    eprintln!("[observability] ready {became_ready:?} after the broker came up");
}

#[test]
fn readyz_reports_shutting_down_while_an_in_flight_request_drains() {
    // Metadata from client "slow" is answered after 2 s; everything else at once.
    const DELAY: Duration = Duration::from_secs(2);
    let slow_received = Arc::new(AtomicBool::new(false));
    let flag = slow_received.clone();
    let broker = scripted_broker(Arc::new(move |frame: &[u8]| {
        let correlation_id = &frame[8..12];
        let client_id_len = i16::from_be_bytes([frame[12], frame[13]]) as usize;
        match i16::from_be_bytes([frame[4], frame[5]]) {
            18 => Some(api_versions_v0(correlation_id)),
            3 if &frame[14..14 + client_id_len] == b"slow" => {
                flag.store(true, Ordering::SeqCst);
                thread::sleep(DELAY);
                Some(metadata_v1(correlation_id))
            }
            3 => Some(metadata_v1(correlation_id)),
            _ => None,
        }
    }));
    let mut sidecar = Sidecar::start(&broker, &[]);
    assert_eq!(wait_for_status(&sidecar, "/readyz", 200, Duration::from_secs(10)), "ready\n");

    let mut client = RawClient::connect(&sidecar.bootstrap());
    client.send_bytes(&raw::raw_request(3, 1, 77, "slow", &(-1i32).to_be_bytes())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !slow_received.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the broker never received the slow request");
        thread::sleep(Duration::from_millis(10));
    }
    let terminated = Instant::now();
    sidecar.terminate();

    // Draining: not ready, still healthy, new connections refused, the process still running.
    let body = wait_for_status(&sidecar, "/readyz", 503, Duration::from_secs(1));
    assert_eq!(body, "not ready: shutting down\n");
    assert_eq!(sidecar.admin_get("/healthz").0, 200);
    let deadline = Instant::now() + Duration::from_secs(1);
    while TcpStream::connect(sidecar.bootstrap()).is_ok() {
        assert!(Instant::now() < deadline, "the bootstrap listener still accepts while draining");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(terminated.elapsed() < DELAY, "checks must run while the request is still in flight");
    assert!(sidecar.is_running(), "exited before the in-flight response was delivered");

    // The in-flight response still arrives, then the process exits 0.
    let frame = client.recv().expect("the in-flight response is delivered during the drain");
    let metadata: MetadataResponse = raw::decode_response(ApiKey::Metadata, 1, 77, &frame);
    assert_eq!(metadata.brokers[0].port, i32::from(sidecar.broker_port_base()) + 1, "rewritten as usual");
    let answered = terminated.elapsed();
    let status = sidecar.wait_exit(Duration::from_secs(10)).expect("the sidecar exits after draining");
    assert_eq!(status.code(), Some(0), "{}", sidecar.logs());
    assert!(client.is_closed_by_peer());
    eprintln!("[observability] drained: response {answered:?} after SIGTERM, exit 0 after {:?}", terminated.elapsed());
}
