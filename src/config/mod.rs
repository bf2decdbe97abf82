//! Every option of the sidecar: command-line flags, `KAFKA_SIDECAR_*` environment variables and an
//! optional TOML file, merged in that order of precedence and validated once into a typed
//! [`Config`]. Settings are gathered as text and parsed here, so that every problem — a value of
//! the wrong type included — is reported together, each naming the setting and why.
//!
//! `sources` reads the environment and the file and merges them; `effective` prints a valid
//! configuration back as a file, for `--check-config`.

mod effective;
mod model;
mod settings;
mod sources;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;

pub use model::*;
pub use settings::Settings;

/// Most runtime worker threads `--worker-threads` accepts.
const MAX_WORKER_THREADS: usize = 64;

/// What a port setting must be.
const PORT: &str = "a port (0-65535)";
/// What a count setting must be.
const WHOLE_NUMBER: &str = "a whole number";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bootstrap_servers: Vec<String>,
    pub listen_host: IpAddr,
    pub bootstrap_port: u16,
    pub advertised: Advertised,
    pub admin_listen: SocketAddr,
    pub max_frame_bytes: usize,
    /// Largest frame held whole (rewritten responses, re-sendable admin requests, SASL).
    pub max_buffered_frame_bytes: usize,
    /// Most bytes held in whole frames over all connections at once.
    pub buffer_budget_bytes: usize,
    pub max_inflight: usize,
    /// Most client connections served at once.
    pub max_client_connections: usize,
    /// Close client connections idle this long (`None`: never).
    pub client_idle_timeout: Option<Duration>,
    pub upstream: UpstreamConfig,
    pub sockets: SocketOptions,
    pub metadata_refresh: Duration,
    pub drain_timeout: Duration,
    /// Time between the signal and the start of draining, spent serving while not ready.
    pub shutdown_delay: Duration,
    pub admin_retry: RetryPolicy,
    /// Warm broker connections and the per-broker connect-rate limit.
    pub pool: PoolConfig,
    /// TLS towards brokers, when enabled.
    pub tls: Option<TlsSettings>,
    /// SASL towards brokers, when enabled.
    pub sasl: Option<SaslConfig>,
    /// TLS on the Kafka listeners, when enabled.
    pub listener_tls: Option<ListenerTlsSettings>,
    /// How clients authenticate to the listeners.
    pub client_auth: ClientAuthSettings,
    /// Worker threads of the runtime.
    pub worker_threads: usize,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// Every invalid setting, each with the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|(k, v)| format!("  --{k}: {}", v.trim_end().replace('\n', "\n    "))).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The setting (its long flag name) and what is wrong with it.
    pub problems: Vec<(String, String)>,
}

/// Collects problems while settings are gathered and parsed one by one.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn push(&mut self, setting: &str, problem: impl Into<String>) {
        self.0.push((setting.to_owned(), problem.into()));
    }

    /// `value` parsed by `parse`, or `default` when not given; a value that does not parse is a
    /// problem, and `default` stands in for it so that later checks still run.
    fn value<T>(
        &mut self,
        setting: &str,
        value: &Option<String>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let Some(text) = value else {
            return default;
        };
        parse(text).unwrap_or_else(|problem| {
            self.push(setting, problem);
            default
        })
    }

    /// A number setting; `what` says what it must be, e.g. [`PORT`].
    fn number<T: FromStr>(&mut self, setting: &str, value: &Option<String>, default: T, what: &str) -> T {
        self.value(setting, value, default, |text| text.trim().parse().map_err(|_| format!("{text:?} is not {what}")))
    }

    fn duration(&mut self, setting: &str, value: &Option<String>, default: Duration) -> Duration {
        self.value(setting, value, default, parse_duration)
    }

    fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() { Ok(value) } else { Err(ConfigError { problems: self.0 }) }
    }
}

