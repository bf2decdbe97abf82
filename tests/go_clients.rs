//! The Go clients through the sidecar: sarama 1.22 and kafka-go 0.2 (Debian's packages, built by
//! `support::go` from `tests/clients/go/`), against the Tansu broker and against the
//! ZooKeeper-mode fixture whose controller moves. kafka-go's `Conn` is what the sidecar's first
//! users ran: it sends admin requests to the broker it is connected to and hands NOT_CONTROLLER
//! (41) to the application.

mod zk;

use std::time::{Duration, Instant};

use kafka_sidecar_test_support as support;
use serde_json::{Value, json};
use support::go::GoLibrary;
use support::{Sidecar, Tansu, wait_for_port};
use zk::{ZkCluster, ZkOptions};

/// The error kafka-go 0.2.1 hands the application for a NOT_CONTROLLER answer.
const KAFKA_GO_NOT_CONTROLLER: &str = "[41] Not Controller: this is not the correct controller for this cluster";

fn strings(values: &Value) -> Vec<String> {
    let values = values.as_array().unwrap_or_else(|| panic!("not an array: {values}"));
    values.iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// sarama creates a topic with three partitions, produces 300 messages one request each and reads
/// every one back from every partition; kafka-go creates and deletes a topic of its own through
/// the bootstrap port (CreateTopics v0, DeleteTopics v1).
#[test]
fn sarama_and_kafka_go_work_through_the_sidecar() {
    const COUNT: usize = 300;
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    let bootstrap = sidecar.bootstrap();
    let sarama = GoLibrary::Sarama;
    let started = Instant::now();

    assert_eq!(
        sarama.run_ok("create", &bootstrap, &["--topic", "go-everyday", "--partitions", "3"])["created"],
        "go-everyday"
    );
    let count = COUNT.to_string();
    let produced = sarama.run_ok("produce", &bootstrap, &["--topic", "go-everyday", "--count", &count]);
    assert_eq!(produced["delivered"], COUNT, "{produced}");
    let consumed = sarama.run_ok("consume", &bootstrap, &["--topic", "go-everyday", "--count", &count]);
    let mut values = strings(&consumed["values"]);
    values.sort_by_key(|v| v.trim_start_matches("m-").parse::<usize>().unwrap());
    let expected: Vec<String> = (0..COUNT).map(|i| format!("m-{i}")).collect();
    assert_eq!(values, expected, "every message back, once");
    sarama.run_ok("delete", &bootstrap, &["--topic", "go-everyday"]);

    let kafka_go = GoLibrary::KafkaGo;
    assert_eq!(kafka_go.run_ok("create", &bootstrap, &["--topic", "go-conn"])["created"], "go-conn");
    assert_eq!(kafka_go.run_ok("delete", &bootstrap, &["--topic", "go-conn"])["deleted"], "go-conn");
    let requests = |api: &str| sidecar.metric("kafka_sidecar_requests_total", &[&format!("api=\"{api}\"")]);
    assert!(requests("Produce") >= COUNT as f64 && requests("Fetch") >= 1.0, "through the sidecar");
    assert_eq!(requests("CreateTopics"), 2.0);
    assert_eq!(requests("DeleteTopics"), 2.0);
    eprintln!(
        "sarama: created 3 partitions, produced {COUNT}, consumed {}, deleted; kafka-go: created, deleted ({:?})",
        values.len(),
        started.elapsed()
    );
}

/// Creates and deletes topics with each Go client while the fixture's controller moves every
/// 300 ms (brokers name the previous one for a second after each move): straight to the cluster
/// kafka-go's calls on node 1 and sarama's on the controller it cached get 41; through the sidecar
/// none does.
#[test]
fn go_admin_calls_never_see_41_through_the_sidecar() {
    let tansu = Tansu::start();
    let zk = ZkCluster::start(&tansu.addr(), ZkOptions { stale_for: Duration::from_secs(1), ..ZkOptions::default() });
    zk.move_controller(Some(2));
    let sidecar = Sidecar::start(&zk.bootstrap(), &[]);
    for node_id in 1..=3 {
        assert!(wait_for_port(&sidecar.broker_addr(node_id), Duration::from_secs(10)), "broker {node_id} listener");
    }
    let _flapping = zk.flap(Duration::from_millis(300));
    for library in GoLibrary::ALL {
        let name = library.name();
        let started = Instant::now();
        // A pause between calls spreads each loop over several moves of the controller.
        let admin_loop = |bootstrap: &str, count: usize, pause: &str, prefix: &str| {
            let (count, prefix) = (count.to_string(), format!("{prefix}-{name}"));
            library.run_ok("admin-loop", bootstrap, &["--count", &count, "--pause", pause, "--prefix", &prefix])
        };
        let direct = admin_loop(&zk.bootstrap(), 20, "0.05", "direct");
        let through = admin_loop(&sidecar.bootstrap(), 50, "0.02", "through");
        let direct_41 = direct["not_controller"].as_u64().unwrap();
        eprintln!(
            "{name}: direct {direct_41}/40 calls failed with 41, errors {}; through the sidecar {}/100 with 41, \
             {} ok ({:?})",
            direct["failed"],
            through["not_controller"],
            through["ok"],
            started.elapsed()
        );
        assert!(direct_41 > 0, "{name} straight to the cluster must hit 41: {direct}");
        if library == GoLibrary::KafkaGo {
            assert_eq!(
                direct["failed"][KAFKA_GO_NOT_CONTROLLER], direct_41,
                "kafka-go hands the application {KAFKA_GO_NOT_CONTROLLER:?}: {direct}"
            );
        }
        assert_eq!(through["not_controller"], 0, "{name}: {through}");
        assert_eq!(through["failed"], json!({}), "{name}: {through}");
        assert_eq!(through["ok"], 100, "{name}: every create and delete succeeds: {through}");
    }
    let retries = |outcome: &str| {
        sidecar.metric("kafka_sidecar_not_controller_retries_total", &[&format!("outcome=\"{outcome}\"")])
    };
    assert!(retries("recovered") > 0.0, "the retry path was exercised");
    assert_eq!(retries("exhausted"), 0.0);
    assert_eq!(retries("lost"), 0.0);
}
