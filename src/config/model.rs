//! The typed settings each part of the sidecar is handed, as plain data: what `config` validates
//! the flags, environment and file into. The parts that use them add their own behaviour in
//! their own modules (a `Mechanism`'s name on the wire is `sasl`'s, a node's port is `rewrite`'s);
//! nothing here does I/O or knows another module.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How NOT_CONTROLLER retries back off and how long they may take in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Upper bound on the time spent retrying, whatever the request's own timeout.
    pub budget: Duration,
}

/// How the pools behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Ready connections kept per broker (0: none opened ahead of need).
    pub size: usize,
    /// Most idle connections kept per broker, those given back included (0: none is given back).
    pub max_idle: usize,
    /// An idle connection is closed (and replaced) after this long: below the brokers'
    /// `connections.max.idle.ms`.
    pub idle_lifetime: Duration,
    /// First pause after a failed refill; it doubles up to 30s.
    pub refill_backoff: Duration,
    /// New connections per second per broker, sessions and refills together.
    pub connect_rate: u32,
}

/// The address clients are given for every broker: one host, one port per node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub port_base: u16,
}

/// Which hash the SCRAM exchange uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

/// A SASL mechanism the sidecar can perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramHash),
    /// AWS MSK IAM: OAUTHBEARER on the wire.
    AwsMskIam,
}

/// A password that never shows in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the sidecar authenticates to brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConfig {
    pub mechanism: Mechanism,
    /// User name (PLAIN, SCRAM).
    pub username: String,
    /// Password (PLAIN, SCRAM).
    pub password: Secret,
    /// AWS region of the cluster (AWS_MSK_IAM).
    pub region: String,
}

/// Where the TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// PEM bundle of trusted CAs; `None` uses the system trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for brokers that require mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// Where the sidecar's own listener certificate comes from (TLS on the Kafka listeners), and the
/// CAs that sign the client certificates it demands, if it demands them (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

/// How clients authenticate to the listeners, beyond listener TLS itself (whose client CA lives
/// in [`ListenerTlsSettings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAuthSettings {
    /// `--listener-sasl-credentials`: clients must authenticate with SASL against this file.
    pub sasl_credentials: Option<PathBuf>,
    /// `--insecure-allow-unauthenticated-remote-clients`.
    pub allow_unauthenticated_remote_clients: bool,
}

/// TCP keepalive knobs: probes start after `idle`, repeat every `interval`, give up after `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

/// Options applied to every client and broker socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    pub keepalive: Keepalive,
    /// TCP_USER_TIMEOUT; `None` leaves the kernel default.
    pub user_timeout: Option<Duration>,
}

/// How upstream connections are attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub connect_attempts: u32,
    pub connect_backoff: Duration,
}

/// Frames larger than this are refused unless configured otherwise (100 MiB, as brokers commonly do).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-256" => Some(Mechanism::Scram(ScramHash::Sha256)),
            "SCRAM-SHA-512" => Some(Mechanism::Scram(ScramHash::Sha512)),
            "AWS_MSK_IAM" => Some(Mechanism::AwsMskIam),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(ScramHash::Sha256) => "SCRAM-SHA-256",
            Mechanism::Scram(ScramHash::Sha512) => "SCRAM-SHA-512",
            Mechanism::AwsMskIam => "AWS_MSK_IAM",
        }
    }
}

/// The broker identity the sidecar lends to every client of its listeners, if it holds one:
/// SASL credentials of any kind, or a TLS client certificate.
pub fn broker_identity(sasl: Option<&SaslConfig>, tls: Option<&TlsSettings>) -> Option<&'static str> {
    match (sasl.map(|s| s.mechanism), tls.and_then(|t| t.client_cert_file.as_ref())) {
        (Some(Mechanism::AwsMskIam), _) => Some("AWS MSK IAM credentials"),
        (Some(Mechanism::Plain), _) => Some("a SASL PLAIN user"),
        (Some(Mechanism::Scram(_)), _) => Some("a SASL SCRAM user"),
        (None, Some(_)) => Some("a TLS client certificate"),
        (None, None) => None,
    }
}

/// The identity clients on `listen_host` would borrow without authenticating, or `None` when
/// they borrow none: the listeners are on loopback, the sidecar holds no broker credentials, or
/// clients must authenticate to it.
pub fn borrowed_identity(
    listen_host: IpAddr,
    identity: Option<&'static str>,
    clients_authenticate: bool,
) -> Option<&'static str> {
    identity.filter(|_| !listen_host.is_loopback() && !clients_authenticate)
}

/// Why listening on `listen_host` lends `identity` to unauthenticated clients, naming what to
/// configure instead.
pub fn lent_identity_problem(listen_host: IpAddr, identity: &str) -> String {
    format!(
        "{listen_host} is not a loopback address, and the sidecar authenticates to the brokers with \
                 {identity}: every client that reaches the listeners would act as that identity. Make clients \
                 authenticate to the sidecar with --listener-sasl-credentials or --listener-tls-client-ca (mutual \
                 TLS, with --listener-tls-cert-file and --listener-tls-key-file), or listen on 127.0.0.1, or accept \
                 the risk with --insecure-allow-unauthenticated-remote-clients (see docs/security.md)"
    )
}
