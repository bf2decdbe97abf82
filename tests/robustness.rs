//! Faults on either side: a broker that sends a malformed response, a broker that goes away
//! mid-request, and the socket options of live connections as the kernel reports them.

use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::scripted::{Script, api_versions_v0, metadata_v1, response, scripted_broker, serve_scripted};
use support::{Sidecar, Tansu};

#[test]
fn malformed_response_closes_only_the_client_that_asked() {
    // Metadata v1 requests from client "evil" get a hostile broker count; everyone else a good one.
    let broker = scripted_broker(Arc::new(|frame: &[u8]| {
        let correlation_id = &frame[8..12];
        let api_key = i16::from_be_bytes([frame[4], frame[5]]);
        let client_id_len = i16::from_be_bytes([frame[12], frame[13]]) as usize;
        let client_id = &frame[14..14 + client_id_len];
        if api_key == 18 {
            return Some(api_versions_v0(correlation_id));
        }
        if client_id == b"evil" {
            let mut body = i32::MAX.to_be_bytes().to_vec();
            body.extend_from_slice(&[0; 8]);
            return Some(response(correlation_id, &body));
        }
        Some(metadata_v1(correlation_id))
    }));
    let sidecar = Sidecar::start(&broker, &[]);
    let mut healthy = RawClient::connect(&sidecar.bootstrap());
    let ask = |client: &mut RawClient| -> MetadataResponse {
        client.request(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None))
    };
    assert_eq!(ask(&mut healthy).brokers[0].port, sidecar.broker_port_base() as i32 + 1);

    let mut evil = RawClient::connect(&sidecar.bootstrap());
    evil.send_bytes(&raw::raw_request(3, 1, 9, "evil", &(-1i32).to_be_bytes())).unwrap();
    assert!(evil.is_closed_by_peer(), "the client that got the malformed response is disconnected");
    assert!(sidecar.wait_for_log("cannot rewrite broker response", Duration::from_secs(5)), "{}", sidecar.logs());
    assert!(sidecar.logs().contains("malformed Metadata v1 response"), "{}", sidecar.logs());

    assert_eq!(ask(&mut healthy).brokers.len(), 1, "other clients keep working");
}

#[test]
fn broker_closing_mid_request_closes_the_client_cleanly() {
    // ApiVersions is answered, Metadata makes the broker hang up without answering.
    let broker = scripted_broker(Arc::new(|frame: &[u8]| {
        let correlation_id = &frame[8..12];
        let api_key = i16::from_be_bytes([frame[4], frame[5]]);
        (api_key == 18).then(|| api_versions_v0(correlation_id))
    }));
    let mut sidecar = Sidecar::start(&broker, &[]);
    for _ in 0..3 {
        let mut client = RawClient::connect(&sidecar.bootstrap());
        client.send(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None));
        assert!(client.is_closed_by_peer(), "client must be disconnected, not left hanging");
    }
    assert!(sidecar.is_running(), "the sidecar survives broker disconnects");
}

/// `ss -tnoi` lines for established TCP connections matching `filter`.
fn ss(filter: &str) -> String {
    let out = Command::new("ss").args(["-tnoi", "state", "established", filter]).output().expect("run ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn keepalive_runs_on_client_and_broker_sockets() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &["--keepalive-idle", "42s", "--keepalive-interval", "5s"]);
    let mut client = RawClient::connect(&sidecar.bootstrap());
    let _: MetadataResponse = client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));

    // The sidecar's end of the client connection, and its connection to the broker.
    let client_side = ss(&format!("( sport = :{} )", sidecar.bootstrap_port()));
    let broker_side = ss(&format!("( dport = :{} )", tansu.port()));
    for (what, text) in [("client socket", &client_side), ("broker socket", &broker_side)] {
        assert!(text.contains("timer:(keepalive,"), "{what}: no keepalive timer in:\n{text}");
        // The kernel arms the timer with the configured idle time (42s, counting down).
        let armed = text.split("timer:(keepalive,").nth(1).and_then(|rest| rest.split("sec").next());
        let seconds: u32 = armed.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{what}: {text}"));
        assert!((30..=42).contains(&seconds), "{what}: keepalive armed at {seconds}s, expected ~42s:\n{text}");
    }
}

#[test]
fn retried_admin_request_lost_in_flight_is_never_resent() {
    // Node 1 answers CreateTopics with 41; node 2, the controller, hangs up on it. The sidecar
    // cannot know whether node 2 created the topic, so it must not send it again.
    let (one, two) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let ports = [one.local_addr().unwrap().port(), two.local_addr().unwrap().port()];
    let creates_seen_by_controller = Arc::new(AtomicU32::new(0));
    let script = |is_controller: bool, creates: Arc<AtomicU32>| -> Script {
        Arc::new(move |frame: &[u8]| {
            let correlation_id = &frame[8..12];
            match i16::from_be_bytes([frame[4], frame[5]]) {
                18 => Some(api_versions_v0(correlation_id)),
                3 => Some(support::scripted::two_broker_metadata_v1(correlation_id, ports)),
                19 if is_controller => {
                    creates.fetch_add(1, Ordering::SeqCst);
                    None
                }
                19 => {
                    // CreateTopics v0 answer: ["lost", 41]
                    let mut body = 1i32.to_be_bytes().to_vec();
                    body.extend_from_slice(&4i16.to_be_bytes());
                    body.extend_from_slice(b"lost");
                    body.extend_from_slice(&41i16.to_be_bytes());
                    Some(response(correlation_id, &body))
                }
                _ => None,
            }
        })
    };
    serve_scripted(one, script(false, creates_seen_by_controller.clone()));
    serve_scripted(two, script(true, creates_seen_by_controller.clone()));
    let sidecar = Sidecar::start(&format!("127.0.0.1:{}", ports[0]), &[]);
    assert!(support::wait_for_port(&sidecar.broker_addr(1), Duration::from_secs(10)));

    let mut client = RawClient::connect(&sidecar.broker_addr(1));
    client.send_bytes(&raw::create_topics_v0(5, "lost")).unwrap();
    assert!(client.is_closed_by_peer(), "the client is disconnected rather than answered with a guess");
    assert!(sidecar.wait_for_log("may have been applied but its answer was lost", Duration::from_secs(5)));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(creates_seen_by_controller.load(Ordering::SeqCst), 1, "sent to the controller exactly once");
}

