#!/usr/bin/env bash
# Every benchmark of docs/performance.md in one run, about 6 minutes on 2 cores once built:
#
#   1. micro-benchmarks (criterion, benches/wire.rs): header peek, frame decode and pass-through,
#      the Metadata, ApiVersions and FindCoordinator rewrites;
#   2. the allocation check (benches/allocations.rs): fails the run if the per-frame hot path
#      allocates;
#   3. the end-to-end load benchmark (benches/e2e/): direct to the broker, through kafka-sidecar
#      and through HAProxy in TCP mode, against a broker stand-in that answers at once and
#      against Tansu: librdkafka produce and consume throughput, request latency at 1,000/s,
#      proxy CPU per GB, peak RSS with 1 and 100 busy connections;
#   4. the memory phase of the end-to-end benchmark: peak RSS of kafka-sidecar and HAProxy against
#      frame size (1, 10, 50, 100 MiB) x connections (1, 8, 64), each connection sending one
#      Produce request of the frame size and reading a Fetch answer of that size slowly (about
#      1 minute; cells moving more than BENCH_MEMORY_MAX_GIB through the proxy are skipped).
#
# It installs what it needs: Debian's haproxy and time (as root), and through scripts/setup.sh
# the Python venv with confluent-kafka and the Tansu broker (built once, cached). Before measuring
# it waits (up to BENCH_QUIET_WAIT seconds, default 60) for the 1-minute load average to drop
# below BENCH_MAX_LOAD (default 1.0), and it reports the load each part ran under.
#
# Usage: scripts/bench.sh [--profile]
#   --profile  instead of the benchmarks: a callgrind profile of the sidecar under load and the
#              syscalls and context switches per request of kafka-sidecar and HAProxy (perf
#              stat, software events); installs valgrind and linux-perf.
#
# Environment:
#   BENCH_OUT              where results go (default target/bench)
#   BENCH_PHASES           which parts run, comma-separated, of micro, allocations (1 and 2),
#                          throughput, steady (3: librdkafka throughput; latency and busy
#                          connections), memory (4); default all. BENCH_PHASES=memory runs the
#                          memory phase alone
#   BENCH_MEMORY_MAX_GIB   memory phase: skip cells moving more than this many GiB (default 4)
#   BENCH_ROUNDS           rounds per end-to-end phase (default 3)
#   BENCH_SECONDS          seconds per throughput run (default 2)
#   BENCH_BROKERS          standin,tansu (default both)
#   BENCH_SIDECAR_ENV      extra environment for the sidecar, e.g. KAFKA_SIDECAR_WORKER_THREADS=2
#   BENCH_MAX_LOAD, BENCH_QUIET_WAIT  see above
#   KAFKA_SIDECAR_CACHE    tool cache of scripts/setup.sh (default ~/.cache/kafka-sidecar)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
CACHE="${KAFKA_SIDECAR_CACHE:-$HOME/.cache/kafka-sidecar}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
OUT="${BENCH_OUT:-$TARGET_DIR/bench}"
MODE=bench
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
case "${1:-}" in
"") ;;
--profile) MODE=profile ;;
-h | --help)
    usage
    exit 0
    ;;
*)
    usage >&2
    exit 64
    ;;
esac

say() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

PHASES="${BENCH_PHASES:-micro,allocations,throughput,steady,memory}"
e2e_phases=""
for phase in ${PHASES//,/ }; do
    case "$phase" in
    micro | allocations) ;;
    throughput | steady | memory) e2e_phases="${e2e_phases:+$e2e_phases,}$phase" ;;
    *) die "unknown phase '$phase' in BENCH_PHASES (micro, allocations, throughput, steady, memory)" ;;
    esac
done
runs() { [[ ",$PHASES," == *",$1,"* ]]; }

# ------------------------------------------------------------------ tools ------
need_debs=()
command -v haproxy >/dev/null 2>&1 || need_debs+=(haproxy)
[ -x /usr/bin/time ] || need_debs+=(time)
if [ "$MODE" = profile ]; then
    command -v valgrind >/dev/null 2>&1 || need_debs+=(valgrind)
    command -v perf >/dev/null 2>&1 || need_debs+=(linux-perf)
