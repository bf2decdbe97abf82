//! A broker killed and restarted under traffic, and one missing at start-up.

use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest};
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use serde_json::Value;
use support::background::Background;
use support::http::metric_in;
use support::numbered;
use support::{Sidecar, Tansu};

use super::{count_lines, shared_machine};

/// A producer (acks=all, retries) and a consumer run through the sidecar while the broker is
/// killed, stays down for a few seconds and comes back empty (Tansu keeps its log in memory).
/// Messages the old broker acknowledged died with it; every message the restarted broker
/// acknowledged must be in its log exactly once, every message must be acknowledged by one of
/// the two, the sidecar must retry with backoff, not in a loop, and keep running.
#[test]
fn broker_restart_under_traffic_loses_no_acknowledged_message() {
    let _machine = shared_machine();
    const COUNT: usize = 2400;
    const OUTAGE: Duration = Duration::from_secs(3);
    let topic = "faults-restart";
    let mut tansu = Tansu::start();
    let port = tansu.port();
    let mut sidecar = Sidecar::start(&tansu.addr(), &[]);
    let sidecar_pid = sidecar.pid();
    let bootstrap = sidecar.bootstrap();
    support::create_topics(&bootstrap, &[topic], 1);

    let count = COUNT.to_string();
    let last = (COUNT - 1).to_string();
    let consumer = Background::python(
        "numbered.py",
        &["consume", "--bootstrap", &bootstrap, "--topic", topic, "--until-value", &last, "--timeout", "60"],
    );
    let mut producer = Background::python(
        "numbered.py",
        &["produce", "--bootstrap", &bootstrap, "--topic", topic, "--count", &count, "--rate", "200"],
    );
    let progress = producer.wait_line(Duration::from_secs(30), |line| line.contains("\"acked\": 300"));
    assert!(progress.is_some(), "no progress before the restart: {:?}\n{}", producer.seen(), producer.stderr_text());

    let before = sidecar.admin_get("/metrics").1;
    // Failed broker connect attempts, of one node or (None) of all.
    let failed_connects = |text: &str, node: Option<&str>| {
        let node = node.map(|node| format!("node=\"{node}\""));
        let labels: Vec<&str> = node.iter().map(String::as_str).collect();
        let ok: Vec<&str> = labels.iter().copied().chain(["result=\"ok\""]).collect();
        metric_in(text, "kafka_sidecar_upstream_connects_total", &labels)
            - metric_in(text, "kafka_sidecar_upstream_connects_total", &ok)
    };
    let accepted = |text: &str| metric_in(text, "kafka_sidecar_client_connections_total", &[]);
    tansu.kill();
    let killed = Instant::now();
    let mut not_ready_seen = false;
    while killed.elapsed() < OUTAGE {
        not_ready_seen |= sidecar.admin_get("/readyz").0 == 503;
        thread::sleep(Duration::from_millis(200));
    }
    let during = sidecar.admin_get("/metrics").1;
    tansu = Tansu::start_on(port).expect("restart Tansu on the same port");
    let outage = killed.elapsed();
    // The restarted broker is empty: the topic is created again, as an operator would, unless
    // the producer's own metadata request had the broker create it first.
    let created = support::python("admin.py", &["--bootstrap", &bootstrap, "--partitions", "1", "create", topic]);
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success() || stderr.contains("TOPIC_ALREADY_EXISTS"), "create {topic}: {stderr}");

    let (status, produced) = producer.finish(Duration::from_secs(90));
    assert!(status.success(), "the producer did not get every message acknowledged: {produced}");
    let (status, consumed_live) = consumer.finish(Duration::from_secs(90));
    assert!(status.success(), "the consumer did not recover: {consumed_live}");
    let final_read = support::python_ok(
        "numbered.py",
        &["consume", "--bootstrap", &bootstrap, "--topic", topic, "--to-end", "--timeout", "30"],
    );
    let final_read: Value = serde_json::from_str(final_read.trim()).expect("consumer JSON");

    // Acknowledgements arrive in send order (one request in flight); the restarted broker's log
    // starts again at offset 0, which splits them into the two broker lives.
    let log = numbered::verify_restarted_log(&produced, &final_read, COUNT);
    assert!(log.earlier > 0, "no acknowledgement from the broker before its restart");
    let new_life = &log.acknowledged;

    let connects = failed_connects(&during, None) - failed_connects(&before, None);
    let by_node: Vec<String> = ["bootstrap", "111", "control"]
        .iter()
        .map(|node| format!("{node} {}", failed_connects(&during, Some(node)) - failed_connects(&before, Some(node))))
        .collect();
    let clients = accepted(&during) - accepted(&before);
    let per_second = connects / outage.as_secs_f64();
    // The consumer that ran through the restart kept its position: in the restarted log, the
    // offsets below it had been reused by new messages, which it therefore skipped (a broker that
    // loses its log does that to any consumer). It must still have recovered and read to the end.
    let live = numbered::pairs(&consumed_live, "values");
    let live_seen: std::collections::BTreeSet<u64> = live.iter().map(|&(i, _)| i).collect();
    let skipped = new_life.iter().filter(|(i, _)| !live_seen.contains(i)).count();
    let resumed_at = new_life.iter().find(|(i, _)| live_seen.contains(i)).map_or(-1, |&(_, offset)| offset);
    eprintln!(
        "[faults] restart: {COUNT} messages at 200/s, broker down {outage:.1?}; acknowledged by the old broker {}, \
         by the restarted one {} (consumed {}, checksum {:016x}); failed upstream connects during the outage \
         {connects} ({per_second:.1}/s; by node: {}) for {clients} client connections; live consumer read {} \
         values, {} errors, resumed in the restarted log at offset {resumed_at} (skipping {skipped}); /readyz 503 \
         seen during the outage: {not_ready_seen}",
        log.earlier,
        new_life.len(),
        log.consumed.len(),
        log.checksum(),
        by_node.join(", "),
        live.len(),
        consumed_live["errors"],
    );
    assert!(live.iter().any(|&(i, _)| i == COUNT as u64 - 1), "the live consumer read the last message");
    // A client connection costs at most --connect-attempts (3) rounds over the addresses the
    // sidecar knows: the bootstrap server and the broker's advertised address, here the same one
    // twice. The control connection backs off from 500 ms. A loop would make thousands.
    assert!(connects <= 6.0 * clients + 30.0, "{connects} failed connects for {clients} client connections");
    assert!(per_second < 60.0, "{per_second:.1} failed connects per second");
    assert!(sidecar.is_running(), "the sidecar kept running");
    assert_eq!(sidecar.pid(), sidecar_pid);
    let (code, body) = sidecar.wait_for_readyz(200, Duration::from_secs(40));
    assert_eq!(code, 200, "ready again after the restart: {body}");
    drop(tansu);
}

