//! Observability: a real Prometheus scraping the sidecar while real clients use it, the exposition
//! text as `promtool` lints it, readiness through start-up, cluster loss and shutdown, label
//! cardinality under many topics and client ids, and the alert rules, Grafana dashboard and metric
//! reference shipped in `deploy/` and `docs/`.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool` on `PATH`, or
//! `KAFKA_SIDECAR_PROMETHEUS` / `KAFKA_SIDECAR_PROMTOOL`), installed by `scripts/setup.sh`.
//!
//! Layout: `scrape` (a real Prometheus scrape, promtool's lint), `series` (series from the first
//! scrape, cardinality), `readiness`, `artifacts` (alert rules, dashboard, metric reference).

mod artifacts;
mod readiness;
mod scrape;
mod series;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::{Sidecar, create_topics, expect_success, kcat, kcat_with_input};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

// === the exposition text ===

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

// === prometheus and promtool ===

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

/// Runs `promtool` with `args` and `stdin`; returns (success, stdout + stderr).
fn run_promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut cmd = Command::new(promtool());
    cmd.args(args).current_dir(REPO);
    let output = support::run_with_input(cmd, Some(stdin), support::CLIENT_TIMEOUT);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

// === client traffic ===

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
