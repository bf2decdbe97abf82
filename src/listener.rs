//! The sidecar's Kafka listeners: one bootstrap listener and one per broker node id.
//!
//! Broker N is served on `broker_port_base + N`. [`BrokerListeners`] follows the cluster view:
//! a listener is opened the first time N is learned, before the answer that named it reaches the
//! client, and kept for the life of the process; when a broker's host changes under the same id,
//! the listener stays and new sessions connect to the new address. It never reads Kafka traffic:
//! each accepted client is handed to `session`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Follower;
use crate::rewrite::Advertised;
use crate::session::{self, Target};
use crate::telemetry;
use crate::upstream::{self, SocketOptions};

/// What every accept loop shares: where sessions go, how many may run, when to stop.
#[derive(Debug, Clone)]
pub struct Accept {
    pub sessions: Arc<session::Shared>,
    /// Every session task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// One permit per client connection allowed at once, `limit` in all.
    pub permits: Arc<Semaphore>,
    pub limit: usize,
    pub sockets: SocketOptions,
    /// Cancelled when the sidecar starts shutting down: listeners stop accepting.
    pub shutdown: CancellationToken,
}

/// The per-broker listeners, opened as the cluster view learns brokers.
#[derive(Debug)]
pub struct BrokerListeners {
    host: IpAddr,
    advertised: Advertised,
    accept: Accept,
    /// Listeners opened so far, by node id (`false` after a failed bind).
    open: Mutex<HashMap<i32, bool>>,
}

impl BrokerListeners {
    pub fn new(host: IpAddr, advertised: Advertised, accept: Accept) -> Self {
        BrokerListeners { host, advertised, accept, open: Mutex::default() }
    }

    /// Opens the listener for broker `node_id` unless it is already open.
    fn ensure(&self, node_id: i32) {
        let mut open = self.open.lock().expect("listener lock");
        if open.get(&node_id) == Some(&true) {
            return;
        }
        let first_attempt = !open.contains_key(&node_id);
        let bound = self
            .advertised
            .port_for(node_id)
            .map_err(|e| e.to_string())
            .and_then(|port| bind(SocketAddr::new(self.host, port)).map_err(|e| e.to_string()));
        match bound {
            Ok(listener) => {
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(node_id, %addr, "broker listener opened");
                telemetry::broker_listener_opened();
                open.insert(node_id, true);
                tokio::spawn(accept_loop(self.accept.clone(), listener, Target::Broker(node_id)));
            }
            Err(error) => {
                if first_attempt {
                    tracing::error!(node_id, %error, "cannot open broker listener; clients cannot reach this broker");
                }
                open.insert(node_id, false);
            }
        }
    }
}

impl Follower for BrokerListeners {
    fn brokers_learned(&self, node_ids: &[i32]) {
        for node_id in node_ids {
            self.ensure(*node_id);
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Accepts clients until shutdown, each served by its own session task. At the connection limit
/// an accepted client waits for a free slot, and the listener stops accepting meanwhile, so
/// further clients wait in the kernel's backlog.
pub async fn accept_loop(accept: Accept, listener: TcpListener, target: Target) {
    loop {
        let accepted = tokio::select! {
            _ = accept.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let permit = match accept.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(limit = accept.limit, "client connection limit reached; new clients wait");
                tokio::select! {
                    _ = accept.shutdown.cancelled() => return,
                    permit = accept.permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
                }
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(error) = upstream::apply_socket_options(&stream, &accept.sockets) {
                    tracing::warn!(%peer, %error, "cannot set client socket options");
                }
                let session = session::serve(accept.sessions.clone(), stream, peer, target);
                accept.tracker.spawn(async move {
                    session.await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
