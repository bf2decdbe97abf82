//! Brokers that demand TLS and SASL, for the tests of the sidecar's upstream security.
//!
//! Every broker here is a Tansu (in memory, node id 111, [`crate::Tansu::behind`]) behind one or
//! two front ends, and Tansu advertises the outermost front end's address, so clients that follow
//! metadata come back through the front ends:
//!
//! - [`Certs`]: a test CA, an unrelated CA and certificates for every TLS failure worth testing,
//!   made with the `openssl` CLI ([`Certs::shared`] once per test process).
//! - [`TlsBroker`]: stunnel terminating TLS (optionally requiring a client certificate) in front
//!   of Tansu, advertised as `localhost:PORT` so SNI and hostname checks use `localhost`.
//! - [`SaslBroker`]: `tests/clients/sasl_front.py` enforcing SASL PLAIN, SCRAM-SHA-256/512 and
//!   OAUTHBEARER with AWS MSK IAM tokens, with an optional session lifetime (KIP-368
//!   re-authentication) and optionally stunnel in front of it (SASL_SSL, as MSK's IAM port 9098).
//!   It records every authentication ([`SaslBroker::auth_events`]).
//! - [`iam_token`] / [`check_iam_token`]: the reference presigner `tests/clients/iam_token.py` and
//!   the front end's SigV4 verifier, run offline.
//! - [`probe`] / [`kcat_metadata`]: confluent-kafka, kafka-python or kcat connecting with given
//!   [`ClientSecurity`] settings, reporting the brokers they saw or the error they got.
//!
//! Typical use against the sidecar:
//!
//! ```ignore
//! let broker = TlsBroker::start(TlsOptions::mtls());
//! // the sidecar: --bootstrap-server <broker.addr()> with broker.ca_path(),
//! // broker.client_cert_path() and broker.client_key_path()
//! let users = [User::new("alice", "pw")];
//! let broker = SaslBroker::start(&[Mechanism::ScramSha512], &users, Some(Duration::from_secs(3)));
//! // ... drive clients through the sidecar, then:
//! assert!(broker.wait_for_reauthentications(1, Duration::from_secs(10)));
//! assert_eq!(broker.expired_sessions(), 0);
//! ```
//!
//! Front ends relay Tansu's bytes unchanged unless `normalize_api_versions` is set: Debian's
//! kcat (librdkafka 2.0.2) cannot parse Tansu's ApiVersions response, so tests that point kcat
//! straight at these brokers set it.
//!
//! Needs what `scripts/setup.sh` installs: `stunnel4`, `openssl`, Tansu
//! (`KAFKA_SIDECAR_TANSU`) and the venv (`KAFKA_SIDECAR_PYTHON`, with `scramp`).
//! Processes are [`crate::ChildProcess`]es: killed when their handle is dropped, their output in
//! files in the test process's directory ([`crate::test_dir`]), with a tail printed on stderr
//! when the test panics.

mod certs;
mod client;
mod sasl;
mod tls;

pub use certs::{CertKey, Certs, ServerCert};
pub use client::{Client, ClientSecurity, ProbeResult, kcat_metadata, kcat_metadata_within, probe, probe_holding};
pub use sasl::{
    AuthEvent, AwsCredentials, IamTokenOptions, Mechanism, SaslBroker, SaslConfig, User, check_iam_token, iam_token,
    iam_token_with,
};
pub use tls::{TlsBroker, TlsOptions, TlsTerminator};
