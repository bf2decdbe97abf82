//! One connection of the sidecar's own to a broker ([`ControlConnection`]), and the set of them,
//! one per broker ([`Links`]): what the NOT_CONTROLLER retry reaches the cluster through.
//!
//! A broker may close a connection while it idles (`connections.max.idle.ms`): a request that
//! finds its connection stale reconnects and, when it had not been sent, goes again; a request
//! that may have reached the broker is never re-sent. Metadata answers are read with the
//! rewriter's walk and taught to the cluster view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest};
use kafka_protocol::protocol::Encodable;
use tokio_util::codec::Framed;

use crate::admin_retry::{ControllerLinks, LinkError, LinkFuture};
use crate::cluster::{ClusterView, Learned};
use crate::rewrite;
use crate::stream::Stream;
use crate::upstream::{ConnectError, Connector};
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

impl From<ControlError> for LinkError {
    fn from(error: ControlError) -> Self {
        LinkError { maybe_applied: matches!(error, ControlError::LostInFlight(_)), reason: error.to_string() }
    }
}

pub(super) struct ControlConnection {
    framed: Framed<Stream, FrameCodec>,
    /// When the SASL session must be renewed (KIP-368): the connection is replaced before then.
    reauthenticate_at: Option<Instant>,
    /// How long the sidecar's own metadata requests may wait for an answer.
    request_timeout: Duration,
    metadata_version: i16,
    next_correlation_id: i32,
}

impl ControlConnection {
    async fn open(links: &Links, addresses: &[String]) -> Result<Self, ControlError> {
        let connected = links.connector.connect_any(addresses, "control").await?;
        tracing::debug!(addr = %connected.addr, "control connection open");
        let framed = Framed::new(connected.stream, FrameCodec::responses(links.max_frame_bytes));
        let mut conn = ControlConnection {
            framed,
            reauthenticate_at: connected.reauthenticate_at,
            request_timeout: links.request_timeout,
            metadata_version: MIN_METADATA_VERSION,
            next_correlation_id: 0,
        };
        let version = 0;
        let response = conn.round_trip(ApiKey::ApiVersions, version, &ApiVersionsRequest::default()).await?;
        let body = wire::response_body_offset(&response, ApiKey::ApiVersions, version)?;
        let broker_max = metadata_max_version(&response[body..])?;
        if broker_max < MIN_METADATA_VERSION {
            return Err(ControlError::NoMetadataVersion);
        }
        conn.metadata_version = broker_max.min(MAX_METADATA_VERSION);
        Ok(conn)
    }

    /// The brokers and controller the cluster reports, read without rewriting anything.
    pub(super) async fn fetch_metadata(&mut self) -> Result<Learned, ControlError> {
        let request = MetadataRequest::default().with_topics(Some(Vec::new()));
        let version = self.metadata_version;
        let frame = self.round_trip(ApiKey::Metadata, version, &request).await?;
        let read = rewrite::inspect(ApiKey::Metadata as i16, version, &frame)?.expect("metadata responses are walked");
        Ok(Learned { brokers: read.brokers, controller_id: read.controller_id, metadata: true })
    }

    /// Whether the broker has closed this idle connection (its end reads as closed right away).
    /// Also stale once its SASL session is due for renewal: a fresh connection authenticates
    /// anew, and nothing sent on it can be cut off by the broker's session deadline.
    pub(super) async fn is_stale(&mut self) -> bool {
        self.reauthenticate_at.is_some_and(|at| Instant::now() >= at)
            || matches!(tokio::time::timeout(Duration::ZERO, self.framed.next()).await, Ok(None | Some(Err(_))))
    }

