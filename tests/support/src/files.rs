//! Where the tests keep their files: one directory per test process, removed at exit (see the
//! crate's comment), and the repository the tests run from.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::ports::random_u64;

/// The repository's root (this crate lives in its `tests/support/`).
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        crate_dir.parent().and_then(Path::parent).expect("the crate lives in tests/support").to_path_buf()
    })
}

/// Whether `KAFKA_SIDECAR_KEEP_TEST_FILES` asks to keep the test files.
pub(crate) fn keep_test_files() -> bool {
    std::env::var_os("KAFKA_SIDECAR_KEEP_TEST_FILES").is_some()
}

/// This test process's directory for temporary files, made on first use and removed when the
/// process exits.
pub fn test_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("kafka-sidecar-tests");
        remove_dirs_of_exited_processes(&root);
        let dir = root.join(format!("{}-{:016x}", std::process::id(), random_u64()));
        fs::create_dir_all(&dir).expect("create the test directory");
        extern "C" fn remove_test_dir() {
            if let Some(dir) = DIR.get()
                && !keep_test_files()
            {
                let _ = fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registers a plain function without arguments, run once at process exit.
        unsafe { libc::atexit(remove_test_dir) };
        dir
    })
}

/// Removes `<pid>-…` directories under `root` whose process no longer runs.
fn remove_dirs_of_exited_processes(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A uniquely named file in [`test_dir`].
pub fn temp_path(name: &str) -> PathBuf {
    test_dir().join(format!("{name}-{:016x}.log", random_u64()))
}

/// A file's text, lossily decoded; empty if it cannot be read.
pub(crate) fn read_text(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> &str {
    let mut count = 0;
    for (i, b) in text.bytes().enumerate().rev() {
        if b == b'\n' {
            count += 1;
            if count > lines {
                return &text[i + 1..];
            }
        }
    }
    text
}