impl Config {
    /// The configuration from `flags` laid over the `KAFKA_SIDECAR_*` variables (read through
    /// `env`) laid over the file named by `--config`. Problems with the file, the environment and
    /// every setting are reported together.
    pub fn load(flags: Settings, env: impl Fn(&str) -> Option<OsString>) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let settings = sources::gather(flags, &env, &mut problems);
        match Config::from_settings(settings) {
            Ok(config) => problems.into_result(config),
            Err(invalid) => {
                problems.0.extend(invalid.problems);
                Err(ConfigError { problems: problems.0 })
            }
        }
    }

    /// Validates merged settings.
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let mut p = Problems::default();
        let tls_files = [&s.tls_ca_file, &s.tls_cert_file, &s.tls_key_file];
        let tls_flag = p.value("tls", &s.tls, false, |text| match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("{text:?} is not true or false")),
        });
        let tls = (tls_flag || tls_files.iter().any(|f| f.is_some())).then(|| TlsSettings {
            ca_file: s.tls_ca_file.as_ref().map(PathBuf::from),
            client_cert_file: s.tls_cert_file.as_ref().map(PathBuf::from),
            client_key_file: s.tls_key_file.as_ref().map(PathBuf::from),
        });
        if s.tls_cert_file.is_some() != s.tls_key_file.is_some() {
            p.push("tls-cert-file", "a client certificate needs both --tls-cert-file and --tls-key-file");
        }
        let sasl = sasl_config(&s, &mut p);
        let listener_tls = match (&s.listener_tls_cert_file, &s.listener_tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(ListenerTlsSettings {
                cert_file: cert_file.into(),
                key_file: key_file.into(),
                client_ca_file: s.listener_tls_client_ca.as_ref().map(PathBuf::from),
            }),
            (None, None) => None,
            _ => {
                p.push("listener-tls-cert-file", "listener TLS needs both a certificate and a key file");
                None
            }
        };

        // Commas separate servers wherever the list comes from.
        let bootstrap_servers: Vec<String> = s
            .bootstrap_servers
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if bootstrap_servers.is_empty() {
            p.push("bootstrap-server", "at least one host:port is required");
        }
        for server in &bootstrap_servers {
            let valid =
                server.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                p.push("bootstrap-server", format!("{server:?} is not host:port"));
            }
        }
        let listen_host = p.value("listen-host", &s.listen_host, IpAddr::from([127, 0, 0, 1]), |text| {
            text.parse().map_err(|_| format!("{text:?} is not an IP address"))
        });
        let client_auth = ClientAuthSettings {
            sasl_credentials: s.listener_sasl_credentials.as_ref().map(PathBuf::from),
            allow_unauthenticated_remote_clients: p.value(
                "insecure-allow-unauthenticated-remote-clients",
                &s.insecure_allow_unauthenticated_remote_clients,
                false,
                parse_bool,
            ),
        };
        if s.listener_tls_client_ca.is_some() && listener_tls.is_none() {
            p.push(
                "listener-tls-client-ca",
                "needs listener TLS: --listener-tls-cert-file and --listener-tls-key-file",
            );
        }
        let identity = broker_identity(sasl.as_ref(), tls.as_ref());
        let client_ca = listener_tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        let clients_authenticate = client_ca || client_auth.sasl_credentials.is_some();
        if let Some(identity) = borrowed_identity(listen_host, identity, clients_authenticate)
            && !client_auth.allow_unauthenticated_remote_clients
        {
            p.push("listen-host", lent_identity_problem(listen_host, identity));
        }
        let bootstrap_port = p.number("bootstrap-port", &s.bootstrap_port, 9092u16, PORT);
        let port_base = p.number("broker-port-base", &s.broker_port_base, 9100u16, PORT);
        let advertised_host = s
            .advertised_host
            .unwrap_or_else(|| if listen_host.is_unspecified() { "127.0.0.1".into() } else { listen_host.to_string() });
        if advertised_host.is_empty() || advertised_host.len() > i16::MAX as usize {
            p.push("advertised-host", "must be a non-empty host name");
        }
        let admin_listen = p.value("admin-listen", &s.admin_listen, SocketAddr::from(([0, 0, 0, 0], 9080)), |text| {
            text.parse().map_err(|_| format!("{text:?} is not ip:port"))
        });
        let max_frame_bytes = p.number("max-frame-bytes", &s.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES, WHOLE_NUMBER);
        if max_frame_bytes < 1024 || max_frame_bytes > i32::MAX as usize {
            p.push("max-frame-bytes", format!("{max_frame_bytes} is outside 1024..=2147483647"));
        }
        let max_buffered_frame_bytes =
            p.number("max-buffered-frame-bytes", &s.max_buffered_frame_bytes, 16usize << 20, WHOLE_NUMBER);
        let buffer_budget_bytes = p.number("buffer-budget-bytes", &s.buffer_budget_bytes, 64usize << 20, WHOLE_NUMBER);
        if max_buffered_frame_bytes < 1024 || max_buffered_frame_bytes > i32::MAX as usize {
            p.push("max-buffered-frame-bytes", format!("{max_buffered_frame_bytes} is outside 1024..=2147483647"));
        }
        if buffer_budget_bytes < max_buffered_frame_bytes || buffer_budget_bytes > u32::MAX as usize {
            p.push(
                "buffer-budget-bytes",
                format!("{buffer_budget_bytes} must be at least --max-buffered-frame-bytes and at most 4294967295"),
            );
        }
        let max_inflight = p.number("max-inflight", &s.max_inflight, 1024usize, WHOLE_NUMBER);
        if max_inflight == 0 {
            p.push("max-inflight", "must be at least 1");
        }
        let max_client_connections =
            p.number("max-client-connections", &s.max_client_connections, 10_000usize, WHOLE_NUMBER);
        if max_client_connections == 0 {
            p.push("max-client-connections", "must be at least 1");
        }
        let client_idle_timeout = p.duration("client-idle-timeout", &s.client_idle_timeout, Duration::ZERO);
        let connect_timeout = p.duration("connect-timeout", &s.connect_timeout, Duration::from_secs(5));
        let connect_backoff = p.duration("connect-backoff", &s.connect_backoff, Duration::from_millis(100));
        let connect_attempts = p.number("connect-attempts", &s.connect_attempts, 3u32, WHOLE_NUMBER);
        if connect_attempts == 0 {
            p.push("connect-attempts", "must be at least 1");
        }
        let keepalive = Keepalive {
            idle: p.duration("keepalive-idle", &s.keepalive_idle, Duration::from_secs(60)),
            interval: p.duration("keepalive-interval", &s.keepalive_interval, Duration::from_secs(10)),
            count: p.number("keepalive-count", &s.keepalive_count, 3u32, WHOLE_NUMBER),
        };
        if keepalive.idle < Duration::from_secs(1) || keepalive.interval < Duration::from_secs(1) {
            p.push("keepalive-idle", "keepalive idle and interval must be at least 1s");
        }
        if keepalive.count == 0 {
            p.push("keepalive-count", "must be at least 1");
        }
        let user_timeout = p.duration("user-timeout", &s.user_timeout, Duration::from_secs(30));
        let metadata_refresh = p.duration("metadata-refresh", &s.metadata_refresh, Duration::from_secs(30));
        if metadata_refresh < Duration::from_millis(100) {
            p.push("metadata-refresh", "must be at least 100ms");
        }
        let shutdown_delay = p.duration("shutdown-delay", &s.shutdown_delay, Duration::ZERO);
        let drain_timeout = p.duration("drain-timeout", &s.drain_timeout, Duration::from_secs(25));
        let admin_retry = RetryPolicy {
            initial_backoff: p.duration("admin-retry-backoff", &s.admin_retry_backoff, Duration::from_millis(5)),
            max_backoff: p.duration("admin-retry-backoff-max", &s.admin_retry_backoff_max, Duration::from_secs(1)),
            budget: p.duration("admin-retry-budget", &s.admin_retry_budget, Duration::from_secs(30)),
        };
        if admin_retry.initial_backoff.is_zero() || admin_retry.initial_backoff > admin_retry.max_backoff {
            p.push("admin-retry-backoff", "must be above 0 and at most --admin-retry-backoff-max");
        }
        let pool = PoolConfig {
            size: p.number("pool-size", &s.pool_size, 2usize, WHOLE_NUMBER),
            max_idle: p.number("pool-max-idle", &s.pool_max_idle, 8usize, WHOLE_NUMBER),
            idle_lifetime: p.duration("pool-idle-lifetime", &s.pool_idle_lifetime, Duration::from_secs(300)),
            refill_backoff: p.duration("pool-refill-backoff", &s.pool_refill_backoff, Duration::from_millis(500)),
            connect_rate: p.number("broker-connect-rate", &s.broker_connect_rate, 20u32, WHOLE_NUMBER),
        };
        if pool.idle_lifetime < Duration::from_secs(1) {
            p.push("pool-idle-lifetime", "must be at least 1s");
        }
        if pool.refill_backoff.is_zero() {
            p.push("pool-refill-backoff", "must be above 0");
        }
        if pool.connect_rate == 0 {
            p.push("broker-connect-rate", "must be at least 1");
        }
        let worker_threads = p.number("worker-threads", &s.worker_threads, 1usize, WHOLE_NUMBER);
        if !(1..=MAX_WORKER_THREADS).contains(&worker_threads) {
            p.push("worker-threads", format!("{worker_threads} is outside 1..={MAX_WORKER_THREADS}"));
        }
        let log_format = p.value("log-format", &s.log_format, LogFormat::Human, one_of);

        p.into_result(Config {
            bootstrap_servers,
            listen_host,
            bootstrap_port,
            advertised: Advertised { host: advertised_host, port_base },
            admin_listen,
            max_frame_bytes,
            max_buffered_frame_bytes,
            buffer_budget_bytes,
            max_inflight,
            max_client_connections,
            client_idle_timeout: (!client_idle_timeout.is_zero()).then_some(client_idle_timeout),
            upstream: UpstreamConfig { connect_timeout, connect_attempts, connect_backoff },
            sockets: SocketOptions { keepalive, user_timeout: (!user_timeout.is_zero()).then_some(user_timeout) },
            metadata_refresh,
            drain_timeout,
            shutdown_delay,
            admin_retry,
            pool,
            tls,
            sasl,
            listener_tls,
            client_auth,
            worker_threads,
            log_format,
            log_level: s.log_level.unwrap_or_else(|| "info".into()),
        })
    }
}

