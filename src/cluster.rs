//! The cluster view: what the sidecar knows of the cluster (node id → broker address, the
//! controller id, whether metadata has been seen and the cluster is reachable), published to
//! whoever follows it.
//!
//! Every Metadata, FindCoordinator and DescribeCluster answer that passes through, and the control
//! connection's own refreshes, are taught here with [`ClusterView::learn`], which tells every
//! [`Follower`] (the listeners, the pools) of the brokers right away, before the answer goes on to
//! the client, and of those a Metadata answer no longer lists. It never does I/O: a refresh is asked for with [`ClusterView::request_refresh`] and
//! performed by `control`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::rewrite::Endpoint;
use crate::telemetry;

/// What one answer from the cluster told.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Learned {
    /// Broker endpoints as the cluster announced them.
    pub brokers: Vec<Endpoint>,
    /// The controller id, where the answer carries one.
    pub controller_id: Option<i32>,
    /// Whether the answer was a Metadata response (readiness waits for the first).
    pub metadata: bool,
}

/// Follows the brokers the cluster view learns.
pub trait Follower: Send + Sync {
    /// Told of the brokers of every answer as it is learned, before the answer reaches the
    /// client, so a client given a broker's address finds it served. Must not block.
    fn brokers_learned(&self, node_ids: &[i32]);

    /// Told of the brokers a Metadata answer no longer lists, which the one before did: they
    /// left the cluster (or are down). Must not block.
    fn brokers_left(&self, _node_ids: &[i32]) {}
}

pub struct ClusterView {
    /// The configured bootstrap servers.
    bootstrap: Vec<String>,
    state: RwLock<State>,
    followers: RwLock<Vec<Arc<dyn Follower>>>,
    refresh: Notify,
}

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterView").field("state", &self.state).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    brokers: HashMap<i32, String>,
    controller_id: Option<i32>,
    /// The brokers the last Metadata answer listed.
    listed: Vec<i32>,
    metadata_seen: bool,
    /// Whether the last metadata refresh of the control connection reached the cluster.
    reachable: bool,
}

impl ClusterView {
    /// A view that knows nothing yet but the configured bootstrap servers.
    pub fn new(bootstrap: Vec<String>) -> Self {
        ClusterView { bootstrap, state: RwLock::default(), followers: RwLock::default(), refresh: Notify::new() }
    }

    /// Records what an answer from the cluster told, then tells the followers of its brokers.
    pub fn learn(&self, learned: &Learned) {
        self.record(learned);
        if learned.brokers.is_empty() {
            return;
        }
        let node_ids: Vec<i32> = learned.brokers.iter().map(|broker| broker.node_id).collect();
        let left = if learned.metadata { self.listed(&node_ids) } else { Vec::new() };
        for follower in self.followers.read().expect("followers lock").iter() {
            follower.brokers_learned(&node_ids);
            if !left.is_empty() {
                follower.brokers_left(&left);
            }
        }
    }

    /// Records the brokers of a Metadata answer (it lists every live broker) and returns those
    /// the previous one listed that this one does not.
    fn listed(&self, node_ids: &[i32]) -> Vec<i32> {
        let mut state = self.state.write().expect("cluster lock");
        let previous = std::mem::replace(&mut state.listed, node_ids.to_vec());
        let left: Vec<i32> = previous.into_iter().filter(|id| !node_ids.contains(id)).collect();
        for node_id in &left {
            tracing::info!(node_id, "broker no longer listed by the cluster");
        }
        left
    }

    fn record(&self, learned: &Learned) {
        let mut state = self.state.write().expect("cluster lock");
        for broker in &learned.brokers {
            let address = format!("{}:{}", broker.host, broker.port);
            match state.brokers.insert(broker.node_id, address.clone()) {
                None => tracing::info!(node_id = broker.node_id, %address, "broker discovered"),
                Some(old) if old != address => {
                    tracing::info!(node_id = broker.node_id, %old, new = %address, "broker address changed")
                }
                Some(_) => {}
            }
        }
        if let Some(id) = learned.controller_id.filter(|id| *id >= 0)
            && state.controller_id != Some(id)
        {
            tracing::info!(previous = ?state.controller_id, controller_id = id, "controller changed");
            state.controller_id = Some(id);
            telemetry::controller_changed(id);
        }
        state.metadata_seen |= learned.metadata;
    }

    /// Adds a follower: from now on it is told of the brokers of every answer learned, and right
    /// away of every broker known already.
    pub fn subscribe(&self, follower: Arc<dyn Follower>) {
        let known = self.node_ids();
        if !known.is_empty() {
            follower.brokers_learned(&known);
        }
        self.followers.write().expect("followers lock").push(follower);
    }

    /// Records whether the control connection's last refresh reached the cluster.
    pub fn set_reachable(&self, reachable: bool) {
        self.state.write().expect("cluster lock").reachable = reachable;
    }

    pub fn is_reachable(&self) -> bool {
        self.state.read().expect("cluster lock").reachable
    }

    pub fn has_metadata(&self) -> bool {
        self.state.read().expect("cluster lock").metadata_seen
    }

