//! One broker's idle connections: taken newest first, each checked alive before it is handed
//! out, dropped once past its expiry (idle lifetime, or shortly before its SASL session must be
//! renewed), and kept topped up by [`keep_warm`] under the broker's connect-rate limit. It never
//! reads a frame: a connection here is idle, and any byte or end it shows makes it dead.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::backoff::Backoff;
use crate::stream::Stream;
use crate::telemetry;
use crate::upstream::Connected;

/// How often idle connections are checked for a broker's close (a restart, an idle timeout).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest pause between refill attempts while a broker cannot be reached.
const MAX_REFILL_BACKOFF: Duration = Duration::from_secs(30);

struct Idle {
    connected: Connected,
    expires: Instant,
}

impl Idle {
    fn usable(&self, now: Instant, addr: &str, tls_generation: u64) -> bool {
        self.expires > now && self.connected.addr == addr && self.connected.tls_generation == tls_generation
    }
}

/// The idle connections to one broker.
pub(super) struct NodePool {
    pub node_id: i32,
    pub label: String,
    idle: Mutex<Vec<Idle>>,
    /// Told when a connection is taken, so the refill tops the pool up.
    taken: Notify,
    /// Cancelled when the broker leaves the cluster or the sidecar shuts down.
    pub gone: CancellationToken,
}

impl NodePool {
    pub fn new(node_id: i32, shutdown: &CancellationToken) -> Self {
        let label = telemetry::node_label(Some(node_id));
        telemetry::pool_registered(&label);
        NodePool { node_id, label, idle: Mutex::default(), taken: Notify::new(), gone: shutdown.child_token() }
    }

    /// The newest live idle connection to `addr` opened with TLS material `tls_generation`; stale
    /// and dead ones met on the way are closed.
    pub fn take(&self, addr: &str, tls_generation: u64) -> Option<Connected> {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        let mut found = None;
        while let Some(mut entry) = idle.pop() {
            if entry.usable(now, addr, tls_generation) && is_alive(&mut entry.connected.stream) {
                found = Some(entry.connected);
                break;
            }
        }
        telemetry::pool_idle(&self.label, idle.len());
        drop(idle);
        if found.is_some() {
            self.taken.notify_one();
        }
        found
    }

    /// Keeps `connected` until `expires`, unless `max` are kept already. Returns whether kept.
    pub fn put(&self, connected: Connected, expires: Instant, max: usize) -> bool {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() >= max || self.gone.is_cancelled() {
            return false;
        }
        idle.push(Idle { connected, expires });
        telemetry::pool_idle(&self.label, idle.len());
        true
    }

    /// Closes the connections that expired, died, lead to an address the broker no longer has or
    /// hold TLS material replaced since; returns how many remain and when the next one expires.
    fn prune(&self, addr: Option<&str>, tls_generation: u64) -> (usize, Option<Instant>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain_mut(|entry| {
            addr.is_some_and(|addr| entry.usable(now, addr, tls_generation)) && is_alive(&mut entry.connected.stream)
        });
        telemetry::pool_idle(&self.label, idle.len());
        (idle.len(), idle.iter().map(|entry| entry.expires).min())
    }

    fn clear(&self) {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.clear();
        telemetry::pool_idle(&self.label, 0);
    }
}

/// Whether an idle connection is still open with nothing unread: a broker that closed it (or
/// sends anything unasked) makes it unusable. Never waits.
fn is_alive(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// Keeps `pool` at the configured size until its broker leaves or the sidecar shuts down: prunes
/// it every [`CHECK_EVERY`] and at each expiry, and dials (within the connect-rate limit, backing
/// off while the broker cannot be reached) whenever it is short.
pub(super) async fn keep_warm(inner: Arc<Inner>, pool: Arc<NodePool>) {
    let config = inner.config;
    let mut backoff = Backoff::new(config.refill_backoff, MAX_REFILL_BACKOFF.max(config.refill_backoff));
    loop {
        let addr = inner.cluster.address(pool.node_id);
        let (live, next_expiry) = pool.prune(addr.as_deref(), inner.connector.tls_generation());
        let wait = match addr {
            Some(addr) if live < config.size => match inner.rate(&addr).try_take(Instant::now()) {
                Err(free_at) => free_at,
                Ok(()) => {
                    let dialed = tokio::select! {
                        _ = pool.gone.cancelled() => break,
                        dialed = inner.connector.connect_any(std::slice::from_ref(&addr), &pool.label) => dialed,
                    };
                    match dialed {
                        Ok(connected) => {
                            let expires = inner.expiry(&connected);
                            pool.put(connected, expires, config.size.max(config.max_idle));
                            backoff =
                                Backoff::new(config.refill_backoff, MAX_REFILL_BACKOFF.max(config.refill_backoff));
                            continue;
                        }
                        Err(_) => Instant::now() + backoff.next_delay(),
                    }
                }
            },
            _ => {
                let check = Instant::now() + CHECK_EVERY;
                next_expiry.map_or(check, |expiry| expiry.min(check))
            }
        };
        tokio::select! {
            _ = pool.gone.cancelled() => break,
            _ = pool.taken.notified() => {}
            _ = tokio::time::sleep_until(wait.into()) => {}
        }
    }
    pool.clear();
}
