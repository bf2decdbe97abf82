//! TLS termination with stunnel (Debian `stunnel4`) in front of a plaintext Kafka listener.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::certs::{CertKey, Certs, ServerCert};
use super::sasl::spawn_front;
use crate::child::{ChildProcess, START_TIMEOUT};
use crate::ports::{listening, with_port_retries};
use crate::tansu::Tansu;

/// How a TLS front end behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// The certificate presented to clients.
    pub server_cert: ServerCert,
    /// mTLS: refuse clients without a certificate signed by the test CA.
    pub require_client_cert: bool,
    /// Offer TLS 1.2 only (default: 1.2 and 1.3, so 1.3 is negotiated).
    pub tls12_only: bool,
    /// [`TlsBroker`] only: put a relay (`sasl_front.py --no-auth --normalize-api-versions`)
    /// between stunnel and Tansu that drops the top-level tagged fields of ApiVersions v3+
    /// responses, which librdkafka 2.0 (Debian's kcat) cannot parse. Off: Tansu's bytes as they
    /// are.
    pub normalize_api_versions: bool,
}

impl TlsOptions {
    /// The `localhost` certificate and a required client certificate.
    pub fn mtls() -> TlsOptions {
        TlsOptions { require_client_cert: true, ..TlsOptions::default() }
    }

    /// Presents `server_cert` instead; no client certificate required.
    pub fn with_server_cert(server_cert: ServerCert) -> TlsOptions {
        TlsOptions { server_cert, ..TlsOptions::default() }
    }

    /// See [`TlsOptions::normalize_api_versions`]; needed for kcat.
    pub fn normalize_api_versions(mut self) -> TlsOptions {
        self.normalize_api_versions = true;
        self
    }

    /// See [`TlsOptions::tls12_only`].
    pub fn tls12_only(mut self) -> TlsOptions {
        self.tls12_only = true;
        self
    }
}

/// stunnel accepting TLS on `127.0.0.1:PORT` (addressed as `localhost:PORT`) and forwarding the
/// decrypted stream to a plaintext `upstream`. Certificates come from [`Certs::shared`]. With
/// `debug = info` its log has one line per event: `accepted connection from`, `TLS accepted`,
/// `Certificate accepted at depth=0: CN=...`, `SSL_accept: ...` on a failed handshake.
pub struct TlsTerminator {
    process: ChildProcess,
    port: u16,
    upstream: String,
    options: TlsOptions,
}

impl TlsTerminator {
    /// Starts stunnel on a free port in front of `upstream` (`host:port`).
    pub fn start(upstream: &str, options: TlsOptions) -> TlsTerminator {
        with_port_retries("stunnel", || TlsTerminator::start_on(crate::free_port(), upstream, options))
    }

    /// Starts stunnel on `port` and waits until it accepts connections; on failure, why (with
    /// its output).
    pub fn start_on(port: u16, upstream: &str, options: TlsOptions) -> Result<TlsTerminator, String> {
        let certs = Certs::shared();
        let server: &CertKey = certs.server(options.server_cert);
        let config_path = crate::temp_path("stunnel").with_extension("conf");
        let mut config = format!(
            "foreground = yes\n\
             pid =\n\
             syslog = no\n\
             debug = info\n\
             \n\
             [kafka]\n\
             accept = 127.0.0.1:{port}\n\
             connect = {upstream}\n\
             cert = {cert}\n\
             key = {key}\n\
             sslVersionMin = TLSv1.2\n\
             socket = l:TCP_NODELAY=1\n\
             socket = r:TCP_NODELAY=1\n\
             TIMEOUTclose = 0\n",
            cert = server.cert.display(),
            key = server.key.display(),
        );
        if options.tls12_only {
            config.push_str("sslVersionMax = TLSv1.2\n");
        }
        if options.require_client_cert {
            config.push_str(&format!("CAfile = {}\nverifyChain = yes\nrequireCert = yes\n", certs.ca_cert().display()));
        }
        fs::write(&config_path, config).unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let bin = if Path::new("/usr/bin/stunnel4").exists() { "stunnel4" } else { "stunnel" };
        let mut cmd = Command::new(bin);
        cmd.arg(&config_path);
        let mut process = ChildProcess::spawn("stunnel", cmd);
        process.owns_file(config_path);
        process.wait_until(&format!("listen on 127.0.0.1:{port}"), START_TIMEOUT, |_| listening(port))?;
        Ok(TlsTerminator { process, port, upstream: upstream.to_string(), options })
    }

