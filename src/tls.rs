//! TLS towards the brokers: trust roots, client certificates, and their reload from disk.
//!
//! The rustls client configuration is built from the system's trust store or a CA bundle, plus
//! an optional client certificate and key for mutual TLS. Each broker connection verifies the
//! broker's certificate against the host name it dials (also sent as SNI). Before a connection
//! is opened the files are checked for changes (Kubernetes rotates mounted secrets by swapping
//! them); a changed set is loaded for new connections while live ones keep theirs. The crypto
//! provider is *ring*: it builds from crates.io with a C compiler alone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where the TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// PEM bundle of trusted CAs; `None` uses the system trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for brokers that require mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    File { what: &'static str, path: PathBuf, reason: String },
    #[error("no trusted CA certificates found ({0})")]
    NoRoots(String),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    #[error("{host} is not a valid TLS server name")]
    ServerName { host: String },
    #[error("TLS handshake with {host} failed: {reason}")]
    Handshake { host: String, reason: String },
}

impl TlsError {
    /// A short, closed-set label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TlsError::File { .. } | TlsError::NoRoots(_) | TlsError::Config(_) => "tls_config",
            TlsError::ServerName { .. } => "tls_server_name",
            TlsError::Handshake { .. } => "tls_handshake",
        }
    }
}

/// Opens TLS sessions to brokers with the current configuration.
#[derive(Debug)]
pub struct BrokerTls {
    settings: TlsSettings,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    config: Arc<ClientConfig>,
    stamp: Vec<Option<(SystemTime, u64)>>,
}

impl BrokerTls {
    /// Loads the configuration; fails with the exact cause when a file is missing or invalid.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let loaded = Loaded { config: Arc::new(client_config(&settings)?), stamp: stamp(&settings) };
        Ok(BrokerTls { settings, current: Mutex::new(loaded) })
    }

    /// The configuration for a new connection, reloaded first if any file changed on disk.
    fn config(&self) -> Arc<ClientConfig> {
        let mut current = self.current.lock().expect("tls lock");
        let now = stamp(&self.settings);
        if now != current.stamp {
            match client_config(&self.settings) {
                Ok(config) => {
                    tracing::info!("TLS files changed on disk; new broker connections use them");
                    *current = Loaded { config: Arc::new(config), stamp: now };
                }
                Err(error) => {
                    // Keep the working configuration; a half-written secret is retried next time.
                    tracing::warn!(%error, "TLS files changed but cannot be loaded; keeping the previous ones");
                }
            }
        }
        current.config.clone()
    }

    /// Runs the TLS handshake on `tcp`, verifying the certificate against `host`.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, TlsError> {
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName { host: host.to_owned() })?;
        TlsConnector::from(self.config())
            .connect(server_name, tcp)
            .await
            .map_err(|e| TlsError::Handshake { host: host.to_owned(), reason: handshake_reason(&e) })
    }
}

/// rustls' own words for why a handshake failed (unknown issuer, name mismatch, expired…),
/// without the current time, so the same cause reads the same on every attempt.
fn handshake_reason(error: &std::io::Error) -> String {
    use rustls::CertificateError;
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cert)) => match cert {
            CertificateError::ExpiredContext { not_after, .. } => {
                format!("invalid broker certificate: Expired (not valid after unix time {})", not_after.as_secs())
            }
            CertificateError::NotValidYetContext { not_before, .. } => {
                format!("invalid broker certificate: NotValidYet (not valid before unix time {})", not_before.as_secs())
            }
            CertificateError::NotValidForNameContext { expected, presented } => format!(
                "invalid broker certificate: NotValidForName (dialled {expected:?}, certificate names {presented:?})"
            ),
            other => format!("invalid broker certificate: {other:?}"),
        },
        Some(rustls::Error::AlertReceived(alert)) => format!("broker refused the handshake: {alert:?}"),
        Some(other) => other.to_string(),
        None => error.to_string(),
    }
}

fn stamp(settings: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    [&settings.ca_file, &settings.client_cert_file, &settings.client_key_file]
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(path.as_ref()?).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn client_config(settings: &TlsSettings) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(settings.ca_file.as_deref())?);
    match (&settings.client_cert_file, &settings.client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = certificates(cert_file, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_error("client key", key_file, e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(TlsError::Config("a client certificate needs both a certificate and a key file".into())),
    }
}

fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path, "CA bundle")? {
                store.add(cert).map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                let errors: Vec<String> = native.errors.iter().map(ToString::to_string).collect();
                return Err(TlsError::NoRoots(format!("system trust store: {}", errors.join("; "))));
            }
        }
    }
    if store.is_empty() {
        return Err(TlsError::NoRoots(ca_file.map(|p| p.display().to_string()).unwrap_or_default()));
    }
    Ok(store)
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::File { what, path: path.to_owned(), reason: "no PEM certificate in it".into() });
    }
    Ok(certs)
}

fn file_error(what: &'static str, path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::File { what, path: path.to_owned(), reason: error.to_string() }
}
