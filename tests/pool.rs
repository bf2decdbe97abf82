//! Warm broker connections through the sidecar, counted where the broker accepts them: the
//! ZooKeeper-mode fixture's front end stands in front of Tansu and records every connection it
//! accepts. Dial-per-call clients (connect, ApiVersions, Metadata, close) are served from the
//! pool; a storm of clients stays within the connect-rate limit; connections whose state is
//! uncertain are never shared; a broker restart never hands out a dead connection.

use kafka_sidecar_test_support::{self as support, raw};
mod zk;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use raw::{RawClient, raw_request};
use support::{Sidecar, Tansu, wait_for_port};
use zk::{ZkCluster, ZkOptions};

/// One broker (node 1) in front of Tansu, counting the connections it accepts.
fn one_broker() -> (Tansu, ZkCluster) {
    let tansu = Tansu::start();
    let zk = ZkCluster::start(&tansu.addr(), ZkOptions { brokers: 1, ..ZkOptions::default() });
    (tansu, zk)
}

fn sidecar(zk: &ZkCluster, extra: &[&str]) -> Sidecar {
    let sidecar = Sidecar::start(&zk.bootstrap(), extra);
    assert!(wait_for_port(&sidecar.broker_addr(1), Duration::from_secs(10)), "broker 1 listener");
    sidecar
}

fn api_versions(correlation_id: i32) -> Vec<u8> {
    raw_request(18, 0, correlation_id, "dial", &[])
}

/// Metadata v1 for no topic: the brokers and the controller, as kafka-go's `Conn` asks.
fn metadata(correlation_id: i32) -> Vec<u8> {
    raw_request(3, 1, correlation_id, "dial", &0i32.to_be_bytes())
}

/// One dial-per-call exchange: connect, ApiVersions, Metadata, close. Returns how long it took.
fn exchange(addr: &str) -> Duration {
    let started = Instant::now();
    let mut client = RawClient::connect(addr);
    for request in [api_versions(1), metadata(2)] {
        client.send_bytes(&request).unwrap();
        let answer = client.recv().unwrap();
        assert_eq!(answer[4..8], request[8..12], "the answer to this request");
    }
    drop(client);
    started.elapsed()
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Connections the fixture accepted while `run` ran.
fn accepts_during(zk: &ZkCluster, run: impl FnOnce()) -> usize {
    let before = zk.accepted_at().len();
    run();
    zk.accepted_at().len() - before
}

#[test]
fn dial_per_call_clients_are_served_from_the_pool() {
    let (_tansu, zk) = one_broker();
    let pooled = sidecar(&zk, &[]);
    let unpooled = sidecar(&zk, &["--pool-size", "0", "--pool-max-idle", "0"]);
    for addr in [zk.broker_addr(1), pooled.broker_addr(1), unpooled.broker_addr(1)] {
        (0..20).for_each(|_| {
            exchange(&addr);
        }); // warm up
    }
    let calls = 200;
    let mut direct = Vec::new();
    let mut through = Vec::new();
    let mut without_pool = Vec::new();
    let pooled_accepts = accepts_during(&zk, || {
        for _ in 0..calls {
            direct.push(exchange(&zk.broker_addr(1)));
            through.push(exchange(&pooled.broker_addr(1)));
        }
    }) - calls;
    let unpooled_accepts = accepts_during(&zk, || {
        (0..calls).for_each(|_| without_pool.push(exchange(&unpooled.broker_addr(1))));
    });
    let (direct, through, without_pool) = (p50(direct), p50(through), p50(without_pool));
    let added = through.saturating_sub(direct);
    eprintln!(
        "{calls} dial-per-call exchanges: direct p50 {direct:?}; through the sidecar p50 {through:?} (added \
         {added:?}), {pooled_accepts} new broker connections; without the pool p50 {without_pool:?}, \
         {unpooled_accepts} new broker connections"
    );
    assert!(pooled_accepts <= 20, "{pooled_accepts} new broker connections for {calls} calls");
    assert_eq!(unpooled_accepts, calls, "without the pool every call dials");
    assert!(added < Duration::from_millis(2), "added p50 {added:?}");
    let hits = pooled.metric("kafka_sidecar_pool_checkouts_total", &["node=\"1\"", "result=\"hit\""]);
    assert!(hits >= (calls - 20) as f64, "pool hits {hits}");
    assert!(pooled.metric("kafka_sidecar_pool_reused_total", &["node=\"1\""]) > 0.0);
}

#[test]
fn a_storm_of_clients_stays_within_the_connect_rate() {
    let (_tansu, zk) = one_broker();
    let limit = 20;
    let sidecar = sidecar(&zk, &["--broker-connect-rate", &limit.to_string()]);
    thread::sleep(Duration::from_millis(1_100)); // the sidecar's own start-up connects out of the window
    let storm_started = Instant::now();
    let clients = 500;
    let barrier = Arc::new(Barrier::new(clients));
    let bootstrap = sidecar.bootstrap();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (barrier, bootstrap) = (barrier.clone(), bootstrap.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut client = RawClient::connect(&bootstrap);
                client.send_bytes(&api_versions(7)).unwrap();
                client.recv().map(|answer| answer[4..8] == 7i32.to_be_bytes()).unwrap_or(false)
            })
        })
        .collect();
    let served = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
    let storm = storm_started.elapsed();
    let accepted: Vec<Instant> = zk.accepted_at().into_iter().filter(|at| *at >= storm_started).collect();
    let busiest = accepted
        .iter()
        .map(|from| {
            accepted.iter().filter(|at| **at >= *from && at.duration_since(*from) < Duration::from_secs(1)).count()
        })
        .max()
        .unwrap_or(0);
    let waits = sidecar.metric("kafka_sidecar_connect_rate_waits_total", &[]);
    eprintln!(
        "{clients} clients at once: {served} served in {storm:?}; {} new broker connections, at most {busiest} in \
         any second (limit {limit}); {waits} connects waited for the limit",
        accepted.len()
    );
    assert_eq!(served, clients, "every client is answered");
    assert!(busiest <= limit, "{busiest} broker connects within one second");
}

