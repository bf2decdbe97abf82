//! One client connection, end to end.
//!
//! Two halves run side by side. `forward_requests` reads the head of each client frame, peeks its
//! header, records an in-flight entry for every request that will be answered and relays the frame
//! unchanged as it arrives. `return_responses` reads the head of each broker frame, pairs it with
//! its in-flight entry by correlation id, relays it to the client as it arrives or, where the
//! policy table says so, holds it whole to rewrite addresses or versions or to retry an admin
//! request answered NOT_CONTROLLER; responses reach the client in request order. On shutdown the
//! request half stops reading and the response half delivers what is in flight. It never decodes
//! a Produce or Fetch body and never holds a frame whole that the table lets pass.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::admin_retry::{self, AdminRequest, RetryError};
use crate::client_auth::{Admit, Gate};
use crate::frame_reader::{FrameReader, Relay, relay_frame};
use crate::frame_writer::FrameWriter;
use crate::listener::{Target, ensure_broker_listener};
use crate::policy::policy;
use crate::rewrite::{self, RewriteError};
use crate::server::Context;
use crate::stream::Stream;
use crate::telemetry::{self, Direction, DisconnectCause, RequestCounters, SessionErrorKind, UpstreamConnection};
use crate::tls::TlsError;
use crate::upstream::{ConnectError, Connected};
use crate::wire::{FrameCodec, FrameError, peek_request_header, response_correlation_id, response_error_code};

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
}

/// What one client connection is: who it is and which broker it is bound to.
struct Session {
    ctx: Arc<Context>,
    peer: SocketAddr,
    /// The broker node this connection reaches (`None` for the bootstrap listener).
    node_id: Option<i32>,
    /// The client's authentication to the sidecar, across broker connections.
    gate: Gate,
}

