//! NOT_CONTROLLER (41) through the sidecar, against a ZooKeeper-mode cluster fixture (three
//! broker front ends over the Tansu broker whose controller moves on demand): clients that do not
//! retry 41 never see it through the sidecar, and do see it without.

mod zk;

use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_sidecar_test_support::{self as support, raw};
use raw::{RawClient, create_topics_v0, delete_topics_v0, read_topic_errors_v0};
use serde_json::Value;
use support::libraries::Library;
use support::{Sidecar, Tansu, python_ok, wait_for_port};
use zk::{ZkCluster, ZkOptions};

struct Setup {
    _tansu: Tansu,
    zk: ZkCluster,
    sidecar: Sidecar,
}

/// Tansu, three ZooKeeper-mode front ends with node 2 as controller, and the sidecar in front.
fn setup(options: ZkOptions) -> Setup {
    let tansu = Tansu::start();
    let zk = ZkCluster::start(&tansu.addr(), options);
    zk.move_controller(Some(2));
    let sidecar = Sidecar::start(&zk.bootstrap(), &[]);
    for node_id in 1..=3 {
        assert!(wait_for_port(&sidecar.broker_addr(node_id), Duration::from_secs(10)), "broker {node_id} listener");
    }
    Setup { _tansu: tansu, zk, sidecar }
}

fn create_topics_v4(names: &[&str], timeout_ms: i32) -> CreateTopicsRequest {
    let topics = names
        .iter()
        .map(|n| {
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(n.to_string())))
                .with_num_partitions(1)
                .with_replication_factor(1)
        })
        .collect();
    CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(timeout_ms)
}

fn codes(response: &CreateTopicsResponse) -> Vec<(String, i16)> {
    response.topics.iter().map(|t| (t.name.0.to_string(), t.error_code)).collect()
}

fn admin_loop(bootstrap: &str, client: &str, count: usize, prefix: &str) -> Value {
    let count = count.to_string();
    let out = python_ok(
        "admin_loop.py",
        &["--bootstrap", bootstrap, "--client", client, "--count", &count, "--prefix", prefix, "--pause", "0.02"],
    );
    serde_json::from_str(out.trim()).unwrap()
}

fn not_controller_retries(sidecar: &Sidecar, outcome: &str) -> f64 {
    sidecar.metric("kafka_sidecar_not_controller_retries_total", &[&format!("outcome=\"{outcome}\"")])
}

#[test]
fn clients_that_do_not_retry_never_see_41_through_the_sidecar() {
    // The controller moves every 300 ms and brokers name the previous one for a second after
    // each move: librdkafka keeps its cached controller, kafka-python re-reads a stale one.
    let s = setup(ZkOptions { stale_for: Duration::from_secs(1), ..ZkOptions::default() });
    let _flapping = s.zk.flap(Duration::from_millis(300));
    for client in ["confluent", "kafka-python"] {
        let direct = admin_loop(&s.zk.bootstrap(), client, 30, &format!("direct-{client}"));
        let through = admin_loop(&s.sidecar.bootstrap(), client, 100, &format!("sidecar-{client}"));
        eprintln!("{client}: direct {direct}\n{client}: through the sidecar {through}");
        assert!(direct["not_controller"].as_u64().unwrap() > 0, "{client} direct must hit 41: {direct}");
        assert_eq!(through["create"], serde_json::json!({"ok": 100}), "{client}: {through}");
        assert_eq!(through["delete"], serde_json::json!({"ok": 100}), "{client}: {through}");
        assert_eq!(through["not_controller"], 0);
    }
    assert!(not_controller_retries(&s.sidecar, "recovered") > 0.0, "the retry path was exercised");
    assert_eq!(not_controller_retries(&s.sidecar, "exhausted"), 0.0);
}

