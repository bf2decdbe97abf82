//! Metric names, help texts and recording helpers in one place, plus the Prometheus recorder.
//!
//! Every label value comes from a closed set: api and error names from the protocol, causes and
//! kinds from typed enums, node ids of the cluster. Nothing a client sends (topics, client ids,
//! addresses) ever becomes a label. Hot-path handles are built once and reused.

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
pub const BUILD_INFO: &str = "kafka_sidecar_build_info";

/// Request latency buckets, from well under a millisecond to Fetch long polls and admin retries.
const LATENCY_BUCKETS: &[f64] =
    &[0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const CONNECT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Why a client connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCause {
    ClientClosed,
    BrokerClosed,
    Idle,
    ProtocolError,
    UpstreamUnavailable,
    /// A retried admin request may have been applied but its answer was lost.
    RetryLost,
    Shutdown,
}

impl DisconnectCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectCause::ClientClosed => "client_closed",
            DisconnectCause::BrokerClosed => "broker_closed",
            DisconnectCause::Idle => "idle",
            DisconnectCause::ProtocolError => "protocol_error",
            DisconnectCause::UpstreamUnavailable => "upstream_unavailable",
            DisconnectCause::RetryLost => "retry_lost",
            DisconnectCause::Shutdown => "shutdown",
        }
    }
}

/// Which leg of the proxy bytes moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToSidecar,
    SidecarToBroker,
    BrokerToSidecar,
    SidecarToClient,
}

const DIRECTIONS: [Direction; 4] =
    [Direction::ClientToSidecar, Direction::SidecarToBroker, Direction::BrokerToSidecar, Direction::SidecarToClient];

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToSidecar => "client_to_sidecar",
            Direction::SidecarToBroker => "sidecar_to_broker",
            Direction::BrokerToSidecar => "broker_to_sidecar",
            Direction::SidecarToClient => "sidecar_to_client",
        }
    }
}

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
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
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
    describe_gauge!(CONTROLLER_ID, "Node id of the controller as last reported by the cluster.");
    describe_counter!(CONTROLLER_CHANGES, "Times the reported controller changed.");
    describe_gauge!(BROKER_LISTENERS, "Per-broker listeners open.");
    describe_gauge!(BUILD_INFO, "Build information; the value is always 1.");
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
        HANDLES.get_or_init(|| DIRECTIONS.iter().map(|d| counter!(BYTES, "direction" => d.as_str())).collect());
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

pub fn protocol_error(kind: &'static str) {
    counter!(PROTOCOL_ERRORS, "kind" => kind).increment(1);
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

pub fn metadata_refresh(result: &'static str) {
    counter!(METADATA_REFRESHES, "result" => result).increment(1);
}

pub fn not_controller_retry(api: &'static str, outcome: &'static str) {
    counter!(NOT_CONTROLLER_RETRIES, "api" => api, "outcome" => outcome).increment(1);
}

pub fn controller_changed(controller_id: i32) {
    counter!(CONTROLLER_CHANGES).increment(1);
    gauge!(CONTROLLER_ID).set(f64::from(controller_id));
}

pub fn broker_listener_opened() {
    gauge!(BROKER_LISTENERS).increment(1.0);
}
