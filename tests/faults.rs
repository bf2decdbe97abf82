//! Reliability under faults, load and hostile input: a broker killed and restarted under traffic,
//! a broker missing at start-up, silently dead peers on either side (network namespaces with
//! iptables DROP), a thousand held connections and a connection storm, slowloris clients, and
//! clients that never read their responses. Each test prints its measured figures on stderr
//! (`cargo test --test faults -- --nocapture`); `docs/reliability.md` records them.

mod raw;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use raw::RawClient;
use serde_json::Value;
use support::background::Background;
use support::numbered;
use support::process::{metric_in, mib, open_fds, proc_status_kib};
use support::{Sidecar, Tansu};

// ------------------------------------------------------------------------------------------------
// Helpers

/// Tests that measure times or memory share the machine; the load test runs alone.
static MACHINE: RwLock<()> = RwLock::new(());

fn shared_machine() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn whole_machine() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

fn metadata(client: &mut RawClient) -> MetadataResponse {
    client.request(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None))
}

// ------------------------------------------------------------------------------------------------
// Broker killed and restarted under traffic

/// A producer (acks=all, retries) and a consumer run through the sidecar while the broker is
/// killed, stays down for a few seconds and comes back empty (Tansu keeps its log in memory).
/// Messages the old broker acknowledged died with it; every message the restarted broker
/// acknowledged must be in its log exactly once, every message must be acknowledged by one of
/// the two, the sidecar must retry with backoff, not in a loop, and keep running.
#[test]
fn broker_restart_under_traffic_loses_no_acknowledged_message() {
    let _machine = shared_machine();
    const COUNT: usize = 2400;
    const OUTAGE: Duration = Duration::from_secs(3);
    let topic = "faults-restart";
    let mut tansu = Tansu::start();
    let port = tansu.port();
    let mut sidecar = Sidecar::start(&tansu.addr(), &[]);
    let sidecar_pid = sidecar.pid();
    let bootstrap = sidecar.bootstrap();
    support::create_topics(&bootstrap, &[topic], 1);

    let count = COUNT.to_string();
    let last = (COUNT - 1).to_string();
    let consumer = Background::python(
        "numbered.py",
        &["consume", "--bootstrap", &bootstrap, "--topic", topic, "--until-value", &last, "--timeout", "60"],
    );
    let mut producer = Background::python(
        "numbered.py",
        &["produce", "--bootstrap", &bootstrap, "--topic", topic, "--count", &count, "--rate", "200"],
    );
    let progress = producer.wait_line(Duration::from_secs(30), |line| line.contains("\"acked\": 300"));
    assert!(progress.is_some(), "no progress before the restart: {:?}\n{}", producer.seen(), producer.stderr_text());

    let before = sidecar.admin_get("/metrics").1;
    // Failed broker connect attempts, of one node or (None) of all.
    let failed_connects = |text: &str, node: Option<&str>| {
        let node = node.map(|node| format!("node=\"{node}\""));
        let labels: Vec<&str> = node.iter().map(String::as_str).collect();
        let ok: Vec<&str> = labels.iter().copied().chain(["result=\"ok\""]).collect();
        metric_in(text, "kafka_sidecar_upstream_connects_total", &labels)
            - metric_in(text, "kafka_sidecar_upstream_connects_total", &ok)
    };
    let accepted = |text: &str| metric_in(text, "kafka_sidecar_client_connections_total", &[]);
    tansu.kill();
    let killed = Instant::now();
    let mut not_ready_seen = false;
    while killed.elapsed() < OUTAGE {
        not_ready_seen |= sidecar.admin_get("/readyz").0 == 503;
        thread::sleep(Duration::from_millis(200));
    }
    let during = sidecar.admin_get("/metrics").1;
    tansu = Tansu::start_on(port).expect("restart Tansu on the same port");
    let outage = killed.elapsed();
    // The restarted broker is empty: the topic is created again, as an operator would, unless
    // the producer's own metadata request had the broker create it first.
    let created = support::python("admin.py", &["--bootstrap", &bootstrap, "--partitions", "1", "create", topic]);
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success() || stderr.contains("TOPIC_ALREADY_EXISTS"), "create {topic}: {stderr}");

    let (status, produced) = producer.finish(Duration::from_secs(90));
    assert!(status.success(), "the producer did not get every message acknowledged: {produced}");
    let (status, consumed_live) = consumer.finish(Duration::from_secs(90));
    assert!(status.success(), "the consumer did not recover: {consumed_live}");
    let final_read = support::python_ok(
        "numbered.py",
        &["consume", "--bootstrap", &bootstrap, "--topic", topic, "--to-end", "--timeout", "30"],
    );
    let final_read: Value = serde_json::from_str(final_read.trim()).expect("consumer JSON");

    // Acknowledgements arrive in send order (one request in flight); the restarted broker's log
    // starts again at offset 0, which splits them into the two broker lives.
    let log = numbered::verify_restarted_log(&produced, &final_read, COUNT);
    assert!(log.earlier > 0, "no acknowledgement from the broker before its restart");
    let new_life = &log.acknowledged;

    let connects = failed_connects(&during, None) - failed_connects(&before, None);
    let by_node: Vec<String> = ["bootstrap", "111", "control"]
        .iter()
        .map(|node| format!("{node} {}", failed_connects(&during, Some(node)) - failed_connects(&before, Some(node))))
        .collect();
    let clients = accepted(&during) - accepted(&before);
    let per_second = connects / outage.as_secs_f64();
    // The consumer that ran through the restart kept its position: in the restarted log, the
    // offsets below it had been reused by new messages, which it therefore skipped (a broker that
    // loses its log does that to any consumer). It must still have recovered and read to the end.
    let live = numbered::pairs(&consumed_live, "values");
    let live_seen: std::collections::BTreeSet<u64> = live.iter().map(|&(i, _)| i).collect();
    let skipped = new_life.iter().filter(|(i, _)| !live_seen.contains(i)).count();
    let resumed_at = new_life.iter().find(|(i, _)| live_seen.contains(i)).map_or(-1, |&(_, offset)| offset);
    eprintln!(
        "[faults] restart: {COUNT} messages at 200/s, broker down {outage:.1?}; acknowledged by the old broker {}, \
         by the restarted one {} (consumed {}, checksum {:016x}); failed upstream connects during the outage \
         {connects} ({per_second:.1}/s; by node: {}) for {clients} client connections; live consumer read {} \
         values, {} errors, resumed in the restarted log at offset {resumed_at} (skipping {skipped}); /readyz 503 \
         seen during the outage: {not_ready_seen}",
        log.earlier,
        new_life.len(),
        log.consumed.len(),
        log.checksum(),
        by_node.join(", "),
        live.len(),
        consumed_live["errors"],
    );
    assert!(live.iter().any(|&(i, _)| i == COUNT as u64 - 1), "the live consumer read the last message");
    // A client connection costs at most --connect-attempts (3) rounds over the addresses the
    // sidecar knows: the bootstrap server and the broker's advertised address, here the same one
    // twice. The control connection backs off from 500 ms. A loop would make thousands.
    assert!(connects <= 6.0 * clients + 30.0, "{connects} failed connects for {clients} client connections");
    assert!(per_second < 60.0, "{per_second:.1} failed connects per second");
    assert!(sidecar.is_running(), "the sidecar kept running");
    assert_eq!(sidecar.pid(), sidecar_pid);
    let (code, body) = sidecar.wait_for_readyz(200, Duration::from_secs(40));
    assert_eq!(code, 200, "ready again after the restart: {body}");
    drop(tansu);
}

