//! Kafka clients connecting with TLS / SASL settings: `tests/clients/probe.py` (confluent-kafka
//! or kafka-python) and kcat.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::sasl::{AwsCredentials, Mechanism};

/// Which Python client [`probe`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// confluent-kafka (librdkafka 2.x as bundled with the wheel).
    Confluent,
    KafkaPython,
}

impl Client {
    pub const ALL: [Client; 2] = [Client::Confluent, Client::KafkaPython];

    pub fn name(self) -> &'static str {
        match self {
            Client::Confluent => "confluent",
            Client::KafkaPython => "kafka-python",
        }
    }
}

/// A client's security settings. `Default` is PLAINTEXT.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    /// CA file to trust; setting it (or a client certificate) selects TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Skip hostname verification (`ssl.endpoint.identification.algorithm=none`).
    pub no_hostname_check: bool,
    pub mechanism: Option<Mechanism>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// OAUTHBEARER: tokens presigned by `tests/clients/iam_token.py` for (region, credentials).
    pub iam: Option<(String, AwsCredentials)>,
    /// OAUTHBEARER: this token, as is.
    pub oauth_token: Option<String>,
}

impl ClientSecurity {
    pub fn plaintext() -> ClientSecurity {
        ClientSecurity::default()
    }

    /// TLS trusting `ca`.
    pub fn ssl(ca: &Path) -> ClientSecurity {
        ClientSecurity { ca: Some(ca.to_path_buf()), ..ClientSecurity::default() }
    }

    /// SASL with a user name and password (PLAIN or SCRAM).
    pub fn sasl(mechanism: Mechanism, username: &str, password: &str) -> ClientSecurity {
        ClientSecurity {
            mechanism: Some(mechanism),
            username: Some(username.to_string()),
            password: Some(password.to_string()),
            ..ClientSecurity::default()
        }
    }

    /// OAUTHBEARER with MSK IAM tokens signed with `credentials` for `region`.
    pub fn iam(region: &str, credentials: &AwsCredentials) -> ClientSecurity {
        ClientSecurity {
            mechanism: Some(Mechanism::OAuthBearer),
            iam: Some((region.to_string(), credentials.clone())),
            ..ClientSecurity::default()
        }
    }

    /// OAUTHBEARER with a fixed token.
    pub fn oauth_token(token: &str) -> ClientSecurity {
        ClientSecurity {
            mechanism: Some(Mechanism::OAuthBearer),
            oauth_token: Some(token.to_string()),
            ..ClientSecurity::default()
        }
    }

    /// Adds TLS trusting `ca`.
    pub fn with_ca(mut self, ca: &Path) -> ClientSecurity {
        self.ca = Some(ca.to_path_buf());
        self
    }

    /// Adds a client certificate (mTLS).
    pub fn with_client_cert(mut self, cert: &Path, key: &Path) -> ClientSecurity {
        self.client_cert = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }

    pub fn without_hostname_check(mut self) -> ClientSecurity {
        self.no_hostname_check = true;
        self
    }

    fn tls(&self) -> bool {
        self.ca.is_some() || self.client_cert.is_some()
    }

    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub fn protocol(&self) -> &'static str {
        match (self.tls(), self.mechanism.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    /// librdkafka properties (`key=value`), as for kcat's `-X`. OAUTHBEARER is not expressible
    /// this way (librdkafka needs a token callback).
    pub fn librdkafka_properties(&self) -> Vec<String> {
        let mut props = vec![format!("security.protocol={}", self.protocol())];
        if let Some(ca) = &self.ca {
            props.push(format!("ssl.ca.location={}", ca.display()));
        }
        if let Some((cert, key)) = &self.client_cert {
            props.push(format!("ssl.certificate.location={}", cert.display()));
            props.push(format!("ssl.key.location={}", key.display()));
        }
        if self.tls() {
            let algorithm = if self.no_hostname_check { "none" } else { "https" };
            props.push(format!("ssl.endpoint.identification.algorithm={algorithm}"));
        }
        if let Some(m) = self.mechanism {
            props.push(format!("sasl.mechanisms={}", m.name()));
        }
        if let Some(u) = &self.username {
            props.push(format!("sasl.username={u}"));
        }
        if let Some(p) = &self.password {
            props.push(format!("sasl.password={p}"));
        }
        props
    }

    fn probe_args(&self) -> Vec<String> {
        let mut args = vec!["--protocol".to_string(), self.protocol().to_string()];
        let mut push = |k: &str, v: &str| {
            args.push(k.to_string());
            args.push(v.to_string());
        };
        if let Some(ca) = &self.ca {
            push("--ca", &ca.display().to_string());
        }
        if let Some((cert, key)) = &self.client_cert {
            push("--cert", &cert.display().to_string());
            push("--key", &key.display().to_string());
        }
        if let Some(m) = self.mechanism {
            push("--mechanism", m.name());
        }
        if let Some(u) = &self.username {
            push("--username", u);
        }
        if let Some(p) = &self.password {
            push("--password", p);
        }
        if let Some((region, c)) = &self.iam {
            push("--iam-region", region);
            push("--iam-access-key-id", &c.access_key_id);
            push("--iam-secret-access-key", &c.secret_access_key);
            if let Some(t) = &c.session_token {
                push("--iam-session-token", t);
            }
        }
        if let Some(t) = &self.oauth_token {
            push("--oauth-token", t);
        }
        if self.no_hostname_check {
            args.push("--no-hostname-check".to_string());
        }
        args
    }
}

/// What [`probe`] saw.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub ok: bool,
    /// `host:port` of every broker in the metadata, sorted.
    pub brokers: Vec<String>,
    /// Successful metadata requests.
    pub metadata_calls: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The client's error callbacks and warning/error logs, in order (they name the broker's
    /// error message, e.g. `Authentication failed: Invalid username or password`).
    pub errors: Vec<String>,
    /// The script's stdout and stderr.
    pub output: String,
}

