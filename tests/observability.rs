//! Observability: a real Prometheus scraping the sidecar while real clients use it, the exposition
//! text as `promtool` lints it, readiness through start-up, cluster loss and shutdown, label
//! cardinality under many topics and client ids, and the alert rules, Grafana dashboard and metric
//! reference shipped in `deploy/` and `docs/`.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool` on `PATH`, or
//! `KAFKA_SIDECAR_PROMETHEUS` / `KAFKA_SIDECAR_PROMTOOL`), installed by `scripts/setup.sh`.

mod raw;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use raw::RawClient;
use serde_json::Value;
use support::scripted::{api_versions_v0, metadata_v1, scripted_broker};
use support::{Sidecar, Tansu, create_topics, expect_success, kcat, kcat_with_input};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

// ------------------------------------------------------------------------------------------------
// The exposition text

/// One sample line of the Prometheus text format: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    /// `name{a="x",b="y"}` with labels in a fixed order: the identity of the series.
    fn key(&self) -> String {
        let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// Parses every sample line (comments and blank lines skipped).
fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unparseable sample line: {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, mut rest) = match series.split_once('{') {
        None => return Some(Sample { name: series.to_owned(), labels: BTreeMap::new(), value }),
        Some((name, rest)) => (name.to_owned(), rest.strip_suffix('}')?),
    };
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut chars = after.char_indices();
        let mut label = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => label.push('\n'),
                    c => label.push(c),
                },
                (_, c) => label.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), label);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(Sample { name, labels, value })
}

/// Sum of the samples of `name` whose labels include `labels`.
fn sum_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.iter().filter(|s| s.matches(name, labels)).map(|s| s.value).sum()
}

fn scrape(sidecar: &Sidecar) -> String {
    let (status, text) = sidecar.admin_get("/metrics");
    assert_eq!(status, 200, "GET /metrics: {text}");
    text
}

/// Polls the sidecar's /metrics until `done` holds; panics with the last text on timeout.
fn wait_for_metrics(sidecar: &Sidecar, what: &str, timeout: Duration, done: impl Fn(&[Sample]) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = scrape(sidecar);
        if done(&parse_samples(&text)) {
            return text;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; /metrics:\n{text}");
        thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------------------------
// Prometheus and promtool

fn tool(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(name));
    let found = Command::new(&path).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "{} not found: install Debian's `prometheus` package (scripts/setup.sh) or set {var}",
        path.display()
    );
    path
}

fn promtool() -> PathBuf {
    tool("KAFKA_SIDECAR_PROMTOOL", "promtool")
}

