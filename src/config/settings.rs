//! The raw settings: every flag (clap), its `KAFKA_SIDECAR_*` variable and its key in the TOML
//! file (serde), as text, before validation. Validating them into a [`super::Config`] is `config`'s.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};

use super::{ConfigError, Problems, sources};

/// Raw settings as given by flags, environment or file, before validation: text only, so that no
/// value is refused before every problem can be reported. Serde keys are the long flag names,
/// except `bootstrap-servers`, the list.
#[derive(Debug, Default, Clone, Parser, Serialize, Deserialize)]
#[command(name = "kafka-sidecar", version, about = "A protocol-aware Kafka proxy that runs beside an application")]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// TOML file with any of these settings (keys as the long flag names); flags and environment
    /// variables take precedence over it.
    #[arg(long)]
    pub config: Option<String>,

    /// Validate the settings, print them, and exit (0 when valid, 64 when not).
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,

    /// Kafka bootstrap server host:port; repeat the flag or separate with commas.
    #[arg(long = "bootstrap-server", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_servers: Vec<String>,

    /// Address the Kafka listeners bind to [default: 127.0.0.1].
    #[arg(long)]
    pub listen_host: Option<String>,

    /// Port of the bootstrap listener that applications use as bootstrap.servers [default: 9092].
    #[arg(long)]
    pub bootstrap_port: Option<String>,

    /// Broker node N is served on port broker-port-base + N [default: 9100].
    #[arg(long)]
    pub broker_port_base: Option<String>,

    /// Host name handed to clients in rewritten broker addresses [default: the listen host].
    #[arg(long)]
    pub advertised_host: Option<String>,

    /// Address of the metrics and health endpoints [default: 0.0.0.0:9080].
    #[arg(long)]
    pub admin_listen: Option<String>,

    /// Largest frame accepted from clients or brokers, in bytes [default: 104857600].
    #[arg(long)]
    pub max_frame_bytes: Option<String>,

    /// Largest frame the sidecar holds whole, in bytes: responses it rewrites (Metadata,
    /// FindCoordinator, DescribeCluster, ApiVersions), admin requests it may re-send and SASL
    /// frames it answers itself; every other frame is relayed in small chunks as it arrives
    /// [default: 16777216].
    #[arg(long)]
    pub max_buffered_frame_bytes: Option<String>,

    /// Most bytes held in whole frames over all connections at once; a connection waits for
    /// room [default: 67108864].
    #[arg(long)]
    pub buffer_budget_bytes: Option<String>,

    /// Most client connections served at once, over all listeners; further clients wait in the
    /// listen backlog until one closes [default: 10000].
    #[arg(long)]
    pub max_client_connections: Option<String>,

    /// Close a client connection that sends no request for this long; 0 never does [default: 0].
    #[arg(long)]
    pub client_idle_timeout: Option<String>,

    /// Most requests awaiting a response on one client connection [default: 1024].
    #[arg(long)]
    pub max_inflight: Option<String>,

    /// Timeout of one upstream connect attempt, e.g. 5s or 500ms [default: 5s].
    #[arg(long)]
    pub connect_timeout: Option<String>,

    /// Upstream connect attempts before a client connection is given up [default: 3].
    #[arg(long)]
    pub connect_attempts: Option<String>,

    /// First backoff between connect attempts; it doubles up to 10x [default: 100ms].
    #[arg(long)]
    pub connect_backoff: Option<String>,

    /// Idle time before TCP keepalive probes start, on every socket [default: 60s].
    #[arg(long)]
    pub keepalive_idle: Option<String>,

    /// Interval between TCP keepalive probes [default: 10s].
    #[arg(long)]
    pub keepalive_interval: Option<String>,

    /// Unanswered keepalive probes before the connection is dropped [default: 3].
    #[arg(long)]
    pub keepalive_count: Option<String>,

    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged; 0 disables [default: 30s].
    #[arg(long)]
    pub user_timeout: Option<String>,

    /// Interval of the sidecar's own metadata refresh [default: 30s].
    #[arg(long)]
    pub metadata_refresh: Option<String>,

    /// On SIGTERM/SIGINT, how long to keep serving (reporting not-ready) before draining, so an
    /// application shutting down beside a classic sidecar can still reach Kafka [default: 0s].
    #[arg(long)]
    pub shutdown_delay: Option<String>,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish [default: 25s].
    #[arg(long)]
    pub drain_timeout: Option<String>,

    /// Connect to brokers with TLS [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub tls: Option<String>,

    /// PEM bundle of CAs trusted for broker certificates [default: the system trust store].
    #[arg(long)]
    pub tls_ca_file: Option<String>,

    /// PEM client certificate chain, for brokers that require mutual TLS.
    #[arg(long)]
    pub tls_cert_file: Option<String>,

    /// PEM private key of the client certificate.
    #[arg(long)]
    pub tls_key_file: Option<String>,

    /// PEM certificate chain for TLS on the Kafka listeners, for setups where clients reach the
    /// sidecar over a network [default: plaintext listeners].
    #[arg(long)]
    pub listener_tls_cert_file: Option<String>,

    /// PEM private key of the listener certificate.
    #[arg(long)]
    pub listener_tls_key_file: Option<String>,

    /// PEM bundle of CAs for client certificates on the TLS listeners: clients without a
    /// certificate one of them signed are refused during the handshake (mutual TLS)
    /// [default: no client certificates asked for].
    #[arg(long)]
    pub listener_tls_client_ca: Option<String>,

    /// File of salted, hashed client credentials (`kafka-sidecar hash-password`): clients must
    /// authenticate to the sidecar with SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 before any
    /// request but ApiVersions; reloaded when it changes [default: no client SASL check].
    #[arg(long)]
    pub listener_sasl_credentials: Option<String>,

    /// Let the Kafka listeners bind a non-loopback address while the sidecar holds broker
    /// credentials and clients do not authenticate to it: anyone who reaches them acts with the
    /// sidecar's identity. Warned about at every start [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub insecure_allow_unauthenticated_remote_clients: Option<String>,

    /// SASL mechanism the sidecar authenticates with: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or
    /// AWS_MSK_IAM (credentials from the AWS SDKs' default chain: environment, profile, IRSA, EKS
    /// Pod Identity, ECS, EC2) [default: none].
    #[arg(long)]
    pub sasl_mechanism: Option<String>,

    /// SASL user name.
    #[arg(long)]
    pub sasl_username: Option<String>,

    /// SASL password (prefer the environment variable or --sasl-password-file to a flag).
    #[arg(long)]
    pub sasl_password: Option<String>,

    /// File holding the SASL password (e.g. a mounted Kubernetes secret).
    #[arg(long)]
    pub sasl_password_file: Option<String>,

    /// AWS region of the MSK cluster, for AWS_MSK_IAM [default: AWS_REGION or AWS_DEFAULT_REGION].
    #[arg(long)]
    pub aws_region: Option<String>,

    /// First pause once every broker has answered an admin request NOT_CONTROLLER; it doubles,
    /// with jitter [default: 5ms].
    #[arg(long)]
    pub admin_retry_backoff: Option<String>,

    /// Longest pause between NOT_CONTROLLER retries [default: 1s].
    #[arg(long)]
    pub admin_retry_backoff_max: Option<String>,

    /// Most time spent retrying one admin request; the request's own timeout_ms bounds it too
    /// [default: 30s].
    #[arg(long)]
    pub admin_retry_budget: Option<String>,

    /// Ready broker connections (TLS and SASL done) kept per broker for new client connections;
    /// 0 opens none ahead of need [default: 2].
    #[arg(long)]
    pub pool_size: Option<String>,

    /// Most idle broker connections kept per broker, those given back by clients that ended
    /// cleanly included; 0 never takes one back [default: 8].
    #[arg(long)]
    pub pool_max_idle: Option<String>,

    /// How long an idle pooled connection is kept before it is replaced; keep it below the
    /// brokers' connections.max.idle.ms (10m by default) [default: 5m].
    #[arg(long)]
    pub pool_idle_lifetime: Option<String>,

    /// First pause before refilling a pool after a failed connect; it doubles up to 30s
    /// [default: 500ms].
    #[arg(long)]
    pub pool_refill_backoff: Option<String>,

    /// Most new connections per second to each broker, from sessions and pool refills together;
    /// clients beyond it wait for a pooled connection or a turn [default: 20].
    #[arg(long)]
    pub broker_connect_rate: Option<String>,

    /// Threads that serve connections. One keeps latency lowest and is all a sidecar next to one
    /// application needs; raise it for more than about 1 GB/s [default: 1].
    #[arg(long)]
    pub worker_threads: Option<String>,

    /// Log format: human or json [default: human].
    #[arg(long)]
    pub log_format: Option<String>,

    /// Log level or filter when RUST_LOG is unset, e.g. info or kafka_sidecar=debug [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
}

impl Settings {
    /// The command line: the flags of [`Settings`], each help line naming its variable.
    pub fn cli() -> clap::Command {
        Settings::command().mut_args(|arg| match sources::variable(&arg) {
            Some(variable) => {
                let help = arg.get_help().map(|help| format!("{help} ")).unwrap_or_default();
                arg.help(format!("{help}[env: {variable}]"))
            }
            None => arg,
        })
    }

    /// The flags in `args` (the program name first). Clap's errors come back as they are: an
    /// unknown flag, and `--help` or `--version`, which are not failures.
    pub fn from_args<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Settings::from_arg_matches(&Settings::cli().try_get_matches_from(args)?)
    }

    /// The settings of a config file's text: each key a long flag name, each value text, a number
    /// or a boolean (a list for `bootstrap-servers`).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let mut problems = Problems::default();
        let table = sources::file_text(text, "the file", &mut problems);
        let settings = sources::settings(table, &mut problems);
        problems.into_result(settings)
    }
}
