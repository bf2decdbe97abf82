//! The soak: an hour (by default) of produce, consume and admin traffic through one sidecar, with
//! the broker restarted in every cycle and the controller moving all the time, to show that
//! nothing leaks, wedges or degrades. A plain `cargo test` skips it (`#[ignore]`);
//! `scripts/soak.sh` runs it, and `docs/reliability.md` records a run.
//!
//! The cluster is the ZooKeeper-mode fixture (`tests/zk`: three brokers in front of one Tansu)
//! with the controller moving every few seconds and brokers naming the previous one for a while
//! after each move. Each cycle (five minutes by default) runs, through the sidecar:
//! - a producer of numbered messages (acks=all) and a consumer reading them as they come,
//! - an admin client creating and deleting topics in a loop (confluent-kafka and kafka-python
//!   in turn),
//! - a new kcat connection asking for metadata every two seconds,
//!
//! and kills the broker a third of the way through, starting it again (empty: Tansu keeps its log
//! in memory) a few seconds later. After each cycle the restarted log must hold exactly what that
//! broker acknowledged, no admin call may have failed with NOT_CONTROLLER, and once its clients
//! are gone the sidecar must hold no client connection. At the end its memory, file descriptors
//! and threads must be where they were after the first cycle.
//!
//! Settings (environment): `KAFKA_SIDECAR_SOAK_SECS` (3600), `KAFKA_SIDECAR_SOAK_CYCLE_SECS`
//! (300), `KAFKA_SIDECAR_SOAK_RATE` (messages per second, 100) and `KAFKA_SIDECAR_SOAK_REPORT`
//! (a JSON-lines file that receives a sample of the sidecar every minute and a line per cycle).

mod zk;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kafka_sidecar_test_support as support;
use serde_json::{Value, json};
use support::background::Background;
use support::http::metric_in;
use support::numbered;
use support::process::{open_fds, proc_status_kib, threads};
use support::{Sidecar, Tansu};
use zk::{FlapGuard, ZkCluster, ZkOptions};

/// How often the controller moves, and how long brokers keep naming the previous one.
const CONTROLLER_MOVES_EVERY: Duration = Duration::from_secs(5);
const CONTROLLER_REPORTED_STALE_FOR: Duration = Duration::from_secs(1);

/// How long the broker stays down in each cycle.
const OUTAGE: Duration = Duration::from_secs(3);

/// The part of a cycle left after the traffic stops, for the producer's retries after the
/// outage, reading the log back and letting connections close.
const CYCLE_MARGIN: Duration = Duration::from_secs(45);

/// How often a new kcat connection asks for metadata.
const METADATA_CHURN_EVERY: Duration = Duration::from_secs(2);

const SAMPLE_EVERY: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------------------
// Settings and report

struct Settings {
    total: Duration,
    cycle: Duration,
    rate: u64,
    report: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let secs = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
        };
        let cycle = Duration::from_secs(secs("KAFKA_SIDECAR_SOAK_CYCLE_SECS", 300));
        assert!(cycle >= 2 * CYCLE_MARGIN, "a cycle must last at least {:?}", 2 * CYCLE_MARGIN);
        let report = std::env::var_os("KAFKA_SIDECAR_SOAK_REPORT")
            .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("soak.jsonl"), PathBuf::from);
        Settings {
            total: Duration::from_secs(secs("KAFKA_SIDECAR_SOAK_SECS", 3600)),
            cycle,
            rate: secs("KAFKA_SIDECAR_SOAK_RATE", 100),
            report,
        }
    }
}

/// A JSON-lines file, each line also printed on stderr.
struct Report {
    file: Mutex<File>,
    started: Instant,
}

impl Report {
    fn create(path: &PathBuf) -> Report {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the report's directory");
        }
        let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Report { file: Mutex::new(file), started: Instant::now() }
    }

    /// Writes `fields` as one line, with the kind of record and the seconds since the start.
    fn write(&self, kind: &str, mut fields: Value) {
        fields["kind"] = json!(kind);
        fields["t"] = json!(self.started.elapsed().as_secs());
        let line = fields.to_string();
        eprintln!("[soak] {line}");
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        writeln!(file, "{line}").and_then(|()| file.flush()).expect("write the report");
    }
}

