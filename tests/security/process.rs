//! A child process whose stdout and stderr go to one log file; killed when dropped.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support;

/// How long a started process may take to accept connections.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// Files removed with the process (e.g. its configuration).
    extra_files: Vec<PathBuf>,
}

impl Process {
    /// Spawns `cmd` with stdin closed and output to a new log file named after `name`.
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Process {
        let log = support::temp_path(name);
        let file = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let stdout = file.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null()).stdout(Stdio::from(stdout)).stderr(Stdio::from(file)).env("NO_COLOR", "1");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Process { name: name.to_string(), child, log, extra_files: Vec::new() }
    }

    /// Removes `path` when the process is dropped.
    pub(crate) fn owns_file(&mut self, path: PathBuf) {
        self.extra_files.push(path);
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(crate) fn logs(&self) -> String {
        fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub(crate) fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
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

    /// The exit status if the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Waits until something listens on `127.0.0.1:port` (checked in `/proc/net/tcp`, without
    /// connecting, so that the process logs no probe connection) while the process runs; on
    /// failure, why.
    pub(crate) fn wait_for_listen(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Err(format!("{} exited early with {status}", self.name));
            }
            if listening(port) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}", self.name))
    }
}

/// Whether a socket listens on `127.0.0.1:port` (or any IPv4 address), per `/proc/net/tcp`.
pub(crate) fn listening(port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return support::wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_millis(100));
    };
    let wanted = [format!("0100007F:{port:04X}"), format!("00000000:{port:04X}")];
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && fields[3] == "0A" && wanted.iter().any(|w| w == fields[1])
    })
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        for path in &self.extra_files {
            let _ = fs::remove_file(path);
        }
        support::report_output_on_panic(&self.name, &self.log);
        let _ = fs::remove_file(&self.log);
    }
}

/// Whether a start failure looks like a port taken between choosing and binding it.
pub(crate) fn port_taken(why: &str) -> bool {
    why.contains("AddrInUse") || why.contains("Address already in use") || why.contains("in use")
}