/// A Prometheus server on loopback scraping one sidecar's /metrics every second, with its
/// storage in a temporary directory. Killed and cleaned up on drop (the directory, with the
/// server's log, is kept when the test panics).
struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let bin = tool("KAFKA_SIDECAR_PROMETHEUS", "prometheus");
        let dir = support::temp_path("prometheus").with_extension("d");
        fs::create_dir_all(dir.join("data")).expect("create Prometheus temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: kafka-sidecar\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let log = fs::File::create(dir.join("prometheus.log")).expect("create Prometheus log");
        let addr = format!("127.0.0.1:{}", support::free_port());
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("Prometheus exited with {status}:\n{}", prometheus.log());
            }
            if TcpStream::connect(&prometheus.addr).is_ok() && support::http_get(&prometheus.addr, "/-/ready").0 == 200
            {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "Prometheus not ready within 30s:\n{}", prometheus.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; returns the whole `data` object. Panics unless Prometheus answers
    /// `"status": "success"`.
    fn query_data(&self, query: &str) -> Value {
        let (status, body) = support::http_get(&self.addr, &format!("/api/v1/query?query={}", url_encode(query)));
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {query}: not JSON ({e}): {body}"));
        assert!(status == 200 && json["status"] == "success", "query {query} failed ({status}): {body}");
        json["data"].clone()
    }

    /// Runs an instant query returning a vector: (labels, value) per series.
    fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.query_data(query);
        assert_eq!(data["resultType"], "vector", "query {query}: {data}");
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let value = series["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// The value of a query expected to return exactly one series.
    fn value(&self, query: &str) -> f64 {
        let result = self.query(query);
        assert_eq!(result.len(), 1, "query {query}: expected one series, got {result:?}");
        result[0].1
    }

    /// Waits until the sidecar target has been scraped at least `count` times after `since`.
    fn wait_for_scrapes_after(&self, since: SystemTime, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let window_ms = SystemTime::now().duration_since(since).unwrap().as_millis().max(1);
            let scrapes = self.query(&format!("sum_over_time(up{{job=\"kafka-sidecar\"}}[{window_ms}ms])"));
            let seen = scrapes.first().map_or(0.0, |(_, v)| *v) as usize;
            if seen >= count {
                return;
            }
            assert!(Instant::now() < deadline, "only {seen} scrapes in 30s:\n{}", self.log());
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `promtool` with `args` and `stdin`; returns (success, stdout + stderr).
fn run_promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(REPO)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_owned();
    let writer = thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().expect("wait for promtool");
    writer.join().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

// ------------------------------------------------------------------------------------------------
// Client traffic

const MESSAGES: usize = 500;
const VALUE_BYTES: usize = 100;

/// What [`client_traffic`] did.
struct Traffic {
    /// Client connections opened to the sidecar, at least.
    connections: usize,
    /// Bytes of message values produced.
    value_bytes: usize,
}

/// Real clients through the sidecar: admin.py creates a topic (CreateTopics), kcat produces
/// [`MESSAGES`] values of [`VALUE_BYTES`] bytes, one Produce request each, and consumes them back
/// (Fetch), a raw client creates the topic again (a TopicAlreadyExists answer) and another sends
/// TLS bytes to the plaintext port (a protocol error).
fn client_traffic(sidecar: &Sidecar, topic: &str) -> Traffic {
    let bootstrap = sidecar.bootstrap();
    create_topics(&bootstrap, &[topic], 1);
    let values: Vec<String> = (0..MESSAGES).map(|i| format!("{i:05}{}", "x".repeat(VALUE_BYTES - 5))).collect();
    let input = values.join("\n") + "\n";
    // One message per batch, so one Produce request per message.
    let produce = ["-b", &bootstrap, "-P", "-t", topic, "-p", "0", "-X", "batch.num.messages=1", "-X", "linger.ms=0"];
    expect_success("kcat -P", &kcat_with_input(&produce, &input));
    let consumed =
        expect_success("kcat -C", &kcat(&["-b", &bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q"]));
    assert_eq!(consumed.lines().collect::<Vec<_>>(), values, "consumed what was produced");

    let mut admin = RawClient::connect(&bootstrap);
    let created: CreateTopicsResponse = request_as(&mut admin, "observability", ApiKey::CreateTopics, 4, &{
        CreateTopicsRequest::default().with_topics(vec![new_topic(topic)]).with_timeout_ms(5_000)
    });
    assert_eq!(created.topics[0].error_code, 36, "creating {topic} again: TOPIC_ALREADY_EXISTS");

    let mut tls = TcpStream::connect(&bootstrap).unwrap();
    tls.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tls.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(std::io::Read::read(&mut tls, &mut byte), Ok(0) | Err(_)), "TLS bytes close the connection");

    // admin.py: at least one connection; kcat -P and -C: the bootstrap port and broker 111 each;
    // the raw admin and TLS clients: one each.
    Traffic { connections: 1 + 2 + 2 + 1 + 1, value_bytes: MESSAGES * VALUE_BYTES }
}

fn new_topic(name: &str) -> CreatableTopic {
    CreatableTopic::default().with_name(topic_name(name)).with_num_partitions(1).with_replication_factor(1)
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// A request frame with `client_id` in its header.
fn request_frame(api_key: ApiKey, version: i16, correlation_id: i32, client_id: &str, body: &impl Encodable) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, api_key.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Sends a request under `client_id` and decodes its response.
fn request_as<R: kafka_protocol::protocol::Decodable>(
    client: &mut RawClient,
    client_id: &str,
    api_key: ApiKey,
    version: i16,
    body: &impl Encodable,
) -> R {
    let correlation_id = client.next_correlation_id();
    client.send_bytes(&request_frame(api_key, version, correlation_id, client_id, body)).unwrap();
    let frame = client.recv().unwrap_or_else(|e| panic!("{api_key:?} as {client_id}: no response: {e}"));
    raw::decode_response(api_key, version, correlation_id, &frame)
}

// ------------------------------------------------------------------------------------------------
// 1. A real Prometheus scrape

#[test]
fn prometheus_scrapes_what_real_clients_did() {
    let tansu = Tansu::start();
    // The first bootstrap server is down: every bootstrap and control connection is refused there
    // first, then made to Tansu, so connect failures show up beside successes.
    let dead = support::free_port_base(1);
    let sidecar = Sidecar::start(&format!("127.0.0.1:{dead},{}", tansu.addr()), &[]);
    let prometheus = Prometheus::start(&sidecar.admin_addr());
    // As a running sidecar would have: one request answered (which creates the latency series)
    // and scraped before the traffic, so rate() over the traffic has a baseline.
    assert!(support::api_versions_answered(&sidecar.bootstrap()));
    prometheus.wait_for_scrapes_after(SystemTime::now(), 1);

    let traffic = client_traffic(&sidecar, "scraped");
    let traffic_end = SystemTime::now();
    prometheus.wait_for_scrapes_after(traffic_end, 2);
    let own_text = scrape(&sidecar);
    let own = parse_samples(&own_text);

    // Request counters, as Prometheus stored them and as the sidecar reports them now.
    let produced = prometheus.value("sum(kafka_sidecar_requests_total{api=\"Produce\"})");
    assert!(produced >= MESSAGES as f64, "{produced} Produce requests for {MESSAGES} single-message batches");
    for api in ["Produce", "Fetch", "CreateTopics", "Metadata", "ApiVersions"] {
        let scraped = prometheus.value(&format!("sum(kafka_sidecar_requests_total{{api=\"{api}\"}})"));
        let reported = sum_of(&own, "kafka_sidecar_requests_total", &[("api", api)]);
        assert!(scraped > 0.0, "no {api} requests scraped");
        assert_eq!(scraped, reported, "{api}: Prometheus has {scraped}, /metrics says {reported}");
    }
    // Every request was counted against the listener it arrived on; Produce and Fetch go to the
    // broker port of node 111.
    let by_node = prometheus.query("sum by (node) (kafka_sidecar_requests_total{api=~\"Produce|Fetch\"})");
    assert_eq!(by_node.iter().map(|(l, _)| l["node"].as_str()).collect::<Vec<_>>(), ["111"], "{by_node:?}");

    // The Produce latency histogram: +Inf holds every observation, and so does a sub-second bucket.
    let buckets: BTreeMap<String, f64> = prometheus
        .query("kafka_sidecar_request_duration_seconds_bucket{api=\"Produce\"}")
        .into_iter()
        .map(|(labels, value)| (labels["le"].clone(), value))
        .collect();
    let count = prometheus.value("kafka_sidecar_request_duration_seconds_count{api=\"Produce\"}");
    assert!(count > 0.0, "no Produce latency observed");
    assert_eq!(buckets["+Inf"], count, "le=+Inf must equal _count: {buckets:?}");
    assert_eq!(count, sum_of(&own, "kafka_sidecar_request_duration_seconds_count", &[("api", "Produce")]));
    let within: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(le, v)| Some((le.parse::<f64>().ok().filter(|le| *le < 1.0)?, *v)))
        .filter(|(_, v)| *v == count)
        .collect();
    assert!(!within.is_empty(), "no sub-second bucket holds all {count} Produce requests: {buckets:?}");
    let cumulative: Vec<f64> = {
        let mut sorted: Vec<(f64, f64)> = buckets.iter().map(|(le, v)| (le.parse::<f64>().unwrap(), *v)).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        sorted.into_iter().map(|(_, v)| v).collect()
    };
    assert!(cumulative.windows(2).all(|w| w[0] <= w[1]), "buckets not cumulative: {buckets:?}");
    let p99 = prometheus.value(concat!(
        "histogram_quantile(0.99, sum by (le) ",
        "(rate(kafka_sidecar_request_duration_seconds_bucket{api=\"Produce\"}[1m])))"
    ));
    assert!(p99 > 0.0 && p99 < 1.0, "Produce p99 {p99}s");

    // Bytes: the client sent at least the values it produced.
    let sent = prometheus.value("kafka_sidecar_bytes_total{direction=\"client_to_sidecar\"}");
    assert!(sent >= traffic.value_bytes as f64, "client_to_sidecar {sent} < {} value bytes", traffic.value_bytes);
    assert_eq!(sent, sum_of(&own, "kafka_sidecar_bytes_total", &[("direction", "client_to_sidecar")]));
    let received = prometheus.value("kafka_sidecar_bytes_total{direction=\"sidecar_to_client\"}");
    assert!(received >= traffic.value_bytes as f64, "sidecar_to_client {received}: the values were consumed");

    // Connections.
    let open = prometheus.value("kafka_sidecar_client_connections");
    assert!(open >= 0.0, "client_connections {open}");
    let accepted = prometheus.value("kafka_sidecar_client_connections_total");
    assert!(accepted >= traffic.connections as f64, "{accepted} connections counted, {} made", traffic.connections);
    assert_eq!(accepted, sum_of(&own, "kafka_sidecar_client_connections_total", &[]));
    assert!(prometheus.value("sum(kafka_sidecar_disconnects_total{cause=\"client_closed\"})") >= 5.0);
    assert_eq!(prometheus.value("kafka_sidecar_disconnects_total{cause=\"protocol_error\"}"), 1.0);
    assert_eq!(prometheus.value("kafka_sidecar_protocol_errors_total{kind=\"tls_on_plaintext\"}"), 1.0);
    let refused = prometheus.value("sum(kafka_sidecar_upstream_connects_total{result=\"refused\"})");
    let ok = prometheus.value("sum(kafka_sidecar_upstream_connects_total{result=\"ok\"})");
    assert!(refused >= 1.0 && ok >= 1.0, "connects: {refused} refused, {ok} ok");

    // Errors, cluster view, build.
    let exists =
        prometheus.value("kafka_sidecar_response_errors_total{api=\"CreateTopics\",error=\"TopicAlreadyExists\"}");
    assert_eq!(exists, 1.0);
    assert_eq!(prometheus.value("kafka_sidecar_controller_id"), 111.0);
    assert!(prometheus.value("kafka_sidecar_metadata_refreshes_total{result=\"ok\"}") >= 1.0);
    let build = prometheus.query("kafka_sidecar_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].1, 1.0);
    assert_eq!(build[0].0["version"], env!("CARGO_PKG_VERSION"));

    // Every dashboard query evaluates; those over metrics this run produced return series.
    let present: BTreeSet<&str> = own.iter().map(|s| s.name.as_str()).collect();
    let mut empty = Vec::new();
    for expr in dashboard_exprs() {
        let query = expr.replace("$__rate_interval", "1m").replace("$instance", ".+").replace("$job", ".+");
        let data = prometheus.query_data(&query);
        let names = metric_names(&expr);
        if data["result"].as_array().is_none_or(Vec::is_empty) && names.iter().all(|n| present.contains(n.as_str())) {
            empty.push(query);
        }
    }
    assert!(empty.is_empty(), "dashboard queries with no data although their metrics exist:\n{}", empty.join("\n"));

    eprintln!(
        "[observability] scraped: Produce {} / Fetch {} / CreateTopics {} requests, Produce buckets {buckets:?}, \
         p99 {p99:.4}s, client_to_sidecar {sent} B, {accepted} connections; query \
         sum(kafka_sidecar_requests_total{{api=\"Produce\"}}) -> {}",
        sum_of(&own, "kafka_sidecar_requests_total", &[("api", "Produce")]),
        sum_of(&own, "kafka_sidecar_requests_total", &[("api", "Fetch")]),
        sum_of(&own, "kafka_sidecar_requests_total", &[("api", "CreateTopics")]),
        prometheus.query_data("kafka_sidecar_requests_total{api=\"Produce\"}")
    );
}

// ------------------------------------------------------------------------------------------------
// 2. promtool's lint

#[test]
fn promtool_accepts_the_exposition_after_traffic() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);
    client_traffic(&sidecar, "linted");
    let text = scrape(&sidecar);
    let families: BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    for family in
        ["kafka_sidecar_requests_total", "kafka_sidecar_response_errors_total", "kafka_sidecar_protocol_errors_total"]
    {
        assert!(families.contains(family), "{family} missing after traffic:\n{text}");
    }
    let (ok, output) = run_promtool(&["check", "metrics"], &text);
    assert!(ok && output.trim().is_empty(), "promtool check metrics:\n{output}");

    // What promtool does not check: one HELP and TYPE per family, and no series twice.
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(helps, families.len(), "every family has one HELP and one TYPE");
    let samples = parse_samples(&text);
    let keys: BTreeSet<String> = samples.iter().map(Sample::key).collect();
    assert_eq!(keys.len(), samples.len(), "a series appears twice");
}

// ------------------------------------------------------------------------------------------------
// Series that exist from the start

/// Label values known in advance, each a series at 0 from the first scrape (docs/metrics.md).
const RETRIED_APIS: [&str; 8] = [
    "CreateTopics",
    "DeleteTopics",
    "CreatePartitions",
    "ElectLeaders",
    "AlterUserScramCredentials",
    "AlterPartitionReassignments",
    "ListPartitionReassignments",
    "UpdateFeatures",
];
const RETRY_OUTCOMES: [&str; 3] = ["recovered", "exhausted", "lost"];
const PROTOCOL_ERROR_KINDS: [&str; 11] = [
    "tls_on_plaintext",
    "http_on_kafka",
    "frame_too_large",
    "buffered_frame_too_large",
    "negative_length",
    "truncated_header",
    "truncated_frame",
    "tls_handshake",
    "bad_request_header",
    "bad_request_body",
    "bad_response_body",
];
const DISCONNECT_CAUSES: [&str; 8] = [
    "client_closed",
    "broker_closed",
    "idle",
    "protocol_error",
    "upstream_unavailable",
    "retry_lost",
    "shutdown",
    "unauthenticated",
];
const CLIENT_AUTH_REFUSALS: [&str; 9] = [
    "tls_no_certificate",
    "tls_untrusted_certificate",
    "tls_invalid_certificate",
    "tls_handshake",
    "sasl_unknown_user",
    "sasl_wrong_password",
    "sasl_unsupported_mechanism",
    "sasl_malformed",
    "unauthenticated_request",
];

/// A fresh sidecar's first scrape, before any client request (its only clients are the start-up
/// probes of the test harness) and with no broker to reach, already has every series whose labels
/// form a closed set, at 0: `rate()` sees the first retry, and an alert can tell "none" from "not
/// scraped". Node-labelled series are not there yet.
#[test]
fn closed_label_sets_are_exported_at_zero_from_the_first_scrape() {
    let nowhere = support::free_port_base(1);
    let sidecar = Sidecar::start(&format!("127.0.0.1:{nowhere}"), &[]);
    let text = scrape(&sidecar);
    let samples = parse_samples(&text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let found: Vec<&Sample> = samples.iter().filter(|s| s.matches(name, labels)).collect();
        assert_eq!(found.len(), 1, "one series {name} {labels:?} in the first scrape:\n{text}");
        found[0].value
    };

    let line = "kafka_sidecar_not_controller_retries_total{api=\"CreateTopics\",outcome=\"recovered\"} 0";
    assert!(text.lines().any(|l| l == line), "no `{line}` in the first scrape:\n{text}");
    for api in RETRIED_APIS {
        for outcome in RETRY_OUTCOMES {
            assert_eq!(value("kafka_sidecar_not_controller_retries_total", &[("api", api), ("outcome", outcome)]), 0.0);
        }
    }
    for kind in PROTOCOL_ERROR_KINDS {
        assert_eq!(value("kafka_sidecar_protocol_errors_total", &[("kind", kind)]), 0.0, "kind {kind}");
    }
    let kinds = samples.iter().filter(|s| s.name == "kafka_sidecar_protocol_errors_total").count();
    assert_eq!(kinds, PROTOCOL_ERROR_KINDS.len(), "no other protocol error kind:\n{text}");
    for cause in DISCONNECT_CAUSES {
        let count = value("kafka_sidecar_disconnects_total", &[("cause", cause)]);
        // The harness's readiness probe may have ended already, for want of a broker.
        if !["client_closed", "upstream_unavailable"].contains(&cause) {
            assert_eq!(count, 0.0, "cause {cause}");
        }
    }
    for direction in ["client_to_sidecar", "sidecar_to_broker", "broker_to_sidecar", "sidecar_to_client"] {
        assert_eq!(value("kafka_sidecar_bytes_total", &[("direction", direction)]), 0.0, "direction {direction}");
    }
    for name in [
        "kafka_sidecar_stray_responses_total",
        "kafka_sidecar_upstream_timeouts_total",
        "kafka_sidecar_controller_changes_total",
        "kafka_sidecar_broker_listeners",
        "kafka_sidecar_insecure_remote_clients",
    ] {
        assert_eq!(value(name, &[]), 0.0, "{name}");
    }
    for cause in CLIENT_AUTH_REFUSALS {
        assert_eq!(value("kafka_sidecar_client_auth_refusals_total", &[("cause", cause)]), 0.0, "cause {cause}");
    }
    assert_eq!(value("kafka_sidecar_metadata_refreshes_total", &[("result", "ok")]), 0.0);
    value("kafka_sidecar_metadata_refreshes_total", &[("result", "error")]);
    value("kafka_sidecar_client_connections_total", &[]);

    // Labels learned at run time stay lazy: no request has come, no controller is known.
    for lazy in ["kafka_sidecar_requests_total", "kafka_sidecar_response_errors_total", "kafka_sidecar_controller_id"] {
        assert!(samples.iter().all(|s| s.name != lazy), "{lazy} before any request:\n{text}");
    }
    let zeros = samples.iter().filter(|s| s.value == 0.0 && !s.name.contains("_duration_")).count();
    eprintln!("[observability] first scrape: {} series, {zeros} of them (histograms aside) at 0", samples.len());
}

// ------------------------------------------------------------------------------------------------
// 3. Readiness

/// Polls `path` until it answers `status`; returns the body.
fn wait_for_status(sidecar: &Sidecar, path: &str, status: u16, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (got, body) = sidecar.admin_get(path);
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} still {got} {body:?} after {timeout:?}\n{}", sidecar.logs());
        thread::sleep(Duration::from_millis(50));
    }
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

// ------------------------------------------------------------------------------------------------
// 4. Cardinality

/// One client id's work: create `topics` through the bootstrap port, ask Metadata for them, and
/// produce one record to each of the first two through the broker port of node 111.
fn touch_topics(sidecar: &Sidecar, client_id: &str, topics: &[String]) {
    let mut bootstrap = RawClient::connect(&sidecar.bootstrap());
    let create = CreateTopicsRequest::default()
        .with_topics(topics.iter().map(|t| new_topic(t)).collect())
        .with_timeout_ms(10_000);
    let created: CreateTopicsResponse = request_as(&mut bootstrap, client_id, ApiKey::CreateTopics, 4, &create);
    assert!(created.topics.iter().all(|t| t.error_code == 0), "{client_id}: create failed: {created:?}");

    let wanted = topics.iter().map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t)))).collect();
    let metadata = MetadataRequest::default().with_topics(Some(wanted)).with_allow_auto_topic_creation(false);
    let answer: MetadataResponse = request_as(&mut bootstrap, client_id, ApiKey::Metadata, 7, &metadata);
    assert_eq!(answer.topics.len(), topics.len(), "{client_id}: metadata {answer:?}");
    assert!(answer.topics.iter().all(|t| t.error_code == 0), "{client_id}: metadata errors {answer:?}");

    let mut broker = RawClient::connect(&sidecar.broker_addr(support::TANSU_NODE_ID));
    for topic in topics.iter().take(2) {
        let produce = ProduceRequest::default().with_acks(1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(raw::record_batch(topic))),
            ]),
        ]);
        let produced: ProduceResponse = request_as(&mut broker, client_id, ApiKey::Produce, 7, &produce);
        let code = produced.responses[0].partition_responses[0].error_code;
        assert_eq!(code, 0, "{client_id}: produce to {topic}: {produced:?}");
    }
}