// ------------------------------------------------------------------------------------------------
// Broker unreachable at start-up

/// Started before its broker exists, the sidecar reports not-ready, says so once in its log (not
/// once per attempt), closes clients cleanly, and becomes ready once the broker appears.
#[test]
fn broker_missing_at_start_up_is_reported_once_and_recovered_from() {
    let _machine = shared_machine();
    let port = support::free_port();
    let broker = format!("127.0.0.1:{port}");
    let sidecar = Sidecar::start(&broker, &[]);
    let started = Instant::now();

    let (code, body) = sidecar.admin_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no metadata"), "{body}");
    // A client arriving meanwhile is closed cleanly, after the sidecar's bounded attempts.
    let mut client = RawClient::connect(&sidecar.bootstrap());
    let asked = Instant::now();
    client.send(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    assert!(client.is_closed_by_peer(), "the client is closed, not left hanging");
    let closed_after = asked.elapsed();
    let unavailable = sidecar.metric("kafka_sidecar_disconnects_total", &["cause=\"upstream_unavailable\""]);
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(sidecar.admin_get("/readyz").0, 503);
        thread::sleep(Duration::from_millis(250));
    }
    let logs = sidecar.logs();
    let attempts = sidecar.metric("kafka_sidecar_upstream_connects_total", &["result=\"refused\""]);
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert_eq!(count_lines(&logs, "cannot connect to broker"), 1, "{logs}");
    assert!(warnings.len() <= 2, "one failure, one line (plus the first failed refresh): {warnings:#?}");
    assert!(attempts >= 6.0, "the sidecar kept trying: {attempts} attempts");
    // Sidecar::start's own probe of the bootstrap port counts too.
    assert!(unavailable >= 1.0, "the client's disconnect is counted as upstream_unavailable");

    let _tansu = Tansu::start_on(port).expect("start Tansu on the reserved port");
    let appeared = Instant::now();
    let (code, body) = sidecar.wait_for_readyz(200, Duration::from_secs(30));
    let recovery = appeared.elapsed();
    eprintln!(
        "[faults] missing broker: {attempts} refused attempts in the first {:.1?}, warnings logged: {warnings:#?}; \
         client closed after {closed_after:.1?}; ready {recovery:.1?} after the broker appeared",
        started.elapsed()
    );
    assert_eq!(code, 200, "{body}");
    // The control loop backs off 0.5 s, 1 s, 2 s, 4 s ... (at most --metadata-refresh).
    assert!(recovery < Duration::from_secs(10), "ready only {recovery:?} after the broker appeared");
    assert!(sidecar.wait_for_log("broker reachable again", Duration::from_secs(5)), "{}", sidecar.logs());
    assert_eq!(count_lines(&sidecar.logs(), "cannot connect to broker"), 1);
    sidecar.kcat_round_trip("faults-late-broker", 5);
}

// ------------------------------------------------------------------------------------------------
// Network namespaces: peers that go silent

/// A network namespace joined to the host by a veth pair (`host_ip` on the host side, `ns_ip`
/// inside), deleted with everything in it when dropped. [`NetNs::blackhole`] makes the namespace
/// drop every packet on its veth, in and out: to the other side the peer is silent, with no FIN
/// and no RST, as a crashed host or a cut network path looks.
struct NetNs {
    name: String,
    ns_if: String,
    host_ip: String,
    ns_ip: String,
}