/// aiokafka's admin client hands NOT_CONTROLLER to the application; kafkajs retries it itself
/// (five times, from 300 ms) and still loses some calls to a controller that keeps moving.
/// Through the sidecar neither loses any.
#[test]
fn aiokafka_and_kafkajs_admin_calls_succeed_while_the_controller_moves() {
    let s = setup(ZkOptions { stale_for: Duration::from_secs(1), ..ZkOptions::default() });
    let _flapping = s.zk.flap(Duration::from_millis(300));
    for library in Library::ALL {
        let name = library.name();
        let loop_of = |bootstrap: &str, count: &str, prefix: &str, pause: &str| {
            let prefix = format!("{prefix}-{name}");
            let args = ["--count", count, "--prefix", &prefix, "--pause", pause, "--timeout", "110"];
            library.run_ok("admin-loop", bootstrap, &args)
        };
        // aiokafka's direct calls are spread over several controller moves (40 calls, 50 ms
        // apart): on a busy machine a loop without pauses can fit between two moves and see no 41
        // at all. kafkajs retries each 41 itself for seconds, which spreads its calls anyway.
        let direct_pause = if library == Library::Aiokafka { "0.05" } else { "0" };
        let direct = loop_of(&s.zk.bootstrap(), "20", "direct", direct_pause);
        let through = loop_of(&s.sidecar.bootstrap(), "100", "sidecar", "0");
        eprintln!("{name}: direct {direct}\n{name}: through the sidecar {through}");
        if library == Library::Aiokafka {
            assert!(direct["not_controller"].as_u64().unwrap() > 0, "aiokafka direct must hit 41: {direct}");
        }
        assert_eq!(through["ok"], 200, "{name}: every create and delete succeeds: {through}");
        assert_eq!(through["not_controller"], 0, "{name}: {through}");
    }
    assert!(not_controller_retries(&s.sidecar, "recovered") > 0.0, "the retry path was exercised");
    assert_eq!(not_controller_retries(&s.sidecar, "exhausted"), 0.0);
}

#[test]
fn fast_flapping_controller_is_always_found() {
    let s = setup(ZkOptions::default());
    let _flapping = s.zk.flap(Duration::from_millis(50));
    let direct = admin_loop(&s.zk.bootstrap(), "confluent", 30, "direct");
    let through = admin_loop(&s.sidecar.bootstrap(), "confluent", 100, "through");
    eprintln!("confluent, 50 ms flaps: direct {direct}\nthrough the sidecar {through}");
    assert!(direct["not_controller"].as_u64().unwrap() > 0, "direct must hit 41: {direct}");
    assert_eq!(through["create"], serde_json::json!({"ok": 100}), "{through}");
    assert_eq!(through["delete"], serde_json::json!({"ok": 100}), "{through}");
}

#[test]
fn kafka_go_style_v0_requests_are_retried() {
    let s = setup(ZkOptions::default());
    let _flapping = s.zk.flap(Duration::from_millis(50));
    // kafka-go's Conn sends CreateTopics v0 / DeleteTopics v0 to the broker it believes is the
    // controller; here always node 1, which is the controller only a third of the time.
    let run = |addr: &str, count: usize, prefix: &str| {
        let mut client = RawClient::connect(addr);
        let mut errors = Vec::new();
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            for request in [create_topics_v0(i as i32, &name), delete_topics_v0(i as i32, &name)] {
                client.send_bytes(&request).unwrap();
                let (_, topics) = read_topic_errors_v0(&client.recv().unwrap());
                errors.push(topics[0].1);
            }
        }
        errors
    };
    let direct = run(&s.zk.broker_addr(1), 50, "direct");
    let direct_41 = direct.iter().filter(|code| **code == 41).count();
    assert!(direct_41 > 0, "without the sidecar kafka-go style calls hit 41");
    let through = run(&s.sidecar.broker_addr(1), 100, "through");
    assert!(through.iter().all(|code| *code == 0), "through the sidecar every call succeeds: {through:?}");
    eprintln!(
        "v0 create+delete: direct {direct_41}/{} failed with 41; through the sidecar 0/{}",
        direct.len(),
        through.len()
    );
}