/// The series of /metrics once every client connection has closed.
fn settled_series(sidecar: &Sidecar) -> (BTreeSet<String>, String) {
    let text = wait_for_metrics(sidecar, "client connections to close", Duration::from_secs(15), |samples| {
        sum_of(samples, "kafka_sidecar_client_connections", &[]) == 0.0
    });
    (parse_samples(&text).iter().map(Sample::key).collect(), text)
}

#[test]
fn topics_and_client_ids_never_become_series() {
    const CLIENT_IDS: usize = 50;
    const TOPICS: usize = 500;
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &[]);

    // Warm-up: the same APIs through the same ports, one client id, two topics.
    let warm_topics = vec!["obs-warm-topic-a".to_owned(), "obs-warm-topic-b".to_owned()];
    touch_topics(&sidecar, "obs-warm-client", &warm_topics);
    let (before, _) = settled_series(&sidecar);

    let topics: Vec<String> = (0..TOPICS).map(|i| format!("obs-card-topic-{i:03}")).collect();
    let client_ids: Vec<String> = (0..CLIENT_IDS).map(|i| format!("obs-card-client-{i:02}")).collect();
    for (client_id, batch) in client_ids.iter().zip(topics.chunks(TOPICS / CLIENT_IDS)) {
        touch_topics(&sidecar, client_id, batch);
    }
    let (after, text) = settled_series(&sidecar);
    let samples = parse_samples(&text);
    assert_eq!(
        sum_of(&samples, "kafka_sidecar_requests_total", &[("api", "CreateTopics")]),
        (1 + CLIENT_IDS) as f64,
        "every request was counted"
    );

    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "series added by {TOPICS} topics and {CLIENT_IDS} client ids: {added:#?}");
    assert_eq!(after.len(), before.len(), "series count changed");
    for name in topics.iter().chain(&client_ids).chain(&warm_topics).map(String::as_str).chain(["obs-warm-client"]) {
        let line = text.lines().find(|line| line.contains(name));
        assert!(line.is_none(), "{name} leaked into /metrics: {line:?}");
    }
    assert!(!text.contains("obs-"), "a topic or client id leaked into /metrics");
    eprintln!("[observability] {} series before and after {TOPICS} topics / {CLIENT_IDS} client ids", after.len());
}

