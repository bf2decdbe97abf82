//! SASL with passwords (PLAIN, SCRAM), session expiry and re-authentication, and the legacy
//! SaslHandshake v0 flow, over hand-built frames where clients cannot show it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use kafka_sidecar_test_support::security;
use security::{
    Client, ClientSecurity, Mechanism, SaslBroker, SaslConfig, TlsOptions, kcat_metadata, kcat_metadata_within, probe,
    probe_holding,
};

use super::{FAIL_WAIT, alice, bob, text};

#[test]
fn sasl_accepts_right_and_rejects_wrong_passwords_for_plain_and_scram() {
    let broker = SaslBroker::start(&Mechanism::PASSWORD, &[alice(), bob()], None);
    let addr = broker.addr();
    for mechanism in Mechanism::PASSWORD {
        for client in Client::ALL {
            let what = format!("{client:?} {mechanism}");
            let result = probe(client, &addr, &ClientSecurity::sasl(mechanism, "alice", "alice-secret"));
            assert!(result.ok, "{what} with the right password: {}\n{}", result.error_text(), result.output);
            assert_eq!(result.brokers, vec![addr.clone()], "{what}");

            let expected = match mechanism {
                Mechanism::Plain => "Authentication failed: Invalid username or password".to_string(),
                m => format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {m}"
                ),
            };
            probe(client, &addr, &ClientSecurity::sasl(mechanism, "alice", "wrong"))
                .assert_failed_with(&expected)
                .assert_failed_with(if client == Client::Confluent { "SASL authentication error" } else { "Error 58" });
            probe(client, &addr, &ClientSecurity::sasl(mechanism, "mallory", "alice-secret"))
                .assert_failed_with(&expected);
        }
        probe(Client::Confluent, &addr, &ClientSecurity::sasl(mechanism, "bob", "bob-secret")).assert_ok();
    }

    let events = broker.auth_events();
    for mechanism in Mechanism::PASSWORD {
        let of = |ok: bool, who: &str| {
            events.iter().any(|e| e.mechanism == mechanism.name() && e.ok == ok && e.principal.as_deref() == Some(who))
        };
        assert!(of(true, "alice") && of(true, "bob"), "{mechanism}: {events:#?}");
        assert!(events.iter().any(|e| e.mechanism == mechanism.name() && !e.ok), "{mechanism}: {events:#?}");
    }
    assert!(events.iter().all(|e| !e.reauth && !e.legacy && e.session_lifetime_ms == 0), "{events:#?}");
    // Both SaslAuthenticate v1 (librdkafka) and v2 (kafka-python, flexible) were answered.
    assert!(events.iter().any(|e| e.ok && e.authenticate_version == Some(1)), "{events:#?}");
    assert!(events.iter().any(|e| e.ok && e.authenticate_version == Some(2)), "{events:#?}");
}

#[test]
fn kcat_authenticates_with_sasl_over_plaintext_and_tls() {
    let plain = SaslBroker::start_with(SaslConfig::new(&Mechanism::PASSWORD, &[bob()]).normalize_api_versions());
    let tls = SaslBroker::start_with(
        SaslConfig::new(&Mechanism::PASSWORD, &[bob()]).tls(TlsOptions::default()).normalize_api_versions(),
    );
    for broker in [&plain, &tls] {
        let addr = broker.addr();
        for mechanism in Mechanism::PASSWORD {
            let mut right = ClientSecurity::sasl(mechanism, "bob", "bob-secret");
            let mut wrong = ClientSecurity::sasl(mechanism, "bob", "alice-secret");
            if broker.tls().is_some() {
                right = right.with_ca(broker.ca_path());
                wrong = wrong.with_ca(broker.ca_path());
            }
            let out = kcat_metadata(&addr, &right);
            assert!(out.status.success(), "kcat {mechanism} to {addr}: {}", text(&out));
            assert!(text(&out).contains(&format!("broker 111 at {addr}")), "{}", text(&out));
            let out = kcat_metadata_within(&addr, &wrong, FAIL_WAIT);
            assert!(!out.status.success(), "kcat {mechanism} with a wrong password: {}", text(&out));
            assert!(text(&out).contains("SASL authentication error: Authentication failed"), "{}", text(&out));
        }
        // librdkafka 2.0.2 finishes with SaslAuthenticate v0 (no session lifetime, no re-auth).
        let events = broker.auth_events();
        assert!(events.iter().any(|e| e.ok && e.authenticate_version == Some(0)), "{events:#?}");
    }
}

#[test]
fn sasl_refuses_a_mechanism_it_does_not_enable() {
    let broker = SaslBroker::start(&[Mechanism::Plain], &[alice()], None);
    probe(Client::Confluent, &broker.addr(), &ClientSecurity::sasl(Mechanism::ScramSha512, "alice", "alice-secret"))
        .assert_failed_with("broker's supported mechanisms: PLAIN");
    let failed = broker.failed_authentications();
    assert!(
        failed.iter().any(|e| e.error.as_deref() == Some("Unsupported SASL mechanism SCRAM-SHA-512")),
        "{failed:#?}"
    );
}