fi
if [ "${#need_debs[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "need Debian packages ${need_debs[*]}; run as root or install them"
    say "installing ${need_debs[*]} (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_debs[@]}" </dev/null >/dev/null
fi
say "setup (Python venv with confluent-kafka, Tansu)"
bash scripts/setup.sh
PYTHON="$CACHE/venv/bin/python"
TANSU="$CACHE/tansu-0.6.0/bin/tansu"

say "cargo build --release, and the benchmark binaries"
cargo build --release
SIDECAR="$TARGET_DIR/release/kafka-sidecar"
[ -x "$SIDECAR" ] || die "cargo build did not produce $SIDECAR"
TOOLS="$(cargo bench --bench e2e --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "e2e" and msg.get("executable"):
        print(msg["executable"])
')"
[ -x "$TOOLS" ] || die "could not build the e2e bench tools"
mkdir -p "$OUT"

# ------------------------------------------------------------- quiet machine ------
wait_quiet() {
    local max="${BENCH_MAX_LOAD:-1.0}" wait="${BENCH_QUIET_WAIT:-60}" start=$SECONDS load
    while :; do
        load="$(cut -d' ' -f1 /proc/loadavg)"
        if python3 -c "import sys; sys.exit(0 if $load < $max else 1)"; then
            break
        fi
        if [ $((SECONDS - start)) -ge "$wait" ]; then
            printf 'bench: warning: load average %s is still above %s after %ss; results will be noisier\n' \
                "$load" "$max" "$wait" >&2
            break
        fi
        sleep 5
    done
    printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
}

sidecar_env=()
if [ -n "${BENCH_SIDECAR_ENV:-}" ]; then
    read -r -a sidecar_env <<<"$BENCH_SIDECAR_ENV"
fi

if [ "$MODE" = profile ]; then
    say "profile of the sidecar under load"
    wait_quiet
    python3 benches/e2e/run.py --profile --sidecar "$SIDECAR" --tools "$TOOLS" --tansu "$TANSU" \
        --python "$PYTHON" --client benches/e2e/client.py --out "$OUT/profile" \
        --sidecar-env "${sidecar_env[@]}" | tee "$OUT/profile.txt"
    exit 0
fi

# ------------------------------------------------------------ micro-benchmarks ------
micro() {
    say "micro-benchmarks (criterion)"
    wait_quiet
    local load_micro
    load_micro="$(cut -d' ' -f1-3 /proc/loadavg)"
    rm -rf "$OUT/criterion"
    CRITERION_HOME="$OUT/criterion" cargo bench --bench wire -- --noplot --warm-up-time 0.5 --measurement-time 1.5 2>&1 |
        grep -E '^[a-z_]+/[^ ]*( |$)|time:|thrpt:|^error|panicked' || true
    python3 - "$OUT/criterion" "$load_micro" >"$OUT/micro.md" <<'PY'
import json, os, sys
root, load = sys.argv[1], sys.argv[2]
rows = []
for dirpath, _, files in os.walk(root):
    if "benchmark.json" in files and os.path.basename(dirpath) == "new":
        bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
        est = json.load(open(os.path.join(dirpath, "estimates.json")))
        ns = est["median"]["point_estimate"]
        tput = (bench.get("throughput") or {}).get("Bytes")
        rows.append((bench["full_id"], ns, tput))
order = ["header_peek", "frame_decode", "frame_pass_through", "rewrite"]
def key(row):
    group = row[0].split("/")[0]
    size = {"1KiB": 1, "64KiB": 2, "1MiB": 3}.get(row[0].split("/")[-1], 0)
    return (order.index(group) if group in order else 9, size, row[0])
def fmt_ns(ns):
    return f"{ns:,.1f} ns" if ns < 1000 else f"{ns / 1000:,.2f} µs"
def fmt_tput(ns, b):
    if not b:
        return ""
    gbs = b / ns  # bytes per ns = GB/s
    return f"{gbs * 1000:,.0f} MB/s" if gbs < 1 else f"{gbs:,.1f} GB/s"
print(f"Load average when the micro-benchmarks started: {load}.\n")
print("| benchmark | median time | throughput |")
print("|---|---:|---:|")
for name, ns, b in sorted(rows, key=key):
    print(f"| `{name}` | {fmt_ns(ns)} | {fmt_tput(ns, b)} |")
PY
    cat "$OUT/micro.md"
    printf '## Micro-benchmarks\n\n' >>"$OUT/report.md"
    cat "$OUT/micro.md" >>"$OUT/report.md"
}

# ------------------------------------------------------------ allocation check ------
alloc_ok=""
allocations() {
    say "allocation check (counting allocator)"
    alloc_ok=yes
    if ! cargo bench --bench allocations 2>/dev/null | tee "$OUT/allocations.txt"; then
        alloc_ok=no
    fi
    printf '\n## Allocations per frame\n\n```\n' >>"$OUT/report.md"
    cat "$OUT/allocations.txt" >>"$OUT/report.md"
    printf '```\n\n' >>"$OUT/report.md"
}

# ---------------------------------------------------------------- end to end ------
e2e() {
    say "end-to-end benchmark: $e2e_phases"
    if runs micro; then
        printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    else
        wait_quiet
    fi
    python3 benches/e2e/run.py --sidecar "$SIDECAR" --tools "$TOOLS" --tansu "$TANSU" --python "$PYTHON" \
        --client benches/e2e/client.py --out "$OUT/e2e" ${alloc_ok:+--allocations-ok "$alloc_ok"} \
        --phases "$e2e_phases" --rounds "${BENCH_ROUNDS:-3}" --seconds "${BENCH_SECONDS:-2}" \
        --brokers "${BENCH_BROKERS:-standin,tansu}" --memory-max-gib "${BENCH_MEMORY_MAX_GIB:-4}" \
        --sidecar-env "${sidecar_env[@]}"
    printf '## End to end\n\n' >>"$OUT/report.md"
    cat "$OUT/e2e/results.md" >>"$OUT/report.md"
}

: >"$OUT/report.md"
if runs micro; then micro; fi
if runs allocations; then allocations; fi
if [ -n "$e2e_phases" ]; then e2e; fi
say "report written to $OUT/report.md${e2e_phases:+ (raw results: $OUT/e2e/results.json)}"
[ "$alloc_ok" != no ] || die "the allocation check failed"
