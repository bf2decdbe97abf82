//! AWS_MSK_IAM with web identity (EKS IRSA) credentials: the sidecar's credential chain trades
//! the projected token for temporary credentials at a fake STS (HTTPS on loopback, certificate
//! for `localhost` from the test CA, reached through `AWS_ENDPOINT_URL_STS`), then signs its MSK
//! IAM tokens with them in front of an IAM-enforcing broker.

mod aws_stand_ins;

use kafka_sidecar_test_support::{self as support, security};

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aws_stand_ins::{
    Recording, TokenFile, assert_loaded_without_leaks, assert_ready_and_relaying, assert_signed_with,
    iam_broker_behind_relay, msk_iam_sidecar, parse_form,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use security::{AwsCredentials, Certs, SaslBroker, ServerCert};
use support::Sidecar;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/orders-kafka";
const GOOD_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6b3JkZXJzIn0.c2lnbmF0dXJl";
const ACCESS_KEY_ID: &str = "ASIAIOSFODNN7EXAMPLE";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
const SESSION_TOKEN: &str = "AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+Z2/IEXAMPLE==";
const STS_REFUSAL: &str = "Incorrect token audience for this role";
const SESSION_NAME: &str = "orders-sidecar";

/// The credentials the fake STS issues, as the broker must accept them.
fn temporary_credentials() -> AwsCredentials {
    AwsCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY).with_session_token(SESSION_TOKEN)
}

/// One request the fake STS received.
#[derive(Clone, Debug)]
struct StsRequest {
    method: String,
    path: String,
    headers: String,
    form: Vec<(String, String)>,
}

impl StsRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// STS `AssumeRoleWithWebIdentity` over HTTPS on `127.0.0.1`, presenting the test CA's
/// `localhost` certificate: it answers [`temporary_credentials`] to a form naming [`ROLE_ARN`]
/// and [`GOOD_TOKEN`], and an STS error document otherwise.
struct FakeSts(Recording<StsRequest>);

impl FakeSts {
    fn start() -> FakeSts {
        let certs = Certs::shared();
        let server = certs.server(ServerCert::Localhost);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&server.cert).unwrap().collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        FakeSts(Recording::start("fake sts", move |tcp, recorded| serve(config.clone(), tcp, recorded)))
    }

    /// The endpoint URL for `AWS_ENDPOINT_URL_STS`: by name, so the certificate's host name is
    /// verified.
    fn url(&self) -> String {
        format!("https://localhost:{}", self.0.port)
    }

    fn requests(&self) -> Vec<StsRequest> {
        self.0.requests()
    }
}

fn serve(config: Arc<rustls::ServerConfig>, tcp: TcpStream, recorded: &Mutex<Vec<StsRequest>>) -> Result<(), String> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let connection = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let n = tls.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a full request".into());
        }
        raw.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                break (head.to_owned(), body[..length].to_owned());
            }
        }
    };
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let request = StsRequest {
        method: request_line.next().unwrap_or_default().to_owned(),
        path: request_line.next().unwrap_or_default().to_owned(),
        headers: head.clone(),
        form: parse_form(&body),
    };
    recorded.lock().unwrap().push(request.clone());
    let valid = request.param("Action") == Some("AssumeRoleWithWebIdentity")
        && request.param("Version") == Some("2011-06-15")
        && request.param("RoleArn") == Some(ROLE_ARN);
    let (status, document) = if valid && request.param("WebIdentityToken") == Some(GOOD_TOKEN) {
        let session = request.param("RoleSessionName").unwrap_or_default();
        ("200 OK", credentials_document(session))
    } else if valid {
        ("400 Bad Request", error_document("InvalidIdentityToken", STS_REFUSAL))
    } else {
        ("400 Bad Request", error_document("InvalidParameterValue", "unexpected AssumeRoleWithWebIdentity form"))
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nx-amzn-RequestId: 4b1c7a2e-0000-4000-8000-000000000000\r\nContent-Type: text/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{document}",
        document.len()
    );
    tls.write_all(response.as_bytes()).map_err(|e| format!("write: {e}"))?;
    tls.conn.send_close_notify();
    tls.flush().map_err(|e| format!("flush: {e}"))?;
    let _ = tls.sock.shutdown(Shutdown::Write);
    Ok(())
}

fn credentials_document(session: &str) -> String {
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:orders:orders-app</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/orders-kafka/{session}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{SESSION_TOKEN}</SessionToken>
      <SecretAccessKey>{SECRET_ACCESS_KEY}</SecretAccessKey>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
      <AccessKeyId>{ACCESS_KEY_ID}</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"#
    )
}

fn error_document(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>{code}</Code>
    <Message>{message}</Message>
  </Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>
"#
    )
}

