//! Who may use the sidecar's Kafka listeners: the start-up guard against lending the sidecar's
//! broker identity to anyone on the network, and each connection's SASL gate (PLAIN and
//! SCRAM-SHA-256/512 checked against the credentials file, or the loopback answer).
//!
//! It decides and answers SASL requests and counts refusals; it never forwards, reads or writes a
//! socket itself, and never logs a password or what a client sent as one.

pub mod credentials;
pub mod hash_password;
mod scram_server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

pub use crate::config::ClientAuthSettings;
use crate::config::{Config, ConfigError, borrowed_identity, broker_identity};
use crate::telemetry::{self, Refusal};
use crate::wire::{Reader, RequestHeader, encode_response};
pub use credentials::{ClientMechanism, CredentialStore, CredentialsError};
use scram_server::{ScramFailure, ScramServer};

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const UNSUPPORTED_VERSION: i16 = 35;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

// === The start-up guard ===

/// The credentials file, checked before start (exit 64 when it cannot be used). The rest of the
/// guard, a remote listener lending the sidecar's broker identity, is `config`'s.
pub fn check_files(config: &Config) -> Result<(), ConfigError> {
    match &config.client_auth.sasl_credentials {
        Some(path) => credentials::Credentials::load(path).map(drop).map_err(|error| ConfigError {
            problems: vec![("listener-sasl-credentials".to_owned(), error.to_string())],
        }),
        None => Ok(()),
    }
}

/// Reports at start whether unauthenticated remote clients are allowed to borrow the sidecar's
/// identity (the opt-out in effect): a warning in the log and the
/// `kafka_sidecar_insecure_remote_clients` gauge at 1.
pub fn announce(config: &Config) {
    let client_ca = config.listener_tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
    let clients_authenticate = client_ca || config.client_auth.sasl_credentials.is_some();
    let identity = broker_identity(config.sasl.as_ref(), config.tls.as_ref());
    let borrowed = borrowed_identity(config.listen_host, identity, clients_authenticate)
        .filter(|_| config.client_auth.allow_unauthenticated_remote_clients);
    telemetry::insecure_remote_clients(borrowed.is_some());
    if let Some(identity) = borrowed {
        tracing::warn!(
            listen_host = %config.listen_host,
            identity,
            "INSECURE: the Kafka listeners are not on loopback and clients do not authenticate; every client that \
             reaches them acts with the sidecar's broker identity (--insecure-allow-unauthenticated-remote-clients)"
        );
    }
}

// === Refusals ===

/// The cause of a failed listener TLS handshake, counted.
pub fn tls_refused(error: &std::io::Error) -> Refusal {
    use rustls::CertificateError as Cert;
    let cause = match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => Refusal::TlsNoCertificate,
        Some(rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature)) => {
            Refusal::TlsUntrustedCertificate
        }
        Some(rustls::Error::InvalidCertificate(_)) => Refusal::TlsInvalidCertificate,
        _ => Refusal::TlsHandshake,
    };
    telemetry::client_auth_refused(cause);
    cause
}

// === Each connection's gate ===

/// How a connection's SASL requests are handled.
#[derive(Debug, Clone)]
enum Mode {
    /// SASL requests go to the broker (the client authenticates to it itself).
    PassThrough,
    /// The sidecar authenticates to the brokers and clients need not: PLAIN is accepted as is
    /// (the loopback default, `sasl::loopback`).
    Loopback,
    /// Clients must authenticate against the credentials file before anything but ApiVersions.
    Checked(Arc<CredentialStore>),
}

/// The listeners' client authentication, shared by every connection.
#[derive(Debug)]
pub struct ClientAuth {
    mode: Mode,
}

impl ClientAuth {
    /// From the validated configuration; fails when the credentials file cannot be loaded.
    pub fn new(config: &Config) -> Result<ClientAuth, CredentialsError> {
        let mode = match (&config.client_auth.sasl_credentials, &config.sasl) {
            (Some(path), _) => Mode::Checked(Arc::new(CredentialStore::load(path)?)),
            (None, Some(_)) => Mode::Loopback,
            (None, None) => Mode::PassThrough,
        };
        Ok(ClientAuth { mode })
    }

