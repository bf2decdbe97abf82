//! A client script of `tests/clients/` running in the background, watched line by line.

use std::io::{BufRead, BufReader};
use std::process::ExitStatus;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::child::{ChildProcess, Pipes};
use crate::clients::python_command;

/// A client script of `tests/clients/` running in the background: its stdout lines arrive on a
/// channel as they are printed, its stderr goes to its log. Killed when dropped.
pub struct Background {
    process: ChildProcess,
    lines: Receiver<String>,
    seen: Vec<String>,
    what: String,
}

impl Background {
    pub fn python(script: &str, args: &[&str]) -> Background {
        let cmd = python_command(script, args);
        let mut process = ChildProcess::spawn_with(script, cmd, Pipes { stdin: false, stdout: true });
        let stdout = process.take_stdout().expect("stdout pipe");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { process, lines, seen: Vec::new(), what: format!("{script} {}", args.join(" ")) }
    }

    /// The stdout lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Waits for a stdout line matching `pred`; `None` on timeout or when the script ended.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    pub fn stderr_text(&self) -> String {
        self.process.logs()
    }

    /// Waits for the script to exit; returns its status and last JSON line (its result).
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Value) {
        let status = self
            .process
            .wait_exit(timeout)
            .unwrap_or_else(|| panic!("{} did not finish within {timeout:?}:\n{}", self.what, self.stderr_text()));
        // The reader thread ends at EOF, after the last line.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        if !status.success() {
            eprintln!("{} ended with {status}; its stderr:\n{}", self.what, self.stderr_text());
        }
        let last = self.seen.iter().rev().find_map(|line| serde_json::from_str::<Value>(line).ok());
        let result = last.unwrap_or_else(|| {
            panic!("{} printed no result ({status}):\n{:?}\n{}", self.what, self.seen, self.stderr_text())
        });
        (status, result)
    }
}
