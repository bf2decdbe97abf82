//! The secure-broker harness of `support::security` checked with real clients and no sidecar:
//! certificates, TLS termination (server certificates, hostname, expiry, mTLS), SASL PLAIN and
//! SCRAM enforcement, session expiry and re-authentication, the legacy SaslHandshake v0 flow,
//! and MSK IAM tokens over OAUTHBEARER.
//!
//! Layout: `tls` (certificates and TLS termination), `sasl` (password mechanisms, session expiry,
//! the legacy handshake), `iam` (MSK IAM tokens); shared users and helpers here.

mod iam;
mod sasl;
mod tls;

use std::time::Duration;

use kafka_sidecar_test_support::security::User;

/// How long kcat retries when it is expected to fail.
const FAIL_WAIT: Duration = Duration::from_secs(2);

fn alice() -> User {
    User::new("alice", "alice-secret")
}

fn bob() -> User {
    User::new("bob", "bob-secret")
}

fn text(output: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}
