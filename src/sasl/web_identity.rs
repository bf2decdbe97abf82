//! Web identity credentials (EKS IRSA) for AWS_MSK_IAM.
//!
//! A pod with IRSA has `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE` (a projected
//! service-account JWT the kubelet rotates) instead of static keys. The sidecar trades the token
//! for temporary credentials with STS `AssumeRoleWithWebIdentity` — an unsigned HTTPS POST to the
//! regional endpoint `https://sts.<region>.amazonaws.com/` — and caches them until five minutes
//! before they expire; every refresh reads the token file again. Static keys in the environment
//! (`AWS_ACCESS_KEY_ID`) keep priority, as in the AWS SDKs.
//!
//! `AWS_ENDPOINT_URL_STS` (or `AWS_ENDPOINT_URL`) overrides the endpoint, `AWS_CA_BUNDLE` the
//! trusted CAs (system roots otherwise); the TLS configuration is built as for the brokers, with
//! host name verification. HTTP is kept minimal: HTTP/1.1, `Connection: close`, a bounded answer
//! and an overall timeout. Error messages name the cause and never carry the token or secrets.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SecureRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::iam::{AwsCredentials, uri_encode};
use super::{SaslError, Secret};
use crate::tls::{BrokerTls, TlsSettings};

/// Credentials are refreshed this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// After a failed refresh, cached credentials still valid this long are used meanwhile…
const STILL_USABLE: Duration = Duration::from_secs(60);
/// …and STS is asked again after this pause.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The whole STS exchange: connect, TLS, request and answer.
const STS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest STS answer accepted.
const MAX_RESPONSE: usize = 64 * 1024;
/// Largest token file accepted (service-account tokens are a few KiB).
const MAX_TOKEN_FILE: u64 = 64 * 1024;
/// Requested lifetime of the temporary credentials.
const SESSION_SECONDS: u32 = 3600;
const USER_AGENT: &str = concat!("kafka-sidecar/", env!("CARGO_PKG_VERSION"));

