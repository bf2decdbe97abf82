//! Shipping checks: the Dockerfile lints clean, every Kubernetes overlay renders, validates
//! against the Kubernetes schemas offline and keeps the security and scraping policy, its config
//! is accepted by the sidecar, and a statically linked build of the sidecar serves real clients.

use std::process::Command;

use kafka_sidecar_test_support as support;
use support::{Sidecar, Tansu, expect_success, expect_valid_manifests, kcat, kustomize, temp_path, venv_tool};

const OVERLAYS: [&str; 4] = ["base", "overlays/msk", "overlays/in-cluster", "overlays/classic-sidecar"];

#[test]
fn dockerfile_passes_hadolint() {
    let output = Command::new(venv_tool("hadolint"))
        .arg(support::repo_root().join("Dockerfile"))
        .output()
        .expect("run hadolint");
    expect_success("hadolint Dockerfile", &output);
}

#[test]
fn every_overlay_renders_validates_and_keeps_the_policy() {
    for overlay in OVERLAYS {
        let yaml = kustomize(&format!("deploy/kubernetes/{overlay}"));
        let file = temp_path(&format!("{}.yaml", overlay.replace('/', "-")));
        std::fs::write(&file, &yaml).unwrap();

        // The native sidecar needs Kubernetes 1.29; the classic variant also runs on 1.27.
        let versions: &[&str] = if overlay.ends_with("classic-sidecar") { &["1.27.0", "1.30.0"] } else { &["1.30.0"] };
        for version in versions {
            expect_valid_manifests(overlay, &file, version);
        }

        let config = temp_path(&format!("{}.toml", overlay.replace('/', "-")));
        let policy = support::python_file(
            "tests/deploy/check_manifests.py",
            &[file.to_str().unwrap(), config.to_str().unwrap()],
        );
        expect_success(&format!("policy check of {overlay}"), &policy);

        let checked = support::sidecar_command().arg("--config").arg(&config).arg("--check-config").output().unwrap();
        expect_success(&format!("the sidecar accepts the config of {overlay}"), &checked);
    }
}

#[test]
fn policy_check_fails_when_a_rule_is_broken() {
    let yaml = kustomize("deploy/kubernetes/base")
        .replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
        .replace("prometheus.istio.io/merge-metrics: \"false\"", "prometheus.istio.io/merge-metrics: \"true\"");
    let file = temp_path("broken.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config = temp_path("broken.toml");
    let policy =
        support::python_file("tests/deploy/check_manifests.py", &[file.to_str().unwrap(), config.to_str().unwrap()]);
    assert!(!policy.status.success());
    let out = String::from_utf8_lossy(&policy.stdout);
    assert!(out.contains("readOnlyRootFilesystem") && out.contains("merging is off"), "{out}");
}

/// The image holds one statically linked binary and nothing else. The musl target the Dockerfile
/// uses cannot be installed here, so this builds the same code statically linked against glibc
/// (`crt-static`) and runs it as the image would: alone, against a real broker. (tests/image.rs
/// puts the same build into the image and runs that.)
#[test]
fn static_binary_serves_real_clients() {
    let binary = support::static_sidecar_binary();
    let tansu = Tansu::start();
    let sidecar = Sidecar::builder(&tansu.addr()).binary(&binary).start();
    let listing = expect_success("kcat -L", &kcat(&["-b", &sidecar.bootstrap(), "-L"]));
    assert!(listing.contains(&sidecar.broker_addr(111)), "{listing}");
}
