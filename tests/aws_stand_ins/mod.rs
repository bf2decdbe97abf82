//! Stand-ins shared by the AWS credential tests (tests/web_identity.rs, tests/pod_identity.rs):
//! a relay that reads the sidecar's MSK IAM tokens, the check that they are signed with given
//! credentials, token files, and an environment that shuts out the host's own AWS settings.
//! Never starts a broker or a sidecar itself.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine;

use crate::security::{self, AwsCredentials, SaslBroker};
use crate::support::{Sidecar, temp_path};

/// Variables that keep the sidecar's credential chain off the host's files and the EC2
/// metadata service, so that only what a test sets can supply credentials.
const ISOLATED: [(&str, &str); 3] = [
    ("AWS_CONFIG_FILE", "/dev/null"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// `application/x-www-form-urlencoded` / query-string decoding.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(byte.unwrap_or_else(|| panic!("bad escape in {text:?}")));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8 form value")
}

pub fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// A server on `127.0.0.1` that answers each connection on a thread of its own with `answer`,
/// which notes what it was asked in the list this keeps.
pub struct Recording<T> {
    pub port: u16,
    requests: Arc<Mutex<Vec<T>>>,
}

impl<T: Clone + Send + 'static> Recording<T> {
    pub fn start<F>(name: &'static str, answer: F) -> Recording<T>
    where
        F: Fn(TcpStream, &Mutex<Vec<T>>) -> Result<(), String> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<T>>> = Arc::default();
        let (recorded, answer) = (requests.clone(), Arc::new(answer));
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (recorded, answer) = (recorded.clone(), answer.clone());
                thread::spawn(move || {
                    if let Err(e) = answer(tcp, &recorded) {
                        eprintln!("[{name}] {e}");
                    }
                });
            }
        });
        Recording { port, requests }
    }

    /// What every connection so far was asked.
    pub fn requests(&self) -> Vec<T> {
        self.requests.lock().unwrap().clone()
    }
}

/// The bytes a client sent on one connection.
pub type Capture = Arc<Mutex<Vec<u8>>>;

/// A TCP relay to `upstream` that keeps the first bytes each client sends, to read the
/// OAUTHBEARER tokens in the sidecar's SaslAuthenticate requests.
pub struct SniffingRelay(Recording<Capture>);

impl SniffingRelay {
    const KEEP: usize = 64 * 1024;

    pub fn start(upstream: String) -> SniffingRelay {
        SniffingRelay(Recording::start("sniffing relay", move |client, connections| {
            let server = TcpStream::connect(&upstream).map_err(|e| format!("connect {upstream}: {e}"))?;
            let sent = Arc::new(Mutex::new(Vec::new()));
            connections.lock().unwrap().push(sent.clone());
            let (mut server_in, mut client_out) = (server.try_clone().unwrap(), client.try_clone().unwrap());
            thread::spawn(move || {
                let _ = std::io::copy(&mut server_in, &mut client_out);
                let _ = client_out.shutdown(Shutdown::Write);
            });
            let (mut client_in, mut server_out) = (client, server);
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = client_in.read(&mut buf) {
                if n == 0 || server_out.write_all(&buf[..n]).is_err() {
                    break;
                }
                let mut kept = sent.lock().unwrap();
                let room = Self::KEEP.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
            let _ = server_out.shutdown(Shutdown::Write);
            Ok(())
        }))
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }

    /// The presigned URLs inside every OAUTHBEARER token sent so far.
    pub fn presigned_urls(&self) -> Vec<String> {
        let mut urls = Vec::new();
        for sent in self.0.requests() {
            let sent = sent.lock().unwrap();
            let text = String::from_utf8_lossy(&sent);
            for part in text.split("auth=Bearer ").skip(1) {
                let token = part.split('\u{1}').next().unwrap_or_default();
                let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).expect("base64url token");
                urls.push(String::from_utf8(url).expect("utf-8 URL"));
            }
        }
        urls
    }
}

/// The decoded query parameters of a presigned URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    parse_form(query).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// A token file the test owns, removed on drop.
pub struct TokenFile(pub PathBuf);

impl TokenFile {
    pub fn new(contents: &str) -> TokenFile {
        let path = temp_path("web-identity-token");
        std::fs::write(&path, contents).unwrap();
        TokenFile(path)
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every broker connection authenticated as `credentials`, and every token the relay saw is a
/// `region` token carrying their session token, verified with them broker-side.
pub fn assert_signed_with(relay: &SniffingRelay, broker: &SaslBroker, region: &str, credentials: &AwsCredentials) {
    let key_id = credentials.access_key_id.as_str();
    assert!(broker.successful_authentications() >= 2, "{:?}", broker.auth_events());
    assert!(broker.failed_authentications().is_empty(), "{:?}", broker.failed_authentications());
    assert!(broker.auth_events().iter().all(|e| e.principal.as_deref() == Some(key_id)));
    let urls = relay.presigned_urls();
    assert!(!urls.is_empty(), "the bootstrap connection authenticated through the relay");
    for url in &urls {
        assert_eq!(query_param(url, "X-Amz-Security-Token"), credentials.session_token, "{url}");
        let credential = query_param(url, "X-Amz-Credential").unwrap_or_default();
        assert!(credential.starts_with(&format!("{key_id}/")), "{credential}");
        assert!(credential.ends_with(&format!("/{region}/kafka-cluster/aws4_request")), "{credential}");
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url);
        let principal = security::check_iam_token(region, std::slice::from_ref(credentials), &token, None);
        assert_eq!(principal.as_deref(), Ok(key_id), "the signature covers the session token");
    }
}

/// The sidecar logged loading credentials, and none of `secrets` anywhere.
pub fn assert_loaded_without_leaks(sidecar: &Sidecar, secrets: &[&str]) {
    let logs = sidecar.logs();
    assert!(logs.contains("AWS credentials loaded"), "{logs}");
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret reached the log:\n{logs}");
    }
}

/// A sidecar doing AWS_MSK_IAM for a cluster in `region`, its credential chain seeing only `env`.
pub fn msk_iam_sidecar(upstream: &str, region: &str, env: &[(&str, &str)]) -> Sidecar {
    let env: Vec<(&str, &str)> = env.iter().copied().chain(ISOLATED).collect();
    Sidecar::builder(upstream).args(&["--sasl-mechanism", "AWS_MSK_IAM", "--aws-region", region]).envs(&env).start()
}

/// The sidecar authenticated and turned ready, and carries records to `topic` and back.
pub fn assert_ready_and_relaying(sidecar: &Sidecar, topic: &str) {
    assert_eq!(sidecar.wait_for_readyz(200, Duration::from_secs(15)).0, 200, "{}", sidecar.logs());
    sidecar.kcat_round_trip(topic, 20);
}

/// An IAM-enforcing broker in `region` that accepts `credentials`, and a relay in front of it.
pub fn iam_broker_behind_relay(region: &str, credentials: AwsCredentials) -> (SaslBroker, SniffingRelay) {
    let broker = SaslBroker::start_iam(region, &[credentials], None);
    let relay = SniffingRelay::start(broker.addr());
    (broker, relay)
}
