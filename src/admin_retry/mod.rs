//! Transparent retry of controller-bound admin requests answered with NOT_CONTROLLER (41).
//!
//! A ZooKeeper-mode broker that is not the controller answers these requests with 41 before any
//! validation. Sessions send these requests straight to the controller the sidecar knows
//! ([`AdminRetry::route_target`], [`AdminRetry::send_to_controller`]). When a response carries 41
//! anyway (per topic, partition or user, or at the top level, as each API reports it), the failed
//! entries are re-sent over the sidecar's own connections to every broker not yet heard saying
//! 41, the known controller first, the answers merged into the client's response in the original
//! order; only once every broker has said 41 does it back off (from a few milliseconds, with
//! jitter), ask who the controller is and go round again, until no entry says 41 or the request's
//! own timeout (capped by configuration) runs out; then the client gets the last real answer. Only
//! explicit 41 answers are retried; a request that may have been applied is never re-sent.

pub mod layout;
pub mod plan;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

pub use layout::{Granularity, granularity};
use layout::{RequestLayout, ResponseLayout};

use crate::backoff::Backoff;
pub use crate::config::RetryPolicy;
use crate::telemetry::{self, RetryOutcome};
use crate::wire::{DecodeError, response_body_offset};

/// A future the links return, boxed so that the retry can hold any implementation.
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LinkError>> + Send + 'a>>;

/// How the retry reaches the cluster: the one interface it needs, implemented over the sidecar's
/// own broker connections (`control::Links`) and by scripted fakes in tests.
pub trait ControllerLinks: Send + Sync {
    /// Every known broker's node id.
    fn node_ids(&self) -> Vec<i32>;
    /// The controller as the sidecar knows it now, without asking anyone.
    fn known_controller(&self) -> Option<i32> {
        None
    }
    /// Which broker `node_id` reports as the controller (`None`: it reports none).
    fn controller_as_seen_by(&self, node_id: i32) -> LinkFuture<'_, Option<i32>>;
    /// Sends a client's request frame to broker `node_id` and returns its answer, with the
    /// client's correlation id.
    fn forward<'a>(&'a self, node_id: i32, request: &'a [u8]) -> LinkFuture<'a, Bytes>;
}

/// Why a link gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct LinkError {
    /// Whether the request may have reached the broker (so it must not be sent again).
    pub maybe_applied: bool,
    pub reason: String,
}

/// The NOT_CONTROLLER retry, as sessions hold it: the policy and the links to the cluster.
pub struct AdminRetry {
    policy: RetryPolicy,
    links: Arc<dyn ControllerLinks>,
}

