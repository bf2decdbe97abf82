#!/usr/bin/env bash
# The soak (tests/soak.rs): produce, consume and admin traffic through a release build of the
# sidecar for an hour, against a ZooKeeper-mode cluster whose controller moves every 5 s and whose
# broker is killed and restarted in every 5-minute cycle. Checks every cycle (nothing acknowledged
# lost or duplicated, no NOT_CONTROLLER reaching a client, no client connection left behind) and,
# at the end, that the sidecar's memory, file descriptors and threads did not grow.
# Not part of scripts/test.sh. See docs/reliability.md.
#
#   scripts/soak.sh [SECONDS]        total duration (default 3600)
#
# Environment:
#   KAFKA_SIDECAR_SOAK_CYCLE_SECS  length of a cycle (default 300, at least 90)
#   KAFKA_SIDECAR_SOAK_RATE        messages per second of the producer (default 100)
#   KAFKA_SIDECAR_SOAK_REPORT      JSON-lines report (default target/soak/soak-<UTC time>.jsonl):
#                                  a sample of the sidecar every minute, a line per cycle, and
#                                  the start and end figures
#   KAFKA_SIDECAR_CACHE            where setup.sh installs tools (default ~/.cache/kafka-sidecar)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
CACHE="${KAFKA_SIDECAR_CACHE:-$HOME/.cache/kafka-sidecar}"

seconds="${1:-3600}"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "soak: SECONDS must be a positive whole number" >&2; exit 2; }

bash scripts/setup.sh

export KAFKA_SIDECAR_TANSU="$CACHE/tansu-0.6.0/bin/tansu"
export KAFKA_SIDECAR_PYTHON="$CACHE/venv/bin/python"
export KAFKA_SIDECAR_NODE_MODULES="$CACHE/kafkajs-2.2.4/node_modules"
export PYTHONDONTWRITEBYTECODE=1
export KAFKA_SIDECAR_SOAK_SECS="$seconds"
export KAFKA_SIDECAR_SOAK_REPORT="${KAFKA_SIDECAR_SOAK_REPORT:-$REPO_ROOT/target/soak/soak-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"

echo "soak: ${seconds}s; report: $KAFKA_SIDECAR_SOAK_REPORT"
cargo test --release --test soak -- --ignored --nocapture
