//! A scripted fake broker for tests that need answers no real broker gives (hostile bytes, hang
//! ups, delays): each request frame is passed to a script, whose answer is written back.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

/// Answers one request frame (length prefix included); `None` closes the connection.
pub type Script = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// Starts a scripted broker on a free loopback port; returns its `host:port`.
pub fn scripted_broker(answer: Script) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    serve_scripted(listener, answer);
    addr
}

/// Serves `listener` with `answer`, one thread per connection, until the test ends.
pub fn serve_scripted(listener: TcpListener, answer: Script) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
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
}

/// A response frame: length, the request's correlation id, `body`.
pub fn response(correlation_id: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = ((4 + body.len()) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(correlation_id);
    out.extend_from_slice(body);
    out
}

/// ApiVersions v0 answer offering Metadata v0–v1 only.
pub fn api_versions_v0(correlation_id: &[u8]) -> Vec<u8> {
    let mut body = 0i16.to_be_bytes().to_vec();
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&[0, 3, 0, 0, 0, 1]);
    response(correlation_id, &body)
}

/// Metadata v1 answer listing one broker (node 1, "b-01:9092") that is also the controller.
pub fn metadata_v1(correlation_id: &[u8]) -> Vec<u8> {
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

/// Metadata v1 answer listing brokers 1 and 2 at `ports` on 127.0.0.1, with node 2 as controller.
pub fn two_broker_metadata_v1(correlation_id: &[u8], ports: [u16; 2]) -> Vec<u8> {
    let mut body = 2i32.to_be_bytes().to_vec();
    for (node_id, port) in [(1i32, ports[0]), (2, ports[1])] {
        body.extend_from_slice(&node_id.to_be_bytes());
        body.extend_from_slice(&9i16.to_be_bytes());
        body.extend_from_slice(b"127.0.0.1");
        body.extend_from_slice(&i32::from(port).to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes()); // rack
    }
    body.extend_from_slice(&2i32.to_be_bytes()); // controller id
    body.extend_from_slice(&0i32.to_be_bytes()); // topics
    response(correlation_id, &body)
}
