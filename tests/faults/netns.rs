//! Peers that go silent: network namespaces whose packets are dropped (iptables DROP), so the
//! other side sees no FIN and no RST.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest};
use kafka_sidecar_test_support::{self as support, raw};
use raw::RawClient;
use support::http::metric_in;
use support::{ChildProcess, Pipes, Sidecar, Tansu};

use super::{metadata, shared_machine};

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

    /// `cmd` run inside the namespace, with its environment.
    fn wrap(&self, cmd: Command) -> Command {
        let mut wrapped = Command::new("ip");
        wrapped.args(["netns", "exec", &self.name]).arg(cmd.get_program()).args(cmd.get_args());
        for (name, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(name, value),
                None => wrapped.env_remove(name),
            };
        }
        wrapped
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

/// Tansu listening inside `ns` on `ns_ip:9092`.
fn tansu_in(ns: &NetNs) -> Tansu {
    let addr = format!("{}:9092", ns.ns_ip);
    Tansu::start_wrapped(&addr, |cmd| ns.wrap(cmd))
        .unwrap_or_else(|why| panic!("Tansu did not start in {}: {why}", ns.name))
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
    let tansu = tansu_in(&ns);
    let broker = tansu.addr();
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

/// A client whose host vanishes (no FIN, no RST) is reaped by keepalive within the bound, and
/// its broker connection is closed with it.
#[test]
fn half_open_client_is_reaped_by_keepalive() {
    let _machine = shared_machine();
    let ns = NetNs::create();
    let tansu = Tansu::start();
    let mut args = FAST_DEAD_PEER.to_vec();
    args.extend(["--log-level", "kafka_sidecar=debug"]);
    // Listening on every address, for the client in the namespace.
    let sidecar = Sidecar::builder(&tansu.addr()).listen_host("0.0.0.0").args(&args).start();

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
        ns.host_ip,
        sidecar.bootstrap_port()
    );
    let mut python = Command::new(support::python_bin());
    python.args(["-c", &script]);
    // Its stdin stays open: the script holds its connection until then.
    let client = ChildProcess::spawn_with("half-open-client", ns.wrap(python), Pipes { stdin: true, stdout: false });
    assert!(client.wait_for_log("ready", Duration::from_secs(20)), "{}", client.logs());
    let peer = format!("peer={}:", ns.ns_ip);
    assert_eq!(sidecar.metric("kafka_sidecar_upstream_connections", &[]), 1.0, "{}", sidecar.logs());

    ns.blackhole();
    let cut = Instant::now();
    let closed = |out: &str| out.lines().any(|l| l.contains("client connection closed") && l.contains(&peer));
    while !closed(&sidecar.logs()) && cut.elapsed() < Duration::from_secs(15) {
        thread::sleep(Duration::from_millis(50));
    }
    let reaped_after = cut.elapsed();
    let logs = sidecar.logs();
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