/// The credentials AWS_MSK_IAM signs with: static keys from the environment when
/// `AWS_ACCESS_KEY_ID` is set, else web identity when `AWS_ROLE_ARN` and
/// `AWS_WEB_IDENTITY_TOKEN_FILE` are.
pub async fn credentials(region: &str) -> Result<AwsCredentials, SaslError> {
    if env_var("AWS_ACCESS_KEY_ID").is_some() {
        return AwsCredentials::from_env();
    }
    match WebIdentitySettings::from_lookup(region, env_var)? {
        Some(settings) => provider(settings).credentials().await,
        None => Err(SaslError::Credentials(
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set for AWS_MSK_IAM, or AWS_ROLE_ARN and \
             AWS_WEB_IDENTITY_TOKEN_FILE for web identity (IRSA)"
                .into(),
        )),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The process-wide provider for `settings` (the environment does not change while running).
fn provider(settings: WebIdentitySettings) -> Arc<WebIdentityProvider> {
    static PROVIDER: std::sync::Mutex<Option<Arc<WebIdentityProvider>>> = std::sync::Mutex::new(None);
    let mut slot = PROVIDER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match slot.as_ref() {
        Some(existing) if existing.settings == settings => existing.clone(),
        _ => {
            let created = Arc::new(WebIdentityProvider::new(settings, Arc::new(SystemTime::now)));
            *slot = Some(created.clone());
            created
        }
    }
}

/// Where and how to assume the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentitySettings {
    pub role_arn: String,
    pub token_file: PathBuf,
    /// `AWS_ROLE_SESSION_NAME`; `None`: `kafka-sidecar-<random>`, chosen once per process.
    pub session_name: Option<String>,
    pub endpoint: Endpoint,
    /// `AWS_CA_BUNDLE`; `None`: the system trust store.
    pub ca_bundle: Option<PathBuf>,
}

impl WebIdentitySettings {
    /// The settings from the variables `var` returns, for the cluster's `region`; `None` when
    /// neither `AWS_ROLE_ARN` nor `AWS_WEB_IDENTITY_TOKEN_FILE` is set.
    pub fn from_lookup(region: &str, var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, SaslError> {
        let (role_arn, token_file) = match (var("AWS_ROLE_ARN"), var("AWS_WEB_IDENTITY_TOKEN_FILE")) {
            (None, None) => return Ok(None),
            (Some(role_arn), Some(token_file)) => (role_arn, token_file),
            (Some(_), None) => {
                return Err(credentials_error("AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE is not"));
            }
            (None, Some(_)) => {
                return Err(credentials_error("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not"));
            }
        };
        let endpoint = match ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"].into_iter().find_map(|n| Some((n, var(n)?))) {
            Some((name, url)) => Endpoint::parse(&url).ok_or_else(|| {
                credentials_error(format!("{name} must be an https://host[:port][/path] URL, not {url:?}"))
            })?,
            None => Endpoint::regional(region),
        };
        Ok(Some(WebIdentitySettings {
            role_arn,
            token_file: PathBuf::from(token_file),
            session_name: var("AWS_ROLE_SESSION_NAME"),
            endpoint,
            ca_bundle: var("AWS_CA_BUNDLE").map(PathBuf::from),
        }))
    }
}

/// An HTTPS endpoint: host (verified against the certificate), port and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    /// STS in `region`: `sts.<region>.amazonaws.com` (`.amazonaws.com.cn` in China).
    pub fn regional(region: &str) -> Endpoint {
        let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
        Endpoint { host: format!("sts.{region}.{suffix}"), port: 443, path: "/".into() }
    }

    /// `https://host[:port][/path]`; IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Option<Endpoint> {
        let rest = url.trim().strip_prefix("https://")?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                (host, port.parse().ok().filter(|p| *p != 0)?)
            }
            _ => (authority, 443),
        };
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':');
        if host.is_empty() || !host.bytes().all(valid) || path.contains(['?', '#', ' ']) {
            return None;
        }
        Some(Endpoint { host: host.to_owned(), port, path: path.to_owned() })
    }

    /// `host[:port]`, as in the `Host` header.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 443 { host } else { format!("{host}:{}", self.port) }
    }

    fn url(&self) -> String {
        format!("https://{}{}", self.authority(), self.path)
    }
}

/// Temporary credentials and when they expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temporary {
    pub credentials: AwsCredentials,
    pub expiration: SystemTime,
}

/// The current time; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Assumes the role with the web identity token and caches the temporary credentials.
pub struct WebIdentityProvider {
    settings: WebIdentitySettings,
    session_name: String,
    clock: Clock,
    state: Arc<tokio::sync::Mutex<CacheState>>,
}

impl WebIdentityProvider {
    pub fn new(settings: WebIdentitySettings, clock: Clock) -> Self {
        let session_name = settings.session_name.clone().unwrap_or_else(random_session_name);
        WebIdentityProvider { settings, session_name, clock, state: Arc::default() }
    }

    /// Cached credentials, or fresh ones from STS when they are due for renewal.
    pub async fn credentials(&self) -> Result<AwsCredentials, SaslError> {
        let settings = self.settings.clone();
        let session_name = self.session_name.clone();
        self.credentials_with(move |token| async move { assume_role(&settings, &session_name, &token).await }).await
    }

