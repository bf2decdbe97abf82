//! The client side of SCRAM (RFC 5802 / RFC 7677) with SHA-256 or SHA-512, as Kafka uses it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{digest, hmac, pbkdf2};

use super::SaslError;
pub use crate::config::ScramHash;

impl ScramHash {
    pub(crate) fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    pub(crate) fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    pub(crate) fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
}

/// One SCRAM conversation: `client_first`, then `client_final` with the server's first message,
/// then `verify_server_final` with its last.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_first_bare: String,
    nonce: String,
    server_signature: Vec<u8>,
}

impl ScramClient {
    pub fn new(hash: ScramHash, username: &str, password: &str, nonce: String) -> Self {
        let username = username.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={username},r={nonce}");
        ScramClient { hash, password: password.to_owned(), client_first_bare, nonce, server_signature: Vec::new() }
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| SaslError::Protocol("server-first is not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for field in server_first.split(',') {
            match field.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(BASE64.decode(v).map_err(|_| SaslError::Protocol("bad salt"))?),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("e", v)) => return Err(SaslError::Rejected(format!("SCRAM error: {v}"))),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(SaslError::Protocol("server-first lacks nonce, salt or iterations"));
        };
        if !nonce.starts_with(&self.nonce) || iterations == 0 {
            return Err(SaslError::Protocol("server-first nonce or iteration count is invalid"));
        }
        let mut salted = vec![0u8; self.hash.digest().output_len()];
        let iterations = std::num::NonZeroU32::new(iterations).expect("checked above");
        pbkdf2::derive(self.hash.pbkdf2(), iterations, &salt, self.password.as_bytes(), &mut salted);
        let salted_key = hmac::Key::new(self.hash.hmac(), &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(self.hash.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature =
            hmac::sign(&hmac::Key::new(self.hash.hmac(), stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.as_ref().iter().zip(client_signature.as_ref()).map(|(a, b)| a ^ b).collect();
        let server_key = hmac::sign(&salted_key, b"Server Key");
        self.server_signature =
            hmac::sign(&hmac::Key::new(self.hash.hmac(), server_key.as_ref()), auth_message.as_bytes())
                .as_ref()
                .to_vec();
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let text = std::str::from_utf8(server_final).map_err(|_| SaslError::Protocol("server-final is not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(SaslError::Rejected(format!("SCRAM error: {error}")));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.split(',').next().unwrap_or(v)).ok())
            .ok_or(SaslError::Protocol("server-final lacks a verifier"))?;
        if signature != self.server_signature {
            return Err(SaslError::Protocol("the broker's SCRAM signature does not match: not the real broker?"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: SCRAM-SHA-256 with user "user" and password "pencil".
    #[test]
    fn rfc_7677_example() {
        let mut client = ScramClient::new(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = client.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert!(client.verify_server_final(b"v=AAAA").is_err());
        assert!(matches!(client.verify_server_final(b"e=invalid-proof"), Err(SaslError::Rejected(_))));
    }
}
