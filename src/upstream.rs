//! Opening TCP connections to brokers, and the socket options every sidecar socket carries.
//!
//! One function applies TCP_NODELAY, keepalive (idle, interval, count) and TCP_USER_TIMEOUT to a
//! socket, accepted or connected alike. Connecting tries each address in turn with a per-attempt
//! timeout and exponential backoff between rounds; it never retries in a tight loop.

use std::io;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use crate::telemetry;

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
}

impl ConnectError {
    /// A short, closed-set label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::TimedOut { .. } => "timeout",
            ConnectError::Refused { .. } => "refused",
            ConnectError::Io { .. } => "error",
            ConnectError::NoAddress => "no_address",
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

/// Tries every address in order, for up to `connect_attempts` rounds with doubling backoff
/// between rounds. Returns the stream and the address it reached. `node` labels the attempts in
/// metrics.
pub async fn connect_any(
    addrs: &[String],
    config: &UpstreamConfig,
    options: &SocketOptions,
    node: &str,
) -> Result<(TcpStream, String), ConnectError> {
    let mut last_error = ConnectError::NoAddress;
    let mut backoff = config.connect_backoff;
    for round in 0..config.connect_attempts {
        if round > 0 {
            sleep(backoff).await;
            backoff = (backoff * 2).min(config.connect_backoff * 10);
        }
        for addr in addrs {
            let started = Instant::now();
            match connect(addr, config, options).await {
                Ok(stream) => {
                    telemetry::upstream_connect(node, "ok", started.elapsed());
                    return Ok((stream, addr.clone()));
                }
                Err(e) => {
                    telemetry::upstream_connect(node, e.kind(), started.elapsed());
                    tracing::debug!(error = %e, "upstream connect attempt failed");
                    last_error = e;
                }
            }
        }
    }
    Err(last_error)
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
        let err = connect_any(std::slice::from_ref(&addr), &config, &OPTIONS, "test").await.unwrap_err();
        assert!(matches!(err, ConnectError::Refused { .. }), "{err}");
    }
}
