//! kafka-sidecar: a protocol-aware Kafka proxy that runs beside an application.
//!
//! Layout, one concern per module:
//! - `config`: every option (flags, environment, TOML file), validated into one [`config::Config`].
//! - `wire`: framing, header peeks and a bounds-checked cursor; pure, never awaits.
//! - `policy`: one table of per-API rules (rewritten, capped, retried, answered locally, held whole).
//! - `frame_reader`: frames in from a connection, whole or relayed in chunks, with a bounded buffer.
//! - `frame_writer`: frames and relayed chunks out to a connection, queued without copying, written
//!   vectored.
//! - `rewrite`: the few responses that carry broker addresses or versions, rewritten in place.
//! - `topology`: node id → broker address, controller id.
//! - `upstream`: connecting to brokers and the socket options of every socket.
//! - `tls`, `sasl`: securing and authenticating the sidecar's broker connections.
//! - `client_auth`: who may use the listeners: the start-up guard, mutual-TLS refusals and SASL
//!   checked against a credentials file (and the `hash-password` subcommand).
//! - `listener`: the bootstrap listener and one listener per broker node id.
//! - `session`: one client connection end to end, responses in request order.
//! - `control`: the sidecar's own connections: metadata refresh, and one link per broker.
//! - `admin_retry`: NOT_CONTROLLER (41) detection, retry against the controller, merging.
//! - `telemetry`: metric names and the Prometheus recorder; `admin_http`: /metrics, /healthz, /readyz.
//! - `labels`: the `labels!` macro declaring a closed set of label values (used by `wire` and
//!   `telemetry`).
//! - `server`: start-up, shared context and graceful shutdown.
//!
//! Beside the proxy, `inject` (the `kafka-sidecar inject` subcommand) adds the sidecar to
//! Kubernetes manifests; it uses none of the modules above.

#[macro_use]
mod labels;

pub mod admin_http;
pub mod admin_retry;
pub mod client_auth;
pub mod config;
pub mod control;
pub mod frame_reader;
pub mod frame_writer;
pub mod inject;
pub mod listener;
pub mod policy;
pub mod rewrite;
pub mod sasl;
pub mod server;
pub mod session;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod upstream;
pub mod wire;
