//! The running sidecar: shared context, start-up and graceful shutdown.
//!
//! `run` binds the bootstrap and admin listeners (failing fast with the address that could not be
//! bound), starts the control loop, and on shutdown reports not-ready, stops accepting, lets every
//! session drain its in-flight requests and waits for them up to the drain deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client_auth::{ClientAuth, CredentialsError};
use crate::config::Config;
use crate::control::Links;
use crate::listener::{BrokerListeners, Target};
use crate::tls::{BrokerTls, ListenerTls, TlsError};
use crate::topology::Topology;
use crate::upstream::Connector;
use crate::{admin_http, control, listener};

/// State shared by every task of the sidecar.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub topology: Topology,
    pub broker_listeners: BrokerListeners,
    /// The sidecar's own connection to each broker (admin retries).
    pub links: Links,
    /// Opens broker connections (TCP, TLS, SASL) as configured.
    pub connector: Connector,
    /// TLS on the Kafka listeners, when configured.
    pub listener_tls: Option<ListenerTls>,
    /// How clients authenticate to the listeners (SASL checked or answered by the sidecar).
    pub client_auth: ClientAuth,
    /// Cancelled when the sidecar starts shutting down: listeners stop accepting, sessions stop
    /// reading new requests.
    pub shutdown: CancellationToken,
    /// Every session task, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// One permit per client connection allowed at once.
    pub connection_permits: Arc<Semaphore>,
    /// One permit per byte of frames held whole at once (`--buffer-budget-bytes`).
    pub buffer_budget: Arc<Semaphore>,
    draining: AtomicBool,
}

impl Context {
    /// The shared state for `config`; fails when the TLS files cannot be loaded.
    pub fn new(config: Config) -> Result<Self, ServerError> {
        let tls = config.tls.clone().map(BrokerTls::new).transpose()?;
        let connector = Connector::new(config.upstream, config.sockets, tls, config.sasl.clone());
        let listener_tls = config.listener_tls.clone().map(ListenerTls::new).transpose()?;
        let client_auth = ClientAuth::new(&config)?;
        let connection_permits = Arc::new(Semaphore::new(config.max_client_connections));
        let buffer_budget = Arc::new(Semaphore::new(config.buffer_budget_bytes));
        Ok(Context {
            connector,
            listener_tls,
            client_auth,
            config,
            topology: Topology::default(),
            broker_listeners: BrokerListeners::default(),
            links: Links::default(),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            connection_permits,
            buffer_budget,
            draining: AtomicBool::new(false),
        })
    }

    /// The configured bootstrap servers, then every broker address learned since, each once.
    pub fn bootstrap_addresses(&self) -> Vec<String> {
        let mut addresses = self.config.bootstrap_servers.clone();
        for address in self.topology.addresses() {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        addresses
    }

    /// Why the sidecar is not ready, or `None` when it is: ready once metadata has been fetched
    /// and while the cluster is reachable, until shutdown begins.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if !self.topology.has_metadata() {
            Some("no metadata from the cluster yet")
        } else if !self.topology.is_reachable() {
            Some("cluster unreachable")
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("client credentials: {0}")]
    ClientCredentials(#[from] CredentialsError),
}

/// Runs the sidecar until `shutdown` resolves, then drains.
pub async fn run(
    config: Config,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let bootstrap_addr = SocketAddr::new(config.listen_host, config.bootstrap_port);
    let bootstrap = TcpListener::bind(bootstrap_addr).await.map_err(|source| ServerError::Bind {
        what: "bootstrap",
        addr: bootstrap_addr,
        source,
    })?;
    let admin_addr = config.admin_listen;
    let admin = TcpListener::bind(admin_addr).await.map_err(|source| ServerError::Bind {
        what: "admin",
        addr: admin_addr,
        source,
    })?;

    let ctx = Arc::new(Context::new(config)?);
    tracing::info!(
        bootstrap = %bootstrap_addr,
        admin = %admin_addr,
        brokers = ?ctx.config.bootstrap_servers,
        broker_port_base = ctx.config.advertised.port_base,
        "kafka-sidecar listening"
    );
    tokio::spawn(admin_http::serve(admin, ctx.clone(), metrics));
    let control = tokio::spawn(control::run(ctx.clone()));
    tokio::spawn(listener::accept_loop(ctx.clone(), bootstrap, Target::Bootstrap));

    shutdown.await;
    ctx.draining.store(true, Ordering::Relaxed);
    if !ctx.config.shutdown_delay.is_zero() {
        tracing::info!(delay = ?ctx.config.shutdown_delay, "shutting down: not ready, still serving");
        tokio::time::sleep(ctx.config.shutdown_delay).await;
    }
    tracing::info!(drain_timeout = ?ctx.config.drain_timeout, "shutting down: draining client connections");
    ctx.shutdown.cancel();
    ctx.sessions.close();
    if tokio::time::timeout(ctx.config.drain_timeout, ctx.sessions.wait()).await.is_err() {
        tracing::warn!(remaining = ctx.sessions.len(), "drain deadline passed; closing remaining connections");
    }
    control.abort();
    tracing::info!("kafka-sidecar stopped");
    Ok(())
}
