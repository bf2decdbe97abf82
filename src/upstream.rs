//! Opening connections to brokers, and the socket options every sidecar socket carries.
//!
//! One function applies TCP_NODELAY, keepalive (idle, interval, count) and TCP_USER_TIMEOUT to a
//! socket, accepted or connected alike. A [`Connector`] opens broker connections as configured:
//! TCP, then TLS and SASL authentication when enabled; it tries each address in turn with a
//! per-attempt timeout and exponential backoff between rounds, never in a tight loop.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use crate::backoff::Backoff;
pub use crate::config::{Keepalive, SocketOptions, UpstreamConfig};
use crate::sasl::{SaslConfig, SaslError};
use crate::stream::{self, Stream};
use crate::telemetry;
use crate::tls::{BrokerTls, TlsError};

/// Applies nodelay, keepalive and the user timeout to a connected socket.
pub fn apply_socket_options(stream: &TcpStream, options: &SocketOptions) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(options.keepalive.idle)
        .with_interval(options.keepalive.interval)
        .with_retries(options.keepalive.count);
    socket.set_tcp_keepalive(&keepalive)?;
    if let Some(user_timeout) = options.user_timeout {
        socket.set_tcp_user_timeout(Some(user_timeout))?;
    }
    Ok(())
}

/// Why no upstream connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {addr} timed out after {after:?}")]
    TimedOut { addr: String, after: Duration },
    #[error("connection to {addr} refused")]
    Refused { addr: String },
    #[error("cannot connect to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("no broker address to connect to")]
    NoAddress,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("SASL {mechanism} authentication to {addr} failed: {source}")]
    Sasl { addr: String, mechanism: &'static str, source: SaslError },
}

impl ConnectError {
    /// A short, closed-set label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::TimedOut { .. } => "timeout",
            ConnectError::Refused { .. } => "refused",
            ConnectError::Io { .. } => "error",
            ConnectError::NoAddress => "no_address",
            ConnectError::Tls(e) => e.kind(),
            ConnectError::Sasl { .. } => "sasl",
        }
    }
}

/// Connects to one address within the configured timeout and applies the socket options.
pub async fn connect(addr: &str, config: &UpstreamConfig, options: &SocketOptions) -> Result<TcpStream, ConnectError> {
    let stream = match timeout(config.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::TimedOut { addr: addr.to_owned(), after: config.connect_timeout }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused { addr: addr.to_owned() });
        }
        Ok(Err(source)) => return Err(ConnectError::Io { addr: addr.to_owned(), source }),
        Ok(Ok(stream)) => stream,
    };
    apply_socket_options(&stream, options).map_err(|source| ConnectError::Io { addr: addr.to_owned(), source })?;
    Ok(stream)
}

/// An open, authenticated broker connection.
#[derive(Debug)]
pub struct Connected {
    pub stream: Stream,
    /// The address it reached.
    pub addr: String,
    /// When the connection must be authenticated again (KIP-368), if the broker limits its
    /// session: shortly before the broker's deadline.
    pub reauthenticate_at: Option<Instant>,
    /// The TLS material it was opened with ([`Connector::tls_generation`]).
    pub tls_generation: u64,
}

/// Re-authenticate when this share of the broker's session lifetime has passed.
const REAUTHENTICATE_AT: f64 = 0.85;

/// Opens broker connections: TCP with the socket options, then TLS and SASL where configured.
#[derive(Debug)]
pub struct Connector {
    pub config: UpstreamConfig,
    pub sockets: SocketOptions,
    pub tls: Option<BrokerTls>,
    pub sasl: Option<SaslConfig>,
    /// The last failure reported for each address, so each is logged once, not per client.
    reported: Mutex<HashMap<String, String>>,
}

impl Connector {
    pub fn new(
        config: UpstreamConfig,
        sockets: SocketOptions,
        tls: Option<BrokerTls>,
        sasl: Option<SaslConfig>,
    ) -> Self {
        Connector { config, sockets, tls, sasl, reported: Mutex::default() }
    }

    /// Logs a connect failure the first time it happens for `addr`, and a recovery once.
    fn report(&self, addr: &str, outcome: Result<(), &ConnectError>) {
        let mut reported = self.reported.lock().expect("report lock");
        match outcome {
            Ok(()) => {
                if reported.remove(addr).is_some() {
                    tracing::info!(%addr, "broker reachable again");
                }
            }
            Err(error) => {
                let text = error.to_string();
                if reported.get(addr) != Some(&text) {
                    tracing::warn!(%addr, %error, "cannot connect to broker");
                    reported.insert(addr.to_owned(), text);
                }
            }
        }
    }

