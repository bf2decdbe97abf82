//! SASL enforcement in front of Tansu (`tests/clients/sasl_front.py`), and MSK IAM tokens.

use std::fmt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::certs::Certs;
use super::tls::{TlsOptions, TlsTerminator};
use crate::child::{ChildProcess, START_TIMEOUT};
use crate::clients::python_command;
use crate::ports::with_port_retries;
use crate::tansu::Tansu;

/// A SASL mechanism the front end can enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
    /// AWS MSK IAM: an SigV4-presigned URL as the bearer token.
    OAuthBearer,
}

impl Mechanism {
    /// The mechanisms that take a user name and password.
    pub const PASSWORD: [Mechanism; 3] = [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512];

    /// The name on the wire (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user known to the front end (PLAIN and both SCRAM mechanisms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
}

impl User {
    pub fn new(name: &str, password: &str) -> User {
        User { name: name.to_string(), password: password.to_string() }
    }
}

/// AWS credentials: the front end knows the secret of each access key id it accepts; clients
/// sign tokens with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Temporary credentials' session token (`X-Amz-Security-Token`, signed with the query).
    pub session_token: Option<String>,
}

impl AwsCredentials {
    pub fn new(access_key_id: &str, secret_access_key: &str) -> AwsCredentials {
        AwsCredentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            session_token: None,
        }
    }

    pub fn with_session_token(mut self, token: &str) -> AwsCredentials {
        self.session_token = Some(token.to_string());
        self
    }

    /// AWS's documentation example key pair.
    pub fn example() -> AwsCredentials {
        AwsCredentials::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    }
}

/// Everything a [`SaslBroker`] enforces.
#[derive(Clone, Debug)]
pub struct SaslConfig {
    pub mechanisms: Vec<Mechanism>,
    pub users: Vec<User>,
    /// Reported as `session_lifetime_ms` (SaslAuthenticate v1+); a request arriving after it
    /// without re-authentication closes the connection. `None`: 0, sessions never expire.
    pub session_lifetime: Option<Duration>,
    /// Region of the IAM endpoint (`kafka.<region>.amazonaws.com`); default `us-east-1`.
    pub iam_region: String,
    /// Keys whose signatures OAUTHBEARER accepts.
    pub iam_credentials: Vec<AwsCredentials>,
    /// How far in the future a token's `X-Amz-Date` may be; default 300 s.
    pub iam_max_skew: Duration,
    /// Put stunnel in front of the SASL front end (SASL_SSL).
    pub tls: Option<TlsOptions>,
    /// Drop the top-level tagged fields of ApiVersions v3+ responses: Tansu sends them all, and
    /// librdkafka 2.0 (Debian's kcat) cannot parse that. Off: broker bytes relayed unchanged.
    pub normalize_api_versions: bool,
}

impl SaslConfig {
    pub fn new(mechanisms: &[Mechanism], users: &[User]) -> SaslConfig {
        SaslConfig {
            mechanisms: mechanisms.to_vec(),
            users: users.to_vec(),
            session_lifetime: None,
            iam_region: "us-east-1".to_string(),
            iam_credentials: Vec::new(),
            iam_max_skew: Duration::from_secs(300),
            tls: None,
            normalize_api_versions: false,
        }
    }

    /// OAUTHBEARER only, accepting tokens signed with `credentials` for `region`.
    pub fn iam(region: &str, credentials: &[AwsCredentials]) -> SaslConfig {
        let mut config = SaslConfig::new(&[Mechanism::OAuthBearer], &[]);
        config.iam_region = region.to_string();
        config.iam_credentials = credentials.to_vec();
        config
    }

    pub fn session_lifetime(mut self, lifetime: Duration) -> SaslConfig {
        self.session_lifetime = Some(lifetime);
        self
    }

    pub fn tls(mut self, options: TlsOptions) -> SaslConfig {
        self.tls = Some(options);
        self
    }

    /// See [`SaslConfig::normalize_api_versions`]; needed for kcat.
    pub fn normalize_api_versions(mut self) -> SaslConfig {
        self.normalize_api_versions = true;
        self
    }
}

