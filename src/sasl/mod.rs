//! SASL authentication of the sidecar's own broker connections: PLAIN, SCRAM-SHA-256/512 and
//! AWS MSK IAM (OAUTHBEARER with a SigV4-presigned token).
//!
//! Runs right after the TCP (and TLS) connect, before any client request is forwarded:
//! SaslHandshake v1 names the mechanism, then SaslAuthenticate v1 carries its rounds. The
//! broker's answers are read with the bounds-checked cursor. Passwords never reach a log line or
//! a `Debug` output.

pub mod aws;
pub mod iam;
pub mod loopback;
mod scram;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use ring::rand::SecureRandom;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::config::{Mechanism, SaslConfig, Secret};
use crate::wire::Reader;
use crate::wire::encode_request;
pub use scram::{ScramClient, ScramHash};

/// Largest authentication answer accepted from a broker.
const MAX_AUTH_FRAME: usize = 1024 * 1024;
const HANDSHAKE_VERSION: i16 = 1;
const AUTHENTICATE_VERSION: i16 = 1;

impl Mechanism {
    /// The mechanism named in SaslHandshake.
    fn wire_name(self) -> &'static str {
        match self {
            Mechanism::AwsMskIam => "OAUTHBEARER",
            other => other.name(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    #[error("authentication I/O failed: {0}")]
    Io(String),
    #[error("unexpected authentication answer: {0}")]
    Protocol(&'static str),
    #[error("the broker does not offer {wanted}; it offers {offered:?}")]
    UnsupportedMechanism { wanted: &'static str, offered: Vec<String> },
    #[error("the broker refused the credentials: {0}")]
    Rejected(String),
    #[error("no credentials: {0}")]
    Credentials(String),
}

impl From<std::io::Error> for SaslError {
    fn from(error: std::io::Error) -> Self {
        SaslError::Io(error.to_string())
    }
}

/// Authenticates `stream` as `config` says; returns the session lifetime the broker grants, if
/// it limits it (KIP-368).
pub async fn authenticate<S>(stream: &mut S, config: &SaslConfig) -> Result<Option<Duration>, SaslError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut exchange = Exchange { stream, next_correlation_id: 0 };
    exchange.handshake(config.mechanism).await?;
    match config.mechanism {
        Mechanism::Plain => {
            let token = format!("\0{}\0{}", config.username, config.password.0);
            let (_, lifetime) = exchange.authenticate(token.into_bytes()).await?;
            Ok(lifetime)
        }
        Mechanism::Scram(hash) => {
            let mut scram = ScramClient::new(hash, &config.username, &config.password.0, nonce());
            let (server_first, _) = exchange.authenticate(scram.client_first()).await?;
            let client_final = scram.client_final(&server_first)?;
            let (server_final, lifetime) = exchange.authenticate(client_final).await?;
            scram.verify_server_final(&server_final)?;
            Ok(lifetime)
        }
        Mechanism::AwsMskIam => {
            let credentials = aws::credentials(&config.region).await?;
            let token = iam::token(&credentials, &config.region, std::time::SystemTime::now())?;
            let (_, lifetime) = exchange.authenticate(iam::oauthbearer_message(&token)).await?;
            Ok(lifetime)
        }
    }
}

fn nonce() -> String {
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("system randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Exchange<'a, S> {
    stream: &'a mut S,
    next_correlation_id: i32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Exchange<'_, S> {
    async fn round_trip(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &impl kafka_protocol::protocol::Encodable,
    ) -> Result<Bytes, SaslError> {
        self.next_correlation_id += 1;
        let frame = encode_request(api_key, version, self.next_correlation_id, body)
            .map_err(|_| SaslError::Protocol("cannot encode the authentication request"))?;
        self.stream.write_all(&frame).await?;
        let len = self.stream.read_i32().await?;
        let len = usize::try_from(len).ok().filter(|len| (4..=MAX_AUTH_FRAME).contains(len));
        let mut body = vec![0u8; len.ok_or(SaslError::Protocol("bad frame length"))?];
        self.stream.read_exact(&mut body).await?;
        if body[..4] != self.next_correlation_id.to_be_bytes() {
            return Err(SaslError::Protocol("answer to another request"));
        }
        Ok(Bytes::from(body).slice(4..))
    }

    async fn handshake(&mut self, mechanism: Mechanism) -> Result<(), SaslError> {
        let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.wire_name()));
        let body = self.round_trip(ApiKey::SaslHandshake, HANDSHAKE_VERSION, &request).await?;
        let mut reader = Reader::new(&body);
        let error_code = reader.i16().map_err(|_| SaslError::Protocol("short SaslHandshake answer"))?;
        if error_code == 0 {
            return Ok(());
        }
        let mut offered = Vec::new();
        if let Ok(count) = reader.array_len(false) {
            for _ in 0..count {
                match reader.string(false) {
                    Ok(name) => offered.push(String::from_utf8_lossy(name).into_owned()),
                    Err(_) => break,
                }
            }
        }
        Err(SaslError::UnsupportedMechanism { wanted: mechanism.name(), offered })
    }

    /// One SaslAuthenticate round: the broker's bytes and session lifetime.
    async fn authenticate(&mut self, token: Vec<u8>) -> Result<(Vec<u8>, Option<Duration>), SaslError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let body = self.round_trip(ApiKey::SaslAuthenticate, AUTHENTICATE_VERSION, &request).await?;
        let short = |_| SaslError::Protocol("short SaslAuthenticate answer");
        let mut reader = Reader::new(&body);
        let error_code = reader.i16().map_err(short)?;
        let message = reader.nullable_string(false).map_err(short)?;
        if error_code != 0 {
            let message = message.map(String::from_utf8_lossy).unwrap_or_default();
            return Err(SaslError::Rejected(format!("error {error_code}: {message}")));
        }
        let auth_bytes = reader.nullable_bytes(false).map_err(short)?.unwrap_or_default().to_vec();
        let lifetime = reader.i64().ok().filter(|ms| *ms > 0).map(|ms| Duration::from_millis(ms as u64));
        Ok((auth_bytes, lifetime))
    }
}
