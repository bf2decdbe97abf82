//! The sidecar's own TLS and SASL towards brokers, against real terminators and a SASL-enforcing
//! front end (tests/security): clients on the plaintext loopback listener reach brokers that
//! demand TLS, mutual TLS, PLAIN, SCRAM or MSK IAM; wrong trust, names, certificates and
//! credentials fail with their cause; certificates rotate on disk; SASL sessions are renewed.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use kafka_sidecar_test_support::{self as support, raw, security};
use security::{AwsCredentials, Mechanism, SaslBroker, SaslConfig, ServerCert, TlsBroker, TlsOptions, User};
use support::{Sidecar, expect_success, kcat, temp_path};

use raw::RawClient;

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn connect_failures(sidecar: &Sidecar, result: &str) -> f64 {
    let (_, text) = sidecar.admin_get("/metrics");
    let needle = format!("result=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with("kafka_sidecar_upstream_connects_total") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A sidecar that cannot reach its broker: not ready, the cause logged once and counted.
fn assert_refused(sidecar: &Sidecar, cause: &str, metric_result: &str) {
    assert!(sidecar.wait_for_log(cause, Duration::from_secs(10)), "expected {cause:?} in:\n{}", sidecar.logs());
    let (status, body) = sidecar.wait_for_readyz(503, Duration::from_secs(5));
    assert_eq!(status, 503, "{body}");
    assert!(connect_failures(sidecar, metric_result) >= 1.0);
    thread::sleep(Duration::from_millis(1500));
    let reports = sidecar.logs().matches("cannot connect to broker").count();
    assert_eq!(reports, 1, "reported once, not per attempt:\n{}", sidecar.logs());
}

#[test]
fn tls_to_the_broker_carries_real_clients() {
    let broker = TlsBroker::start(TlsOptions::default());
    let sidecar = Sidecar::start(&broker.addr(), &["--tls", "--tls-ca-file", path(broker.ca_path())]);
    sidecar.kcat_round_trip("over-tls", 200);
    assert!(broker.terminator().handshakes() >= 2, "the sidecar's connections went through TLS");
}

#[test]
fn tls_with_the_wrong_ca_is_refused_with_its_cause() {
    let broker = TlsBroker::start(TlsOptions::default());
    let sidecar = Sidecar::start(&broker.addr(), &["--tls", "--tls-ca-file", path(broker.wrong_ca_path())]);
    assert_refused(&sidecar, "UnknownIssuer", "tls_handshake");
}

#[test]
fn tls_with_the_wrong_host_name_is_refused_with_its_cause() {
    let broker = TlsBroker::start(TlsOptions::with_server_cert(ServerCert::WrongHost));
    let sidecar = Sidecar::start(&broker.addr(), &["--tls", "--tls-ca-file", path(broker.ca_path())]);
    assert_refused(&sidecar, "NotValidForName", "tls_handshake");
}

#[test]
fn tls_with_an_expired_certificate_is_refused_with_its_cause() {
    let broker = TlsBroker::start(TlsOptions::with_server_cert(ServerCert::Expired));
    let sidecar = Sidecar::start(&broker.addr(), &["--tls", "--tls-ca-file", path(broker.ca_path())]);
    assert_refused(&sidecar, "Expired", "tls_handshake");
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let broker = TlsBroker::start(TlsOptions::mtls());
    let without = Sidecar::start(&broker.addr(), &["--tls", "--tls-ca-file", path(broker.ca_path())]);
    // Under TLS 1.3 the broker's refusal arrives as an alert on the first read after the
    // handshake, so it is the metadata exchange that reports it.
    assert!(
        without.wait_for_log("CertificateRequired", Duration::from_secs(10)),
        "no client certificate must fail:\n{}",
        without.logs()
    );
    assert_eq!(without.wait_for_readyz(503, Duration::from_secs(5)).0, 503);

    let with = Sidecar::start(
        &broker.addr(),
        &[
            "--tls-ca-file",
            path(broker.ca_path()),
            "--tls-cert-file",
            path(broker.client_cert_path()),
            "--tls-key-file",
            path(broker.client_key_path()),
        ],
    );
    with.kcat_round_trip("mutual", 50);
}

/// Copies a certificate and key to files the test can swap, as Kubernetes swaps a secret.
fn swappable(cert: &Path, key: &Path) -> (PathBuf, PathBuf) {
    let (cert_copy, key_copy) = (temp_path("client.crt"), temp_path("client.key"));
    std::fs::copy(cert, &cert_copy).unwrap();
    std::fs::copy(key, &key_copy).unwrap();
    (cert_copy, key_copy)
}

fn swap(into: &(PathBuf, PathBuf), cert: &Path, key: &Path) {
    // Write beside, then rename over: readers see the old file or the new one, never half.
    for (from, to) in [(cert, &into.0), (key, &into.1)] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, to).unwrap();
    }
}