impl std::fmt::Debug for AdminRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRetry").field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// The client request a response answers, as the retry needs it.
#[derive(Debug, Clone)]
pub struct AdminRequest {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub frame: Bytes,
    pub body_offset: usize,
    pub received: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("malformed {api} v{version}: {source}")]
    Malformed { api: &'static str, version: i16, source: DecodeError },
    #[error("retried {api} request may have been applied but its answer was lost: {reason}")]
    AnswerLost { api: &'static str, reason: String },
}

impl AdminRetry {
    pub fn new(policy: RetryPolicy, links: Arc<dyn ControllerLinks>) -> Self {
        AdminRetry { policy, links }
    }

    /// The broker a controller-bound request arriving for broker `via` (`None`: the bootstrap
    /// listener) goes to instead: the known controller, unless that is `via` itself or unknown.
    pub fn route_target(&self, via: Option<i32>) -> Option<i32> {
        self.links.known_controller().filter(|controller| via != Some(*controller))
    }

    /// Sends `request` straight to broker `controller` over the sidecar's own connection.
    /// `Ok(None)`: it could not be sent (no connection), so the caller sends it its own way;
    /// `Ok(Some(answer))`: the broker's answer, to be given to [`AdminRetry::recover`]; an error
    /// when the request may have been applied but its answer was lost.
    pub async fn send_to_controller(
        &self,
        request: &AdminRequest,
        controller: i32,
    ) -> Result<Option<Bytes>, RetryError> {
        let api = crate::wire::api_name(request.api_key as i16);
        let sent = tokio::time::timeout(self.policy.budget, self.links.forward(controller, &request.frame)).await;
        match sent {
            Ok(Ok(answer)) => {
                telemetry::admin_routed(api);
                Ok(Some(answer))
            }
            Ok(Err(error)) if !error.maybe_applied => {
                tracing::debug!(api, controller, %error, "cannot reach the controller; sending the usual way");
                Ok(None)
            }
            Ok(Err(error)) => Err(RetryError::AnswerLost { api, reason: error.to_string() }),
            Err(_) => Err(RetryError::AnswerLost { api, reason: "no answer from the controller in time".into() }),
        }
    }

    /// Returns the response the client should see: `response` itself unless it carries
    /// NOT_CONTROLLER, else the result of retrying against the controller. `answered_by` is the
    /// node id of the broker that answered, when known.
    pub async fn recover(
        &self,
        request: &AdminRequest,
        response: Bytes,
        answered_by: Option<i32>,
    ) -> Result<Bytes, RetryError> {
        let Some(granularity) = granularity(request.api_key as i16) else {
            return Ok(response);
        };
        let first = read_response(request, &response)?;
        let (response, layout) = if plan::has_not_controller(&first) {
            let requested = layout::request(request.api_key, request.api_version, &request.frame, request.body_offset)
                .map_err(|source| malformed(request, source))?;
            Retry { retry: self, request, granularity, requested, answered_by }.run(response, first).await?
        } else {
            (response, first)
        };
        for code in plan::error_codes(&layout) {
            telemetry::response_error(request.api_key as i16, code);
        }
        Ok(response)
    }
}

struct Retry<'a> {
    retry: &'a AdminRetry,
    request: &'a AdminRequest,
    granularity: Granularity,
    requested: RequestLayout,
    answered_by: Option<i32>,
}

