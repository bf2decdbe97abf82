//! A ZooKeeper-mode Kafka cluster for tests, built in front of one Tansu broker.
//!
//! Used as `mod zk;` from `tests/*.rs`. [`ZkCluster::start`] opens N broker front ends (node ids
//! 1..=N, each on its own free 127.0.0.1 port) that relay to the same Tansu and behave like the
//! brokers of a ZooKeeper-mode cluster, which Tansu (KRaft-like, a single node) cannot show:
//! - only the controller serves the controller-only admin APIs; the other brokers answer
//!   NOT_CONTROLLER (41) without passing the request on (see `answers`);
//! - the controller can be moved, removed, or rotated on a timer ([`ZkCluster::flap`]), and
//!   brokers may report the previous controller for a while after a move
//!   ([`ZkOptions::stale_for`], see `controller`);
//! - Metadata, DescribeCluster and FindCoordinator name the front ends, not Tansu (see
//!   `rewrite`).
//!
//! The controller starts at node 1. Tansu has no CreatePartitions: the controller front end
//! answers it itself (NONE, or INVALID_PARTITIONS for a count ≤ 0) without changing anything,
//! and ApiVersions advertises it. ElectLeaders, AlterPartitionReassignments and UpdateFeatures
//! reach Tansu on the controller, which does not support them: it closes the connection, and so
//! does the front end.
//!
//! Everything runs on a tokio runtime owned by the cluster; dropping the cluster stops it and
//! closes every connection.

#![allow(dead_code)]

mod answers;
mod controller;
mod legacy;
mod relay;
mod rewrite;
mod wire;

use std::net::TcpListener as StdTcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use controller::Controller;
use relay::FrontEnd;

/// Settings of a [`ZkCluster`].
#[derive(Debug, Clone)]
pub struct ZkOptions {
    /// Number of brokers (node ids 1..=brokers); 3 by default.
    pub brokers: i32,
    /// How far behind the real controller the reported one lags: brokers report the controller
    /// as it was this long ago (so the previous one, right after a move); 0 by default.
    pub stale_for: Duration,
}

impl Default for ZkOptions {
    fn default() -> ZkOptions {
        ZkOptions { brokers: 3, stale_for: Duration::ZERO }
    }
}

/// State shared by the front ends.
pub struct Shared {
    /// Tansu's `host:port`.
    upstream: String,
    /// Front-end ports; node id `i + 1` listens on `ports[i]`.
    ports: Vec<u16>,
    controller: Controller,
    not_controller_answers: AtomicU64,
    /// When each client connection was accepted, and by which node.
    accepted: std::sync::Mutex<Vec<(i32, std::time::Instant)>>,
}

/// A running ZooKeeper-mode cluster; dropping it stops every front end.
pub struct ZkCluster {
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
}

/// Keeps the controller rotating (see [`ZkCluster::flap`]) until dropped; the drop returns once
/// the rotation has stopped, so the controller stays put from then on.
pub struct FlapGuard {
    stop: CancellationToken,
    /// Disconnected when the rotating task has ended.
    stopped: std::sync::mpsc::Receiver<()>,
}

impl Drop for FlapGuard {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = self.stopped.recv_timeout(Duration::from_secs(5));
    }
}

impl ZkCluster {
    /// Starts `options.brokers` front ends relaying to the Tansu broker at `upstream`
    /// (`host:port`). The controller is node 1.
    pub fn start(upstream: &str, options: ZkOptions) -> ZkCluster {
        assert!(options.brokers >= 1, "a cluster needs at least one broker");
        let listeners: Vec<StdTcpListener> = (0..options.brokers)
            .map(|_| StdTcpListener::bind("127.0.0.1:0").expect("bind a front end on 127.0.0.1:0"))
            .collect();
        let ports = listeners.iter().map(|l| l.local_addr().expect("front end address").port()).collect();
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            ports,
            controller: Controller::new(options.brokers, options.stale_for, 1),
            not_controller_answers: AtomicU64::new(0),
            accepted: std::sync::Mutex::default(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("zk-fixture")
            .enable_all()
            .build()
            .expect("start the fixture's tokio runtime");
        spawn_front_ends(&runtime, &shared, listeners);
        ZkCluster { shared, runtime: Some(runtime) }
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,…` for all front ends, ordered by node id.
    pub fn bootstrap(&self) -> String {
        let addrs: Vec<String> = (1..=self.brokers()).map(|id| self.broker_addr(id)).collect();
        addrs.join(",")
    }

    /// `127.0.0.1:port` of node `node_id` (1..=N).
    pub fn broker_addr(&self, node_id: i32) -> String {
        let index = usize::try_from(node_id - 1).ok().filter(|&i| i < self.shared.ports.len());
        let index = index.unwrap_or_else(|| panic!("node {node_id} is not in 1..={}", self.brokers()));
        format!("127.0.0.1:{}", self.shared.ports[index])
    }

    /// The address of node 1.
    pub fn first_broker(&self) -> String {
        self.broker_addr(1)
    }

    /// The real controller (`None`: no broker is), whatever brokers currently report.
    pub fn controller(&self) -> Option<i32> {
        self.shared.controller.real()
    }

    /// Makes `node_id` the controller; `None` leaves the cluster without one (every broker
    /// answers NOT_CONTROLLER and reports the last controller).
    pub fn move_controller(&self, node_id: Option<i32>) {
        self.shared.controller.move_to(node_id);
    }

    /// Moves the controller to the next node (1 → 2 → … → N → 1) every `every` until the guard
    /// is dropped.
    pub fn flap(&self, every: Duration) -> FlapGuard {
        assert!(!every.is_zero(), "flap period must be positive");
        let stop = CancellationToken::new();
        let (shared, cancelled) = (self.shared.clone(), stop.clone());
        let (running, stopped) = std::sync::mpsc::channel::<()>();
        self.runtime().spawn(async move {
            let _running = running;
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = cancelled.cancelled() => return,
                    _ = ticks.tick() => shared.controller.rotate(),
                }
            }
        });
        FlapGuard { stop, stopped }
    }

    /// How many NOT_CONTROLLER (41) error codes the front ends have sent, counting each entry
    /// (topic, partition, user, feature) and each top-level error.
    pub fn not_controller_answers(&self) -> u64 {
        self.shared.not_controller_answers.load(Ordering::Relaxed)
    }

    /// When each client connection the front ends accepted arrived, oldest first.
    pub fn accepted_at(&self) -> Vec<std::time::Instant> {
        self.shared.accepted.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, at)| *at).collect()
    }

    fn brokers(&self) -> i32 {
        self.shared.ports.len() as i32
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("runtime runs until drop")
    }
}

/// Serves node `i + 1` on `listeners[i]`.
fn spawn_front_ends(runtime: &Runtime, shared: &Arc<Shared>, listeners: Vec<StdTcpListener>) {
    let _in_runtime = runtime.enter(); // tokio listeners register with the current runtime
    for (node_id, listener) in (1..).zip(listeners) {
        listener.set_nonblocking(true).expect("non-blocking listener");
        let listener = TcpListener::from_std(listener).expect("register listener with tokio");
        runtime.spawn(FrontEnd { node_id, shared: shared.clone() }.serve(listener));
    }
}

impl Drop for ZkCluster {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
