//! The image, run as deployed: the Dockerfile's runtime stage, built with `--target
//! runtime-prebuilt` from the statically linked build of the sidecar (the Rust builder image is
//! not needed), run by podman with the restrictions of the Kubernetes manifests (read-only root
//! file system, every capability dropped, user 65532, no privilege escalation) and the base
//! overlay's config.toml mounted read-only, as the ConfigMap is. In front of a Tansu broker it
//! reaches by host name (`localhost`, resolved inside the image), it serves `kcat -L` and a
//! produce/consume round trip and answers `/readyz` 200; `podman stop` (SIGTERM) makes it drain
//! and exit 0. The test prints the image's size and holds it under 18 MiB.
//!
//! Needs podman (`KAFKA_SIDECAR_PODMAN`, or `podman` on PATH) and runc; scripts/setup.sh installs
//! both. Podman runs with runc and cgroupfs and with ulimits inside common hard limits, which also
//! suits sandboxed machines. Where podman is missing or cannot run containers, the test prints
//! `SKIPPED: podman cannot run containers here: <reason>` (past the harness's capture, so a
//! plain `cargo test` shows it) and returns without checking anything.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kafka_sidecar_test_support as support;
use support::{Tansu, expect_success, free_port, free_port_base, kcat, kcat_with_input, run_with_timeout, test_dir};

/// Global options of every podman command.
const PODMAN_OPTIONS: [&str; 3] = ["--runtime", "runc", "--cgroup-manager=cgroupfs"];

/// `podman run` options of every container: the manifests' restrictions, the host's network (the
/// sidecar listens on loopback, as in a pod), and ulimits within common hard limits.
const RUN_OPTIONS: [&str; 14] = [
    "--network=host",
    "--read-only",
    "--cap-drop=ALL",
    "--user",
    "65532",
    "--security-opt",
    "no-new-privileges",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=4096:4096",
    "--log-driver",
    "k8s-file",
    "--pull=never",
];

/// The podman binary: `KAFKA_SIDECAR_PODMAN`, or `podman` on PATH.
fn podman_bin() -> String {
    std::env::var("KAFKA_SIDECAR_PODMAN").unwrap_or_else(|_| "podman".to_owned())
}

fn podman(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(podman_bin());
    cmd.args(PODMAN_OPTIONS).args(args);
    run_with_timeout(cmd, timeout)
}

fn podman_ok(what: &str, args: &[&str], timeout: Duration) -> String {
    expect_success(what, &podman(args, timeout))
}

fn output_text(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    text.trim().to_owned()
}

/// Why podman cannot run containers here, if it cannot: no podman, `podman info` failing, or a
/// container made of `binary` alone failing to run with [`RUN_OPTIONS`].
fn podman_cannot_run(binary: Option<&Path>) -> Option<String> {
    let info = match Command::new(podman_bin())
        .args(PODMAN_OPTIONS)
        .args(["info", "--format", "{{.Host.OCIRuntime.Name}}"])
        .output()
    {
        Ok(info) => info,
        Err(e) => {
            return Some(format!(
                "`{}` cannot be started: {e} (scripts/setup.sh installs podman and runc)",
                podman_bin()
            ));
        }
    };
    if !info.status.success() {
        return Some(format!("`podman info` failed: {}", output_text(&info)));
    }
    let binary = binary?;
    let rootfs = test_dir().join("probe-rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    fs::copy(binary, rootfs.join("kafka-sidecar")).unwrap();
    let rootfs = rootfs.to_str().unwrap();
    let mut args = vec!["run", "--rm"];
    args.extend(RUN_OPTIONS);
    args.retain(|a| *a != "--pull=never");
    args.extend(["--rootfs", rootfs, "/kafka-sidecar", "--version"]);
    let probe = podman(&args, Duration::from_secs(120));
    if !probe.status.success() || !String::from_utf8_lossy(&probe.stdout).contains("kafka-sidecar") {
        return Some(format!("a container holding only the static binary did not run: {}", output_text(&probe)));
    }
    None
}

/// Writes `line` to stderr past the test harness's capture, so that `cargo test` shows it even
/// when the test passes.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn skipped(reason: &str) {
    say(&format!("SKIPPED: podman cannot run containers here: {reason}"));
}