/// Runs `ip args`; these tests need root, iproute2 and iptables.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {} failed (network namespaces need root; blackholing needs iptables): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ip_output(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl NetNs {
    fn create() -> NetNs {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        // A /30 of 10.213.0.0/16 per namespace, by pid and then by namespace of this process,
        // skipping names and subnets in use (another test run, or one killed before cleaning up).
        let (name, host_ip, ns_ip) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            assert!(n < 64, "no free namespace name or subnet");
            let name = format!("ksf{}x{n}", pid % 100_000);
            let subnet = format!("10.213.{}.{}/30", pid % 250, n * 4);
            let taken = ip_output(&["netns", "list"]).split_whitespace().any(|word| word == name)
                || !ip_output(&["-o", "addr", "show", "to", &subnet]).trim().is_empty();
            if !taken {
                break (
                    name,
                    format!("10.213.{}.{}", pid % 250, n * 4 + 1),
                    format!("10.213.{}.{}", pid % 250, n * 4 + 2),
                );
            }
        };
        let (host_if, ns_if) = (format!("{name}h"), format!("{name}n"));
        ip(&["netns", "add", &name]);
        let ns = NetNs { name, ns_if, host_ip, ns_ip };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns.ns_if]);
        ip(&["link", "set", &ns.ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["netns", "exec", &ns.name, "ip", "addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns.ns_if]);
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", &ns.ns_if, "up"]);
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `program args` run inside the namespace.
    fn command(&self, program: &std::path::Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program).args(args);
        cmd
    }

    fn iptables(&self, action: &str) {
        for (chain, direction) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            ip(&["netns", "exec", &self.name, "iptables", action, chain, direction, &self.ns_if, "-j", "DROP"]);
        }
    }

    /// From now on every packet to or from the namespace is dropped.
    fn blackhole(&self) {
        self.iptables("-I");
    }

    /// Undoes [`NetNs::blackhole`].
    fn restore(&self) {
        self.iptables("-D");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Let the sockets left in the namespace finish their close first: a socket whose FIN is
        // dropped would keep the namespace alive for minutes. Deleting the namespace deletes its
        // end of the veth pair, and with it the host's end.
        let _ = Command::new("ip").args(["netns", "exec", &self.name, "iptables", "-F"]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A child process killed when dropped, with its output in a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &str) -> Proc {
        let log = support::temp_path(name);
        let out = std::fs::File::create(&log).expect("create log file");
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc { child, log }
    }

    fn output(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn wait_output(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(25));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        support::report_output_on_panic("faults", &self.log);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Tansu listening inside `ns` on `ns_ip:9092`.
fn tansu_in(ns: &NetNs) -> (Proc, String) {
    let addr = format!("{}:9092", ns.ns_ip);
    let url = format!("tcp://{addr}");
    let bin = PathBuf::from(std::env::var_os("KAFKA_SIDECAR_TANSU").expect("KAFKA_SIDECAR_TANSU is not set"));
    let mut cmd = ns.command(
        &bin,
        &["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"],
    );
    cmd.env("NO_COLOR", "1");
    let tansu = Proc::spawn(cmd, "tansu-netns");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !support::api_versions_answered(&addr) {
        assert!(Instant::now() < deadline, "Tansu did not start in {}: {}", ns.name, tansu.output());
        thread::sleep(Duration::from_millis(50));
    }
    (tansu, addr)
}

/// The sidecar options of the dead-peer tests: a silent peer is given up after
/// max(1 s + 2 × 1 s of keepalive, 3 s of unacknowledged data) = 3 s.
const FAST_DEAD_PEER: [&str; 8] =
    ["--keepalive-idle", "1s", "--keepalive-interval", "1s", "--keepalive-count", "2", "--user-timeout", "3s"];
const DEAD_PEER_BOUND: Duration = Duration::from_secs(3);

/// The broker's host stops answering (packets dropped, no RST). A client whose connection is
/// idle (keepalive finds out) and one with a request in flight (TCP_USER_TIMEOUT finds out) are
/// both disconnected cleanly within the configured bound, and the sidecar counts the timeouts.
#[test]
fn silently_dead_broker_is_detected_within_the_keepalive_bound() {
    let _machine = shared_machine();
    let ns = NetNs::create();
    let (_tansu, broker) = tansu_in(&ns);
    let mut args = FAST_DEAD_PEER.to_vec();
    args.extend(["--log-level", "kafka_sidecar=debug"]);
    let sidecar = Sidecar::start(&broker, &args);
    assert_eq!(sidecar.wait_for_readyz(200, Duration::from_secs(10)).0, 200);

    let mut idle = RawClient::connect(&sidecar.bootstrap());
    assert_eq!(metadata(&mut idle).brokers.len(), 1);
    let mut busy = RawClient::connect(&sidecar.broker_addr(support::TANSU_NODE_ID));
    assert_eq!(metadata(&mut busy).brokers.len(), 1);
    let before = sidecar.admin_get("/metrics").1;

    ns.blackhole();
    let cut = Instant::now();
    busy.send(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(None));
    let watch = |mut client: RawClient| thread::spawn(move || (client.is_closed_by_peer(), cut.elapsed()));
    let (idle_closed, idle_after) = watch(idle).join().unwrap();
    let (busy_closed, busy_after) = watch(busy).join().unwrap();
    let after = sidecar.admin_get("/metrics").1;
    let delta = |name: &str, labels: &[&str]| metric_in(&after, name, labels) - metric_in(&before, name, labels);
    let timeouts = delta("kafka_sidecar_upstream_timeouts_total", &[]);
    let broker_closed = delta("kafka_sidecar_disconnects_total", &["cause=\"broker_closed\""]);
    eprintln!(
        "[faults] silent broker: idle client closed after {idle_after:.2?}, client with a request in flight after \
         {busy_after:.2?} (bound {DEAD_PEER_BOUND:?}); upstream timeouts +{timeouts}, broker_closed +{broker_closed}"
    );
    assert!(idle_closed && busy_closed, "both clients are disconnected");
    for after in [idle_after, busy_after] {
        assert!(after >= DEAD_PEER_BOUND - Duration::from_millis(500), "closed before the bound: {after:?}");
        assert!(after <= DEAD_PEER_BOUND + Duration::from_secs(2), "closed long after the bound: {after:?}");
    }
    assert!(timeouts >= 2.0, "each broker connection given up counts as a timeout: {timeouts}");
    assert!(broker_closed >= 2.0, "{broker_closed}");
    assert!(sidecar.logs().contains("Connection timed out"), "{}", sidecar.logs());

    // The path comes back: new clients are served again.
    ns.restore();
    let mut client = RawClient::connect(&sidecar.bootstrap());
    assert_eq!(metadata(&mut client).brokers.len(), 1);
}

/// A sidecar started by hand, listening on every address (the helper in `support` binds
/// loopback only), for clients in a namespace.
struct OpenSidecar {
    proc: Proc,
    bootstrap_port: u16,
    admin: String,
}

impl OpenSidecar {
    fn start(upstream: &str, extra: &[&str]) -> OpenSidecar {
        let bootstrap_port = support::free_port();
        let base = support::free_port_base(support::BROKER_PORT_SPAN);
        let admin = format!("127.0.0.1:{}", support::free_port());
        let mut cmd = support::sidecar_command();
        cmd.args(["--bootstrap-server", upstream, "--listen-host", "0.0.0.0"])
            .args(["--bootstrap-port", &bootstrap_port.to_string()])
            .args(["--broker-port-base", &base.to_string(), "--admin-listen", &admin])
            .args(extra);
        let proc = Proc::spawn(cmd, "sidecar-open");
        let sidecar = OpenSidecar { proc, bootstrap_port, admin };
        for addr in [format!("127.0.0.1:{bootstrap_port}"), sidecar.admin.clone()] {
            assert!(support::wait_for_port(&addr, Duration::from_secs(30)), "{}", sidecar.proc.output());
        }
        sidecar
    }

    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_in(&support::http_get(&self.admin, "/metrics").1, name, labels)
    }
}

/// A client whose host vanishes (no FIN, no RST) is reaped by keepalive within the bound, and
/// its broker connection is closed with it.
#[test]
fn half_open_client_is_reaped_by_keepalive() {
    let _machine = shared_machine();
    let ns = NetNs::create();
    let tansu = Tansu::start();
    let mut args = FAST_DEAD_PEER.to_vec();
    args.extend(["--log-level", "kafka_sidecar=debug"]);
    let sidecar = OpenSidecar::start(&tansu.addr(), &args);

    // ApiVersions v0, then wait with the connection open.
    let script = format!(
        "import socket, struct, sys\n\
         s = socket.create_connection(('{}', {}))\n\
         body = struct.pack('>hhih', 18, 0, 7, 4) + b'hold'\n\
         s.sendall(struct.pack('>i', len(body)) + body)\n\
         size = struct.unpack('>i', s.recv(4, socket.MSG_WAITALL))[0]\n\
         s.recv(size, socket.MSG_WAITALL)\n\
         print('ready', flush=True)\n\
         sys.stdin.read()\n",
        ns.host_ip, sidecar.bootstrap_port
    );
    let client = Proc::spawn(ns.command(&support::python_bin(), &["-c", &script]), "half-open-client");
    assert!(client.wait_output("ready", Duration::from_secs(20)), "{}", client.output());
    let peer = format!("peer={}:", ns.ns_ip);
    assert_eq!(sidecar.metric("kafka_sidecar_upstream_connections", &[]), 1.0, "{}", sidecar.proc.output());

    ns.blackhole();
    let cut = Instant::now();
    let closed = |out: &str| out.lines().any(|l| l.contains("client connection closed") && l.contains(&peer));
    while !closed(&sidecar.proc.output()) && cut.elapsed() < Duration::from_secs(15) {
        thread::sleep(Duration::from_millis(50));
    }
    let reaped_after = cut.elapsed();
    let logs = sidecar.proc.output();
    eprintln!("[faults] half-open client: reaped {reaped_after:.2?} after it went silent (bound {DEAD_PEER_BOUND:?})");
    assert!(closed(&logs), "the silent client was not reaped:\n{logs}");
    assert!(reaped_after >= DEAD_PEER_BOUND - Duration::from_millis(500), "{reaped_after:?}");
    assert!(reaped_after <= DEAD_PEER_BOUND + Duration::from_secs(2), "{reaped_after:?}");
    assert!(
        logs.lines().any(|l| l.contains(&peer) && l.contains("Connection timed out")),
        "the kernel's timeout is the cause:\n{logs}"
    );
    thread::sleep(Duration::from_millis(200));
    assert_eq!(sidecar.metric("kafka_sidecar_upstream_connections", &[]), 0.0, "its broker connection is closed");
    assert_eq!(sidecar.metric("kafka_sidecar_client_connections", &[]), 0.0);
}

// ------------------------------------------------------------------------------------------------
// Load

/// Makes sure this process (and the sidecar and broker it starts, which inherit the limit) may
/// open `needed` files, raising the soft limit to the hard one with prlimit(1) if it is lower.
fn ensure_fd_limit(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("no open-files limit");
    let values: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let (soft, hard) = (values[0], values[1]);
    if soft >= needed {
        return;
    }
    assert!(hard >= needed, "this test needs {needed} open files; the hard limit is {hard}");
    let status = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={hard}:{hard}")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "cannot raise the open-files limit from {soft} to {hard}");
}

async fn round_trip(stream: &mut tokio::net::TcpStream, frame: &[u8]) -> std::io::Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(frame).await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await?;
    if body.get(..4) != frame.get(8..12) {
        return Err(std::io::Error::other("response to another request"));
    }
    Ok(body.len())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A thousand clients connect, ask for metadata and stay; then 5,000 more connect within 10 s,
/// each asking ApiVersions and leaving. Every request is answered, the sidecar's memory stays
/// bounded and it is healthy afterwards, with every connection and descriptor given back.
#[test]
fn thousand_held_connections_and_a_connection_storm() {
    let _machine = whole_machine();
    const HELD: usize = 1000;
    const STORM: u32 = 5000;
    const STORM_SPAN: Duration = Duration::from_secs(10);
    ensure_fd_limit(8192);
    let tansu = Tansu::start();
    // Room for the held connections and the storm's few concurrent ones; beyond it clients
    // would wait for a free slot (they are not refused). Each held client keeps a broker
    // connection of its own: the connect-rate limit is raised so that a thousand open in seconds.
    let sidecar = Sidecar::start(&tansu.addr(), &["--max-client-connections", "1100", "--broker-connect-rate", "2000"]);
    assert_eq!(sidecar.wait_for_readyz(200, Duration::from_secs(10)).0, 200);
    let pid = sidecar.pid();
    let (rss_start, fds_start) = (proc_status_kib(pid, "VmRSS"), open_fds(pid));
    let bootstrap = sidecar.bootstrap();
    let metadata_frame =
        kafka_sidecar::wire::encode_request(ApiKey::Metadata, 4, 7, &MetadataRequest::default().with_topics(None))
            .unwrap();
    let api_versions = kafka_sidecar::wire::encode_request(
        ApiKey::ApiVersions,
        0,
        9,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // A thousand held connections.
    let started = Instant::now();
    let mut held = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..HELD {
            let (bootstrap, metadata_frame) = (bootstrap.clone(), metadata_frame.clone());
            tasks.spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&bootstrap).await?;
                tokio::time::timeout(Duration::from_secs(30), round_trip(&mut stream, &metadata_frame))
                    .await
                    .map_err(std::io::Error::other)??;
                Ok::<_, std::io::Error>(stream)
            });
        }
        let mut held = Vec::new();
        while let Some(result) = tasks.join_next().await {
            held.push(result.unwrap().expect("a held client's Metadata request failed"));
        }
        held
    });
    let held_after = started.elapsed();
    assert_eq!(held.len(), HELD);
    assert_eq!(sidecar.metric("kafka_sidecar_client_connections", &[]), HELD as f64);
    let (rss_held, fds_held) = (proc_status_kib(pid, "VmRSS"), open_fds(pid));

    // The storm, on top of the held connections, with the open connections sampled meanwhile.
    let storm_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (admin, over) = (sidecar.admin_addr(), storm_over.clone());
        thread::spawn(move || {
            let mut peak = 0f64;
            while !over.load(std::sync::atomic::Ordering::Relaxed) {
                let text = support::http_get(&admin, "/metrics").1;
                peak = peak.max(metric_in(&text, "kafka_sidecar_client_connections", &[]));
                thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let started = Instant::now();
    let mut latencies = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        for i in 0..STORM {
            tokio::time::sleep_until(start + STORM_SPAN * i / STORM).await;
            let (bootstrap, api_versions) = (bootstrap.clone(), api_versions.clone());
            tasks.spawn(async move {
                let asked = Instant::now();
                let mut stream = tokio::net::TcpStream::connect(&bootstrap).await?;
                tokio::time::timeout(Duration::from_secs(30), round_trip(&mut stream, &api_versions))
                    .await
                    .map_err(std::io::Error::other)??;
                Ok::<_, std::io::Error>(asked.elapsed())
            });
        }
        let (mut latencies, mut failures) = (Vec::new(), Vec::new());
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(latency) => latencies.push(latency),
                Err(error) => failures.push(error.to_string()),
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {STORM} storm connections failed: {:?}",
            failures.len(),
            &failures[..5.min(failures.len())]
        );
        latencies
    });
    let storm_took = started.elapsed();
    storm_over.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let waited = count_lines(&sidecar.logs(), "client connection limit reached");
    latencies.sort_unstable();

    // The held clients are still served, then leave.
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for mut stream in held.drain(..) {
            let metadata_frame = metadata_frame.clone();
            tasks.spawn(async move { round_trip(&mut stream, &metadata_frame).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().expect("a held client was not served after the storm");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while sidecar.metric("kafka_sidecar_client_connections", &[]) > 0.0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    let hwm = proc_status_kib(pid, "VmHWM");
    let (rss_end, fds_end) = (proc_status_kib(pid, "VmRSS"), open_fds(pid));
    eprintln!(
        "[faults] load: {HELD} held connections up in {held_after:.2?} (RSS {:.1} -> {:.1} MiB, fds {fds_start} -> \
         {fds_held}); storm of {STORM} took {storm_took:.2?}, ApiVersions latency p50 {:.1?} p99 {:.1?} max \
         {:.1?}, at most {peak} connections open when sampled (limit reached {waited} times); VmHWM {:.1} MiB; \
         after: RSS {:.1} MiB, fds {fds_end}",
        mib(rss_start),
        mib(rss_held),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        mib(hwm),
        mib(rss_end),
    );
    assert_eq!(latencies.len(), STORM as usize);
    assert_eq!(sidecar.metric("kafka_sidecar_client_connections", &[]), 0.0, "every session ended");
    assert!(fds_end <= fds_start + 10, "descriptors given back: {fds_start} at start, {fds_end} at the end");
    assert!(hwm < 160 * 1024, "VmHWM {} MiB", mib(hwm));
    assert_eq!(sidecar.admin_get("/readyz").0, 200);
    let mut client = RawClient::connect(&sidecar.bootstrap());
    assert_eq!(metadata(&mut client).brokers.len(), 1);
    drop(tansu);
}

// ------------------------------------------------------------------------------------------------
// Hostile clients

/// A Metadata v4 request frame (all topics) with `correlation_id`.
fn metadata_frame(correlation_id: i32) -> Vec<u8> {
    let request = MetadataRequest::default().with_topics(None);
    kafka_sidecar::wire::encode_request(ApiKey::Metadata, 4, correlation_id, &request).unwrap().to_vec()
}

/// A client that asks for metadata every `every` on one connection until `stop`, recording
/// each round trip's latency.
fn steady_client(
    addr: String,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<Vec<Duration>> {
    thread::spawn(move || {
        let mut client = RawClient::connect(&addr);
        let mut latencies = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let asked = Instant::now();
            assert_eq!(metadata(&mut client).brokers.len(), 1);
            latencies.push(asked.elapsed());
            thread::sleep(every);
        }
        latencies
    })
}

/// Clients that send their request one byte per second are cut off by --client-idle-timeout
/// (the timer runs from the last complete request, so trickling bytes does not extend it), while
/// a client sharing the sidecar keeps its usual latency.
#[test]
fn slowloris_clients_are_cut_off_by_the_idle_timeout() {
    let _machine = shared_machine();
    const SLOW: usize = 50;
    const IDLE: Duration = Duration::from_secs(3);
    let tansu = Tansu::start();
    // Each slow client holds a broker connection: the connect-rate limit is raised so that all
    // fifty connect at once and their idle timers start together.
    let sidecar = Sidecar::start(&tansu.addr(), &["--client-idle-timeout", "3s", "--broker-connect-rate", "500"]);
    let idle_before = sidecar.metric("kafka_sidecar_disconnects_total", &["cause=\"idle\""]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_client(sidecar.bootstrap(), Duration::from_millis(50), stop.clone());

    let slow: Vec<_> = (0..SLOW)
        .map(|i| {
            let addr = sidecar.bootstrap();
            thread::spawn(move || {
                let frame = metadata_frame(i as i32);
                let mut stream = TcpStream::connect(&addr).unwrap();
                let connected = Instant::now();
                // The read timeout paces the bytes: one a second, until the sidecar hangs up.
                stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut sent = 0;
                for byte in &frame {
                    if stream.write_all(std::slice::from_ref(byte)).is_err() {
                        return (Some(connected.elapsed()), sent);
                    }
                    sent += 1;
                    match stream.read(&mut [0u8; 1]) {
                        Ok(0) => return (Some(connected.elapsed()), sent),
                        Ok(_) => panic!("a response to an incomplete request"),
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return (Some(connected.elapsed()), sent),
                    }
                }
                (None, sent)
            })
        })
        .collect();
    let cut: Vec<_> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = steady.join().unwrap();
    latencies.sort_unstable();
    let idle = sidecar.metric("kafka_sidecar_disconnects_total", &["cause=\"idle\""]) - idle_before;
    let times: Vec<Duration> = cut.iter().filter_map(|(after, _)| *after).collect();
    assert_eq!(times.len(), SLOW, "every slow client is cut off: {cut:?}");
    let (first, last) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    let most_bytes = cut.iter().map(|(_, sent)| sent).max().unwrap();
    eprintln!(
        "[faults] slowloris: {} of {SLOW} slow clients cut off between {first:.2?} and {last:.2?} after connecting \
         (at most {most_bytes} bytes sent); idle disconnects +{idle}; steady client: {} requests, p50 {:.1?}, max \
         {:.1?}",
        times.len(),
        latencies.len(),
        percentile(&latencies, 0.5),
        latencies.last().unwrap()
    );
    assert!(first >= IDLE - Duration::from_millis(100), "{first:?}");
    assert!(last <= IDLE + Duration::from_secs(2), "{last:?}");
    assert_eq!(idle, SLOW as f64, "each counted with cause idle");
    assert!(*latencies.last().unwrap() < Duration::from_secs(1), "the steady client was held up");
    assert!(latencies.len() >= 40, "the steady client kept going: {} requests", latencies.len());
}

/// A Fetch v4 request frame: up to 1 MiB from offset 0 of `topic`'s partition 0.
fn fetch_frame(topic: &str, correlation_id: i32) -> Vec<u8> {
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
    use kafka_protocol::protocol::StrBytes;
    let partition = FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20);
    // Waits up to 500 ms for at least a byte, as clients do: Tansu answers a Fetch that may not
    // wait (max_wait_ms 0) with nothing at all.
    let request =
        FetchRequest::default().with_max_wait_ms(500).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![partition]),
        ]);
    kafka_sidecar::wire::encode_request(ApiKey::Fetch, 4, correlation_id, &request).unwrap().to_vec()
}

