//! The gate against hand-made SASL frames (PLAIN, both SCRAM hashes, out-of-order and early
//! requests) and the start-up guard against a remote listener lending broker credentials.

use std::num::NonZeroU32;

use kafka_protocol::messages::{
    ApiVersionsRequest, MetadataRequest, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::credentials::Record;
use super::*;
use crate::sasl::{ScramClient, ScramHash};
use crate::wire::{encode_request, peek_request_header};

const PASSWORD: &str = "correct horse";

fn checked_gate() -> (Gate, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "kafka-sidecar-gate-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let iterations = NonZeroU32::new(4096).unwrap();
    let lines: Vec<String> = ClientMechanism::ALL
        .iter()
        .map(|m| Record::new(m.hash(), PASSWORD.as_bytes(), iterations).line("orders", *m))
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let auth = ClientAuth { mode: Mode::Checked(Arc::new(CredentialStore::load(&path).unwrap())) };
    (auth.gate("10.0.0.7:40000".parse().unwrap()), path)
}

fn admit(gate: &Gate, api_key: ApiKey, version: i16, body: &impl Encodable) -> Admit {
    let frame = encode_request(api_key, version, 42, body).unwrap();
    let header = peek_request_header(&frame).unwrap();
    gate.admit(&header, Some(&frame))
}

fn handshake(gate: &Gate, mechanism: &'static str) -> Admit {
    let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    admit(gate, ApiKey::SaslHandshake, 1, &request)
}

fn authenticate(gate: &Gate, version: i16, token: Vec<u8>) -> Admit {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
    admit(gate, ApiKey::SaslAuthenticate, version, &request)
}

fn decode<R: Decodable>(api_key: ApiKey, version: i16, answer: &Bytes) -> R {
    let mut body = answer.slice(4..);
    let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 42);
    R::decode(&mut body, version).unwrap()
}

fn authenticated(admit: Admit, version: i16) -> SaslAuthenticateResponse {
    let Admit::Answer(answer) = admit else { panic!("expected an answer, got {admit:?}") };
    let response: SaslAuthenticateResponse = decode(ApiKey::SaslAuthenticate, version, &answer);
    assert_eq!(response.error_code, 0);
    response
}

fn refused_with_58(admit: Admit, version: i16) {
    let Admit::AnswerAndClose(answer) = admit else { panic!("expected an answer and a close, got {admit:?}") };
    let response: SaslAuthenticateResponse = decode(ApiKey::SaslAuthenticate, version, &answer);
    assert_eq!(response.error_code, SASL_AUTHENTICATION_FAILED);
    let message = response.error_message.unwrap().to_string();
    assert!(!message.contains(PASSWORD), "{message}");
}

fn metadata(gate: &Gate) -> Admit {
    admit(gate, ApiKey::Metadata, 4, &MetadataRequest::default())
}

#[test]
fn before_authentication_only_api_versions_passes() {
    let (gate, path) = checked_gate();
    assert!(gate.answers_sasl());
    assert!(matches!(admit(&gate, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()), Admit::Forward));
    assert!(matches!(metadata(&gate), Admit::Refuse));
    // SaslAuthenticate before a handshake is out of order.
    assert!(matches!(authenticate(&gate, 1, b"\0orders\0x".to_vec()), Admit::Refuse));
    let _ = std::fs::remove_file(path);
}

