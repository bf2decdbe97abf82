#!/usr/bin/env bash
# A local end-to-end run, in two parts:
#   1. a Kafka proxy: an in-memory Kafka broker (Tansu), a three-broker ZooKeeper-mode cluster in
#      front of it (zk-cluster, the tests' fixture from tests/zk/ built as a program), and
#      kafka-sidecar in front of that; a topic is created through the sidecar, kcat lists the
#      cluster and produces five messages, which are consumed back;
#   2. why the sidecar exists: the cluster's controller moves every 300 ms and brokers report the
#      previous controller for a second after each move, as a ZooKeeper-mode cluster does while
#      its controller changes. The same admin calls (topic create + delete with confluent-kafka's
#      AdminClient) go straight to the cluster, where brokers that are not the controller answer
#      NOT_CONTROLLER (41) and the client hands the error to the application, then through the
#      sidecar, which retries them against the controller. A table compares the two, beside the
#      sidecar's kafka_sidecar_not_controller_retries_total metric.
#
# Ports (all on 127.0.0.1) can be changed through the environment:
#   DEMO_TANSU_PORT        the broker                      (default: a free port)
#   DEMO_BOOTSTRAP_PORT    the sidecar's bootstrap port    (default 19092)
#   DEMO_BROKER_PORT_BASE  broker node N on base + N       (default 19100; the nodes are 1-3)
#   DEMO_ADMIN_PORT        metrics and health endpoints    (default 19080)
#   DEMO_TOPIC             topic to create and use         (default demo)
#   DEMO_ADMIN_CALLS       create+delete pairs per run of part 2 (default 20)
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
ADMIN_CALLS="${DEMO_ADMIN_CALLS:-20}"
BROKERS=3
# The controller moves this often; brokers report the previous one for STALE_FOR after a move.
FLAP_EVERY=300ms
STALE_FOR=1s

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

case "$ADMIN_CALLS" in
'' | *[!0-9]* | 0) die "DEMO_ADMIN_CALLS must be a positive number, not '$ADMIN_CALLS'" ;;
esac

# One build: the sidecar, and the cluster fixture next to it (the feature adds only that binary).
say "cargo build --release --features zk-cluster"
cargo build --release --features zk-cluster
SIDECAR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/kafka-sidecar"
ZK_CLUSTER="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/zk-cluster"
[ -x "$SIDECAR" ] || die "cargo build did not produce $SIDECAR"
[ -x "$ZK_CLUSTER" ] || die "cargo build did not produce $ZK_CLUSTER"

[ $((BROKER_PORT_BASE + BROKERS)) -le 65535 ] ||
    die "DEMO_BROKER_PORT_BASE=$BROKER_PORT_BASE leaves no port for broker $BROKERS (base + $BROKERS > 65535)"
TANSU_PORT="${DEMO_TANSU_PORT:-$(free_port)}"
for port in "$TANSU_PORT" "$BOOTSTRAP_PORT" "$ADMIN_PORT" $(seq $((BROKER_PORT_BASE + 1)) $((BROKER_PORT_BASE + BROKERS))); do
    ! port_open "$port" || die "port $port is already in use; pick others with DEMO_*_PORT (see the top of $0)"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kafka-sidecar-demo.XXXXXX")"
