//! The secure-broker harness of `support::security` checked with real clients and no sidecar:
//! certificates, TLS termination (server certificates, hostname, expiry, mTLS), SASL PLAIN and
//! SCRAM enforcement, session expiry and re-authentication, the legacy SaslHandshake v0 flow,
//! and MSK IAM tokens over OAUTHBEARER.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use kafka_sidecar_test_support::{self as support, security};
use security::{
    AwsCredentials, Certs, Client, ClientSecurity, IamTokenOptions, Mechanism, SaslBroker, SaslConfig, ServerCert,
    TlsBroker, TlsOptions, User, check_iam_token, iam_token, iam_token_with, kcat_metadata, kcat_metadata_within,
    probe, probe_holding,
};

/// How long kcat retries when it is expected to fail.
const FAIL_WAIT: Duration = Duration::from_secs(2);

fn alice() -> User {
    User::new("alice", "alice-secret")
}

fn bob() -> User {
    User::new("bob", "bob-secret")
}

fn text(output: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

// ------------------------------------------------------------------------------------------------
// Certificates

fn openssl_verify(ca: &std::path::Path, cert: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(ca).args(extra).arg(cert);
    let output = support::run_with_timeout(cmd, Duration::from_secs(30));
    (output.status.success(), text(&output))
}

#[test]
fn certificates_verify_only_for_their_purpose() {
    let certs = Certs::shared();
    let ca = certs.ca_cert();
    let localhost = &certs.server(ServerCert::Localhost).cert;

    let (ok, out) = openssl_verify(ca, localhost, &["-purpose", "sslserver", "-verify_hostname", "localhost"]);
    assert!(ok, "localhost certificate: {out}");
    let (ok, out) = openssl_verify(certs.other_ca_cert(), localhost, &[]);
    assert!(!ok && out.contains("unable to get local issuer certificate"), "wrong CA accepted: {out}");

    let wrong_host = &certs.server(ServerCert::WrongHost).cert;
    assert!(openssl_verify(ca, wrong_host, &[]).0, "wrong-host certificate chain");
    let (ok, out) = openssl_verify(ca, wrong_host, &["-verify_hostname", "localhost"]);
    assert!(!ok && out.contains("hostname mismatch"), "wrong host accepted: {out}");

    let (ok, out) = openssl_verify(ca, &certs.server(ServerCert::Expired).cert, &["-verify_hostname", "localhost"]);
    assert!(!ok && out.contains("certificate has expired"), "expired certificate accepted: {out}");

    let (ok, out) = openssl_verify(ca, &certs.server(ServerCert::OtherCa).cert, &[]);
    assert!(!ok, "other-CA server certificate accepted by the test CA: {out}");
    assert!(openssl_verify(certs.other_ca_cert(), &certs.server(ServerCert::OtherCa).cert, &[]).0);

    let (ok, out) = openssl_verify(ca, &certs.client().cert, &["-purpose", "sslclient"]);
    assert!(ok, "client certificate: {out}");
    assert!(!openssl_verify(ca, &certs.other_ca_client().cert, &[]).0, "other-CA client certificate accepted");

    // An owned set is a fresh one, removed when dropped.
    let own = Certs::generate();
    let dir = own.dir().to_path_buf();
    assert_ne!(dir, certs.dir());
    assert!(openssl_verify(own.ca_cert(), &own.client().cert, &[]).0);
    assert!(!openssl_verify(own.ca_cert(), &certs.client().cert, &[]).0, "two sets share a CA");
    drop(own);
    assert!(!dir.exists(), "{} left behind", dir.display());

    // Keys are PKCS#8 PEM and match their certificates.
    for pair in [certs.server(ServerCert::Localhost), certs.client()] {
        let key = std::fs::read_to_string(&pair.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{}: {key}", pair.key.display());
        let pubkey = |args: &[&str]| {
            let mut cmd = Command::new("openssl");
            cmd.args(args);
            support::expect_success("openssl", &support::run_with_timeout(cmd, Duration::from_secs(30)))
        };
        assert_eq!(
            pubkey(&["x509", "-noout", "-pubkey", "-in", &pair.cert.display().to_string()]),
            pubkey(&["pkey", "-pubout", "-in", &pair.key.display().to_string()])
        );
    }
}

// ------------------------------------------------------------------------------------------------
// TLS

#[test]
fn kcat_and_python_clients_list_metadata_through_tls_only_with_the_right_ca() {
    // kcat's librdkafka 2.0 cannot parse Tansu's ApiVersions as sent: normalize it.
    let broker = TlsBroker::start(TlsOptions::default().normalize_api_versions());
    let addr = broker.addr();
    assert!(addr.starts_with("localhost:"), "{addr}");

    let out = kcat_metadata(&addr, &ClientSecurity::ssl(broker.ca_path()));
    let shown = text(&out);
    assert!(out.status.success(), "kcat over TLS failed:\n{shown}");
    assert!(shown.contains(&format!("broker 111 at {addr}")), "metadata should name the TLS address:\n{shown}");

    for client in Client::ALL {
        let result = probe(client, &addr, &ClientSecurity::ssl(broker.ca_path()));
        result.assert_ok();
        assert_eq!(result.brokers, vec![addr.clone()], "{client:?}");
    }

    let out = kcat_metadata_within(&addr, &ClientSecurity::ssl(broker.wrong_ca_path()), FAIL_WAIT);
    let shown = text(&out);
    assert!(!out.status.success(), "kcat trusted the wrong CA:\n{shown}");
    assert!(shown.contains("certificate verify failed"), "kcat's error should say why:\n{shown}");
    probe(Client::Confluent, &addr, &ClientSecurity::ssl(broker.wrong_ca_path()))
        .assert_failed_with("certificate verify failed");
    probe(Client::KafkaPython, &addr, &ClientSecurity::ssl(broker.wrong_ca_path()))
        .assert_failed_with("CERTIFICATE_VERIFY_FAILED");

    // Plaintext to the TLS port fails too, and stunnel logs the failed handshakes.
    assert!(!kcat_metadata_within(&addr, &ClientSecurity::plaintext(), FAIL_WAIT).status.success());
    assert!(broker.terminator().handshakes() >= 1, "{}", broker.logs());
    assert!(!broker.terminator().handshake_errors().is_empty(), "{}", broker.logs());
}

#[test]
fn clients_refuse_a_certificate_for_another_host_or_expired() {
    let wrong_host = TlsBroker::start(TlsOptions::with_server_cert(ServerCert::WrongHost));
    let security = ClientSecurity::ssl(wrong_host.ca_path());
    let out = kcat_metadata_within(&wrong_host.addr(), &security, FAIL_WAIT);
    assert!(!out.status.success(), "kcat accepted a certificate for wrong.example:\n{}", text(&out));
    probe(Client::Confluent, &wrong_host.addr(), &security).assert_failed_with("certificate verify failed");
    probe(Client::KafkaPython, &wrong_host.addr(), &security).assert_failed_with("Hostname mismatch");
    // Only the name is wrong: without hostname verification the same chain is accepted.
    probe(Client::Confluent, &wrong_host.addr(), &security.clone().without_hostname_check()).assert_ok();

    let expired = TlsBroker::start(TlsOptions::with_server_cert(ServerCert::Expired));
    let security = ClientSecurity::ssl(expired.ca_path());
    let out = kcat_metadata_within(&expired.addr(), &security, FAIL_WAIT);
    assert!(!out.status.success(), "kcat accepted an expired certificate:\n{}", text(&out));
    assert!(text(&out).contains("certificate verify failed"), "{}", text(&out));
    probe(Client::Confluent, &expired.addr(), &security).assert_failed_with("certificate verify failed");
    probe(Client::KafkaPython, &expired.addr(), &security).assert_failed_with("certificate has expired");

    let other_ca = TlsBroker::start(TlsOptions::with_server_cert(ServerCert::OtherCa));
    probe(Client::Confluent, &other_ca.addr(), &ClientSecurity::ssl(other_ca.wrong_ca_path()))
        .assert_failed_with("certificate verify failed");
    probe(Client::Confluent, &other_ca.addr(), &ClientSecurity::ssl(other_ca.ca_path())).assert_ok();
}

/// `openssl s_client` to `port` offering only `version` (`-tls1_2` or `-tls1_3`), verifying the
/// chain against `ca` and the name `localhost`: (handshake verified, output).
fn s_client(port: u16, ca: &std::path::Path, version: &str) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-brief", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .args(["-verify_hostname", "localhost", "-verify_return_error", version, "-CAfile"])
        .arg(ca);
    let output = support::run_with_timeout(cmd, Duration::from_secs(30));
    (output.status.success(), text(&output))
}

#[test]
fn tls_versions_are_as_configured() {
    let default = TlsBroker::start(TlsOptions::default());
    let (ok, out) = s_client(default.port(), default.ca_path(), "-tls1_3");
    assert!(ok && out.contains("Protocol version: TLSv1.3"), "{out}");
    let (ok, out) = s_client(default.port(), default.ca_path(), "-tls1_2");
    assert!(ok && out.contains("Protocol version: TLSv1.2"), "{out}");

    let tls12 = TlsBroker::start(TlsOptions::default().tls12_only());
    let (ok, out) = s_client(tls12.port(), tls12.ca_path(), "-tls1_3");
    assert!(!ok, "TLS 1.3 negotiated with a TLS 1.2-only listener: {out}");
    let (ok, out) = s_client(tls12.port(), tls12.ca_path(), "-tls1_2");
    assert!(ok && out.contains("Protocol version: TLSv1.2"), "{out}");
    probe(Client::Confluent, &tls12.addr(), &ClientSecurity::ssl(tls12.ca_path())).assert_ok();
}

#[test]
fn mtls_requires_a_client_certificate_from_the_ca() {
    let broker = TlsBroker::start(TlsOptions::mtls().normalize_api_versions());
    let addr = broker.addr();
    let without = ClientSecurity::ssl(broker.ca_path());
    let with = without.clone().with_client_cert(broker.client_cert_path(), broker.client_key_path());
    let foreign = broker.certs().other_ca_client();
    let with_foreign = without.clone().with_client_cert(&foreign.cert, &foreign.key);

    let out = kcat_metadata_within(&addr, &without, FAIL_WAIT);
    assert!(!out.status.success(), "kcat without a client certificate was let in:\n{}", text(&out));
    assert!(
        broker.terminator().wait_for_log("peer did not return a certificate", Duration::from_secs(5)),
        "{}",
        broker.logs()
    );
    probe(Client::Confluent, &addr, &without).assert_failed_with("SSL");

    let out = kcat_metadata(&addr, &with);
    assert!(out.status.success(), "kcat with the client certificate failed:\n{}", text(&out));
    assert!(text(&out).contains(&format!("broker 111 at {addr}")), "{}", text(&out));
    for client in Client::ALL {
        probe(client, &addr, &with).assert_ok();
    }
    assert!(broker.terminator().client_certificates().iter().any(|s| s.contains("CN=kafka-sidecar-client")));

    let out = kcat_metadata_within(&addr, &with_foreign, FAIL_WAIT);
    assert!(!out.status.success(), "a client certificate of another CA was accepted:\n{}", text(&out));
    assert!(broker.logs().contains("certificate verify failed"), "{}", broker.logs());
}

// ------------------------------------------------------------------------------------------------
// SASL with passwords

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

// ------------------------------------------------------------------------------------------------
// AWS MSK IAM (OAUTHBEARER)

/// Tokens made by aws-msk-iam-sasl-signer-python 1.0.2 (botocore 1.44.8) for region eu-west-1 at
/// 2024-05-01T12:00:00Z: (access key id, secret, session token, token).
const AWS_SIGNER_TOKENS: [(&str, &str, Option<&str>, &str); 2] = [
    (
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        None,
        "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJREVYQU1QTEUlMkYyMDI0MDUwMSUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI0MDUwMVQxMjAwMDBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TaWduYXR1cmU9NzVmMTJjYWY1NmZiMjMyMTU4MzFiOGY0NWU4MTA3M2Y5NDQ4M2EwMzM2ZmU1NzBiMmIyNzE4YjM2MDMzYTMxNCZVc2VyLUFnZW50PWF3cy1tc2staWFtLXNhc2wtc2lnbmVyLXB5dGhvbiUyRjEuMC4y",
    ),
    (
        "ASIAEXAMPLE",
        "secret/with+chars",
        Some("FwoGZXIvYXdzEXAMPLE//token+/="),
        "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QVNJQUVYQU1QTEUlMkYyMDI0MDUwMSUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI0MDUwMVQxMjAwMDBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TZWN1cml0eS1Ub2tlbj1Gd29HWlhJdllYZHpFWEFNUExFJTJGJTJGdG9rZW4lMkIlMkYlM0QmWC1BbXotU2lnbmF0dXJlPTM3MjIxMjc2NTI1NTQyNGI0ZWYyZjI4MGZkOGNmYTVlOWUwNzEzMzc5MDVlOTBiYzBjNmJhYjJmYjVjMWIyMWYmVXNlci1BZ2VudD1hd3MtbXNrLWlhbS1zYXNsLXNpZ25lci1weXRob24lMkYxLjAuMg",
    ),
];
const AWS_SIGNER_TIME: u64 = 1_714_564_800;

#[test]
fn iam_verifier_and_presigner_agree_with_the_aws_signer() {
    for (id, secret, session, token) in AWS_SIGNER_TOKENS {
        let mut creds = AwsCredentials::new(id, secret);
        if let Some(s) = session {
            creds = creds.with_session_token(s);
        }
        // The front end's verifier accepts AWS's token while it is valid, and only then.
        assert_eq!(
            check_iam_token("eu-west-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME + 60)),
            Ok(id.to_string())
        );
        assert_eq!(
            check_iam_token("eu-west-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME + 900)),
            Ok(id.to_string())
        );
        let late = check_iam_token("eu-west-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME + 901));
        assert_eq!(late, Err("token expired at 20240501T120000Z + 900s".to_string()));
        let future = check_iam_token("eu-west-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME - 301));
        assert_eq!(future, Err("X-Amz-Date 20240501T120000Z is in the future".to_string()));
        let wrong_key = AwsCredentials::new(id, "another secret");
        assert_eq!(
            check_iam_token("eu-west-1", &[wrong_key], token, Some(AWS_SIGNER_TIME)),
            Err("signature mismatch".to_string())
        );
        let other_region = check_iam_token("us-east-1", std::slice::from_ref(&creds), token, Some(AWS_SIGNER_TIME));
        assert!(other_region.unwrap_err().contains("is not https://kafka.us-east-1.amazonaws.com/"));

        // The reference presigner reproduces AWS's token byte for byte.
        let options = IamTokenOptions {
            timestamp: Some(AWS_SIGNER_TIME),
            user_agent: Some("aws-msk-iam-sasl-signer-python/1.0.2".to_string()),
            ..IamTokenOptions::default()
        };
        assert_eq!(iam_token_with("eu-west-1", &creds, &options), token);
    }

    // Tampering with any signed parameter breaks the signature; the unsigned User-Agent does not.
    let (id, secret, _, _) = AWS_SIGNER_TOKENS[0];
    let creds = AwsCredentials::new(id, secret);
    let now = Some(AWS_SIGNER_TIME + 1);
    let time = AWS_SIGNER_TIME.to_string();
    let signed = support::python_ok(
        "iam_token.py",
        &["--region", "eu-west-1", "--access-key-id", id, "--secret-access-key", secret, "--timestamp", &time, "--url"],
    )
    .trim()
    .to_string();
    let encode = |url: &str| base64_url(url.as_bytes());
    assert_eq!(check_iam_token("eu-west-1", std::slice::from_ref(&creds), &encode(&signed), now), Ok(id.to_string()));
    let other_ua = signed.replace("User-Agent=kafka-sidecar-tests%2Fiam_token.py", "User-Agent=something-else");
    assert_ne!(other_ua, signed);
    assert_eq!(check_iam_token("eu-west-1", std::slice::from_ref(&creds), &encode(&other_ua), now), Ok(id.to_string()));
    let shorter = signed.replace("X-Amz-Expires=900", "X-Amz-Expires=600");
    assert_eq!(
        check_iam_token("eu-west-1", std::slice::from_ref(&creds), &encode(&shorter), now),
        Err("signature mismatch".into())
    );
    let action = signed.replace("kafka-cluster%3AConnect", "kafka-cluster%3AconnecT");
    assert!(check_iam_token("eu-west-1", &[creds], &encode(&action), now).unwrap_err().contains("Action"));
}

/// Unpadded base64url.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn oauthbearer_accepts_iam_tokens_signed_with_the_right_key_only() {
    let creds = AwsCredentials::example();
    let broker = SaslBroker::start_iam("eu-central-1", std::slice::from_ref(&creds), None);
    let addr = broker.addr();

    for client in Client::ALL {
        let result = probe(client, &addr, &ClientSecurity::iam("eu-central-1", &creds));
        result.assert_ok();
        assert_eq!(result.brokers, vec![addr.clone()]);
    }
    let token = iam_token("eu-central-1", &creds);
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&token)).assert_ok();

    let forged = iam_token("eu-central-1", &AwsCredentials::new(&creds.access_key_id, "not the secret"));
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&forged))
        .assert_failed_with("IAM authentication failed: signature mismatch");
    probe(Client::KafkaPython, &addr, &ClientSecurity::oauth_token(&forged))
        .assert_failed_with("IAM authentication failed: signature mismatch");

    let unknown = iam_token("eu-central-1", &AwsCredentials::new("AKIAUNKNOWN", "whatever"));
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&unknown))
        .assert_failed_with("IAM authentication failed: unknown access key id AKIAUNKNOWN");

    let an_hour_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 3600;
    let stale = iam_token_with(
        "eu-central-1",
        &creds,
        &IamTokenOptions { timestamp: Some(an_hour_ago), ..IamTokenOptions::default() },
    );
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&stale)).assert_failed_with("token expired at");

    let other_region = iam_token("us-west-2", &creds);
    probe(Client::Confluent, &addr, &ClientSecurity::oauth_token(&other_region))
        .assert_failed_with("is not https://kafka.eu-central-1.amazonaws.com/");

    let events = broker.auth_events();
    assert!(
        events
            .iter()
            .any(|e| e.ok && e.mechanism == "OAUTHBEARER" && e.principal.as_deref() == Some("AKIAIOSFODNN7EXAMPLE")),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| !e.ok && e.error.as_deref() == Some("IAM authentication failed: signature mismatch")),
        "{events:#?}"
    );
}

#[test]
fn iam_over_tls_reauthenticates_with_fresh_tokens() {
    let creds = AwsCredentials::example().with_session_token("IQoJb3JpZ2luX2VjEXAMPLE/token+=");
    let config = SaslConfig::iam("us-east-1", std::slice::from_ref(&creds))
        .session_lifetime(Duration::from_secs(2))
        .tls(TlsOptions::default());
    let broker = SaslBroker::start_with(config);
    let security = ClientSecurity::iam("us-east-1", &creds).with_ca(broker.ca_path());
    let result = probe_holding(Client::Confluent, &broker.addr(), &security, Duration::from_secs(4));
    result.assert_ok();
    assert_eq!(result.brokers, vec![broker.addr()]);
    assert!(broker.wait_for_reauthentications(1, Duration::from_secs(1)), "{}", broker.logs());
    assert_eq!(broker.expired_sessions(), 0);
}
