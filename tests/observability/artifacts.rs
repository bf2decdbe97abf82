//! What ships beside the binary: alert rules, the Grafana dashboard and the metric reference.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde_json::Value;

use super::{REPO, run_promtool};

/// (constant, metric name) of every `pub const NAME: &str = "kafka_sidecar_…";` in telemetry.rs.
fn telemetry_metric_names() -> Vec<(String, String)> {
    let source = fs::read_to_string(Path::new(REPO).join("src/telemetry/mod.rs")).expect("read src/telemetry/mod.rs");
    let names: Vec<(String, String)> = source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (ident, rest) = rest.split_once(':')?;
            let value = rest.split_once('"')?.1.split_once('"')?.0;
            value.starts_with("kafka_sidecar_").then(|| (ident.trim().to_owned(), value.to_owned()))
        })
        .collect();
    assert!(names.len() >= 10, "no metric constants found in src/telemetry/mod.rs: {names:?}");
    names
}

/// Every series name the sidecar may expose: its metric names, plus `_bucket`, `_sum` and
/// `_count` of the histograms (those described with `describe_histogram!`).
fn known_series_names() -> BTreeSet<String> {
    let source = fs::read_to_string(Path::new(REPO).join("src/telemetry/mod.rs")).unwrap();
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
pub(super) fn metric_names(text: &str) -> BTreeSet<String> {
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
pub(super) fn dashboard_exprs() -> Vec<String> {
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
    assert!(unknown.is_empty(), "alerts.yml uses metrics src/telemetry/mod.rs does not define: {unknown:?}");
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
                "dashboard query uses {name}, which src/telemetry/mod.rs does not define: {expr}"
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
