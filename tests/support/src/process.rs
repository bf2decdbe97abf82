//! Figures of a running process read from `/proc`: resident memory, open files, threads, and any
//! field of its status.

use std::fs;

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    proc_status_field(pid, field)
        .and_then(|value| value.strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The number of threads of process `pid`.
pub fn threads(pid: u32) -> u64 {
    proc_status_field(pid, "Threads")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Threads in /proc/{pid}/status"))
}

/// A field of `/proc/<pid>/status` as it stands (`Uid`, `CapEff`); `None` if there is none.
pub fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| Some(line.strip_prefix(field)?.strip_prefix(':')?.trim().to_owned()))
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Open file descriptors of process `pid` (0 once it is gone).
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0)
}
