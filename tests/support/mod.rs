//! Shared helpers for the integration tests: free ports, a Tansu broker, the sidecar binary,
//! librdkafka's mock cluster, and the kcat / Python client scripts under `tests/clients/`.
//!
//! Used as `mod support;` from `tests/*.rs`. External tools come from `scripts/setup.sh`, which
//! `scripts/test.sh` runs and whose results it exports:
//! - `KAFKA_SIDECAR_TANSU`: path of the Tansu 0.6.0 broker binary,
//! - `KAFKA_SIDECAR_PYTHON`: the venv's python with confluent-kafka, kafka-python and aiokafka,
//! - `kcat` on `PATH` (or `KAFKA_SIDECAR_KCAT`),
//! - `go` on `PATH` (or `KAFKA_SIDECAR_GO`) with Debian's sarama and kafka-go (see [`go`]).
//!
//! Every child process is killed when its handle is dropped. Process output and every other
//! temporary file go to one directory per test process, `$TMPDIR/kafka-sidecar-tests/<pid>-…/`,
//! removed when the process exits, whether its tests passed or failed (a test that panics prints
//! the tail of its processes' output instead). Directories of test processes that were killed
//! are removed by the next one. `KAFKA_SIDECAR_KEEP_TEST_FILES=1` keeps them all.

#![allow(dead_code)]

pub mod background;
pub mod go;
pub mod libraries;
pub mod numbered;
pub mod process;
pub mod scripted;

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tansu's node id: the sidecar serves it on `broker_port_base() + 111`.
pub const TANSU_NODE_ID: u16 = 111;

/// Ports covered by [`Sidecar`]'s broker port block: node ids `0..=TANSU_NODE_ID`.
pub const BROKER_PORT_SPAN: u16 = TANSU_NODE_ID + 1;

/// How long a started process may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time limit for kcat and the Python client scripts.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------------------------------------
// Ports

/// Port blocks handed out by this test process, so that parallel tests never share one.
static RESERVED: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());

fn overlaps_reserved(start: u16, len: u16) -> bool {
    let end = start as u32 + len as u32;
    RESERVED.lock().unwrap().iter().any(|&(s, l)| (start as u32) < s as u32 + l as u32 && (s as u32) < end)
}

fn reserve(start: u16, len: u16) {
    RESERVED.lock().unwrap().push((start, len));
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A free loopback port chosen by the kernel (bind 127.0.0.1:0), not used by another helper of
/// this process.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        if !overlaps_reserved(port, 1) {
            reserve(port, 1);
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// A base port such that `base..base + span` are all free on 127.0.0.1 and not handed out before
/// by this process. Bases are drawn at random in 20000..60000, avoiding the kernel's ephemeral
/// range (where outgoing connections take their ports) when it leaves room.
pub fn free_port_base(span: u16) -> u16 {
    assert!(span > 0 && span < 10_000, "unreasonable port span {span}");
    let (lo, hi) = candidate_range(span);
    for _ in 0..500 {
        let base = lo + (random_u64() % (hi - lo) as u64) as u16;
        if overlaps_reserved(base, span) {
            continue;
        }
        if (base..base + span).all(port_is_free) {
            reserve(base, span);
            return base;
        }
    }
    panic!("no block of {span} free ports found in {lo}..{hi}");
}

/// Bases to draw from: 20000..(60000 - span), minus the ephemeral range if it leaves enough room.
fn candidate_range(span: u16) -> (u16, u16) {
    let (lo, hi) = (20_000u16, 60_000 - span);
    let ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|s| {
        let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
        Some((it.next()??, it.next()??))
    });
    match ephemeral {
        Some((eph_lo, _)) if eph_lo > lo + span + 1_000 => (lo, hi.min(eph_lo - span)),
        _ => (lo, hi),
    }
}

/// Waits until `addr` accepts a TCP connection; false on timeout.
pub fn wait_for_port(addr: &str, timeout: Duration) -> bool {
    let sock: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("bad address {addr}: {e}"));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(25));
    }
    false
}