#[test]
fn existing_topic_on_a_non_controller_gets_topic_already_exists() {
    let s = setup(ZkOptions::default());
    let mut controller = RawClient::connect(&s.sidecar.broker_addr(2));
    controller.send_bytes(&create_topics_v0(1, "exists")).unwrap();
    assert_eq!(read_topic_errors_v0(&controller.recv().unwrap()).1, [("exists".to_string(), 0)]);

    let mut direct = RawClient::connect(&s.zk.broker_addr(1));
    direct.send_bytes(&create_topics_v0(2, "exists")).unwrap();
    assert_eq!(read_topic_errors_v0(&direct.recv().unwrap()).1, [("exists".to_string(), 41)], "fixture: 41 first");

    let mut through = RawClient::connect(&s.sidecar.broker_addr(1));
    through.send_bytes(&create_topics_v0(3, "exists")).unwrap();
    assert_eq!(read_topic_errors_v0(&through.recv().unwrap()), (3, vec![("exists".to_string(), 36)]));
}

#[test]
fn mixed_batch_gets_the_controllers_own_answers_in_order() {
    let s = setup(ZkOptions::default());
    let mut controller = RawClient::connect(&s.zk.broker_addr(2));
    let _: CreateTopicsResponse = controller.request(ApiKey::CreateTopics, 4, &create_topics_v4(&["existing"], 5000));

    // The same shape of batch: new, existing, invalid (a name Kafka refuses), new.
    let alone: CreateTopicsResponse = controller.request(
        ApiKey::CreateTopics,
        4,
        &create_topics_v4(&["alone-1", "existing", "bad/name-1", "alone-2"], 5000),
    );
    let mut through = RawClient::connect(&s.sidecar.broker_addr(1));
    let merged: CreateTopicsResponse = through.request(
        ApiKey::CreateTopics,
        4,
        &create_topics_v4(&["mixed-1", "existing", "bad/name-2", "mixed-2"], 5000),
    );

    let strip = |codes: Vec<(String, i16)>| codes.into_iter().map(|(_, code)| code).collect::<Vec<_>>();
    let names: Vec<String> = codes(&merged).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["mixed-1", "existing", "bad/name-2", "mixed-2"], "client's order");
    assert_eq!(strip(codes(&merged)), strip(codes(&alone)), "per-topic answers as the controller gives them");
    assert_eq!(strip(codes(&merged)), [0, 36, 17, 0], "new, existing, invalid, new");
}

