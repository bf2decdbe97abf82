//! [`Tansu`]: the real broker of the tests (node id 111, storage in memory), on its own port or
//! behind a front end whose address it advertises, and [`api_versions_answered`], the readiness
//! probe for anything that speaks Kafka.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::child::{ChildProcess, START_TIMEOUT};
use crate::ports::{free_port, with_port_retries};
use crate::run::required_env_path;

/// Tansu's node id: the sidecar serves it on `broker_port_base() + 111`.
pub const TANSU_NODE_ID: u16 = 111;

/// A Tansu broker (node id 111) with in-memory storage; killed when dropped.
pub struct Tansu {
    process: ChildProcess,
    addr: String,
    advertised: String,
}

impl Tansu {
    /// Starts the broker named by `KAFKA_SIDECAR_TANSU` on a free loopback port and waits until
    /// it answers ApiVersions.
    pub fn start() -> Tansu {
        with_port_retries("Tansu", || Tansu::start_on(free_port()))
    }

    /// Starts a broker on a free loopback port that advertises `advertised` (a front end's
    /// `host:port`) in metadata instead of its own address.
    pub fn behind(advertised: &str) -> Tansu {
        with_port_retries("Tansu", || {
            let addr = format!("127.0.0.1:{}", free_port());
            Tansu::launch(&addr, advertised, |cmd| cmd)
        })
    }

    /// Starts a broker on `port` (e.g. one reserved with [`crate::free_port_base`] before a
    /// sidecar was pointed at it) and waits until it answers ApiVersions; on failure returns why,
    /// with its output.
    pub fn start_on(port: u16) -> Result<Tansu, String> {
        let addr = format!("127.0.0.1:{port}");
        Tansu::launch(&addr, &addr, |cmd| cmd)
    }

    /// Starts a broker listening on and advertising `addr`, run by the command `wrap` makes of
    /// Tansu's (e.g. `ip netns exec NAME …` for a broker in a network namespace).
    pub fn start_wrapped(addr: &str, wrap: impl FnOnce(Command) -> Command) -> Result<Tansu, String> {
        Tansu::launch(addr, addr, wrap)
    }

    fn launch(addr: &str, advertised: &str, wrap: impl FnOnce(Command) -> Command) -> Result<Tansu, String> {
        let bin = required_env_path("KAFKA_SIDECAR_TANSU", "the Tansu broker binary");
        let mut cmd = Command::new(&bin);
        cmd.args(["broker", "--listener-url", &format!("tcp://{addr}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .env("NO_COLOR", "1");
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
        let mut process = ChildProcess::spawn("tansu", wrap(cmd));
        process.wait_until(&format!("answer ApiVersions on {addr}"), START_TIMEOUT, |_| api_versions_answered(addr))?;
        Ok(Tansu { process, addr: addr.to_owned(), advertised: advertised.to_owned() })
    }

    /// Kills the broker and starts a fresh one (empty, in memory) on the same port, as a broker
    /// restart looks to its clients.
    pub fn restart(&mut self) {
        self.process.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match Tansu::launch(&self.addr, &self.advertised, |cmd| cmd) {
                Ok(fresh) => {
                    *self = fresh;
                    return;
                }
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(200)),
                Err(logs) => panic!("Tansu did not restart on {}: {logs}", self.addr),
            }
        }
    }

    /// `127.0.0.1:port` of the broker (plaintext, no authentication).
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// What the broker hands out as its address in metadata: [`Tansu::addr`], or the front
    /// end's address of [`Tansu::behind`].
    pub fn advertised(&self) -> String {
        self.advertised.clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    pub fn logs(&self) -> String {
        self.process.logs()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the broker now (SIGKILL), e.g. to test a broker going away.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Sends ApiVersions v0 to `addr` and checks that a response with the same correlation id
/// comes back.
pub fn api_versions_answered(addr: &str) -> bool {
    let Ok(sock) = addr.parse::<SocketAddr>() else { return false };
    let Ok(mut stream) = TcpStream::connect_timeout(&sock, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let correlation_id: i32 = 0x5eed;
    let client_id = b"support";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    if stream.write_all(&frame).is_err() {
        return false;
    }
    let mut header = [0u8; 8];
    let ok = stream.read_exact(&mut header).is_ok()
        && i32::from_be_bytes(header[4..8].try_into().unwrap()) == correlation_id;
    let _ = stream.shutdown(Shutdown::Both);
    ok
}
