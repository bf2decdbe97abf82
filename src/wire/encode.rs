//! Whole frames (length prefix included) for the few messages the sidecar writes itself: its own
//! requests (metadata refresh, authentication) and its own answers (a client's SASL exchange).
//! Encoding with kafka-protocol is safe: it never trusts a length it did not compute.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// The client id on the sidecar's own requests.
pub const CLIENT_ID: &str = "kafka-sidecar";

/// Why a frame could not be encoded (a field the version does not have, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api:?} v{version}: {reason}")]
pub struct EncodeError {
    pub api: ApiKey,
    pub version: i16,
    pub reason: String,
}

/// A request frame from the sidecar.
pub fn encode_request(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> Result<Bytes, EncodeError> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    frame(api_key, version, |buf| {
        header.encode(buf, api_key.request_header_version(version))?;
        body.encode(buf, version)
    })
}

/// A response frame answering `correlation_id`.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> Result<Bytes, EncodeError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    frame(api_key, version, |buf| {
        header.encode(buf, api_key.response_header_version(version))?;
        body.encode(buf, version)
    })
}

fn frame(
    api: ApiKey,
    version: i16,
    encode: impl FnOnce(&mut BytesMut) -> anyhow::Result<()>,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    encode(&mut buf).map_err(|e| EncodeError { api, version, reason: e.to_string() })?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}