/// The SASL settings, when a mechanism is given; problems go to `p`.
fn sasl_config(s: &Settings, p: &mut Problems) -> Option<SaslConfig> {
    let name = s.sasl_mechanism.as_deref()?;
    let Some(mechanism) = Mechanism::parse(name) else {
        p.push("sasl-mechanism", format!("{name:?} is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM"));
        return None;
    };
    if mechanism == Mechanism::AwsMskIam {
        let region = s
            .aws_region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok());
        let Some(region) = region.filter(|r| !r.is_empty()) else {
            p.push("aws-region", "AWS_MSK_IAM needs the cluster's region (or AWS_REGION)");
            return None;
        };
        return Some(SaslConfig { mechanism, username: String::new(), password: Secret(String::new()), region });
    }
    let password = match (&s.sasl_password, &s.sasl_password_file) {
        (Some(password), _) => Some(password.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_owned()),
            Err(e) => {
                p.push("sasl-password-file", format!("cannot read {path}: {e}"));
                None
            }
        },
        (None, None) => {
            p.push("sasl-password", format!("{} needs a password (or --sasl-password-file)", mechanism.name()));
            None
        }
    };
    let Some(username) = s.sasl_username.clone().filter(|u| !u.is_empty()) else {
        p.push("sasl-username", format!("{} needs a user name", mechanism.name()));
        return None;
    };
    Some(SaslConfig { mechanism, username, password: Secret(password?), region: String::new() })
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

