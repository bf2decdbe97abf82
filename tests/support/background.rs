//! A client script of `tests/clients/` running in the background, watched line by line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A client script of `tests/clients/` running in the background: its stdout lines arrive on a
/// channel as they are printed, its stderr goes to a file.
pub struct Background {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: PathBuf,
    what: String,
}

impl Background {
    pub fn python(script: &str, args: &[&str]) -> Background {
        let stderr = super::temp_path(script);
        let mut child = Command::new(super::python_bin())
            .arg(super::client_script(script))
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines, seen: Vec::new(), stderr, what: format!("{script} {}", args.join(" ")) }
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
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the script to exit; returns its status and last JSON line (its result).
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Value) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for script") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish within {timeout:?}:\n{}",
                self.what,
                self.stderr_text()
            );
            thread::sleep(Duration::from_millis(50));
        };
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

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !thread::panicking() {
            let _ = std::fs::remove_file(&self.stderr);
        }
    }
}