#[test]
fn control_connection_survives_a_broker_restart() {
    let mut tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &["--metadata-refresh", "200ms"]);
    let refreshed = |sidecar: &Sidecar| sidecar.metric("kafka_sidecar_metadata_refreshes_total", &["result=\"ok\""]);
    thread::sleep(Duration::from_millis(500));
    let before = refreshed(&sidecar);
    assert!(before >= 1.0);

    // The broker goes away, dropping the sidecar's idle control connection, and comes back.
    tansu.restart();
    thread::sleep(Duration::from_millis(1500));
    let after = refreshed(&sidecar);
    assert!(after >= before + 2.0, "refreshes resumed on a new connection: {before} then {after}");
    let mut client = RawClient::connect(&sidecar.bootstrap());
    let metadata: MetadataResponse = client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    assert_eq!(metadata.brokers[0].port, sidecar.broker_port_base() as i32 + 111);
}

#[test]
fn invalid_configuration_exits_64_naming_each_setting() {
    let output = support::sidecar_command()
        .args(["--listen-host", "nowhere", "--keepalive-idle", "soon", "--log-format", "xml"])
        .output()
        .expect("run the sidecar");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for setting in ["--bootstrap-server", "--listen-host", "--keepalive-idle", "--log-format"] {
        assert!(stderr.contains(setting), "{setting} not named in:\n{stderr}");
    }
}

#[test]
fn invalid_configuration_reports_type_errors_from_flags_and_environment_together() {
    let output = support::sidecar_command()
        .args(["--bootstrap-port", "99999", "--worker-threads", "0", "--connect-timeout", "1500"])
        .env("KAFKA_SIDECAR_MAX_INFLIGHT", "abc")
        .output()
        .expect("run the sidecar");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    for setting in ["--bootstrap-port", "--worker-threads", "--connect-timeout", "--max-inflight"] {
        assert!(stderr.contains(setting), "{setting} not named in:\n{stderr}");
    }
    assert!(stderr.contains("\"1500\" has no unit"), "{stderr}");
}

#[test]
fn invalid_configuration_of_an_unknown_flag_exits_64() {
    let output = support::sidecar_command().arg("--unknown-flag").output().expect("run the sidecar");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--unknown-flag"), "{stderr}");
}

#[test]
fn check_config_prints_the_settings_by_flag_name_without_the_password() {
    let output = support::sidecar_command()
        .args(["--bootstrap-server", "b-1:9092", "--sasl-mechanism", "PLAIN", "--sasl-username", "app"])
        .arg("--check-config")
        .env("KAFKA_SIDECAR_SASL_PASSWORD", "s3cret-value")
        .output()
        .expect("run the sidecar");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for line in ["bootstrap-port = 9092", "connect-timeout = \"5s\"", "sasl-password = \"***\""] {
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("s3cret-value") && !stderr.contains("s3cret-value"), "{stdout}{stderr}");
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    // NO_COLOR set but empty does not ask for plain output; the log file still must not get colours.
    let sidecar = Sidecar::builder("127.0.0.1:1").env("NO_COLOR", "").start();
    assert!(sidecar.wait_for_log("kafka-sidecar listening", Duration::from_secs(5)), "{}", sidecar.logs());
    assert!(!sidecar.logs().contains('\u{1b}'), "escape codes in:\n{:?}", sidecar.logs());
}

#[test]
fn clients_beyond_the_connection_limit_wait_for_a_free_slot() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &["--max-client-connections", "2"]);
    let ask = |client: &mut RawClient| -> MetadataResponse {
        client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None))
    };
    // The test harness's start-up probe connections may hold slots briefly; let them go.
    thread::sleep(Duration::from_millis(500));
    let mut first = RawClient::connect(&sidecar.bootstrap());
    let mut second = RawClient::connect(&sidecar.bootstrap());
    ask(&mut first);
    ask(&mut second);

    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = RawClient::connect(&sidecar.bootstrap());
    let id = third.send(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    let waiting = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let frame = third.recv().expect("served once a slot frees");
        (started.elapsed(), frame)
    });
    thread::sleep(Duration::from_millis(700));
    assert!(!waiting.is_finished(), "the third client must wait at the limit");
    drop(first);
    let (waited, frame) = waiting.join().unwrap();
    let _: MetadataResponse = raw::decode_response(ApiKey::Metadata, 4, id, &frame);
    assert!(waited >= Duration::from_millis(600), "served only after a slot freed ({waited:?})");
    assert!(sidecar.logs().contains("client connection limit reached"));
    ask(&mut second);
}
