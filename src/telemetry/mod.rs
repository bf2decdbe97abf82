//! Metric names, help texts and recording helpers in one place, plus the Prometheus recorder.
//!
//! Every label value comes from a closed set: api and error names from the protocol, causes and
//! kinds from typed enums, node ids of the cluster. Nothing a client sends (topics, client ids,
//! addresses) ever becomes a label. Hot-path handles are built once and reused. Series whose label
//! values are known in advance are registered at 0 at start ([`install`]).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::wire::{api_name, error_name};

pub const REQUESTS: &str = "kafka_sidecar_requests_total";
pub const REQUEST_DURATION: &str = "kafka_sidecar_request_duration_seconds";
pub const RESPONSE_ERRORS: &str = "kafka_sidecar_response_errors_total";
pub const BYTES: &str = "kafka_sidecar_bytes_total";
pub const CLIENT_CONNECTIONS: &str = "kafka_sidecar_client_connections";
pub const CLIENT_CONNECTIONS_TOTAL: &str = "kafka_sidecar_client_connections_total";
pub const DISCONNECTS: &str = "kafka_sidecar_disconnects_total";
pub const PROTOCOL_ERRORS: &str = "kafka_sidecar_protocol_errors_total";
pub const STRAY_RESPONSES: &str = "kafka_sidecar_stray_responses_total";
pub const UPSTREAM_CONNECTS: &str = "kafka_sidecar_upstream_connects_total";
pub const UPSTREAM_CONNECT_DURATION: &str = "kafka_sidecar_upstream_connect_duration_seconds";
pub const UPSTREAM_CONNECTIONS: &str = "kafka_sidecar_upstream_connections";
pub const UPSTREAM_TIMEOUTS: &str = "kafka_sidecar_upstream_timeouts_total";
pub const METADATA_REFRESHES: &str = "kafka_sidecar_metadata_refreshes_total";
pub const NOT_CONTROLLER_RETRIES: &str = "kafka_sidecar_not_controller_retries_total";
pub const CONTROLLER_ID: &str = "kafka_sidecar_controller_id";
pub const CONTROLLER_CHANGES: &str = "kafka_sidecar_controller_changes_total";
pub const BROKER_LISTENERS: &str = "kafka_sidecar_broker_listeners";
pub const ADMIN_ROUTED: &str = "kafka_sidecar_admin_routed_total";
pub const POOL_IDLE: &str = "kafka_sidecar_pool_idle_connections";
pub const POOL_CHECKOUTS: &str = "kafka_sidecar_pool_checkouts_total";
pub const POOL_REUSED: &str = "kafka_sidecar_pool_reused_total";
pub const CONNECT_RATE_WAITS: &str = "kafka_sidecar_connect_rate_waits_total";
pub const BUILD_INFO: &str = "kafka_sidecar_build_info";
pub const CLIENT_AUTH_REFUSALS: &str = "kafka_sidecar_client_auth_refusals_total";
pub const INSECURE_REMOTE_CLIENTS: &str = "kafka_sidecar_insecure_remote_clients";

/// Request latency buckets, from well under a millisecond to Fetch long polls and admin retries.
const LATENCY_BUCKETS: &[f64] =
    &[0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const CONNECT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

mod causes;

pub use causes::*;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot configure the Prometheus recorder: {0}")]
    Build(#[from] BuildError),
    #[error("a metrics recorder is already installed")]
    AlreadyInstalled,
}

/// Builds the Prometheus recorder (without installing it).
pub fn recorder() -> Result<metrics_exporter_prometheus::PrometheusRecorder, TelemetryError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(UPSTREAM_CONNECT_DURATION.into()), CONNECT_BUCKETS)?
        .build_recorder())
}

/// Installs the Prometheus recorder globally and describes every metric.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    let recorder = recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| TelemetryError::AlreadyInstalled)?;
    describe_all();
    // Apis every producer or consumer uses (the policy table says which): their latency series
    // exist from the first scrape, so the first requests show in `rate()` and quantiles.
    for api_key in (0..api_slots() as i16).filter(|&key| crate::policy::policy(key).everyday) {
        duration_histogram(api_key);
    }
    register_closed_sets();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Registers at 0 every series whose labels are known in advance, so that the first scrape has