    /// [`Self::credentials`] with `fetch` trading a token for credentials. The refresh runs as
    /// its own task: a caller that gives up (a connect timeout) does not cancel it, and callers
    /// arriving meanwhile wait for its result instead of asking STS again.
    pub async fn credentials_with<F, Fut>(&self, fetch: F) -> Result<AwsCredentials, SaslError>
    where
        F: FnOnce(String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Temporary, SaslError>> + Send,
    {
        let mut state = self.state.clone().lock_owned().await;
        if let Some(credentials) = state.usable((self.clock)()) {
            return Ok(credentials);
        }
        let token_file = self.settings.token_file.clone();
        let clock = self.clock.clone();
        let refresh = tokio::spawn(async move {
            let fetched = match read_token(&token_file).await {
                Ok(token) => fetch(token).await,
                Err(error) => Err(error),
            };
            state.record(fetched, clock())
        });
        refresh.await.map_err(|_| credentials_error("the web identity credential refresh was aborted"))?
    }
}

/// What the cache holds between connections.
#[derive(Debug, Default)]
struct CacheState {
    cached: Option<Temporary>,
    /// Set after a failed refresh while the cached credentials still work: no new attempt
    /// before then.
    retry_at: Option<SystemTime>,
}

impl CacheState {
    /// Credentials to use at `now` without asking STS.
    fn usable(&self, now: SystemTime) -> Option<AwsCredentials> {
        let cached = self.cached.as_ref()?;
        let fresh = now + REFRESH_BEFORE < cached.expiration;
        let waiting = self.retry_at.is_some_and(|at| now < at) && now + STILL_USABLE < cached.expiration;
        (fresh || waiting).then(|| cached.credentials.clone())
    }

    /// Takes the outcome of a refresh finished at `now`.
    fn record(&mut self, fetched: Result<Temporary, SaslError>, now: SystemTime) -> Result<AwsCredentials, SaslError> {
        match fetched {
            Ok(fresh) => {
                let valid_for = fresh.expiration.duration_since(now).unwrap_or_default();
                tracing::info!(valid_for_s = valid_for.as_secs(), "web identity credentials obtained from STS");
                let credentials = fresh.credentials.clone();
                self.cached = Some(fresh);
                self.retry_at = None;
                Ok(credentials)
            }
            Err(error) => match &self.cached {
                Some(cached) if now + STILL_USABLE < cached.expiration => {
                    tracing::warn!(%error, "cannot renew the web identity credentials; using the current ones meanwhile");
                    self.retry_at = Some(now + RETRY_AFTER);
                    Ok(cached.credentials.clone())
                }
                _ => Err(error),
            },
        }
    }
}

fn credentials_error(message: impl Into<String>) -> SaslError {
    SaslError::Credentials(message.into())
}

fn random_session_name() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("system randomness");
    format!("kafka-sidecar-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The token file's contents, re-read on every refresh (the kubelet rotates it).
async fn read_token(path: &std::path::Path) -> Result<String, SaslError> {
    let read = async {
        let file = tokio::fs::File::open(path).await?;
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE + 1).read_to_end(&mut bytes).await?;
        Ok::<_, std::io::Error>(bytes)
    };
    let bytes = read
        .await
        .map_err(|e| credentials_error(format!("cannot read the web identity token file {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(credentials_error(format!(
            "the web identity token file {} is larger than {MAX_TOKEN_FILE} bytes",
            path.display()
        )));
    }
    let token = String::from_utf8(bytes)
        .map_err(|_| credentials_error(format!("the web identity token file {} is not text", path.display())))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(credentials_error(format!("the web identity token file {} is empty", path.display())));
    }
    Ok(token.to_owned())
}

/// STS `AssumeRoleWithWebIdentity` with `token`: the temporary credentials, or why not.
async fn assume_role(settings: &WebIdentitySettings, session_name: &str, token: &str) -> Result<Temporary, SaslError> {
    let endpoint = &settings.endpoint;
    let failed = |why: String| {
        credentials_error(format!(
            "STS AssumeRoleWithWebIdentity for {} at {} failed: {}",
            settings.role_arn,
            endpoint.url(),
            redact(&why, token)
        ))
    };
    let duration = SESSION_SECONDS.to_string();
    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", settings.role_arn.as_str()),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token),
        ("DurationSeconds", duration.as_str()),
    ];
    let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", uri_encode(v))).collect();
    let exchange = post(endpoint, settings.ca_bundle.clone(), body.join("&"));
    let (status, body) = tokio::time::timeout(STS_TIMEOUT, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {STS_TIMEOUT:?}")))?
        .map_err(failed)?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        return Err(failed(match parse_error(&text) {
            Some(error) => format!("HTTP {status}: {error}"),
            None => format!("HTTP {status} without an STS error document"),
        }));
    }
    parse_credentials(&text, SystemTime::now()).map_err(failed)
}

