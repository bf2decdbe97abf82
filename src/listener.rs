//! The sidecar's Kafka listeners: one bootstrap listener and one per broker node id.
//!
//! Broker N is served on `broker_port_base + N`, opened the first time N appears in a response
//! and kept for the life of the process; when a broker's host changes under the same id, the
//! listener stays and new sessions connect to the new address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::server::Context;
use crate::{session, telemetry, upstream};

/// Which broker a listener's clients are sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any reachable bootstrap server.
    Bootstrap,
    /// The broker with this node id.
    Broker(i32),
}

/// Broker listeners opened so far, by node id (`false` after a failed bind).
#[derive(Debug, Default)]
pub struct BrokerListeners {
    open: Mutex<HashMap<i32, bool>>,
}

/// Opens the listener for broker `node_id` unless it is already open.
pub fn ensure_broker_listener(ctx: &Arc<Context>, node_id: i32) {
    let mut open = ctx.broker_listeners.open.lock().expect("listener lock");
    if open.get(&node_id) == Some(&true) {
        return;
    }
    let first_attempt = !open.contains_key(&node_id);
    let bound = ctx
        .config
        .advertised
        .port_for(node_id)
        .map_err(|e| e.to_string())
        .and_then(|port| bind(SocketAddr::new(ctx.config.listen_host, port)).map_err(|e| e.to_string()));
    match bound {
        Ok(listener) => {
            let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(node_id, %addr, "broker listener opened");
            telemetry::broker_listener_opened();
            open.insert(node_id, true);
            tokio::spawn(accept_loop(ctx.clone(), listener, Target::Broker(node_id)));
        }
        Err(error) => {
            if first_attempt {
                tracing::error!(node_id, %error, "cannot open broker listener; clients cannot reach this broker");
            }
            open.insert(node_id, false);
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
pub async fn accept_loop(ctx: Arc<Context>, listener: TcpListener, target: Target) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let permit = match ctx.connection_permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(
                    limit = ctx.config.max_client_connections,
                    "client connection limit reached; new clients wait"
                );
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    permit = ctx.connection_permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
                }
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(error) = upstream::apply_socket_options(&stream, &ctx.config.sockets) {
                    tracing::warn!(%peer, %error, "cannot set client socket options");
                }
                let session = session::serve(ctx.clone(), stream, peer, target);
                ctx.sessions.spawn(async move {
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
