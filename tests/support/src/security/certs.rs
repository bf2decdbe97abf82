//! Test certificates made with the `openssl` CLI: PEM files, ECDSA P-256 keys in PKCS#8.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use crate::ports::random_u64;

/// Which certificate a TLS front end presents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerCert {
    /// SAN `DNS:localhost`, signed by the test CA: what a client trusting [`Certs::ca_cert`] and
    /// connecting to `localhost` accepts.
    #[default]
    Localhost,
    /// SAN `DNS:wrong.example`, signed by the test CA: fails hostname verification for
    /// `localhost`.
    WrongHost,
    /// SAN `DNS:localhost`, signed by the test CA, valid only during January 2020.
    Expired,
    /// SAN `DNS:localhost`, signed by the other CA: fails chain verification.
    OtherCa,
}

/// A certificate and its private key.
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertKey {
    /// The sidecar's flags for serving this certificate on its Kafka listeners, under the host
    /// name the certificate is for (`localhost`).
    pub fn listener_args(&self) -> Vec<&str> {
        fn path(p: &Path) -> &str {
            p.to_str().expect("utf-8 path")
        }
        vec![
            "--advertised-host",
            "localhost",
            "--listener-tls-cert-file",
            path(&self.cert),
            "--listener-tls-key-file",
            path(&self.key),
        ]
    }
}

/// Certificates in a temporary directory: see each accessor. The directory is removed when an
/// owned `Certs` ([`Certs::generate`]) is dropped, unless the thread is panicking.
#[derive(Debug)]
pub struct Certs {
    dir: PathBuf,
    ca: CertKey,
    other_ca: CertKey,
    localhost: CertKey,
    wrong_host: CertKey,
    expired: CertKey,
    other_ca_server: CertKey,
    client: CertKey,
    other_ca_client: CertKey,
    owned: bool,
}

const OPENSSL_CONFIG: &str = r#"
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_localhost]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[server_wrong_host]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ca]
default_ca = test_ca

[test_ca]
database = $ENV::CA_DIR/index.txt
new_certs_dir = $ENV::CA_DIR/issued
serial = $ENV::CA_DIR/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none

[policy_any]
commonName = supplied
"#;

