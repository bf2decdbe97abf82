//! The Go clients sarama 1.22 and kafka-go 0.2, driven through `tests/clients/go/` (one program,
//! the same command-line shape as the Python and Node clients: `produce`, `consume`, `create`,
//! `delete`, `admin-loop`, one JSON object printed).
//!
//! The program is built once per test process into its directory ([`test_dir`]), offline, in
//! GOPATH mode against the libraries Debian ships under `/usr/share/gocode` (`scripts/setup.sh`
//! installs `golang-go`, `golang-github-shopify-sarama-dev` and
//! `golang-github-segmentio-kafka-go-dev`). Go's build cache lives in
//! `$KAFKA_SIDECAR_CACHE/go-build` (default `~/.cache/kafka-sidecar/go-build`), so a build after
//! the first takes about a second. `go` is taken from `PATH`, or from `KAFKA_SIDECAR_GO`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::clients::CLIENT_TIMEOUT;
use crate::files::{repo_root, test_dir};
use crate::run::{expect_success, run_with_timeout};

/// Where Debian installs Go libraries (`*-dev` packages): a GOPATH.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// The Debian packages the Go client needs, as `scripts/setup.sh` installs them.
const PACKAGES: &str = "golang-go golang-github-shopify-sarama-dev golang-github-segmentio-kafka-go-dev";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoLibrary {
    Sarama,
    KafkaGo,
}

impl GoLibrary {
    pub const ALL: [GoLibrary; 2] = [GoLibrary::KafkaGo, GoLibrary::Sarama];

    /// The name the program's `--client` takes.
    pub fn name(self) -> &'static str {
        match self {
            GoLibrary::Sarama => "sarama",
            GoLibrary::KafkaGo => "kafka-go",
        }
    }

    /// Runs `command` against `bootstrap` with `args`; killed after [`CLIENT_TIMEOUT`].
    pub fn run(self, command: &str, bootstrap: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(go_client());
        cmd.args([command, "--client", self.name(), "--bootstrap", bootstrap]).args(args);
        run_with_timeout(cmd, CLIENT_TIMEOUT)
    }

    /// Like [`GoLibrary::run`]; panics unless the command succeeded, and returns its JSON.
    pub fn run_ok(self, command: &str, bootstrap: &str, args: &[&str]) -> Value {
        let what = format!("{} {command} {}", self.name(), args.join(" "));
        let out = expect_success(&what, &self.run(command, bootstrap, args));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
    }
}

/// The built program, built on first use.
pub fn go_client() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build)
}

fn go_tool() -> PathBuf {
    std::env::var_os("KAFKA_SIDECAR_GO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("go"))
}

fn build() -> PathBuf {
    let go = go_tool();
    let version = Command::new(&go).arg("version").output();
    let version = match version {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!(
            "`{}` not found: the Go client tests need Debian's {PACKAGES}. Run `scripts/setup.sh` (or set \
             KAFKA_SIDECAR_GO to a go binary).",
            go.display()
        ),
    };
    for library in ["github.com/Shopify/sarama", "github.com/segmentio/kafka-go"] {
        let dir = Path::new(DEBIAN_GOPATH).join("src").join(library);
        assert!(
            dir.is_dir(),
            "{} is missing: the Go client tests need Debian's {PACKAGES}. Run `scripts/setup.sh`.",
            dir.display()
        );
    }
    let source = repo_root().join("tests/clients/go");
    let binary = test_dir().join("go-client");
    let mut cmd = Command::new(&go);
    cmd.args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", DEBIAN_GOPATH)
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOCACHE", go_build_cache());
    let started = std::time::Instant::now();
    let output = run_with_timeout(cmd, Duration::from_secs(300));
    expect_success(&format!("go build {} ({version})", source.display()), &output);
    eprintln!("[support] built {} with {version} in {:?}", binary.display(), started.elapsed());
    binary
}

/// Go's build cache: beside the tools `scripts/setup.sh` installs, or in the test directory.
fn go_build_cache() -> PathBuf {
    let cache = std::env::var_os("KAFKA_SIDECAR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/kafka-sidecar")));
    cache.map_or_else(|| test_dir().join("go-build"), |dir| dir.join("go-build"))
}