// ------------------------------------------------------------------------------------------------
// Shipped artifacts: alert rules, dashboard, metric reference

/// (constant, metric name) of every `pub const NAME: &str = "kafka_sidecar_…";` in telemetry.rs.
fn telemetry_metric_names() -> Vec<(String, String)> {
    let source = fs::read_to_string(Path::new(REPO).join("src/telemetry.rs")).expect("read src/telemetry.rs");
    let names: Vec<(String, String)> = source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (ident, rest) = rest.split_once(':')?;
            let value = rest.split_once('"')?.1.split_once('"')?.0;
            value.starts_with("kafka_sidecar_").then(|| (ident.trim().to_owned(), value.to_owned()))
        })
        .collect();
    assert!(names.len() >= 10, "no metric constants found in src/telemetry.rs: {names:?}");
    names
}

/// Every series name the sidecar may expose: its metric names, plus `_bucket`, `_sum` and
/// `_count` of the histograms (those described with `describe_histogram!`).
fn known_series_names() -> BTreeSet<String> {
    let source = fs::read_to_string(Path::new(REPO).join("src/telemetry.rs")).unwrap();
    let histograms: BTreeSet<String> = source
        .split("describe_histogram!(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().split(|c: char| !c.is_alphanumeric() && c != '_').next())
        .map(str::to_owned)
        .collect();
    let mut known = BTreeSet::new();
    for (ident, name) in telemetry_metric_names() {
        if histograms.contains(&ident) {
            known.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}")));
        }
        known.insert(name);
    }
    known
}