/// Replaces every occurrence of `secret` in `text`.
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() { text.to_owned() } else { text.replace(secret, "<redacted>") }
}

/// One HTTP/1.1 POST of a form over TLS; the status code and body.
async fn post(endpoint: &Endpoint, ca_bundle: Option<PathBuf>, form: String) -> Result<(u16, Vec<u8>), String> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", endpoint.authority()))?;
    let tls =
        BrokerTls::new(TlsSettings { ca_file: ca_bundle, ..TlsSettings::default() }).map_err(|e| e.to_string())?;
    let mut stream = tls.connect(&endpoint.host, tcp).await.map_err(|e| e.to_string())?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{form}",
        endpoint.path,
        endpoint.authority(),
        form.len()
    );
    let io = |e: std::io::Error| format!("HTTP exchange failed: {e}");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            // A server closing without TLS close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => break,
            Err(e) => return Err(io(e)),
        }
        if response.len() > MAX_RESPONSE {
            return Err(format!("the answer is larger than {MAX_RESPONSE} bytes"));
        }
    }
    parse_http_response(&response)
}

/// Status code and body of a complete HTTP/1.1 response (Content-Length, chunked, or to EOF).
fn parse_http_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("incomplete HTTP answer")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "malformed HTTP header")?;
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("malformed HTTP status line {:?}", status_line.chars().take(80).collect::<String>()))?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        return dechunk(body).map(|body| (status, body)).ok_or_else(|| "malformed chunked HTTP body".into());
    }
    match header("content-length") {
        Some(len) => {
            let len: usize = len.parse().map_err(|_| "malformed Content-Length")?;
            let body = body.get(..len).ok_or("HTTP body shorter than its Content-Length")?;
            Ok((status, body.to_vec()))
        }
        None => Ok((status, body.to_vec())),
    }
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// The temporary credentials in an `AssumeRoleWithWebIdentityResponse`; `now` checks that
/// they have not expired already.
fn parse_credentials(xml: &str, now: SystemTime) -> Result<Temporary, String> {
    let section = element(xml, "Credentials").ok_or("the STS answer has no <Credentials>")?;
    let field = |name: &str| -> Result<String, String> {
        let value = element(section, name).map(unescape).unwrap_or_default();
        if value.is_empty() { Err(format!("the STS answer has no <{name}>")) } else { Ok(value) }
    };
    let expiration_text = field("Expiration")?;
    let expiration = parse_iso8601(&expiration_text)
        .ok_or_else(|| format!("the STS answer has a malformed <Expiration> {expiration_text:?}"))?;
    if expiration <= now {
        return Err(format!("the STS credentials expired already ({expiration_text})"));
    }
    Ok(Temporary {
        credentials: AwsCredentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: Secret(field("SecretAccessKey")?),
            session_token: Some(Secret(field("SessionToken")?)),
        },
        expiration,
    })
}

/// `Code: Message` of an STS `<Error>` document.
fn parse_error(xml: &str) -> Option<String> {
    let error = element(xml, "Error")?;
    let code = element(error, "Code").map(unescape).filter(|c| !c.is_empty())?;
    let message = element(error, "Message").map(unescape).unwrap_or_default();
    let message: String = message.chars().take(500).collect();
    Some(if message.is_empty() { code } else { format!("{code}: {message}") })
}

/// The text between `<name>` (or `<name attributes…>`) and the next `</name>`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let mut from = 0;
    loop {
        let start = from + xml.get(from..)?.find(&open)? + open.len();
        let rest = xml.get(start..)?;
        match rest.bytes().next()? {
            b'>' | b'/' | b' ' | b'\t' | b'\r' | b'\n' => {
                let content_start = start + rest.find('>')? + 1;
                if xml.get(..content_start)?.ends_with("/>") {
                    return Some("");
                }
                let content = xml.get(content_start..)?;
                return content.find(&format!("</{name}>")).and_then(|end| content.get(..end));
            }
            // `<CodeX>` is not `<Code>`: look further.
            _ => from = start,
        }
    }
}

