//! Every option of the sidecar: command-line flags, `KAFKA_SIDECAR_*` environment variables and an
//! optional TOML file, merged in that order of precedence and validated once into a typed
//! [`Config`]. All problems are reported together, each naming the setting and why.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::admin_retry::RetryPolicy;
use crate::rewrite::Advertised;
use crate::sasl::{Mechanism, SaslConfig, Secret};
use crate::tls::{ListenerTlsSettings, TlsSettings};
use crate::upstream::{Keepalive, SocketOptions, UpstreamConfig};
use crate::wire::DEFAULT_MAX_FRAME_BYTES;

/// Most runtime worker threads `--worker-threads` accepts.
const MAX_WORKER_THREADS: usize = 64;

/// Raw settings as given by flags, environment or file, before validation.
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(name = "kafka-sidecar", version, about = "A protocol-aware Kafka proxy that runs beside an application")]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// TOML file with any of these settings (keys as the long flag names); flags and environment
    /// variables take precedence over it.
    #[arg(long, env = "KAFKA_SIDECAR_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Validate the settings, print them, and exit (0 when valid, 64 when not).
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,

    /// Kafka bootstrap server host:port; repeat the flag or separate with commas.
    #[arg(long = "bootstrap-server", env = "KAFKA_SIDECAR_BOOTSTRAP_SERVERS", value_delimiter = ',')]
    pub bootstrap_servers: Vec<String>,

    /// Address the Kafka listeners bind to [default: 127.0.0.1].
    #[arg(long, env = "KAFKA_SIDECAR_LISTEN_HOST")]
    pub listen_host: Option<String>,

    /// Port of the bootstrap listener that applications use as bootstrap.servers [default: 9092].
    #[arg(long, env = "KAFKA_SIDECAR_BOOTSTRAP_PORT")]
    pub bootstrap_port: Option<u16>,

    /// Broker node N is served on port broker-port-base + N [default: 9100].
    #[arg(long, env = "KAFKA_SIDECAR_BROKER_PORT_BASE")]
    pub broker_port_base: Option<u16>,

    /// Host name handed to clients in rewritten broker addresses [default: the listen host].
    #[arg(long, env = "KAFKA_SIDECAR_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,

    /// Address of the metrics and health endpoints [default: 0.0.0.0:9080].
    #[arg(long, env = "KAFKA_SIDECAR_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,

    /// Largest frame accepted from clients or brokers, in bytes [default: 104857600].
    #[arg(long, env = "KAFKA_SIDECAR_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Most client connections served at once, over all listeners; further clients wait in the
    /// listen backlog until one closes [default: 10000].
    #[arg(long, env = "KAFKA_SIDECAR_MAX_CLIENT_CONNECTIONS")]
    pub max_client_connections: Option<usize>,

    /// Close a client connection that sends no request for this long; 0 never does [default: 0].
    #[arg(long, env = "KAFKA_SIDECAR_CLIENT_IDLE_TIMEOUT")]
    pub client_idle_timeout: Option<String>,

    /// Most requests awaiting a response on one client connection [default: 1024].
    #[arg(long, env = "KAFKA_SIDECAR_MAX_INFLIGHT")]
    pub max_inflight: Option<usize>,

    /// Timeout of one upstream connect attempt, e.g. 5s or 500ms [default: 5s].
    #[arg(long, env = "KAFKA_SIDECAR_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,

    /// Upstream connect attempts before a client connection is given up [default: 3].
    #[arg(long, env = "KAFKA_SIDECAR_CONNECT_ATTEMPTS")]
    pub connect_attempts: Option<u32>,

    /// First backoff between connect attempts; it doubles up to 10x [default: 100ms].
    #[arg(long, env = "KAFKA_SIDECAR_CONNECT_BACKOFF")]
    pub connect_backoff: Option<String>,

    /// Idle time before TCP keepalive probes start, on every socket [default: 60s].
    #[arg(long, env = "KAFKA_SIDECAR_KEEPALIVE_IDLE")]
    pub keepalive_idle: Option<String>,

    /// Interval between TCP keepalive probes [default: 10s].
    #[arg(long, env = "KAFKA_SIDECAR_KEEPALIVE_INTERVAL")]
    pub keepalive_interval: Option<String>,

    /// Unanswered keepalive probes before the connection is dropped [default: 3].
    #[arg(long, env = "KAFKA_SIDECAR_KEEPALIVE_COUNT")]
    pub keepalive_count: Option<u32>,

    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged; 0 disables [default: 30s].
    #[arg(long, env = "KAFKA_SIDECAR_USER_TIMEOUT")]
    pub user_timeout: Option<String>,

    /// Interval of the sidecar's own metadata refresh [default: 30s].
    #[arg(long, env = "KAFKA_SIDECAR_METADATA_REFRESH")]
    pub metadata_refresh: Option<String>,

    /// On SIGTERM/SIGINT, how long to keep serving (reporting not-ready) before draining, so an
    /// application shutting down beside a classic sidecar can still reach Kafka [default: 0s].
    #[arg(long, env = "KAFKA_SIDECAR_SHUTDOWN_DELAY")]
    pub shutdown_delay: Option<String>,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish [default: 25s].
    #[arg(long, env = "KAFKA_SIDECAR_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,

    /// Connect to brokers with TLS [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", env = "KAFKA_SIDECAR_TLS")]
    pub tls: Option<bool>,

    /// PEM bundle of CAs trusted for broker certificates [default: the system trust store].
    #[arg(long, env = "KAFKA_SIDECAR_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// PEM client certificate chain, for brokers that require mutual TLS.
    #[arg(long, env = "KAFKA_SIDECAR_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long, env = "KAFKA_SIDECAR_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM certificate chain for TLS on the Kafka listeners, for setups where clients reach the
    /// sidecar over a network [default: plaintext listeners].
    #[arg(long, env = "KAFKA_SIDECAR_LISTENER_TLS_CERT_FILE")]
    pub listener_tls_cert_file: Option<PathBuf>,

    /// PEM private key of the listener certificate.
    #[arg(long, env = "KAFKA_SIDECAR_LISTENER_TLS_KEY_FILE")]
    pub listener_tls_key_file: Option<PathBuf>,

    /// SASL mechanism the sidecar authenticates with: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or
    /// AWS_MSK_IAM (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)
    /// [default: none].
    #[arg(long, env = "KAFKA_SIDECAR_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,

    /// SASL user name.
    #[arg(long, env = "KAFKA_SIDECAR_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// SASL password (prefer the environment variable or --sasl-password-file to a flag).
    #[arg(long, env = "KAFKA_SIDECAR_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<String>,

    /// File holding the SASL password (e.g. a mounted Kubernetes secret).
    #[arg(long, env = "KAFKA_SIDECAR_SASL_PASSWORD_FILE")]
    pub sasl_password_file: Option<PathBuf>,

    /// AWS region of the MSK cluster, for AWS_MSK_IAM [default: AWS_REGION or AWS_DEFAULT_REGION].
    #[arg(long, env = "KAFKA_SIDECAR_AWS_REGION")]
    pub aws_region: Option<String>,

    /// First pause before re-sending an admin request answered NOT_CONTROLLER; it doubles, with
    /// jitter [default: 100ms].
    #[arg(long, env = "KAFKA_SIDECAR_ADMIN_RETRY_BACKOFF")]
    pub admin_retry_backoff: Option<String>,

    /// Longest pause between NOT_CONTROLLER retries [default: 1s].
    #[arg(long, env = "KAFKA_SIDECAR_ADMIN_RETRY_BACKOFF_MAX")]
    pub admin_retry_backoff_max: Option<String>,

    /// Most time spent retrying one admin request; the request's own timeout_ms bounds it too
    /// [default: 30s].
    #[arg(long, env = "KAFKA_SIDECAR_ADMIN_RETRY_BUDGET")]
    pub admin_retry_budget: Option<String>,

    /// Threads that serve connections. One keeps latency lowest and is all a sidecar next to one
    /// application needs; raise it for more than about 1 GB/s [default: 1].
    #[arg(long, env = "KAFKA_SIDECAR_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Log format: human or json [default: human].
    #[arg(long, env = "KAFKA_SIDECAR_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Log level or filter when RUST_LOG is unset, e.g. info or kafka_sidecar=debug [default: info].
    #[arg(long, env = "KAFKA_SIDECAR_LOG_LEVEL")]
    pub log_level: Option<String>,
}