/// `kafka_sidecar_…` identifiers in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("kafka_sidecar_"))
        .map(str::to_owned)
        .collect()
}

fn dashboard() -> Value {
    let path = Path::new(REPO).join("deploy/grafana/kafka-sidecar.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every panel of the dashboard, those nested in rows included.
fn dashboard_panels(dashboard: &Value) -> Vec<Value> {
    let mut panels = Vec::new();
    let mut pending: Vec<Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
    while let Some(panel) = pending.pop() {
        pending.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        panels.push(panel);
    }
    panels
}

/// The PromQL of every dashboard target.
fn dashboard_exprs() -> Vec<String> {
    let exprs: Vec<String> = dashboard_panels(&dashboard())
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("every target has an expr").to_owned())
        .collect();
    assert!(exprs.len() >= 10, "dashboard has only {} queries", exprs.len());
    exprs
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let (ok, output) = run_promtool(&["check", "rules", "deploy/prometheus/alerts.yml"], "");
    assert!(ok, "promtool check rules:\n{output}");
    assert!(output.contains("SUCCESS"), "{output}");
    let (ok, output) = run_promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"], "");
    assert!(ok, "promtool test rules:\n{output}");

    // The rules name only metrics the sidecar exposes, so a renamed metric breaks this test.
    let rules = fs::read_to_string(Path::new(REPO).join("deploy/prometheus/alerts.yml")).unwrap();
    let known = known_series_names();
    let unknown: Vec<String> = metric_names(&rules).into_iter().filter(|n| !known.contains(n)).collect();
    assert!(unknown.is_empty(), "alerts.yml uses metrics src/telemetry.rs does not define: {unknown:?}");
    for alert in [
        "KafkaSidecarDown",
        "KafkaSidecarBrokerUnreachable",
        "KafkaSidecarNotControllerRetriesExhausted",
        "KafkaSidecarHighErrorRate",
        "KafkaSidecarNoMetadata",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "alert {alert} missing");
    }
}