/// Decodes XML's predefined entities and numeric character references.
fn unescape(text: &str) -> String {
    let text = text.trim();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|end| *end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let ch = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let code = match entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => entity.strip_prefix('#')?.parse().ok()?,
                    };
                    char::from_u32(code)?
                }
            };
            Some((ch, end + 1))
        });
        match decoded {
            Some((ch, len)) => {
                out.push(ch);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An ISO-8601 / RFC 3339 UTC timestamp as STS writes `<Expiration>`:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub fn parse_iso8601(text: &str) -> Option<SystemTime> {
    let b = text.trim().as_bytes();
    let number = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|(at, sep)| b.get(*at) != Some(sep)) || !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = b.get(19..)?;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let zone = [*h1, *h2, *m1, *m2];
            if !zone.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let minutes = i64::from(zone[0] - b'0') * 600
                + i64::from(zone[1] - b'0') * 60
                + i64::from(zone[2] - b'0') * 10
                + i64::from(zone[3] - b'0');
            if *sign == b'+' { minutes * 60 } else { -minutes * 60 }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// As STS answers (the layout of AWS's documentation example), with an entity in the
    /// session token to check unescaping.
    const RESPONSE: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:orders:orders-app</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/orders-kafka/kafka-sidecar-0123456789abcdef</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:kafka-sidecar-0123456789abcdef</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE/Zm9v&amp;YmFy==</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-11-25T13:00:00Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <SourceIdentity>SourceIdentityValue</SourceIdentity>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    const ERROR: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>InvalidIdentityToken</Code>
    <Message>Couldn&apos;t verify the token: audience &quot;sts&quot; &lt;expected&gt;</Message>
  </Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"#;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2026-11-25T12:00:00Z.
    const NOON: u64 = 1_795_608_000;

    #[test]
    fn parses_the_credentials_of_an_sts_answer() {
        let temporary = parse_credentials(RESPONSE, at(NOON)).unwrap();
        assert_eq!(temporary.credentials.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(temporary.credentials.secret_access_key.0, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
        assert_eq!(
            temporary.credentials.session_token.as_ref().unwrap().0,
            "AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE/Zm9v&YmFy=="
        );
        assert_eq!(temporary.expiration, at(NOON + 3600));
        let shown = format!("{temporary:?}");
        assert!(!shown.contains("wJalr") && !shown.contains("AQoD"), "secrets stay out of Debug: {shown}");
    }

    #[test]
    fn incomplete_or_expired_answers_are_named() {
        assert_eq!(
            parse_credentials(RESPONSE, at(NOON + 3600)).unwrap_err(),
            "the STS credentials expired already (2026-11-25T13:00:00Z)"
        );
        let without = RESPONSE.replace("<AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>", "");
        assert_eq!(parse_credentials(&without, at(NOON)).unwrap_err(), "the STS answer has no <AccessKeyId>");
        let bad_date = RESPONSE.replace("2026-11-25T13:00:00Z", "tomorrow");
        assert_eq!(
            parse_credentials(&bad_date, at(NOON)).unwrap_err(),
            "the STS answer has a malformed <Expiration> \"tomorrow\""
        );
        assert_eq!(parse_credentials("<html>", at(NOON)).unwrap_err(), "the STS answer has no <Credentials>");
        let truncated = &RESPONSE[..RESPONSE.find("</SessionToken>").unwrap()];
        assert!(parse_credentials(truncated, at(NOON)).is_err());
    }

    #[test]
    fn parses_an_sts_error() {
        assert_eq!(
            parse_error(ERROR).unwrap(),
            "InvalidIdentityToken: Couldn't verify the token: audience \"sts\" <expected>"
        );
        assert_eq!(parse_error("<Error><Code>Throttling</Code></Error>").unwrap(), "Throttling");
        assert_eq!(parse_error("<ErrorResponse><Error><Code>"), None);
        assert_eq!(parse_error(RESPONSE), None);
    }

    #[test]
    fn elements_match_whole_names() {
        assert_eq!(element("<Codes>a</Codes><Code x=\"1\">b</Code>", "Code"), Some("b"));
        assert_eq!(element("<Code/>", "Code"), Some(""));
        assert_eq!(element("<Code>unterminated", "Code"), None);
        assert_eq!(element("<Code", "Code"), None);
        assert_eq!(unescape(" a &amp;&#65;&#x42; &bogus; & "), "a &AB &bogus; &");
    }

    #[test]
    fn parses_expiry_timestamps() {
        assert_eq!(parse_iso8601("2026-11-25T12:00:00Z"), Some(at(NOON)));
        assert_eq!(parse_iso8601("2026-11-25T12:00:00.123Z"), Some(at(NOON)));
        assert_eq!(parse_iso8601("2026-11-25T14:00:00+02:00"), Some(at(NOON)));
        assert_eq!(parse_iso8601("2026-11-25T11:30:00-00:30"), Some(at(NOON)));
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(parse_iso8601("2024-02-29T00:00:00Z"), Some(at(1_709_164_800)));
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T12:00:00",
            "2026-13-25T12:00:00Z",
            "2025-02-29T12:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T12:00:00.Z",
            "2026-11-25T12:00:00+0200",
            "1969-12-31T23:59:59Z",
            "20261125T120000Z",
            "2026-11-25T12:0a:00Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_http_answers() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 5\r\n\r\nhello, and more";
        assert_eq!(parse_http_response(plain).unwrap(), (200, b"hello".to_vec()));
        let chunked =
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked).unwrap(), (400, b"abcde".to_vec()));
        let to_eof = b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy";
        assert_eq!(parse_http_response(to_eof).unwrap(), (503, b"busy".to_vec()));
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab").is_err());
        assert!(parse_http_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::regional("eu-west-1").url(), "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(Endpoint::regional("cn-north-1").url(), "https://sts.cn-north-1.amazonaws.com.cn/");
        let local = Endpoint::parse("https://localhost:8443").unwrap();
        assert_eq!((local.host.as_str(), local.port, local.path.as_str()), ("localhost", 8443, "/"));
        assert_eq!(local.authority(), "localhost:8443");
        let v6 = Endpoint::parse("https://[::1]:9443/sts/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.path.as_str()), ("::1", 9443, "/sts/"));
        assert_eq!(v6.url(), "https://[::1]:9443/sts/");
        assert_eq!(Endpoint::parse("https://sts.example.com").unwrap().authority(), "sts.example.com");
        for bad in
            ["http://localhost:8443", "localhost:8443", "https://", "https://host:0", "https://a b", "https://h/?q"]
        {
            assert_eq!(Endpoint::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn settings_from_the_environment() {
        let lookup = |vars: &[(&str, &str)]| {
            let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            WebIdentitySettings::from_lookup("eu-west-1", move |name| vars.get(name).cloned())
        };
        assert_eq!(lookup(&[]).unwrap(), None);
        let role = ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/orders");
        let file = ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks.amazonaws.com/serviceaccount/token");
        let settings = lookup(&[role, file]).unwrap().unwrap();
        assert_eq!(settings.endpoint, Endpoint::regional("eu-west-1"));
        assert_eq!((settings.session_name, settings.ca_bundle), (None, None));
        let named = lookup(&[role, file, ("AWS_ROLE_SESSION_NAME", "orders-pod"), ("AWS_CA_BUNDLE", "/ca.pem")]);
        let named = named.unwrap().unwrap();
        assert_eq!(named.session_name.as_deref(), Some("orders-pod"));
        assert_eq!(named.ca_bundle, Some(PathBuf::from("/ca.pem")));
        let custom =
            lookup(&[role, file, ("AWS_ENDPOINT_URL", "https://a:1"), ("AWS_ENDPOINT_URL_STS", "https://b:2")]);
        assert_eq!(custom.unwrap().unwrap().endpoint.authority(), "b:2", "the STS-specific variable wins");

        let missing = lookup(&[role]).unwrap_err().to_string();
        assert!(missing.contains("AWS_WEB_IDENTITY_TOKEN_FILE is not"), "{missing}");
        let missing = lookup(&[file]).unwrap_err().to_string();
        assert!(missing.contains("AWS_ROLE_ARN is not"), "{missing}");
        let plain_http = lookup(&[role, file, ("AWS_ENDPOINT_URL_STS", "http://localhost:80")]).unwrap_err();
        assert!(plain_http.to_string().contains("AWS_ENDPOINT_URL_STS must be an https://"), "{plain_http}");
    }

    #[test]
    fn random_session_names_are_valid() {
        let name = random_session_name();
        assert!(name.starts_with("kafka-sidecar-") && name.len() == 30, "{name}");
        assert_ne!(name, random_session_name());
        let settings = |session_name: Option<&str>| WebIdentitySettings {
            role_arn: "arn".into(),
            token_file: "/token".into(),
            session_name: session_name.map(str::to_owned),
            endpoint: Endpoint::regional("eu-west-1"),
            ca_bundle: None,
        };
        let clock: Clock = Arc::new(SystemTime::now);
        assert_eq!(WebIdentityProvider::new(settings(Some("mine")), clock.clone()).session_name, "mine");
        assert!(WebIdentityProvider::new(settings(None), clock).session_name.starts_with("kafka-sidecar-"));
    }

    #[test]
    fn errors_never_carry_the_token() {
        assert_eq!(redact("token eyJhbGci.x.y is expired", "eyJhbGci.x.y"), "token <redacted> is expired");
        assert_eq!(redact("nothing", ""), "nothing");
    }

    /// A provider on a token file and a clock the test controls, and a fake STS that issues
    /// credentials named after the token and the call count, valid for an hour.
    struct Harness {
        provider: WebIdentityProvider,
        token_file: PathBuf,
        now: Arc<Mutex<SystemTime>>,
        calls: Arc<AtomicUsize>,
        tokens: Arc<Mutex<Vec<String>>>,
    }

    impl Harness {
        fn new(name: &str) -> Harness {
            let token_file = std::env::temp_dir().join(format!("web-identity-{name}-{}", std::process::id()));
            std::fs::write(&token_file, "token-1\n").unwrap();
            let now = Arc::new(Mutex::new(at(NOON)));
            let clock_now = now.clone();
            let settings = WebIdentitySettings {
                role_arn: "arn:aws:iam::123456789012:role/orders".into(),
                token_file: token_file.clone(),
                session_name: None,
                endpoint: Endpoint::regional("eu-west-1"),
                ca_bundle: None,
            };
            let provider = WebIdentityProvider::new(settings, Arc::new(move || *clock_now.lock().unwrap()));
            Harness { provider, token_file, now, calls: Arc::default(), tokens: Arc::default() }
        }

        fn advance(&self, by: Duration) {
            *self.now.lock().unwrap() += by;
        }

        /// Credentials through the fake STS, which fails when `fail` is set.
        async fn get(&self, fail: bool) -> Result<String, SaslError> {
            let (calls, tokens, now) = (self.calls.clone(), self.tokens.clone(), *self.now.lock().unwrap());
            let fetch = move |token: String| async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokens.lock().unwrap().push(token.clone());
                if fail {
                    return Err(credentials_error("STS unreachable"));
                }
                Ok(Temporary {
                    credentials: AwsCredentials {
                        access_key_id: format!("ASIA-{token}-{n}"),
                        secret_access_key: Secret("secret".into()),
                        session_token: Some(Secret("session".into())),
                    },
                    expiration: now + Duration::from_secs(3600),
                })
            };
            self.provider.credentials_with(fetch).await.map(|c| c.access_key_id)
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.token_file);
        }
    }

    #[tokio::test]
    async fn credentials_are_cached_until_five_minutes_before_expiry() {
        let h = Harness::new("cache");
        assert_eq!(h.get(false).await.unwrap(), "ASIA-token-1-1");
        h.advance(Duration::from_secs(3600 - 301));
        assert_eq!(h.get(false).await.unwrap(), "ASIA-token-1-1", "still more than 5 minutes left");
        assert_eq!(h.calls(), 1);

        // The kubelet rotated the token; the next refresh reads the new one.
        std::fs::write(&h.token_file, "token-2").unwrap();
        h.advance(Duration::from_secs(2));
        assert_eq!(h.get(false).await.unwrap(), "ASIA-token-2-2", "within 5 minutes of expiry: refreshed");
        assert_eq!(h.get(false).await.unwrap(), "ASIA-token-2-2");
        assert_eq!(*h.tokens.lock().unwrap(), ["token-1", "token-2"]);
    }

    #[tokio::test]
    async fn a_failed_renewal_keeps_valid_credentials_and_retries_later() {
        let h = Harness::new("renewal");
        assert_eq!(h.get(false).await.unwrap(), "ASIA-token-1-1");
        h.advance(Duration::from_secs(3600 - 200));
        assert_eq!(h.get(true).await.unwrap(), "ASIA-token-1-1", "STS down: the current credentials still work");
        assert_eq!(h.calls(), 2);
        h.advance(Duration::from_secs(10));
        assert_eq!(h.get(true).await.unwrap(), "ASIA-token-1-1");
        assert_eq!(h.calls(), 2, "no new attempt within the retry pause");
        h.advance(Duration::from_secs(25));
        assert_eq!(h.get(false).await.unwrap(), "ASIA-token-1-3", "retried after the pause");

        // Close to expiry, a failure is an error rather than soon-invalid credentials.
        h.advance(Duration::from_secs(3600 - 30));
        let error = h.get(true).await.unwrap_err();
        assert_eq!(error.to_string(), "no credentials: STS unreachable");
        assert_eq!(h.calls(), 4);
        h.advance(Duration::from_secs(1));
        assert!(h.get(true).await.is_err());
        assert_eq!(h.calls(), 5, "without usable credentials every attempt asks STS");
    }

    #[tokio::test]
    async fn token_file_problems_are_named() {
        let h = Harness::new("file");
        std::fs::write(&h.token_file, " \n").unwrap();
        let empty = h.get(false).await.unwrap_err().to_string();
        assert!(empty.ends_with(&format!("the web identity token file {} is empty", h.token_file.display())));
        std::fs::remove_file(&h.token_file).unwrap();
        let missing = h.get(false).await.unwrap_err().to_string();
        assert!(missing.contains("cannot read the web identity token file"), "{missing}");
        assert!(missing.contains("No such file"), "{missing}");
        assert_eq!(h.calls(), 0, "STS is not asked without a token");
    }

    /// Everything but the network: the STS call fails to connect, and says where it went.
    #[tokio::test]
    async fn unreachable_sts_is_named_without_the_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let settings = WebIdentitySettings {
            role_arn: "arn:aws:iam::123456789012:role/orders".into(),
            token_file: "/unused".into(),
            session_name: Some("s".into()),
            endpoint: Endpoint::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
            ca_bundle: None,
        };
        let error = assume_role(&settings, "s", "the-secret-token").await.unwrap_err().to_string();
        assert!(
            error.starts_with(&format!(
                "no credentials: STS AssumeRoleWithWebIdentity for arn:aws:iam::123456789012:role/orders at \
                 https://127.0.0.1:{port}/ failed: cannot connect to 127.0.0.1:{port}:"
            )),
            "{error}"
        );
        assert!(!error.contains("the-secret-token"));
    }

    #[tokio::test]
    async fn a_missing_ca_bundle_is_named() {
        // Connections complete in the backlog; nothing needs to accept them.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = WebIdentitySettings {
            role_arn: "arn:aws:iam::123456789012:role/orders".into(),
            token_file: "/unused".into(),
            session_name: Some("s".into()),
            endpoint: Endpoint::parse(&format!("https://localhost:{}", listener.local_addr().unwrap().port())).unwrap(),
            ca_bundle: Some("/nonexistent/ca.pem".into()),
        };
        let error = assume_role(&settings, "s", "t0ken").await.unwrap_err().to_string();
        assert!(error.contains("failed: cannot read CA bundle from /nonexistent/ca.pem"), "{error}");
    }
}
