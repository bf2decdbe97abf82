//! Answers a client's own SASL exchange on the loopback listeners when the sidecar authenticates
//! to the brokers itself.
//!
//! A client configured with SASL PLAIN sends SaslHandshake and SaslAuthenticate; forwarded, they
//! would hit a broker connection the sidecar has already authenticated. Instead the sidecar
//! accepts PLAIN with any credentials (the listener is loopback, inside the pod) and refuses other
//! mechanisms with UNSUPPORTED_SASL_MECHANISM naming PLAIN, so clients configured without SASL
//! and with SASL PLAIN both work.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

use crate::wire::{Reader, RequestHeader, encode_response};

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

/// The sidecar's own answer to a client's SASL request, or `None` for any other request.
pub fn answer(header: &RequestHeader, frame: &[u8]) -> Option<Bytes> {
    let api_key = ApiKey::try_from(header.api_key).ok()?;
    let version = header.api_version;
    match api_key {
        ApiKey::SaslHandshake => {
            let body = &frame[header.body_offset?..];
            let mechanism = Reader::new(body).string(false).ok()?;
            let error_code = if mechanism == b"PLAIN" { 0 } else { UNSUPPORTED_SASL_MECHANISM };
            let response = SaslHandshakeResponse::default()
                .with_error_code(error_code)
                .with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]);
            encode_response(api_key, version, header.correlation_id, &response).ok()
        }
        ApiKey::SaslAuthenticate => {
            encode_response(api_key, version, header.correlation_id, &SaslAuthenticateResponse::default()).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode_request;
    use crate::wire::peek_request_header;
    use kafka_protocol::messages::{ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest};
    use kafka_protocol::protocol::Decodable;

    fn handshake(mechanism: &'static str) -> SaslHandshakeResponse {
        let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let frame = encode_request(ApiKey::SaslHandshake, 1, 9, &request).unwrap();
        let answer = answer(&peek_request_header(&frame).unwrap(), &frame).unwrap();
        assert_eq!(answer[4..8], 9i32.to_be_bytes());
        SaslHandshakeResponse::decode(&mut answer.slice(8..), 1).unwrap()
    }

    #[test]
    fn plain_is_accepted_and_others_are_pointed_to_plain() {
        assert_eq!(handshake("PLAIN").error_code, 0);
        let scram = handshake("SCRAM-SHA-512");
        assert_eq!(scram.error_code, UNSUPPORTED_SASL_MECHANISM);
        assert_eq!(scram.mechanisms, [StrBytes::from_static_str("PLAIN")]);
    }

    #[test]
    fn authenticate_succeeds_in_every_version() {
        for version in 0..=2 {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0app\0secret"));
            let frame = encode_request(ApiKey::SaslAuthenticate, version, 5, &request).unwrap();
            let answer = answer(&peek_request_header(&frame).unwrap(), &frame).unwrap();
            let mut body = answer.slice(4..);
            ResponseHeader::decode(&mut body, ApiKey::SaslAuthenticate.response_header_version(version)).unwrap();
            let response = SaslAuthenticateResponse::decode(&mut body, version).unwrap();
            assert_eq!(response.error_code, 0, "v{version}");
        }
    }
}
