//! HTTP GET for the sidecar's admin listener (`/metrics`, `/readyz`, `/healthz`) and Prometheus's
//! API, and sums over the Prometheus text format. Blocking, one request per connection.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// A minimal HTTP/1.1 GET (Connection: close); returns (status code, body). Panics if `addr`
/// cannot be reached or does not answer HTTP.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// Like [`http_get`]; an error if `addr` cannot be reached or does not answer HTTP.
pub fn try_get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad HTTP response: {head:?}")))?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls GET `path` on `addr` until it answers `status` or `timeout` passes (a listener not up
/// yet counts as status 0); returns the last answer.
pub fn wait_for_status(addr: &str, path: &str, status: u16, timeout: Duration) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = try_get(addr, path).unwrap_or_else(|e| (0, e.to_string()));
        if answer.0 == status || Instant::now() > deadline {
            return answer;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of every series of metric `name` whose labels contain each of `labels` (e.g.
/// `cause="idle"`), in Prometheus text.
pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = series.split_at(series.find('{').unwrap_or(series.len()));
            (metric == name && labels.iter().all(|l| label_text.contains(l))).then(|| value.parse::<f64>().ok())?
        })
        .fold(0.0, |sum, value| sum + value)
}

/// [`metric_in`] of `/metrics` on `admin_addr`, scraped now.
pub fn scrape_metric(admin_addr: &str, name: &str, labels: &[&str]) -> f64 {
    metric_in(&http_get(admin_addr, "/metrics").1, name, labels)
}