#[test]
fn plain_with_the_right_password_lets_requests_through_and_a_wrong_one_gets_58() {
    for version in 0..=2 {
        let (gate, path) = checked_gate();
        assert!(matches!(handshake(&gate, "PLAIN"), Admit::Answer(_)));
        authenticated(authenticate(&gate, version, format!("\0orders\0{PASSWORD}").into_bytes()), version);
        assert!(matches!(metadata(&gate), Admit::Forward));

        let (gate, _) = checked_gate();
        assert!(matches!(handshake(&gate, "PLAIN"), Admit::Answer(_)));
        refused_with_58(authenticate(&gate, version, b"\0orders\0wrong".to_vec()), version);
        assert!(matches!(metadata(&gate), Admit::Refuse));

        let (gate, _) = checked_gate();
        assert!(matches!(handshake(&gate, "PLAIN"), Admit::Answer(_)));
        refused_with_58(authenticate(&gate, version, format!("\0nobody\0{PASSWORD}").into_bytes()), version);
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn scram_with_the_right_password_lets_requests_through_and_a_wrong_one_gets_58() {
    for (mechanism, hash) in [("SCRAM-SHA-256", ScramHash::Sha256), ("SCRAM-SHA-512", ScramHash::Sha512)] {
        for (password, good) in [(PASSWORD, true), ("wrong", false)] {
            let (gate, path) = checked_gate();
            assert!(matches!(handshake(&gate, mechanism), Admit::Answer(_)));
            let mut client = ScramClient::new(hash, "orders", password, "client-nonce".into());
            let first = authenticated(authenticate(&gate, 2, client.client_first()), 2);
            let client_final = client.client_final(&first.auth_bytes).unwrap();
            let last = authenticate(&gate, 2, client_final);
            if good {
                let last = authenticated(last, 2);
                client.verify_server_final(&last.auth_bytes).unwrap();
                assert!(matches!(metadata(&gate), Admit::Forward));
            } else {
                refused_with_58(last, 2);
            }
            let _ = std::fs::remove_file(path);
        }
    }
}

#[test]
fn other_mechanisms_are_refused_naming_the_ones_offered() {
    let (gate, path) = checked_gate();
    let Admit::AnswerAndClose(answer) = handshake(&gate, "OAUTHBEARER") else { panic!("expected a refusal") };
    let response: SaslHandshakeResponse = decode(ApiKey::SaslHandshake, 1, &answer);
    assert_eq!(response.error_code, UNSUPPORTED_SASL_MECHANISM);
    let offered: Vec<String> = response.mechanisms.iter().map(|m| m.to_string()).collect();
    assert_eq!(offered, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    let _ = std::fs::remove_file(path);
}

#[test]
fn loopback_and_pass_through_keep_their_behaviour() {
    let peer = "127.0.0.1:1".parse().unwrap();
    let loopback = ClientAuth { mode: Mode::Loopback }.gate(peer);
    assert!(loopback.answers_sasl());
    assert!(matches!(handshake(&loopback, "PLAIN"), Admit::Answer(_)));
    assert!(matches!(authenticate(&loopback, 1, b"\0any\0thing".to_vec()), Admit::Answer(_)));
    assert!(matches!(metadata(&loopback), Admit::Forward));
    let pass = ClientAuth { mode: Mode::PassThrough }.gate(peer);
    assert!(!pass.answers_sasl());
    assert!(matches!(handshake(&pass, "PLAIN"), Admit::Forward));
    assert!(matches!(metadata(&pass), Admit::Forward));
}

#[test]
fn a_remote_listener_lends_broker_credentials_unless_clients_authenticate() {
    use crate::config::{borrowed_identity, lent_identity_problem};
    let remote: std::net::IpAddr = "0.0.0.0".parse().unwrap();
    let scram = "a SASL SCRAM user";
    let identity = Some(scram);
    assert_eq!(borrowed_identity(remote, identity, false), identity);
    let problem = lent_identity_problem(remote, scram);
    for named in
        ["--listener-sasl-credentials", "--listener-tls-client-ca", "--insecure-allow-unauthenticated-remote-clients"]
    {
        assert!(problem.contains(named), "{problem}");
    }
    assert_eq!(borrowed_identity("127.0.0.1".parse().unwrap(), identity, false), None);
    assert_eq!(borrowed_identity("::1".parse().unwrap(), identity, false), None);
    assert_eq!(borrowed_identity(remote, None, false), None);
    assert_eq!(borrowed_identity(remote, identity, true), None);
}

#[test]
fn a_credentials_file_that_cannot_be_read_is_a_configuration_problem() {
    let settings = crate::config::Settings {
        bootstrap_servers: vec!["b:9092".into()],
        listener_sasl_credentials: Some("/nonexistent/creds".into()),
        ..Default::default()
    };
    let config = crate::config::Config::from_settings(settings).expect("valid otherwise");
    let error = check_files(&config).unwrap_err();
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].0, "listener-sasl-credentials");
}