// ------------------------------------------------------------------------------------------------
// Logs and child processes

/// This test process's directory for temporary files, made on first use and removed when the
/// process exits (see the module comment).
pub fn test_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("kafka-sidecar-tests");
        remove_dirs_of_exited_processes(&root);
        let dir = root.join(format!("{}-{:016x}", std::process::id(), random_u64()));
        fs::create_dir_all(&dir).expect("create the test directory");
        extern "C" fn remove_test_dir() {
            if let Some(dir) = DIR.get()
                && std::env::var_os("KAFKA_SIDECAR_KEEP_TEST_FILES").is_none()
            {
                let _ = fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registers a plain function without arguments, run once at process exit.
        unsafe { libc::atexit(remove_test_dir) };
        dir
    })
}

/// Removes `<pid>-…` directories under `root` whose process no longer runs.
fn remove_dirs_of_exited_processes(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A uniquely named file in [`test_dir`].
pub fn temp_path(name: &str) -> PathBuf {
    test_dir().join(format!("{name}-{:016x}.log", random_u64()))
}

/// On a failing test, the last lines of a process's output, on stderr (the files themselves go
/// with the test directory).
pub fn report_output_on_panic(who: &str, path: &Path) {
    if thread::panicking() {
        let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        eprintln!("[support] {who} output (last 40 lines of {}):\n{}", path.display(), tail(&text, 40));
    }
}

/// A file that receives a child's stdout and stderr.
struct LogFile {
    name: String,
    path: PathBuf,
}

impl LogFile {
    fn new(name: &str) -> (LogFile, Stdio, Stdio) {
        let path = temp_path(name);
        let file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let stdout = file.try_clone().expect("clone log file handle");
        (LogFile { name: name.to_owned(), path }, Stdio::from(stdout), Stdio::from(file))
    }

    fn read(&self) -> String {
        fs::read(&self.path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.read().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        report_output_on_panic(&self.name, &self.path);
        let _ = fs::remove_file(&self.path);
    }
}

fn kill_and_reap(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Sends `signal` with the `kill` command. A process that already exited (a zombie until it is
/// waited for) ignores it.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run kill -{signal} {pid}: {e}"));
    if !status.success() {
        eprintln!("[support] kill -{signal} {pid} failed: {status}");
    }
}

/// Runs `cmd` to completion with stdin closed, capturing its output; kills it after `timeout`
/// (the returned status then is the kill's, and stderr ends with a note).
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Output {
    run_with_input(cmd, None, timeout)
}

/// Like [`run_with_timeout`], writing `input` (if any) to the command's stdin.
pub fn run_with_input(mut cmd: Command, input: Option<&str>, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what} (run scripts/setup.sh?): {e}"));
    let writer = input.map(|input| {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = match wait_exit(&mut child, timeout) {
        Some(status) => status,
        None => {
            kill_and_reap(&mut child);
            child.wait().expect("reap child")
        }
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let timed_out = !status.success() && status.code().is_none();
    let stdout = out_reader.join().unwrap_or_default();
    let mut stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("\n[support] killed {what} after {timeout:?}\n").as_bytes());
    }
    Output { status, stdout, stderr }
}

/// Panics with the command's output unless it succeeded; returns its stdout.
pub fn expect_success(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn required_env_path(var: &str, what: &str) -> PathBuf {
    let value = std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: it names {what}. Run `scripts/setup.sh` and export it, or run the tests with `scripts/test.sh`.")
    });
    let path = PathBuf::from(value);
    assert!(path.is_file(), "{var}={} does not exist: it names {what}. Run `scripts/setup.sh`.", path.display());
    path
}

// ------------------------------------------------------------------------------------------------
// Tansu

/// A Tansu broker (node id 111) with in-memory storage on a free loopback port.
pub struct Tansu {
    child: Child,
    addr: String,
    log: LogFile,
}

impl Tansu {
    /// Starts the broker named by `KAFKA_SIDECAR_TANSU` and waits until it answers ApiVersions.
    pub fn start() -> Tansu {
        let mut last_logs = String::new();
        for _ in 0..3 {
            match Tansu::start_on(free_port()) {
                Ok(tansu) => return tansu,
                // Port taken between probing and binding: try another one.
                Err(logs) if logs.contains("AddrInUse") || logs.contains("Address already in use") => last_logs = logs,
                Err(logs) => panic!("Tansu did not start: {logs}"),
            }
        }
        panic!("Tansu did not start after 3 attempts: {last_logs}");
    }

    /// Starts a broker on `port` (e.g. one reserved with [`free_port_base`] before a sidecar was
    /// pointed at it) and waits until it answers ApiVersions; on failure returns why, with its
    /// output.
    pub fn start_on(port: u16) -> Result<Tansu, String> {
        let bin = required_env_path("KAFKA_SIDECAR_TANSU", "the Tansu broker binary");
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let (log, stdout, stderr) = LogFile::new("tansu");
        let mut cmd = Command::new(&bin);
        cmd.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("NO_COLOR", "1");
        for var in ["CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"] {
            cmd.env_remove(var);
        }
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut tansu = Tansu { child, addr, log };
        match tansu.wait_ready() {
            Ok(()) => Ok(tansu),
            Err(reason) => Err(format!("{reason}\n{}", tansu.log.read())),
        }
    }

    /// Kills the broker and starts a fresh one (empty, in memory) on the same port, as a broker
    /// restart looks to its clients.
    pub fn restart(&mut self) {
        kill_and_reap(&mut self.child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match Tansu::start_on(self.port()) {
                Ok(fresh) => {
                    let old = std::mem::replace(self, fresh);
                    drop(old);
                    return;
                }
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(200)),
                Err(logs) => panic!("Tansu did not restart on {}: {logs}", self.addr),
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("Tansu exited early with {status}"));
            }
            if api_versions_answered(&self.addr) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!("Tansu did not answer ApiVersions on {} within {START_TIMEOUT:?}", self.addr))
    }

    /// `127.0.0.1:port` of the broker (also what it advertises).
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    pub fn logs(&self) -> String {
        self.log.read()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker now (SIGKILL), e.g. to test a broker going away.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
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

// ------------------------------------------------------------------------------------------------
// The sidecar

/// Whether the sidecar reads its settings from the variable `name`: every `KAFKA_SIDECAR_*` (each
/// flag has one) and `RUST_LOG`. Such variables are cleared for started sidecars so that the
/// caller's shell cannot change a test.
fn is_sidecar_setting(name: &OsStr) -> bool {
    name.to_str().is_some_and(|name| name.starts_with("KAFKA_SIDECAR_") || name == "RUST_LOG")
}

/// Path of the sidecar binary built by cargo for this test run.
pub fn sidecar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kafka-sidecar")
}

/// A `Command` for the sidecar binary with the settings environment cleared and colours off;
/// for tests that run it themselves (e.g. to check an exit code).
pub fn sidecar_command() -> Command {
    program_command(Path::new(sidecar_bin()))
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
/// libraries, as glibc's `files` and `dns` sources are part of libc itself.
pub fn static_sidecar_binary() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = repo.join("target/static");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(repo)
        .args(["build", "--release", "--locked", "--bin", "kafka-sidecar", "--target", "x86_64-unknown-linux-gnu"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    let built = run_with_timeout(cmd, Duration::from_secs(40 * 60));
    expect_success("static build of the sidecar", &built);
    let binary = target_dir.join("x86_64-unknown-linux-gnu/release/kafka-sidecar");
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    let ldd_text = String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked"), "{ldd_text}");
    binary
}

/// A running sidecar on loopback: bootstrap port, broker port block and admin listener on free
/// ports.
pub struct Sidecar {
    child: Child,
    bootstrap_port: u16,
    broker_port_base: u16,
    admin_addr: String,
    log: LogFile,
}

impl Sidecar {
    /// Starts the sidecar in front of `upstream` (a bootstrap `host:port`, or several separated by
    /// commas) with `extra` arguments appended, and waits until the bootstrap and admin ports
    /// accept connections.
    pub fn start(upstream: &str, extra: &[&str]) -> Sidecar {
        Sidecar::start_with_env(upstream, extra, &[])
    }

    /// Like [`Sidecar::start`], with extra environment variables for the sidecar.
    pub fn start_with_env(upstream: &str, extra: &[&str], env: &[(&str, &str)]) -> Sidecar {
        Sidecar::start_program(Path::new(sidecar_bin()), upstream, extra, env)
    }

    /// Like [`Sidecar::start`], with another build of the sidecar binary.
    pub fn start_binary(binary: &Path, upstream: &str, extra: &[&str]) -> Sidecar {
        Sidecar::start_program(binary, upstream, extra, &[])
    }

    fn start_program(binary: &Path, upstream: &str, extra: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let mut last_logs = String::new();
        for _ in 0..3 {
            let broker_port_base = free_port_base(BROKER_PORT_SPAN);
            let bootstrap_port = free_port();
            let admin_addr = format!("127.0.0.1:{}", free_port());
            let (log, stdout, stderr) = LogFile::new("sidecar");
            let mut cmd = program_command(binary);
            cmd.args(["--bootstrap-server", upstream, "--listen-host", "127.0.0.1"])
                .args(["--bootstrap-port", &bootstrap_port.to_string()])
                .args(["--broker-port-base", &broker_port_base.to_string()])
                .args(["--admin-listen", &admin_addr])
                .args(extra)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
            let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
            let mut sidecar = Sidecar { child, bootstrap_port, broker_port_base, admin_addr, log };
            match sidecar.wait_ready() {
                Ok(()) => return sidecar,
                Err(reason) => {
                    last_logs = format!("{reason}\n--- sidecar output ---\n{}", sidecar.log.read());
                    if !last_logs.contains("in use") && !last_logs.contains("AddrInUse") {
                        panic!("the sidecar did not start: {last_logs}");
                    }
                }
            }
        }
        panic!("the sidecar did not start after 3 attempts: {last_logs}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let bootstrap = self.bootstrap();
        let mut pending = vec![bootstrap.as_str(), self.admin_addr.as_str()];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the sidecar exited early with {status}"));
            }
            pending.retain(|addr| {
                let sock: SocketAddr = addr.parse().unwrap();
                TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_err()
            });
            if pending.is_empty() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(25));
        }
        Err(format!("the sidecar did not accept connections on {pending:?} within {START_TIMEOUT:?}"))
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
        self.child.id()
    }

    /// Everything the sidecar has written to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.log.read()
    }

    /// Waits until the output contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.log.wait_for(needle, timeout)
    }

    /// Sends SIGTERM (graceful shutdown); see [`Sidecar::wait_exit`].
    pub fn terminate(&self) {
        send_signal(self.child.id(), "TERM");
    }

    /// Sends SIGINT.
    pub fn interrupt(&self) {
        send_signal(self.child.id(), "INT");
    }

    /// Waits up to `timeout` for the sidecar to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, timeout)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the sidecar now (SIGKILL).
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// GET `path` on the admin listener; returns (status code, body).
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

    /// Polls `/readyz` until it answers `status` or `timeout` passes; returns the last answer.
    pub fn wait_for_readyz(&self, status: u16, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.admin_get("/readyz");
            if answer.0 == status || Instant::now() > deadline {
                return answer;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(&self.admin_addr, path)
    }

    /// Sum of the series of metric `name` whose labels contain each of `labels`, scraped now.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        process::metric_in(&self.admin_get("/metrics").1, name, labels)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        if thread::panicking() {
            eprintln!("--- sidecar output ---\n{}", tail(&self.log.read(), 200));
        }
    }
}

