//! [`ChildProcess`]: the one guard for a process a test starts. It owns the process's log file
//! and the files handed to it, kills and reaps the process when dropped, and prints the log's
//! tail when a test panics. It never decides when a process is ready: owners say what to wait
//! for ([`ChildProcess::wait_until`]).

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::files::{keep_test_files, read_text, tail, temp_path};

/// How long a started process may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the log printed when a test panics, unless [`ChildProcess::tail_on_panic`] says
/// otherwise.
const TAIL_LINES: usize = 40;

/// Standard streams a [`ChildProcess`] gets as pipes. By default stdin is closed and stdout and
/// stderr both go to the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pipes {
    /// stdin is a pipe held open until [`ChildProcess::close_stdin`] or the drop, so that a
    /// program can wait for its end.
    pub stdin: bool,
    /// stdout is a pipe for [`ChildProcess::take_stdout`]; only stderr goes to the log.
    pub stdout: bool,
}

/// A running child process with its output in a log file in the test directory; killed and
/// reaped when dropped.
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    owned_files: Vec<PathBuf>,
    tail_lines: usize,
}

impl ChildProcess {
    /// Spawns `cmd` with stdin closed and stdout and stderr to a new log named after `name`.
    pub fn spawn(name: &str, cmd: Command) -> ChildProcess {
        ChildProcess::spawn_with(name, cmd, Pipes::default())
    }

    /// Like [`ChildProcess::spawn`], with the streams `pipes` names as pipes.
    pub fn spawn_with(name: &str, mut cmd: Command, pipes: Pipes) -> ChildProcess {
        let log = temp_path(name);
        let file = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let stdout =
            if pipes.stdout { Stdio::piped() } else { Stdio::from(file.try_clone().expect("clone log file handle")) };
        cmd.stdin(if pipes.stdin { Stdio::piped() } else { Stdio::null() }).stdout(stdout).stderr(Stdio::from(file));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}; run scripts/setup.sh?): {e}"));
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        ChildProcess {
            name: name.to_owned(),
            child,
            log,
            stdin,
            stdout,
            owned_files: Vec::new(),
            tail_lines: TAIL_LINES,
        }
    }

    /// How many lines of the log a panicking test prints.
    pub fn tail_on_panic(&mut self, lines: usize) {
        self.tail_lines = lines;
    }

    /// Removes `path` when the process is dropped (e.g. its configuration).
    pub fn owns_file(&mut self, path: PathBuf) {
        self.owned_files.push(path);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has written to its log so far.
    pub fn logs(&self) -> String {
        read_text(&self.log)
    }

    /// Waits until the log contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The stdout pipe of a process spawned with [`Pipes::stdout`], once.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Closes the stdin pipe of a process spawned with [`Pipes::stdin`].
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Polls `ready` until it holds, while the process runs. On failure, why (the process exited
    /// or `timeout` passed, `what` not done), with the log.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&ChildProcess) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let why = loop {
            if let Some(status) = self.exited() {
                break format!("{} exited early with {status}", self.name);
            }
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break format!("{} did not {what} within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(25));
        };
        Err(format!("{why}\n--- {} output ---\n{}", self.name, self.logs()))
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// Sends `signal` (e.g. `TERM`, `INT`) with the `kill` command. A process that already exited
    /// (a zombie until it is reaped) ignores it.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("run kill -{signal} {pid}: {e}"));
        if !status.success() {
            eprintln!("[support] kill -{signal} {pid} ({}) failed: {status}", self.name);
        }
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Kills `child` unless it has exited, and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.close_stdin();
        self.kill();
        for path in &self.owned_files {
            let _ = fs::remove_file(path);
        }
        if thread::panicking() {
            eprintln!(
                "[support] {} output (last {} lines of {}):\n{}",
                self.name,
                self.tail_lines,
                self.log.display(),
                tail(&self.logs(), self.tail_lines)
            );
        }
        if !keep_test_files() {
            let _ = fs::remove_file(&self.log);
        }
    }
}
