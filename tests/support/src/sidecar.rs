//! The sidecar under test: [`Sidecar::builder`] starts it on free ports (bootstrap port, broker
//! port block, admin listener) with the listen address, flags and environment a test asks for;
//! [`Sidecar`] hands out its addresses, logs and admin endpoints. Settings from the caller's
//! environment never reach it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use crate::child::{ChildProcess, START_TIMEOUT};
use crate::clients::{create_topics, kcat, kcat_with_input};
use crate::files::repo_root;
use crate::http::{http_get, scrape_metric, wait_for_status};
use crate::ports::{accepts, free_port, free_port_base, with_port_retries};
use crate::run::{expect_success, run_with_timeout};
use crate::tansu::TANSU_NODE_ID;

/// Ports covered by [`Sidecar`]'s broker port block: node ids `0..=TANSU_NODE_ID`.
pub const BROKER_PORT_SPAN: u16 = TANSU_NODE_ID + 1;

/// Lines of the sidecar's output a panicking test prints.
const TAIL_LINES: usize = 200;

/// Whether the sidecar reads its settings from the variable `name`: every `KAFKA_SIDECAR_*` (each
/// flag has one) and `RUST_LOG`. Such variables are cleared for started sidecars so that the
/// caller's shell cannot change a test.
fn is_sidecar_setting(name: &OsStr) -> bool {
    name.to_str().is_some_and(|name| name.starts_with("KAFKA_SIDECAR_") || name == "RUST_LOG")
}

/// Path of the sidecar binary cargo built for this test run: beside the `deps/` folder that
/// holds the test executables (cargo builds a package's binaries for its integration tests).
pub fn sidecar_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("the test executable lies in <profile>/deps/");
        let bin = profile_dir.join("kafka-sidecar");
        assert!(bin.is_file(), "{} is missing: run the tests with cargo test", bin.display());
        bin
    })
}

/// A `Command` for the sidecar binary with the settings environment cleared and colours off;
/// for tests that run it themselves (e.g. to check an exit code).
pub fn sidecar_command() -> Command {
    program_command(sidecar_bin())
}

