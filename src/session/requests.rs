//! The request half of a session: client → broker.
//!
//! Reads the head of each client frame, peeks its header, records an in-flight entry for every
//! request that will be answered and relays the frame as it arrives, or holds it whole where the
//! policy table says so. It never decodes a request body beyond the header and Produce's `acks`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    BrokerWriter, ClientReader, InFlight, Leg, REQUEST_HEAD, RequestsEnd, Session, client_frame_error, flush_requests,
    idle, until,
};
use crate::admin_retry::AdminRequest;
use crate::client_auth::Admit;
use crate::frame_reader::{Relay, relay_frame};
use crate::policy::policy;
use crate::telemetry::{self, Direction, DisconnectCause, RequestCounters, SessionErrorKind};
use crate::wire::{FrameError, peek_request_header};

impl Session {
    /// Client → broker, until the client, the response half, shutdown or a session renewal stops
    /// it. Then the broker side is half-closed, so the broker processes every forwarded request
    /// and then closes its end; unless the connection may be shared ([`Leg::shareable`]): then it
    /// is handed back open.
    pub(super) async fn forward_requests(
        &self,
        requests: &mut ClientReader,
        mut to_broker: BrokerWriter,
        in_flight: mpsc::Sender<InFlight>,
        leg: &Leg,
    ) -> (RequestsEnd, Option<BrokerWriter>) {
        let end = self.forward_each_request(requests, &mut to_broker, in_flight, leg).await;
        if leg.shareable() && !to_broker.has_queued() {
            return (end, Some(to_broker));
        }
        let _ = to_broker.close().await;
        (end, None)
    }

    /// Sends a controller-bound request straight to the controller the sidecar knows, unless this
    /// connection already reaches it or the client authenticates itself. Returns the answer and
    /// who gave it, or `None` to send the request over this connection as usual.
    async fn route(
        &self,
        request: &AdminRequest,
        to_broker: &mut BrokerWriter,
        leg: &Leg,
    ) -> Result<Option<(Bytes, i32)>, RequestsEnd> {
        if leg.client_authenticates.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(controller) = self.ctx.retry.route_target(self.node_id) else {
            return Ok(None);
        };
        // What the client sent before goes out before this request's answer is awaited.
        flush_requests(to_broker, self.peer).await?;
        match self.ctx.retry.send_to_controller(request, controller).await {
            Ok(answer) => Ok(answer.map(|answer| (answer, controller))),
            Err(error) => {
                tracing::warn!(peer = %self.peer, %error, "closing client connection");
                Err(RequestsEnd::Disconnect(DisconnectCause::RetryLost))
            }
        }
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
        let idle_timeout = ctx.limits.client_idle_timeout;
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
            // A request already buffered (pipelined behind the last one) goes on without arming
            // timers and waiters, unless the session is to stop.
            let total = match requests.peeked(REQUEST_HEAD) {
                Ok(Some(total)) if !stopping(leg, &ctx.shutdown) => Ok(Some(total)),
                _ => {
                    let next = requests.peek(REQUEST_HEAD);
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return Disconnect(DisconnectCause::Shutdown),
                        _ = leg.responses_done.cancelled() => return RequestsEnd::ResponsesDone,
                        _ = idle(idle_timeout) => return Disconnect(DisconnectCause::Idle),
                        _ = until(leg.reauthenticate_at) => return RequestsEnd::Reauthenticate,
                        total = next => total,
                    }
                }
            };
            let total = match total {
                Ok(None) => {
                    // A clean end: between frames, every request answered.
                    let answered = leg.in_flight_slots.available_permits() == ctx.limits.max_inflight;
                    leg.clean_end.store(answered, Ordering::Relaxed);
                    return Disconnect(DisconnectCause::ClientClosed);
                }
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
            if policy(header.api_key).sasl && !answers_sasl {
                leg.client_authenticates.store(true, Ordering::Relaxed);
            }
            let mut routed = None;
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
                if let Some(request) = &admin {
                    routed = match self.route(request, to_broker, leg).await {
                        Ok(answer) => answer,
                        Err(end) => return end,
                    };
                }
                // An admin request is held until answered: it may be re-sent.
                let held = if admin.is_some() { whole.as_mut().and_then(|(_, held)| held.take()) } else { None };
                let goes_to_broker = routed.is_none();
                let entry = InFlight {
                    api_key: header.api_key,
                    api_version: header.api_version,
                    correlation_id: header.correlation_id,
                    received,
                    admin,
                    local_answer: local_answer.clone(),
                    routed,
                    _slot: slot,
                    _held: held,
                };
                if in_flight.send(entry).await.is_err() {
                    return RequestsEnd::ResponsesDone;
                }
                if !goes_to_broker {
                    continue;
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
}

/// Whether the request half must stop before reading on: shutdown, the response half's end or a
/// due SASL renewal (what the wait in `forward_each_request` selects on, short of idleness).
fn stopping(leg: &Leg, shutdown: &CancellationToken) -> bool {
    shutdown.is_cancelled()
        || leg.responses_done.is_cancelled()
        || leg.reauthenticate_at.is_some_and(|at| Instant::now() >= at)
}
