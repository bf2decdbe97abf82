//! The pools against a plain TCP listener standing in for a broker: what they dial, hand out,
//! take back and refuse.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::{PoolConfig, Pools};
use crate::cluster::{ClusterView, Follower, Learned};
use crate::rewrite::Endpoint;
use crate::upstream::{Connector, Keepalive, SocketOptions, UpstreamConfig};

const SOCKETS: SocketOptions = SocketOptions {
    keepalive: Keepalive { idle: Duration::from_secs(45), interval: Duration::from_secs(7), count: 4 },
    user_timeout: Some(Duration::from_millis(12_500)),
};

fn config(size: usize, max_idle: usize, connect_rate: u32) -> PoolConfig {
    PoolConfig {
        size,
        max_idle,
        idle_lifetime: Duration::from_secs(60),
        refill_backoff: Duration::from_millis(20),
        connect_rate,
    }
}

/// A "broker" that accepts and keeps connections, counting them; `close` drops every one.
struct Broker {
    addr: String,
    accepted: Arc<AtomicUsize>,
    held: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Broker {
    async fn start() -> Broker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, keep) = (accepted.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                keep.lock().unwrap().push(stream);
            }
        });
        Broker { addr, accepted, held }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn close_all(&self) {
        self.held.lock().unwrap().clear();
    }
}

fn pools(broker: &Broker, config: PoolConfig) -> (Pools, Arc<ClusterView>) {
    let upstream = UpstreamConfig {
        connect_timeout: Duration::from_secs(1),
        connect_attempts: 1,
        connect_backoff: Duration::from_millis(10),
    };
    let connector = Arc::new(Connector::new(upstream, SOCKETS, None, None));
    let cluster = Arc::new(ClusterView::new(vec![broker.addr.clone()]));
    let (host, port) = broker.addr.rsplit_once(':').unwrap();
    let endpoint = Endpoint { node_id: 1, host: host.into(), port: port.parse().unwrap() };
    cluster.learn(&Learned { brokers: vec![endpoint], controller_id: Some(1), metadata: true });
    let pools = Pools::new(connector, cluster.clone(), config, CancellationToken::new());
    cluster.subscribe(Arc::new(pools.clone()));
    (pools, cluster)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn pooled_connections_are_ready_and_carry_the_socket_options() {
    let broker = Broker::start().await;
    let (pools, _cluster) = pools(&broker, config(2, 4, 100));
    until("the pool to fill", || broker.accepted() == 2).await;
    let lease = pools.acquire(Some(1)).await.unwrap();
    assert_eq!(lease.node_id, Some(1));
    let Either::Left(tcp) = &lease.connected.stream else { panic!("plain TCP") };
    let socket = SockRef::from(tcp);
    assert!(tcp.nodelay().unwrap() && socket.keepalive().unwrap());
    assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(45));
    assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_millis(12_500)));
    until("the refill", || broker.accepted() == 3).await;
}

#[tokio::test]
async fn connections_given_back_are_handed_out_again_up_to_the_idle_limit() {
    let broker = Broker::start().await;
    let (pools, _cluster) = pools(&broker, config(0, 1, 100));
    let first = pools.acquire(Some(1)).await.unwrap();
    let second = pools.acquire(Some(1)).await.unwrap();
    until("two connects", || broker.accepted() == 2).await;
    pools.give_back(1, first.connected);
    pools.give_back(1, second.connected); // over the idle limit: closed
    let again = pools.acquire(Some(1)).await.unwrap();
    pools.give_back(1, again.connected);
    let _ = pools.acquire(Some(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(broker.accepted(), 2, "the given-back connection served twice");
    let _ = pools.acquire(None).await.unwrap(); // bootstrap: pool empty, so a new one
    until("a third connect", || broker.accepted() == 3).await;
}

#[tokio::test]
async fn connections_the_broker_closed_are_never_handed_out() {
    let broker = Broker::start().await;
    let (pools, _cluster) = pools(&broker, config(2, 4, 100));
    until("the pool to fill", || broker.accepted() == 2).await;
    broker.close_all(); // a broker restart, as the idle connections see it
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lease = pools.acquire(Some(1)).await.unwrap();
    let Either::Left(tcp) = &lease.connected.stream else { panic!("plain TCP") };
    let mut byte = [0u8; 1];
    assert!(matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "alive");
    until("a fresh connection to replace the dead ones", || broker.accepted() >= 3).await;
}

#[tokio::test]
async fn new_connections_wait_for_the_rate_limit_or_a_connection_given_back() {
    let broker = Broker::start().await;
    let (pools, _cluster) = pools(&broker, config(0, 4, 2));
    let first = pools.acquire(Some(1)).await.unwrap();
    let _second = pools.acquire(Some(1)).await.unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn({
        let pools = pools.clone();
        async move { pools.acquire(Some(1)).await.map(|lease| lease.node_id) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the third connect in a second waits");
    pools.give_back(1, first.connected);
    assert_eq!(waiting.await.unwrap().unwrap(), Some(1));
    assert!(started.elapsed() < Duration::from_millis(900), "served by the connection given back");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(broker.accepted(), 2);
}

#[tokio::test]
async fn a_broker_that_leaves_loses_its_pool() {
    let broker = Broker::start().await;
    let (pools, cluster) = pools(&broker, config(2, 4, 100));
    until("the pool to fill", || broker.accepted() == 2).await;
    pools.brokers_left(&[1]);
    cluster.learn(&Learned { brokers: Vec::new(), controller_id: None, metadata: true });
    let lease = pools.acquire(Some(1)).await.unwrap();
    assert!(lease.node_id.is_some());
    until("no pooled connection: a new one", || broker.accepted() == 3).await;
    pools.give_back(1, lease.connected); // no pool to go back to: closed
    let _ = pools.acquire(Some(1)).await.unwrap();
    until("a new one again", || broker.accepted() == 4).await;
}

#[tokio::test]
async fn idle_connections_are_replaced_after_their_lifetime() {
    let broker = Broker::start().await;
    let (_pools, _cluster) =
        pools(&broker, PoolConfig { idle_lifetime: Duration::from_millis(100), ..config(2, 4, 100) });
    until("the pool to fill", || broker.accepted() == 2).await;
    until("both replaced", || broker.accepted() >= 4).await;
}

#[tokio::test]
async fn a_connection_whose_sasl_session_is_nearly_due_is_not_taken_back() {
    let broker = Broker::start().await;
    let (pools, _cluster) = pools(&broker, config(0, 4, 100));
    let mut lease = pools.acquire(Some(1)).await.unwrap();
    until("one connect", || broker.accepted() == 1).await;
    lease.connected.reauthenticate_at = Some(Instant::now() + Duration::from_secs(2));
    pools.give_back(1, lease.connected);
    let mut lease = pools.acquire(Some(1)).await.unwrap();
    until("a new connection", || broker.accepted() == 2).await;
    lease.connected.reauthenticate_at = Some(Instant::now() + Duration::from_secs(60));
    pools.give_back(1, lease.connected);
    let _ = pools.acquire(Some(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(broker.accepted(), 2, "a session due in a minute is taken back");
}