/// One authentication attempt the front end saw (an `"auth"` event of `sasl_front.py`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthEvent {
    /// Connection number, counted from 1 per front end.
    pub conn: u64,
    pub ok: bool,
    pub mechanism: String,
    /// User name, or access key id for IAM; `None` when unknown.
    pub principal: Option<String>,
    /// A KIP-368 re-authentication on an authenticated connection.
    pub reauth: bool,
    /// SaslHandshake v0 followed by raw tokens.
    pub legacy: bool,
    /// Version of the SaslAuthenticate request that finished the exchange (`None` for legacy).
    pub authenticate_version: Option<i64>,
    /// What the response reported (0 on failure or without a configured lifetime).
    pub session_lifetime_ms: i64,
    /// The error message sent to the client.
    pub error: Option<String>,
    /// Why it failed when the message does not say (e.g. a SCRAM proof mismatch).
    pub detail: Option<String>,
}

impl AuthEvent {
    fn from_json(v: &Value) -> AuthEvent {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        AuthEvent {
            conn: v["conn"].as_u64().unwrap_or_default(),
            ok: v["ok"].as_bool().unwrap_or_default(),
            mechanism: s("mechanism").unwrap_or_default(),
            principal: s("principal"),
            reauth: v["reauth"].as_bool().unwrap_or_default(),
            legacy: v["legacy"].as_bool().unwrap_or_default(),
            authenticate_version: v["authenticate_version"].as_i64(),
            session_lifetime_ms: v["session_lifetime_ms"].as_i64().unwrap_or_default(),
            error: s("error"),
            detail: s("detail"),
        }
    }
}

/// Tansu behind `tests/clients/sasl_front.py`, optionally behind stunnel too: a SASL_PLAINTEXT
/// (or SASL_SSL) listener whose metadata names [`SaslBroker::addr`] (node id 111).
pub struct SaslBroker {
    // Dropped in this order: stunnel, the front end, Tansu.
    tls: Option<TlsTerminator>,
    front: ChildProcess,
    front_addr: String,
    tansu: Tansu,
    config: SaslConfig,
}

impl SaslBroker {
    /// SASL_PLAINTEXT on `127.0.0.1:PORT` with `mechanisms` (password mechanisms), `users`, and
    /// an optional session lifetime.
    pub fn start(mechanisms: &[Mechanism], users: &[User], session_lifetime: Option<Duration>) -> SaslBroker {
        let mut config = SaslConfig::new(mechanisms, users);
        config.session_lifetime = session_lifetime;
        SaslBroker::start_with(config)
    }

    /// OAUTHBEARER (MSK IAM) on SASL_PLAINTEXT, accepting tokens signed with `credentials` for
    /// `region`.
    pub fn start_iam(region: &str, credentials: &[AwsCredentials], session_lifetime: Option<Duration>) -> SaslBroker {
        let mut config = SaslConfig::iam(region, credentials);
        config.session_lifetime = session_lifetime;
        SaslBroker::start_with(config)
    }

    pub fn start_with(config: SaslConfig) -> SaslBroker {
        assert!(!config.mechanisms.is_empty(), "a SASL broker needs at least one mechanism");
        if config.mechanisms.contains(&Mechanism::OAuthBearer) {
            assert!(!config.iam_credentials.is_empty(), "OAUTHBEARER needs SaslConfig::iam_credentials");
        }
        with_port_retries("the SASL broker", || SaslBroker::try_start(&config))
    }

    fn try_start(config: &SaslConfig) -> Result<SaslBroker, String> {
        let front_port = crate::free_port();
        let tls_port = config.tls.map(|_| crate::free_port());
        let advertised = match tls_port {
            Some(port) => format!("localhost:{port}"),
            None => format!("127.0.0.1:{front_port}"),
        };
        let tansu = Tansu::behind(&advertised);
        let front_addr = format!("127.0.0.1:{front_port}");
        let front = spawn_front("sasl-front", &front_addr, &tansu.addr(), &front_args(config))?;
        let tls = match (config.tls, tls_port) {
            (Some(options), Some(port)) => Some(TlsTerminator::start_on(port, &front_addr, options)?),
            _ => None,
        };
        Ok(SaslBroker { tls, front, front_addr, tansu, config: config.clone() })
    }