// ------------------------------------------------------------------------------------------------
// What the sidecar looks like

/// The sidecar's process figures and its counters, at one moment.
#[derive(Debug, Clone)]
struct Figures {
    rss_kib: u64,
    fds: usize,
    threads: u64,
    client_connections: f64,
    counters: Value,
}

fn figures(sidecar: &Sidecar) -> Figures {
    let pid = sidecar.pid();
    let text = sidecar.admin_get("/metrics").1;
    let sum = |name: &str, labels: &[&str]| metric_in(&text, name, labels);
    let failed_connects = sum("kafka_sidecar_upstream_connects_total", &[])
        - sum("kafka_sidecar_upstream_connects_total", &["result=\"ok\""]);
    let by_label = |name: &str, label: &str, values: &[&str]| -> Value {
        values.iter().map(|v| (v.to_string(), json!(sum(name, &[&format!("{label}=\"{v}\"")])))).collect()
    };
    let counters = json!({
        "requests": sum("kafka_sidecar_requests_total", &[]),
        "client_connections_accepted": sum("kafka_sidecar_client_connections_total", &[]),
        "disconnects": by_label(
            "kafka_sidecar_disconnects_total",
            "cause",
            &["client_closed", "broker_closed", "idle", "protocol_error", "upstream_unavailable", "retry_lost", "shutdown"],
        ),
        "protocol_errors": sum("kafka_sidecar_protocol_errors_total", &[]),
        "stray_responses": sum("kafka_sidecar_stray_responses_total", &[]),
        "upstream_connects_failed": failed_connects,
        "upstream_timeouts": sum("kafka_sidecar_upstream_timeouts_total", &[]),
        "not_controller_retries": by_label(
            "kafka_sidecar_not_controller_retries_total",
            "outcome",
            &["recovered", "exhausted", "lost"],
        ),
        "controller_changes": sum("kafka_sidecar_controller_changes_total", &[]),
    });
    Figures {
        rss_kib: proc_status_kib(pid, "VmRSS"),
        fds: open_fds(pid),
        threads: threads(pid),
        client_connections: sum("kafka_sidecar_client_connections", &[]),
        counters,
    }
}

impl Figures {
    fn to_json(&self) -> Value {
        json!({
            "rss_kib": self.rss_kib,
            "fds": self.fds,
            "threads": self.threads,
            "client_connections": self.client_connections,
            "counters": self.counters,
        })
    }
}

/// Waits until the sidecar holds no client connection, then reads its figures.
fn quiet_figures(sidecar: &Sidecar) -> Figures {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = figures(sidecar);
        if now.client_connections == 0.0 || Instant::now() > deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

// ------------------------------------------------------------------------------------------------
// The cluster and the traffic

/// Tansu behind the ZooKeeper-mode fixture, with the sidecar in front and the controller moving.
struct Cluster {
    tansu: Tansu,
    _zk: ZkCluster,
    _controller_moves: FlapGuard,
    sidecar: Sidecar,
}

impl Cluster {
    fn start() -> Cluster {
        let tansu = Tansu::start();
        let zk = ZkCluster::start(
            &tansu.addr(),
            ZkOptions { stale_for: CONTROLLER_REPORTED_STALE_FOR, ..ZkOptions::default() },
        );
        let controller_moves = zk.flap(CONTROLLER_MOVES_EVERY);
        let sidecar = Sidecar::start(&zk.bootstrap(), &[]);
        Cluster { tansu, _zk: zk, _controller_moves: controller_moves, sidecar }
    }
}

/// Kills the broker, keeps it down for [`OUTAGE`] and starts it again, empty, on its port.
fn restart_broker(tansu: &mut Tansu) -> Duration {
    let killed = Instant::now();
    tansu.kill();
    thread::sleep(OUTAGE);
    tansu.restart();
    killed.elapsed()
}

/// kcat connections asking for metadata, one every [`METADATA_CHURN_EVERY`] until `stop`;
/// returns how many succeeded and failed.
fn metadata_churn(bootstrap: &str, stop: &AtomicBool) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let output = support::kcat_with_timeout(&["-L", "-b", bootstrap, "-m", "5"], Duration::from_secs(15));
        if output.status.success() && String::from_utf8_lossy(&output.stdout).contains("brokers:") {
            ok += 1;
        } else {
            failed += 1;
        }
        thread::sleep(METADATA_CHURN_EVERY);
    }
    (ok, failed)
}

