//! The effective settings of a valid [`Config`] as a TOML file keyed by the long flag names, for
//! `--check-config`: defaults filled in, durations as humantime writes them, and the SASL password
//! masked. Fed back as `--config` it gives the same configuration (but for the password).

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use clap::ValueEnum;
use toml::Value;

use super::Config;
use super::Mechanism;

/// What `--check-config` shows for the SASL password.
pub const MASKED: &str = "***";

impl Config {
    /// The settings as a `--config` file, one `key = value` line each, in the order of `--help`.
    /// Settings that are unset and have no default (certificate files, SASL) are left out.
    pub fn effective_toml(&self) -> String {
        let mut out = Toml(String::new());
        let servers = self.bootstrap_servers.iter().map(|s| Value::from(s.as_str())).collect();
        out.line("bootstrap-servers", Value::Array(servers));
        out.line("listen-host", self.listen_host.to_string());
        out.line("bootstrap-port", i64::from(self.bootstrap_port));
        out.line("broker-port-base", i64::from(self.advertised.port_base));
        out.line("advertised-host", self.advertised.host.as_str());
        out.line("admin-listen", self.admin_listen.to_string());
        out.number("max-frame-bytes", self.max_frame_bytes);
        out.number("max-buffered-frame-bytes", self.max_buffered_frame_bytes);
        out.number("buffer-budget-bytes", self.buffer_budget_bytes);
        out.number("max-client-connections", self.max_client_connections);
        out.duration("client-idle-timeout", self.client_idle_timeout.unwrap_or_default());
        out.number("max-inflight", self.max_inflight);
        out.duration("connect-timeout", self.upstream.connect_timeout);
        out.line("connect-attempts", i64::from(self.upstream.connect_attempts));
        out.duration("connect-backoff", self.upstream.connect_backoff);
        out.duration("keepalive-idle", self.sockets.keepalive.idle);
        out.duration("keepalive-interval", self.sockets.keepalive.interval);
        out.line("keepalive-count", i64::from(self.sockets.keepalive.count));
        out.duration("user-timeout", self.sockets.user_timeout.unwrap_or_default());
        out.duration("metadata-refresh", self.metadata_refresh);
        out.duration("shutdown-delay", self.shutdown_delay);
        out.duration("drain-timeout", self.drain_timeout);
        out.line("tls", self.tls.is_some());
        if let Some(tls) = &self.tls {
            out.path("tls-ca-file", tls.ca_file.as_deref());
            out.path("tls-cert-file", tls.client_cert_file.as_deref());
            out.path("tls-key-file", tls.client_key_file.as_deref());
        }
        if let Some(listener) = &self.listener_tls {
            out.path("listener-tls-cert-file", Some(&listener.cert_file));
            out.path("listener-tls-key-file", Some(&listener.key_file));
            out.path("listener-tls-client-ca", listener.client_ca_file.as_deref());
        }
        out.path("listener-sasl-credentials", self.client_auth.sasl_credentials.as_deref());
        out.line(
            "insecure-allow-unauthenticated-remote-clients",
            self.client_auth.allow_unauthenticated_remote_clients,
        );
        if let Some(sasl) = &self.sasl {
            out.line("sasl-mechanism", sasl.mechanism.name());
            if sasl.mechanism == Mechanism::AwsMskIam {
                out.line("aws-region", sasl.region.as_str());
            } else {
                out.line("sasl-username", sasl.username.as_str());
                out.line("sasl-password", MASKED);
            }
        }
        out.duration("admin-retry-backoff", self.admin_retry.initial_backoff);
        out.duration("admin-retry-backoff-max", self.admin_retry.max_backoff);
        out.duration("admin-retry-budget", self.admin_retry.budget);
        out.number("pool-size", self.pool.size);
        out.number("pool-max-idle", self.pool.max_idle);
        out.duration("pool-idle-lifetime", self.pool.idle_lifetime);
        out.duration("pool-refill-backoff", self.pool.refill_backoff);
        out.line("broker-connect-rate", i64::from(self.pool.connect_rate));
        out.number("worker-threads", self.worker_threads);
        let log_format = self.log_format.to_possible_value().expect("every log format has a name");
        out.line("log-format", log_format.get_name());
        out.line("log-level", self.log_level.as_str());
        out.0
    }
}

/// TOML text written line by line; values are quoted and escaped by the toml crate.
struct Toml(String);

impl Toml {
    fn line(&mut self, key: &str, value: impl Into<Value>) {
        let _ = writeln!(self.0, "{key} = {}", value.into());
    }

    /// A count; one too large for a TOML integer is written as text, which reads back the same.
    fn number(&mut self, key: &str, value: usize) {
        match i64::try_from(value) {
            Ok(number) => self.line(key, number),
            Err(_) => self.line(key, value.to_string()),
        }
    }

    fn duration(&mut self, key: &str, value: Duration) {
        self.line(key, humantime::format_duration(value).to_string());
    }

    fn path(&mut self, key: &str, value: Option<&Path>) {
        if let Some(path) = value {
            self.line(key, path.display().to_string());
        }
    }
}
