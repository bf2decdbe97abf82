//! Reliability under faults, load and hostile input: a broker killed and restarted under traffic,
//! a broker missing at start-up, silently dead peers on either side (network namespaces with
//! iptables DROP), a thousand held connections and a connection storm, slowloris clients, and
//! clients that never read their responses. Each test prints its measured figures on stderr
//! (`cargo test --test faults -- --nocapture`); `docs/reliability.md` records them.
//!
//! Layout: `outage` (a broker restarted or missing), `netns` (silent peers), `load` (held
//! connections, a storm), `slow_clients` (slowloris, clients that never read, unbounded
//! pipelining), `hung_brokers` (brokers that stop answering).

mod hung_brokers;
mod load;
mod netns;
mod outage;
mod slow_clients;

use std::io::Read;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use kafka_sidecar_test_support::raw::RawClient;

// === helpers shared by the modules ===

/// Tests that measure times or memory share the machine; the load test runs alone.
static MACHINE: RwLock<()> = RwLock::new(());

fn shared_machine() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn whole_machine() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

fn metadata(client: &mut RawClient) -> MetadataResponse {
    client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None))
}

/// A Metadata v4 request frame (all topics) with `correlation_id`.
fn metadata_frame(correlation_id: i32) -> Vec<u8> {
    let request = MetadataRequest::default().with_topics(None);
    kafka_sidecar::wire::encode_request(ApiKey::Metadata, 4, correlation_id, &request).unwrap().to_vec()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A broker that accepts connections and reads requests but never answers. Returns its address
/// and the number of requests read on each connection so far.
fn mute_broker() -> (String, std::sync::Arc<std::sync::Mutex<Vec<usize>>>) {
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counts = Arc::new(Mutex::new(Vec::new()));
    let shared = counts.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counts = shared.clone();
            let index = {
                let mut counts = counts.lock().unwrap();
                counts.push(0);
                counts.len() - 1
            };
            thread::spawn(move || {
                loop {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
                    if stream.read_exact(&mut frame).is_err() {
                        return;
                    }
                    counts.lock().unwrap()[index] += 1;
                }
            });
        }
    });
    (addr, counts)
}
