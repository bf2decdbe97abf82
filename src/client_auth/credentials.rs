//! The credentials file of clients that authenticate to the sidecar with SASL: one salted, hashed
//! record per user and mechanism, in the form Kafka stores SCRAM credentials (salt, StoredKey,
//! ServerKey, iterations), parsed, checked and reloaded when the file changes on disk.
//!
//! It never holds, logs or reports a password, nor the text of a line it cannot read: only salts,
//! iteration counts and the keys derived from them, and line numbers.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};

use crate::sasl::ScramHash;

/// Fewest PBKDF2 iterations a record may have (Kafka's own minimum for SCRAM).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations a record may have: each authentication pays for them.
pub const MAX_ITERATIONS: u32 = 100_000;
/// Iterations of records made by `kafka-sidecar hash-password` unless told otherwise.
pub const DEFAULT_ITERATIONS: u32 = 8192;
/// Bytes of salt in records made here.
const SALT_BYTES: usize = 24;

/// A SASL mechanism a client may use to authenticate to the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl ClientMechanism {
    pub const ALL: [ClientMechanism; 3] =
        [ClientMechanism::Plain, ClientMechanism::ScramSha256, ClientMechanism::ScramSha512];

    /// The name on the wire, in SaslHandshake, and in the credentials file.
    pub fn name(self) -> &'static str {
        match self {
            ClientMechanism::Plain => "PLAIN",
            ClientMechanism::ScramSha256 => "SCRAM-SHA-256",
            ClientMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(name: &[u8]) -> Option<ClientMechanism> {
        ClientMechanism::ALL.into_iter().find(|m| m.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The hash of the records made for this mechanism (SHA-512 for PLAIN).
    pub fn hash(self) -> ScramHash {
        match self {
            ClientMechanism::ScramSha256 => ScramHash::Sha256,
            ClientMechanism::Plain | ClientMechanism::ScramSha512 => ScramHash::Sha512,
        }
    }
}

/// One user's salted credential for one mechanism: what SCRAM needs, and enough to check a PLAIN
/// password (derive the StoredKey from it and compare).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: NonZeroU32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record").field("hash", &self.hash).field("iterations", &self.iterations).finish()
    }
}

impl Record {
    /// The record of `password` with a fresh random salt.
    pub fn new(hash: ScramHash, password: &[u8], iterations: NonZeroU32) -> Record {
        let mut salt = vec![0u8; SALT_BYTES];
        ring::rand::SystemRandom::new().fill(&mut salt).expect("system randomness");
        Record::with_salt(hash, password, salt, iterations)
    }

    pub fn with_salt(hash: ScramHash, password: &[u8], salt: Vec<u8>, iterations: NonZeroU32) -> Record {
        let (stored_key, server_key) = derive(hash, password, &salt, iterations);
        Record { hash, salt, iterations, stored_key, server_key }
    }

    /// Whether `password` is the one this record was made from (compared in constant time).
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let (stored_key, _) = derive(self.hash, password, &self.salt, self.iterations);
        constant_time_eq(&stored_key, &self.stored_key)
    }

    /// The record as a line of the credentials file.
    pub fn line(&self, user: &str, mechanism: ClientMechanism) -> String {
        format!(
            "{user} {} salt={},stored_key={},server_key={},iterations={}",
            mechanism.name(),
            BASE64.encode(&self.salt),
            BASE64.encode(&self.stored_key),
            BASE64.encode(&self.server_key),
            self.iterations
        )
    }
}

/// StoredKey and ServerKey of a password (RFC 5802).
fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: NonZeroU32) -> (Vec<u8>, Vec<u8>) {
    let mut salted = vec![0u8; hash.digest().output_len()];
    pbkdf2::derive(hash.pbkdf2(), iterations, salt, password, &mut salted);
    let salted_key = hmac::Key::new(hash.hmac(), &salted);
    let client_key = hmac::sign(&salted_key, b"Client Key");
    let stored_key = digest::digest(hash.digest(), client_key.as_ref()).as_ref().to_vec();
    let server_key = hmac::sign(&salted_key, b"Server Key").as_ref().to_vec();
    (stored_key, server_key)
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path} line {line}: {reason}")]
    Line { path: PathBuf, line: usize, reason: String },
    #[error("{path} holds no credentials; `kafka-sidecar hash-password USER` makes them")]
    Empty { path: PathBuf },
}

