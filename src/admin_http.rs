//! The admin endpoint: `/metrics` (Prometheus text), `/healthz` and `/readyz`.
//!
//! A deliberately tiny HTTP/1.1 responder: one GET per connection, bounded request size and read
//! time, `Connection: close`. Readiness is a question it is handed, not state it owns. It never
//! touches Kafka traffic.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST_BYTES: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves admin requests until the process exits (it stays up while sessions drain, so readiness
/// can report the drain).
pub async fn serve(
    listener: TcpListener,
    not_ready: impl Fn() -> Option<&'static str> + Send + Sync + 'static,
    metrics: PrometheusHandle,
) {
    let not_ready = Arc::new(not_ready);
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let not_ready = not_ready.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    if let Err(error) = respond(stream, &*not_ready, &metrics).await {
                        tracing::debug!(%error, "admin request failed");
                    }
                });
            }
            Err(error) => {
                tracing::error!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers one request; `not_ready` tells why the sidecar is not ready, if it is not.
async fn respond(
    mut stream: TcpStream,
    not_ready: &(dyn Fn() -> Option<&'static str> + Send + Sync),
    metrics: &PrometheusHandle,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let read_head = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST_BYTES {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(READ_TIMEOUT, read_head).await.is_err() {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => match not_ready() {
            None => ("200 OK", "text/plain", "ready\n".to_owned()),
            Some(reason) => ("503 Service Unavailable", "text/plain", format!("not ready: {reason}\n")),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