    /// The gate of one new client connection.
    pub fn gate(&self, peer: SocketAddr) -> Gate {
        Gate { mode: self.mode.clone(), peer, state: Mutex::new(State::default()) }
    }
}

/// What the session does with one request.
#[derive(Debug)]
pub enum Admit {
    /// Forward it to the broker as usual.
    Forward,
    /// Send the client this answer instead.
    Answer(Bytes),
    /// Send the client this answer (a refused authentication), then close the connection.
    AnswerAndClose(Bytes),
    /// Close the connection without an answer.
    Refuse,
}

#[derive(Default)]
struct State {
    authenticated: bool,
    step: Step,
}

#[derive(Default)]
enum Step {
    #[default]
    Start,
    Handshaken(ClientMechanism),
    /// SCRAM server-first sent; awaiting client-final.
    Scram(Box<ScramServer>),
}

/// One client connection's authentication state.
pub struct Gate {
    mode: Mode,
    peer: SocketAddr,
    state: Mutex<State>,
}

impl Gate {
    /// Whether SASL requests are answered by the sidecar (and so must be held whole).
    pub fn answers_sasl(&self) -> bool {
        !matches!(self.mode, Mode::PassThrough)
    }

    /// What to do with a request; `frame` is the whole request where the session held it (SASL
    /// requests whenever [`Gate::answers_sasl`]).
    pub fn admit(&self, header: &RequestHeader, frame: Option<&[u8]>) -> Admit {
        match &self.mode {
            Mode::PassThrough => Admit::Forward,
            Mode::Loopback => match frame.and_then(|frame| crate::sasl::loopback::answer(header, frame)) {
                Some(answer) => Admit::Answer(answer),
                None => Admit::Forward,
            },
            Mode::Checked(store) => self.checked(store, header, frame),
        }
    }

    fn checked(&self, store: &CredentialStore, header: &RequestHeader, frame: Option<&[u8]>) -> Admit {
        let mut state = self.state.lock().expect("gate lock");
        let api_key = ApiKey::try_from(header.api_key);
        let body = frame.zip(header.body_offset).and_then(|(frame, offset)| frame.get(offset..));
        match api_key {
            Ok(ApiKey::SaslHandshake) => self.handshake(&mut state, header, body),
            Ok(ApiKey::SaslAuthenticate) => self.authenticate(&mut state, store, header, body),
            _ if state.authenticated => Admit::Forward,
            Ok(ApiKey::ApiVersions) => Admit::Forward,
            _ => self.refuse(Refusal::UnauthenticatedRequest),
        }
    }

    fn handshake(&self, state: &mut State, header: &RequestHeader, body: Option<&[u8]>) -> Admit {
        let Some(name) = body.and_then(|body| Reader::new(body).string(false).ok()) else {
            return self.refuse(Refusal::SaslMalformed);
        };
        let (error_code, mechanism) = match ClientMechanism::parse(name) {
            // After a v0 handshake the client would send bare SASL tokens, not Kafka requests.
            Some(_) if header.api_version == 0 => (UNSUPPORTED_VERSION, None),
            Some(mechanism) => (0, Some(mechanism)),
            None => (UNSUPPORTED_SASL_MECHANISM, None),
        };
        let mechanisms = ClientMechanism::ALL.iter().map(|m| StrBytes::from_static_str(m.name())).collect();
        let response = SaslHandshakeResponse::default().with_error_code(error_code).with_mechanisms(mechanisms);
        let Ok(answer) = encode_response(ApiKey::SaslHandshake, header.api_version, header.correlation_id, &response)
        else {
            return self.refuse(Refusal::SaslMalformed);
        };
        match mechanism {
            Some(mechanism) => {
                state.step = Step::Handshaken(mechanism);
                Admit::Answer(answer)
            }
            None => {
                self.refused(Refusal::SaslUnsupportedMechanism, None);
                Admit::AnswerAndClose(answer)
            }
        }
    }

