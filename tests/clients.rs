//! Real Kafka clients through the sidecar: kcat (librdkafka 2.0), confluent-kafka, kafka-python,
//! aiokafka and kafkajs, against the Tansu broker and against librdkafka's three-broker mock
//! cluster.

use std::time::{Duration, Instant};

use kafka_sidecar_test_support as support;
use serde_json::Value;
use support::libraries::Library;
use support::{MockCluster, Sidecar, Tansu, create_topics, expect_success, kcat, kcat_with_input, python_ok};

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Every broker address a client was given, as `host:port`, from `kcat -L -J`.
fn kcat_broker_addresses(bootstrap: &str) -> Vec<(i64, String)> {
    let out = expect_success("kcat -L", &kcat(&["-b", bootstrap, "-L", "-J"]));
    let metadata = json(&out);
    metadata["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| (b["id"].as_i64().unwrap(), b["name"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn kcat_sees_only_sidecar_addresses() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    let brokers = kcat_broker_addresses(&sidecar.bootstrap());
    assert_eq!(brokers, [(111, sidecar.broker_addr(111))]);
    // Without the sidecar, kcat (librdkafka 2.0) cannot even read Tansu's ApiVersions reply.
    let direct = kcat(&["-b", &tansu.addr(), "-L", "-m", "3"]);
    assert!(!direct.status.success(), "kcat direct to Tansu unexpectedly worked");
}

#[test]
fn kcat_round_trip_of_10000_messages_in_order() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    let bootstrap = sidecar.bootstrap();
    create_topics(&bootstrap, &["ten-thousand"], 1);
    let messages: Vec<String> = (0..10_000).map(|i| format!("message-{i:05}")).collect();
    let input = messages.join("\n") + "\n";
    let produced = kcat_with_input(&["-b", &bootstrap, "-P", "-t", "ten-thousand", "-p", "0"], &input);
    expect_success("kcat -P", &produced);
    let consumed = expect_success(
        "kcat -C",
        &kcat(&["-b", &bootstrap, "-C", "-t", "ten-thousand", "-o", "beginning", "-e", "-q"]),
    );
    let consumed: Vec<&str> = consumed.lines().collect();
    assert_eq!(consumed.len(), 10_000);
    assert!(consumed.iter().zip(&messages).all(|(a, b)| a == b), "messages out of order or changed");
}

#[test]
fn consumer_group_commits_and_resumes() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    let bootstrap = sidecar.bootstrap();
    create_topics(&bootstrap, &["grouped"], 1);
    let produced = python_ok("produce.py", &["--bootstrap", &bootstrap, "--topic", "grouped", "--count", "40"]);
    assert_eq!(json(&produced)["delivered"], 40);

    let consume = || {
        let out =
            python_ok("group.py", &["--bootstrap", &bootstrap, "--topic", "grouped", "--group", "g1", "--count", "20"]);
        json(&out)["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let first = consume();
    let second = consume();
    let expected = |range: std::ops::Range<usize>| range.map(|i| format!("msg-{i}")).collect::<Vec<_>>();
    assert_eq!(first, expected(0..20));
    assert_eq!(second, expected(20..40), "the second member must resume from the committed offset");
}

/// Five 10 MiB messages, each different throughout, produced and consumed back by confluent-kafka
/// through the sidecar: every value arrives intact and in order. Tansu 0.6.0 takes them with its
/// defaults and a topic without settings; the clients raise their own size limits (large.py).
#[test]
fn large_messages_round_trip_through_tansu() {
    const COUNT: usize = 5;
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    let bootstrap = sidecar.bootstrap();
    create_topics(&bootstrap, &["large"], 1);
    let (count, size) = (COUNT.to_string(), (10usize << 20).to_string());
    let run = |mode: &str| {
        let args = [mode, "--bootstrap", &bootstrap, "--topic", "large", "--count", &count, "--size", &size];
        json(&python_ok("large.py", &args))["values"].as_array().cloned().unwrap_or_default()
    };
    let produced = run("produce");
    let consumed = run("consume");
    assert_eq!(produced.len(), COUNT, "{produced:?}");
    let checksums: std::collections::HashSet<&str> =
        produced.iter().map(|value| value["sha256"].as_str().unwrap()).collect();
    assert_eq!(checksums.len(), COUNT, "the values differ from one another: {produced:?}");
    assert_eq!(consumed, produced, "every value (sha256, size, offset) comes back intact and in order");
}

#[test]
fn admin_clients_create_describe_and_delete_topics() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    let bootstrap = sidecar.bootstrap();
    for client in ["confluent", "kafka-python"] {
        let topic = format!("admin-{client}");
        let admin = |args: &[&str]| {
            let mut all = vec!["--bootstrap", bootstrap.as_str(), "--client", client];
            all.extend_from_slice(args);
            json(&python_ok("admin.py", &all))
        };
        admin(&["--partitions", "3", "create", &topic]);
        let described = admin(&["describe", &topic]);
        assert_eq!(described["topics"][&topic], 3, "{client}: {described}");
        assert_eq!(described["brokers"], serde_json::json!([sidecar.broker_addr(111)]), "{client}: {described}");
        admin(&["delete", &topic]);
        let after = admin(&["describe", "--allow-missing", &topic]);
        assert!(after["topics"].get(&topic).is_none(), "{client}: topic still there: {after}");
    }
}

