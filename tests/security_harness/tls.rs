//! Certificates and TLS termination: server certificates, hostname, expiry, versions, mTLS.

use std::process::Command;
use std::time::Duration;

use kafka_sidecar_test_support::{self as support, security};
use security::{
    Certs, Client, ClientSecurity, ServerCert, TlsBroker, TlsOptions, kcat_metadata, kcat_metadata_within, probe,
};

use super::{FAIL_WAIT, text};

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
