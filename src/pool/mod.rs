//! Warm broker connections for client sessions, and the per-broker connect-rate limit.
//!
//! Each broker the cluster view learns gets a pool of ready connections (connected, TLS and SASL
//! done), refilled in the background; a session takes one and, when its client ends cleanly with
//! nothing in flight, gives it back for the next. Every new connection a session or a refill
//! opens waits its turn under `--broker-connect-rate`, or takes a connection that comes back
//! meanwhile. A broker that leaves the cluster loses its pool. It never reads or writes Kafka
//! traffic, and never decides whether a connection may be shared: sessions do.

mod idle;
mod rate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use idle::NodePool;
pub use rate::ConnectRate;

use crate::cluster::{ClusterView, Follower};
pub use crate::config::PoolConfig;
use crate::telemetry;
use crate::upstream::{ConnectError, Connected, Connector};

/// An idle connection is retired this long before its SASL session must be renewed.
const REAUTHENTICATE_MARGIN: Duration = Duration::from_secs(5);

/// A broker connection lent to a session.
#[derive(Debug)]
pub struct Lease {
    pub connected: Connected,
    /// The broker it reaches, when known: the pool it may go back to.
    pub node_id: Option<i32>,
}

/// The pools of every broker, as sessions hold them.
#[derive(Debug, Clone)]
pub struct Pools {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Arc<Connector>,
    cluster: Arc<ClusterView>,
    config: PoolConfig,
    nodes: Mutex<HashMap<i32, Arc<NodePool>>>,
    rates: Mutex<HashMap<String, Arc<ConnectRate>>>,
    /// Told whenever a connection comes into any pool, for sessions waiting for one.
    arrived: Notify,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Pools {
    /// Pools that dial with `connector` the brokers of `cluster`, until `shutdown`. Subscribe them
    /// to the cluster view ([`ClusterView::subscribe`]) so they follow its brokers.
    pub fn new(
        connector: Arc<Connector>,
        cluster: Arc<ClusterView>,
        config: PoolConfig,
        shutdown: CancellationToken,
    ) -> Self {
        telemetry::pool_registered(&telemetry::node_label(None));
        let inner = Inner {
            connector,
            cluster,
            config,
            nodes: Mutex::default(),
            rates: Mutex::default(),
            arrived: Notify::new(),
            shutdown,
        };
        Pools { inner: Arc::new(inner) }
    }

    /// A connection to broker `node_id`, or to any broker for the bootstrap listener (`None`):
    /// a pooled one when there is one, else a new one as soon as the broker's connect-rate
    /// limit allows, whichever comes first.
    pub async fn acquire(&self, node_id: Option<i32>) -> Result<Lease, ConnectError> {
        let inner = &self.inner;
        let label = telemetry::node_label(node_id);
        let addresses = match node_id {
            Some(node_id) => inner.cluster.address(node_id).into_iter().collect(),
            None => inner.cluster.bootstrap_addresses(),
        };
        let Some(first) = addresses.first() else {
            telemetry::upstream_connect(&label, ConnectError::NoAddress.kind(), Duration::ZERO);
            return Err(ConnectError::NoAddress);
        };
        let rate = inner.rate(first);
        let mut waited = false;
        loop {
            let arrived = inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(lease) = inner.take(node_id) {
                telemetry::pool_checkout(&label, true);
                return Ok(lease);
            }
            match rate.try_take(Instant::now()) {
                Ok(()) => {
                    telemetry::pool_checkout(&label, false);
                    let connected = inner.connector.connect_any(&addresses, &label).await?;
                    let node_id = node_id.or_else(|| inner.cluster.node_at(&connected.addr));
                    return Ok(Lease { connected, node_id });
                }
                Err(free_at) => {
                    if !waited {
                        telemetry::connect_rate_wait(&label);
                        waited = true;
                    }
                    tokio::select! {
                        _ = &mut arrived => {}
                        _ = tokio::time::sleep_until(free_at.into()) => {}
                    }
                }
            }
        }
    }

    /// Takes back a connection to broker `node_id` whose session ended cleanly with nothing in
    /// flight; it is closed instead when the pool is full or gone, or the connection is due.
    pub fn give_back(&self, node_id: i32, connected: Connected) {
        let inner = &self.inner;
        let moved = inner.cluster.address(node_id).as_deref() != Some(connected.addr.as_str());
        if inner.config.max_idle == 0 || moved || connected.tls_generation != inner.connector.tls_generation() {
            return;
        }
        let Some(pool) = inner.nodes.lock().expect("pools lock").get(&node_id).cloned() else {
            return;
        };
        let expires = inner.expiry(&connected);
        if expires > Instant::now() && pool.put(connected, expires, inner.config.max_idle) {
            telemetry::pool_reused(&pool.label);
            inner.arrived.notify_waiters();
        }
    }
}

impl Inner {
    /// A pooled connection to `node_id`, or to any broker for `None` (lowest node id first).
    fn take(&self, node_id: Option<i32>) -> Option<Lease> {
        let pools: Vec<Arc<NodePool>> = {
            let nodes = self.nodes.lock().expect("pools lock");
            match node_id {
                Some(node_id) => nodes.get(&node_id).cloned().into_iter().collect(),
                None => {
                    let mut all: Vec<_> = nodes.values().cloned().collect();
                    all.sort_by_key(|pool| pool.node_id);
                    all
                }
            }
        };
        let tls_generation = self.connector.tls_generation();
        pools.iter().find_map(|pool| {
            let addr = self.cluster.address(pool.node_id)?;
            let connected = pool.take(&addr, tls_generation)?;
            Some(Lease { connected, node_id: Some(pool.node_id) })
        })
    }

    /// The connect-rate limit of the broker at `addr`.
    fn rate(&self, addr: &str) -> Arc<ConnectRate> {
        let mut rates = self.rates.lock().expect("rates lock");
        rates.entry(addr.to_owned()).or_insert_with(|| Arc::new(ConnectRate::new(self.config.connect_rate))).clone()
    }

    /// When an idle connection must be closed: after the idle lifetime, or shortly before its
    /// SASL session must be renewed.
    fn expiry(&self, connected: &Connected) -> Instant {
        let lifetime = Instant::now() + self.config.idle_lifetime;
        match connected.reauthenticate_at {
            Some(at) => lifetime.min(at.checked_sub(REAUTHENTICATE_MARGIN).unwrap_or(at)),
            None => lifetime,
        }
    }
}

impl Follower for Pools {
    fn brokers_learned(&self, node_ids: &[i32]) {
        let mut nodes = self.inner.nodes.lock().expect("pools lock");
        for &node_id in node_ids {
            if nodes.contains_key(&node_id) || self.inner.shutdown.is_cancelled() {
                continue;
            }
            let pool = Arc::new(NodePool::new(node_id, &self.inner.shutdown));
            nodes.insert(node_id, pool.clone());
            tokio::spawn(idle::keep_warm(self.inner.clone(), pool));
        }
    }

    fn brokers_left(&self, node_ids: &[i32]) {
        let mut nodes = self.inner.nodes.lock().expect("pools lock");
        for node_id in node_ids {
            if let Some(pool) = nodes.remove(node_id) {
                tracing::info!(node_id, "broker left the cluster; its pool is closed");
                pool.gone.cancel();
            }
        }
    }
}

#[cfg(test)]
mod tests;