/// aiokafka and kafkajs do the everyday work through the sidecar: create a topic with three
/// partitions, see only the sidecar's address, produce, share the messages between two members
/// of a consumer group (the first commits as it goes, the second resumes where it stopped), and
/// delete the topic.
#[test]
fn aiokafka_and_kafkajs_produce_consume_in_a_group_and_administer_topics() {
    const COUNT: usize = 300;
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    let bootstrap = sidecar.bootstrap();
    for library in Library::ALL {
        let name = library.name();
        let topic = format!("everyday-{name}");
        let topic_args = ["--topic", topic.as_str()];
        library.run_ok("create", &bootstrap, &["--topic", &topic, "--partitions", "3"]);
        let described = library.run_ok("describe", &bootstrap, &topic_args);
        assert_eq!(described["partitions"], 3, "{name}: {described}");
        assert_eq!(described["brokers"], serde_json::json!([sidecar.broker_addr(111)]), "{name}: {described}");

        let count = COUNT.to_string();
        let produced = library.run_ok("produce", &bootstrap, &["--topic", &topic, "--count", &count]);
        assert_eq!(produced["delivered"], COUNT, "{name}: {produced}");
        let half = (COUNT / 2).to_string();
        let group = format!("group-{name}");
        let member = |extra: &[&str]| {
            let args = [&["--topic", topic.as_str(), "--group", &group, "--count", &half][..], extra].concat();
            let consumed = library.run_ok("consume", &bootstrap, &args);
            let values = consumed["values"].as_array().unwrap_or_else(|| panic!("{name}: {consumed}")).clone();
            values.iter().map(|v| v.as_str().unwrap().to_owned()).collect::<Vec<_>>()
        };
        // Tansu 0.6.0 ignores aiokafka's LeaveGroup and never expires the member's session, and
        // then answers the next aiokafka member's SyncGroup with an empty assignment, which
        // aiokafka cannot decode (directly to Tansu too; a Kafka broker would rebalance). So
        // aiokafka's second member takes the partitions itself and resumes from the offsets the
        // first committed for the group (OffsetFetch); kafkajs's second member joins the group.
        let second_member: &[&str] = if library == Library::Aiokafka { &["--assign"] } else { &[] };
        let (first, second) = (member(&[]), member(second_member));
        let mut all: Vec<String> = first.iter().chain(&second).cloned().collect();
        all.sort_by_key(|v| v.trim_start_matches("m-").parse::<usize>().unwrap());
        let expected: Vec<String> = (0..COUNT).map(|i| format!("m-{i}")).collect();
        assert_eq!(all, expected, "{name}: two members of a group read every message exactly once");

        library.run_ok("delete", &bootstrap, &topic_args);
        let after = json(&python_ok("admin.py", &["--bootstrap", &bootstrap, "describe", "--allow-missing", &topic]));
        assert!(after["topics"].get(&topic).is_none(), "{name}: topic still there: {after}");
        eprintln!(
            "{name}: created, described (brokers {}), produced {COUNT}, consumed {} + {}, deleted",
            described["brokers"],
            first.len(),
            second.len()
        );
    }
}

#[test]
fn acks_zero_produce_does_not_stall() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    let bootstrap = sidecar.bootstrap();
    create_topics(&bootstrap, &["fire-and-forget"], 1);
    for acks in ["0", "1", "all"] {
        let out = python_ok(
            "produce.py",
            &[
                "--bootstrap",
                &bootstrap,
                "--topic",
                "fire-and-forget",
                "--count",
                "2000",
                "--acks",
                acks,
                "--timeout",
                "20",
            ],
        );
        assert_eq!(json(&out)["delivered"], 2000, "acks={acks}: {out}");
    }
    // acks=0 gives no acknowledgement to wait for: the broker may still be appending the last
    // batches, so read until everything is there (or the deadline passes), then require exactness.
    let deadline = Instant::now() + Duration::from_secs(15);
    let consumed = loop {
        let out = expect_success(
            "kcat -C",
            &kcat(&["-b", &bootstrap, "-C", "-t", "fire-and-forget", "-o", "beginning", "-e", "-q"]),
        );
        let count = out.lines().count();
        if count >= 6000 || Instant::now() > deadline {
            break count;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(consumed, 6000, "every message exactly once");
}

#[test]
fn every_mock_broker_is_reached_through_its_own_port() {
    let cluster = MockCluster::start(3, &["spread"]);
    let sidecar = Sidecar::builder(&cluster.first_broker()).env("RUST_LOG", "kafka_sidecar=debug").start();
    let bootstrap = sidecar.bootstrap();

    let seen = kcat_broker_addresses(&bootstrap);
    let expected: Vec<(i64, String)> =
        cluster.brokers().iter().map(|(id, _)| (i64::from(*id), sidecar.broker_addr(*id as u16))).collect();
    assert_eq!(seen, expected);

    // Produce to and consume from every partition: the client must talk to each leader.
    let partitions = cluster.leaders().iter().filter(|(topic, _, _)| topic == "spread").count();
    let input: String = (0..400).map(|i| format!("v{i}\n")).collect();
    // librdkafka connects to every broker, not only the leaders it needs.
    let all_brokers = ["-X", "enable.sparse.connections=false"];
    let produce = [&["-b", bootstrap.as_str(), "-P", "-t", "spread"][..], &all_brokers].concat();
    expect_success("kcat -P", &kcat_with_input(&produce, &input));
    let consume =
        [&["-b", bootstrap.as_str(), "-C", "-t", "spread", "-o", "beginning", "-e", "-q"][..], &all_brokers].concat();
    let consumed = expect_success("kcat -C", &kcat(&consume));
    assert_eq!(consumed.lines().count(), 400);

    // Each mock broker received connections through its own sidecar port.
    for (node_id, addr) in cluster.brokers() {
        let line = format!("broker={addr}");
        assert!(
            sidecar.wait_for_log(&line, Duration::from_secs(5)),
            "no upstream connection to broker {node_id} ({addr}); {partitions} partitions\n{}",
            sidecar.logs()
        );
    }
}