/// A client pipelines Fetch requests (1 MiB answers) and Metadata requests and never reads.
/// Once the responses back up, the sidecar stops reading from that client (TCP flow control
/// all the way), so its memory stays flat and other clients keep their latency; after
/// --user-timeout of a zero window the kernel gives up on the stalled socket and the sidecar
/// closes that one session. A client that only pauses reading gets every response, in order.
#[test]
fn client_that_never_reads_cannot_grow_the_sidecar() {
    let _machine = shared_machine();
    const USER_TIMEOUT: Duration = Duration::from_secs(5);
    let tansu = Tansu::start();
    let sidecar = Sidecar::start(&tansu.addr(), &["--user-timeout", "5s", "--log-level", "kafka_sidecar=debug"]);
    let topic = "faults-unread";
    support::create_topics(&sidecar.bootstrap(), &[topic], 1);
    let record = "x".repeat(16 * 1024);
    let input: String = (0..64).map(|i| format!("{i}{record}\n")).collect();
    let produced = support::kcat_with_input(&["-b", &sidecar.bootstrap(), "-P", "-t", topic], &input);
    support::expect_success("kcat -P", &produced);
    let mut probe = RawClient::connect(&sidecar.bootstrap());
    probe.send_bytes(&fetch_frame(topic, 1)).unwrap();
    let fetch_size = probe.recv().unwrap().len();
    assert!(fetch_size > 512 * 1024, "a Fetch answer of {fetch_size} bytes");
    drop(probe);

    let pid = sidecar.pid();
    let rss_before = proc_status_kib(pid, "VmRSS");
    let read_before = sidecar.metric("kafka_sidecar_requests_total", &["node=\"111\""]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_client(sidecar.bootstrap(), Duration::from_millis(100), stop.clone());

    // Every tenth request a Fetch: 10,000 Fetch requests would ask for 10 GiB of answers.
    const REQUESTS: i32 = 100_000;
    let hog_addr = sidecar.broker_addr(support::TANSU_NODE_ID);
    let topic_name = topic.to_owned();
    let hog = thread::spawn(move || {
        let mut stream = TcpStream::connect(&hog_addr).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut written = 0;
        for i in 0..REQUESTS {
            let frame = if i % 10 == 0 { fetch_frame(&topic_name, i) } else { metadata_frame(i) };
            if stream.write_all(&frame).is_err() {
                break;
            }
            written += 1;
        }
        (stream, written)
    });
    // A client that pauses reading for less than --user-timeout gets everything, in order.
    let late_addr = sidecar.broker_addr(support::TANSU_NODE_ID);
    let topic_name = topic.to_owned();
    let late_reader = thread::spawn(move || {
        const LATE: i32 = 1000;
        let mut client = RawClient::connect(&late_addr);
        for i in 0..LATE {
            let frame = if i % 10 == 0 { fetch_frame(&topic_name, i) } else { metadata_frame(i) };
            client.send_bytes(&frame).unwrap();
        }
        thread::sleep(USER_TIMEOUT / 2);
        let mut bytes = 0;
        for i in 0..LATE {
            let frame = client.recv().expect("a response after the pause");
            assert_eq!(frame[4..8], i.to_be_bytes(), "responses in request order");
            bytes += frame.len();
        }
        (LATE, bytes)
    });
    let started = Instant::now();
    let mut rss_max = rss_before;
    while started.elapsed() < USER_TIMEOUT + Duration::from_secs(4) {
        rss_max = rss_max.max(proc_status_kib(pid, "VmRSS"));
        thread::sleep(Duration::from_millis(250));
    }
    let (mut hog, written) = hog.join().unwrap();
    let (late_answered, late_bytes) = late_reader.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = steady.join().unwrap();
    latencies.sort_unstable();
    let read_by_sidecar = sidecar.metric("kafka_sidecar_requests_total", &["node=\"111\""]) - read_before;

    // What the hog finds when it finally reads.
    hog.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (mut received, mut buf) = (0usize, vec![0u8; 1 << 16]);
    let end = loop {
        match hog.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => received += n,
            Err(e) => break Some(e),
        }
    };
    let logs = sidecar.logs();
    // The longest session on the broker port is the hog's (kcat's and the probe's are short).
    let session = logs
        .lines()
        .filter(|l| l.contains("client connection closed") && l.contains("node=111"))
        .filter_map(|l| l.rsplit_once("duration=").map(|(_, d)| logged_duration(d)))
        .max()
        .unwrap_or_default();
    let hwm = proc_status_kib(pid, "VmHWM");
    eprintln!(
        "[faults] never-reading client: wrote {written} requests ({} Fetch) into its socket, the sidecar read \
         {read_by_sidecar} of them; sidecar RSS {:.1} MiB before, at most {:.1} MiB while it stalled, VmHWM {:.1} MiB; \
         steady client p50 {:.1?} max {:.1?}; the stalled session was closed after {session:.2?}; the hog then read \
         {received} bytes and got {end:?}; a client that paused reading for {:?} got all {late_answered} \
         responses ({:.0} MiB) in order",
        written / 10,
        mib(rss_before),
        mib(rss_max),
        mib(hwm),
        percentile(&latencies, 0.5),
        latencies.last().unwrap(),
        USER_TIMEOUT / 2,
        late_bytes as f64 / (1 << 20) as f64,
    );
    assert!(rss_max < rss_before + 32 * 1024, "sidecar RSS grew from {} to {} MiB", mib(rss_before), mib(rss_max));
    assert!((read_by_sidecar as i32) < written, "the sidecar stopped reading from the stalled client");
    assert!(*latencies.last().unwrap() < Duration::from_secs(1), "the steady client was held up");
    assert!(
        logs.contains("client went away before its response") && logs.contains("Connection timed out"),
        "the kernel's TCP_USER_TIMEOUT ended the stalled session:\n{logs}"
    );
    assert!(
        end.as_ref().is_some_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "the stalled client is reset: {end:?}"
    );
    assert!(session >= USER_TIMEOUT && session <= USER_TIMEOUT + Duration::from_secs(3), "{session:?}");
}

