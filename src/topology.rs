//! What the sidecar knows of the cluster: node id → broker address, and the controller id.
//!
//! It learns from every Metadata, FindCoordinator and DescribeCluster response that passes through
//! and from the control connection's own refreshes. It never does I/O itself: refreshes are asked
//! for through [`Topology::request_refresh`] and performed by `control`.

use std::collections::HashMap;
use std::sync::RwLock;

use tokio::sync::Notify;

use crate::rewrite::Endpoint;
use crate::telemetry;

#[derive(Debug, Default)]
pub struct Topology {
    state: RwLock<State>,
    refresh: Notify,
}

#[derive(Debug, Default)]
struct State {
    brokers: HashMap<i32, String>,
    controller_id: Option<i32>,
    metadata_seen: bool,
    /// Whether the last metadata refresh of the control connection reached the cluster.
    reachable: bool,
}

impl Topology {
    /// Records broker endpoints and, when reported, the controller id.
    pub fn learn(&self, brokers: &[Endpoint], controller_id: Option<i32>) {
        let mut state = self.state.write().expect("topology lock");
        for broker in brokers {
            let address = format!("{}:{}", broker.host, broker.port);
            match state.brokers.insert(broker.node_id, address.clone()) {
                None => tracing::info!(node_id = broker.node_id, %address, "broker discovered"),
                Some(old) if old != address => {
                    tracing::info!(node_id = broker.node_id, %old, new = %address, "broker address changed")
                }
                Some(_) => {}
            }
        }
        if let Some(id) = controller_id.filter(|id| *id >= 0)
            && state.controller_id != Some(id)
        {
            tracing::info!(previous = ?state.controller_id, controller_id = id, "controller changed");
            state.controller_id = Some(id);
            telemetry::controller_changed(id);
        }
    }

    /// Marks that a full metadata response has been seen (readiness).
    pub fn metadata_received(&self) {
        self.state.write().expect("topology lock").metadata_seen = true;
    }

    /// Records whether the control connection's last refresh reached the cluster.
    pub fn set_reachable(&self, reachable: bool) {
        self.state.write().expect("topology lock").reachable = reachable;
    }

    pub fn is_reachable(&self) -> bool {
        self.state.read().expect("topology lock").reachable
    }

    pub fn has_metadata(&self) -> bool {
        self.state.read().expect("topology lock").metadata_seen
    }

    /// The upstream host:port of broker `node_id`, if known.
    pub fn address(&self, node_id: i32) -> Option<String> {
        self.state.read().expect("topology lock").brokers.get(&node_id).cloned()
    }

    /// Every known broker's node id.
    pub fn node_ids(&self) -> Vec<i32> {
        self.state.read().expect("topology lock").brokers.keys().copied().collect()
    }

    /// Every known broker address.
    pub fn addresses(&self) -> Vec<String> {
        self.state.read().expect("topology lock").brokers.values().cloned().collect()
    }

    pub fn controller_id(&self) -> Option<i32> {
        self.state.read().expect("topology lock").controller_id
    }

    /// Asks the control connection for a metadata refresh now.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Resolves when a refresh has been asked for.
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(node_id: i32, host: &str) -> Endpoint {
        Endpoint { node_id, host: host.into(), port: 9092 }
    }

    #[test]
    fn learns_brokers_and_follows_host_changes() {
        let topology = Topology::default();
        topology.learn(&[endpoint(1, "b-1"), endpoint(2, "b-2")], Some(2));
        topology.learn(&[endpoint(1, "b-1-new")], None);
        assert_eq!(topology.address(1).as_deref(), Some("b-1-new:9092"));
        assert_eq!(topology.address(2).as_deref(), Some("b-2:9092"));
        assert_eq!(topology.controller_id(), Some(2));
    }

    #[test]
    fn negative_controller_id_is_ignored() {
        let topology = Topology::default();
        topology.learn(&[], Some(3));
        topology.learn(&[], Some(-1));
        assert_eq!(topology.controller_id(), Some(3));
    }
}
