//! The server side of SCRAM (RFC 5802 / RFC 7677) with SHA-256 or SHA-512, checking a client's
//! proof against a stored record (StoredKey, ServerKey, salt, iterations) as a Kafka broker does.
//!
//! Pure: it reads and writes the exchange's messages and never performs I/O. It never learns
//! the password, and an unknown user goes through the same rounds as a wrong password, failing at
//! the proof, so the answers do not tell which user names exist.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SecureRandom;
use ring::{digest, hmac};

use super::credentials::{Record, constant_time_eq};
use crate::sasl::ScramHash;

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramFailure {
    /// A message did not follow RFC 5802 (or asked for channel binding).
    Malformed(&'static str),
    /// No record for the user: the proof cannot match.
    UnknownUser,
    /// The proof does not match the record.
    WrongPassword,
}

/// A SCRAM exchange after the server's first message, awaiting the client's final one.
pub struct ScramServer {
    hash: ScramHash,
    user: String,
    /// `None` for an unknown user (a made-up salt was sent).
    record: Option<Record>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Reads the client's first message, finds the user's record with `lookup`, and returns the
    /// exchange with the server's first message.
    pub fn start(
        hash: ScramHash,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<Record>,
    ) -> Result<(ScramServer, Vec<u8>), ScramFailure> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramFailure::Malformed("not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ScramFailure::Malformed("client-first lacks its GS2 header"));
        };
        if flag != "n" && flag != "y" {
            return Err(ScramFailure::Malformed("channel binding is not supported"));
        }
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .ok_or(ScramFailure::Malformed("client-first lacks the user name"))?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramFailure::Malformed("client-first lacks the nonce"))?;
        let user = unescape(user).ok_or(ScramFailure::Malformed("bad user name escape"))?;
        match authzid.strip_prefix("a=") {
            None if authzid.is_empty() => {}
            Some(id) if unescape(id).as_deref() == Some(user.as_str()) => {}
            _ => return Err(ScramFailure::Malformed("the authorization id differs from the user name")),
        }
        let record = lookup(&user).filter(|record| record.hash == hash);
        let (salt, iterations) = match &record {
            Some(record) => (record.salt.clone(), record.iterations.get()),
            None => (random_bytes(24), super::credentials::DEFAULT_ITERATIONS),
        };
        let nonce = format!("{client_nonce}{}", BASE64.encode(random_bytes(18)));
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        let gs2_header = format!("{flag},{authzid},");
        let first = server_first.clone().into_bytes();
        Ok((
            ScramServer { hash, user, record, gs2_header, client_first_bare: bare.to_owned(), server_first, nonce },
            first,
        ))
    }

    /// Checks the client's final message; returns the user and the server's final message on
    /// success.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramFailure> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramFailure::Malformed("not UTF-8"))?;
        let (without_proof, proof) =
            text.rsplit_once(",p=").ok_or(ScramFailure::Malformed("client-final lacks the proof"))?;
        let mut fields = without_proof.split(',');
        let binding = fields.next().and_then(|f| f.strip_prefix("c=")).and_then(|c| BASE64.decode(c).ok());
        if binding.as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramFailure::Malformed("client-final channel binding does not match"));
        }
        // Kafka accepts a nonce that only ends with the server's (`endsWith`): librdkafka 2.0 sends
        // its own nonce again in front of it. The proof covers the message as sent either way.
        if !fields.next().and_then(|f| f.strip_prefix("r=")).is_some_and(|r| r.ends_with(self.nonce.as_str())) {
            return Err(ScramFailure::Malformed("client-final nonce does not match"));
        }
        let proof = BASE64.decode(proof).map_err(|_| ScramFailure::Malformed("the proof is not base64"))?;
        let Some(record) = self.record else {
            return Err(ScramFailure::UnknownUser);
        };
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let stored_key = hmac::Key::new(self.hash.hmac(), &record.stored_key);
        let client_signature = hmac::sign(&stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.as_ref().len() {
            return Err(ScramFailure::WrongPassword);
        }
        let client_key: Vec<u8> = proof.iter().zip(client_signature.as_ref()).map(|(a, b)| a ^ b).collect();
        let derived = digest::digest(self.hash.digest(), &client_key);
        if !constant_time_eq(derived.as_ref(), &record.stored_key) {
            return Err(ScramFailure::WrongPassword);
        }
        let server_key = hmac::Key::new(self.hash.hmac(), &record.server_key);
        let signature = hmac::sign(&server_key, auth_message.as_bytes());
        Ok((self.user, format!("v={}", BASE64.encode(signature.as_ref())).into_bytes()))
    }
}

/// A SCRAM `saslname`: `=2C` is a comma, `=3D` an equals sign, and no other `=` may appear.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("system randomness");
    bytes
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::sasl::ScramClient;

    fn record(hash: ScramHash, password: &str) -> Record {
        Record::new(hash, password.as_bytes(), NonZeroU32::new(4096).unwrap())
    }

    fn exchange(hash: ScramHash, stored: Option<Record>, password: &str) -> Result<(), ScramFailure> {
        let mut client = ScramClient::new(hash, "us=er,1", password, "fyko+d2lbbFgONRv9qkxdawL".into());
        let (server, server_first) =
            ScramServer::start(hash, &client.client_first(), |user| stored.filter(|_| user == "us=er,1"))?;
        let client_final = client.client_final(&server_first).expect("the client accepts the server-first");
        let (user, server_final) = server.finish(&client_final)?;
        assert_eq!(user, "us=er,1");
        client.verify_server_final(&server_final).expect("the client accepts the server signature");
        Ok(())
    }

    #[test]
    fn the_sidecars_own_scram_client_authenticates_with_the_right_password_only() {
        for hash in [ScramHash::Sha256, ScramHash::Sha512] {
            assert_eq!(exchange(hash, Some(record(hash, "pencil")), "pencil"), Ok(()));
            assert_eq!(exchange(hash, Some(record(hash, "pencil")), "pen"), Err(ScramFailure::WrongPassword));
            assert_eq!(exchange(hash, None, "pencil"), Err(ScramFailure::UnknownUser));
        }
        // A record of the other hash is no record for this mechanism.
        let other = record(ScramHash::Sha512, "pencil");
        assert_eq!(exchange(ScramHash::Sha256, Some(other), "pencil"), Err(ScramFailure::UnknownUser));
    }

    /// RFC 7677 section 3, from the server's side: the example's salt, nonces and proof.
    #[test]
    fn rfc_7677_example() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let stored = Record::with_salt(ScramHash::Sha256, b"pencil", salt, NonZeroU32::new(4096).unwrap());
        let (mut server, _) =
            ScramServer::start(ScramHash::Sha256, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |_| Some(stored)).unwrap();
        // Replay the example's server nonce.
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", server.nonce);
        let client_final = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(server.finish(client_final).unwrap().1, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn malformed_messages_are_refused() {
        let hash = ScramHash::Sha256;
        for first in
            [&b"p=tls-unique,,n=u,r=x"[..], b"n,,r=x", b"n,,n=u", b"n,a=other,n=u,r=x", b"n,,n=u=2,r=x", b"\xff"]
        {
            assert!(matches!(ScramServer::start(hash, first, |_| None), Err(ScramFailure::Malformed(_))), "{first:?}");
        }
        let (server, _) = ScramServer::start(hash, b"n,,n=u,r=x", |_| Some(record(hash, "p"))).unwrap();
        assert!(matches!(server.finish(b"c=biws,r=x,p=AAAA"), Err(ScramFailure::Malformed(_))));
    }
}