impl Certs {
    /// Certificates generated once per test process and shared by every test (and by
    /// [`super::TlsBroker`] and [`super::SaslBroker`]).
    pub fn shared() -> &'static Certs {
        static SHARED: OnceLock<Certs> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut certs = Certs::generate();
            certs.owned = false;
            certs
        })
    }

    /// Generates a fresh set in a new temporary directory:
    /// - `ca.pem` / `ca.key`: the test CA (`CN=kafka-sidecar test CA`);
    /// - `other-ca.pem` / `other-ca.key`: an unrelated CA, for "wrong CA" tests;
    /// - `localhost.pem` / `.key`: server, SAN `DNS:localhost`, by the test CA;
    /// - `wrong-host.pem` / `.key`: server, SAN `DNS:wrong.example`, by the test CA;
    /// - `expired.pem` / `.key`: server, SAN `DNS:localhost`, by the test CA, expired in 2020;
    /// - `other-ca-server.pem` / `.key`: server, SAN `DNS:localhost`, by the other CA;
    /// - `client.pem` / `.key`: client (`CN=kafka-sidecar-client`, clientAuth), by the test CA;
    /// - `other-ca-client.pem` / `.key`: client, by the other CA (refused under mTLS).
    pub fn generate() -> Certs {
        let dir = crate::temp_path("certs").with_extension("d");
        fs::create_dir_all(dir.join("issued")).expect("create certificate dir");
        fs::write(dir.join("openssl.cnf"), OPENSSL_CONFIG).expect("write openssl.cnf");
        fs::write(dir.join("index.txt"), "").expect("write index.txt");
        fs::write(dir.join("serial"), "1000\n").expect("write serial");
        let pair = |name: &str| CertKey { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
        let certs = Certs {
            ca: pair("ca"),
            other_ca: pair("other-ca"),
            localhost: pair("localhost"),
            wrong_host: pair("wrong-host"),
            expired: pair("expired"),
            other_ca_server: pair("other-ca-server"),
            client: pair("client"),
            other_ca_client: pair("other-ca-client"),
            dir: dir.clone(),
            owned: true,
        };
        certs.self_signed(&certs.ca, "kafka-sidecar test CA");
        certs.self_signed(&certs.other_ca, "unrelated test CA");
        certs.issue(&certs.ca, &certs.localhost, "localhost", "server_localhost");
        certs.issue(&certs.ca, &certs.wrong_host, "wrong.example", "server_wrong_host");
        certs.issue(&certs.other_ca, &certs.other_ca_server, "localhost", "server_localhost");
        certs.issue(&certs.ca, &certs.client, "kafka-sidecar-client", "client_ext");
        certs.issue(&certs.other_ca, &certs.other_ca_client, "kafka-sidecar-client", "client_ext");
        certs.issue_expired(&certs.ca, &certs.expired, "localhost");
        certs
    }

    fn openssl(&self, what: &str, args: &[&str]) {
        let mut cmd = Command::new("openssl");
        cmd.args(args)
            .current_dir(&self.dir)
            .env("CA_DIR", &self.dir)
            .env("OPENSSL_CONF", self.dir.join("openssl.cnf"));
        let output = crate::run_with_timeout(cmd, Duration::from_secs(30));
        crate::expect_success(&format!("openssl {what} (is openssl installed? run scripts/setup.sh)"), &output);
    }

    fn config(&self) -> String {
        self.dir.join("openssl.cnf").display().to_string()
    }

    /// `openssl req`: a new P-256 key into `pair.key` and, for `/CN=cn`, a request (or with
    /// `-x509` in `extra`, a certificate) into `out`.
    fn new_key(&self, pair: &CertKey, cn: &str, out: &Path, extra: &[&str]) {
        let (config, key, out) = (self.config(), pair.key.display().to_string(), out.display().to_string());
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-new", "-config", &config, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
        args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &out, "-subj", &subject]);
        args.extend_from_slice(extra);
        self.openssl(&format!("req for {cn}"), &args);
    }

    fn self_signed(&self, pair: &CertKey, cn: &str) {
        let extra = ["-x509", "-extensions", "ca_ext", "-days", "3650", "-sha256"];
        self.new_key(pair, cn, &pair.cert, &extra);
    }

    /// A new key and certificate for `pair` (`/CN=cn`, with `extensions` of the configuration),
    /// its request signed by the openssl command `sign`.
    fn sign_new_key(&self, pair: &CertKey, cn: &str, extensions: &str, sign: &[&str]) {
        let csr = pair.cert.with_extension("csr");
        self.new_key(pair, cn, &csr, &[]);
        let (config, csr_path, cert) = (self.config(), csr.display().to_string(), pair.cert.display().to_string());
        let mut args = sign.to_vec();
        args.extend_from_slice(&["-extfile", &config, "-extensions", extensions, "-in", &csr_path, "-out", &cert]);
        self.openssl(&format!("{} for {cn}", sign[0]), &args);
        let _ = fs::remove_file(csr);
    }

    fn issue(&self, ca: &CertKey, pair: &CertKey, cn: &str, extensions: &str) {
        let serial = format!("0x{:016x}", (random_u64() >> 1) | 1); // positive and non-zero
        let (ca_cert, ca_key) = (ca.cert.display().to_string(), ca.key.display().to_string());
        let sign =
            ["x509", "-req", "-CA", &ca_cert, "-CAkey", &ca_key, "-set_serial", &serial, "-days", "825", "-sha256"];
        self.sign_new_key(pair, cn, extensions, &sign);
    }

    fn issue_expired(&self, ca: &CertKey, pair: &CertKey, cn: &str) {
        let (config, ca_cert, ca_key) = (self.config(), ca.cert.display().to_string(), ca.key.display().to_string());
        let sign = [
            "ca",
            "-batch",
            "-notext",
            "-config",
            &config,
            "-cert",
            &ca_cert,
            "-keyfile",
            &ca_key,
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200201000000Z",
        ];
        self.sign_new_key(pair, cn, "server_localhost", &sign);
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The test CA certificate: what clients (and the sidecar) should trust.
    pub fn ca_cert(&self) -> &Path {
        &self.ca.cert
    }

    /// The test CA's certificate and key (to issue more certificates).
    pub fn ca(&self) -> &CertKey {
        &self.ca
    }

    /// An unrelated CA certificate: trusting it instead of [`Certs::ca_cert`] must fail.
    pub fn other_ca_cert(&self) -> &Path {
        &self.other_ca.cert
    }

    /// The server certificate and key of `which`.
    pub fn server(&self, which: ServerCert) -> &CertKey {
        match which {
            ServerCert::Localhost => &self.localhost,
            ServerCert::WrongHost => &self.wrong_host,
            ServerCert::Expired => &self.expired,
            ServerCert::OtherCa => &self.other_ca_server,
        }
    }

    /// A client certificate (`CN=kafka-sidecar-client`) and key signed by the test CA, for mTLS.
    pub fn client(&self) -> &CertKey {
        &self.client
    }

    /// A client certificate and key signed by the other CA: refused by an mTLS front end.
    pub fn other_ca_client(&self) -> &CertKey {
        &self.other_ca_client
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        if self.owned && !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