/// The image and the container, removed when dropped.
struct Cleanup {
    image: String,
    container: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = podman(&["logs", &self.container], Duration::from_secs(30));
            eprintln!("--- container logs ---\n{}", output_text(&logs));
        }
        podman(&["rm", "--force", "--ignore", &self.container], Duration::from_secs(60));
        podman(&["rmi", "--force", &self.image], Duration::from_secs(60));
    }
}

/// `Name:\tvalue` of `/proc/<pid>/status`.
fn proc_status(pid: &str, field: &str) -> String {
    let pid = pid.parse().ok();
    pid.and_then(|pid| support::process::proc_status_field(pid, field)).unwrap_or_default()
}

/// The build context of `--target runtime-prebuilt`: prebuilt/kafka-sidecar and
/// prebuilt/ca-certificates.crt, with the modes they have in the image.
fn prebuilt_context(binary: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let context = test_dir().join("image-context");
    let prebuilt = context.join("prebuilt");
    fs::create_dir_all(&prebuilt).unwrap();
    fs::copy(binary, prebuilt.join("kafka-sidecar")).unwrap();
    fs::set_permissions(prebuilt.join("kafka-sidecar"), fs::Permissions::from_mode(0o555)).unwrap();
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    assert!(bundle.is_file(), "{} is missing (Debian package ca-certificates)", bundle.display());
    fs::copy(bundle, prebuilt.join("ca-certificates.crt")).unwrap();
    fs::set_permissions(prebuilt.join("ca-certificates.crt"), fs::Permissions::from_mode(0o444)).unwrap();
    context
}

/// Polls `GET /readyz` on `admin` until it answers 200; returns the last status seen.
fn wait_ready(admin: &str, timeout: Duration) -> u16 {
    support::http::wait_for_status(admin, "/readyz", 200, timeout).0
}