#[test]
fn rotated_certificates_serve_new_connections_while_live_ones_keep_working() {
    let broker = TlsBroker::start(TlsOptions::mtls());
    let certs = broker.certs();
    let files = swappable(&certs.client().cert, &certs.client().key);
    let sidecar = Sidecar::start(
        &broker.addr(),
        &["--tls-ca-file", path(broker.ca_path()), "--tls-cert-file", path(&files.0), "--tls-key-file", path(&files.1)],
    );
    let mut live = RawClient::connect(&sidecar.bootstrap());
    let ask = |client: &mut RawClient| -> MetadataResponse {
        client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None))
    };
    assert_eq!(ask(&mut live).brokers.len(), 1);

    // The secret now holds a certificate the broker does not trust: new connections fail…
    swap(&files, &certs.other_ca_client().cert, &certs.other_ca_client().key);
    thread::sleep(Duration::from_millis(50));
    let mut fresh = RawClient::connect(&sidecar.bootstrap());
    fresh.send(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    assert!(fresh.is_closed_by_peer(), "a new connection must use the new (refused) certificate");
    // …while the live one, authenticated before, keeps working.
    assert_eq!(ask(&mut live).brokers.len(), 1);

    // A valid certificate again: new connections work without any restart.
    swap(&files, &certs.client().cert, &certs.client().key);
    let mut again = RawClient::connect(&sidecar.bootstrap());
    assert_eq!(ask(&mut again).brokers.len(), 1);
    assert!(sidecar.logs().contains("TLS files changed on disk"));
}

#[test]
fn sasl_plain_and_scram_authenticate_and_wrong_passwords_fail() {
    let user = User::new("orders", "s3cret-pass");
    for mechanism in Mechanism::PASSWORD {
        let broker = SaslBroker::start(&[mechanism], std::slice::from_ref(&user), None);
        let good = Sidecar::builder(&broker.addr())
            .args(&["--sasl-mechanism", mechanism.name(), "--sasl-username", "orders"])
            .env("KAFKA_SIDECAR_SASL_PASSWORD", "s3cret-pass")
            .start();
        good.kcat_round_trip(&format!("sasl-{}", mechanism.name().to_lowercase()), 20);
        assert!(broker.successful_authentications() >= 2, "{mechanism}: the sidecar authenticated");
        assert!(!good.logs().contains("s3cret-pass"), "the password never reaches the log");

        let bad = Sidecar::builder(&broker.addr())
            .args(&["--sasl-mechanism", mechanism.name(), "--sasl-username", "orders"])
            .env("KAFKA_SIDECAR_SASL_PASSWORD", "wrong")
            .start();
        assert_refused(&bad, "the broker refused the credentials", "sasl");
    }
}