/// Every user's records, by user and mechanism.
#[derive(Debug, Default)]
pub struct Credentials {
    records: HashMap<(String, ClientMechanism), Record>,
}

impl Credentials {
    /// The record of `user` for `mechanism`, if the file has one.
    pub fn get(&self, user: &str, mechanism: ClientMechanism) -> Option<&Record> {
        self.records.get(&(user.to_owned(), mechanism))
    }

    /// Parses the file's text: `USER MECHANISM salt=…,stored_key=…,server_key=…,iterations=…`
    /// per line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str, path: &Path) -> Result<Credentials, CredentialsError> {
        let mut records = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let problem = |reason: &str| CredentialsError::Line {
                path: path.to_owned(),
                line: index + 1,
                reason: reason.to_owned(),
            };
            let mut fields = line.split_whitespace();
            let (Some(user), Some(mechanism), Some(record), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(problem("expected USER MECHANISM salt=…,stored_key=…,server_key=…,iterations=…"));
            };
            let mechanism = ClientMechanism::parse(mechanism.as_bytes())
                .ok_or_else(|| problem("the mechanism is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))?;
            let record = parse_record(record, mechanism).map_err(problem)?;
            if records.insert((user.to_owned(), mechanism), record).is_some() {
                return Err(problem("a second record for the same user and mechanism"));
            }
        }
        if records.is_empty() {
            return Err(CredentialsError::Empty { path: path.to_owned() });
        }
        Ok(Credentials { records })
    }

    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CredentialsError::File { path: path.to_owned(), reason: e.to_string() })?;
        Credentials::parse(&text, path)
    }
}

/// `salt=…,stored_key=…,server_key=…,iterations=…` in any order; the keys' length says the hash
/// (32 bytes SHA-256, 64 SHA-512), which SCRAM lines must match.
fn parse_record(text: &str, mechanism: ClientMechanism) -> Result<Record, &'static str> {
    let (mut salt, mut stored_key, mut server_key, mut iterations) = (None, None, None, None);
    for field in text.split(',') {
        let decode = |v: &str| BASE64.decode(v).map_err(|_| "a key or salt is not base64");
        match field.split_once('=') {
            Some(("salt", v)) => salt = Some(decode(v)?),
            Some(("stored_key", v)) => stored_key = Some(decode(v)?),
            Some(("server_key", v)) => server_key = Some(decode(v)?),
            Some(("iterations", v)) => iterations = Some(v.parse::<u32>().map_err(|_| "iterations is not a number")?),
            _ => return Err("unknown field; expected salt, stored_key, server_key and iterations"),
        }
    }
    let (Some(salt), Some(stored_key), Some(server_key), Some(iterations)) = (salt, stored_key, server_key, iterations)
    else {
        return Err("salt, stored_key, server_key and iterations are all required");
    };
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err("iterations must be within 4096..=100000");
    }
    if salt.is_empty() {
        return Err("the salt is empty");
    }
    let hash = match stored_key.len() {
        32 => ScramHash::Sha256,
        64 => ScramHash::Sha512,
        _ => return Err("stored_key is neither a SHA-256 nor a SHA-512 digest"),
    };
    if server_key.len() != stored_key.len() {
        return Err("stored_key and server_key differ in length");
    }
    if mechanism != ClientMechanism::Plain && hash != mechanism.hash() {
        return Err("the keys' length does not match the SCRAM mechanism's hash");
    }
    let iterations = NonZeroU32::new(iterations).expect("checked above");
    Ok(Record { hash, salt, iterations, stored_key, server_key })
}

/// Modification time and size of the file: a change means new credentials to load.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The credentials file, read again for the next authentication whenever it changed on disk.
#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    current: Mutex<(Arc<Credentials>, Stamp)>,
}

impl CredentialStore {
    /// Loads the file; fails with the line and reason when it cannot be used.
    pub fn load(path: &Path) -> Result<CredentialStore, CredentialsError> {
        let before = stamp(path);
        let credentials = Credentials::load(path)?;
        Ok(CredentialStore { path: path.to_owned(), current: Mutex::new((Arc::new(credentials), before)) })
    }