/// A command running `binary` (a sidecar build) with a clean sidecar environment.
fn program_command(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for (name, _) in std::env::vars_os().filter(|(name, _)| is_sidecar_setting(name)) {
        cmd.env_remove(name);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// The sidecar as the image holds it: one statically linked executable, built in release mode
/// into `target/static` (once for every test that needs it: tests/deploy.rs, tests/image.rs).
/// The musl target the Dockerfile uses cannot be installed here, so this is the same code linked
/// statically against glibc (`crt-static`); its host name lookups still work without shared
/// libraries, as glibc's `files` and `dns` sources are part of libc itself. Symbols are
/// stripped, as in the image.
pub fn static_sidecar_binary() -> PathBuf {
    let repo = repo_root();
    let target_dir = repo.join("target/static");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(repo)
        .args(["build", "--release", "--locked", "--bin", "kafka-sidecar", "--target", "x86_64-unknown-linux-gnu"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    let built = run_with_timeout(cmd, Duration::from_secs(40 * 60));
    expect_success("static build of the sidecar", &built);
    let binary = target_dir.join("x86_64-unknown-linux-gnu/release/kafka-sidecar");
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    let ldd_text = String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked"), "{ldd_text}");
    binary
}

// === impl SidecarBuilder ===

/// How to start a [`Sidecar`]: made by [`Sidecar::builder`], started by [`SidecarBuilder::start`].
#[derive(Debug, Clone)]
pub struct SidecarBuilder {
    binary: PathBuf,
    upstream: String,
    listen_host: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl SidecarBuilder {
    /// The address the bootstrap and broker listeners bind: `127.0.0.1` unless set (e.g.
    /// `0.0.0.0` for clients in another network namespace). The admin listener stays on loopback.
    pub fn listen_host(mut self, host: &str) -> SidecarBuilder {
        host.clone_into(&mut self.listen_host);
        self
    }

    /// Appends command-line arguments.
    pub fn args(mut self, args: &[&str]) -> SidecarBuilder {
        self.args.extend(args.iter().map(|arg| arg.to_string()));
        self
    }

    /// Sets an environment variable for the sidecar.
    pub fn env(mut self, name: &str, value: &str) -> SidecarBuilder {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets environment variables for the sidecar.
    pub fn envs(self, vars: &[(&str, &str)]) -> SidecarBuilder {
        vars.iter().fold(self, |builder, (name, value)| builder.env(name, value))
    }

    /// Runs another build of the sidecar binary (e.g. [`static_sidecar_binary`]).
    pub fn binary(mut self, binary: &Path) -> SidecarBuilder {
        self.binary = binary.to_path_buf();
        self
    }

    /// Starts the sidecar on free ports and waits until the bootstrap and admin ports accept
    /// connections; tries other ports when one was taken meanwhile.
    pub fn start(&self) -> Sidecar {
        with_port_retries("the sidecar", || self.try_start())
    }

    fn try_start(&self) -> Result<Sidecar, String> {
        let broker_port_base = free_port_base(BROKER_PORT_SPAN);
        let bootstrap_port = free_port();
        let admin_addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = program_command(&self.binary);
        cmd.args(["--bootstrap-server", &self.upstream, "--listen-host", &self.listen_host])
            .args(["--bootstrap-port", &bootstrap_port.to_string()])
            .args(["--broker-port-base", &broker_port_base.to_string()])
            .args(["--admin-listen", &admin_addr])
            .args(&self.args)
            .envs(self.env.iter().map(|(name, value)| (name, value)));
        let mut process = ChildProcess::spawn("sidecar", cmd);
        process.tail_on_panic(TAIL_LINES);
        let bootstrap = format!("127.0.0.1:{bootstrap_port}");
        let mut pending = vec![bootstrap, admin_addr.clone()];
        process.wait_until("accept connections", START_TIMEOUT, |_| {
            pending.retain(|addr| !accepts(addr));
            pending.is_empty()
        })?;
        Ok(Sidecar { process, bootstrap_port, broker_port_base, admin_addr })
    }
}

// === impl Sidecar ===

/// A running sidecar: bootstrap port, broker port block and admin listener on free ports.
/// Killed when dropped.
pub struct Sidecar {
    process: ChildProcess,
    bootstrap_port: u16,
    broker_port_base: u16,
    admin_addr: String,
}

impl Sidecar {
    /// A sidecar in front of `upstream` (a bootstrap `host:port`, or several separated by commas),
    /// to be configured and started.
    pub fn builder(upstream: &str) -> SidecarBuilder {
        SidecarBuilder {
            binary: sidecar_bin().to_path_buf(),
            upstream: upstream.to_owned(),
            listen_host: "127.0.0.1".to_owned(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Starts the sidecar in front of `upstream` with `extra` arguments appended; see
    /// [`SidecarBuilder::start`].
    pub fn start(upstream: &str, extra: &[&str]) -> Sidecar {
        Sidecar::builder(upstream).args(extra).start()
    }

    /// `127.0.0.1:port` for clients' bootstrap.servers.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.bootstrap_port)
    }

    pub fn bootstrap_port(&self) -> u16 {
        self.bootstrap_port
    }

    /// Broker node N is served on `broker_port_base() + N`.
    pub fn broker_port_base(&self) -> u16 {
        self.broker_port_base
    }

    /// `127.0.0.1:port` where the sidecar serves broker `node_id`.
    pub fn broker_addr(&self, node_id: u16) -> String {
        format!("127.0.0.1:{}", self.broker_port_base + node_id)
    }

    /// `127.0.0.1:port` of the metrics and health endpoints.
    pub fn admin_addr(&self) -> String {
        self.admin_addr.clone()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything the sidecar has written to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Waits until the output contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.process.wait_for_log(needle, timeout)
    }

    /// Sends SIGTERM (graceful shutdown); see [`Sidecar::wait_exit`].
    pub fn terminate(&self) {
        self.process.signal("TERM");
    }

    /// Sends SIGINT.
    pub fn interrupt(&self) {
        self.process.signal("INT");
    }

    /// Waits up to `timeout` for the sidecar to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Kills the sidecar now (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Produces `count` messages to a new `topic` with kcat through the sidecar and consumes
    /// them back, asserting every one arrived.
    pub fn kcat_round_trip(&self, topic: &str, count: usize) {
        let bootstrap = self.bootstrap();
        create_topics(&bootstrap, &[topic], 1);
        let input: String = (0..count).map(|i| format!("{topic}-{i}\n")).collect();
        expect_success("kcat -P", &kcat_with_input(&["-b", &bootstrap, "-P", "-t", topic], &input));
        let consumed = kcat(&["-b", &bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q"]);
        let out = expect_success("kcat -C", &consumed);
        assert_eq!(out.lines().count(), count, "{out}");
    }

    /// GET `path` on the admin listener; returns (status code, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(&self.admin_addr, path)
    }

    /// Polls GET `path` on the admin listener until it answers `status` or `timeout` passes;
    /// returns the last answer.
    pub fn wait_for_status(&self, path: &str, status: u16, timeout: Duration) -> (u16, String) {
        wait_for_status(&self.admin_addr, path, status, timeout)
    }

    /// Polls `/readyz` until it answers `status` or `timeout` passes; returns the last answer.
    pub fn wait_for_readyz(&self, status: u16, timeout: Duration) -> (u16, String) {
        self.wait_for_status("/readyz", status, timeout)
    }

    /// Sum of the series of metric `name` whose labels contain each of `labels`, scraped now.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        scrape_metric(&self.admin_addr, name, labels)
    }
}
