//! The Kubernetes manifests as the cluster would see them: rendered with `kubectl kustomize` and
//! validated offline against Kubernetes' schemas.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::clients::python_bin;
use crate::files::repo_root;
use crate::run::expect_success;

/// A tool installed into the test venv by scripts/setup.sh (e.g. hadolint, kubernetes-validate).
pub fn venv_tool(name: &str) -> PathBuf {
    python_bin().parent().expect("venv bin").join(name)
}

/// `kubectl kustomize` of a directory of the repository (e.g. `deploy/kubernetes/base`).
pub fn kustomize(dir: &str) -> String {
    let rendered =
        Command::new("kubectl").arg("kustomize").arg(repo_root().join(dir)).output().expect("run kubectl kustomize");
    expect_success(&format!("kubectl kustomize {dir}"), &rendered)
}

/// Panics unless every document of the YAML file `file` validates strictly (no unknown fields)
/// against the schemas of Kubernetes `version` (e.g. "1.30.0"), offline, with kubernetes-validate.
pub fn expect_valid_manifests(what: &str, file: &Path, version: &str) {
    let validated = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    let report = String::from_utf8_lossy(&validated.stdout).into_owned() + &String::from_utf8_lossy(&validated.stderr);
    let failures: Vec<&str> = report.lines().filter(|l| l.contains("ERROR") || l.contains("failed")).collect();
    assert!(validated.status.success() && failures.is_empty(), "{what} against Kubernetes {version}:\n{report}");
}
