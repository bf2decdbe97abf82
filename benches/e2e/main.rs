//! Tools for the end-to-end benchmark (`scripts/bench.sh`), one binary with four commands:
//!
//! - `broker`: a minimal broker stand-in that answers ApiVersions, Metadata, FindCoordinator,
//!   ListOffsets, Produce and Fetch at once from memory, so that the proxy in front of it, not
//!   the broker, limits throughput;
//! - `latency`: one connection sending requests at a fixed rate, one at a time, printing the
//!   latency percentiles;
//! - `load`: many connections each keeping several Produce requests in flight, printing what
//!   moved;
//! - `slow-fetch`: many connections each sending one large Produce request and reading a Fetch
//!   answer of the same size slowly (the memory phase), checking and printing what moved.
//!
//! Every command prints one JSON object on stdout. Without a command (as `cargo bench` and
//! `cargo test --all-targets` run every bench target) it does nothing.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod broker;
#[path = "../common/mod.rs"]
mod common;
mod latency;
mod load;
mod slow_fetch;

#[derive(Debug, Parser)]
#[command(name = "e2e", about = "End-to-end benchmark tools for scripts/bench.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Broker(broker::Args),
    Latency(latency::Args),
    Load(load::Args),
    SlowFetch(slow_fetch::Args),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 || (args[1].starts_with("--") && args[1] != "--help") {
        println!("e2e: tools for scripts/bench.sh (broker, latency, load, slow-fetch); nothing to run on its own");
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Broker(args) => broker::run(args),
        Command::Latency(args) => latency::run(args),
        Command::Load(args) => load::run(args),
        Command::SlowFetch(args) => slow_fetch::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("e2e: {error:#}");
            ExitCode::FAILURE
        }
    }
}
