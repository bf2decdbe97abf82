//! Rewriting of the few broker responses that carry broker addresses or version ranges.
//!
//! Each rewriter walks its response with the bounds-checked [`Reader`], records the real broker
//! endpoints it passes (for the cluster view) and splices the sidecar's own address over each one. The
//! rest of the frame is copied as it came, so fields the sidecar does not understand survive and
//! every version the broker speaks is handled, old ones included. Nothing here does I/O.

mod api_versions;
mod describe_cluster;
mod find_coordinator;
mod metadata;

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::wire::{DecodeError, Splices, Walker, Writer, response_body_offset};

pub use crate::config::Advertised;
pub use api_versions::clamp_limit;

impl Advertised {
    /// The sidecar port for broker `node_id`: `port_base + node_id`.
    pub fn port_for(&self, node_id: i32) -> Result<u16, RewriteError> {
        u16::try_from(node_id)
            .ok()
            .and_then(|id| self.port_base.checked_add(id))
            .ok_or(RewriteError::NodeIdOutOfRange { node_id, port_base: self.port_base })
    }
}

/// A broker address as the cluster announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// What a rewrite produced and learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rewritten {
    /// The frame to send to the client (length prefix included).
    pub frame: Bytes,
    /// Real broker endpoints seen in the response.
    pub brokers: Vec<Endpoint>,
    /// The controller id, where the response carries one (-1 when the broker reports none).
    pub controller_id: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("malformed {api} v{version} response: {source}")]
    Malformed { api: &'static str, version: i16, source: DecodeError },
    #[error("broker node id {node_id} has no sidecar port (port base {port_base} + node id exceeds 65535)")]
    NodeIdOutOfRange { node_id: i32, port_base: u16 },
}

/// Rewrites a response to `api_key` at `api_version`, or returns `None` when it passes as it is.
pub fn response(
    api_key: i16,
    api_version: i16,
    frame: &Bytes,
    advertised: &Advertised,
) -> Result<Option<Rewritten>, RewriteError> {
    walk(api_key, api_version, frame, Some(advertised))
}

/// Reads the broker endpoints and controller id a response carries, with the same walk as
/// [`response`] but changing nothing: the frame returned is `frame` itself.
pub fn inspect(api_key: i16, api_version: i16, frame: &Bytes) -> Result<Option<Rewritten>, RewriteError> {
    walk(api_key, api_version, frame, None)
}

/// Walks a response the table rewrites; splices the sidecar's address over every endpoint when
/// `advertised` is given.
fn walk(
    api_key: i16,
    api_version: i16,
    frame: &Bytes,
    advertised: Option<&Advertised>,
) -> Result<Option<Rewritten>, RewriteError> {
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Ok(None);
    };
    let rewriter: fn(&mut Walk<'_>) -> Result<(), RewriteError> = match key {
        ApiKey::ApiVersions => api_versions::rewrite,
        ApiKey::Metadata => metadata::rewrite,
        ApiKey::FindCoordinator => find_coordinator::rewrite,
        ApiKey::DescribeCluster => describe_cluster::rewrite,
        _ => return Ok(None),
    };
    let malformed =
        |source| RewriteError::Malformed { api: crate::wire::api_name(api_key), version: api_version, source };
    let body = response_body_offset(frame, key, api_version).map_err(malformed)?;
    let mut walk = Walk::new(frame, body, api_version, advertised, crate::wire::api_name(api_key));
    rewriter(&mut walk)?;
    Ok(Some(walk.finish()))
}

/// The state of one rewrite: a reader over the body plus the splices decided so far.
pub(crate) struct Walk<'a> {
    /// The body's walk: reader positions are relative to the body.
    pub walker: Walker<'a>,
    pub version: i16,
    /// The address spliced over every endpoint; `None` reads without changing anything.
    pub advertised: Option<&'a Advertised>,
    splices: Splices,
    pub brokers: Vec<Endpoint>,
    pub controller_id: Option<i32>,
    pub api: &'static str,
}

impl<'a> Walk<'a> {
    fn new(frame: &'a [u8], body: usize, version: i16, advertised: Option<&'a Advertised>, api: &'static str) -> Self {
        Walk {
            walker: Walker::new(frame, body),
            version,
            advertised,
            splices: Splices::default(),
            brokers: Vec::new(),
            controller_id: None,
            api,
        }
    }

    /// Wraps a decode error with the api and version being walked.
    pub fn malformed(&self, source: DecodeError) -> RewriteError {
        RewriteError::Malformed { api: self.api, version: self.version, source }
    }

    /// Replaces body bytes `range` (reader positions) with `bytes`. Splices must come in order.
    pub fn splice(&mut self, range: Range<usize>, bytes: BytesMut) {
        let frame_range = self.walker.frame_offset(range.start)..self.walker.frame_offset(range.end);
        self.splices.replace(frame_range, bytes);
    }

    /// Reads a broker's host and port at the reader's position and splices the sidecar's own
    /// address over them; `node_id` has just been read. A negative node id (no broker, as in a
    /// FindCoordinator error) is left as it is.
    pub fn endpoint(&mut self, node_id: i32, flexible: bool, learn: bool) -> Result<(), RewriteError> {
        let start = self.walker.reader.position();
        let host = self.walker.reader.string(flexible).map_err(|e| self.malformed(e))?;
        let port = self.walker.reader.i32().map_err(|e| self.malformed(e))?;
        if node_id < 0 {
            return Ok(());
        }
        if let Some(advertised) = self.advertised {
            let local_port = advertised.port_for(node_id)?;
            let mut writer = Writer::with_capacity(advertised.host.len() + 6);
            writer.string(advertised.host.as_bytes(), flexible).i32(i32::from(local_port));
            let end = self.walker.reader.position();
            self.splice(start..end, writer.into_inner());
        }
        if learn {
            let host = String::from_utf8_lossy(host).into_owned();
            self.brokers.push(Endpoint { node_id, host, port });
        }
        Ok(())
    }

    fn finish(self) -> Rewritten {
        let frame = self.splices.apply(self.walker.frame());
        Rewritten { frame, brokers: self.brokers, controller_id: self.controller_id }
    }
}

/// Shorthand for the reader calls of a walk, mapping decode errors to [`RewriteError`].
macro_rules! read {
    ($walk:expr, $method:ident $(, $arg:expr)*) => {
        match $walk.walker.reader.$method($($arg),*) {
            Ok(value) => value,
            Err(e) => return Err($walk.malformed(e)),
        }
    };
}
pub(crate) use read;

#[cfg(test)]
mod tests;