#[test]
fn dashboard_is_valid_and_uses_only_real_metrics() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_i64().unwrap_or(0) >= 36, "schemaVersion {}", dashboard["schemaVersion"]);
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name}"));
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(variable("instance")["type"], "query");

    let panels = dashboard_panels(&dashboard);
    let mut ids = BTreeSet::new();
    for panel in &panels {
        assert!(ids.insert(panel["id"].as_i64().expect("panel id")), "duplicate panel id {}", panel["id"]);
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {} ignores $datasource", panel["title"]);
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", panel["title"]));
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("$instance"), "panel {}: {expr} ignores $instance", panel["title"]);
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Request rate by api",
        "Latency p50 / p99 by api",
        "Response errors by api and error",
        "NOT_CONTROLLER retries by outcome",
        "Client connections",
        "Client disconnects by cause",
        "Upstream connections by node",
        "Upstream connect failures by node and result",
        "Bytes by direction",
        "Controller id",
        "Controller changes",
        "Metadata refreshes by result",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted:?}; panels: {titles:?}");
    }

    let known = known_series_names();
    let mut used = BTreeSet::new();
    let variable_queries = variables.iter().filter_map(|v| v["definition"].as_str().map(str::to_owned));
    for expr in dashboard_exprs().into_iter().chain(variable_queries) {
        for name in metric_names(&expr) {
            assert!(
                known.contains(&name),
                "dashboard query uses {name}, which src/telemetry.rs does not define: {expr}"
            );
            used.insert(name.trim_end_matches("_bucket").to_owned());
        }
    }
    // Every metric is on the dashboard somewhere.
    for (_, name) in telemetry_metric_names() {
        assert!(used.contains(&name), "{name} is on no dashboard panel");
    }
}

#[test]
fn every_metric_is_documented() {
    let docs = fs::read_to_string(Path::new(REPO).join("docs/metrics.md")).expect("read docs/metrics.md");
    let missing: Vec<String> =
        telemetry_metric_names().into_iter().map(|(_, n)| n).filter(|n| !docs.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "docs/metrics.md does not document {missing:?}");
    for needle in ["/healthz", "/readyz", "/metrics", "prometheus.istio.io/merge-metrics", "PodMonitor"] {
        assert!(docs.contains(needle), "docs/metrics.md does not mention {needle}");
    }
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/kafka-sidecar.json"] {
        assert!(docs.contains(file), "docs/metrics.md does not point to {file}");
        assert!(Path::new(REPO).join(file).is_file(), "{file} missing");
    }
}