pub fn tail(text: &str, lines: usize) -> &str {
    let mut count = 0;
    for (i, b) in text.bytes().enumerate().rev() {
        if b == b'\n' {
            count += 1;
            if count > lines {
                return &text[i + 1..];
            }
        }
    }
    text
}

/// A minimal HTTP/1.1 GET (Connection: close); returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("read GET {path} from {addr}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response from {addr}{path}: {head:?}"));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ------------------------------------------------------------------------------------------------
// External clients

/// Path of a script in `tests/clients/`.
pub fn client_script(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("clients").join(script)
}

/// The venv python named by `KAFKA_SIDECAR_PYTHON`.
pub fn python_bin() -> PathBuf {
    required_env_path("KAFKA_SIDECAR_PYTHON", "the python of the test venv (tests/clients/requirements.txt)")
}

fn python_command(script: &str, args: &[&str]) -> Command {
    let path = client_script(script);
    assert!(path.is_file(), "no client script {}", path.display());
    let mut cmd = Command::new(python_bin());
    cmd.arg(path).args(args).env("PYTHONUNBUFFERED", "1").env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs a Python script of the repository (path relative to its root) with the venv python.
pub fn python_file(path: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(python_bin());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).args(args).env("PYTHONDONTWRITEBYTECODE", "1");
    run_with_timeout(cmd, CLIENT_TIMEOUT)
}

