//! Kafka clients run to completion against a bootstrap address: kcat and the Python scripts of
//! `tests/clients/` (confluent-kafka, kafka-python, aiokafka), each with a time limit.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::files::repo_root;
use crate::run::{expect_success, required_env_path, run_with_input, run_with_timeout};

/// Default time limit for kcat and the Python client scripts.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Path of a script in `tests/clients/`.
pub fn client_script(script: &str) -> PathBuf {
    repo_root().join("tests").join("clients").join(script)
}

/// The venv python named by `KAFKA_SIDECAR_PYTHON`.
pub fn python_bin() -> PathBuf {
    required_env_path("KAFKA_SIDECAR_PYTHON", "the python of the test venv (tests/clients/requirements.txt)")
}

/// A command running `tests/clients/<script>` with `args` on the venv python, unbuffered.
pub fn python_command(script: &str, args: &[&str]) -> Command {
    let path = client_script(script);
    assert!(path.is_file(), "no client script {}", path.display());
    let mut cmd = Command::new(python_bin());
    cmd.arg(path).args(args).env("PYTHONUNBUFFERED", "1").env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Runs a Python script of the repository (path relative to its root) with the venv python.
pub fn python_file(path: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(python_bin());
    cmd.arg(repo_root().join(path)).args(args).env("PYTHONDONTWRITEBYTECODE", "1");
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

fn kcat_command(args: &[&str]) -> Command {
    let bin = std::env::var_os("KAFKA_SIDECAR_KCAT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("kcat"));
    let mut cmd = Command::new(bin);
    cmd.args(args);
    cmd
}

/// Runs kcat with `args` (stdin closed); killed after [`CLIENT_TIMEOUT`].
pub fn kcat(args: &[&str]) -> Output {
    kcat_with_timeout(args, CLIENT_TIMEOUT)
}

pub fn kcat_with_timeout(args: &[&str], timeout: Duration) -> Output {
    run_with_timeout(kcat_command(args), timeout)
}

/// Runs kcat with `input` on its stdin (e.g. `-P` to produce one message per line).
pub fn kcat_with_input(args: &[&str], input: &str) -> Output {
    run_with_input(kcat_command(args), Some(input), CLIENT_TIMEOUT)
}
