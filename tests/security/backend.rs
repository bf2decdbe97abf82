//! Tansu behind a front end: it listens on its own loopback port and advertises the front end's.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::process::{Process, START_TIMEOUT, port_taken};
use crate::support;

/// A Tansu broker (node id 111, in memory) on `127.0.0.1:<own port>` that advertises another
/// address (a front end's) in metadata.
pub struct BackendTansu {
    process: Process,
    addr: String,
    advertised: String,
}

impl BackendTansu {
    /// Starts Tansu on a free port, advertising `advertised` (`host:port`), and waits until it
    /// answers ApiVersions. Retries on another port when the chosen one was taken meanwhile.
    pub fn start(advertised: &str) -> BackendTansu {
        let mut last = String::new();
        for _ in 0..3 {
            match BackendTansu::start_on(support::free_port(), advertised) {
                Ok(tansu) => return tansu,
                Err(why) if port_taken(&why) => last = why,
                Err(why) => panic!("Tansu did not start: {why}"),
            }
        }
        panic!("Tansu did not start after 3 attempts: {last}");
    }

    /// Starts Tansu on `port`, advertising `advertised`; on failure, why (with its output).
    pub fn start_on(port: u16, advertised: &str) -> Result<BackendTansu, String> {
        let bin = std::env::var_os("KAFKA_SIDECAR_TANSU").unwrap_or_else(|| {
            panic!("KAFKA_SIDECAR_TANSU is not set: it names the Tansu broker binary. Run `scripts/setup.sh`.")
        });
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(&bin);
        cmd.args(["broker", "--listener-url", &format!("tcp://{addr}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"]);
        for var in [
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            cmd.env_remove(var);
        }
        let process = Process::spawn("tansu-backend", cmd);
        let mut tansu = BackendTansu { process, addr, advertised: advertised.to_string() };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = tansu.process.exited() {
                return Err(format!("Tansu exited early with {status}\n{}", tansu.process.logs()));
            }
            if support::api_versions_answered(&tansu.addr) {
                return Ok(tansu);
            }
            if Instant::now() >= deadline {
                return Err(format!("Tansu did not answer on {} within {START_TIMEOUT:?}", tansu.addr));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:port` Tansu listens on (plaintext, no authentication).
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// What Tansu hands out as its address in metadata.
    pub fn advertised(&self) -> String {
        self.advertised.clone()
    }

    pub fn logs(&self) -> String {
        self.process.logs()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills Tansu now (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