/// A duration as the sidecar logs it (`Debug` of `Duration`: `5.42s`, `2.7ms`, `222.3µs`).
fn logged_duration(text: &str) -> Duration {
    let text = text.trim();
    let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, *scale)))
        .unwrap_or_else(|| panic!("not a duration: {text}"));
    Duration::from_secs_f64(number.parse::<f64>().unwrap_or_else(|_| panic!("not a duration: {text}")) * scale)
}

/// A broker that accepts connections and reads requests but never answers. Returns its address
/// and the number of requests read on each connection so far.
fn mute_broker() -> (String, std::sync::Arc<std::sync::Mutex<Vec<usize>>>) {
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counts = Arc::new(Mutex::new(Vec::new()));
    let shared = counts.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counts = shared.clone();
            let index = {
                let mut counts = counts.lock().unwrap();
                counts.push(0);
                counts.len() - 1
            };
            thread::spawn(move || {
                loop {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
                    if stream.read_exact(&mut frame).is_err() {
                        return;
                    }
                    counts.lock().unwrap()[index] += 1;
                }
            });
        }
    });
    (addr, counts)
}

/// --max-inflight bounds the requests awaiting a response on one client connection: a client
/// pipelining requests to a broker that does not answer gets no more than that many forwarded,
/// so neither the broker nor the sidecar's bookkeeping grows with what the client sends.
#[test]
fn pipelined_requests_are_bounded_by_max_inflight() {
    let _machine = shared_machine();
    const MAX_INFLIGHT: usize = 16;
    const SENT: i32 = 200_000;
    let (broker, per_connection) = mute_broker();
    let sidecar = Sidecar::start(&broker, &["--max-inflight", &MAX_INFLIGHT.to_string()]);
    let pid = sidecar.pid();
    let rss_before = proc_status_kib(pid, "VmRSS");

    let addr = sidecar.bootstrap();
    let writer = thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let (mut written, mut batch) = (0, Vec::new());
        for i in 0..SENT {
            batch.extend_from_slice(&metadata_frame(i));
            if batch.len() > 64 * 1024 || i == SENT - 1 {
                if stream.write_all(&batch).is_err() {
                    break;
                }
                written = i + 1;
                batch.clear();
            }
        }
        (stream, written)
    });
    thread::sleep(Duration::from_secs(3));
    let (_stream, written) = writer.join().unwrap();
    thread::sleep(Duration::from_millis(500));
    // The client's session is the busiest connection (the control connection sends ApiVersions).
    let forwarded = per_connection.lock().unwrap().iter().copied().max().unwrap_or(0);
    let rss_after = proc_status_kib(pid, "VmRSS");
    eprintln!(
        "[faults] mute broker, --max-inflight {MAX_INFLIGHT}: the client wrote {written} requests, the sidecar \
         forwarded {forwarded}; RSS {:.1} -> {:.1} MiB",
        mib(rss_before),
        mib(rss_after)
    );
    assert!(forwarded <= 2 * MAX_INFLIGHT + 1, "{forwarded} requests forwarded with --max-inflight {MAX_INFLIGHT}");
}