/// them: `rate()` and `increase()` then count the first event, and an alert can tell "none" from
/// "not scraped". Series labelled by node (learned at run time) and by api and error (a sparse
/// product of two large sets) appear when first used.
fn register_closed_sets() {
    for direction in Direction::ALL {
        bytes(*direction, 0);
    }
    counter!(CLIENT_CONNECTIONS_TOTAL).absolute(0);
    gauge!(CLIENT_CONNECTIONS).increment(0.0);
    for cause in DisconnectCause::ALL {
        counter!(DISCONNECTS, "cause" => cause.as_str()).absolute(0);
    }
    for kind in PROTOCOL_ERROR_KINDS {
        counter!(PROTOCOL_ERRORS, "kind" => kind.as_str()).absolute(0);
    }
    counter!(STRAY_RESPONSES).absolute(0);
    counter!(UPSTREAM_TIMEOUTS).absolute(0);
    for result in RefreshResult::ALL {
        counter!(METADATA_REFRESHES, "result" => result.as_str()).absolute(0);
    }
    for api_key in (0..api_slots() as i16).filter(|&key| crate::policy::policy(key).retry.is_some()) {
        for outcome in RetryOutcome::ALL {
            counter!(NOT_CONTROLLER_RETRIES, "api" => api_name(api_key), "outcome" => outcome.as_str()).absolute(0);
        }
        counter!(ADMIN_ROUTED, "api" => api_name(api_key)).absolute(0);
    }
    counter!(CONTROLLER_CHANGES).absolute(0);
    gauge!(BROKER_LISTENERS).increment(0.0);
    for cause in Refusal::ALL {
        counter!(CLIENT_AUTH_REFUSALS, "cause" => cause.as_str()).absolute(0);
    }
    gauge!(INSECURE_REMOTE_CLIENTS).increment(0.0);
    let _registered = histogram!(UPSTREAM_CONNECT_DURATION);
}

fn describe_all() {
    describe_counter!(REQUESTS, "Client requests received, by Kafka api and the broker node they went to.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a client request's arrival to its response being written to the client, by api."
    );
    describe_counter!(RESPONSE_ERRORS, "Error codes in responses the sidecar reads, by api and error name.");
    describe_counter!(BYTES, Unit::Bytes, "Bytes moved, by direction.");
    describe_gauge!(CLIENT_CONNECTIONS, "Client connections open now.");
    describe_counter!(CLIENT_CONNECTIONS_TOTAL, "Client connections accepted.");
    describe_counter!(DISCONNECTS, "Client connections closed, by cause.");
    describe_counter!(PROTOCOL_ERRORS, "Malformed or unexpected Kafka bytes, by kind.");
    describe_counter!(STRAY_RESPONSES, "Broker responses that matched no waiting request and were dropped.");
    describe_counter!(UPSTREAM_CONNECTS, "Connect attempts to brokers, by node and result.");
    describe_histogram!(UPSTREAM_CONNECT_DURATION, Unit::Seconds, "Time to establish a broker connection.");
    describe_gauge!(UPSTREAM_CONNECTIONS, "Broker connections of client sessions open now, by node.");
    describe_counter!(
        UPSTREAM_TIMEOUTS,
        "Broker connections the kernel gave up on (keepalive or TCP_USER_TIMEOUT expired)."
    );
    describe_counter!(METADATA_REFRESHES, "Metadata refreshes on the sidecar's control connection, by result.");
    describe_counter!(
        NOT_CONTROLLER_RETRIES,
        "Admin requests answered NOT_CONTROLLER and retried, by api and outcome (recovered, exhausted, lost)."
    );
    describe_counter!(ADMIN_ROUTED, "Controller-bound admin requests sent straight to the known controller, by api.");
    describe_gauge!(POOL_IDLE, "Ready broker connections waiting in the pool, by node.");
    describe_counter!(POOL_CHECKOUTS, "Broker connections sessions took, by node and result (hit: pooled, miss: new).");
    describe_counter!(POOL_REUSED, "Broker connections given back to the pool by cleanly ended clients, by node.");
    describe_counter!(CONNECT_RATE_WAITS, "Broker connects that waited for the connect-rate limit, by node.");
    describe_gauge!(CONTROLLER_ID, "Node id of the controller as last reported by the cluster.");
    describe_counter!(CONTROLLER_CHANGES, "Times the reported controller changed.");
    describe_gauge!(BROKER_LISTENERS, "Per-broker listeners open.");
    describe_gauge!(BUILD_INFO, "Build information; the value is always 1.");
    describe_counter!(
        CLIENT_AUTH_REFUSALS,
        "Clients refused on the Kafka listeners, by cause (mutual TLS handshakes, SASL authentications, requests \
         before authentication)."
    );
    describe_gauge!(
        INSECURE_REMOTE_CLIENTS,
        "1 when the listeners are off loopback and unauthenticated clients act with the sidecar's broker identity \
         (--insecure-allow-unauthenticated-remote-clients), else 0."
    );
}