impl Settings {
    /// Reads the TOML file named by `--config`, if any, under these settings.
    pub fn with_file(self) -> Result<Settings, ConfigError> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::single("config", format!("cannot read {}: {e}", path.display())))?;
        let file: Settings =
            toml::from_str(&text).map_err(|e| ConfigError::single("config", format!("{}: {e}", path.display())))?;
        Ok(self.or(file))
    }

    /// Each setting from `self` where given, else from `fallback`.
    fn or(self, fallback: Settings) -> Settings {
        Settings {
            config: self.config,
            check_config: self.check_config,
            bootstrap_servers: if self.bootstrap_servers.is_empty() {
                fallback.bootstrap_servers
            } else {
                self.bootstrap_servers
            },
            listen_host: self.listen_host.or(fallback.listen_host),
            bootstrap_port: self.bootstrap_port.or(fallback.bootstrap_port),
            broker_port_base: self.broker_port_base.or(fallback.broker_port_base),
            advertised_host: self.advertised_host.or(fallback.advertised_host),
            admin_listen: self.admin_listen.or(fallback.admin_listen),
            max_frame_bytes: self.max_frame_bytes.or(fallback.max_frame_bytes),
            max_inflight: self.max_inflight.or(fallback.max_inflight),
            client_idle_timeout: self.client_idle_timeout.or(fallback.client_idle_timeout),
            max_client_connections: self.max_client_connections.or(fallback.max_client_connections),
            connect_timeout: self.connect_timeout.or(fallback.connect_timeout),
            connect_attempts: self.connect_attempts.or(fallback.connect_attempts),
            connect_backoff: self.connect_backoff.or(fallback.connect_backoff),
            keepalive_idle: self.keepalive_idle.or(fallback.keepalive_idle),
            keepalive_interval: self.keepalive_interval.or(fallback.keepalive_interval),
            keepalive_count: self.keepalive_count.or(fallback.keepalive_count),
            user_timeout: self.user_timeout.or(fallback.user_timeout),
            metadata_refresh: self.metadata_refresh.or(fallback.metadata_refresh),
            drain_timeout: self.drain_timeout.or(fallback.drain_timeout),
            shutdown_delay: self.shutdown_delay.or(fallback.shutdown_delay),
            tls: self.tls.or(fallback.tls),
            tls_ca_file: self.tls_ca_file.or(fallback.tls_ca_file),
            tls_cert_file: self.tls_cert_file.or(fallback.tls_cert_file),
            tls_key_file: self.tls_key_file.or(fallback.tls_key_file),
            listener_tls_cert_file: self.listener_tls_cert_file.or(fallback.listener_tls_cert_file),
            listener_tls_key_file: self.listener_tls_key_file.or(fallback.listener_tls_key_file),
            sasl_mechanism: self.sasl_mechanism.or(fallback.sasl_mechanism),
            sasl_username: self.sasl_username.or(fallback.sasl_username),
            sasl_password: self.sasl_password.or(fallback.sasl_password),
            sasl_password_file: self.sasl_password_file.or(fallback.sasl_password_file),
            aws_region: self.aws_region.or(fallback.aws_region),
            admin_retry_backoff: self.admin_retry_backoff.or(fallback.admin_retry_backoff),
            admin_retry_backoff_max: self.admin_retry_backoff_max.or(fallback.admin_retry_backoff_max),
            admin_retry_budget: self.admin_retry_budget.or(fallback.admin_retry_budget),
            worker_threads: self.worker_threads.or(fallback.worker_threads),
            log_format: self.log_format.or(fallback.log_format),
            log_level: self.log_level.or(fallback.log_level),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// TLS towards brokers, when enabled.
    pub tls: Option<TlsSettings>,
    /// SASL towards brokers, when enabled.
    pub sasl: Option<SaslConfig>,
    /// TLS on the Kafka listeners, when enabled.
    pub listener_tls: Option<ListenerTlsSettings>,
    /// Worker threads of the runtime.
    pub worker_threads: usize,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// Every invalid setting, each with the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|(k, v)| format!("  --{k}: {v}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<(&'static str, String)>,
}

impl ConfigError {
    fn single(setting: &'static str, problem: String) -> Self {
        ConfigError { problems: vec![(setting, problem)] }
    }
}

/// Collects problems while settings are parsed one by one.
#[derive(Default)]
struct Problems(Vec<(&'static str, String)>);

impl Problems {
    fn check<T>(&mut self, setting: &'static str, result: Result<T, String>, default: T) -> T {
        result.unwrap_or_else(|problem| {
            self.0.push((setting, problem));
            default
        })
    }

    fn duration(&mut self, setting: &'static str, value: Option<&str>, default: Duration) -> Duration {
        let parsed = value.map_or(Ok(default), parse_duration);
        self.check(setting, parsed, default)
    }
}

impl Config {
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let mut p = Problems::default();
        let tls_files = [&s.tls_ca_file, &s.tls_cert_file, &s.tls_key_file];
        let tls = (s.tls.unwrap_or(false) || tls_files.iter().any(|f| f.is_some())).then(|| TlsSettings {
            ca_file: s.tls_ca_file.clone(),
            client_cert_file: s.tls_cert_file.clone(),
            client_key_file: s.tls_key_file.clone(),
        });
        if s.tls_cert_file.is_some() != s.tls_key_file.is_some() {
            p.0.push(("tls-cert-file", "a client certificate needs both --tls-cert-file and --tls-key-file".into()));
        }
        let sasl = sasl_config(&s, &mut p);
        let listener_tls = match (&s.listener_tls_cert_file, &s.listener_tls_key_file) {
            (Some(cert_file), Some(key_file)) => {
                Some(ListenerTlsSettings { cert_file: cert_file.clone(), key_file: key_file.clone() })
            }
            (None, None) => None,
            _ => {
                p.0.push(("listener-tls-cert-file", "listener TLS needs both a certificate and a key file".into()));
                None
            }
        };

        let bootstrap_servers: Vec<String> =
            s.bootstrap_servers.iter().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
        if bootstrap_servers.is_empty() {
            p.0.push(("bootstrap-server", "at least one host:port is required".into()));
        }
        for server in &bootstrap_servers {
            let valid =
                server.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                p.0.push(("bootstrap-server", format!("{server:?} is not host:port")));
            }
        }
        let listen_host_text = s.listen_host.unwrap_or_else(|| "127.0.0.1".into());
        let listen_host = p.check(
            "listen-host",
            listen_host_text.parse::<IpAddr>().map_err(|_| format!("{listen_host_text:?} is not an IP address")),
            IpAddr::from([127, 0, 0, 1]),
        );
        let bootstrap_port = s.bootstrap_port.unwrap_or(9092);
        let port_base = s.broker_port_base.unwrap_or(9100);
        let advertised_host = s
            .advertised_host
            .unwrap_or_else(|| if listen_host.is_unspecified() { "127.0.0.1".into() } else { listen_host.to_string() });
        if advertised_host.is_empty() || advertised_host.len() > i16::MAX as usize {
            p.0.push(("advertised-host", "must be a non-empty host name".into()));
        }
        let admin_text = s.admin_listen.unwrap_or_else(|| "0.0.0.0:9080".into());
        let admin_listen = p.check(
            "admin-listen",
            admin_text.parse::<SocketAddr>().map_err(|_| format!("{admin_text:?} is not ip:port")),
            SocketAddr::from(([0, 0, 0, 0], 9080)),
        );
        let max_frame_bytes = s.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES);
        if max_frame_bytes < 1024 || max_frame_bytes > i32::MAX as usize {
            p.0.push(("max-frame-bytes", format!("{max_frame_bytes} is outside 1024..=2147483647")));
        }
        let max_inflight = s.max_inflight.unwrap_or(1024);
        if max_inflight == 0 {
            p.0.push(("max-inflight", "must be at least 1".into()));
        }
        let max_client_connections = s.max_client_connections.unwrap_or(10_000);
        if max_client_connections == 0 {
            p.0.push(("max-client-connections", "must be at least 1".into()));
        }
        let client_idle_timeout = p.duration("client-idle-timeout", s.client_idle_timeout.as_deref(), Duration::ZERO);
        let connect_timeout = p.duration("connect-timeout", s.connect_timeout.as_deref(), Duration::from_secs(5));
        let connect_backoff = p.duration("connect-backoff", s.connect_backoff.as_deref(), Duration::from_millis(100));
        let connect_attempts = s.connect_attempts.unwrap_or(3);
        if connect_attempts == 0 {
            p.0.push(("connect-attempts", "must be at least 1".into()));
        }
        let keepalive = Keepalive {
            idle: p.duration("keepalive-idle", s.keepalive_idle.as_deref(), Duration::from_secs(60)),
            interval: p.duration("keepalive-interval", s.keepalive_interval.as_deref(), Duration::from_secs(10)),
            count: s.keepalive_count.unwrap_or(3),
        };
        if keepalive.idle < Duration::from_secs(1) || keepalive.interval < Duration::from_secs(1) {
            p.0.push(("keepalive-idle", "keepalive idle and interval must be at least 1s".into()));
        }
        if keepalive.count == 0 {
            p.0.push(("keepalive-count", "must be at least 1".into()));
        }
        let user_timeout = p.duration("user-timeout", s.user_timeout.as_deref(), Duration::from_secs(30));
        let metadata_refresh = p.duration("metadata-refresh", s.metadata_refresh.as_deref(), Duration::from_secs(30));
        if metadata_refresh < Duration::from_millis(100) {
            p.0.push(("metadata-refresh", "must be at least 100ms".into()));
        }
        let shutdown_delay = p.duration("shutdown-delay", s.shutdown_delay.as_deref(), Duration::ZERO);
        let drain_timeout = p.duration("drain-timeout", s.drain_timeout.as_deref(), Duration::from_secs(25));
        let admin_retry = RetryPolicy {
            initial_backoff: p.duration(
                "admin-retry-backoff",
                s.admin_retry_backoff.as_deref(),
                Duration::from_millis(100),
            ),
            max_backoff: p.duration(
                "admin-retry-backoff-max",
                s.admin_retry_backoff_max.as_deref(),
                Duration::from_secs(1),
            ),
            budget: p.duration("admin-retry-budget", s.admin_retry_budget.as_deref(), Duration::from_secs(30)),
        };
        if admin_retry.initial_backoff.is_zero() || admin_retry.initial_backoff > admin_retry.max_backoff {
            p.0.push(("admin-retry-backoff", "must be above 0 and at most --admin-retry-backoff-max".into()));
        }
        let worker_threads = s.worker_threads.unwrap_or(1);
        if !(1..=MAX_WORKER_THREADS).contains(&worker_threads) {
            p.0.push(("worker-threads", format!("{worker_threads} is outside 1..={MAX_WORKER_THREADS}")));
        }
        let log_format = match s.log_format.as_deref().unwrap_or("human") {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                p.0.push(("log-format", format!("{other:?} is not human or json")));
                LogFormat::Human
            }
        };

        if !p.0.is_empty() {
            return Err(ConfigError { problems: p.0 });
        }
        Ok(Config {
            bootstrap_servers,
            listen_host,
            bootstrap_port,
            advertised: Advertised { host: advertised_host, port_base },
            admin_listen,
            max_frame_bytes,
            max_inflight,
            max_client_connections,
            client_idle_timeout: (!client_idle_timeout.is_zero()).then_some(client_idle_timeout),
            upstream: UpstreamConfig { connect_timeout, connect_attempts, connect_backoff },
            sockets: SocketOptions { keepalive, user_timeout: (!user_timeout.is_zero()).then_some(user_timeout) },
            metadata_refresh,
            drain_timeout,
            shutdown_delay,
            admin_retry,
            tls,
            sasl,
            listener_tls,
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
        p.0.push(("sasl-mechanism", format!("{name:?} is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM")));
        return None;
    };
    if mechanism == Mechanism::AwsMskIam {
        let region = s
            .aws_region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok());
        let Some(region) = region.filter(|r| !r.is_empty()) else {
            p.0.push(("aws-region", "AWS_MSK_IAM needs the cluster's region (or AWS_REGION)".into()));
            return None;
        };
        return Some(SaslConfig { mechanism, username: String::new(), password: Secret(String::new()), region });
    }
    let password = match (&s.sasl_password, &s.sasl_password_file) {
        (Some(password), _) => Some(password.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_owned()),
            Err(e) => {
                p.0.push(("sasl-password-file", format!("cannot read {}: {e}", path.display())));
                None
            }
        },
        (None, None) => {
            p.0.push(("sasl-password", format!("{} needs a password (or --sasl-password-file)", mechanism.name())));
            None
        }
    };
    let Some(username) = s.sasl_username.clone().filter(|u| !u.is_empty()) else {
        p.0.push(("sasl-username", format!("{} needs a user name", mechanism.name())));
        return None;
    };
    Some(SaslConfig { mechanism, username, password: Secret(password?), region: String::new() })
}