#[test]
fn sasl_over_tls_works_end_to_end() {
    let broker =
        SaslBroker::start_with(SaslConfig::new(&[Mechanism::ScramSha512], &[alice()]).tls(TlsOptions::default()));
    let addr = broker.addr();
    assert!(addr.starts_with("localhost:") && broker.security_protocol() == "SASL_SSL");
    let security = ClientSecurity::sasl(Mechanism::ScramSha512, "alice", "alice-secret").with_ca(broker.ca_path());
    for client in Client::ALL {
        let result = probe(client, &addr, &security);
        result.assert_ok();
        assert_eq!(result.brokers, vec![addr.clone()]);
    }
    probe(
        Client::Confluent,
        &addr,
        &ClientSecurity::sasl(Mechanism::ScramSha512, "alice", "nope").with_ca(broker.ca_path()),
    )
    .assert_failed_with("invalid credentials with SASL mechanism SCRAM-SHA-512");
    assert!(broker.tls().unwrap().handshakes() >= 3);
}

#[test]
fn clients_reauthenticate_before_the_session_lifetime_runs_out() {
    let broker =
        SaslBroker::start(&[Mechanism::ScramSha256, Mechanism::Plain], &[alice()], Some(Duration::from_secs(2)));
    let addr = broker.addr();
    // confluent-kafka (KIP-368 since librdkafka 2.2) and kafka-python 3 both re-authenticate.
    let result = probe_holding(
        Client::Confluent,
        &addr,
        &ClientSecurity::sasl(Mechanism::ScramSha256, "alice", "alice-secret"),
        Duration::from_secs(5),
    );
    result.assert_ok();
    assert!(result.metadata_calls >= 5);
    let result = probe_holding(
        Client::KafkaPython,
        &addr,
        &ClientSecurity::sasl(Mechanism::Plain, "alice", "alice-secret"),
        Duration::from_secs(5),
    );
    result.assert_ok();

    let events = broker.auth_events();
    for mechanism in ["SCRAM-SHA-256", "PLAIN"] {
        assert!(
            events.iter().any(|e| e.ok && e.reauth && e.mechanism == mechanism),
            "no {mechanism} re-authentication: {events:#?}"
        );
    }
    assert!(events.iter().all(|e| e.ok && e.session_lifetime_ms == 2000), "{events:#?}");
    assert_eq!(broker.expired_sessions(), 0, "{}", broker.logs());
}

// ------------------------------------------------------------------------------------------------
// Raw SASL exchanges

/// A blocking Kafka connection speaking hand-built frames (request header v1).
struct Raw {
    stream: TcpStream,
    correlation_id: i32,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { stream, correlation_id: 0 }
    }

    fn send_frame(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).unwrap();
    }

    /// The next frame's payload; `None` when the peer closed the connection.
    fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut payload = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some(payload)
    }

    fn send_request(&mut self, api_key: i16, version: i16, body: &[u8]) {
        self.correlation_id += 1;
        let mut payload = Vec::new();
        payload.extend_from_slice(&api_key.to_be_bytes());
        payload.extend_from_slice(&version.to_be_bytes());
        payload.extend_from_slice(&self.correlation_id.to_be_bytes());
        payload.extend_from_slice(&4i16.to_be_bytes());
        payload.extend_from_slice(b"raw1");
        payload.extend_from_slice(body);
        self.send_frame(&payload);
    }

    /// Sends a request and returns the response body (after the correlation id); `None` if the
    /// connection was closed instead.
    fn request(&mut self, api_key: i16, version: i16, body: &[u8]) -> Option<Vec<u8>> {
        self.send_request(api_key, version, body);
        let response = self.read_frame()?;
        assert_eq!(i32::from_be_bytes(response[..4].try_into().unwrap()), self.correlation_id);
        Some(response[4..].to_vec())
    }

    /// SaslHandshake with `mechanism`; returns the error code.
    fn handshake(&mut self, version: i16, mechanism: &str) -> i16 {
        let mut body = (mechanism.len() as i16).to_be_bytes().to_vec();
        body.extend_from_slice(mechanism.as_bytes());
        let response = self.request(17, version, &body).expect("SaslHandshake answered");
        i16::from_be_bytes([response[0], response[1]])
    }

    /// SaslAuthenticate v1 with `token`: (error code, error message, session_lifetime_ms), or
    /// `None` if the connection was closed.
    fn authenticate(&mut self, token: &[u8]) -> Option<(i16, Option<String>, i64)> {
        let mut body = (token.len() as i32).to_be_bytes().to_vec();
        body.extend_from_slice(token);
        let r = self.request(36, 1, &body)?;
        let error = i16::from_be_bytes([r[0], r[1]]);
        let msg_len = i16::from_be_bytes([r[2], r[3]]);
        let (message, mut pos) = if msg_len < 0 {
            (None, 4)
        } else {
            (Some(String::from_utf8_lossy(&r[4..4 + msg_len as usize]).into_owned()), 4 + msg_len as usize)
        };
        let auth_len = i32::from_be_bytes(r[pos..pos + 4].try_into().unwrap());
        pos += 4 + auth_len.max(0) as usize;
        let lifetime = i64::from_be_bytes(r[pos..pos + 8].try_into().unwrap());
        Some((error, message, lifetime))
    }

    fn plain(&mut self, user: &str, password: &str) -> Option<(i16, Option<String>, i64)> {
        assert_eq!(self.handshake(1, "PLAIN"), 0);
        self.authenticate(format!("\0{user}\0{password}").as_bytes())
    }

    /// Metadata v1 for all topics; whether it was answered.
    fn metadata(&mut self) -> bool {
        self.request(3, 1, &(-1i32).to_be_bytes()).is_some()
    }
}