    /// `localhost:PORT`: the address clients connect to (SNI and hostname checks use
    /// `localhost`).
    pub fn addr(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// `127.0.0.1:PORT`, the same listener by IP.
    pub fn ip_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn options(&self) -> TlsOptions {
        self.options
    }

    /// stunnel's log so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.process.wait_for_log(needle, timeout)
    }

    /// Completed TLS handshakes so far (`TLS accepted` lines).
    pub fn handshakes(&self) -> usize {
        self.logs().matches("TLS accepted").count()
    }

    /// Failed TLS handshakes so far: the `SSL_accept` error lines (each names the cause, e.g.
    /// `peer did not return a certificate`, `certificate verify failed`, `tlsv1 alert unknown
    /// ca`).
    pub fn handshake_errors(&self) -> Vec<String> {
        self.logs().lines().filter(|l| l.contains("SSL_accept")).map(str::to_string).collect()
    }

    /// Subjects of client certificates accepted at depth 0 (mTLS), e.g. `CN=kafka-sidecar-client`.
    pub fn client_certificates(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter_map(|l| l.split_once("Certificate accepted at depth=0: ").map(|(_, s)| s.trim().to_string()))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills stunnel now (SIGKILL): connections through it drop.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Tansu behind a [`TlsTerminator`]: an SSL listener at `localhost:PORT` whose metadata names
/// `localhost:PORT` (node id 111).
pub struct TlsBroker {
    // Dropped in this order: the terminator, the relay (held only to keep it running), Tansu.
    terminator: TlsTerminator,
    _relay: Option<ChildProcess>,
    tansu: Tansu,
}

impl TlsBroker {
    /// Starts Tansu and stunnel in front of it with `options`, certificates from
    /// [`Certs::shared`].
    pub fn start(options: TlsOptions) -> TlsBroker {
        with_port_retries("the TLS broker", || {
            let port = crate::free_port();
            let tansu = Tansu::behind(&format!("localhost:{port}"));
            let (relay, upstream) = if options.normalize_api_versions {
                let addr = format!("127.0.0.1:{}", crate::free_port());
                let args = ["--no-auth".to_string(), "--normalize-api-versions".to_string()];
                (Some(spawn_front("relay", &addr, &tansu.addr(), &args)?), addr)
            } else {
                (None, tansu.addr())
            };
            let terminator = TlsTerminator::start_on(port, &upstream, options)?;
            Ok(TlsBroker { terminator, _relay: relay, tansu })
        })
    }

    /// `localhost:PORT`: bootstrap address for SSL clients, and the broker address in metadata.
    pub fn addr(&self) -> String {
        self.terminator.addr()
    }

    pub fn port(&self) -> u16 {
        self.terminator.port()
    }

    /// Tansu's own plaintext `127.0.0.1:port` (it still advertises [`TlsBroker::addr`]).
    pub fn plaintext_addr(&self) -> String {
        self.tansu.addr()
    }

    /// The CA that signed the server certificate (for [`ServerCert::OtherCa`], the other CA).
    pub fn ca_path(&self) -> &Path {
        match self.terminator.options.server_cert {
            ServerCert::OtherCa => self.certs().other_ca_cert(),
            _ => self.certs().ca_cert(),
        }
    }

    /// A CA that did not sign the server certificate.
    pub fn wrong_ca_path(&self) -> &Path {
        match self.terminator.options.server_cert {
            ServerCert::OtherCa => self.certs().ca_cert(),
            _ => self.certs().other_ca_cert(),
        }
    }

    /// Client certificate signed by the test CA (accepted under mTLS).
    pub fn client_cert_path(&self) -> &Path {
        &self.certs().client().cert
    }

    pub fn client_key_path(&self) -> &Path {
        &self.certs().client().key
    }

    pub fn certs(&self) -> &'static Certs {
        Certs::shared()
    }

    pub fn options(&self) -> TlsOptions {
        self.terminator.options
    }

    pub fn terminator(&self) -> &TlsTerminator {
        &self.terminator
    }

    pub fn terminator_mut(&mut self) -> &mut TlsTerminator {
        &mut self.terminator
    }

    pub fn tansu(&self) -> &Tansu {
        &self.tansu
    }

    /// stunnel's log.
    pub fn logs(&self) -> String {
        self.terminator.logs()
    }

    pub fn tansu_logs(&self) -> String {
        self.tansu.logs()
    }
}