impl ProbeResult {
    /// `error` and `errors` as one text, for `contains` checks.
    pub fn error_text(&self) -> String {
        let mut text = self.error.clone().unwrap_or_default();
        for e in &self.errors {
            text.push('\n');
            text.push_str(e);
        }
        text
    }

    /// Panics with the output unless the probe succeeded.
    #[track_caller]
    pub fn assert_ok(&self) -> &ProbeResult {
        assert!(self.ok, "the client failed: {}\n{}", self.error_text(), self.output);
        self
    }

    /// Panics unless the probe failed with `needle` somewhere in its errors.
    #[track_caller]
    pub fn assert_failed_with(&self, needle: &str) -> &ProbeResult {
        assert!(!self.ok, "the client succeeded but should have failed with {needle:?}:\n{}", self.output);
        assert!(self.error_text().contains(needle), "expected {needle:?} in the errors:\n{}", self.error_text());
        self
    }
}

/// Connects `client` to `bootstrap` with `security` and fetches metadata once.
pub fn probe(client: Client, bootstrap: &str, security: &ClientSecurity) -> ProbeResult {
    run_probe(client, bootstrap, security, None)
}

/// Like [`probe`], keeping the client and fetching metadata every 0.5 s for `hold` (so that its
/// connections live through session expiry / re-authentication). Fails if any fetch fails after
/// the first success.
pub fn probe_holding(client: Client, bootstrap: &str, security: &ClientSecurity, hold: Duration) -> ProbeResult {
    run_probe(client, bootstrap, security, Some(hold))
}

fn run_probe(client: Client, bootstrap: &str, security: &ClientSecurity, hold: Option<Duration>) -> ProbeResult {
    let script = crate::client_script("probe.py");
    let mut cmd = Command::new(crate::python_bin());
    cmd.arg(script).args(["--bootstrap", bootstrap, "--client", client.name(), "--timeout", "15"]);
    cmd.args(security.probe_args());
    if let Some(hold) = hold {
        cmd.args(["--hold", &format!("{:.3}", hold.as_secs_f64())]);
    }
    cmd.env("PYTHONUNBUFFERED", "1").env("PYTHONDONTWRITEBYTECODE", "1");
    let output = crate::run_with_timeout(cmd, Duration::from_secs(60) + hold.unwrap_or_default());
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{}", String::from_utf8_lossy(&output.stderr));
    let Some(v) = stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()) else {
        return ProbeResult {
            ok: false,
            brokers: Vec::new(),
            metadata_calls: 0,
            error: Some(format!("probe.py printed no result ({})", output.status)),
            errors: Vec::new(),
            output: text,
        };
    };
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    ProbeResult {
        ok: v["ok"] == true && output.status.success(),
        brokers: strings("brokers"),
        metadata_calls: v["metadata_calls"].as_u64().unwrap_or_default(),
        error: v["error"].as_str().map(str::to_string),
        errors: strings("errors"),
        output: text,
    }
}

/// `kcat -L` (metadata list) against `bootstrap` with `security` (kcat's librdkafka is Debian's,
/// 2.0.2), waiting at most 5 s for metadata. kcat cannot parse Tansu's own ApiVersions response:
/// put it behind a front end with `normalize_api_versions`.
pub fn kcat_metadata(bootstrap: &str, security: &ClientSecurity) -> Output {
    kcat_metadata_within(bootstrap, security, Duration::from_secs(5))
}

/// Like [`kcat_metadata`], giving up after `timeout` (`-m`): a failing kcat retries until then.
pub fn kcat_metadata_within(bootstrap: &str, security: &ClientSecurity, timeout: Duration) -> Output {
    let wait = timeout.as_secs().max(1).to_string();
    let mut args: Vec<String> = vec!["-L".into(), "-b".into(), bootstrap.into(), "-m".into(), wait];
    for p in security.librdkafka_properties() {
        args.push("-X".into());
        args.push(p);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::kcat_with_timeout(&args, timeout + Duration::from_secs(30))
}