/// A relay in front of a broker that can be muted: it keeps reading both sides (so TCP keeps
/// acknowledging, and keepalive sees a live peer) but forwards nothing, as a hung broker process
/// looks.
struct MutableRelay {
    addr: String,
    mute: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn mutable_relay(upstream: String) -> MutableRelay {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    fn pump(mut from: TcpStream, mut to: TcpStream, mute: Arc<AtomicBool>) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) if !mute.load(Ordering::SeqCst) => {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mute = Arc::new(AtomicBool::new(false));
    let muted = mute.clone();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(broker) = TcpStream::connect(&upstream) else { continue };
            let (c, b) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
            let (m1, m2) = (muted.clone(), muted.clone());
            thread::spawn(move || pump(client, broker, m1));
            thread::spawn(move || pump(b, c, m2));
        }
    });
    MutableRelay { addr, mute }
}

/// A bootstrap broker that stops answering while its connections stay up (the process hangs;
/// the kernel still acknowledges) must not freeze the sidecar's metadata refresh: refreshes keep
/// being attempted, and readiness reports the cluster unreachable unless one succeeds.
#[test]
fn metadata_refresh_does_not_hang_on_a_broker_that_stops_answering() {
    let _machine = shared_machine();
    let tansu = Tansu::start();
    let relay = mutable_relay(tansu.addr());
    let sidecar = Sidecar::start(&relay.addr, &["--metadata-refresh", "1s"]);
    assert_eq!(sidecar.wait_for_readyz(200, Duration::from_secs(10)).0, 200);
    let refreshes = |sidecar: &Sidecar| {
        let text = sidecar.admin_get("/metrics").1;
        let ok = metric_in(&text, "kafka_sidecar_metadata_refreshes_total", &["result=\"ok\""]);
        (ok, metric_in(&text, "kafka_sidecar_metadata_refreshes_total", &["result=\"error\""]))
    };
    thread::sleep(Duration::from_millis(1500));

    relay.mute.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok_before, errors_before) = refreshes(&sidecar);
    thread::sleep(Duration::from_secs(15));
    let (ok_after, errors_after) = refreshes(&sidecar);
    let (code, body) = sidecar.admin_get("/readyz");
    eprintln!(
        "[faults] hung bootstrap broker: in 15 s, refreshes ok +{} error +{}; /readyz {code} {body:?}",
        ok_after - ok_before,
        errors_after - errors_before
    );
    assert!(ok_after + errors_after > ok_before + errors_before, "the metadata refresh is stuck");
    if ok_after == ok_before {
        assert_eq!(code, 503, "no refresh succeeded, yet ready: {body}");
    }

    relay.mute.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sidecar.wait_for_readyz(200, Duration::from_secs(20)).0, 200, "ready again");
}

