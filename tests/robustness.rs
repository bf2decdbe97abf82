//! Faults on either side: a broker that sends a malformed response, a broker that goes away
//! mid-request, and the socket options of live connections as the kernel reports them.

mod raw;
mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use raw::RawClient;
use support::{Sidecar, Tansu};

/// A scripted broker: answers each connection's requests with `answer(request_frame)` until the
/// answer is `None`, then closes that connection.
fn scripted_broker(answer: fn(&[u8]) -> Option<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                loop {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut frame = vec![0u8; 4 + i32::from_be_bytes(len) as usize];
                    frame[..4].copy_from_slice(&len);
                    if stream.read_exact(&mut frame[4..]).is_err() {
                        return;
                    }
                    match answer(&frame) {
                        Some(bytes) => {
                            let _ = stream.write_all(&bytes);
                        }
                        None => return,
                    }
                }
            });
        }
    });
    addr
}

fn response(correlation_id: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = ((4 + body.len()) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(correlation_id);
    out.extend_from_slice(body);
    out
}

/// Metadata v1 answer listing one broker (node 1), whatever was asked.
fn good_metadata_v1(correlation_id: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes()); // brokers
    body.extend_from_slice(&1i32.to_be_bytes()); // node id
    body.extend_from_slice(&4i16.to_be_bytes());
    body.extend_from_slice(b"b-01");
    body.extend_from_slice(&9092i32.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes()); // rack
    body.extend_from_slice(&1i32.to_be_bytes()); // controller id
    body.extend_from_slice(&0i32.to_be_bytes()); // topics
    response(correlation_id, &body)
}

#[test]
fn malformed_response_closes_only_the_client_that_asked() {
    // Metadata v1 requests from client "evil" get a hostile broker count; everyone else a good one.
    let broker = scripted_broker(|frame| {
        let correlation_id = &frame[8..12];
        let api_key = i16::from_be_bytes([frame[4], frame[5]]);
        let client_id_len = i16::from_be_bytes([frame[12], frame[13]]) as usize;
        let client_id = &frame[14..14 + client_id_len];
        if api_key == 18 {
            // ApiVersions v0: Metadata 0..1 only.
            let mut body = 0i16.to_be_bytes().to_vec();
            body.extend_from_slice(&1i32.to_be_bytes());
            body.extend_from_slice(&[0, 3, 0, 0, 0, 1]);
            return Some(response(correlation_id, &body));
        }
        if client_id == b"evil" {
            let mut body = i32::MAX.to_be_bytes().to_vec();
            body.extend_from_slice(&[0; 8]);
            return Some(response(correlation_id, &body));
        }
        Some(good_metadata_v1(correlation_id))
    });
    let sidecar = Sidecar::start(&broker, &[]);
    let mut healthy = RawClient::connect(&sidecar.bootstrap());
    let ask = |client: &mut RawClient| -> MetadataResponse {
        client.request(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None))
    };
    assert_eq!(ask(&mut healthy).brokers[0].port, sidecar.broker_port_base() as i32 + 1);

    let mut evil = RawClient::connect(&sidecar.bootstrap());
    evil.send_bytes(&raw::raw_request(3, 1, 9, "evil", &(-1i32).to_be_bytes())).unwrap();
    assert!(evil.is_closed_by_peer(), "the client that got the malformed response is disconnected");
    assert!(sidecar.wait_for_log("cannot rewrite broker response", Duration::from_secs(5)), "{}", sidecar.logs());
    assert!(sidecar.logs().contains("malformed Metadata v1 response"), "{}", sidecar.logs());

    assert_eq!(ask(&mut healthy).brokers.len(), 1, "other clients keep working");
}

#[test]
fn broker_closing_mid_request_closes_the_client_cleanly() {
    // ApiVersions is answered, Metadata makes the broker hang up without answering.
    let broker = scripted_broker(|frame| {
        let correlation_id = &frame[8..12];
        let api_key = i16::from_be_bytes([frame[4], frame[5]]);
        (api_key == 18).then(|| {
            let mut body = 0i16.to_be_bytes().to_vec();
            body.extend_from_slice(&1i32.to_be_bytes());
            body.extend_from_slice(&[0, 3, 0, 0, 0, 1]);
            response(correlation_id, &body)
        })
    });
    let mut sidecar = Sidecar::start(&broker, &[]);
    for _ in 0..3 {
        let mut client = RawClient::connect(&sidecar.bootstrap());
        client.send(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None));
        assert!(client.is_closed_by_peer(), "client must be disconnected, not left hanging");
    }
    assert!(sidecar.is_running(), "the sidecar survives broker disconnects");
}

/// `ss -tnoi` lines for established TCP connections matching `filter`.
fn ss(filter: &str) -> String {
    let out = Command::new("ss").args(["-tnoi", "state", "established", filter]).output().expect("run ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn keepalive_runs_on_client_and_broker_sockets() {
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &["--keepalive-idle", "42s", "--keepalive-interval", "5s"]);
    let mut client = RawClient::connect(&sidecar.bootstrap());
    let _: MetadataResponse = client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));

    // The sidecar's end of the client connection, and its connection to the broker.
    let client_side = ss(&format!("( sport = :{} )", sidecar.bootstrap_port()));
    let broker_side = ss(&format!("( dport = :{} )", tansu.port()));
    for (what, text) in [("client socket", &client_side), ("broker socket", &broker_side)] {
        assert!(text.contains("timer:(keepalive,"), "{what}: no keepalive timer in:\n{text}");
        // The kernel arms the timer with the configured idle time (42s, counting down).
        let armed = text.split("timer:(keepalive,").nth(1).and_then(|rest| rest.split("sec").next());
        let seconds: u32 = armed.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{what}: {text}"));
        assert!((30..=42).contains(&seconds), "{what}: keepalive armed at {seconds}s, expected ~42s:\n{text}");
    }
}