/// The outcome of one cycle's admin loop.
struct AdminOutcome {
    result: Value,
}

impl AdminOutcome {
    fn calls(&self) -> u64 {
        ["create", "delete"]
            .iter()
            .flat_map(|kind| self.result[kind].as_object().into_iter().flat_map(|m| m.values()))
            .filter_map(Value::as_u64)
            .sum()
    }

    fn ok(&self) -> u64 {
        ["create", "delete"].iter().filter_map(|kind| self.result[kind]["ok"].as_u64()).sum()
    }

    fn not_controller(&self) -> u64 {
        self.result["not_controller"].as_u64().expect("admin_loop.py reports not_controller")
    }
}

/// One cycle: traffic, a broker restart a third of the way through, then the checks. Returns the
/// sidecar's figures once the cycle's clients are gone.
fn run_cycle(index: u32, tansu: &mut Tansu, sidecar: &Sidecar, settings: &Settings, report: &Report) -> Figures {
    let bootstrap = sidecar.bootstrap();
    let topic = format!("soak-{index}");
    let traffic = settings.cycle - CYCLE_MARGIN;
    let count = (settings.rate * traffic.as_secs()) as usize;
    support::create_topics(&bootstrap, &[&topic], 1);

    let (count_arg, rate_arg, last) = (count.to_string(), settings.rate.to_string(), (count - 1).to_string());
    let consume_timeout = (settings.cycle.as_secs() + 60).to_string();
    let consumer = Background::python(
        "numbered.py",
        &[
            "consume",
            "--bootstrap",
            &bootstrap,
            "--topic",
            &topic,
            "--until-value",
            &last,
            "--timeout",
            &consume_timeout,
        ],
    );
    let mut producer = Background::python(
        "numbered.py",
        &[
            "produce",
            "--bootstrap",
            &bootstrap,
            "--topic",
            &topic,
            "--count",
            &count_arg,
            "--rate",
            &rate_arg,
            "--timeout",
            "120",
        ],
    );
    let admin_client = if index.is_multiple_of(2) { "confluent" } else { "kafka-python" };
    let prefix = format!("soak-admin-{index}");
    let admin = Background::python(
        "admin_loop.py",
        &[
            "--bootstrap",
            &bootstrap,
            "--seconds",
            &traffic.as_secs().to_string(),
            "--client",
            admin_client,
            "--prefix",
            &prefix,
            "--pause",
            "0.2",
        ],
    );
    let stop_churn = AtomicBool::new(false);

    let (outage, churn) = thread::scope(|scope| {
        let churn = scope.spawn(|| metadata_churn(&bootstrap, &stop_churn));
        let third = count / 3 / 50 * 50;
        let progress = producer.wait_line(traffic, |line| line.contains(&format!("\"acked\": {third}")));
        assert!(progress.is_some(), "cycle {index}: no progress before the restart\n{}", producer.stderr_text());
        let outage = restart_broker(tansu);
        // The restarted broker is empty: the topic is created again, as an operator would.
        support::create_topics(&bootstrap, &[&topic], 1);
        let (status, produced) = producer.finish(traffic + Duration::from_secs(180));
        stop_churn.store(true, Ordering::Relaxed);
        (outage, (status, produced, churn.join().expect("metadata churn thread")))
    });
    let (status, produced, (metadata_ok, metadata_failed)) = churn;
    assert!(status.success(), "cycle {index}: a message was not acknowledged: {}", produced["failed"]);

    let (status, consumed_live) = consumer.finish(Duration::from_secs(180));
    assert!(status.success(), "cycle {index}: the live consumer did not reach the last message: {consumed_live}");
    let final_read = support::python_ok(
        "numbered.py",
        &["consume", "--bootstrap", &bootstrap, "--topic", &topic, "--to-end", "--timeout", "60"],
    );
    let final_read: Value = serde_json::from_str(final_read.trim()).expect("consumer JSON");
    let log = numbered::verify_restarted_log(&produced, &final_read, count);

    let (status, admin_result) = admin.finish(Duration::from_secs(120));
    assert!(status.success(), "cycle {index}: admin_loop.py failed: {admin_result}");
    let admin = AdminOutcome { result: admin_result };

    let after = quiet_figures(sidecar);
    report.write(
        "cycle",
        json!({
            "cycle": index,
            "messages": count,
            "acknowledged_before_restart": log.earlier,
            "acknowledged_after_restart": log.acknowledged.len(),
            "consumed_after_restart": log.consumed.len(),
            "checksum": format!("{:016x}", log.checksum()),
            "producer_seconds": produced["elapsed"],
            "live_consumer_errors": consumed_live["errors"],
            "broker_down_seconds": outage.as_secs_f64(),
            "admin_client": admin_client,
            "admin_calls": admin.calls(),
            "admin_ok": admin.ok(),
            "admin_outcomes": { "create": admin.result["create"], "delete": admin.result["delete"] },
            "admin_not_controller": admin.not_controller(),
            "metadata_connections_ok": metadata_ok,
            "metadata_connections_failed": metadata_failed,
            "sidecar": after.to_json(),
        }),
    );
    assert_eq!(admin.not_controller(), 0, "cycle {index}: an admin call failed with NOT_CONTROLLER: {}", admin.result);
    assert_eq!(after.client_connections, 0.0, "cycle {index}: client connections left open after the clients ended");
    after
}