impl Retry<'_> {
    async fn run(
        self,
        mut current: Bytes,
        mut current_layout: ResponseLayout,
    ) -> Result<(Bytes, ResponseLayout), RetryError> {
        let api = crate::wire::api_name(self.request.api_key as i16);
        let policy = self.retry.policy;
        let deadline = self.request.received + self.budget(&policy);
        let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff);
        // Brokers that answered 41 in this round. A ZooKeeper-mode broker answers 41 before doing
        // anything, so trying one is harmless: every other broker is tried before backing off.
        let mut said_not_controller: Vec<i32> = self.answered_by.into_iter().collect();
        let mut reported = self.retry.links.known_controller();
        let mut attempts = 0u32;
        loop {
            let Some(target) = self.next_target(reported, &said_not_controller) else {
                // Every broker said 41: the controller is moving or there is none. Back off, then
                // ask who it is and go round again.
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.next_delay().min(left)).await;
                if Instant::now() >= deadline {
                    return Ok(self.exhausted(api, attempts, current, current_layout));
                }
                said_not_controller.clear();
                let left = deadline.saturating_duration_since(Instant::now());
                let last = self.answered_by;
                if let Ok(found) = tokio::time::timeout(left, self.find_controller(last)).await {
                    reported = found.or(reported);
                }
                continue;
            };
            if Instant::now() >= deadline {
                return Ok(self.exhausted(api, attempts, current, current_layout));
            }
            attempts += 1;
            let retry_request = match self.granularity {
                Granularity::TopLevel => self.request.frame.clone(),
                Granularity::PerEntry => {
                    let failed = plan::not_controller_paths(&current_layout);
                    plan::subset_request(&self.request.frame, &self.requested, &failed)
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let answer = tokio::time::timeout(remaining, self.retry.links.forward(target, &retry_request));
            let answer = match answer.await {
                Ok(Ok(answer)) => answer,
                Ok(Err(error)) if error.maybe_applied => {
                    telemetry::not_controller_retry(api, RetryOutcome::Lost);
                    return Err(RetryError::AnswerLost { api, reason: error.to_string() });
                }
                Ok(Err(error)) => {
                    // Unreachable this round: counted with the brokers that said 41.
                    tracing::debug!(api, target, %error, "cannot reach a broker for the retry");
                    said_not_controller.push(target);
                    continue;
                }
                Err(_) => {
                    telemetry::not_controller_retry(api, RetryOutcome::Lost);
                    let reason = "no answer before the request's deadline".to_owned();
                    return Err(RetryError::AnswerLost { api, reason });
                }
            };
            let answer_layout = read_response(self.request, &answer)?;
            (current, current_layout) = match self.granularity {
                Granularity::TopLevel => (answer, answer_layout),
                Granularity::PerEntry => {
                    let merged = plan::merge(&current, &current_layout, &answer, &answer_layout);
                    let merged_layout = read_response(self.request, &merged)?;
                    (merged, merged_layout)
                }
            };
            if !plan::has_not_controller(&current_layout) {
                tracing::debug!(api, attempts, target, "NOT_CONTROLLER recovered");
                telemetry::not_controller_retry(api, RetryOutcome::Recovered);
                return Ok((current, current_layout));
            }
            said_not_controller.push(target);
        }
    }

    fn exhausted(
        &self,
        api: &'static str,
        attempts: u32,
        current: Bytes,
        layout: ResponseLayout,
    ) -> (Bytes, ResponseLayout) {
        tracing::warn!(api, attempts, "NOT_CONTROLLER retries exhausted; returning the last answer");
        telemetry::not_controller_retry(api, RetryOutcome::Exhausted);
        (current, layout)
    }

    /// The request's own timeout, capped by the configured budget.
    fn budget(&self, policy: &RetryPolicy) -> Duration {
        match self.requested.timeout_ms {
            Some(ms) if ms > 0 => Duration::from_millis(ms as u64).min(policy.budget),
            _ => policy.budget,
        }
    }

    /// The next broker to try: the reported controller, unless it said 41 this round, else the
    /// lowest known node id that has not; `None` once every broker has.
    fn next_target(&self, reported: Option<i32>, said_not_controller: &[i32]) -> Option<i32> {
        if let Some(reported) = reported.filter(|id| !said_not_controller.contains(id)) {
            return Some(reported);
        }
        let mut untried = self.retry.links.node_ids();
        untried.retain(|id| !said_not_controller.contains(id));
        untried.into_iter().min()
    }

    /// Asks brokers other than `not_from` (the last one that answered 41, whose view of the
    /// controller may be stale) which broker is the controller.
    async fn find_controller(&self, not_from: Option<i32>) -> Option<i32> {
        let mut candidates = self.retry.links.node_ids();
        candidates.sort_by_key(|id| Some(*id) == not_from);
        for node_id in candidates {
            match self.retry.links.controller_as_seen_by(node_id).await {
                Ok(Some(controller)) => return Some(controller),
                Ok(None) => {}
                Err(error) => tracing::debug!(node_id, %error, "metadata refresh for retry failed"),
            }
        }
        None
    }
}

fn read_response(request: &AdminRequest, response: &[u8]) -> Result<ResponseLayout, RetryError> {
    let body = response_body_offset(response, request.api_key, request.api_version)
        .map_err(|source| malformed(request, source))?;
    layout::response(request.api_key, request.api_version, response, body).map_err(|source| malformed(request, source))
}

fn malformed(request: &AdminRequest, source: DecodeError) -> RetryError {
    RetryError::Malformed { api: crate::wire::api_name(request.api_key as i16), version: request.api_version, source }
}

#[cfg(test)]
mod recover_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod top_level_tests;