fn sleep_until(deadline: Instant) {
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
}

#[test]
fn expired_sessions_are_closed_unless_reauthenticated() {
    let broker = SaslBroker::start(&[Mechanism::Plain], &[alice(), bob()], Some(Duration::from_millis(2000)));
    let lifetime = Duration::from_millis(2000);
    let mut conn = Raw::connect(&broker.addr());
    assert_eq!(conn.plain("alice", "alice-secret"), Some((0, None, 2000)));
    // The first session ends at the latest `lifetime` after its answer arrived.
    let first_done = Instant::now();
    assert!(conn.metadata());

    // Re-authenticate after 1 s: the new session ends `lifetime` after that request at the
    // earliest, and `lifetime` after its answer at the latest.
    thread::sleep(Duration::from_millis(1000));
    let reauth_sent = Instant::now();
    assert_eq!(conn.plain("alice", "alice-secret"), Some((0, None, 2000)));
    let reauth_done = Instant::now();
    sleep_until(first_done + lifetime + Duration::from_millis(300));
    assert!(Instant::now() < reauth_sent + lifetime, "too slow to check the renewed session");
    assert!(conn.metadata(), "re-authenticated session closed at the first session's end: {}", broker.logs());
    sleep_until(reauth_done + lifetime + Duration::from_millis(300));
    assert!(!conn.metadata(), "a request after expiry was answered");
    assert!(broker.reauthentications() == 1 && broker.expired_sessions() == 1, "{}", broker.logs());

    // A re-authentication must keep the principal.
    let mut conn = Raw::connect(&broker.addr());
    assert_eq!(conn.plain("alice", "alice-secret").map(|r| r.0), Some(0));
    let (error, message, _) = conn.plain("bob", "bob-secret").expect("answered before closing");
    assert_eq!(error, 58);
    assert_eq!(message.as_deref(), Some("Cannot change principals during re-authentication from User:alice: User:bob"));
    assert!(!conn.metadata());

    // No session lifetime configured: 0, and the session lasts.
    let forever = SaslBroker::start(&[Mechanism::Plain], &[alice()], None);
    let mut conn = Raw::connect(&forever.addr());
    assert_eq!(conn.plain("alice", "alice-secret"), Some((0, None, 0)));
    assert!(conn.metadata());
}

#[test]
fn legacy_handshake_v0_takes_raw_tokens_and_other_requests_must_wait_for_authentication() {
    let broker = SaslBroker::start(&[Mechanism::Plain], &[alice()], None);

    let mut conn = Raw::connect(&broker.addr());
    assert_eq!(conn.handshake(0, "PLAIN"), 0);
    conn.send_frame(b"\0alice\0alice-secret");
    assert_eq!(conn.read_frame(), Some(Vec::new()), "PLAIN's empty server token");
    assert!(conn.metadata());

    let mut conn = Raw::connect(&broker.addr());
    assert_eq!(conn.handshake(0, "PLAIN"), 0);
    conn.send_frame(b"\0alice\0wrong");
    assert_eq!(conn.read_frame(), None, "a failed legacy authentication closes the connection");

    let mut conn = Raw::connect(&broker.addr());
    assert!(!conn.metadata(), "Metadata before authentication was answered");

    // ApiVersions is relayed before authentication.
    let mut conn = Raw::connect(&broker.addr());
    assert!(conn.request(18, 0, &[]).is_some());
    assert_eq!(conn.plain("alice", "alice-secret").map(|r| r.0), Some(0));

    let events = broker.auth_events();
    assert!(events.iter().any(|e| e.ok && e.legacy && e.authenticate_version.is_none()), "{events:#?}");
    assert!(events.iter().any(|e| !e.ok && e.legacy), "{events:#?}");
    assert!(broker.closes().iter().any(|(_, r)| r.contains("unexpected request api_key=3")), "{:?}", broker.closes());
}
