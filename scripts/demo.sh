#!/usr/bin/env bash
# A local end-to-end run: starts an in-memory Kafka broker (Tansu) and kafka-sidecar in front of
# it, creates a topic through the sidecar, lists the cluster with kcat, produces a few messages
# with kcat and consumes them back, then stops both processes.
#
# Ports (all on 127.0.0.1) can be changed through the environment:
#   DEMO_TANSU_PORT        the broker                      (default: a free port)
#   DEMO_BOOTSTRAP_PORT    the sidecar's bootstrap port    (default 19092)
#   DEMO_BROKER_PORT_BASE  broker node N on base + N       (default 19100; Tansu is node 111)
#   DEMO_ADMIN_PORT        metrics and health endpoints    (default 19080)
#   DEMO_TOPIC             topic to create and use         (default demo)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
CACHE="${KAFKA_SIDECAR_CACHE:-$HOME/.cache/kafka-sidecar}"
TANSU="$CACHE/tansu-0.6.0/bin/tansu"
PYTHON="$CACHE/venv/bin/python"
export PYTHONDONTWRITEBYTECODE=1

BOOTSTRAP_PORT="${DEMO_BOOTSTRAP_PORT:-19092}"
BROKER_PORT_BASE="${DEMO_BROKER_PORT_BASE:-19100}"
ADMIN_PORT="${DEMO_ADMIN_PORT:-19080}"
TOPIC="${DEMO_TOPIC:-demo}"
TANSU_NODE_ID=111

say() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

# True when something accepts connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds pid what
    local port="$1" deadline=$((SECONDS + $2)) pid="$3" what="$4"
    until port_open "$port"; do
        kill -0 "$pid" 2>/dev/null || die "$what exited before listening on port $port"
        [ "$SECONDS" -lt "$deadline" ] || die "$what did not listen on port $port within $2s"
        sleep 0.1
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

say "setup"
bash scripts/setup.sh demo

say "cargo build --release"
cargo build --release
SIDECAR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/kafka-sidecar"
[ -x "$SIDECAR" ] || die "cargo build did not produce $SIDECAR"

[ $((BROKER_PORT_BASE + TANSU_NODE_ID)) -le 65535 ] ||
    die "DEMO_BROKER_PORT_BASE=$BROKER_PORT_BASE leaves no port for broker $TANSU_NODE_ID (base + $TANSU_NODE_ID > 65535)"
TANSU_PORT="${DEMO_TANSU_PORT:-$(free_port)}"
for port in "$TANSU_PORT" "$BOOTSTRAP_PORT" "$((BROKER_PORT_BASE + TANSU_NODE_ID))" "$ADMIN_PORT"; do
    ! port_open "$port" || die "port $port is already in use; pick others with DEMO_*_PORT (see the top of $0)"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kafka-sidecar-demo.XXXXXX")"
TANSU_PID=""
SIDECAR_PID=""
cleanup() {
    local rc=$?
    [ -z "$SIDECAR_PID" ] || kill "$SIDECAR_PID" 2>/dev/null || true
    [ -z "$TANSU_PID" ] || kill "$TANSU_PID" 2>/dev/null || true
    [ -z "$SIDECAR_PID" ] || wait "$SIDECAR_PID" 2>/dev/null || true
    [ -z "$TANSU_PID" ] || wait "$TANSU_PID" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        for log in "$WORK"/*.log; do
            [ -f "$log" ] || continue
            printf '\n--- %s (last 30 lines) ---\n' "$(basename "$log")" >&2
            tail -n 30 "$log" >&2
        done
        printf '\ndemo: failed; logs kept in %s\n' "$WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting Tansu on 127.0.0.1:$TANSU_PORT (in-memory storage)"
NO_COLOR=1 "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --storage-engine memory://tansu/ \
    </dev/null >"$WORK/tansu.log" 2>&1 &
TANSU_PID=$!
wait_port "$TANSU_PORT" 30 "$TANSU_PID" "Tansu"

say "starting kafka-sidecar: bootstrap 127.0.0.1:$BOOTSTRAP_PORT, broker $TANSU_NODE_ID on 127.0.0.1:$((BROKER_PORT_BASE + TANSU_NODE_ID)), admin 127.0.0.1:$ADMIN_PORT"
NO_COLOR=1 "$SIDECAR" \
    --bootstrap-server "127.0.0.1:$TANSU_PORT" \
    --listen-host 127.0.0.1 \
    --bootstrap-port "$BOOTSTRAP_PORT" \
    --broker-port-base "$BROKER_PORT_BASE" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" \
    </dev/null >"$WORK/sidecar.log" 2>&1 &
SIDECAR_PID=$!
wait_port "$BOOTSTRAP_PORT" 30 "$SIDECAR_PID" "kafka-sidecar"
BOOTSTRAP="127.0.0.1:$BOOTSTRAP_PORT"

say "creating topic '$TOPIC' through the sidecar (confluent-kafka AdminClient)"
"$PYTHON" tests/clients/admin.py --bootstrap "$BOOTSTRAP" create "$TOPIC" --partitions 1

say "kcat -b $BOOTSTRAP -L"
kcat -b "$BOOTSTRAP" -L -m 15

say "producing 5 messages with kcat through the sidecar"
for i in 1 2 3 4 5; do
    printf 'hello from kafka-sidecar demo, message %d\n' "$i"
done | kcat -b "$BOOTSTRAP" -P -t "$TOPIC" -m 15
echo "produced 5 messages to $TOPIC"

say "consuming them back: kcat -C -e -o beginning"
kcat -b "$BOOTSTRAP" -C -t "$TOPIC" -e -o beginning -q -m 15 \
    -f 'partition %p offset %o: %s\n' | tee "$WORK/consumed.txt"
count="$(wc -l <"$WORK/consumed.txt")"
[ "$count" -eq 5 ] || die "expected 5 messages back, got $count"

say "sidecar health and metrics (http://127.0.0.1:$ADMIN_PORT)"
if command -v curl >/dev/null 2>&1; then
    printf 'healthz: %s\n' "$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" || echo 'unavailable')"
    printf 'readyz:  %s\n' "$(curl -sS "http://127.0.0.1:$ADMIN_PORT/readyz" || echo 'unavailable')"
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '!/^#/ && NF && $NF != "0"' | head -n 15 || true
fi

say "demo finished: 5 messages went through kafka-sidecar; stopping the sidecar and Tansu"
