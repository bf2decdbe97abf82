//! The closed label sets of the sidecar's metrics: why connections end and clients are refused,
//! protocol error kinds, directions, retry and refresh outcomes. Each value is a label; nothing a
//! client sends ever becomes one.

use crate::wire::FrameErrorKind;

labels! {
    /// Why a client was refused on a listener.
    pub enum Refusal {
        /// Mutual TLS: the client sent no certificate.
        TlsNoCertificate => "tls_no_certificate",
        /// Mutual TLS: the certificate is not signed by the client CA.
        TlsUntrustedCertificate => "tls_untrusted_certificate",
        /// Mutual TLS: signed, but expired, not yet valid, or not for client authentication.
        TlsInvalidCertificate => "tls_invalid_certificate",
        /// Any other failed listener TLS handshake (plaintext on a TLS port, no common cipher…).
        TlsHandshake => "tls_handshake",
        SaslUnknownUser => "sasl_unknown_user",
        SaslWrongPassword => "sasl_wrong_password",
        SaslUnsupportedMechanism => "sasl_unsupported_mechanism",
        /// A SASL request out of order or unreadable.
        SaslMalformed => "sasl_malformed",
        /// A request other than ApiVersions or SASL before authentication.
        UnauthenticatedRequest => "unauthenticated_request",
    }
}

labels! {
    /// Why a client connection ended.
    pub enum DisconnectCause {
        ClientClosed => "client_closed",
        BrokerClosed => "broker_closed",
        Idle => "idle",
        ProtocolError => "protocol_error",
        UpstreamUnavailable => "upstream_unavailable",
        /// A retried admin request may have been applied but its answer was lost.
        RetryLost => "retry_lost",
        Shutdown => "shutdown",
        /// The client failed to authenticate to the sidecar, or sent requests before it did.
        Unauthenticated => "unauthenticated",
    }
}

labels! {
    /// Which leg of the proxy bytes moved on.
    pub enum Direction {
        ClientToSidecar => "client_to_sidecar",
        SidecarToBroker => "sidecar_to_broker",
        BrokerToSidecar => "broker_to_sidecar",
        SidecarToClient => "sidecar_to_client",
    }
}

labels! {
    /// Protocol errors a session finds itself, beyond framing ([`FrameErrorKind`]).
    pub enum SessionErrorKind {
        /// A client's TLS handshake on a TLS listener failed.
        TlsHandshake => "tls_handshake",
        BadRequestHeader => "bad_request_header",
        /// Unreadable Produce `acks`.
        BadRequestBody => "bad_request_body",
        /// A response the sidecar must rewrite could not be read.
        BadResponseBody => "bad_response_body",
    }
}

/// The `kind` label of [`PROTOCOL_ERRORS`]: a framing error or one a session finds itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolErrorKind {
    Frame(FrameErrorKind),
    Session(SessionErrorKind),
}

impl ProtocolErrorKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProtocolErrorKind::Frame(kind) => kind.as_str(),
            ProtocolErrorKind::Session(kind) => kind.as_str(),
        }
    }
}

impl From<FrameErrorKind> for ProtocolErrorKind {
    fn from(kind: FrameErrorKind) -> Self {
        ProtocolErrorKind::Frame(kind)
    }
}

impl From<SessionErrorKind> for ProtocolErrorKind {
    fn from(kind: SessionErrorKind) -> Self {
        ProtocolErrorKind::Session(kind)
    }
}

const PROTOCOL_ERROR_KIND_COUNT: usize = FrameErrorKind::ALL.len() - 1 + SessionErrorKind::ALL.len();

/// Every kind [`protocol_error`] counts, derived from the two enums: each framing kind but `io`
/// (an i/o error ends a connection without being a protocol error; sessions never count it), then
/// each kind a session finds itself. A miscount fails the build.
pub const PROTOCOL_ERROR_KINDS: [ProtocolErrorKind; PROTOCOL_ERROR_KIND_COUNT] = {
    let mut kinds = [ProtocolErrorKind::Frame(FrameErrorKind::Io); PROTOCOL_ERROR_KIND_COUNT];
    let (mut from, mut to) = (0, 0);
    while from < FrameErrorKind::ALL.len() {
        if !matches!(FrameErrorKind::ALL[from], FrameErrorKind::Io) {
            kinds[to] = ProtocolErrorKind::Frame(FrameErrorKind::ALL[from]);
            to += 1;
        }
        from += 1;
    }
    from = 0;
    while from < SessionErrorKind::ALL.len() {
        kinds[to] = ProtocolErrorKind::Session(SessionErrorKind::ALL[from]);
        (from, to) = (from + 1, to + 1);
    }
    assert!(to == PROTOCOL_ERROR_KIND_COUNT, "every kind listed once");
    kinds
};

labels! {
    /// How a NOT_CONTROLLER retry of one admin request ended.
    pub enum RetryOutcome {
        /// The client got the controller's answer.
        Recovered => "recovered",
        /// The retry budget ran out; the client got 41.
        Exhausted => "exhausted",
        /// The controller connection failed after a retry was sent; the client connection was closed.
        Lost => "lost",
    }
}

labels! {
    /// The result of one metadata refresh on the control connection.
    pub enum RefreshResult {
        Ok => "ok",
        Error => "error",
    }
}
