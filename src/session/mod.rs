//! One client connection, end to end.
//!
//! Two halves run side by side. `forward_requests` reads the head of each client frame, peeks its
//! header, records an in-flight entry for every request that will be answered and relays the frame
//! unchanged as it arrives. `return_responses` reads the head of each broker frame, pairs it with
//! its in-flight entry by correlation id, relays it to the client as it arrives or, where the
//! policy table says so, holds it whole to rewrite addresses or versions or to retry an admin
//! request answered NOT_CONTROLLER; responses reach the client in request order. On shutdown the
//! request half stops reading and the response half delivers what is in flight. A client that ends
//! cleanly (between frames, every request answered, nothing of its own SASL) gives its broker
//! connection back to the pool. It never decodes a Produce or Fetch body and never holds a frame
//! whole that the table lets pass.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::admin_retry::{AdminRequest, AdminRetry};
use crate::client_auth::{ClientAuth, Gate};
use crate::cluster::ClusterView;
use crate::frame_reader::FrameReader;
use crate::frame_writer::FrameWriter;
use crate::pool::{Lease, Pools};
use crate::rewrite::Advertised;
use crate::stream::{self, Stream};
use crate::telemetry::{self, DisconnectCause, SessionErrorKind, UpstreamConnection};
use crate::tls::{ListenerTls, TlsError};
use crate::upstream::{ConnectError, Connected, Connector};
use crate::wire::{FrameCodec, FrameError};

mod requests;
mod responses;

type ClientReader = FrameReader<ReadHalf<Stream>>;
type ClientWriter = FrameWriter<WriteHalf<Stream>>;
type BrokerReader = FrameReader<ReadHalf<Stream>>;
type BrokerWriter = FrameWriter<WriteHalf<Stream>>;

/// Bytes of a request read before deciding what to do with it: the header (client id up to
/// 32 KiB) and, for Produce, the transactional id (up to 32 KiB) and `acks`.
const REQUEST_HEAD: usize = 66 * 1024;
/// Bytes of a response read before deciding: the correlation id, the response header's tagged
/// fields and a top-level error code.
const RESPONSE_HEAD: usize = 256;
/// Frames held whole up to this size do not count against the buffer budget.
const SMALL_FRAME: usize = 64 * 1024;

/// How long a finished session waits for the broker to close its end.
const UPSTREAM_LINGER: Duration = Duration::from_secs(2);

/// A request sent upstream whose response has not come back yet.
#[derive(Debug)]
struct InFlight {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    received: Instant,
    /// The request itself, kept for controller-bound admin requests only, which may be re-sent.
    admin: Option<AdminRequest>,
    /// The sidecar's own answer, for requests it does not forward (a client's SASL exchange
    /// when the sidecar authenticates to the brokers itself).
    local_answer: Option<Bytes>,
    /// The answer of a controller-bound request sent straight to the controller (this node id)
    /// rather than over this connection.
    routed: Option<(Bytes, i32)>,
    /// This request's place among the `--max-inflight` allowed; freed once it is answered.
    _slot: OwnedSemaphorePermit,
    /// The share of the buffer budget an admin request held whole takes until it is answered.
    _held: Option<OwnedSemaphorePermit>,
}

/// Why the request half stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestsEnd {
    /// The client connection ends, for this cause.
    Disconnect(DisconnectCause),
    /// The broker connection's SASL session is due: finish what is in flight, then continue the
    /// client connection on a freshly authenticated broker connection.
    Reauthenticate,
    /// The response half stopped first.
    ResponsesDone,
}

/// What the two halves of one broker connection share.
struct Leg {
    /// Cancelled when the response half stops.
    responses_done: CancellationToken,
    /// When the broker's SASL session must be renewed (KIP-368).
    reauthenticate_at: Option<Instant>,
    /// Whether a request that gets no answer (an acks=0 produce) was forwarded: some brokers
    /// answer those anyway, so before closing, the response half reads until the broker is done.
    unanswered_forwarded: AtomicBool,
    /// Requests awaiting an answer, at most `--max-inflight`: when all are taken the client's
    /// next request is not read until one is answered.
    in_flight_slots: Arc<Semaphore>,
    /// Whether the client authenticates itself (its SASL requests pass through): the broker
    /// connection carries its identity, so it is never shared and its requests never take
    /// another way.
    client_authenticates: AtomicBool,
    /// Whether the client ended between frames with every request answered.
    clean_end: AtomicBool,
}

