//! Who may use the sidecar's listeners: a listener off loopback that would lend the sidecar's
//! broker credentials to unauthenticated clients is refused at start (exit 64) unless the
//! operator opts out, which is warned about and shown in a metric; mutual TLS refuses clients
//! without a certificate of the configured CA; SASL PLAIN and SCRAM are checked against a
//! credentials file made with `kafka-sidecar hash-password`, answering wrong passwords with
//! error 58 and a closed connection, and no password ever reaches the sidecar's log.

use kafka_sidecar_test_support::{self as support, raw, security};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kafka_protocol::messages::{
    ApiKey, MetadataRequest, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_sidecar::sasl::{ScramClient, ScramHash};
use security::{Certs, Client, ClientSecurity, Mechanism, SaslBroker, ServerCert, User, probe};
use support::{Sidecar, Tansu, expect_success, free_port, free_port_base, kcat, kcat_with_input, temp_path};

use raw::RawClient;

const PASSWORD: &str = "Tr0ub4dor-and-3";
const WRONG_PASSWORD: &str = "wr0ng-Pa55word";
const REFUSALS: &str = "kafka_sidecar_client_auth_refusals_total";

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The sidecar's flags that authenticate it to the brokers, one set per kind of credential.
fn broker_credentials(certs: &Certs) -> Vec<(&'static str, Vec<String>)> {
    let client = certs.client();
    vec![
        ("SASL", ["--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "orders"].map(String::from).to_vec()),
        ("IAM", ["--sasl-mechanism", "AWS_MSK_IAM", "--aws-region", "eu-west-1"].map(String::from).to_vec()),
        (
            "client certificate",
            vec![
                "--tls".into(),
                "--tls-cert-file".into(),
                path(&client.cert).into(),
                "--tls-key-file".into(),
                path(&client.key).into(),
            ],
        ),
    ]
}

/// Runs the sidecar to completion (it is expected to exit) with `args`; (exit code, stderr).
fn run_sidecar(args: &[String]) -> (Option<i32>, String) {
    let mut cmd = support::sidecar_command();
    cmd.args(args).env("KAFKA_SIDECAR_SASL_PASSWORD", PASSWORD);
    let output = support::run_with_timeout(cmd, Duration::from_secs(20));
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn listener_args(listen_host: &str) -> Vec<String> {
    let args = [
        "--bootstrap-server",
        "127.0.0.1:1",
        "--listen-host",
        listen_host,
        "--bootstrap-port",
        &free_port().to_string(),
        "--broker-port-base",
        &free_port_base(support::BROKER_PORT_SPAN).to_string(),
        "--admin-listen",
        &format!("127.0.0.1:{}", free_port()),
    ];
    args.map(String::from).to_vec()
}

#[test]
fn remote_listeners_lending_broker_credentials_to_anyone_are_refused_at_start() {
    let certs = Certs::shared();
    for (what, credentials) in broker_credentials(certs) {
        let args = [listener_args("0.0.0.0"), credentials.clone()].concat();
        let (code, stderr) = run_sidecar(&args);
        assert_eq!(code, Some(64), "{what}: exit 64 before binding:\n{stderr}");
        assert!(stderr.contains("--listen-host: 0.0.0.0 is not a loopback address"), "{what}:\n{stderr}");
        for setting in ["--listener-sasl-credentials", "--listener-tls-client-ca", "--insecure-allow-unauthenticated"] {
            assert!(stderr.contains(setting), "{what}: the message names {setting}:\n{stderr}");
        }
        assert!(!stderr.contains("listening"), "{what}: nothing was bound:\n{stderr}");

        // --check-config says the same, and loopback is fine as before.
        let (code, stderr) = run_sidecar(&[args.clone(), vec!["--check-config".into()]].concat());
        assert_eq!(code, Some(64), "{what}:\n{stderr}");
        let loopback = [listener_args("127.0.0.1"), credentials.clone(), vec!["--check-config".into()]].concat();
        let (code, stderr) = run_sidecar(&loopback);
        assert_eq!(code, Some(0), "{what} on loopback is valid:\n{stderr}");

        // Client authentication on the listener makes a remote listener acceptable.
        let server = certs.server(ServerCert::Localhost);
        let mtls = [
            "--listener-tls-cert-file",
            path(&server.cert),
            "--listener-tls-key-file",
            path(&server.key),
            "--listener-tls-client-ca",
            path(certs.ca_cert()),
            "--check-config",
        ]
        .map(String::from);
        let (code, stderr) = run_sidecar(&[args.clone(), mtls.to_vec()].concat());
        assert_eq!(code, Some(0), "{what} with mutual TLS on the listener:\n{stderr}");
    }
    // Without broker credentials a remote listener lends nothing.
    let (code, stderr) = run_sidecar(&[listener_args("0.0.0.0"), vec!["--check-config".into()]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    // On loopback a sidecar with SASL starts as before.
    let sidecar = Sidecar::builder("127.0.0.1:1")
        .args(&["--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "orders"])
        .env("KAFKA_SIDECAR_SASL_PASSWORD", PASSWORD)
        .start();
    assert_eq!(sidecar.metric("kafka_sidecar_insecure_remote_clients", &[]), 0.0);
    assert!(!sidecar.logs().contains("INSECURE"));
}

#[test]
fn the_opt_out_starts_warns_at_every_start_and_shows_in_a_metric() {
    for _start in 0..2 {
        // From the environment, as a Kubernetes manifest would set it.
        let sidecar = Sidecar::builder("127.0.0.1:1")
            .listen_host("0.0.0.0")
            .args(&["--sasl-mechanism", "PLAIN", "--sasl-username", "orders"])
            .env("KAFKA_SIDECAR_SASL_PASSWORD", PASSWORD)
            .env("KAFKA_SIDECAR_INSECURE_ALLOW_UNAUTHENTICATED_REMOTE_CLIENTS", "true")
            .start();
        assert_eq!(sidecar.metric("kafka_sidecar_insecure_remote_clients", &[]), 1.0);
        let logs = sidecar.logs();
        assert_eq!(logs.matches("INSECURE").count(), 1, "warned once per start:\n{logs}");
        assert!(!logs.contains(PASSWORD), "{logs}");
    }
}

/// `kafka-sidecar hash-password orders` for `password`, written to a new credentials file.
fn credentials_file(password: &str) -> PathBuf {
    let mut cmd = support::sidecar_command();
    cmd.args(["hash-password", "orders", "--iterations", "4096"]);
    let output = support::run_with_input(cmd, Some(&format!("{password}\n")), Duration::from_secs(20));
    let lines = expect_success("kafka-sidecar hash-password", &output);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(!lines.contains(password), "{lines}");
    let file = temp_path("client-credentials");
    fs::write(&file, format!("# made by kafka-sidecar hash-password\n{lines}")).unwrap();
    file
}

fn x_args(properties: &[String]) -> Vec<&str> {
    properties.iter().flat_map(|p| ["-X", p.as_str()]).collect()
}

/// Produces `count` messages to `topic` (created on `tansu` beforehand) through `bootstrap` with
/// kcat, then consumes them back, both with `properties`.
fn kcat_round_trip(tansu: &Tansu, bootstrap: &str, properties: &[String], topic: &str, count: usize) {
    support::create_topics(&tansu.addr(), &[topic], 1);
    let x = x_args(properties);
    let input: String = (0..count).map(|i| format!("{topic}-{i}\n")).collect();
    let produce = [&["-b", bootstrap, "-P", "-t", topic][..], &x].concat();
    expect_success("kcat -P", &kcat_with_input(&produce, &input));
    let consume = [&["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q"][..], &x].concat();
    let out = expect_success("kcat -C", &kcat(&consume));
    assert_eq!(out.lines().count(), count, "{out}");
}

fn refusals(sidecar: &Sidecar, cause: &str) -> f64 {
    sidecar.metric(REFUSALS, &[&format!("cause=\"{cause}\"")])
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_of_the_client_ca() {
    let tansu = Tansu::start();
    let certs = Certs::shared();
    let server = certs.server(ServerCert::Localhost);
    let client_ca = temp_path("client-ca");
    fs::copy(certs.ca_cert(), &client_ca).unwrap();
    let sidecar = Sidecar::start(
        &tansu.addr(),
        &[server.listener_args(), vec!["--listener-tls-client-ca", path(&client_ca)]].concat(),
    );
    let bootstrap = format!("localhost:{}", sidecar.bootstrap_port());
    let tls = ClientSecurity::ssl(certs.ca_cert());

    let without = security::kcat_metadata_within(&bootstrap, &tls, Duration::from_secs(3));
    assert!(!without.status.success(), "no client certificate: refused");
    assert!(refusals(&sidecar, "tls_no_certificate") >= 1.0);

    let other = certs.other_ca_client();
    let other_ca = tls.clone().with_client_cert(&other.cert, &other.key);
    let refused = security::kcat_metadata_within(&bootstrap, &other_ca, Duration::from_secs(3));
    assert!(!refused.status.success(), "a certificate of another CA: refused");
    assert!(refusals(&sidecar, "tls_untrusted_certificate") >= 1.0);

    let client = certs.client();
    let mtls = tls.with_client_cert(&client.cert, &client.key);
    kcat_round_trip(&tansu, &bootstrap, &mtls.librdkafka_properties(), "over-mtls", 50);
    assert!(sidecar.logs().contains("tls_no_certificate"), "{}", sidecar.logs());

    // The client CA is reloaded like the listener certificate: trusting the other CA instead
    // admits its clients and refuses the first CA's, without a restart.
    fs::copy(certs.other_ca_cert(), &client_ca).unwrap();
    let admitted = security::kcat_metadata_within(&bootstrap, &other_ca, Duration::from_secs(5));
    expect_success("kcat -L with the newly trusted CA's certificate", &admitted);
    let refused = security::kcat_metadata_within(&bootstrap, &mtls, Duration::from_secs(3));
    assert!(!refused.status.success(), "the CA no longer trusted: refused");
}

fn handshake(client: &mut RawClient, mechanism: &'static str) {
    let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let response: SaslHandshakeResponse = client.request(ApiKey::SaslHandshake, 1, &request);
    assert_eq!(response.error_code, 0, "{mechanism}");
}

fn sasl_authenticate(client: &mut RawClient, token: Vec<u8>) -> SaslAuthenticateResponse {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
    client.request(ApiKey::SaslAuthenticate, 2, &request)
}

/// Authenticates a raw client with `password`; the last SaslAuthenticate answer.
fn raw_login(bootstrap: &str, mechanism: Mechanism, password: &str) -> (RawClient, SaslAuthenticateResponse) {
    let mut client = RawClient::connect(bootstrap);
    handshake(&mut client, mechanism.name());
    let hash = match mechanism {
        Mechanism::Plain => {
            let response = sasl_authenticate(&mut client, format!("\0orders\0{password}").into_bytes());
            return (client, response);
        }
        Mechanism::ScramSha256 => ScramHash::Sha256,
        _ => ScramHash::Sha512,
    };
    let mut scram = ScramClient::new(hash, "orders", password, "r4w-cl1ent-n0nce".into());
    let first = sasl_authenticate(&mut client, scram.client_first());
    assert_eq!(first.error_code, 0, "{mechanism}: the first round passes whatever the password");
    let client_final = scram.client_final(&first.auth_bytes).expect("a valid server-first");
    let last = sasl_authenticate(&mut client, client_final);
    if last.error_code == 0 {
        scram.verify_server_final(&last.auth_bytes).expect("the sidecar knows the stored key");
    }
    (client, last)
}

#[test]
fn sasl_checked_by_the_sidecar_admits_the_right_password_and_refuses_a_wrong_one() {
    let tansu = Tansu::start();
    let credentials = credentials_file(PASSWORD);
    let sidecar =
        Sidecar::start(&tansu.addr(), &["--listener-sasl-credentials", path(&credentials), "--log-level", "debug"]);
    let bootstrap = sidecar.bootstrap();

    // Nothing but ApiVersions and SASL before authentication.
    let mut early = RawClient::connect(&bootstrap);
    early.send(ApiKey::Metadata, 4, &MetadataRequest::default());
    assert!(early.is_closed_by_peer(), "a request before authentication closes the connection");
    assert!(refusals(&sidecar, "unauthenticated_request") >= 1.0);

    for mechanism in Mechanism::PASSWORD {
        let right = ClientSecurity::sasl(mechanism, "orders", PASSWORD);
        let topic = format!("checked-{}", mechanism.name().to_lowercase());
        kcat_round_trip(&tansu, &bootstrap, &right.librdkafka_properties(), &topic, 30);

        let (mut client, answer) = raw_login(&bootstrap, mechanism, WRONG_PASSWORD);
        assert_eq!(answer.error_code, 58, "{mechanism}: SASL_AUTHENTICATION_FAILED");
        assert!(client.is_closed_by_peer(), "{mechanism}: the connection is closed after error 58");

        let wrong = ClientSecurity::sasl(mechanism, "orders", WRONG_PASSWORD);
        probe(Client::Confluent, &bootstrap, &wrong).assert_failed_with("Invalid username or password");

        let (mut client, answer) = raw_login(&bootstrap, mechanism, PASSWORD);
        assert_eq!(answer.error_code, 0, "{mechanism}");
        let metadata: kafka_protocol::messages::MetadataResponse =
            client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
        assert_eq!(metadata.brokers.len(), 1, "{mechanism}: requests pass once authenticated");
    }
    assert!(refusals(&sidecar, "sasl_wrong_password") >= 6.0);

    // A new file (a rotated secret) applies to the next authentication, without a restart.
    let rotated = credentials_file(WRONG_PASSWORD);
    let text = fs::read_to_string(&rotated).unwrap();
    fs::write(&credentials, format!("# rotated\n{text}")).unwrap();
    assert_eq!(raw_login(&bootstrap, Mechanism::ScramSha256, WRONG_PASSWORD).1.error_code, 0);
    assert_eq!(raw_login(&bootstrap, Mechanism::Plain, PASSWORD).1.error_code, 58);
    assert!(sidecar.wait_for_log("client credentials changed on disk; reloaded", Duration::from_secs(5)));

    let logs = sidecar.logs();
    assert!(!logs.contains(PASSWORD) && !logs.contains(WRONG_PASSWORD), "no password in the log:\n{logs}");
}

#[test]
fn sasl_checked_by_the_sidecar_also_when_it_authenticates_to_the_brokers_itself() {
    let broker = SaslBroker::start(&[Mechanism::ScramSha512], &[User::new("sidecar", "br0ker-secret")], None);
    let credentials = credentials_file(PASSWORD);
    let sidecar = Sidecar::builder(&broker.addr())
        .args(&[
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "sidecar",
            "--listener-sasl-credentials",
            path(&credentials),
            "--log-level",
            "debug",
        ])
        .env("KAFKA_SIDECAR_SASL_PASSWORD", "br0ker-secret")
        .start();
    let bootstrap = sidecar.bootstrap();
    for mechanism in Mechanism::PASSWORD {
        let right = ClientSecurity::sasl(mechanism, "orders", PASSWORD);
        let listing = probe(Client::Confluent, &bootstrap, &right);
        listing.assert_ok();
        let wrong = ClientSecurity::sasl(mechanism, "orders", WRONG_PASSWORD);
        probe(Client::Confluent, &bootstrap, &wrong).assert_failed_with("Invalid username or password");
    }
    // The client's exchange was answered by the sidecar; the broker saw only the sidecar's user.
    assert!(broker.successful_authentications() >= 1);
    let logs = sidecar.logs();
    for secret in [PASSWORD, WRONG_PASSWORD, "br0ker-secret"] {
        assert!(!logs.contains(secret), "no password in the log:\n{logs}");
    }
}
