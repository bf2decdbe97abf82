//! TLS towards the brokers (trust roots, client certificates) and, optionally, on the Kafka
//! listeners (the sidecar's own certificate), all reloaded from disk when the files change.
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

pub use crate::config::{ListenerTlsSettings, TlsSettings};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

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

/// Modification time and size of each file: a change means a new set to load.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// TLS material built from files and rebuilt for new connections when any file changes on disk.
struct Reloadable<C> {
    files: Vec<PathBuf>,
    load: Box<dyn Fn() -> Result<C, TlsError> + Send + Sync>,
    /// The material, the files' stamp it was loaded from, and how many times it was reloaded.
    current: Mutex<(Arc<C>, Stamp, u64)>,
}

impl<C> std::fmt::Debug for Reloadable<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable").field("files", &self.files).finish()
    }
}

impl<C> Reloadable<C> {
    fn new(
        files: Vec<PathBuf>,
        load: impl Fn() -> Result<C, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let current = Mutex::new((Arc::new(load()?), stamp(&files), 0));
        Ok(Reloadable { files, load: Box::new(load), current })
    }

    /// The material for a new connection, rebuilt first if any file changed.
    fn get(&self) -> Arc<C> {
        let mut current = self.current.lock().expect("tls lock");
        let now = stamp(&self.files);
        if now != current.1 {
            match (self.load)() {
                Ok(config) => {
                    tracing::info!(files = ?self.files, "TLS files changed on disk; new connections use them");
                    *current = (Arc::new(config), now, current.2 + 1);
                }
                Err(error) => {
                    // Keep the working material; a half-written secret is retried next time.
                    tracing::warn!(%error, "TLS files changed but cannot be loaded; keeping the previous ones");
                }
            }
        }
        current.0.clone()
    }

    /// How many times the material was reloaded, after reloading it if any file changed.
    fn generation(&self) -> u64 {
        drop(self.get());
        self.current.lock().expect("tls lock").2
    }
}

/// Opens TLS sessions to brokers with the current configuration.
#[derive(Debug)]
pub struct BrokerTls {
    config: Reloadable<ClientConfig>,
}

impl BrokerTls {
    /// Loads the configuration; fails with the exact cause when a file is missing or invalid.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let files = [&settings.ca_file, &settings.client_cert_file, &settings.client_key_file];
        let files = files.into_iter().flatten().cloned().collect();
        Ok(BrokerTls { config: Reloadable::new(files, move || client_config(&settings))? })
    }

    /// Changes whenever the files are reloaded: connections opened before hold the old material.
    pub fn generation(&self) -> u64 {
        self.config.generation()
    }

    /// Runs the TLS handshake on `tcp`, verifying the certificate against `host`.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<client::TlsStream<TcpStream>, TlsError> {
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName { host: host.to_owned() })?;
        TlsConnector::from(self.config.get())
            .connect(server_name, tcp)
            .await
            .map_err(|e| TlsError::Handshake { host: host.to_owned(), reason: handshake_reason(&e) })
    }
}

/// Accepts TLS clients on the Kafka listeners with the current certificate.
#[derive(Debug)]
pub struct ListenerTls {
    config: Reloadable<ServerConfig>,
}

impl ListenerTls {
    pub fn new(settings: ListenerTlsSettings) -> Result<Self, TlsError> {
        let mut files = vec![settings.cert_file.clone(), settings.key_file.clone()];
        files.extend(settings.client_ca_file.clone());
        Ok(ListenerTls { config: Reloadable::new(files, move || server_config(&settings))? })
    }

    /// Runs the server side of the TLS handshake with a client.
    pub async fn accept(&self, tcp: TcpStream) -> Result<server::TlsStream<TcpStream>, TlsError> {
        TlsAcceptor::from(self.config.get()).accept(tcp).await.map_err(|e| {
            let cause = crate::client_auth::tls_refused(&e);
            let reason = handshake_reason(&e).replace("broker certificate", "client certificate");
            TlsError::Handshake {
                host: "client".into(),
                reason: format!("{cause}: {}", reason.replace("broker refused", "client refused")),
            }
        })
    }
}

fn server_config(settings: &ListenerTlsSettings) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&settings.cert_file, "listener certificate")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .map_err(|e| file_error("listener key", &settings.key_file, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca_file {
        Some(ca_file) => {
            let roots = Arc::new(roots(Some(ca_file))?);
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Config(format!("{}: {e}", ca_file.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))
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

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
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