/// The `node` label of a connection: the broker's node id, or `bootstrap`.
pub fn node_label(node_id: Option<i32>) -> String {
    node_id.map_or_else(|| "bootstrap".to_owned(), |id| id.to_string())
}

/// Per-connection request counters, by api, built on first use.
#[derive(Debug)]
pub struct RequestCounters {
    node: String,
    by_api: Vec<Option<Counter>>,
}

impl RequestCounters {
    pub fn new(node: String) -> Self {
        RequestCounters { node, by_api: Vec::new() }
    }

    pub fn count(&mut self, api_key: i16) {
        let index = usize::try_from(api_key).unwrap_or(usize::MAX).min(api_slots());
        if self.by_api.len() <= index {
            self.by_api.resize(index + 1, None);
        }
        self.by_api[index]
            .get_or_insert_with(|| counter!(REQUESTS, "api" => api_name(api_key), "node" => self.node.clone()))
            .increment(1);
    }
}

/// Api keys above this share one "Unknown" slot.
fn api_slots() -> usize {
    128
}

/// Records how long a request took, from arrival to response written.
pub fn request_duration(api_key: i16, elapsed: Duration) {
    duration_histogram(api_key).record(elapsed.as_secs_f64());
}

/// The latency histogram of one api, registered on first use so that apis nobody calls add no
/// series (the everyday ones are registered at start, see [`install`]).
fn duration_histogram(api_key: i16) -> &'static Histogram {
    static HANDLES: OnceLock<Vec<OnceLock<Histogram>>> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| (0..=api_slots()).map(|_| OnceLock::new()).collect());
    let index = usize::try_from(api_key).unwrap_or(api_slots()).min(api_slots());
    let key = i16::try_from(index).unwrap_or(i16::MAX);
    handles[index].get_or_init(|| histogram!(REQUEST_DURATION, "api" => api_name(key)))
}

/// Counts a non-zero error code in a response to `api_key`.
pub fn response_error(api_key: i16, code: i16) {
    if code != 0 {
        counter!(RESPONSE_ERRORS, "api" => api_name(api_key), "error" => error_name(code)).increment(1);
    }
}

/// Counts bytes moved in one direction.
pub fn bytes(direction: Direction, count: usize) {
    static HANDLES: OnceLock<Vec<Counter>> = OnceLock::new();
    let handles =
        HANDLES.get_or_init(|| Direction::ALL.iter().map(|d| counter!(BYTES, "direction" => d.as_str())).collect());
    handles[direction as usize].increment(count as u64);
}

/// Counts one client connection while it is open; whatever ends it, the gauge comes back down.
#[derive(Debug)]
pub struct ClientConnection {
    _private: (),
}

impl ClientConnection {
    pub fn open() -> Self {
        counter!(CLIENT_CONNECTIONS_TOTAL).increment(1);
        gauge!(CLIENT_CONNECTIONS).increment(1.0);
        ClientConnection { _private: () }
    }

    pub fn closed(self, cause: DisconnectCause) {
        counter!(DISCONNECTS, "cause" => cause.as_str()).increment(1);
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        gauge!(CLIENT_CONNECTIONS).decrement(1.0);
    }
}

pub fn protocol_error(kind: impl Into<ProtocolErrorKind>) {
    counter!(PROTOCOL_ERRORS, "kind" => kind.into().as_str()).increment(1);
}

pub fn stray_response() {
    counter!(STRAY_RESPONSES).increment(1);
}

pub fn upstream_connect(node: &str, result: &'static str, elapsed: Duration) {
    counter!(UPSTREAM_CONNECTS, "node" => node.to_owned(), "result" => result).increment(1);
    if result == "ok" {
        histogram!(UPSTREAM_CONNECT_DURATION).record(elapsed.as_secs_f64());
    }
}

/// Tracks one open broker connection for `node` until dropped.
#[derive(Debug)]
pub struct UpstreamConnection {
    node: String,
}