#[test]
fn image_runs_as_deployed_and_drains_on_stop() {
    if let Some(reason) = podman_cannot_run(None) {
        return skipped(&reason);
    }
    let binary = support::static_sidecar_binary();
    if let Some(reason) = podman_cannot_run(Some(&binary)) {
        return skipped(&reason);
    }

    let id = format!("{}-{}", std::process::id(), free_port());
    let cleanup =
        Cleanup { image: format!("localhost/kafka-sidecar-test:{id}"), container: format!("kafka-sidecar-test-{id}") };
    let (image, container) = (cleanup.image.as_str(), cleanup.container.as_str());

    let context = prebuilt_context(&binary);
    let dockerfile = support::repo_root().join("Dockerfile");
    podman_ok(
        "podman build --target runtime-prebuilt",
        &[
            "build",
            "--layers=false",
            "--target",
            "runtime-prebuilt",
            "-f",
            dockerfile.to_str().unwrap(),
            "-t",
            image,
            context.to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );
    let size: u64 = podman_ok(
        "podman image inspect",
        &["image", "inspect", "--format", "{{.Size}}", image],
        Duration::from_secs(60),
    )
    .trim()
    .parse()
    .expect("image size in bytes");
    let user = podman_ok(
        "podman image inspect",
        &["image", "inspect", "--format", "{{.Config.User}}", image],
        Duration::from_secs(60),
    );
    assert_eq!(user.trim(), "65532:65532", "the image's user");
    let report = format!("image {image}: {size} bytes ({:.1} MiB)", size as f64 / (1024.0 * 1024.0));
    say(&report);
    // One stripped static binary and a CA bundle; with symbols left in it was 20.7 MiB.
    assert!(size < 18 << 20, "{report}: over 18 MiB");

    // The base overlay's settings, mounted read-only where the ConfigMap is; the environment
    // points them at the test's broker (by host name) and free ports.
    let config_dir = test_dir().join("config");
    fs::create_dir_all(&config_dir).unwrap();
    fs::copy(support::repo_root().join("deploy/kubernetes/base/config.toml"), config_dir.join("config.toml")).unwrap();
    let tansu = Tansu::start();
    let bootstrap_port = free_port();
    let broker_port_base = free_port_base(support::BROKER_PORT_SPAN);
    let admin = format!("127.0.0.1:{}", free_port());
    let mount = format!("{}:/etc/kafka-sidecar:ro", config_dir.display());
    let env = [
        format!("KAFKA_SIDECAR_BOOTSTRAP_SERVER=localhost:{}", tansu.port()),
        format!("KAFKA_SIDECAR_BOOTSTRAP_PORT={bootstrap_port}"),
        format!("KAFKA_SIDECAR_BROKER_PORT_BASE={broker_port_base}"),
        format!("KAFKA_SIDECAR_ADMIN_LISTEN={admin}"),
        "RUST_LOG=info".to_owned(),
    ];
    let mut args = vec!["run", "--detach", "--name", container, "--volume", &mount];
    args.extend(RUN_OPTIONS);
    for var in &env {
        args.extend(["--env", var.as_str()]);
    }
    args.extend([image, "--config", "/etc/kafka-sidecar/config.toml"]);
    podman_ok("podman run", &args, Duration::from_secs(120));

    assert_eq!(wait_ready(&admin, Duration::from_secs(60)), 200, "/readyz answers 200 once the metadata is in");

    // The restrictions hold for the sidecar's process.
    let pid =
        podman_ok("podman inspect", &["inspect", "--format", "{{.State.Pid}}", container], Duration::from_secs(60));
    let pid = pid.trim();
    assert!(
        proc_status(pid, "Uid").split_whitespace().all(|uid| uid == "65532"),
        "runs as 65532: {}",
        proc_status(pid, "Uid")
    );
    assert_eq!(proc_status(pid, "CapEff"), "0000000000000000", "no capabilities");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1", "no privilege escalation");

    let bootstrap = format!("127.0.0.1:{bootstrap_port}");
    let listing = expect_success("kcat -L", &kcat(&["-b", &bootstrap, "-L"]));
    let broker = format!("127.0.0.1:{}", broker_port_base + support::TANSU_NODE_ID);
    assert!(listing.contains(&broker), "kcat -L lists the broker at {broker}:\n{listing}");

    support::create_topics(&bootstrap, &["image"], 1);
    let messages: String = (0..5).map(|i| format!("from the image {i}\n")).collect();
    expect_success("kcat -P", &kcat_with_input(&["-b", &bootstrap, "-P", "-t", "image"], &messages));
    let consumed =
        expect_success("kcat -C", &kcat(&["-b", &bootstrap, "-C", "-t", "image", "-o", "beginning", "-e", "-q"]));
    assert_eq!(consumed, messages, "the five messages come back in order");

    // SIGTERM, as the kubelet sends it: the sidecar drains and exits 0 well within the grace
    // period (podman stop would SIGKILL after 30 s).
    let stopping = Instant::now();
    podman_ok("podman stop", &["stop", "--time", "30", container], Duration::from_secs(90));
    let stopped_in = stopping.elapsed();
    let exit_code = podman_ok(
        "podman inspect",
        &["inspect", "--format", "{{.State.ExitCode}}", container],
        Duration::from_secs(60),
    );
    let logs = output_text(&podman(&["logs", container], Duration::from_secs(30)));
    assert!(logs.contains("shutting down: draining client connections"), "the drain is logged:\n{logs}");
    assert!(logs.contains("kafka-sidecar stopped"), "the end is logged:\n{logs}");
    assert_eq!(exit_code.trim(), "0", "exit code after SIGTERM; logs:\n{logs}");
    assert!(stopped_in < Duration::from_secs(25), "stopped within the drain timeout ({stopped_in:?})");
    say(&format!("podman stop: drained and exited 0 in {stopped_in:?}"));
}