    /// Sends a client's request frame under a correlation id of this connection and returns the
    /// answer with the client's correlation id restored.
    async fn relay(&mut self, request: &[u8]) -> Result<Bytes, ControlError> {
        let header = wire::peek_request_header(request)?;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let correlation_id = self.next_correlation_id;
        let frame = wire::with_request_correlation_id(request, correlation_id)?;
        self.framed.send(frame.freeze()).await?;
        let lost = |e: &dyn std::fmt::Display| ControlError::LostInFlight(e.to_string());
        loop {
            let answer = match self.framed.next().await {
                None => return Err(lost(&"closed by the broker")),
                Some(Err(e)) => return Err(lost(&e)),
                Some(Ok(frame)) => frame,
            };
            if wire::response_correlation_id(&answer)? == correlation_id {
                return Ok(wire::with_response_correlation_id(&answer, header.correlation_id)?.freeze());
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
pub struct Links {
    connector: Arc<Connector>,
    cluster: Arc<ClusterView>,
    max_frame_bytes: usize,
    /// How long the sidecar's own requests may wait for an answer.
    request_timeout: Duration,
    by_node: std::sync::Mutex<HashMap<i32, Link>>,
}

type Link = Arc<tokio::sync::Mutex<Option<ControlConnection>>>;

impl std::fmt::Debug for ControlConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConnection").field("metadata_version", &self.metadata_version).finish()
    }
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("request_timeout", &self.request_timeout).finish_non_exhaustive()
    }
}

impl Links {
    /// Links that dial with `connector`, find brokers in `cluster` and teach it what they read.
    /// Requests wait at least [`MIN_REQUEST_TIMEOUT`] for an answer, longer when connecting may.
    pub fn new(connector: Arc<Connector>, cluster: Arc<ClusterView>, max_frame_bytes: usize) -> Self {
        let request_timeout = connector.config.connect_timeout.max(MIN_REQUEST_TIMEOUT);
        Links { connector, cluster, max_frame_bytes, request_timeout, by_node: Default::default() }
    }

    pub fn cluster(&self) -> &Arc<ClusterView> {
        &self.cluster
    }

    /// A control connection to the first of `addresses` that answers.
    pub(super) async fn open(&self, addresses: &[String]) -> Result<ControlConnection, ControlError> {
        ControlConnection::open(self, addresses).await
    }

    fn link(&self, node_id: i32) -> Link {
        self.by_node.lock().expect("links lock").entry(node_id).or_default().clone()
    }

    /// The connection to `node_id`, opened (or reopened, when the broker has closed it while
    /// idle) as needed.
    async fn connected(
        &self,
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
            let address = self.cluster.address(node_id).ok_or(ControlError::UnknownBroker(node_id))?;
            *slot = Some(self.open(&[address]).await?);
        }
        Ok(slot)
    }

    /// Reads metadata from broker `node_id`, teaches it to the cluster view and returns the
    /// controller id it reports.
    pub async fn controller_as_seen_by(&self, node_id: i32) -> Result<Option<i32>, ControlError> {
        let mut slot = self.connected(node_id).await?;
        let result = slot.as_mut().expect("connected").fetch_metadata().await;
        if result.is_err() {
            *slot = None;
        }
        let learned = result?;
        self.cluster.learn(&learned);
        Ok(learned.controller_id.filter(|id| *id >= 0))
    }

    /// Sends a client's request to broker `node_id` and returns its answer.
    pub async fn forward(&self, node_id: i32, request: &[u8]) -> Result<Bytes, ControlError> {
        let mut slot = self.connected(node_id).await?;
        let result = slot.as_mut().expect("connected").relay(request).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }
}

impl ControllerLinks for Links {
    fn node_ids(&self) -> Vec<i32> {
        self.cluster.node_ids()
    }

    fn known_controller(&self) -> Option<i32> {
        self.cluster.controller_id()
    }

    fn controller_as_seen_by(&self, node_id: i32) -> LinkFuture<'_, Option<i32>> {
        Box::pin(async move { Ok(Links::controller_as_seen_by(self, node_id).await?) })
    }

    fn forward<'a>(&'a self, node_id: i32, request: &'a [u8]) -> LinkFuture<'a, Bytes> {
        Box::pin(async move { Ok(Links::forward(self, node_id, request).await?) })
    }
}
