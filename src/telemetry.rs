//! Metric names, help texts and recording helpers in one place, plus the Prometheus exporter.
//!
//! Every label value comes from a closed set (api names from the protocol, error kinds from typed
//! errors, node ids of the cluster), never from client input. Hot-path handles are built once.

use std::sync::OnceLock;

use metrics::{Counter, Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::wire::api_name;

pub const REQUESTS: &str = "kafka_sidecar_requests_total";
pub const CLIENT_CONNECTIONS: &str = "kafka_sidecar_client_connections";
pub const CLIENT_CONNECTIONS_TOTAL: &str = "kafka_sidecar_client_connections_total";
pub const DISCONNECTS: &str = "kafka_sidecar_disconnects_total";
pub const PROTOCOL_ERRORS: &str = "kafka_sidecar_protocol_errors_total";
pub const UPSTREAM_CONNECTS: &str = "kafka_sidecar_upstream_connects_total";
pub const STRAY_RESPONSES: &str = "kafka_sidecar_stray_responses_total";
pub const METADATA_REFRESHES: &str = "kafka_sidecar_metadata_refreshes_total";
pub const NOT_CONTROLLER_RETRIES: &str = "kafka_sidecar_not_controller_retries_total";
pub const CONTROLLER_ID: &str = "kafka_sidecar_controller_id";
pub const CONTROLLER_CHANGES: &str = "kafka_sidecar_controller_changes_total";
pub const BROKER_LISTENERS: &str = "kafka_sidecar_broker_listeners";
pub const BUILD_INFO: &str = "kafka_sidecar_build_info";

/// Why a client connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCause {
    ClientClosed,
    BrokerClosed,
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
            DisconnectCause::ProtocolError => "protocol_error",
            DisconnectCause::UpstreamUnavailable => "upstream_unavailable",
            DisconnectCause::RetryLost => "retry_lost",
            DisconnectCause::Shutdown => "shutdown",
        }
    }
}

/// Installs the Prometheus recorder and describes every metric.
pub fn install() -> Result<PrometheusHandle, metrics::SetRecorderError<metrics_exporter_prometheus::PrometheusRecorder>>
{
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    describe_all();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

fn describe_all() {
    describe_counter!(REQUESTS, "Client requests received, by Kafka api.");
    describe_gauge!(CLIENT_CONNECTIONS, "Client connections open now.");
    describe_counter!(CLIENT_CONNECTIONS_TOTAL, "Client connections accepted.");
    describe_counter!(DISCONNECTS, "Client connections closed, by cause.");
    describe_counter!(PROTOCOL_ERRORS, "Malformed or unexpected Kafka bytes, by kind.");
    describe_counter!(UPSTREAM_CONNECTS, "Connect attempts to brokers, by result.");
    describe_counter!(STRAY_RESPONSES, "Broker responses that matched no waiting request and were dropped.");
    describe_counter!(METADATA_REFRESHES, "Metadata refreshes on the sidecar's control connection, by result.");
    describe_counter!(
        NOT_CONTROLLER_RETRIES,
        "Admin requests answered NOT_CONTROLLER and retried, by api and outcome (recovered, exhausted, lost)."
    );
    describe_gauge!(CONTROLLER_ID, "Node id of the controller as last reported by the cluster.");
    describe_counter!(CONTROLLER_CHANGES, "Times the reported controller changed.");
    describe_gauge!(BROKER_LISTENERS, Unit::Count, "Per-broker listeners open.");
    describe_gauge!(BUILD_INFO, "Build information; the value is always 1.");
}

/// Counts one request of `api_key`; handles are built once per api.
pub fn request(api_key: i16) {
    static HANDLES: OnceLock<Vec<Counter>> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| (0..128).map(|key| counter!(REQUESTS, "api" => api_name(key))).collect());
    match handles.get(api_key as usize) {
        Some(handle) => handle.increment(1),
        None => counter!(REQUESTS, "api" => "Unknown").increment(1),
    }
}

pub fn client_connected() {
    counter!(CLIENT_CONNECTIONS_TOTAL).increment(1);
    gauge!(CLIENT_CONNECTIONS).increment(1.0);
}

pub fn client_disconnected(cause: DisconnectCause) {
    gauge!(CLIENT_CONNECTIONS).decrement(1.0);
    counter!(DISCONNECTS, "cause" => cause.as_str()).increment(1);
}

pub fn protocol_error(kind: &'static str) {
    counter!(PROTOCOL_ERRORS, "kind" => kind).increment(1);
}

pub fn upstream_connect(result: &'static str) {
    counter!(UPSTREAM_CONNECTS, "result" => result).increment(1);
}

pub fn stray_response() {
    counter!(STRAY_RESPONSES).increment(1);
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