    /// The address clients connect to, also the broker address in metadata: `127.0.0.1:PORT`
    /// (SASL_PLAINTEXT), or `localhost:PORT` with TLS (SASL_SSL).
    pub fn addr(&self) -> String {
        match &self.tls {
            Some(t) => t.addr(),
            None => self.front_addr.clone(),
        }
    }

    /// `SASL_PLAINTEXT` or `SASL_SSL`: the client's `security.protocol`.
    pub fn security_protocol(&self) -> &'static str {
        if self.tls.is_some() { "SASL_SSL" } else { "SASL_PLAINTEXT" }
    }

    /// `127.0.0.1:PORT` of the SASL front end itself (plaintext SASL, even with TLS configured).
    pub fn front_addr(&self) -> String {
        self.front_addr.clone()
    }

    /// Tansu's own plaintext, unauthenticated `127.0.0.1:port`.
    pub fn tansu_addr(&self) -> String {
        self.tansu.addr()
    }

    pub fn tls(&self) -> Option<&TlsTerminator> {
        self.tls.as_ref()
    }

    /// The CA to trust for SASL_SSL.
    pub fn ca_path(&self) -> &'static Path {
        Certs::shared().ca_cert()
    }

    pub fn config(&self) -> &SaslConfig {
        &self.config
    }

    /// The first configured user.
    pub fn user(&self) -> &User {
        self.config.users.first().expect("no users configured")
    }

    /// Every JSON event the front end printed so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.front.logs().lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Every authentication attempt so far, in order.
    pub fn auth_events(&self) -> Vec<AuthEvent> {
        self.events().iter().filter(|e| e["event"] == "auth").map(AuthEvent::from_json).collect()
    }

    /// Successful authentications, re-authentications included.
    pub fn successful_authentications(&self) -> usize {
        self.auth_events().iter().filter(|e| e.ok).count()
    }

    /// Successful re-authentications (KIP-368).
    pub fn reauthentications(&self) -> usize {
        self.auth_events().iter().filter(|e| e.ok && e.reauth).count()
    }

    pub fn failed_authentications(&self) -> Vec<AuthEvent> {
        self.auth_events().into_iter().filter(|e| !e.ok).collect()
    }

    /// Connections closed because a request arrived after the session expired.
    pub fn expired_sessions(&self) -> usize {
        self.events().iter().filter(|e| e["event"] == "expired").count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.events().iter().filter(|e| e["event"] == "connect").count()
    }

    /// `(conn, reason)` of every closed connection so far.
    pub fn closes(&self) -> Vec<(u64, String)> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "close")
            .map(|e| (e["conn"].as_u64().unwrap_or_default(), e["reason"].as_str().unwrap_or_default().to_string()))
            .collect()
    }

    /// Waits until `done(auth events)` holds; false on timeout.
    pub fn wait_for_auth(&self, timeout: Duration, done: impl Fn(&[AuthEvent]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.auth_events()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until at least `n` re-authentications succeeded; false on timeout.
    pub fn wait_for_reauthentications(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for_auth(timeout, |events| events.iter().filter(|e| e.ok && e.reauth).count() >= n)
    }

    /// The front end's raw output (JSON events, and any Python traceback).
    pub fn logs(&self) -> String {
        self.front.logs()
    }

    pub fn tansu_logs(&self) -> String {
        self.tansu.logs()
    }

    /// Kills the front end now: connections through it drop, the address refuses connections.
    pub fn kill_front(&mut self) {
        self.front.kill();
    }
}

fn front_args(config: &SaslConfig) -> Vec<String> {
    let mut args = Vec::new();
    let mut push = |k: &str, v: String| {
        args.push(k.to_string());
        args.push(v);
    };
    for m in &config.mechanisms {
        push("--mechanism", m.name().to_string());
    }
    for u in &config.users {
        push("--user", format!("{}:{}", u.name, u.password));
    }
    if let Some(lifetime) = config.session_lifetime {
        push("--session-lifetime-ms", lifetime.as_millis().to_string());
    }
    if !config.iam_credentials.is_empty() {
        push("--iam-region", config.iam_region.clone());
        push("--iam-max-skew-s", config.iam_max_skew.as_secs().to_string());
        for c in &config.iam_credentials {
            push("--iam-credential", format!("{}:{}", c.access_key_id, c.secret_access_key));
        }
    }
    if config.normalize_api_versions {
        args.push("--normalize-api-versions".to_string());
    }
    args
}

/// Starts `tests/clients/sasl_front.py` on `listen` in front of `upstream` with `args`, and waits
/// for its `ready` event; on failure, why (with its output).
pub(crate) fn spawn_front(name: &str, listen: &str, upstream: &str, args: &[String]) -> Result<ChildProcess, String> {
    let mut cmd = python_command("sasl_front.py", &["--listen", listen, "--upstream", upstream]);
    cmd.args(args);
    let mut front = ChildProcess::spawn(name, cmd);
    front.wait_until("become ready", START_TIMEOUT, |front| front.logs().contains("\"event\": \"ready\""))?;
    Ok(front)
}

// ------------------------------------------------------------------------------------------------
// MSK IAM tokens

/// How [`iam_token_with`] signs.
#[derive(Clone, Debug)]
pub struct IamTokenOptions {
    /// Signing time (`X-Amz-Date`), epoch seconds; `None`: now.
    pub timestamp: Option<u64>,
    /// `X-Amz-Expires`; the front end accepts 1..=900.
    pub expires_secs: u32,
    /// The unsigned `User-Agent` parameter; `None` leaves it out.
    pub user_agent: Option<String>,
}

impl Default for IamTokenOptions {
    fn default() -> Self {
        IamTokenOptions { timestamp: None, expires_secs: 900, user_agent: Some("kafka-sidecar-tests".to_string()) }
    }
}

/// An OAUTHBEARER token for MSK IAM signed now with `credentials` for `region`, by the reference
/// presigner `tests/clients/iam_token.py` (laid out as aws-msk-iam-sasl-signer-python's).
pub fn iam_token(region: &str, credentials: &AwsCredentials) -> String {
    iam_token_with(region, credentials, &IamTokenOptions::default())
}

pub fn iam_token_with(region: &str, credentials: &AwsCredentials, options: &IamTokenOptions) -> String {
    let expires = options.expires_secs.to_string();
    let mut args = vec![
        "--region",
        region,
        "--access-key-id",
        &credentials.access_key_id,
        "--secret-access-key",
        &credentials.secret_access_key,
        "--expires",
        &expires,
    ];
    if let Some(token) = &credentials.session_token {
        args.extend_from_slice(&["--session-token", token]);
    }
    let timestamp = options.timestamp.map(|t| t.to_string());
    if let Some(t) = &timestamp {
        args.extend_from_slice(&["--timestamp", t]);
    }
    match &options.user_agent {
        Some(ua) => args.extend_from_slice(&["--user-agent", ua]),
        None => args.push("--no-user-agent"),
    }
    crate::python_ok("iam_token.py", &args).trim().to_string()
}

/// Checks `token` with the front end's verifier as it would at `now` (epoch seconds; `None`:
/// the current time), accepting signatures by `credentials` for `region`: the principal (access
/// key id) or the reason it is refused.
pub fn check_iam_token(
    region: &str,
    credentials: &[AwsCredentials],
    token: &str,
    now: Option<u64>,
) -> Result<String, String> {
    let now = now.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let now = now.to_string();
    let creds: Vec<String> =
        credentials.iter().map(|c| format!("{}:{}", c.access_key_id, c.secret_access_key)).collect();
    let mut args = vec!["--check-iam-token", token, "--iam-region", region, "--now", &now];
    for c in &creds {
        args.extend_from_slice(&["--iam-credential", c]);
    }
    let output = crate::python("sasl_front.py", &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "sasl_front.py --check-iam-token printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    if v["ok"] == true {
        Ok(v["principal"].as_str().unwrap_or_default().to_string())
    } else {
        Err(v["error"].as_str().unwrap_or_default().to_string())
    }
}