#[test]
fn a_client_configured_for_sasl_plain_still_works_when_the_sidecar_authenticates() {
    let broker = SaslBroker::start(&[Mechanism::ScramSha512], &[User::new("orders", "pw")], None);
    let sidecar = Sidecar::builder(&broker.addr())
        .args(&["--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "orders"])
        .env("KAFKA_SIDECAR_SASL_PASSWORD", "pw")
        .start();
    let bootstrap = sidecar.bootstrap();
    // The application keeps its SASL PLAIN settings; the sidecar answers them on loopback.
    let listing = expect_success(
        "kcat -L with SASL PLAIN",
        &kcat(&[
            "-b",
            &bootstrap,
            "-L",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=app",
            "-X",
            "sasl.password=anything",
        ]),
    );
    assert!(listing.contains(&sidecar.broker_addr(111)), "{listing}");
    let plain = expect_success("kcat -L without SASL", &kcat(&["-b", &bootstrap, "-L"]));
    assert!(plain.contains(&sidecar.broker_addr(111)), "{plain}");
}

#[test]
fn aws_msk_iam_tokens_are_accepted_and_wrong_keys_refused() {
    let credentials = AwsCredentials::example();
    let broker = SaslBroker::start_iam("eu-west-1", std::slice::from_ref(&credentials), None);
    let env = |secret: &str| {
        vec![("AWS_ACCESS_KEY_ID", credentials.access_key_id.clone()), ("AWS_SECRET_ACCESS_KEY", secret.to_owned())]
    };
    let args = ["--sasl-mechanism", "AWS_MSK_IAM", "--aws-region", "eu-west-1"];
    let good_env = env(&credentials.secret_access_key);
    let good_env: Vec<(&str, &str)> = good_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let good = Sidecar::builder(&broker.addr()).args(&args).envs(&good_env).start();
    good.kcat_round_trip("iam", 20);

    let bad_env = env("not-the-secret");
    let bad_env: Vec<(&str, &str)> = bad_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bad = Sidecar::builder(&broker.addr()).args(&args).envs(&bad_env).start();
    assert_refused(&bad, "signature mismatch", "sasl");
}

#[test]
fn sasl_sessions_are_renewed_before_the_broker_deadline() {
    // Renewal comes at 85 % of the lifetime: 5 s leaves 0.75 s for a new connection and a SCRAM
    // exchange with the Python front end on a busy machine (2 s left 0.3 s, and failed there).
    let lifetime = Duration::from_secs(5);
    let broker = SaslBroker::start(&[Mechanism::ScramSha256], &[User::new("orders", "pw")], Some(lifetime));
    let sidecar = Sidecar::builder(&broker.addr())
        .args(&["--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", "orders"])
        .env("KAFKA_SIDECAR_SASL_PASSWORD", "pw")
        .start();
    let mut client = RawClient::connect(&sidecar.bootstrap());
    let before = broker.successful_authentications();
    let started = Instant::now();
    // One client connection, a request every 200 ms for two and a half lifetimes: two renewals.
    while started.elapsed() < lifetime * 5 / 2 {
        let response: MetadataResponse =
            client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
        assert_eq!(response.brokers.len(), 1);
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(broker.expired_sessions(), 0, "no session outlived its lifetime");
    assert!(broker.successful_authentications() >= before + 2, "sessions were renewed");
}

#[test]
fn tls_on_the_listeners_serves_tls_clients() {
    let tansu = support::Tansu::start();
    let certs = security::Certs::shared();
    let server = certs.server(ServerCert::Localhost);
    let sidecar = Sidecar::start(&tansu.addr(), &server.listener_args());
    let bootstrap = format!("localhost:{}", sidecar.bootstrap_port());
    let tls = ["-X", "security.protocol=SSL", "-X", &format!("ssl.ca.location={}", path(certs.ca_cert()))];
    let listing = expect_success("kcat -L over TLS", &kcat(&[&["-b", bootstrap.as_str(), "-L"][..], &tls].concat()));
    assert!(listing.contains(&format!("localhost:{}", sidecar.broker_port_base() as u32 + 111)), "{listing}");
    // A plaintext client cannot talk to a TLS listener.
    let plain = kcat(&["-b", &bootstrap, "-L", "-m", "3"]);
    assert!(!plain.status.success());
}

/// One dial-per-call exchange through `addr` (connect, ApiVersions, Metadata, close): its time.
fn dial_per_call(addr: &str) -> Duration {
    let started = Instant::now();
    let mut client = RawClient::connect(addr);
    let _ = client.request::<kafka_protocol::messages::ApiVersionsResponse>(
        ApiKey::ApiVersions,
        0,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    );
    let _: MetadataResponse =
        client.request(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(Some(vec![])));
    started.elapsed()
}

#[test]
fn dial_per_call_over_tls_and_scram_is_served_from_the_pool() {
    let config = SaslConfig::new(&[Mechanism::ScramSha512], &[User::new("orders", "pw")]).tls(TlsOptions::default());
    let broker = SaslBroker::start_with(config);
    let args = ["--tls", "--tls-ca-file", path(broker.ca_path()), "--sasl-mechanism", "SCRAM-SHA-512"];
    let start = |extra: &[&str]| {
        let all: Vec<&str> = args.iter().chain(&["--sasl-username", "orders"]).chain(extra).copied().collect();
        Sidecar::builder(&broker.addr()).args(&all).env("KAFKA_SIDECAR_SASL_PASSWORD", "pw").start()
    };
    let (pooled, unpooled) = (start(&[]), start(&["--pool-size", "0", "--pool-max-idle", "0"]));
    let p50 = |sidecar: &Sidecar| {
        (0..5).for_each(|_| {
            dial_per_call(&sidecar.bootstrap());
        });
        let mut samples: Vec<Duration> = (0..50).map(|_| dial_per_call(&sidecar.bootstrap())).collect();
        samples.sort_unstable();
        samples[samples.len() / 2]
    };
    let (with_pool, without_pool) = (p50(&pooled), p50(&unpooled));
    eprintln!("TLS + SCRAM-SHA-512 dial-per-call p50: {with_pool:?} with the pool, {without_pool:?} without");
    assert!(with_pool < without_pool, "the pool spares the TLS and SCRAM handshakes");
}