    fn authenticate(
        &self,
        state: &mut State,
        store: &CredentialStore,
        header: &RequestHeader,
        body: Option<&[u8]>,
    ) -> Admit {
        let flexible = header.api_version >= 2;
        let token = body.and_then(|body| Reader::new(body).nullable_bytes(flexible).ok().flatten());
        let step = std::mem::take(&mut state.step);
        let Some(token) = token.filter(|_| !matches!(step, Step::Start)) else {
            return self.refuse(Refusal::SaslMalformed);
        };
        // The user once authenticated (or `None` mid-exchange), and the bytes to send back.
        let outcome = match step {
            Step::Start => return self.refuse(Refusal::SaslMalformed),
            Step::Handshaken(ClientMechanism::Plain) => plain(store, token).map(|user| (Some(user), Vec::new())),
            Step::Handshaken(mechanism) => {
                let credentials = store.current();
                let lookup = |user: &str| credentials.get(user, mechanism).cloned();
                ScramServer::start(mechanism.hash(), token, lookup).map(|(server, server_first)| {
                    state.step = Step::Scram(Box::new(server));
                    (None, server_first)
                })
            }
            Step::Scram(server) => server.finish(token).map(|(user, server_final)| (Some(user), server_final)),
        };
        match outcome {
            Ok((user, auth_bytes)) => {
                if let Some(user) = user {
                    state.authenticated = true;
                    tracing::debug!(peer = %self.peer, user, "client authenticated");
                }
                let response = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(auth_bytes));
                self.authenticate_answer(header, &response).map_or(Admit::Refuse, Admit::Answer)
            }
            Err(failure) => {
                let cause = match failure {
                    ScramFailure::Malformed(_) => Refusal::SaslMalformed,
                    ScramFailure::UnknownUser => Refusal::SaslUnknownUser,
                    ScramFailure::WrongPassword => Refusal::SaslWrongPassword,
                };
                self.refused(cause, Some(failure));
                state.authenticated = false;
                // Kafka's own words; the same for an unknown user and a wrong password.
                let message = "Authentication failed: Invalid username or password";
                let response = SaslAuthenticateResponse::default()
                    .with_error_code(SASL_AUTHENTICATION_FAILED)
                    .with_error_message(Some(StrBytes::from_static_str(message)));
                self.authenticate_answer(header, &response).map_or(Admit::Refuse, Admit::AnswerAndClose)
            }
        }
    }

    fn authenticate_answer(&self, header: &RequestHeader, response: &SaslAuthenticateResponse) -> Option<Bytes> {
        encode_response(ApiKey::SaslAuthenticate, header.api_version, header.correlation_id, response).ok()
    }

    /// Counts and logs a refusal that closes the connection without an answer.
    fn refuse(&self, cause: Refusal) -> Admit {
        self.refused(cause, None);
        Admit::Refuse
    }

    fn refused(&self, cause: Refusal, failure: Option<ScramFailure>) {
        telemetry::client_auth_refused(cause);
        let detail = match failure {
            Some(ScramFailure::Malformed(what)) => what,
            _ => "",
        };
        tracing::warn!(peer = %self.peer, cause = cause.as_str(), detail, "client refused; closing the connection");
    }
}

/// Checks a PLAIN token (`authzid NUL user NUL password`); the user name on success.
fn plain(store: &CredentialStore, token: &[u8]) -> Result<String, ScramFailure> {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ScramFailure::Malformed("PLAIN token is not authzid NUL user NUL password"));
    };
    let user = std::str::from_utf8(user).map_err(|_| ScramFailure::Malformed("user name is not UTF-8"))?;
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(ScramFailure::Malformed("the authorization id differs from the user name"));
    }
    let credentials = store.current();
    let Some(record) = credentials.get(user, ClientMechanism::Plain) else {
        // As long as a wrong password takes, so the time does not tell which users exist.
        let _ = credentials::Record::with_salt(
            ClientMechanism::Plain.hash(),
            password,
            vec![0; 24],
            std::num::NonZeroU32::new(credentials::DEFAULT_ITERATIONS).expect("not zero"),
        );
        return Err(ScramFailure::UnknownUser);
    };
    if record.verify_password(password) { Ok(user.to_owned()) } else { Err(ScramFailure::WrongPassword) }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("mode", &self.mode).field("peer", &self.peer).finish()
    }
}

#[cfg(test)]
mod tests;