impl Leg {
    /// Whether the broker connection is in a known state that carries nothing of this client:
    /// a clean end, no answer that may still come (acks=0), no SASL of the client's own.
    fn shareable(&self) -> bool {
        self.clean_end.load(Ordering::Relaxed)
            && !self.unanswered_forwarded.load(Ordering::Relaxed)
            && !self.client_authenticates.load(Ordering::Relaxed)
    }
}

/// Which broker a listener's clients are sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any reachable bootstrap server.
    Bootstrap,
    /// The broker with this node id.
    Broker(i32),
}

/// The bounds every session keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame_bytes: usize,
    /// Largest frame held whole (rewritten responses, re-sendable admin requests, SASL).
    pub max_buffered_frame_bytes: usize,
    /// Requests awaiting an answer per connection.
    pub max_inflight: usize,
    /// Close client connections idle this long (`None`: never).
    pub client_idle_timeout: Option<Duration>,
    /// How long a client's TLS handshake may take.
    pub handshake_timeout: Duration,
}

/// What sessions use of the sidecar, and nothing else.
#[derive(Debug)]
pub struct Shared {
    /// Opens broker connections (TCP, TLS, SASL) as configured.
    pub connector: Arc<Connector>,
    /// Ready broker connections, and the per-broker connect-rate limit.
    pub pools: Pools,
    /// What is known of the cluster; sessions teach it what passes through.
    pub cluster: Arc<ClusterView>,
    /// NOT_CONTROLLER retries of controller-bound admin requests.
    pub retry: AdminRetry,
    /// TLS on the Kafka listeners, when configured.
    pub listener_tls: Option<ListenerTls>,
    /// How clients authenticate to the listeners (SASL checked or answered by the sidecar).
    pub client_auth: ClientAuth,
    /// The address clients are given for every broker.
    pub advertised: Advertised,
    pub limits: Limits,
    /// One permit per byte of frames held whole at once (`--buffer-budget-bytes`).
    pub buffer_budget: Arc<Semaphore>,
    /// Cancelled when the sidecar starts shutting down: sessions stop reading new requests.
    pub shutdown: CancellationToken,
}

/// What one client connection is: who it is and which broker it is bound to.
struct Session {
    ctx: Arc<Shared>,
    peer: SocketAddr,
    /// The broker node this connection reaches (`None` for the bootstrap listener).
    node_id: Option<i32>,
    /// The client's authentication to the sidecar, across broker connections.
    gate: Gate,
}

/// Serves one accepted client until either side closes or the sidecar shuts down.
pub async fn serve(ctx: Arc<Shared>, client: TcpStream, peer: SocketAddr, target: Target) {
    let node_id = match target {
        Target::Broker(node_id) => Some(node_id),
        Target::Bootstrap => None,
    };
    let session = Session { gate: ctx.client_auth.gate(peer), ctx, peer, node_id };
    let started = Instant::now();
    let connection = telemetry::ClientConnection::open();
    let client = match session.client_stream(client).await {
        Ok(client) => client,
        Err(error) => {
            telemetry::protocol_error(SessionErrorKind::TlsHandshake);
            tracing::warn!(%peer, %error, "client TLS handshake failed");
            connection.closed(DisconnectCause::ProtocolError);
            return;
        }
    };
    let cause = match session.connect_upstream().await {
        Ok(upstream) => {
            tracing::debug!(%peer, broker = %upstream.connected.addr, "upstream connected");
            session.proxy(client, upstream).await
        }
        Err(error) => {
            // The cause was reported once for the broker; per client it is detail.
            tracing::debug!(%peer, ?target, %error, "no upstream connection; closing client");
            DisconnectCause::UpstreamUnavailable
        }
    };
    connection.closed(cause);
    tracing::info!(%peer, node = %telemetry::node_label(node_id), cause = cause.as_str(), duration = ?started.elapsed(), "client connection closed");
}