/// An admin request answered NOT_CONTROLLER is retried within its budget ("it never hangs"),
/// even when the broker the sidecar asks for the controller accepts the connection and then
/// never answers: the client gets an answer, or its connection is closed, once the budget is
/// spent.
#[test]
fn admin_retry_does_not_hang_on_a_broker_that_never_answers() {
    let _machine = shared_machine();
    const BUDGET: Duration = Duration::from_secs(2);
    let (mute, asked_mute) = mute_broker();
    let mute_port: u16 = mute.rsplit_once(':').unwrap().1.parse().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = [listener.local_addr().unwrap().port(), mute_port];
    // Node 1 answers metadata (node 2 is the controller) and says 41 to CreateTopics.
    support::scripted::serve_scripted(
        listener,
        std::sync::Arc::new(move |frame: &[u8]| {
            let correlation_id = &frame[8..12];
            match i16::from_be_bytes([frame[4], frame[5]]) {
                18 => Some(support::scripted::api_versions_v0(correlation_id)),
                3 => Some(support::scripted::two_broker_metadata_v1(correlation_id, ports)),
                19 => {
                    let mut body = 1i32.to_be_bytes().to_vec();
                    body.extend_from_slice(&5i16.to_be_bytes());
                    body.extend_from_slice(b"stuck");
                    body.extend_from_slice(&41i16.to_be_bytes());
                    Some(support::scripted::response(correlation_id, &body))
                }
                _ => None,
            }
        }),
    );
    let sidecar = Sidecar::start(&format!("127.0.0.1:{}", ports[0]), &["--admin-retry-budget", "2s"]);
    assert!(support::wait_for_port(&sidecar.broker_addr(1), Duration::from_secs(10)), "{}", sidecar.logs());

    let mut client = RawClient::connect(&sidecar.broker_addr(1));
    let asked = Instant::now();
    client.send_bytes(&raw::create_topics_v0(5, "stuck")).unwrap();
    let outcome = client.recv().map(|frame| raw::read_topic_errors_v0(&frame));
    let waited = asked.elapsed();
    eprintln!(
        "[faults] admin retry with a mute broker: after {waited:.2?} the client got {outcome:?}; requests the \
         mute broker read, by connection: {:?}",
        asked_mute.lock().unwrap()
    );
    assert!(
        waited <= BUDGET + Duration::from_secs(3),
        "the client waited {waited:?} (budget {BUDGET:?}) and got {outcome:?}"
    );
}
