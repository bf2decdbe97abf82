//! AWS_MSK_IAM with EKS Pod Identity credentials: the sidecar's credential chain asks a stand-in
//! for the Pod Identity agent (plain HTTP on loopback, `AWS_CONTAINER_CREDENTIALS_FULL_URI`) with
//! the token from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, then signs its MSK IAM tokens with the
//! credentials the agent returns in front of an IAM-enforcing broker.

mod aws_stand_ins;

use kafka_sidecar_test_support::{self as support, security};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use aws_stand_ins::{
    Recording, TokenFile, assert_loaded_without_leaks, assert_ready_and_relaying, assert_signed_with,
    iam_broker_behind_relay, msk_iam_sidecar,
};
use security::{AwsCredentials, SaslBroker};
use support::Sidecar;

const AGENT_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cGF5bWVudHMifQ.YWdlbnQ";
const ACCESS_KEY_ID: &str = "ASIAPODIDENTITYEXAMPLE";
const SECRET_ACCESS_KEY: &str = "pod/identity+secret/EXAMPLEKEY";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEPod+Identity/Session==";
const PATH: &str = "/v1/credentials";

fn pod_credentials() -> AwsCredentials {
    AwsCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY).with_session_token(SESSION_TOKEN)
}

/// The EKS Pod Identity agent on `127.0.0.1`: credentials as JSON to a GET of [`PATH`] whose
/// `Authorization` header is [`AGENT_TOKEN`], 401 otherwise. Keeps each request's head.
struct FakeAgent(Recording<String>);

impl FakeAgent {
    fn start() -> FakeAgent {
        FakeAgent(Recording::start("fake agent", answer))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{PATH}", self.0.port)
    }

    fn requests(&self) -> Vec<String> {
        self.0.requests()
    }
}

fn answer(mut tcp: TcpStream, recorded: &Mutex<Vec<String>>) -> Result<(), String> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a full request".into());
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    recorded.lock().unwrap().push(head.clone());
    let authorization = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization").then(|| value.trim().to_owned())
    });
    let get = head.starts_with(&format!("GET {PATH} "));
    let (status, body) = if get && authorization.as_deref() == Some(AGENT_TOKEN) {
        let body = format!(
            r#"{{"AccessKeyId":"{ACCESS_KEY_ID}","SecretAccessKey":"{SECRET_ACCESS_KEY}","Token":"{SESSION_TOKEN}","AccountId":"123456789012","Expiration":"2099-01-01T00:00:00Z"}}"#
        );
        ("200 OK", body)
    } else {
        ("401 Unauthorized", r#"{"code":"AccessDeniedException","message":"bad authorization token"}"#.to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(response.as_bytes()).map_err(|e| format!("write: {e}"))
}

/// A sidecar doing AWS_MSK_IAM in eu-west-1 with Pod Identity from `agent` and `token_file`.
fn pod_identity_sidecar(upstream: &str, agent: &FakeAgent, token_file: &TokenFile) -> Sidecar {
    let url = agent.url();
    let env = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.0.to_str().unwrap()),
    ];
    msk_iam_sidecar(upstream, "eu-west-1", &env)
}

#[test]
fn pod_identity_credentials_sign_the_msk_iam_tokens() {
    let agent = FakeAgent::start();
    // The sidecar's bootstrap connection goes through the relay, which reads its token.
    let (broker, relay) = iam_broker_behind_relay("eu-west-1", pod_credentials());
    let token = TokenFile::new(AGENT_TOKEN);
    let sidecar = pod_identity_sidecar(&relay.addr(), &agent, &token);
    assert_ready_and_relaying(&sidecar, "pod-identity");

    let requests = agent.requests();
    assert_eq!(requests.len(), 1, "the credentials are cached across connections: {requests:#?}");
    assert!(requests[0].starts_with(&format!("GET {PATH} HTTP/1.1\r\n")), "{}", requests[0]);
    assert_signed_with(&relay, &broker, "eu-west-1", &pod_credentials());

    assert_loaded_without_leaks(&sidecar, &[AGENT_TOKEN, SECRET_ACCESS_KEY, SESSION_TOKEN]);
}

#[test]
fn a_wrong_agent_token_keeps_the_sidecar_unready() {
    let token = TokenFile::new("not-the-agent-token");
    let (agent, broker) = (FakeAgent::start(), SaslBroker::start_iam("eu-west-1", &[pod_credentials()], None));
    let sidecar = pod_identity_sidecar(&broker.addr(), &agent, &token);

    let cause = "no credentials: an error occurred while loading credentials: Non-success status from HTTP \
                 credential provider: StatusCode(401)";
    assert!(sidecar.wait_for_log(cause, Duration::from_secs(15)), "{}", sidecar.logs());
    assert_eq!(sidecar.wait_for_readyz(503, Duration::from_secs(5)).0, 503);
    assert!(!agent.requests().is_empty());
    assert!(broker.successful_authentications() == 0 && broker.failed_authentications().is_empty());
    assert!(!sidecar.logs().contains("not-the-agent-token"), "the token never reaches the log");
}