    /// The credentials for an authentication starting now, reloaded first if the file changed.
    /// A file that changed but cannot be used is reported and the previous credentials stay.
    pub fn current(&self) -> Arc<Credentials> {
        let mut current = self.current.lock().expect("credentials lock");
        let now = stamp(&self.path);
        if now != current.1 {
            match Credentials::load(&self.path) {
                Ok(credentials) => {
                    tracing::info!(file = %self.path.display(), "client credentials changed on disk; reloaded");
                    *current = (Arc::new(credentials), now);
                }
                Err(error) => {
                    tracing::warn!(%error, "client credentials changed but cannot be loaded; keeping the previous ones");
                    current.1 = now;
                }
            }
        }
        current.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iterations() -> NonZeroU32 {
        NonZeroU32::new(MIN_ITERATIONS).unwrap()
    }

    #[test]
    fn records_check_the_password_they_were_made_from() {
        for mechanism in ClientMechanism::ALL {
            let record = Record::new(mechanism.hash(), b"pencil", iterations());
            assert!(record.verify_password(b"pencil"));
            assert!(!record.verify_password(b"pencil "));
            let line = record.line("user", mechanism);
            assert!(!line.contains("pencil"), "{line}");
            let parsed = Credentials::parse(&line, Path::new("f")).unwrap();
            assert_eq!(parsed.get("user", mechanism), Some(&record));
            assert!(parsed.get("other", mechanism).is_none());
        }
    }

    /// RFC 7677's example: user "user", password "pencil", this salt and 4096 iterations.
    #[test]
    fn the_stored_key_is_the_rfc_7677_one() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let record = Record::with_salt(ScramHash::Sha256, b"pencil", salt, iterations());
        // ServerKey HMAC-ed with the example's AuthMessage gives its server signature (checked in
        // the SCRAM server's tests); here the record reads back as written.
        let line = record.line("user", ClientMechanism::ScramSha256);
        assert!(line.starts_with("user SCRAM-SHA-256 salt=W22ZaJ0SNY7soEsUEjb6gQ==,stored_key="), "{line}");
    }

    #[test]
    fn bad_lines_name_their_line_and_never_their_text() {
        let cases = [
            "alice PLAIN hunter2",
            "alice PLAIN",
            "alice CRAM-MD5 salt=AA==,stored_key=AA==,server_key=AA==,iterations=4096",
            "alice PLAIN salt=AA==,stored_key=AA==,server_key=AA==,iterations=4096",
        ];
        for case in cases {
            let text = format!("# header\n\n{case}\n");
            let error = Credentials::parse(&text, Path::new("creds")).unwrap_err().to_string();
            assert!(error.starts_with("creds line 3: "), "{error}");
            assert!(!error.contains("hunter2") && !error.contains("AA=="), "{error}");
        }
        let record = Record::new(ScramHash::Sha256, b"pw", iterations()).line("a", ClientMechanism::ScramSha256);
        let wrong_hash = record.replace("SCRAM-SHA-256", "SCRAM-SHA-512");
        assert!(Credentials::parse(&wrong_hash, Path::new("f")).is_err());
        assert!(Credentials::parse(&format!("{record}\n{record}"), Path::new("f")).is_err());
        assert!(matches!(Credentials::parse("# nothing\n", Path::new("f")), Err(CredentialsError::Empty { .. })));
    }

    #[test]
    fn the_store_reloads_a_changed_file_and_keeps_the_old_one_when_the_new_is_bad() {
        let path = std::env::temp_dir().join(format!("kafka-sidecar-creds-{}", std::process::id()));
        let alice = Record::new(ScramHash::Sha512, b"a", iterations()).line("alice", ClientMechanism::Plain);
        std::fs::write(&path, &alice).unwrap();
        let store = CredentialStore::load(&path).unwrap();
        assert!(store.current().get("alice", ClientMechanism::Plain).is_some());
        let bob = Record::new(ScramHash::Sha512, b"b", iterations()).line("bob", ClientMechanism::Plain);
        std::fs::write(&path, format!("{bob}\n# a longer file\n")).unwrap();
        assert!(store.current().get("bob", ClientMechanism::Plain).is_some());
        assert!(store.current().get("alice", ClientMechanism::Plain).is_none());
        std::fs::write(&path, "bob PLAIN broken-and-longer-than-before\n").unwrap();
        assert!(store.current().get("bob", ClientMechanism::Plain).is_some());
        let _ = std::fs::remove_file(&path);
    }
}