/// A sidecar doing AWS_MSK_IAM in eu-west-1 with web identity from `token_file` at `sts`, and
/// `static_keys` in the environment if any (an empty `AWS_ACCESS_KEY_ID` counts as unset).
fn iam_sidecar(upstream: &str, sts: &FakeSts, token_file: &Path, static_keys: Option<&AwsCredentials>) -> Sidecar {
    let sts_url = sts.url();
    let key = |f: fn(&AwsCredentials) -> Option<&str>| static_keys.and_then(f).unwrap_or_default();
    let env = [
        ("AWS_ACCESS_KEY_ID", key(|c| Some(&c.access_key_id))),
        ("AWS_SECRET_ACCESS_KEY", key(|c| Some(&c.secret_access_key))),
        ("AWS_SESSION_TOKEN", key(|c| c.session_token.as_deref())),
        ("AWS_ROLE_SESSION_NAME", SESSION_NAME),
        ("AWS_ROLE_ARN", ROLE_ARN),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ENDPOINT_URL_STS", &sts_url),
        ("AWS_CA_BUNDLE", Certs::shared().ca_cert().to_str().unwrap()),
    ];
    msk_iam_sidecar(upstream, "eu-west-1", &env)
}

#[test]
fn web_identity_credentials_from_sts_sign_the_msk_iam_tokens() {
    let sts = FakeSts::start();
    // The sidecar's bootstrap connection goes through the relay, which reads its token.
    let (broker, relay) = iam_broker_behind_relay("eu-west-1", temporary_credentials());
    // As the kubelet projects it: the token alone, no newline.
    let token = TokenFile::new(GOOD_TOKEN);
    let sidecar = iam_sidecar(&relay.addr(), &sts, &token.0, None);
    assert_ready_and_relaying(&sidecar, "irsa");

    // STS was asked once, as the AWS SDKs ask: an unsigned form POST.
    let requests = sts.requests();
    assert_eq!(requests.len(), 1, "the temporary credentials are cached across connections: {requests:#?}");
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/"));
    let headers = request.headers.to_ascii_lowercase();
    assert!(headers.contains(&format!("host: localhost:{}", sts.0.port)), "{}", request.headers);
    assert!(headers.contains("content-type: application/x-www-form-urlencoded"), "{}", request.headers);
    assert!(!headers.contains("authorization"), "AssumeRoleWithWebIdentity is not signed");
    assert_eq!(request.param("WebIdentityToken"), Some(GOOD_TOKEN), "the file's token");
    assert_eq!(request.param("RoleSessionName"), Some(SESSION_NAME));

    // Every broker connection authenticated with the issued key, and the signed token carries
    // the issued session token.
    assert_signed_with(&relay, &broker, "eu-west-1", &temporary_credentials());

    assert_loaded_without_leaks(&sidecar, &[GOOD_TOKEN, SECRET_ACCESS_KEY, SESSION_TOKEN]);
}

#[test]
fn a_refused_web_identity_token_is_reported_once_and_keeps_the_sidecar_unready() {
    let sts = FakeSts::start();
    let broker = SaslBroker::start_iam("eu-west-1", &[temporary_credentials()], None);
    let token = TokenFile::new("eyJhbGciOiJSUzI1NiJ9.c3RhbGU.c3RhbGUtc2lnbmF0dXJl");
    let sidecar = iam_sidecar(&broker.addr(), &sts, &token.0, None);

    let cause = format!("InvalidIdentityTokenException: {STS_REFUSAL}");
    assert!(sidecar.wait_for_log(&cause, Duration::from_secs(15)), "expected {cause:?} in:\n{}", sidecar.logs());
    let (status, body) = sidecar.wait_for_readyz(503, Duration::from_secs(5));
    assert_eq!(status, 503, "{body}");
    // Later attempts ask STS again (a fixed token file may fix it) but report nothing new.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sts.requests().len() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(sts.requests().len() >= 2, "retried: {:?}", sts.requests().len());
    assert_eq!(sidecar.wait_for_readyz(503, Duration::ZERO).0, 503);
    let logs = sidecar.logs();
    assert_eq!(logs.matches(STS_REFUSAL).count(), 1, "reported once, not per attempt:\n{logs}");
    assert!(!logs.contains("c3RhbGUtc2lnbmF0dXJl"), "the token never reaches the log:\n{logs}");
    assert!(broker.successful_authentications() == 0 && broker.failed_authentications().is_empty());
}

#[test]
fn static_keys_take_priority_over_web_identity() {
    let sts = FakeSts::start();
    let static_keys = AwsCredentials::example();
    let broker = SaslBroker::start_iam("eu-west-1", std::slice::from_ref(&static_keys), None);
    let token = TokenFile::new(GOOD_TOKEN);
    let sidecar = iam_sidecar(&broker.addr(), &sts, &token.0, Some(&static_keys));
    let (status, body) = sidecar.wait_for_readyz(200, Duration::from_secs(15));
    assert_eq!(status, 200, "{body}\n{}", sidecar.logs());
    assert!(
        broker.auth_events().iter().all(|e| e.ok && e.principal.as_deref() == Some(static_keys.access_key_id.as_str()))
    );
    assert!(sts.requests().is_empty(), "STS is not asked when AWS_ACCESS_KEY_ID is set");
}
