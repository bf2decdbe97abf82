//! Entry point: parse and validate options, set up logging and metrics, run until a signal; or,
//! as `kafka-sidecar inject`, add the sidecar to Kubernetes manifests and exit.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use kafka_sidecar::config::{Config, LogFormat, Settings};
use kafka_sidecar::{client_auth, inject, server, telemetry};
use tracing_subscriber::EnvFilter;

/// Exit code for invalid configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let flags = match parse_args() {
        Ok(Command::Run(flags)) => *flags,
        Ok(Command::Inject(args)) => return inject::main(&args),
        Ok(Command::HashPassword(args)) => return client_auth::hash_password::main(&args),
        Err(error) => {
            // `--help` and `--version` print to stdout and succeed; anything else is a usage error.
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let check_only = flags.check_config;
    let loaded = Config::load(flags, |name| std::env::var_os(name));
    let config = match loaded.and_then(|config| client_auth::check_files(&config).map(|()| config)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("kafka-sidecar: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if check_only {
        // A closed stdout (`| head`) is no reason to fail the check.
        let _ = write!(std::io::stdout(), "# valid; the effective settings:\n{}", config.effective_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let metrics = match telemetry::install() {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("kafka-sidecar: cannot install metrics recorder: {error}");
            return ExitCode::FAILURE;
        }
    };
    client_auth::announce(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .thread_name("sidecar-worker")
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kafka-sidecar: cannot start runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config, metrics, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kafka-sidecar failed");
            ExitCode::FAILURE
        }
    }
}

/// What the command line asks for.
enum Command {
    /// Run the proxy with these flags.
    Run(Box<Settings>),
    /// `kafka-sidecar inject …`.
    Inject(inject::Args),
    /// `kafka-sidecar hash-password USER`.
    HashPassword(client_auth::hash_password::Args),
}

/// The proxy's flags, or the `inject` subcommand with its own; the two do not mix.
fn parse_args() -> Result<Command, clap::Error> {
    let cli = Settings::cli()
        .subcommand(inject::Args::command())
        .subcommand(client_auth::hash_password::Args::command())
        .args_conflicts_with_subcommands(true)
        .disable_help_subcommand(true)
        .propagate_version(true);
    let matches = cli.try_get_matches_from(std::env::args_os())?;
    match matches.subcommand() {
        Some(("inject", sub)) => Ok(Command::Inject(inject::Args::from_arg_matches(sub)?)),
        Some(("hash-password", sub)) => {
            Ok(Command::HashPassword(client_auth::hash_password::Args::from_arg_matches(sub)?))
        }
        _ => Ok(Command::Run(Box::new(Settings::from_arg_matches(&matches)?))),
    }
}

fn init_logging(config: &Config) {
    // aws-config warns on every failed credential load; the sidecar reports each cause once itself.
    let default = format!("aws_config=error,{}", config.log_level);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal, and not when NO_COLOR asks for none (no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