/// Serves one accepted client until either side closes or the sidecar shuts down.
pub async fn serve(ctx: Arc<Context>, client: TcpStream, peer: SocketAddr, target: Target) {
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
            tracing::debug!(%peer, broker = %upstream.addr, "upstream connected");
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
            return Ok(Stream::Plain(tcp));
        };
        let handshake = tokio::time::timeout(self.ctx.config.upstream.connect_timeout, tls.accept(tcp)).await;
        let tls_stream = handshake
            .map_err(|_| TlsError::Handshake { host: "client".into(), reason: "handshake timed out".into() })??;
        Ok(Stream::Tls(Box::new(tls_stream.into())))
    }

    async fn connect_upstream(&self) -> Result<Connected, ConnectError> {
        let ctx = &self.ctx;
        let addresses = match self.node_id {
            None => ctx.bootstrap_addresses(),
            Some(node_id) => ctx.topology.address(node_id).into_iter().collect(),
        };
        let node = telemetry::node_label(self.node_id);
        let result = ctx.connector.connect_any(&addresses, &node).await;
        if result.is_err() && self.node_id.is_some() {
            // The broker may have moved: learn its new address for the client's retry.
            ctx.topology.request_refresh();
        }
        result
    }

    /// Proxies until the client connection ends. When the broker limits its SASL session
    /// (KIP-368), the client connection moves to a freshly authenticated broker connection before
    /// the deadline, once every request in flight is answered.
    async fn proxy(&self, client: Stream, mut upstream: Connected) -> DisconnectCause {
        let max_frame = self.ctx.config.max_frame_bytes;
        let (client_read, client_write) = tokio::io::split(client);
        let mut requests = FrameReader::new(client_read, FrameCodec::requests(max_frame));
        let mut to_client = FrameWriter::new(client_write);
        loop {
            match self.proxy_on(&mut requests, &mut to_client, upstream).await {
                RequestsEnd::Disconnect(cause) => return cause,
                RequestsEnd::ResponsesDone => return DisconnectCause::ClientClosed,
                RequestsEnd::Reauthenticate => match self.connect_upstream().await {
                    Ok(next) => {
                        tracing::debug!(peer = %self.peer, broker = %next.addr, "broker session renewed");
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

    /// Proxies over one broker connection until either side stops.
    async fn proxy_on(
        &self,
        requests: &mut ClientReader,
        to_client: &mut ClientWriter,
        upstream: Connected,
    ) -> RequestsEnd {
        let _open = UpstreamConnection::open(&telemetry::node_label(self.node_id));
        let max_frame = self.ctx.config.max_frame_bytes;
        let (upstream_read, upstream_write) = tokio::io::split(upstream.stream);
        let to_broker = FrameWriter::new(upstream_write);
        let responses = FrameReader::new(upstream_read, FrameCodec::responses(max_frame));

        let (in_flight_tx, in_flight_rx) = mpsc::channel(self.ctx.config.max_inflight);
        let leg = Leg {
            responses_done: CancellationToken::new(),
            reauthenticate_at: upstream.reauthenticate_at,
            unanswered_forwarded: AtomicBool::new(false),
            in_flight_slots: Arc::new(Semaphore::new(self.ctx.config.max_inflight)),
        };
        let forward = self.forward_requests(requests, to_broker, in_flight_tx, &leg);
        let answer = async {
            let cause = self.return_responses(responses, to_client, in_flight_rx, &leg).await;
            leg.responses_done.cancel();
            cause
        };
        match tokio::join!(forward, answer) {
            (_, Some(cause)) => RequestsEnd::Disconnect(cause),
            (end, None) => end,
        }
    }

    /// Client → broker, until the client, the response half, shutdown or a session renewal stops
    /// it. Then the broker side is half-closed, so the broker processes every forwarded request
    /// and then closes its end.
    async fn forward_requests(
        &self,
        requests: &mut ClientReader,
        mut to_broker: BrokerWriter,
        in_flight: mpsc::Sender<InFlight>,
        leg: &Leg,
    ) -> RequestsEnd {
        let end = self.forward_each_request(requests, &mut to_broker, in_flight, leg).await;
        let _ = to_broker.close().await;
        end
    }

    async fn forward_each_request(
        &self,
        requests: &mut ClientReader,
        to_broker: &mut BrokerWriter,
        in_flight: mpsc::Sender<InFlight>,
        leg: &Leg,
    ) -> RequestsEnd {
        use RequestsEnd::Disconnect;
        let (ctx, peer) = (&self.ctx, self.peer);
        let mut counters = RequestCounters::new(telemetry::node_label(self.node_id));
        let idle_timeout = ctx.config.client_idle_timeout;
        let answers_sasl = self.gate.answers_sasl();
        loop {
            // Requests the client sent together go out together, and none waits in the queue
            // while the next one has yet to arrive.
            if to_broker.has_queued()
                && !requests.holds_whole_frame()
                && let Err(end) = flush_requests(to_broker, peer).await
            {
                return end;
            }
            let next = requests.peek(REQUEST_HEAD);
            let total = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Disconnect(DisconnectCause::Shutdown),
                _ = leg.responses_done.cancelled() => return RequestsEnd::ResponsesDone,
                _ = idle(idle_timeout) => return Disconnect(DisconnectCause::Idle),
                _ = until(leg.reauthenticate_at) => return RequestsEnd::Reauthenticate,
                total = next => total,
            };
            let total = match total {
                Ok(None) => return Disconnect(DisconnectCause::ClientClosed),
                Ok(Some(total)) => total,
                Err(error) => return Disconnect(client_frame_error(&error, peer)),
            };
            let received = Instant::now();
            telemetry::bytes(Direction::ClientToSidecar, total);
            let head = requests.head(total);
            let header = match peek_request_header(head) {
                Ok(header) => header,
                Err(error) => {
                    telemetry::protocol_error(SessionErrorKind::BadRequestHeader);
                    tracing::warn!(%peer, %error, "malformed request header; closing client");
                    return Disconnect(DisconnectCause::ProtocolError);
                }
            };
            counters.count(header.api_key);
            let expects_response = match header.expects_response(head) {
                Ok(expects) => expects,
                Err(error) => {
                    telemetry::protocol_error(SessionErrorKind::BadRequestBody);
                    let client_id = header.client_id(head);
                    tracing::warn!(%peer, client_id, %error, "malformed produce request; closing client");
                    return Disconnect(DisconnectCause::ProtocolError);
                }
            };
            // The few requests the sidecar may re-send or answers itself are held whole; every
            // other request is relayed as it arrives.
            let mut whole = None;
            if policy(header.api_key).holds_request(answers_sasl) {
                match self.hold_whole(requests, total, "request").await {
                    Ok(held) => whole = Some(held),
                    Err(error @ FrameError::Io(_)) => return Disconnect(client_frame_error(&error, peer)),
                    Err(error) => return Disconnect(self.held_frame_error(&error)),
                }
            }
            let (local_answer, close_after) = match self.gate.admit(&header, whole.as_ref().map(|(f, _)| &f[..])) {
                Admit::Forward => (None, false),
                Admit::Answer(answer) => (Some(answer), false),
                Admit::AnswerAndClose(answer) => (Some(answer), true),
                Admit::Refuse => return Disconnect(DisconnectCause::Unauthenticated),
            };
            if !expects_response {
                leg.unanswered_forwarded.store(true, Ordering::Relaxed);
            }
            if expects_response {
                // Waiting for a slot means waiting for answers to the requests still queued.
                if leg.in_flight_slots.available_permits() == 0
                    && let Err(end) = flush_requests(to_broker, peer).await
                {
                    return end;
                }
                let slot = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Disconnect(DisconnectCause::Shutdown),
                    _ = leg.responses_done.cancelled() => return RequestsEnd::ResponsesDone,
                    slot = leg.in_flight_slots.clone().acquire_owned() => slot.expect("never closed"),
                };
                let admin = match (ApiKey::try_from(header.api_key), header.body_offset, &whole) {
                    (Ok(api_key), Some(body_offset), Some((frame, _))) if policy(header.api_key).retry.is_some() => {
                        let api_version = header.api_version;
                        Some(AdminRequest { api_key, api_version, frame: frame.clone(), body_offset, received })
                    }
                    _ => None,
                };
                // An admin request is held until answered: it may be re-sent.
                let held = if admin.is_some() { whole.as_mut().and_then(|(_, held)| held.take()) } else { None };
                let entry = InFlight {
                    api_key: header.api_key,
                    api_version: header.api_version,
                    correlation_id: header.correlation_id,
                    received,
                    admin,
                    local_answer: local_answer.clone(),
                    _slot: slot,
                    _held: held,
                };
                if in_flight.send(entry).await.is_err() {
                    return RequestsEnd::ResponsesDone;
                }
            }
            if close_after {
                return Disconnect(DisconnectCause::Unauthenticated);
            }
            if local_answer.is_some() {
                continue;
            }
            telemetry::bytes(Direction::SidecarToBroker, total);
            match whole {
                Some((frame, _)) => to_broker.feed(frame),
                None => match relay_frame(requests, to_broker, total, idle_timeout).await {
                    Ok(()) => {}
                    Err(Relay::Idle) => return Disconnect(DisconnectCause::Idle),
                    Err(Relay::Read(error)) => return Disconnect(client_frame_error(&error, peer)),
                    Err(Relay::Write(error)) => {
                        tracing::info!(%peer, %error, "broker connection lost while forwarding");
                        return Disconnect(DisconnectCause::BrokerClosed);
                    }
                },
            }
        }
    }

    /// Broker → client. Returns why it stopped, or `None` once every request was answered after
    /// the request half stopped. Responses already queued reach the client whatever the end.
    async fn return_responses(
        &self,
        responses: BrokerReader,
        to_client: &mut ClientWriter,
        in_flight: mpsc::Receiver<InFlight>,
        leg: &Leg,
    ) -> Option<DisconnectCause> {
        let end = self.return_each_response(responses, to_client, in_flight, leg).await;
        match to_client.flush().await {
            Ok(()) => end,
            Err(error) => {
                tracing::debug!(peer = %self.peer, %error, "client went away before its response");
                end.or(Some(DisconnectCause::ClientClosed))
            }
        }
    }

    async fn return_each_response(
        &self,
        mut responses: BrokerReader,
        to_client: &mut ClientWriter,
        mut in_flight: mpsc::Receiver<InFlight>,
        leg: &Leg,
    ) -> Option<DisconnectCause> {
        let peer = self.peer;
        let mut waiting: VecDeque<InFlight> = VecDeque::new();
        let mut requests_open = true;
        loop {
            if let Err(cause) = send_local_answers(&mut waiting, to_client).await {
                return Some(cause);
            }
            if !requests_open && waiting.is_empty() {
                if leg.unanswered_forwarded.load(Ordering::Relaxed) {
                    if let Err(cause) = flush_responses(to_client, peer).await {
                        return Some(cause);
                    }
                    linger(&mut responses).await;
                }
                return None;
            }
            // Responses the broker sent together go out together, and none waits in the queue
            // while the next one has yet to arrive.
            if to_client.has_queued()
                && !responses.holds_whole_frame()
                && let Err(cause) = flush_responses(to_client, peer).await
            {
                return Some(cause);
            }
            let total = tokio::select! {
                biased;
                entry = in_flight.recv(), if requests_open => {
                    match entry {
                        Some(entry) => waiting.push_back(entry),
                        None => requests_open = false,
                    }
                    continue;
                }
                total = responses.peek(RESPONSE_HEAD) => total,
            };
            let total = match total {
                Ok(Some(total)) => total,
                Ok(None) => return Some(DisconnectCause::BrokerClosed),
                Err(error) => return Some(broker_frame_error(error, peer)),
            };
            telemetry::bytes(Direction::BrokerToSidecar, total);
            // The request was queued before it was sent, so its entry is already in the channel.
            while let Ok(entry) = in_flight.try_recv() {
                waiting.push_back(entry);
            }
            if let Err(cause) = send_local_answers(&mut waiting, to_client).await {
                return Some(cause);
            }
            let Ok(correlation_id) = response_correlation_id(responses.head(total)) else {
                return Some(DisconnectCause::ProtocolError);
            };
            if waiting.front().is_none_or(|entry| entry.correlation_id != correlation_id) {
                // Some brokers answer acks=0 produce requests anyway; no client waits for that.
                telemetry::stray_response();
                tracing::debug!(%peer, correlation_id, "dropping response that matches no waiting request");
                if let Err(error) = skip_frame(&mut responses, total).await {
                    return Some(broker_frame_error(error, peer));
                }
                continue;
            }
            let entry = waiting.pop_front().expect("front checked");
            if !policy(entry.api_key).holds_response() {
                if let Some(code) = response_error_code(entry.api_key, entry.api_version, responses.head(total)) {
                    telemetry::response_error(entry.api_key, code);
                }
                telemetry::bytes(Direction::SidecarToClient, total);
                match relay_frame(&mut responses, to_client, total, None).await {
                    Ok(()) => {}
                    Err(Relay::Idle) => return Some(DisconnectCause::BrokerClosed),
                    Err(Relay::Read(error)) => return Some(broker_frame_error(error, peer)),
                    Err(Relay::Write(error)) => {
                        tracing::debug!(%peer, %error, "client went away before its response");
                        return Some(DisconnectCause::ClientClosed);
                    }
                }
                telemetry::request_duration(entry.api_key, entry.received.elapsed());
                continue;
            }
            // A NOT_CONTROLLER retry may take a while: what is ready goes out first.
            if entry.admin.is_some()
                && let Err(cause) = flush_responses(to_client, peer).await
            {
                return Some(cause);
            }
            let (frame, held) = match self.hold_whole(&mut responses, total, "response").await {
                Ok(whole) => whole,
                Err(error @ FrameError::Io(_)) => return Some(broker_frame_error(error, peer)),
                Err(error) => return Some(self.held_frame_error(&error)),
            };
            let frame = match self.answer(&entry, frame).await {
                Ok(frame) => frame,
                Err(cause) => return Some(cause),
            };
            telemetry::bytes(Direction::SidecarToClient, frame.len());
            to_client.feed(frame);
            // A frame held whole leaves the budget once written.
            if held.is_some()
                && let Err(cause) = flush_responses(to_client, peer).await
            {
                return Some(cause);
            }
            telemetry::request_duration(entry.api_key, entry.received.elapsed());
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
        let limit = self.ctx.config.max_buffered_frame_bytes;
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

    /// The response the client gets for `entry`: rewritten where it carries addresses or
    /// versions, retried where it says NOT_CONTROLLER. A retry holds back every later response,
    /// so the client sees them in request order.
    async fn answer(&self, entry: &InFlight, frame: Bytes) -> Result<Bytes, DisconnectCause> {
        let peer = self.peer;
        if let Some(request) = &entry.admin {
            return admin_retry::recover(&self.ctx, request, frame, self.node_id).await.map_err(|error| {
                tracing::warn!(%peer, %error, "closing client connection");
                match error {
                    RetryError::AnswerLost { .. } => DisconnectCause::RetryLost,
                    RetryError::Malformed { .. } => DisconnectCause::ProtocolError,
                }
            });
        }
        if let Some(code) = response_error_code(entry.api_key, entry.api_version, &frame) {
            telemetry::response_error(entry.api_key, code);
        }
        self.rewrite(entry, frame).map_err(|error| {
            telemetry::protocol_error(SessionErrorKind::BadResponseBody);
            tracing::warn!(%peer, %error, "cannot rewrite broker response; closing client");
            DisconnectCause::ProtocolError
        })
    }

    /// Rewrites a response that carries addresses or versions and learns from it; others pass
    /// as they are.
    fn rewrite(&self, entry: &InFlight, frame: Bytes) -> Result<Bytes, RewriteError> {
        let ctx = &self.ctx;
        let Some(rewritten) = rewrite::response(entry.api_key, entry.api_version, &frame, &ctx.config.advertised)?
        else {
            return Ok(frame);
        };
        if !rewritten.brokers.is_empty() || rewritten.controller_id.is_some() {
            ctx.topology.learn(&rewritten.brokers, rewritten.controller_id);
        }
        if entry.api_key == ApiKey::Metadata as i16 {
            ctx.topology.metadata_received();
        }
        for broker in &rewritten.brokers {
            ensure_broker_listener(ctx, broker.node_id);
        }
        Ok(rewritten.frame)
    }
}

/// Sends the sidecar's own answers at the front of the queue: each goes out as soon as every
/// earlier response has.
async fn send_local_answers(
    waiting: &mut VecDeque<InFlight>,
    to_client: &mut ClientWriter,
) -> Result<(), DisconnectCause> {
    while let Some(answer) = waiting.front().and_then(|entry| entry.local_answer.clone()) {
        let entry = waiting.pop_front().expect("front checked");
        to_client.send(answer).await.map_err(|_| DisconnectCause::ClientClosed)?;
        telemetry::request_duration(entry.api_key, entry.received.elapsed());
    }
    Ok(())
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

/// Reads what the broker still sends after the last answered request (answers to acks=0 produce
/// requests from brokers that send them) until it closes its half-closed end. Closing a socket
/// with unread data would reset the connection and could make the broker drop requests it has
/// received but not yet processed.
async fn linger(responses: &mut BrokerReader) {
    let drain = async {
        while let Ok(Some(total)) = responses.peek(RESPONSE_HEAD).await {
            telemetry::stray_response();
            if skip_frame(responses, total).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(UPSTREAM_LINGER, drain).await;
}
