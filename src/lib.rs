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
//! - `cluster`: the cluster view (node id → broker address, controller id), followed by listeners.
//! - `backoff`: the one jittered, doubling backoff of every retry loop.
//! - `upstream`: connecting to brokers and the socket options of every socket.
//! - `pool`: warm broker connections per broker, connections given back by clean client ends, and
//!   the per-broker connect-rate limit; it follows the cluster view.
//! - `tls`, `sasl`: securing and authenticating the sidecar's broker connections.
//! - `client_auth`: who may use the listeners: the start-up guard, mutual-TLS refusals and SASL
//!   checked against a credentials file (and the `hash-password` subcommand).
//! - `listener`: the bootstrap listener and one listener per broker node id.
//! - `session`: one client connection end to end (`requests`, `responses`), answers in request
//!   order; it gets the connector, the pools, the cluster view, the retry and its limits, nothing
//!   more.
//! - `control`: the sidecar's own connections: metadata refresh, and one link per broker.
//! - `admin_retry`: NOT_CONTROLLER (41) detection, retry against the controller, merging; it
//!   reaches the cluster only through its own `ControllerLinks` interface.
//! - `telemetry`: metric names and the Prometheus recorder; `admin_http`: /metrics, /healthz, /readyz.
//! - `labels`: the `labels!` macro declaring a closed set of label values (used by `wire` and
//!   `telemetry`).
//! - `server`: wiring, start-up and graceful shutdown; only `main` uses it.
//!
//! `docs/architecture.md` has the module map and one request's walk through it.
//!
//! Beside the proxy, `inject` (the `kafka-sidecar inject` subcommand) adds the sidecar to
//! Kubernetes manifests; it uses none of the modules above.

#[macro_use]
mod labels;

pub mod admin_http;
pub mod admin_retry;
pub mod backoff;
pub mod client_auth;
pub mod cluster;
pub mod config;
pub mod control;
pub mod frame_reader;
pub mod frame_writer;
pub mod inject;
pub mod listener;
pub mod policy;
pub mod pool;
pub mod rewrite;
pub mod sasl;
pub mod server;
pub mod session;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod wire;