impl Session {
    /// The client's connection: plain, or TLS when the listeners are configured for it.
    async fn client_stream(&self, tcp: TcpStream) -> Result<Stream, TlsError> {
        let Some(tls) = &self.ctx.listener_tls else {
            return Ok(stream::plain(tcp));
        };
        let handshake = tokio::time::timeout(self.ctx.limits.handshake_timeout, tls.accept(tcp)).await;
        let tls_stream = handshake
            .map_err(|_| TlsError::Handshake { host: "client".into(), reason: "handshake timed out".into() })??;
        Ok(stream::tls(tls_stream))
    }

    /// A broker connection from the pool, or a new one within the broker's connect-rate limit.
    async fn connect_upstream(&self) -> Result<Lease, ConnectError> {
        let ctx = &self.ctx;
        let result = ctx.pools.acquire(self.node_id).await;
        if result.is_err() && self.node_id.is_some() {
            // The broker may have moved: learn its new address for the client's retry.
            ctx.cluster.request_refresh();
        }
        result
    }

    /// Proxies until the client connection ends. When the broker limits its SASL session
    /// (KIP-368), the client connection moves to a freshly authenticated broker connection before
    /// the deadline, once every request in flight is answered.
    async fn proxy(&self, client: Stream, mut upstream: Lease) -> DisconnectCause {
        let max_frame = self.ctx.limits.max_frame_bytes;
        let (client_read, client_write) = tokio::io::split(client);
        let mut requests = FrameReader::new(client_read, FrameCodec::requests(max_frame));
        let mut to_client = FrameWriter::new(client_write);
        loop {
            match self.proxy_on(&mut requests, &mut to_client, upstream).await {
                RequestsEnd::Disconnect(cause) => return cause,
                RequestsEnd::ResponsesDone => return DisconnectCause::ClientClosed,
                RequestsEnd::Reauthenticate => match self.connect_upstream().await {
                    Ok(next) => {
                        tracing::debug!(peer = %self.peer, broker = %next.connected.addr, "broker session renewed");
                        upstream = next;
                    }
                    Err(error) => {
                        tracing::debug!(peer = %self.peer, %error, "cannot renew the broker session");
                        return DisconnectCause::UpstreamUnavailable;
                    }
                },
            }
        }
    }

    /// Proxies over one broker connection until either side stops; a connection left in a known
    /// state that carries nothing of this client goes back to the pool.
    async fn proxy_on(
        &self,
        requests: &mut ClientReader,
        to_client: &mut ClientWriter,
        upstream: Lease,
    ) -> RequestsEnd {
        let _open = UpstreamConnection::open(&telemetry::node_label(self.node_id));
        let max_frame = self.ctx.limits.max_frame_bytes;
        let Lease { connected: Connected { stream, addr, reauthenticate_at, tls_generation }, node_id: pool_node } =
            upstream;
        let (upstream_read, upstream_write) = tokio::io::split(stream);
        let to_broker = FrameWriter::new(upstream_write);
        let mut responses = FrameReader::new(upstream_read, FrameCodec::responses(max_frame));

        let (in_flight_tx, in_flight_rx) = mpsc::channel(self.ctx.limits.max_inflight);
        let leg = Leg {
            responses_done: CancellationToken::new(),
            reauthenticate_at,
            unanswered_forwarded: AtomicBool::new(false),
            in_flight_slots: Arc::new(Semaphore::new(self.ctx.limits.max_inflight)),
            client_authenticates: AtomicBool::new(false),
            clean_end: AtomicBool::new(false),
        };
        let forward = self.forward_requests(requests, to_broker, in_flight_tx, &leg);
        let answer = async {
            let cause = self.return_responses(&mut responses, to_client, in_flight_rx, &leg).await;
            leg.responses_done.cancel();
            cause
        };
        match tokio::join!(forward, answer) {
            (_, Some(cause)) => RequestsEnd::Disconnect(cause),
            ((end, to_broker), None) => {
                let open = (responses.into_inner(), to_broker.and_then(FrameWriter::into_inner));
                if let (Some(node_id), (Some(read), Some(write))) = (pool_node, open) {
                    let stream = read.unsplit(write);
                    let connected = Connected { stream, addr, reauthenticate_at, tls_generation };
                    self.ctx.pools.give_back(node_id, connected);
                }
                end
            }
        }
    }