/// Parses "250ms", "30s", "5m" or "1h"; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 30s or 5m"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s, m or h)")),
    };
    let millis = value.checked_mul(millis_per_unit).ok_or_else(|| format!("{text:?} is too long a duration"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        Settings::try_parse_from(std::iter::once("kafka-sidecar").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_fill_every_setting() {
        let config = Config::from_settings(settings(&["--bootstrap-server", "b-1:9092,b-2:9092"])).unwrap();
        assert_eq!(config.bootstrap_servers, ["b-1:9092", "b-2:9092"]);
        assert_eq!(config.bootstrap_port, 9092);
        assert_eq!(config.advertised, Advertised { host: "127.0.0.1".into(), port_base: 9100 });
        assert_eq!(config.sockets.keepalive.idle, Duration::from_secs(60));
        assert_eq!(config.sockets.user_timeout, Some(Duration::from_secs(30)));
        assert_eq!(config.admin_listen, "0.0.0.0:9080".parse().unwrap());
        assert_eq!(config.worker_threads, 1);
    }

    #[test]
    fn every_problem_is_reported_with_its_setting() {
        let err = Config::from_settings(settings(&[
            "--listen-host",
            "not-an-ip",
            "--keepalive-idle",
            "soon",
            "--worker-threads",
            "0",
            "--log-format",
            "xml",
        ]))
        .unwrap_err();
        let settings: Vec<_> = err.problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(settings, ["bootstrap-server", "listen-host", "keepalive-idle", "worker-threads", "log-format"]);
        assert!(err.to_string().contains("--keepalive-idle: \"soon\" is not a duration"));
    }

    #[test]
    fn flags_override_the_file() {
        let file: Settings =
            toml::from_str("bootstrap-servers = [\"file:9092\"]\nbootstrap-port = 1234\nkeepalive-idle = \"20s\"\n")
                .unwrap();
        let merged = settings(&["--bootstrap-port", "4321"]).or(file);
        let config = Config::from_settings(merged).unwrap();
        assert_eq!(config.bootstrap_servers, ["file:9092"]);
        assert_eq!(config.bootstrap_port, 4321);
        assert_eq!(config.sockets.keepalive.idle, Duration::from_secs(20));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<Settings>("bootstrap-srevers = []").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2 weeks").is_err());
    }
}