#[test]
fn pipelined_responses_keep_request_order_while_a_retry_runs() {
    let s = setup(ZkOptions::default());
    let mut client = RawClient::connect(&s.sidecar.broker_addr(1));
    let create = client.send(ApiKey::CreateTopics, 4, &create_topics_v4(&["pipelined"], 5000));
    let metadata = client.send(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    let first = client.recv().unwrap();
    let second = client.recv().unwrap();
    let created: CreateTopicsResponse = raw::decode_response(ApiKey::CreateTopics, 4, create, &first);
    assert_eq!(codes(&created), [("pipelined".to_string(), 0)]);
    let _: MetadataResponse = raw::decode_response(ApiKey::Metadata, 4, metadata, &second);
}

#[test]
fn no_controller_returns_41_within_the_request_timeout() {
    let s = setup(ZkOptions::default());
    s.zk.move_controller(None);
    let mut client = RawClient::connect(&s.sidecar.broker_addr(1));
    let started = Instant::now();
    let response: CreateTopicsResponse = client.request(ApiKey::CreateTopics, 4, &create_topics_v4(&["nowhere"], 1000));
    let elapsed = started.elapsed();
    assert_eq!(codes(&response), [("nowhere".to_string(), 41)]);
    assert!(elapsed >= Duration::from_millis(900), "retried until the budget ran out ({elapsed:?})");
    assert!(elapsed < Duration::from_millis(2500), "returned within the request's timeout ({elapsed:?})");
    assert_eq!(not_controller_retries(&s.sidecar, "exhausted"), 1.0);
}

#[test]
fn stale_controller_reports_are_outlasted() {
    let s = setup(ZkOptions { stale_for: Duration::from_secs(2), ..ZkOptions::default() });
    s.zk.move_controller(Some(3));
    // Every broker still names node 2 for two seconds; the retry keeps asking until it holds.
    let mut client = RawClient::connect(&s.sidecar.broker_addr(1));
    let response: CreateTopicsResponse = client.request(ApiKey::CreateTopics, 4, &create_topics_v4(&["late"], 10_000));
    assert_eq!(codes(&response), [("late".to_string(), 0)]);
}

/// `frame` (a v0 CreateTopics or DeleteTopics request, whose last field is `timeout_ms`) with
/// `timeout_ms` instead.
fn with_timeout(mut frame: Vec<u8>, timeout_ms: i32) -> Vec<u8> {
    let at = frame.len() - 4;
    frame[at..].copy_from_slice(&timeout_ms.to_be_bytes());
    frame
}

#[test]
fn admin_requests_go_straight_to_a_steady_controller() {
    // The controller stays on node 1 (the fixture's first); requests arrive on node 2's port.
    let tansu = Tansu::start();
    let zk = ZkCluster::start(&tansu.addr(), ZkOptions::default());
    let sidecar = Sidecar::start(&zk.bootstrap(), &[]);
    assert!(wait_for_port(&sidecar.broker_addr(2), Duration::from_secs(10)), "broker 2 listener");
    let mut client = RawClient::connect(&sidecar.broker_addr(2));
    for i in 0..30 {
        client.send_bytes(&create_topics_v0(i, &format!("steady-{i}"))).unwrap();
        assert_eq!(read_topic_errors_v0(&client.recv().unwrap()).1, [(format!("steady-{i}"), 0)]);
    }
    eprintln!(
        "30 CreateTopics v0 on node 2's port: {} NOT_CONTROLLER answers from the brokers",
        zk.not_controller_answers()
    );
    assert_eq!(zk.not_controller_answers(), 0, "no detour through a broker that is not the controller");
    let routed = sidecar.metric("kafka_sidecar_admin_routed_total", &["api=\"CreateTopics\""]);
    assert_eq!(routed, 30.0, "every request went straight to the controller");
}

#[test]
fn a_controller_moving_every_50ms_and_reported_late_is_found_within_short_timeouts() {
    let s = setup(ZkOptions { stale_for: Duration::from_millis(200), ..ZkOptions::default() });
    let _flapping = s.zk.flap(Duration::from_millis(50));
    let run = |addr: &str, count: usize, prefix: &str| {
        let mut client = RawClient::connect(addr);
        let (mut not_controller, mut slowest) = (0, Duration::ZERO);
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            for request in [create_topics_v0(i as i32, &name), delete_topics_v0(i as i32, &name)] {
                let started = Instant::now();
                client.send_bytes(&with_timeout(request, 2000)).unwrap();
                let (_, topics) = read_topic_errors_v0(&client.recv().unwrap());
                slowest = slowest.max(started.elapsed());
                assert!(topics[0].1 == 0 || topics[0].1 == 41, "{topics:?}");
                not_controller += usize::from(topics[0].1 == 41);
            }
        }
        (not_controller, slowest)
    };
    let (direct, _) = run(&s.zk.broker_addr(1), 25, "direct");
    let (through, slowest) = run(&s.sidecar.broker_addr(1), 100, "through");
    eprintln!(
        "controller moving every 50 ms, reported 200 ms late, timeout_ms 2000: direct {direct}/50 answered 41; \
         through the sidecar {through}/200 (slowest call {slowest:?})"
    );
    assert!(direct > 0, "without the sidecar these calls hit 41");
    assert_eq!(through, 0, "through the sidecar no call ends with 41");
    assert_eq!(not_controller_retries(&s.sidecar, "exhausted"), 0.0);
}
