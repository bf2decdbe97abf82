//! A real Prometheus scraping the sidecar while real clients use it, and promtool's lint of the
//! exposition text.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use kafka_sidecar_test_support as support;
use serde_json::Value;
use support::{ChildProcess, Sidecar, Tansu};

use super::artifacts::{dashboard_exprs, metric_names};
use super::{MESSAGES, Sample, client_traffic, parse_samples, run_promtool, scrape, sum_of, tool};

/// A Prometheus server on loopback scraping one sidecar's /metrics every second, with its
/// storage in a temporary directory. Killed and cleaned up on drop.
struct Prometheus {
    process: ChildProcess,
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
        let addr = format!("127.0.0.1:{}", support::free_port());
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let mut process = ChildProcess::spawn("prometheus", cmd);
        let ready = process.wait_until("become ready", Duration::from_secs(30), |_| {
            support::http::try_get(&addr, "/-/ready").is_ok_and(|(status, _)| status == 200)
        });
        ready.unwrap_or_else(|why| panic!("Prometheus did not start: {why}"));
        Prometheus { process, addr, dir }
    }

    fn log(&self) -> String {
        self.process.logs()
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
        self.process.kill();
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
