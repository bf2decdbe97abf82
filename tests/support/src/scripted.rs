//! A scripted fake broker for tests that need answers no real broker gives (hostile bytes, hang
//! ups, delays): each request frame is passed to a script, whose answer is written back. A
//! streaming variant hands the script the request's header with its body still on the wire, for
//! frames too large to hold or answers written piece by piece.

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
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
    serve_connections(listener, move |mut stream| {
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

/// Runs `serve` on its own thread for each connection `listener` accepts, until the test ends.
fn serve_connections(listener: TcpListener, serve: impl Fn(TcpStream) + Clone + Send + 'static) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let serve = serve.clone();
            thread::spawn(move || serve(stream));
        }
    });
}

/// A request's header (v1: the tagged fields of flexible versions stay in the body), as the
/// streaming broker hands it to its script with the body still unread.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// Empty for a null client id.
    pub client_id: String,
    /// Bytes of the body, after the header.
    pub body_len: usize,
}

/// Answers one request: reads what it wants of `body` (at most the body's bytes; what it leaves
/// is skipped) and writes its answer, in as many pieces as it likes, to the connection. An error
/// closes the connection.
pub type StreamingScript = Arc<dyn Fn(&RequestHead, &mut dyn Read, &mut TcpStream) -> io::Result<()> + Send + Sync>;

/// Serves `listener` with `answer`, one thread per connection, until the test ends. Unlike
/// [`serve_scripted`] it never holds a whole request.
pub fn serve_streaming(listener: TcpListener, answer: StreamingScript) {
    serve_connections(listener, move |stream| {
        let _ = serve_streaming_connection(stream, &answer);
    });
}

fn serve_streaming_connection(mut stream: TcpStream, answer: &StreamingScript) -> io::Result<()> {
    let mut requests = BufReader::new(stream.try_clone()?);
    loop {
        let mut fixed = [0u8; 14];
        requests.read_exact(&mut fixed)?;
        let field = |at: usize, len: usize| &fixed[at..at + len];
        let len = i32::from_be_bytes(field(0, 4).try_into().unwrap());
        let client_id_len = i16::from_be_bytes(field(12, 2).try_into().unwrap()).max(0) as usize;
        let mut client_id = vec![0u8; client_id_len];
        requests.read_exact(&mut client_id)?;
        let head = RequestHead {
            api_key: i16::from_be_bytes(field(4, 2).try_into().unwrap()),
            api_version: i16::from_be_bytes(field(6, 2).try_into().unwrap()),
            correlation_id: i32::from_be_bytes(field(8, 4).try_into().unwrap()),
            client_id: String::from_utf8_lossy(&client_id).into_owned(),
            body_len: usize::try_from(len)
                .ok()
                .and_then(|len| len.checked_sub(10 + client_id_len))
                .ok_or_else(|| io::Error::other(format!("request frame of {len} bytes")))?,
        };
        let mut body = (&mut requests).take(head.body_len as u64);
        answer(&head, &mut body, &mut stream)?;
        io::copy(&mut body, &mut io::sink())?;
        if body.limit() > 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
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
    two_broker_metadata_v1_with_topics(correlation_id, ports, &[])
}

/// [`two_broker_metadata_v1`] that also lists `topics`, each without partitions.
pub fn two_broker_metadata_v1_with_topics(correlation_id: &[u8], ports: [u16; 2], topics: &[String]) -> Vec<u8> {
    let mut body = 2i32.to_be_bytes().to_vec();
    for (node_id, port) in [(1i32, ports[0]), (2, ports[1])] {
        body.extend_from_slice(&node_id.to_be_bytes());
        body.extend_from_slice(&9i16.to_be_bytes());
        body.extend_from_slice(b"127.0.0.1");
        body.extend_from_slice(&i32::from(port).to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes()); // rack
    }
    body.extend_from_slice(&2i32.to_be_bytes()); // controller id
    body.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        body.extend_from_slice(&0i16.to_be_bytes()); // error code
        body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.push(0); // is_internal
        body.extend_from_slice(&0i32.to_be_bytes()); // partitions
    }
    response(correlation_id, &body)
}
