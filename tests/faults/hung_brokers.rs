//! Brokers that stop answering while their connections stay up.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::http::metric_in;
use support::{Sidecar, Tansu};

use super::{mute_broker, shared_machine};

/// A relay in front of a broker that can be muted: it keeps reading both sides (so TCP keeps
/// acknowledging, and keepalive sees a live peer) but forwards nothing, as a hung broker process
/// looks.
struct MutableRelay {
    addr: String,
    mute: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn mutable_relay(upstream: String) -> MutableRelay {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    fn pump(mut from: TcpStream, mut to: TcpStream, mute: Arc<AtomicBool>) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) if !mute.load(Ordering::SeqCst) => {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mute = Arc::new(AtomicBool::new(false));
    let muted = mute.clone();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(broker) = TcpStream::connect(&upstream) else { continue };
            let (c, b) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
            let (m1, m2) = (muted.clone(), muted.clone());
            thread::spawn(move || pump(client, broker, m1));
            thread::spawn(move || pump(b, c, m2));
        }
    });
    MutableRelay { addr, mute }
}

/// A bootstrap broker that stops answering while its connections stay up (the process hangs;
/// the kernel still acknowledges) must not freeze the sidecar's metadata refresh: refreshes keep
/// being attempted, and readiness reports the cluster unreachable unless one succeeds.
#[test]
fn metadata_refresh_does_not_hang_on_a_broker_that_stops_answering() {
    let _machine = shared_machine();
    let tansu = Tansu::start();
    let relay = mutable_relay(tansu.addr());
    let sidecar = Sidecar::start(&relay.addr, &["--metadata-refresh", "1s"]);
    assert_eq!(sidecar.wait_for_readyz(200, Duration::from_secs(10)).0, 200);
    let refreshes = |sidecar: &Sidecar| {
        let text = sidecar.admin_get("/metrics").1;
        let ok = metric_in(&text, "kafka_sidecar_metadata_refreshes_total", &["result=\"ok\""]);
        (ok, metric_in(&text, "kafka_sidecar_metadata_refreshes_total", &["result=\"error\""]))
    };
    thread::sleep(Duration::from_millis(1500));

    relay.mute.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok_before, errors_before) = refreshes(&sidecar);
    thread::sleep(Duration::from_secs(15));
    let (ok_after, errors_after) = refreshes(&sidecar);
    let (code, body) = sidecar.admin_get("/readyz");
    eprintln!(
        "[faults] hung bootstrap broker: in 15 s, refreshes ok +{} error +{}; /readyz {code} {body:?}",
        ok_after - ok_before,
        errors_after - errors_before
    );
    assert!(ok_after + errors_after > ok_before + errors_before, "the metadata refresh is stuck");
    if ok_after == ok_before {
        assert_eq!(code, 503, "no refresh succeeded, yet ready: {body}");
    }

    relay.mute.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sidecar.wait_for_readyz(200, Duration::from_secs(20)).0, 200, "ready again");
}

/// An admin request answered NOT_CONTROLLER is retried within its budget ("it never hangs"),
/// even when the broker the sidecar asks for the controller accepts the connection and then
/// never answers: the client gets an answer, or its connection is closed, once the budget is
/// spent.
#[test]
fn admin_retry_does_not_hang_on_a_broker_that_never_answers() {
    let _machine = shared_machine();
    const BUDGET: Duration = Duration::from_secs(2);
    let (mute, asked_mute) = mute_broker();
    let mute_port: u16 = mute.rsplit_once(':').unwrap().1.parse().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = [listener.local_addr().unwrap().port(), mute_port];
    // Node 1 answers metadata (node 2 is the controller) and says 41 to CreateTopics.
    support::scripted::serve_scripted(
        listener,
        std::sync::Arc::new(move |frame: &[u8]| {
            let correlation_id = &frame[8..12];
            match i16::from_be_bytes([frame[4], frame[5]]) {
                18 => Some(support::scripted::api_versions_v0(correlation_id)),
                3 => Some(support::scripted::two_broker_metadata_v1(correlation_id, ports)),
                19 => {
                    let mut body = 1i32.to_be_bytes().to_vec();
                    body.extend_from_slice(&5i16.to_be_bytes());
                    body.extend_from_slice(b"stuck");
                    body.extend_from_slice(&41i16.to_be_bytes());
                    Some(support::scripted::response(correlation_id, &body))
                }
                _ => None,
            }
        }),
    );
    let sidecar = Sidecar::start(&format!("127.0.0.1:{}", ports[0]), &["--admin-retry-budget", "2s"]);
    assert!(support::wait_for_port(&sidecar.broker_addr(1), Duration::from_secs(10)), "{}", sidecar.logs());

    let mut client = RawClient::connect(&sidecar.broker_addr(1));
    let asked = Instant::now();
    client.send_bytes(&raw::create_topics_v0(5, "stuck")).unwrap();
    let outcome = client.recv().map(|frame| raw::read_topic_errors_v0(&frame));
    let waited = asked.elapsed();
    eprintln!(
        "[faults] admin retry with a mute broker: after {waited:.2?} the client got {outcome:?}; requests the \
         mute broker read, by connection: {:?}",
        asked_mute.lock().unwrap()
    );
    assert!(
        waited <= BUDGET + Duration::from_secs(3),
        "the client waited {waited:?} (budget {BUDGET:?}) and got {outcome:?}"
    );
}
