//! Configuration parsing on arbitrary TOML text.
//!
//! The input, as UTF-8, is read as a `--config` file into `Settings` (`Settings::from_toml`: keys
//! checked, every value turned to text) and validated with `Config::from_settings`. Neither may
//! panic; a valid configuration must satisfy the documented bounds, and an invalid one must name
//! at least one setting. `sasl-password-file` is dropped before validation, since validation reads
//! that file and the fuzzer must not read arbitrary paths (such as /dev/zero).

#![no_main]

use kafka_sidecar::config::{Config, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut settings) = Settings::from_toml(text) else {
        return;
    };
    settings.sasl_password_file = None;
    match Config::from_settings(settings) {
        Ok(config) => {
            assert!(!config.bootstrap_servers.is_empty());
            assert!(!config.advertised.host.is_empty());
            assert!((1024..=i32::MAX as usize).contains(&config.max_frame_bytes));
            assert!(config.max_inflight >= 1 && config.max_client_connections >= 1);
            assert!((1..=64).contains(&config.worker_threads));
            assert!(config.upstream.connect_attempts >= 1);
            assert!(!config.admin_retry.initial_backoff.is_zero());
            assert!(config.admin_retry.initial_backoff <= config.admin_retry.max_backoff);
            let _ = format!("{config:?}");
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "an invalid configuration names a setting");
            let _ = error.to_string();
        }
    }
});
