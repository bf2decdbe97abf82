#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), on the stable toolchain
# (no sanitizer: `-s none`), and prints one line per target. Exits 1 when a target crashed (the
# input is kept under fuzz/artifacts/<target>/), 2 when the targets do not build.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# cargo-fuzz is installed once per machine with cargo install under
# ${KAFKA_SIDECAR_CACHE:-$HOME/.cache/kafka-sidecar}/cargo-fuzz-<version>/. Each target's corpus
# grows in fuzz/corpus/<target>/ (not in git) from the seeds in fuzz/seeds/<target>/.
# See docs/reliability.md.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KAFKA_SIDECAR_CACHE:-$HOME/.cache/kafka-sidecar}"
CARGO_FUZZ_VERSION="0.13.2"
CARGO_FUZZ_ROOT="$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
CARGO_FUZZ_LOG="$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION-build.log"
TARGETS=(frame_codec rewrite_responses admin_retry config)

say() { printf 'fuzz: %s\n' "$*"; }
die() {
    printf 'fuzz: error: %s\n' "$*" >&2
    exit 2
}

seconds="${1:-60}"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive whole number, not ${seconds@Q}"
shift || true
if [ "$#" -gt 0 ]; then
    for target in "$@"; do
        [ -f "$REPO_ROOT/fuzz/fuzz_targets/$target.rs" ] || die "no fuzz target $target (targets: ${TARGETS[*]})"
    done
    TARGETS=("$@")
fi

# ------------------------------------------------------------ cargo-fuzz ---
command -v cargo >/dev/null 2>&1 || die "cargo not found"
mkdir -p "$CACHE"
if [ ! -x "$CARGO_FUZZ_ROOT/bin/cargo-fuzz" ]; then
    exec 9>"$CACHE/cargo-fuzz.lock"
    flock 9
    if [ ! -x "$CARGO_FUZZ_ROOT/bin/cargo-fuzz" ]; then
        say "cargo-fuzz $CARGO_FUZZ_VERSION: building with cargo install (about 1-2 minutes; log: $CARGO_FUZZ_LOG)"
        cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$CARGO_FUZZ_ROOT" \
            </dev/null >"$CARGO_FUZZ_LOG" 2>&1 || {
            tail -n 40 "$CARGO_FUZZ_LOG" >&2 || true
            die "building cargo-fuzz failed; see $CARGO_FUZZ_LOG"
        }
    fi
    exec 9>&-
fi
export PATH="$CARGO_FUZZ_ROOT/bin:$PATH"

# ----------------------------------------------------------------- build ---
cd "$REPO_ROOT"
mkdir -p fuzz/logs
build_log="fuzz/logs/build.log"
say "building the fuzz targets with $(rustc --version) (log: $build_log)"
start=$SECONDS
if ! cargo fuzz build -s none </dev/null >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    die "the fuzz targets do not build; see $build_log"
fi
say "built in $((SECONDS - start))s"

# ------------------------------------------------------------------- run ---
# The last status line of a libFuzzer log, e.g.
#   #1715356	DONE   cov: 491 ft: 1357 corp: 405/64Kb lim: 4096 exec/s: 155941 rss: 61Mb
field() { sed -n "s|.* $1: \([^ ]*\).*|\1|p" <<<"$2"; }

crashed=()
for target in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$target"
    log="fuzz/logs/$target.log"
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    [ -f "fuzz/dicts/$target.dict" ] && args+=(-dict="fuzz/dicts/$target.dict")
    rc=0
    cargo fuzz run -s none "$target" "$corpus" "fuzz/seeds/$target" -- "${args[@]}" </dev/null >"$log" 2>&1 || rc=$?

    status="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    execs="${execs:-$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$status")}"
    rate="$(field 'exec/s' "$status")"
    cov="$(field cov "$status")"
    features="$(field ft "$status")"
    corpus_size="$(field corp "$status")"
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    if [ "$rc" -eq 0 ] && [ -z "$artifact" ]; then
        say "$target: ok, ${execs:-?} execs (${rate:-?}/s), cov ${cov:-?}, ft ${features:-?}, corpus ${corpus_size:-?}, ${seconds}s"
    else
        crashed+=("$target")
        # "thread '<unnamed>' panicked at src/x.rs:1:2:" and the message on the next line.
        reason="$(grep -m 1 -A 1 "panicked at" "$log" | sed 's/^thread .* panicked at //' | paste -sd ' ' || true)"
        [ -n "$reason" ] || reason="$(grep -m 1 -E "ERROR: libFuzzer|SUMMARY" "$log" || echo "exit status $rc")"
        say "$target: CRASH after ${execs:-?} execs: $reason"
        if [ -n "$artifact" ]; then
            say "$target:   input $artifact; reproduce: cargo fuzz run -s none $target $artifact"
        fi
        say "$target:   log $log"
    fi
done

if [ "${#crashed[@]}" -gt 0 ]; then
    say "${#crashed[@]} of ${#TARGETS[@]} target(s) crashed: ${crashed[*]}"
    exit 1
fi
say "${#TARGETS[@]} target(s), ${seconds}s each: no crash"