    /// The TLS material new connections are opened with: it changes when the files change on
    /// disk (0 without TLS).
    pub fn tls_generation(&self) -> u64 {
        self.tls.as_ref().map_or(0, BrokerTls::generation)
    }

    /// One connection to `addr`, secured and authenticated as configured.
    pub async fn connect(&self, addr: &str) -> Result<Connected, ConnectError> {
        let tls_generation = self.tls_generation();
        let tcp = connect(addr, &self.config, &self.sockets).await?;
        let mut stream = match &self.tls {
            None => stream::plain(tcp),
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
                let handshake = timeout(self.config.connect_timeout, tls.connect(host, tcp)).await;
                let tls_stream = handshake.map_err(|_| ConnectError::TimedOut {
                    addr: addr.to_owned(),
                    after: self.config.connect_timeout,
                })??;
                stream::tls(tls_stream)
            }
        };
        let mut reauthenticate_at = None;
        if let Some(sasl) = &self.sasl {
            let sasl_error =
                |source| ConnectError::Sasl { addr: addr.to_owned(), mechanism: sasl.mechanism.name(), source };
            let authenticated =
                timeout(self.config.connect_timeout, crate::sasl::authenticate(&mut stream, sasl)).await;
            let lifetime =
                authenticated.map_err(|_| sasl_error(SaslError::Io("timed out".into())))?.map_err(sasl_error)?;
            if let Some(lifetime) = lifetime {
                tracing::debug!(%addr, ?lifetime, "broker limits the SASL session lifetime");
                reauthenticate_at = Some(Instant::now() + lifetime.mul_f64(REAUTHENTICATE_AT));
            }
        }
        Ok(Connected { stream, addr: addr.to_owned(), reauthenticate_at, tls_generation })
    }

    /// Tries every address in order, for up to `connect_attempts` rounds with doubling, jittered
    /// backoff between rounds. Returns the stream and the address it reached. `node` labels the attempts
    /// in metrics.
    pub async fn connect_any(&self, addrs: &[String], node: &str) -> Result<Connected, ConnectError> {
        let config = &self.config;
        if addrs.is_empty() {
            telemetry::upstream_connect(node, ConnectError::NoAddress.kind(), Duration::ZERO);
            return Err(ConnectError::NoAddress);
        }
        let mut last_error = ConnectError::NoAddress;
        let mut backoff = Backoff::new(config.connect_backoff, config.connect_backoff * 10);
        for round in 0..config.connect_attempts {
            if round > 0 {
                sleep(backoff.next_delay()).await;
            }
            for addr in addrs {
                let started = Instant::now();
                match self.connect(addr).await {
                    Ok(connected) => {
                        telemetry::upstream_connect(node, "ok", started.elapsed());
                        self.report(addr, Ok(()));
                        return Ok(connected);
                    }
                    Err(e) => {
                        telemetry::upstream_connect(node, e.kind(), started.elapsed());
                        self.report(addr, Err(&e));
                        last_error = e;
                    }
                }
            }
        }
        Err(last_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const OPTIONS: SocketOptions = SocketOptions {
        keepalive: Keepalive { idle: Duration::from_secs(45), interval: Duration::from_secs(7), count: 4 },
        user_timeout: Some(Duration::from_millis(12_500)),
    };

    #[tokio::test]
    async fn socket_options_are_applied() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = UpstreamConfig {
            connect_timeout: Duration::from_secs(1),
            connect_attempts: 1,
            connect_backoff: Duration::from_millis(10),
        };
        let stream = connect(&addr, &config, &OPTIONS).await.unwrap();
        let socket = SockRef::from(&stream);
        assert!(stream.nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(45));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(7));
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_millis(12_500)));
    }

    #[tokio::test]
    async fn refused_connections_are_named_after_all_attempts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let config = UpstreamConfig {
            connect_timeout: Duration::from_secs(1),
            connect_attempts: 2,
            connect_backoff: Duration::from_millis(10),
        };
        let connector = Connector::new(config, OPTIONS, None, None);
        let err = connector.connect_any(std::slice::from_ref(&addr), "test").await.unwrap_err();
        assert!(matches!(err, ConnectError::Refused { .. }), "{err}");
    }
}