/// Runs `tests/clients/<script>` with the venv python; killed after [`CLIENT_TIMEOUT`].
pub fn python(script: &str, args: &[&str]) -> Output {
    python_with_timeout(script, args, CLIENT_TIMEOUT)
}

pub fn python_with_timeout(script: &str, args: &[&str], timeout: Duration) -> Output {
    run_with_timeout(python_command(script, args), timeout)
}

/// Runs a client script, panics with its output unless it succeeded, returns its stdout (the
/// scripts print one JSON object).
pub fn python_ok(script: &str, args: &[&str]) -> String {
    let output = python(script, args);
    expect_success(&format!("{script} {}", args.join(" ")), &output)
}

/// Creates topics through `bootstrap` with admin.py (confluent-kafka).
pub fn create_topics(bootstrap: &str, topics: &[&str], partitions: u32) {
    let partitions = partitions.to_string();
    let mut args = vec!["--bootstrap", bootstrap, "--partitions", &partitions, "create"];
    args.extend_from_slice(topics);
    python_ok("admin.py", &args);
}

fn kcat_bin() -> PathBuf {
    std::env::var_os("KAFKA_SIDECAR_KCAT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("kcat"))
}

/// Runs kcat with `args` (stdin closed); killed after [`CLIENT_TIMEOUT`].
pub fn kcat(args: &[&str]) -> Output {
    kcat_with_timeout(args, CLIENT_TIMEOUT)
}

pub fn kcat_with_timeout(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(kcat_bin());
    cmd.args(args);
    run_with_timeout(cmd, timeout)
}

/// Runs kcat with `input` on its stdin (e.g. `-P` to produce one message per line).
pub fn kcat_with_input(args: &[&str], input: &str) -> Output {
    let mut cmd = Command::new(kcat_bin());
    cmd.args(args);
    run_with_input(cmd, Some(input), CLIENT_TIMEOUT)
}

// ------------------------------------------------------------------------------------------------
// Kubernetes manifests

/// A tool installed into the test venv by scripts/setup.sh (e.g. hadolint, kubernetes-validate).
pub fn venv_tool(name: &str) -> PathBuf {
    python_bin().parent().expect("venv bin").join(name)
}

/// `kubectl kustomize` of a directory of the repository (e.g. `deploy/kubernetes/base`).
pub fn kustomize(dir: &str) -> String {
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .output()
        .expect("run kubectl kustomize");
    expect_success(&format!("kubectl kustomize {dir}"), &rendered)
}

/// Panics unless every document of the YAML file `file` validates strictly (no unknown fields)
/// against the schemas of Kubernetes `version` (e.g. "1.30.0"), offline, with kubernetes-validate.
pub fn expect_valid_manifests(what: &str, file: &Path, version: &str) {
    let validated = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    let report = String::from_utf8_lossy(&validated.stdout).into_owned() + &String::from_utf8_lossy(&validated.stderr);
    let failures: Vec<&str> = report.lines().filter(|l| l.contains("ERROR") || l.contains("failed")).collect();
    assert!(validated.status.success() && failures.is_empty(), "{what} against Kubernetes {version}:\n{report}");
}

// ------------------------------------------------------------------------------------------------
// librdkafka mock cluster

/// librdkafka's mock cluster (several brokers on loopback), run by `tests/clients/mock_cluster.py`.
///
/// Mock quirks: CreateTopics is not supported; topics are auto-created on first use with 4
/// partitions whose leaders are spread at random (see [`MockCluster::leaders`]). kafka-python
/// cannot talk to it directly.
pub struct MockCluster {
    child: Child,
    // Closing stdin stops the script; kept open for the cluster's lifetime.
    stdin: Option<ChildStdin>,
    bootstrap: String,
    brokers: Vec<(i32, String)>,
    leaders: Vec<(String, i32, i32)>,
    stderr_log: LogFile,
}

impl MockCluster {
    /// Starts a mock cluster with `brokers` brokers and the given topics created up front.
    pub fn start(brokers: u32, topics: &[&str]) -> MockCluster {
        let (stderr_log, _, stderr) = LogFile::new("mock-cluster");
        let brokers_arg = brokers.to_string();
        let mut args = vec!["--brokers", brokers_arg.as_str()];
        for topic in topics {
            args.extend_from_slice(&["--topic", topic]);
        }
        let mut cmd = python_command("mock_cluster.py", &args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("spawn mock_cluster.py");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();

        // Read the announcement on a thread so that a stuck script cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let ready = line == "READY";
                lines.push(line);
                if ready {
                    break;
                }
            }
            let _ = tx.send(lines);
        });
        let lines = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let mut cluster = MockCluster {
            child,
            stdin,
            bootstrap: String::new(),
            brokers: Vec::new(),
            leaders: Vec::new(),
            stderr_log,
        };
        if lines.last().map(String::as_str) != Some("READY") {
            kill_and_reap(&mut cluster.child);
            panic!("mock_cluster.py did not become ready; stdout: {lines:?}\nstderr:\n{}", cluster.stderr_log.read());
        }
        for line in &lines {
            if let Some(v) = line.strip_prefix("BOOTSTRAP=") {
                cluster.bootstrap = v.to_string();
            } else if let Some(v) = line.strip_prefix("BROKER=") {
                let (id, addr) = v.split_once(' ').expect("BROKER line");
                cluster.brokers.push((id.parse().expect("broker id"), addr.to_string()));
            } else if let Some(v) = line.strip_prefix("LEADER=") {
                let parts: Vec<&str> = v.split(' ').collect();
                cluster.leaders.push((
                    parts[0].to_string(),
                    parts[1].parse().expect("partition"),
                    parts[2].parse().expect("leader"),
                ));
            }
        }
        cluster
    }

    /// All brokers, `host:port,host:port,...`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// The first broker's `host:port`.
    pub fn first_broker(&self) -> String {
        self.brokers[0].1.clone()
    }

    /// (node id, `host:port`) of each broker, by node id.
    pub fn brokers(&self) -> &[(i32, String)] {
        &self.brokers
    }

    /// (topic, partition, leader node id) for the topics created at start.
    pub fn leaders(&self) -> &[(String, i32, i32)] {
        &self.leaders
    }

    pub fn logs(&self) -> String {
        self.stderr_log.read()
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if wait_exit(&mut self.child, Duration::from_secs(3)).is_none() {
            kill_and_reap(&mut self.child);
        }
    }
}
