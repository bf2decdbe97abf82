//! The sidecar's own long-lived connections to the cluster: one that refreshes metadata, and one
//! per broker ([`Links`]) for admin retries and targeted metadata reads.
//!
//! Metadata is refreshed periodically and whenever a session asks, so the broker map and
//! controller id are always known. A broker may close a connection while it idles
//! (`connections.max.idle.ms`): a request that finds its connection stale reconnects and, when it
//! had not been sent, goes again; a request that may have reached the broker is never re-sent.
//! Failures back off instead of retrying in a loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest};
use kafka_protocol::protocol::Encodable;
use tokio_util::codec::Framed;

use crate::rewrite::{self, Endpoint};
use crate::server::Context;
use crate::stream::Stream;
use crate::telemetry::{self, RefreshResult};
use crate::upstream::ConnectError;
use crate::wire::{self, DecodeError, EncodeError, FrameCodec, FrameError, Reader, encode_request};

/// The Metadata version the control connection asks for, at most.
const MAX_METADATA_VERSION: i16 = 12;
/// The least time a metadata request on the control connection is given.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Metadata v1 is the first with a controller id and an empty-topics form.
const MIN_METADATA_VERSION: i16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("control connection: {0}")]
    Frame(#[from] FrameError),
    #[error("control connection closed by the broker")]
    Closed,
    #[error("no answer from the broker within {0:?}")]
    TimedOut(Duration),
    #[error("unexpected response: {0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Rewrite(#[from] rewrite::RewriteError),
    #[error("broker supports no Metadata version between {MIN_METADATA_VERSION} and {MAX_METADATA_VERSION}")]
    NoMetadataVersion,
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("broker {0} is not known")]
    UnknownBroker(i32),
    #[error("connection lost after the request was sent: {0}")]
    LostInFlight(String),
}

impl ControlError {
    /// Whether the request may have reached the broker (so it must not be sent again).
    pub fn maybe_applied(&self) -> bool {
        matches!(self, ControlError::LostInFlight(_))
    }
}

