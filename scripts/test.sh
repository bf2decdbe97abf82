#!/usr/bin/env bash
# The whole test suite: installs what the integration tests need (scripts/setup.sh), then runs
# `cargo test --all-targets`, a short fuzz run of every target (scripts/fuzz.sh, 60 s each),
# `cargo clippy --all-targets --all-features -- -D warnings` and `cargo fmt --check`.
# Every step runs even when an earlier one fails; the exit status is non-zero if any failed.
#
# Environment:
#   KAFKA_SIDECAR_CACHE         where setup.sh installs tools (default ~/.cache/kafka-sidecar)
#   KAFKA_SIDECAR_TEST_TIMEOUT  time limit of `cargo test` (default 45m, as for timeout(1))
#   KAFKA_SIDECAR_FUZZ_SECONDS  how long each fuzz target runs (default 60)
#   Arguments are passed on to `cargo test` (e.g. a test name filter after `--`).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
CACHE="${KAFKA_SIDECAR_CACHE:-$HOME/.cache/kafka-sidecar}"

bash scripts/setup.sh

export KAFKA_SIDECAR_TANSU="$CACHE/tansu-0.6.0/bin/tansu"
export KAFKA_SIDECAR_PYTHON="$CACHE/venv/bin/python"
export KAFKA_SIDECAR_NODE_MODULES="$CACHE/kafkajs-2.2.4/node_modules"
export PYTHONDONTWRITEBYTECODE=1

failed=()
run_step() {
    local name="$1"
    shift
    printf '\n==> %s\n' "$*"
    local start=$SECONDS
    if "$@"; then
        printf '==> %s: ok (%ss)\n' "$name" "$((SECONDS - start))"
    else
        local rc=$?
        printf '==> %s: FAILED with status %s (%ss)\n' "$name" "$rc" "$((SECONDS - start))"
        failed+=("$name")
    fi
}

run_step "cargo test" timeout --kill-after=30s "${KAFKA_SIDECAR_TEST_TIMEOUT:-45m}" \
    cargo test --all-targets --no-fail-fast "$@"
run_step "fuzz" bash scripts/fuzz.sh "${KAFKA_SIDECAR_FUZZ_SECONDS:-60}"
run_step "cargo clippy" cargo clippy --all-targets --all-features -- -D warnings
run_step "cargo fmt" cargo fmt --check

if [ "${#failed[@]}" -gt 0 ]; then
    printf '\ntest.sh: failed: %s\n' "${failed[*]}" >&2
    exit 1
fi
printf '\ntest.sh: all steps passed\n'
