//! The running sidecar: wires the parts together, and owns their lifetimes.
//!
//! `run` binds the bootstrap and admin listeners (failing fast with the address that could not be
//! bound), builds each part with the narrow handles it needs (connector, cluster view, links,
//! retry, listeners), starts the control loop, and on shutdown reports not-ready, stops
//! accepting, lets every session drain its in-flight requests and waits for them up to the drain
//! deadline. It holds no logic of its own; nothing but `main` uses it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin_http;
use crate::admin_retry::AdminRetry;
use crate::client_auth::{ClientAuth, CredentialsError};
use crate::cluster::ClusterView;
use crate::config::Config;
use crate::control::{self, Links};
use crate::listener::{self, Accept, BrokerListeners};
use crate::pool::Pools;
use crate::session::{self, Limits, Target};
use crate::tls::{BrokerTls, ListenerTls, TlsError};
use crate::upstream::Connector;

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
    let bootstrap = bind("bootstrap", bootstrap_addr).await?;
    let admin_addr = config.admin_listen;
    let admin = bind("admin", admin_addr).await?;

    let tls = config.tls.clone().map(BrokerTls::new).transpose()?;
    let listener_tls = config.listener_tls.clone().map(ListenerTls::new).transpose()?;
    let client_auth = ClientAuth::new(&config)?;
    let connector = Arc::new(Connector::new(config.upstream, config.sockets, tls, config.sasl.clone()));
    let cluster = Arc::new(ClusterView::new(config.bootstrap_servers.clone()));
    let links = Arc::new(Links::new(connector.clone(), cluster.clone(), config.max_frame_bytes));
    let stop_accepting = CancellationToken::new();
    let pools = Pools::new(connector.clone(), cluster.clone(), config.pool, stop_accepting.clone());
    cluster.subscribe(Arc::new(pools.clone()));
    let sessions = Arc::new(session::Shared {
        connector,
        pools,
        cluster: cluster.clone(),
        retry: AdminRetry::new(config.admin_retry, links.clone()),
        listener_tls,
        client_auth,
        advertised: config.advertised.clone(),
        limits: Limits {
            max_frame_bytes: config.max_frame_bytes,
            max_buffered_frame_bytes: config.max_buffered_frame_bytes,
            max_inflight: config.max_inflight,
            client_idle_timeout: config.client_idle_timeout,
            handshake_timeout: config.upstream.connect_timeout,
        },
        buffer_budget: Arc::new(Semaphore::new(config.buffer_budget_bytes)),
        shutdown: stop_accepting.clone(),
    });
    let tracker = TaskTracker::new();
    let accept = Accept {
        sessions,
        tracker: tracker.clone(),
        permits: Arc::new(Semaphore::new(config.max_client_connections)),
        limit: config.max_client_connections,
        sockets: config.sockets,
        shutdown: stop_accepting.clone(),
    };
    let broker_listeners = BrokerListeners::new(config.listen_host, config.advertised.clone(), accept.clone());
    cluster.subscribe(Arc::new(broker_listeners));

    tracing::info!(
        bootstrap = %bootstrap_addr,
        admin = %admin_addr,
        brokers = ?config.bootstrap_servers,
        broker_port_base = config.advertised.port_base,
        "kafka-sidecar listening"
    );
    let draining = Arc::new(AtomicBool::new(false));
    tokio::spawn(admin_http::serve(admin, readiness(cluster.clone(), draining.clone()), metrics));
    let control = tokio::spawn(control::refresh_metadata(links, config.metadata_refresh, stop_accepting.clone()));
    tokio::spawn(listener::accept_loop(accept, bootstrap, Target::Bootstrap));

    shutdown.await;
    draining.store(true, Ordering::Relaxed);
    if !config.shutdown_delay.is_zero() {
        tracing::info!(delay = ?config.shutdown_delay, "shutting down: not ready, still serving");
        tokio::time::sleep(config.shutdown_delay).await;
    }
    tracing::info!(drain_timeout = ?config.drain_timeout, "shutting down: draining client connections");
    stop_accepting.cancel();
    tracker.close();
    if tokio::time::timeout(config.drain_timeout, tracker.wait()).await.is_err() {
        tracing::warn!(remaining = tracker.len(), "drain deadline passed; closing remaining connections");
    }
    control.abort();
    tracing::info!("kafka-sidecar stopped");
    Ok(())
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { what, addr, source })
}

/// Why the sidecar is not ready, or `None` when it is: ready once metadata has been fetched and
/// while the cluster is reachable, until shutdown begins.
fn readiness(cluster: Arc<ClusterView>, draining: Arc<AtomicBool>) -> impl Fn() -> Option<&'static str> {
    move || {
        if draining.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if !cluster.has_metadata() {
            Some("no metadata from the cluster yet")
        } else if !cluster.is_reachable() {
            Some("cluster unreachable")
        } else {
            None
        }
    }
}