    /// The upstream host:port of broker `node_id`, if known.
    pub fn address(&self, node_id: i32) -> Option<String> {
        self.state.read().expect("cluster lock").brokers.get(&node_id).cloned()
    }

    /// The node id of the broker at `address` (host:port), if known.
    pub fn node_at(&self, address: &str) -> Option<i32> {
        let state = self.state.read().expect("cluster lock");
        state.brokers.iter().find(|(_, known)| known.as_str() == address).map(|(id, _)| *id)
    }

    /// Every known broker's node id.
    pub fn node_ids(&self) -> Vec<i32> {
        self.state.read().expect("cluster lock").brokers.keys().copied().collect()
    }

    /// The configured bootstrap servers, then every broker address learned since, each once.
    pub fn bootstrap_addresses(&self) -> Vec<String> {
        let mut addresses = self.bootstrap.clone();
        for address in self.state.read().expect("cluster lock").brokers.values() {
            if !addresses.contains(address) {
                addresses.push(address.clone());
            }
        }
        addresses
    }

    pub fn controller_id(&self) -> Option<i32> {
        self.state.read().expect("cluster lock").controller_id
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

    fn brokers(brokers: &[(i32, &str)], controller_id: Option<i32>) -> Learned {
        let brokers =
            brokers.iter().map(|(node_id, host)| Endpoint { node_id: *node_id, host: (*host).into(), port: 9092 });
        Learned { brokers: brokers.collect(), controller_id, metadata: false }
    }

    #[test]
    fn learns_brokers_and_follows_host_changes() {
        let cluster = ClusterView::new(vec!["seed:9092".into()]);
        cluster.learn(&brokers(&[(1, "b-1"), (2, "b-2")], Some(2)));
        cluster.learn(&brokers(&[(1, "b-1-new")], None));
        assert_eq!(cluster.address(1).as_deref(), Some("b-1-new:9092"));
        assert_eq!(cluster.address(2).as_deref(), Some("b-2:9092"));
        assert_eq!(cluster.controller_id(), Some(2));
        let mut bootstrap = cluster.bootstrap_addresses();
        bootstrap[1..].sort();
        assert_eq!(bootstrap, ["seed:9092", "b-1-new:9092", "b-2:9092"]);
    }

    #[test]
    fn negative_controller_id_is_ignored() {
        let cluster = ClusterView::new(Vec::new());
        cluster.learn(&brokers(&[], Some(3)));
        cluster.learn(&brokers(&[], Some(-1)));
        assert_eq!(cluster.controller_id(), Some(3));
    }

    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<Vec<i32>>>);

    impl Follower for Recorder {
        fn brokers_learned(&self, node_ids: &[i32]) {
            let mut sorted = node_ids.to_vec();
            sorted.sort_unstable();
            self.0.lock().unwrap().push(sorted);
        }
    }

    #[test]
    fn followers_hear_of_known_brokers_then_of_every_answer_as_it_is_learned() {
        let cluster = ClusterView::new(Vec::new());
        cluster.learn(&brokers(&[(1, "b-1")], None));
        let recorder = Arc::new(Recorder::default());
        cluster.subscribe(recorder.clone());
        cluster.learn(&brokers(&[(1, "b-1-moved"), (2, "b-2")], Some(1)));
        cluster.learn(&brokers(&[], Some(2)));
        assert_eq!(*recorder.0.lock().unwrap(), [vec![1], vec![1, 2]]);
    }

    #[derive(Default)]
    struct Departures(std::sync::Mutex<Vec<i32>>);

    impl Follower for Departures {
        fn brokers_learned(&self, _node_ids: &[i32]) {}
        fn brokers_left(&self, node_ids: &[i32]) {
            self.0.lock().unwrap().extend_from_slice(node_ids);
        }
    }

    #[test]
    fn followers_hear_of_brokers_a_metadata_answer_no_longer_lists() {
        let cluster = ClusterView::new(Vec::new());
        let departures = Arc::new(Departures::default());
        cluster.subscribe(departures.clone());
        let metadata = |ids: &[(i32, &str)]| Learned { metadata: true, ..brokers(ids, None) };
        cluster.learn(&metadata(&[(1, "b-1"), (2, "b-2"), (3, "b-3")]));
        cluster.learn(&brokers(&[(1, "b-1")], None)); // FindCoordinator: lists one broker only
        assert!(departures.0.lock().unwrap().is_empty());
        cluster.learn(&metadata(&[(1, "b-1"), (3, "b-3")]));
        assert_eq!(*departures.0.lock().unwrap(), [2]);
        assert_eq!(cluster.address(2).as_deref(), Some("b-2:9092"), "its address is kept");
        assert_eq!(cluster.node_at("b-3:9092"), Some(3));
    }

    #[test]
    fn metadata_answers_make_it_ready() {
        let cluster = ClusterView::new(Vec::new());
        cluster.learn(&brokers(&[(1, "b-1")], None));
        assert!(!cluster.has_metadata());
        cluster.learn(&Learned { metadata: true, ..Learned::default() });
        assert!(cluster.has_metadata());
    }
}