/// Started before its broker exists, the sidecar reports not-ready, says so once in its log (not
/// once per attempt), closes clients cleanly, and becomes ready once the broker appears.
#[test]
fn broker_missing_at_start_up_is_reported_once_and_recovered_from() {
    let _machine = shared_machine();
    let port = support::free_port();
    let broker = format!("127.0.0.1:{port}");
    let sidecar = Sidecar::start(&broker, &[]);
    let started = Instant::now();

    let (code, body) = sidecar.admin_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no metadata"), "{body}");
    // A client arriving meanwhile is closed cleanly, after the sidecar's bounded attempts.
    let mut client = RawClient::connect(&sidecar.bootstrap());
    let asked = Instant::now();
    client.send(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    assert!(client.is_closed_by_peer(), "the client is closed, not left hanging");
    let closed_after = asked.elapsed();
    let unavailable = sidecar.metric("kafka_sidecar_disconnects_total", &["cause=\"upstream_unavailable\""]);
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(sidecar.admin_get("/readyz").0, 503);
        thread::sleep(Duration::from_millis(250));
    }
    let logs = sidecar.logs();
    let attempts = sidecar.metric("kafka_sidecar_upstream_connects_total", &["result=\"refused\""]);
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert_eq!(count_lines(&logs, "cannot connect to broker"), 1, "{logs}");
    assert!(warnings.len() <= 2, "one failure, one line (plus the first failed refresh): {warnings:#?}");
    assert!(attempts >= 6.0, "the sidecar kept trying: {attempts} attempts");
    // Sidecar::start's own probe of the bootstrap port counts too.
    assert!(unavailable >= 1.0, "the client's disconnect is counted as upstream_unavailable");

    let _tansu = Tansu::start_on(port).expect("start Tansu on the reserved port");
    let appeared = Instant::now();
    let (code, body) = sidecar.wait_for_readyz(200, Duration::from_secs(30));
    let recovery = appeared.elapsed();
    eprintln!(
        "[faults] missing broker: {attempts} refused attempts in the first {:.1?}, warnings logged: {warnings:#?}; \
         client closed after {closed_after:.1?}; ready {recovery:.1?} after the broker appeared",
        started.elapsed()
    );
    assert_eq!(code, 200, "{body}");
    // The control loop backs off 0.5 s, 1 s, 2 s, 4 s ... (at most --metadata-refresh).
    assert!(recovery < Duration::from_secs(10), "ready only {recovery:?} after the broker appeared");
    assert!(sidecar.wait_for_log("broker reachable again", Duration::from_secs(5)), "{}", sidecar.logs());
    assert_eq!(count_lines(&sidecar.logs(), "cannot connect to broker"), 1);
    sidecar.kcat_round_trip("faults-late-broker", 5);
}
