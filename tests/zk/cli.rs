//! `zk-cluster`: the tests' ZooKeeper-mode cluster fixture (`tests/zk/`, the same code the tests
//! use) as a program, for `scripts/demo.sh`. It is not part of the sidecar and is built only with
//! the `zk-cluster` feature:
//!
//! ```sh
//! cargo build --release --features zk-cluster     # target/release/zk-cluster
//! zk-cluster --upstream 127.0.0.1:9092 --stale-for 1s --flap-every 300ms
//! ```
//!
//! Starts the broker front ends (node ids 1..=N) over the Tansu broker at `--upstream`, prints
//! one line, `bootstrap 127.0.0.1:P1,127.0.0.1:P2,…` (node 1 first), and serves until SIGTERM or
//! SIGINT; then it prints how many NOT_CONTROLLER (41) answers the front ends sent.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[path = "mod.rs"]
mod zk;

use zk::{ZkCluster, ZkOptions};

/// The ZooKeeper-mode cluster fixture of the tests: broker front ends over one Tansu broker,
/// where only the controller serves controller-only admin requests and the others answer
/// NOT_CONTROLLER (41).
#[derive(Debug, Parser)]
#[command(name = "zk-cluster")]
struct Args {
    /// The Tansu broker the front ends relay to (`host:port`).
    #[arg(long)]
    upstream: String,
    /// Number of brokers (node ids 1..=N).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=100))]
    brokers: i32,
    /// The first controller.
    #[arg(long, default_value_t = 1)]
    controller: i32,
    /// How long brokers keep reporting the previous controller after a move (e.g. `1s`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    stale_for: Duration,
    /// Move the controller to the next node this often (e.g. `300ms`); `0s` keeps it in place.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    flap_every: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(1..=args.brokers).contains(&args.controller) {
        eprintln!("zk-cluster: --controller {} is not in 1..={}", args.controller, args.brokers);
        return ExitCode::from(2);
    }
    let cluster = ZkCluster::start(&args.upstream, ZkOptions { brokers: args.brokers, stale_for: args.stale_for });
    cluster.move_controller(Some(args.controller));
    let _flapping = (!args.flap_every.is_zero()).then(|| cluster.flap(args.flap_every));

    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "bootstrap {}", cluster.bootstrap()).and_then(|()| stdout.flush()).is_err() {
        return ExitCode::FAILURE;
    }

    let signals = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("signal runtime");
    let stopped_by = signals.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    });
    eprintln!(
        "zk-cluster: {stopped_by}: stopping; the front ends sent {} NOT_CONTROLLER answers",
        cluster.not_controller_answers()
    );
    ExitCode::SUCCESS
}
