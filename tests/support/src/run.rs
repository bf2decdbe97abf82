//! Commands run to completion: output captured, killed after a time limit, and the tools the
//! tests need found through the environment `scripts/setup.sh` prepares.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::child::kill_and_reap;

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
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out_reader = read_all(Box::new(child.stdout.take().unwrap()));
    let err_reader = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                kill_and_reap(&mut child);
                break child.wait().expect("reap child");
            }
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

/// The file named by the environment variable `var`; panics, saying how to get it, unless it
/// exists.
pub(crate) fn required_env_path(var: &str, what: &str) -> PathBuf {
    let value = std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: it names {what}. Run `scripts/setup.sh` and export it, or run the tests with `scripts/test.sh`.")
    });
    let path = PathBuf::from(value);
    assert!(path.is_file(), "{var}={} does not exist: it names {what}. Run `scripts/setup.sh`.", path.display());
    path
}