impl UpstreamConnection {
    pub fn open(node: &str) -> Self {
        gauge!(UPSTREAM_CONNECTIONS, "node" => node.to_owned()).increment(1.0);
        UpstreamConnection { node: node.to_owned() }
    }
}

impl Drop for UpstreamConnection {
    fn drop(&mut self) {
        gauge!(UPSTREAM_CONNECTIONS, "node" => self.node.clone()).decrement(1.0);
    }
}

pub fn upstream_timeout() {
    counter!(UPSTREAM_TIMEOUTS).increment(1);
}

pub fn metadata_refresh(result: RefreshResult) {
    counter!(METADATA_REFRESHES, "result" => result.as_str()).increment(1);
}

pub fn not_controller_retry(api: &'static str, outcome: RetryOutcome) {
    counter!(NOT_CONTROLLER_RETRIES, "api" => api, "outcome" => outcome.as_str()).increment(1);
}

/// Registers at 0 the pool series of one node label, when its pool is made.
pub fn pool_registered(node: &str) {
    gauge!(POOL_IDLE, "node" => node.to_owned()).increment(0.0);
    for result in ["hit", "miss"] {
        counter!(POOL_CHECKOUTS, "node" => node.to_owned(), "result" => result).increment(0);
    }
    counter!(POOL_REUSED, "node" => node.to_owned()).increment(0);
    counter!(CONNECT_RATE_WAITS, "node" => node.to_owned()).increment(0);
}

pub fn pool_idle(node: &str, count: usize) {
    gauge!(POOL_IDLE, "node" => node.to_owned()).set(count as f64);
}

pub fn pool_checkout(node: &str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!(POOL_CHECKOUTS, "node" => node.to_owned(), "result" => result).increment(1);
}

pub fn pool_reused(node: &str) {
    counter!(POOL_REUSED, "node" => node.to_owned()).increment(1);
}

pub fn connect_rate_wait(node: &str) {
    counter!(CONNECT_RATE_WAITS, "node" => node.to_owned()).increment(1);
}

pub fn admin_routed(api: &'static str) {
    counter!(ADMIN_ROUTED, "api" => api).increment(1);
}

pub fn controller_changed(controller_id: i32) {
    counter!(CONTROLLER_CHANGES).increment(1);
    gauge!(CONTROLLER_ID).set(f64::from(controller_id));
}

/// Counts a client refused on a listener.
pub fn client_auth_refused(cause: Refusal) {
    counter!(CLIENT_AUTH_REFUSALS, "cause" => cause.as_str()).increment(1);
}

/// Whether unauthenticated remote clients may use the sidecar's broker identity.
pub fn insecure_remote_clients(insecure: bool) {
    gauge!(INSECURE_REMOTE_CLIENTS).set(if insecure { 1.0 } else { 0.0 });
}

pub fn broker_listener_opened() {
    gauge!(BROKER_LISTENERS).increment(1.0);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::wire::FrameErrorKind;

    use super::*;

    #[test]
    fn protocol_error_kinds_are_every_framing_kind_but_io_and_every_session_kind() {
        let labels: Vec<&str> = PROTOCOL_ERROR_KINDS.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(labels.iter().collect::<BTreeSet<_>>().len(), labels.len(), "distinct: {labels:?}");
        assert!(!labels.contains(&"io"), "an i/o error is not counted: {labels:?}");
        for kind in FrameErrorKind::ALL.iter().filter(|k| **k != FrameErrorKind::Io) {
            assert!(PROTOCOL_ERROR_KINDS.contains(&ProtocolErrorKind::from(*kind)), "{kind}");
        }
        for kind in SessionErrorKind::ALL {
            assert!(PROTOCOL_ERROR_KINDS.contains(&ProtocolErrorKind::from(*kind)), "{kind}");
        }
    }

    #[test]
    fn label_sets_list_each_value_once_in_order() {
        assert_eq!(DisconnectCause::ALL.len(), 8);
        assert_eq!(DisconnectCause::ALL[5], DisconnectCause::RetryLost);
        assert_eq!(DisconnectCause::RetryLost.to_string(), "retry_lost");
        let directions: Vec<&str> = Direction::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(directions, ["client_to_sidecar", "sidecar_to_broker", "broker_to_sidecar", "sidecar_to_client"]);
        for (index, direction) in Direction::ALL.iter().enumerate() {
            assert_eq!(*direction as usize, index, "bytes() indexes its handles by discriminant");
        }
    }
}