/// Refreshes metadata until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let mut connection: Option<ControlConnection> = None;
    let mut failures = 0u32;
    loop {
        match refresh(&ctx, &mut connection).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!("metadata refresh recovered");
                }
                failures = 0;
                ctx.topology.set_reachable(true);
                telemetry::metadata_refresh(RefreshResult::Ok);
            }
            Err(error) => {
                connection = None;
                if failures == 0 {
                    tracing::warn!(%error, "metadata refresh failed");
                } else {
                    tracing::debug!(%error, failures, "metadata refresh failed again");
                }
                failures += 1;
                ctx.topology.set_reachable(false);
                telemetry::metadata_refresh(RefreshResult::Error);
            }
        }
        let wait = if failures == 0 {
            ctx.config.metadata_refresh
        } else {
            (Duration::from_millis(250) * 2u32.pow(failures.min(6))).min(ctx.config.metadata_refresh)
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.topology.refresh_requested() => {
                // Many sessions may ask at once: let their requests coalesce.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn refresh(ctx: &Arc<Context>, connection: &mut Option<ControlConnection>) -> Result<(), ControlError> {
    if let Some(conn) = connection.as_mut()
        && conn.is_stale().await
    {
        *connection = None;
    }
    let reused = connection.is_some();
    if !reused {
        *connection = Some(ControlConnection::open(ctx).await?);
    }
    let conn = connection.as_mut().expect("connection just set");
    let result = match conn.fetch_metadata(ctx).await {
        Err(error) if reused => {
            tracing::debug!(%error, "control connection went stale; reconnecting");
            *connection = Some(ControlConnection::open(ctx).await?);
            connection.as_mut().expect("connection just set").fetch_metadata(ctx).await
        }
        other => other,
    };
    let (brokers, controller_id) = result?;
    ctx.topology.learn(&brokers, controller_id);
    ctx.topology.metadata_received();
    for broker in &brokers {
        crate::listener::ensure_broker_listener(ctx, broker.node_id);
    }
    Ok(())
}

struct ControlConnection {
    framed: Framed<Stream, FrameCodec>,
    /// When the SASL session must be renewed (KIP-368): the connection is replaced before then.
    reauthenticate_at: Option<Instant>,
    /// How long the sidecar's own metadata requests may wait for an answer.
    request_timeout: Duration,
    metadata_version: i16,
    next_correlation_id: i32,
}

impl ControlConnection {
    async fn open(ctx: &Context) -> Result<Self, ControlError> {
        Self::open_to(ctx, &ctx.bootstrap_addresses()).await
    }

    async fn open_to(ctx: &Context, addresses: &[String]) -> Result<Self, ControlError> {
        let connected = ctx.connector.connect_any(addresses, "control").await?;
        tracing::debug!(addr = %connected.addr, "control connection open");
        let framed = Framed::new(connected.stream, FrameCodec::responses(ctx.config.max_frame_bytes));
        let mut conn = ControlConnection {
            framed,
            reauthenticate_at: connected.reauthenticate_at,
            request_timeout: ctx.config.upstream.connect_timeout.max(MIN_REQUEST_TIMEOUT),
            metadata_version: MIN_METADATA_VERSION,
            next_correlation_id: 0,
        };
        let response = conn.round_trip(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default()).await?;
        let broker_max = metadata_max_version(&response[8..])?;
        if broker_max < MIN_METADATA_VERSION {
            return Err(ControlError::NoMetadataVersion);
        }
        conn.metadata_version = broker_max.min(MAX_METADATA_VERSION);
        Ok(conn)
    }

    async fn fetch_metadata(&mut self, ctx: &Context) -> Result<(Vec<Endpoint>, Option<i32>), ControlError> {
        let request = MetadataRequest::default().with_topics(Some(Vec::new()));
        let version = self.metadata_version;
        let frame = self.round_trip(ApiKey::Metadata, version, &request).await?;
        let rewritten = rewrite::response(ApiKey::Metadata as i16, version, &frame, &ctx.config.advertised)?
            .expect("metadata responses are walked");
        Ok((rewritten.brokers, rewritten.controller_id))
    }

    /// Whether the broker has closed this idle connection (its end reads as closed right away).
    /// Also stale once its SASL session is due for renewal: a fresh connection authenticates
    /// anew, and nothing sent on it can be cut off by the broker's session deadline.
    async fn is_stale(&mut self) -> bool {
        self.reauthenticate_at.is_some_and(|at| Instant::now() >= at)
            || matches!(tokio::time::timeout(Duration::ZERO, self.framed.next()).await, Ok(None | Some(Err(_))))
    }

    /// Sends a client's request frame under a correlation id of this connection and returns the
    /// answer with the client's correlation id restored.
    async fn relay(&mut self, request: &[u8]) -> Result<Bytes, ControlError> {
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let correlation_id = self.next_correlation_id;
        let mut frame = BytesMut::from(request);
        frame[8..12].copy_from_slice(&correlation_id.to_be_bytes());
        self.framed.send(frame.freeze()).await?;
        let lost = |e: &dyn std::fmt::Display| ControlError::LostInFlight(e.to_string());
        loop {
            let answer = match self.framed.next().await {
                None => return Err(lost(&"closed by the broker")),
                Some(Err(e)) => return Err(lost(&e)),
                Some(Ok(frame)) => frame,
            };
            if wire::response_correlation_id(&answer)? == correlation_id {
                let mut answer = BytesMut::from(&answer[..]);
                answer[4..8].copy_from_slice(&request[8..12]);
                return Ok(answer.freeze());
            }
        }
    }

    async fn round_trip(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &impl Encodable,
    ) -> Result<Bytes, ControlError> {
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let correlation_id = self.next_correlation_id;
        let frame = encode_request(api_key, version, correlation_id, body)?;
        let exchange = async {
            self.framed.send(frame).await?;
            loop {
                let frame = self.framed.next().await.ok_or(ControlError::Closed)??;
                if wire::response_correlation_id(&frame)? == correlation_id {
                    return Ok(frame);
                }
            }
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| ControlError::TimedOut(self.request_timeout))?
    }
}

/// The broker's highest Metadata version, from an ApiVersions v0 response body.
fn metadata_max_version(body: &[u8]) -> Result<i16, DecodeError> {
    let mut reader = Reader::new(body);
    reader.i16()?; // error_code
    let count = reader.array_len(false)?;
    for _ in 0..count {
        let (api_key, _min, max) = (reader.i16()?, reader.i16()?, reader.i16()?);
        if api_key == ApiKey::Metadata as i16 {
            return Ok(max);
        }
    }
    Err(DecodeError::Invalid("broker does not list Metadata in ApiVersions"))
}

/// The sidecar's own long-lived connection to each broker, opened on first use.
#[derive(Debug, Default)]
pub struct Links {
    by_node: std::sync::Mutex<std::collections::HashMap<i32, Arc<tokio::sync::Mutex<Option<ControlConnection>>>>>,
}

impl std::fmt::Debug for ControlConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConnection").field("metadata_version", &self.metadata_version).finish()
    }
}

impl Links {
    fn link(&self, node_id: i32) -> Arc<tokio::sync::Mutex<Option<ControlConnection>>> {
        self.by_node.lock().expect("links lock").entry(node_id).or_default().clone()
    }

    /// The connection to `node_id`, opened (or reopened, when the broker has closed it while
    /// idle) as needed.
    async fn connected(
        &self,
        ctx: &Context,
        node_id: i32,
    ) -> Result<tokio::sync::OwnedMutexGuard<Option<ControlConnection>>, ControlError> {
        let mut slot = self.link(node_id).lock_owned().await;
        if let Some(conn) = slot.as_mut()
            && conn.is_stale().await
        {
            tracing::debug!(node_id, "broker closed the idle control connection; reconnecting");
            *slot = None;
        }
        if slot.is_none() {
            let address = ctx.topology.address(node_id).ok_or(ControlError::UnknownBroker(node_id))?;
            *slot = Some(ControlConnection::open_to(ctx, &[address]).await?);
        }
        Ok(slot)
    }

    /// Reads metadata from broker `node_id`, teaches it to the topology and returns the
    /// controller id it reports.
    pub async fn controller_as_seen_by(&self, ctx: &Context, node_id: i32) -> Result<Option<i32>, ControlError> {
        let mut slot = self.connected(ctx, node_id).await?;
        let result = slot.as_mut().expect("connected").fetch_metadata(ctx).await;
        if result.is_err() {
            *slot = None;
        }
        let (brokers, controller_id) = result?;
        ctx.topology.learn(&brokers, controller_id);
        Ok(controller_id.filter(|id| *id >= 0))
    }

    /// Sends a client's request to broker `node_id` and returns its answer.
    pub async fn forward(&self, ctx: &Context, node_id: i32, request: &[u8]) -> Result<Bytes, ControlError> {
        let mut slot = self.connected(ctx, node_id).await?;
        let result = slot.as_mut().expect("connected").relay(request).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }
}