/// The sidecar with no connection opened ahead and at most one kept idle, so each one the broker
/// accepts is a session's, and a session that takes the idle one leaves none.
fn reuse_only(zk: &ZkCluster) -> Sidecar {
    sidecar(zk, &["--pool-size", "0", "--pool-max-idle", "1"])
}

/// One clean call, then a pause for the sidecar to take its connection back.
fn clean_call(addr: &str) {
    exchange(addr);
    thread::sleep(Duration::from_millis(100));
}

/// Takes the pooled connection with a client that then does `uncertain`; the next call dials.
fn next_call_dials_after(uncertain: impl FnOnce(&mut RawClient)) {
    let (_tansu, zk) = one_broker();
    let sidecar = reuse_only(&zk);
    let addr = sidecar.broker_addr(1);
    clean_call(&addr);
    assert_eq!(accepts_during(&zk, || clean_call(&addr)), 0, "a clean call reuses the connection");
    let dialed = accepts_during(&zk, || {
        let mut client = RawClient::connect(&addr);
        uncertain(&mut client);
        drop(client);
        thread::sleep(Duration::from_millis(300));
        clean_call(&addr);
    });
    assert_eq!(dialed, 1, "the connection was not shared: the next call dialed");
    assert_eq!(accepts_during(&zk, || clean_call(&addr)), 0, "clean calls reuse again");
}

#[test]
fn a_connection_with_a_request_in_flight_at_close_is_not_shared() {
    next_call_dials_after(|client| client.send_bytes(&metadata(3)).unwrap());
}

#[test]
fn a_connection_the_client_authenticated_itself_is_not_shared() {
    next_call_dials_after(|client| {
        let mechanism = b"PLAIN";
        let mut body = (mechanism.len() as i16).to_be_bytes().to_vec();
        body.extend_from_slice(mechanism);
        client.send_bytes(&raw_request(17, 1, 4, "dial", &body)).unwrap();
        let _ = client.recv();
    });
}

#[test]
fn a_connection_whose_client_broke_off_a_frame_is_not_shared() {
    next_call_dials_after(|client| {
        let frame = metadata(5);
        client.send_bytes(&frame[..frame.len() - 3]).unwrap();
    });
}

#[test]
fn pooled_connections_survive_a_broker_restart() {
    let mut tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &["--pool-size", "2"]);
    let bootstrap = sidecar.bootstrap();
    (0..5).for_each(|_| {
        exchange(&bootstrap);
    });
    thread::sleep(Duration::from_millis(200));
    let idle = sidecar.metric("kafka_sidecar_pool_idle_connections", &[]);
    assert!(idle >= 2.0, "the pool is warm: {idle}");
    tansu.restart();
    // Right away: dead pooled connections are found out before they are handed out.
    for _ in 0..10 {
        exchange(&bootstrap);
    }
    thread::sleep(Duration::from_millis(1_500));
    let idle = sidecar.metric("kafka_sidecar_pool_idle_connections", &[]);
    assert!(idle >= 2.0, "the pool refilled after the restart: {idle}");
    for _ in 0..10 {
        exchange(&bootstrap);
    }
}