/// Sets its flag when dropped, panics included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Writes a sample of the sidecar every [`SAMPLE_EVERY`] until `stop`.
fn sample_until(sidecar: &Sidecar, report: &Report, stop: &AtomicBool) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            report.write("sample", figures(sidecar).to_json());
            next += SAMPLE_EVERY;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "an hour long: run with scripts/soak.sh"]
fn soak() {
    let settings = Settings::from_env();
    let report = Report::create(&settings.report);
    let mut cluster = Cluster::start();
    let Cluster { tansu, sidecar, .. } = &mut cluster;
    let sidecar: &Sidecar = sidecar;
    let sidecar_pid = sidecar.pid();
    report.write(
        "start",
        json!({
            "seconds": settings.total.as_secs(),
            "cycle_seconds": settings.cycle.as_secs(),
            "rate": settings.rate,
            "controller_moves_every_seconds": CONTROLLER_MOVES_EVERY.as_secs(),
            "sidecar": figures(sidecar).to_json(),
        }),
    );

    let stop_sampling = AtomicBool::new(false);
    let after_each_cycle: Vec<Figures> = thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_until(sidecar, &report, &stop_sampling));
        // A failed cycle panics: the sampler must stop then too, or the scope would wait for it.
        let _stop_sampler = StopOnDrop(&stop_sampling);
        let mut after_each_cycle = Vec::new();
        for index in 0.. {
            after_each_cycle.push(run_cycle(index, tansu, sidecar, &settings, &report));
            if report.started.elapsed() >= settings.total {
                break;
            }
        }
        drop(_stop_sampler);
        sampler.join().expect("sampler thread");
        after_each_cycle
    });

    // The first cycle warms the sidecar up (buffers, histograms, the allocator's arenas); from
    // then on nothing may grow.
    let (warm, end) = (&after_each_cycle[0], after_each_cycle.last().unwrap());
    let rss_allowed = warm.rss_kib + (warm.rss_kib / 4).max(4096);
    report.write(
        "end",
        json!({
            "warm": warm.to_json(),
            "end": end.to_json(),
            "rss_growth_kib": end.rss_kib as i64 - warm.rss_kib as i64,
            "fd_growth": end.fds as i64 - warm.fds as i64,
            "thread_growth": end.threads as i64 - warm.threads as i64,
        }),
    );
    assert_eq!(sidecar.pid(), sidecar_pid, "the sidecar was never restarted");
    assert!(end.rss_kib <= rss_allowed, "resident memory grew from {} to {} KiB", warm.rss_kib, end.rss_kib);
    assert!(end.fds <= warm.fds + 2, "file descriptors grew from {} to {}", warm.fds, end.fds);
    assert!(end.threads <= warm.threads + 2, "threads grew from {} to {}", warm.threads, end.threads);
}