    /// Reads the frame `reader` peeked (`total` bytes) whole, within `--max-buffered-frame-bytes`
    /// and the sidecar's buffer budget: the permit is that frame's share of the budget.
    async fn hold_whole<R: AsyncRead + Unpin>(
        &self,
        reader: &mut FrameReader<R>,
        total: usize,
        what: &'static str,
    ) -> Result<(Bytes, Option<OwnedSemaphorePermit>), FrameError> {
        let limit = self.ctx.limits.max_buffered_frame_bytes;
        if total > limit {
            return Err(FrameError::TooLargeToHold { what, len: total, max: limit });
        }
        // Small frames are not worth counting; large ones wait for room.
        let held = if total > SMALL_FRAME {
            let permits = u32::try_from(total).expect("bounded by max-buffered-frame-bytes");
            Some(self.ctx.buffer_budget.clone().acquire_many_owned(permits).await.expect("never closed"))
        } else {
            None
        };
        Ok((reader.take_whole(total).await?, held))
    }

    /// The disconnect cause of a frame that could not be held whole.
    fn held_frame_error(&self, error: &FrameError) -> DisconnectCause {
        telemetry::protocol_error(error.kind());
        tracing::warn!(peer = %self.peer, %error, "closing client connection");
        DisconnectCause::ProtocolError
    }
}

/// Writes the queued requests; a broker connection that fails ends the leg.
async fn flush_requests(to_broker: &mut BrokerWriter, peer: SocketAddr) -> Result<(), RequestsEnd> {
    to_broker.flush().await.map_err(|error| {
        tracing::info!(%peer, %error, "broker connection lost while forwarding");
        RequestsEnd::Disconnect(DisconnectCause::BrokerClosed)
    })
}

/// Writes the queued responses; a client connection that fails ends the session.
async fn flush_responses(to_client: &mut ClientWriter, peer: SocketAddr) -> Result<(), DisconnectCause> {
    to_client.flush().await.map_err(|error| {
        tracing::debug!(%peer, %error, "client went away before its response");
        DisconnectCause::ClientClosed
    })
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves after `timeout` without a request, or never when idle timeouts are off.
async fn idle(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// Reads past the frame `reader` peeked (`total` bytes) without keeping it.
async fn skip_frame<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>, total: usize) -> Result<(), FrameError> {
    reader.start_relay(total);
    loop {
        drop(reader.take_available());
        if reader.frame_left() == 0 {
            return Ok(());
        }
        reader.fill().await?;
    }
}

/// The disconnect cause of a broker connection that failed while a response was read.
fn broker_frame_error(error: FrameError, peer: SocketAddr) -> DisconnectCause {
    match error {
        FrameError::Io(error) => {
            if error.kind() == std::io::ErrorKind::TimedOut {
                telemetry::upstream_timeout();
            }
            tracing::info!(%peer, %error, "broker connection lost");
            DisconnectCause::BrokerClosed
        }
        FrameError::TruncatedFrame { .. } => {
            tracing::info!(%peer, %error, "broker connection lost in the middle of a response");
            DisconnectCause::BrokerClosed
        }
        error => {
            telemetry::protocol_error(error.kind());
            tracing::warn!(%peer, %error, "malformed broker response; closing client");
            DisconnectCause::ProtocolError
        }
    }
}

fn client_frame_error(error: &FrameError, peer: SocketAddr) -> DisconnectCause {
    if let FrameError::Io(io) = error {
        tracing::debug!(%peer, error = %io, "client connection error");
        return DisconnectCause::ClientClosed;
    }
    telemetry::protocol_error(error.kind());
    tracing::warn!(%peer, %error, "closing client connection");
    DisconnectCause::ProtocolError
}
