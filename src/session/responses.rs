//! The response half of a session: broker → client.
//!
//! Reads the head of each broker frame, pairs it with its in-flight entry by correlation id and
//! relays it as it arrives or, where the policy table says so, holds it whole to rewrite it or to
//! retry an admin request answered NOT_CONTROLLER; responses reach the client in request order.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::{
    BrokerReader, ClientWriter, InFlight, Leg, RESPONSE_HEAD, Session, UPSTREAM_LINGER, broker_frame_error,
    flush_responses, skip_frame,
};
use crate::admin_retry::RetryError;
use crate::cluster::Learned;
use crate::frame_reader::{Relay, relay_frame};
use crate::policy::policy;
use crate::rewrite::{self, RewriteError};
use crate::telemetry::{self, Direction, DisconnectCause, SessionErrorKind};
use crate::wire::{FrameError, response_correlation_id, response_error_code};

impl Session {
    /// Broker → client. Returns why it stopped, or `None` once every request was answered after
    /// the request half stopped. Responses already queued reach the client whatever the end.
    pub(super) async fn return_responses(
        &self,
        responses: &mut BrokerReader,
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
        responses: &mut BrokerReader,
        to_client: &mut ClientWriter,
        mut in_flight: mpsc::Receiver<InFlight>,
        leg: &Leg,
    ) -> Option<DisconnectCause> {
        let peer = self.peer;
        let mut waiting: VecDeque<InFlight> = VecDeque::new();
        let mut requests_open = true;
        loop {
            if let Err(cause) = self.answers_without_broker(&mut waiting, to_client).await {
                return Some(cause);
            }
            if !requests_open && waiting.is_empty() {
                if leg.unanswered_forwarded.load(Ordering::Relaxed) {
                    if let Err(cause) = flush_responses(to_client, peer).await {
                        return Some(cause);
                    }
                    linger(responses).await;
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
            // A response already buffered goes on without arming waiters; what the request half
            // queued is taken first, as the select below does.
            let mut ready = responses.peeked(RESPONSE_HEAD).ok().flatten().filter(|_| requests_open);
            while ready.is_some() {
                match in_flight.try_recv() {
                    Ok(entry) => waiting.push_back(entry),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => ready = None,
                }
            }
            let total = match ready {
                Some(total) => Ok(Some(total)),
                None => tokio::select! {
                    biased;
                    entry = in_flight.recv(), if requests_open => {
                        match entry {
                            Some(entry) => waiting.push_back(entry),
                            None => requests_open = false,
                        }
                        continue;
                    }
                    total = responses.peek(RESPONSE_HEAD) => total,
                },
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
            if let Err(cause) = self.answers_without_broker(&mut waiting, to_client).await {
                return Some(cause);
            }
            let Ok(correlation_id) = response_correlation_id(responses.head(total)) else {
                return Some(DisconnectCause::ProtocolError);
            };
            if waiting.front().is_none_or(|entry| entry.correlation_id != correlation_id) {
                // Some brokers answer acks=0 produce requests anyway; no client waits for that.
                telemetry::stray_response();
                tracing::debug!(%peer, correlation_id, "dropping response that matches no waiting request");
                if let Err(error) = skip_frame(responses, total).await {
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
                match relay_frame(responses, to_client, total, None).await {
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
            let (frame, held) = match self.hold_whole(responses, total, "response").await {
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

    /// The response the client gets for `entry`: rewritten where it carries addresses or
    /// versions, retried where it says NOT_CONTROLLER. A retry holds back every later response,
    /// so the client sees them in request order.
    async fn answer(&self, entry: &InFlight, frame: Bytes) -> Result<Bytes, DisconnectCause> {
        let peer = self.peer;
        if let Some(request) = &entry.admin {
            return self.ctx.retry.recover(request, frame, self.node_id).await.map_err(|e| retry_error_cause(e, peer));
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

    /// Sends the answers at the front of the queue that did not come over this connection: the
    /// sidecar's own (SASL) and the controller's, for requests sent straight to it, retried on
    /// 41 like any other. Each goes out as soon as every earlier response has.
    async fn answers_without_broker(
        &self,
        waiting: &mut VecDeque<InFlight>,
        to_client: &mut ClientWriter,
    ) -> Result<(), DisconnectCause> {
        while let Some(entry) = waiting.front() {
            if let Some(answer) = entry.local_answer.clone() {
                to_client.send(answer).await.map_err(|_| DisconnectCause::ClientClosed)?;
            } else if let (Some(request), Some((answer, controller))) = (&entry.admin, &entry.routed) {
                flush_responses(to_client, self.peer).await?;
                let answer = self.ctx.retry.recover(request, answer.clone(), Some(*controller)).await;
                let answer = answer.map_err(|error| retry_error_cause(error, self.peer))?;
                telemetry::bytes(Direction::SidecarToClient, answer.len());
                to_client.send(answer).await.map_err(|_| DisconnectCause::ClientClosed)?;
            } else {
                return Ok(());
            }
            let entry = waiting.pop_front().expect("front checked");
            telemetry::request_duration(entry.api_key, entry.received.elapsed());
        }
        Ok(())
    }

    /// Rewrites a response that carries addresses or versions and learns from it; others pass
    /// as they are.
    fn rewrite(&self, entry: &InFlight, frame: Bytes) -> Result<Bytes, RewriteError> {
        let Some(rewritten) = rewrite::response(entry.api_key, entry.api_version, &frame, &self.ctx.advertised)? else {
            return Ok(frame);
        };
        let metadata = entry.api_key == ApiKey::Metadata as i16;
        self.ctx.cluster.learn(&Learned {
            brokers: rewritten.brokers,
            controller_id: rewritten.controller_id,
            metadata,
        });
        Ok(rewritten.frame)
    }
}

/// The disconnect cause of a retry that failed.
fn retry_error_cause(error: RetryError, peer: std::net::SocketAddr) -> DisconnectCause {
    tracing::warn!(%peer, %error, "closing client connection");
    match error {
        RetryError::AnswerLost { .. } => DisconnectCause::RetryLost,
        RetryError::Malformed { .. } => DisconnectCause::ProtocolError,
    }
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