TANSU_PID=""
ZK_PID=""
SIDECAR_PID=""
cleanup() {
    local rc=$? pid
    for pid in "$SIDECAR_PID" "$ZK_PID" "$TANSU_PID"; do
        [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    done
    for pid in "$SIDECAR_PID" "$ZK_PID" "$TANSU_PID"; do
        [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
    done
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

say "starting zk-cluster: $BROKERS brokers over Tansu; the controller moves every $FLAP_EVERY, brokers report the previous one for $STALE_FOR"
NO_COLOR=1 "$ZK_CLUSTER" \
    --upstream "127.0.0.1:$TANSU_PORT" \
    --brokers "$BROKERS" \
    --flap-every "$FLAP_EVERY" \
    --stale-for "$STALE_FOR" \
    </dev/null >"$WORK/zk-cluster.out" 2>"$WORK/zk-cluster.log" &
ZK_PID=$!
deadline=$((SECONDS + 30))
until grep -q '^bootstrap ' "$WORK/zk-cluster.out"; do
    kill -0 "$ZK_PID" 2>/dev/null || die "zk-cluster exited before it was ready"
    [ "$SECONDS" -lt "$deadline" ] || die "zk-cluster was not ready within 30s"
    sleep 0.1
done
CLUSTER="$(sed -n 's/^bootstrap //p' "$WORK/zk-cluster.out")"
echo "cluster bootstrap: $CLUSTER"

say "starting kafka-sidecar in front of it: bootstrap 127.0.0.1:$BOOTSTRAP_PORT, brokers 1-$BROKERS on 127.0.0.1:$((BROKER_PORT_BASE + 1))-$((BROKER_PORT_BASE + BROKERS)), admin 127.0.0.1:$ADMIN_PORT"
NO_COLOR=1 "$SIDECAR" \
    --bootstrap-server "$CLUSTER" \
    --listen-host 127.0.0.1 \
    --bootstrap-port "$BOOTSTRAP_PORT" \
    --broker-port-base "$BROKER_PORT_BASE" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" \
    </dev/null >"$WORK/sidecar.log" 2>&1 &
SIDECAR_PID=$!
wait_port "$BOOTSTRAP_PORT" 30 "$SIDECAR_PID" "kafka-sidecar"
for node in $(seq 1 "$BROKERS"); do
    wait_port "$((BROKER_PORT_BASE + node))" 30 "$SIDECAR_PID" "kafka-sidecar (broker $node)"
done
BOOTSTRAP="127.0.0.1:$BOOTSTRAP_PORT"

say "part 1: creating topic '$TOPIC' through the sidecar (confluent-kafka AdminClient)"
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

say "part 2: the controller keeps moving; $ADMIN_CALLS topic create+delete pairs (confluent-kafka AdminClient), straight to the cluster, then through the sidecar"
metrics() { "$PYTHON" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://127.0.0.1:$ADMIN_PORT/metrics"; }
admin_loop() { # bootstrap prefix
    "$PYTHON" tests/clients/admin_loop.py --bootstrap "$1" --client confluent --count "$ADMIN_CALLS" \
        --prefix "$2" --pause 0.02 --timeout 10
}
echo "straight to the cluster ($CLUSTER) ..."
admin_loop "$CLUSTER" direct >"$WORK/direct.json"
metrics >"$WORK/metrics-before.txt"
echo "through kafka-sidecar (127.0.0.1:$BOOTSTRAP_PORT) ..."
admin_loop "$BOOTSTRAP" sidecar >"$WORK/sidecar.json"
metrics >"$WORK/metrics-after.txt"

echo
"$PYTHON" - "$WORK" <<'EOF'
import json, re, sys

work = sys.argv[1]
METRIC = "kafka_sidecar_not_controller_retries_total"

def retries(name):
    """The metric summed by outcome."""
    by = {}
    for line in open(f"{work}/{name}"):
        m = re.match(METRIC + r'\{(.*)\} (\S+)$', line.strip())
        if m:
            outcome = re.search(r'outcome="([^"]*)"', m.group(1)).group(1)
            by[outcome] = by.get(outcome, 0) + float(m.group(2))
    return by

before, after = retries("metrics-before.txt"), retries("metrics-after.txt")
delta = {k: int(after.get(k, 0) - before.get(k, 0)) for k in ("recovered", "exhausted", "lost")}

rows, notes = [], []
for label, name, metric in (
    ("straight to the cluster", "direct.json", "-"),
    ("through kafka-sidecar", "sidecar.json",
     f"+{sum(delta.values())} (recovered {delta['recovered']}, exhausted {delta['exhausted']}, lost {delta['lost']})"),
):
    r = json.load(open(f"{work}/{name}"))
    calls = sum(sum(r[kind].values()) for kind in ("create", "delete"))
    ok = sum(r[kind].get("ok", 0) for kind in ("create", "delete"))
    rows.append((label, calls, ok, r["not_controller"], calls - ok - r["not_controller"], r["elapsed"], metric))
    others = [f"{kind} {error} x{n}" for kind in ("create", "delete") for error, n in sorted(r[kind].items())
              if error != "ok" and not error.endswith("(41)")]
    if others:
        why = any(o.startswith("delete UNKNOWN_TOPIC_OR_PART") for o in others)
        why = " (deleting topics whose create had failed with 41)" if why else ""
        notes.append(f"other errors {label}: {', '.join(others)}{why}")

print(f"{'':24} {'calls':>5} {'ok':>5} {'failed with 41':>14} {'other errors':>12} {'time':>6}   {METRIC}")
for label, calls, ok, nc, other, elapsed, metric in rows:
    print(f"{label:24} {calls:>5} {ok:>5} {nc:>14} {other:>12} {elapsed:>5.1f}s   {metric}")
for note in notes:
    print(note)
print()
direct, through = rows
if through[2] != through[1]:
    sys.exit("demo: error: some calls through the sidecar failed")
if direct[3]:
    print(f"Straight to the cluster, {direct[3]} of {direct[1]} calls reached a broker that was not the controller")
    print("and the client handed NOT_CONTROLLER (41) to the application. Through the sidecar every call")
    print(f"succeeded: it re-sent the {delta['recovered']} requests a broker answered with 41 until the controller")
    print("took them, out of the client's sight.")
else:
    print("Straight to the cluster, no call happened to hit a moving controller this time; run the demo again.")
EOF

say "sidecar health (http://127.0.0.1:$ADMIN_PORT)"
if command -v curl >/dev/null 2>&1; then
    printf 'healthz: %s\n' "$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" || echo 'unavailable')"
    printf 'readyz:  %s\n' "$(curl -sS "http://127.0.0.1:$ADMIN_PORT/readyz" || echo 'unavailable')"
fi

say "demo finished; stopping the sidecar, zk-cluster and Tansu"