/// One of the values of `T`, as clap names them (`human`, `json`).
fn one_of<T: ValueEnum>(text: &str) -> Result<T, String> {
    T::from_str(text.trim(), false).map_err(|_| {
        let names: Vec<String> =
            T::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|v| v.get_name().to_owned()).collect();
        match names.split_last() {
            Some((last, [])) => format!("{text:?} is not {last}"),
            Some((last, rest)) => format!("{text:?} is not {} or {last}", rest.join(", ")),
            None => format!("{text:?} is not a value"),
        }
    })
}

/// Parses a duration with a unit as humantime reads it: "250ms", "30s", "1m30s", "1h 30m". A bare
/// number is refused (is 1500 seconds or milliseconds?), except `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let bare_number =
        trimmed.contains(|c: char| c.is_ascii_digit()) && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.');
    if bare_number {
        if trimmed.chars().all(|c| c == '0' || c == '.') {
            return Ok(Duration::ZERO);
        }
        return Err(format!("{text:?} has no unit: write {trimmed}ms or {trimmed}s"));
    }
    let duration = humantime::parse_duration(trimmed)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 30s or 1m30s ({e})"))?;
    // Longer than u64 milliseconds is surely a mistake, and would overflow timer arithmetic.
    if duration.as_millis() > u128::from(u64::MAX) {
        return Err(format!("{text:?} is too long a duration"));
    }
    Ok(duration)
}
