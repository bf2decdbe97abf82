#!/usr/bin/env python3
"""End-to-end benchmark driver, started by scripts/bench.sh (see docs/performance.md).

For each broker (the stand-in of benches/e2e/broker.rs, then Tansu) there are three ways in:

  direct   the client talks to the broker itself;
  sidecar  the client talks to kafka-sidecar, which talks to the broker;
  haproxy  the client talks to HAProxy in TCP mode, which forwards to the broker.

Each way has a broker process of its own, started the same way, so that all three start from the
same broker state. A broker advertises its own address in Metadata, so a client that bootstraps
through HAProxy would open its follow-up connections straight to the broker; the broker of the
HAProxy way therefore advertises HAProxy's port (stand-in: --listen PORT=HAPROXY, Tansu:
--advertised-listener-url), and every connection of the client goes through HAProxy. The sidecar
rewrites the addresses itself.

Phases (--phases): throughput, steady, memory.

Throughput phases (librdkafka: produce 100 B, produce 1 KiB, consume 1 KiB) run in rounds; each
round starts every way afresh (Tansu keeps what it is sent in memory) in an order that rotates
from round to round, so that drift on a shared machine is spread evenly; the median of the rounds
is reported. Latency and many-connection phases run with the three ways up at once, rounds
interleaved the same way; latency percentiles come from every sample of every round.

The memory phase (stand-in only, no direct way) measures the peak RSS of kafka-sidecar and HAProxy
against frame size x connections: each connection of `e2e slow-fetch` sends one Produce request of
the frame size, then reads a Fetch answer of the frame size slowly. Each cell starts a fresh broker
and proxy per way, both allowed frames a little above the largest; cells that would move more
than --memory-max-gib through the proxy are skipped.

Proxy CPU comes from /proc/PID/stat (utime + stime), bytes from the proxy's own counters
(kafka-sidecar's /metrics, HAProxy's stats socket; client side, both directions), peak RSS from
VmHWM, reset before each run (/proc/PID/clear_refs).

Writes results.json and results.md to --out and prints the tables.
"""
import argparse
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

VARIANTS = ("direct", "sidecar", "haproxy")
PHASES = ("throughput", "steady", "memory")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
# How `e2e slow-fetch` reads its Fetch answer in the memory phase: at most read_kib a read with
# pause_ms between reads for up to slow_seconds after sending the Fetch, then at full speed.
MEMORY_READ = {"read_kib": 256, "pause_ms": 20, "slow_seconds": 2.0}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes ------


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_base(offsets):
    """A base port such that base + each offset is free, below the ephemeral range."""
    for _ in range(500):
        base = random.randrange(20000, 32000 - max(offsets))
        if all(port_free(base + o) for o in offsets):
            return base
    raise SystemExit("bench: no free port block found")


def wait_port(port, proc, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {what} exited early; see {proc.log_path}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: {what} not listening on {port} after {timeout}s; see {proc.log_path}")


class Proc(subprocess.Popen):
    def __init__(self, name, cmd, out_dir, env=None):
        self.log_path = os.path.join(out_dir, f"{name}.log")
        self.name = name
        log_file = open(self.log_path, "w")
        super().__init__(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log_file.close()

    def stop(self):
        if self.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
                self.wait()


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])  # KiB
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def reset_hwm(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- proxies ------


class Sidecar:
    kind = "sidecar"

    def __init__(self, args, upstream, node_id, out_dir, tag, wrap=(), extra=()):
        self.port = free_port()
        self.admin = free_port()
        self.base = free_base([node_id])
        cmd = [
            args.sidecar,
            "--bootstrap-server", upstream,
            "--listen-host", "127.0.0.1",
            "--bootstrap-port", str(self.port),
            "--broker-port-base", str(self.base),
            "--admin-listen", f"127.0.0.1:{self.admin}",
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_SIDECAR_") and k != "RUST_LOG"}
        env.update(kv.split("=", 1) for kv in args.sidecar_env)
        self.proc = Proc(f"{tag}-sidecar", list(wrap) + cmd, out_dir, env)
        wait_port(self.port, self.proc, "kafka-sidecar")
        deadline = time.time() + 60
        while self.http("/readyz")[0] != 200:
            if time.time() > deadline:
                raise SystemExit(f"bench: kafka-sidecar not ready; see {self.proc.log_path}")
            time.sleep(0.1)
        self.pid = self.proc.pid

    def http(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def metrics(self):
        return self.http("/metrics")[1].splitlines()

    def wait_idle(self, timeout=5):
        """Waits until no client connection is open (the client has just exited)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            open_ = [l for l in self.metrics() if l.startswith("kafka_sidecar_client_connections ")]
            if open_ and float(open_[0].split()[1]) == 0:
                return
            time.sleep(0.05)

    def client_bytes(self):
        """Bytes between clients and the sidecar, both directions."""
        total = 0
        for line in self.metrics():
            if line.startswith("kafka_sidecar_bytes_total{") and (
                'direction="client_to_sidecar"' in line or 'direction="sidecar_to_client"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)


class HAProxy:
    kind = "haproxy"

    def __init__(self, args, backend_port, out_dir, tag, port):
        self.port = port
        self.sock = os.path.join(out_dir, f"{tag}-haproxy.sock")
        cfg = os.path.join(out_dir, f"{tag}-haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(
                f"""global
    maxconn 4096
    nbthread {os.cpu_count()}
    stats socket {self.sock} mode 600 level user

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend kafka
    bind 127.0.0.1:{self.port}
    default_backend broker

backend broker
    server broker 127.0.0.1:{backend_port}
"""
            )
        self.proc = Proc(f"{tag}-haproxy", [args.haproxy, "-db", "-f", cfg], out_dir)
        wait_port(self.port, self.proc, "haproxy")
        # The stats socket can appear just after the frontend listens.
        deadline = time.time() + 10
        while not os.path.exists(self.sock):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"bench: no HAProxy stats socket {self.sock}; see {self.proc.log_path}")
            time.sleep(0.02)
        self.pid = self.proc.pid

    def frontend(self):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "kafka" and row.get("svname") == "FRONTEND":
                return row
        raise SystemExit("bench: no frontend row in HAProxy stats")

    def wait_idle(self, timeout=5):
        """Waits until no client connection is open: HAProxy counts a stream's bytes as it ends."""
        deadline = time.time() + timeout
        while time.time() < deadline and int(self.frontend()["scur"]) > 0:
            time.sleep(0.05)

    def client_bytes(self):
        """Bytes between clients and HAProxy, both directions (frontend bin + bout)."""
        row = self.frontend()
        return int(row["bin"]) + int(row["bout"])


# ----------------------------------------------------------------------------- brokers ------


TOPICS = ("bench-100", "bench-1024", "bench-latency", "bench-load")


def start_broker(args, kind, port, advertised, out_dir, name, extra=()):
    """A broker on `port` that tells clients to find it at `advertised`; returns (proc, node id).
    `extra`: further arguments of the stand-in."""
    if kind == "standin":
        cmd = [args.tools, "broker", "--node-id", "1", "--listen", f"127.0.0.1:{port}=127.0.0.1:{advertised}",
               *extra]
        proc = Proc(name, cmd, out_dir)
        node_id = 1
    else:
        env = {k: v for k, v in os.environ.items()
               if k not in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                            "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")}
        env["NO_COLOR"] = "1"
        cmd = [args.tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
               "--advertised-listener-url", f"tcp://127.0.0.1:{advertised}", "--storage-engine", "memory://tansu/"]
        proc = Proc(name, cmd, out_dir, env)
        node_id = 111
    wait_port(port, proc, name)
    return proc, node_id


class Way:
    """One way in to a broker of its own: direct, through kafka-sidecar, or through HAProxy.

    Each way has its own broker process, so that every way starts from the same broker state. The
    broker behind HAProxy advertises HAProxy's port, so that the client's connections after the
    bootstrap one go through HAProxy too; the sidecar rewrites the addresses itself.
    `max_frame_bytes`, if given, goes to the stand-in and the sidecar (HAProxy does not look)."""

    def __init__(self, bench, kind, variant, tag, max_frame_bytes=None):
        args, out = bench.args, bench.out
        self.variant = variant
        self.proxy = None
        broker_port = free_port()
        proxy_port = free_port() if variant == "haproxy" else None
        limit = ("--max-frame-bytes", str(max_frame_bytes)) if max_frame_bytes else ()
        self.broker, node_id = start_broker(args, kind, broker_port, proxy_port or broker_port, out,
                                            f"{tag}-{variant}-broker", extra=limit)
        try:
            if variant == "sidecar":
                self.proxy = Sidecar(args, f"127.0.0.1:{broker_port}", node_id, out, tag, extra=limit)
            elif variant == "haproxy":
                self.proxy = HAProxy(args, broker_port, out, tag, proxy_port)
            self.address = f"127.0.0.1:{self.proxy.port if self.proxy else broker_port}"
            if kind == "tansu":
                args_ = ["create", "--bootstrap", self.address]
                for topic in TOPICS:
                    args_ += ["--topic", topic]
                bench.python_client(*args_)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proxy is not None:
            self.proxy.proc.stop()
        self.broker.stop()


# ------------------------------------------------------------------------------ phases ------


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.results = {"phases": {}, "idle_rss_kib": {}}

    def client(self, name, *cli):
        """Runs a client command under /usr/bin/time; returns its JSON, with its CPU seconds."""
        time_out = os.path.join(self.out, "time.out")
        cmd = [self.args.time, "-f", "%U %S %M", "-o", time_out, *cli]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise SystemExit(f"bench: {name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        with open(time_out) as f:
            user, system, _max_rss = f.read().split()[-3:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["client_cpu_s"] = round(float(user) + float(system), 2)
        return result

    def python_client(self, *cli):
        return self.client("client.py " + cli[0], self.args.python, self.args.client, *cli)

    def measure(self, broker, phase, round_, way, fn):
        """Runs `fn(address)` once through `way` (see probe) and files the result under the phase."""
        result = self.probe(way, fn)
        entry = self.results["phases"].setdefault(broker, {}).setdefault(phase, {"runs": {v: [] for v in VARIANTS}})
        entry["runs"][way.variant].append(result)
        log(f"{broker} {phase} {way.variant} round {round_ + 1}/{self.args.rounds}: {summary(result)}")
        return result

    @staticmethod
    def probe(way, fn):
        """Runs `fn(address)` once through `way`, with the proxy's CPU, bytes and peak RSS."""
        proxy = way.proxy
        if proxy is not None:
            reset_hwm(proxy.pid)
            cpu0, bytes0 = cpu_seconds(proxy.pid), proxy.client_bytes()
        result = fn(way.address)
        if proxy is not None:
            proxy.wait_idle()
            result["proxy_cpu_s"] = round(cpu_seconds(proxy.pid) - cpu0, 3)
            result["proxy_bytes"] = proxy.client_bytes() - bytes0
            result["proxy_hwm_kib"] = proc_status(proxy.pid)["VmHWM"]
        return result

    def throughput(self, broker):
        """Produce 100 B, produce 1 KiB, consume 1 KiB: each round starts each way afresh."""
        secs = str(self.args.seconds)
        cap = str(self.args.max_mb)
        phases = [
            (f"produce-{size}", lambda a, size=size: self.python_client(
                "produce", "--bootstrap", a, "--topic", f"bench-{size}", "--value-bytes", str(size),
                "--seconds", secs, "--max-mb", cap))
            for size in (100, 1024)
        ]
        phases.append(("consume-1024", lambda a: self.python_client(
            "consume", "--bootstrap", a, "--topic", "bench-1024", "--seconds", secs)))
        for r in range(self.args.rounds):
            for variant in rotate(VARIANTS, r):
                way = Way(self, broker, variant, f"{broker}-r{r + 1}")
                try:
                    if way.proxy is not None and r == 0:
                        time.sleep(0.5)
                        self.results["idle_rss_kib"].setdefault(broker, {})[variant] = proc_status(way.proxy.pid)
                    for phase, fn in phases:
                        self.measure(broker, phase, r, way, fn)
                finally:
                    way.stop()

    def steady(self, broker):
        """Latency and many-connection phases, every way up at once, rounds interleaved."""
        args = self.args
        ways = {}
        try:
            for variant in VARIANTS:
                ways[variant] = Way(self, broker, variant, f"{broker}-steady")
            phases = []
            for request, seconds in (("produce", args.latency_seconds), ("metadata", args.latency_seconds / 2)):
                phases.append((f"latency-{request}",
                               lambda a, request=request, seconds=seconds: self.latency_run(a, request, seconds)))
            if broker == "standin":
                for conns in (1, 100):
                    phases.append((f"load-{conns}", lambda a, conns=conns: self.client(
                        "load", args.tools, "load", "--addr", a, "--connections", str(conns),
                        "--seconds", str(args.seconds), "--frame-bytes", str(args.load_frame_bytes), "--depth", "4")))
            for phase, fn in phases:
                for r in range(args.rounds):
                    for variant in rotate(VARIANTS, r):
                        self.measure(broker, phase, r, ways[variant], fn)
                if phase.startswith("latency-"):
                    self.merge_latency(broker, phase)
        finally:
            for way in ways.values():
                way.stop()

    def memory(self):
        """Peak RSS of each proxy against frame size x connections, slow readers (stand-in)."""
        args = self.args
        frames = [int(x) for x in args.memory_frame_mib.split(",")]
        conns_list = [int(x) for x in args.memory_connections.split(",")]
        max_frame = (max(frames) + 1) * MIB  # the frame plus headroom, length prefix excluded
        settings = {"frame_mib": frames, "connections": conns_list, "max_gib": args.memory_max_gib,
                    "max_frame_bytes": max_frame, **MEMORY_READ}
        cells = []
        self.results["memory"] = {"settings": settings, "cells": cells}
        for conns in conns_list:
            for mib in frames:
                cell = {"connections": conns, "frame_mib": mib, "moved_gib": 2 * conns * mib / 1024}
                cells.append(cell)
                if cell["moved_gib"] > args.memory_max_gib:
                    cell["skipped"] = True
                    log(f"memory {conns} x {mib} MiB: skipped, would move {cell['moved_gib']:.1f} GiB")
                    continue
                cli = [args.tools, "slow-fetch", "--connections", str(conns), "--frame-bytes", str(mib * MIB),
                       "--read-bytes", str(MEMORY_READ["read_kib"] * 1024),
                       "--read-pause-ms", str(MEMORY_READ["pause_ms"]),
                       "--slow-seconds", str(MEMORY_READ["slow_seconds"])]
                for variant in rotate(("sidecar", "haproxy"), len(cells)):
                    way = Way(self, "standin", variant, f"memory-{conns}x{mib}", max_frame_bytes=max_frame)
                    try:
                        result = self.probe(way, lambda a: self.client("slow-fetch", *cli, "--addr", a))
                    finally:
                        way.stop()
                    result["bytes_match"] = result["proxy_bytes"] == result["bytes_sent"] + result["bytes_received"]
                    if not result["bytes_match"]:
                        log(f"warning: {variant} counted {result['proxy_bytes']} client bytes, the client "
                            f"{result['bytes_sent'] + result['bytes_received']}")
                    cell[variant] = result
                    log(f"memory {conns} x {mib} MiB {variant}: {summary(result)}")

    def latency_run(self, address, request, seconds):
        path = os.path.join(self.out, f"latency-{len(os.listdir(self.out))}-{random.randrange(1 << 30)}.txt")
        result = self.client(
            "latency", self.args.tools, "latency", "--addr", address, "--request", request,
            "--topic", "bench-latency", "--rate", str(self.args.latency_rate), "--seconds", str(seconds),
            "--samples", path)
        with open(path) as f:
            result["samples"] = [float(line) for line in f if line.strip()]
        os.remove(path)
        return result

    def merge_latency(self, broker, phase):
        entry = self.results["phases"][broker][phase]
        merged = {}
        for variant, runs in entry["runs"].items():
            samples = sorted(x for run in runs for x in run.pop("samples"))
            merged[variant] = {
                "samples": len(samples),
                "p50_us": percentile(samples, 0.50),
                "p99_us": percentile(samples, 0.99),
                "p999_us": percentile(samples, 0.999),
                "max_us": samples[-1],
            }
        entry["merged"] = merged

    def run(self):
        self.results["machine"] = machine()
        self.results["load_before"] = loadavg()
        self.results["settings"] = {k: getattr(self.args, k) for k in (
            "phases", "rounds", "seconds", "latency_seconds", "latency_rate", "load_frame_bytes", "max_mb",
            "sidecar_env", "allocations_ok")}
        self.results["versions"] = versions(self.args)
        started = time.time()
        phases = self.args.phases.split(",")
        for broker in self.args.brokers.split(","):
            if "throughput" in phases:
                self.throughput(broker)
            if "steady" in phases:
                self.steady(broker)
        if "memory" in phases:
            self.memory()
        self.results["load_after"] = loadavg()
        self.results["duration_s"] = round(time.time() - started, 1)
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1)
        report = render(self.results)
        with open(os.path.join(self.out, "results.md"), "w") as f:
            f.write(report)
        print(report)


def rotate(items, r):
    r %= len(items)
    return items[r:] + items[:r]


# ------------------------------------------------------------------------------ report ------


def percentile(sorted_samples, p):
    index = min(len(sorted_samples), max(1, int(-(-p * len(sorted_samples) // 1)))) - 1
    return sorted_samples[index]


def summary(result):
    keys = ("msgs_per_s", "mb_per_s", "p50_us", "p99_us", "requests_per_s", "elapsed", "proxy_cpu_s", "proxy_hwm_kib",
            "client_cpu_s")
    return ", ".join(f"{k}={result[k]}" for k in keys if k in result)


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "mem_gib": round(mem_kib / 2**20, 1)}


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def fmt(x, digits=0):
    if x >= 100 or digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def cpu_per_gb(runs):
    cpu = sum(r["proxy_cpu_s"] for r in runs)
    gb = sum(r["proxy_bytes"] for r in runs) / 1e9
    return cpu / gb if gb else float("nan")


PHASE_NAMES = {"produce-100": "produce 100 B", "produce-1024": "produce 1 KiB", "consume-1024": "consume 1 KiB"}
BROKER_NAMES = {"standin": "broker stand-in (answers at once)", "tansu": "Tansu 0.6.0 (in-memory)"}


def throughput_ratios(res):
    """(broker, phase, sidecar/direct, haproxy/direct) for every librdkafka throughput phase."""
    out = []
    for broker, phases in res["phases"].items():
        for phase in PHASE_NAMES:
            if phase in phases:
                runs = phases[phase]["runs"]
                m = {v: median(runs[v], "msgs_per_s") for v in VARIANTS}
                out.append((broker, phase, m["sidecar"] / m["direct"], m["haproxy"] / m["direct"]))
    return out


def cpu_ratios(res):
    """(broker, phase, sidecar s/GB, haproxy s/GB) per phase, and per broker over all its phases."""
    out = []
    for broker, phases in res["phases"].items():
        every = {"sidecar": [], "haproxy": []}
        for phase, entry in phases.items():
            if phase.startswith("latency-"):
                continue
            runs = entry["runs"]
            out.append((broker, phase, cpu_per_gb(runs["sidecar"]), cpu_per_gb(runs["haproxy"])))
            for v in every:
                every[v].extend(runs[v])
        out.append((broker, "all", cpu_per_gb(every["sidecar"]), cpu_per_gb(every["haproxy"])))
    return out


def render_broker(res, broker, phases):
    lines = [f"### {BROKER_NAMES[broker]}", "",
             "| measure | direct | sidecar | HAProxy | sidecar/direct | sidecar/HAProxy |",
             "|---|---:|---:|---:|---:|---:|"]
    for phase, what in PHASE_NAMES.items():
        if phase not in phases:
            continue
        runs = phases[phase]["runs"]
        msgs = {v: median(runs[v], "msgs_per_s") for v in VARIANTS}
        mbs = {v: median(runs[v], "mb_per_s") for v in VARIANTS}
        lines.append(f"| {what}, msgs/s | {fmt(msgs['direct'])} | {fmt(msgs['sidecar'])} | {fmt(msgs['haproxy'])} | "
                     f"{ratio(msgs['sidecar'], msgs['direct'])} | {ratio(msgs['sidecar'], msgs['haproxy'])} |")
        lines.append(f"| {what}, MB/s | {fmt(mbs['direct'], 1)} | {fmt(mbs['sidecar'], 1)} | "
                     f"{fmt(mbs['haproxy'], 1)} | | |")
    for phase, what in (("latency-produce", "Produce 100 B"), ("latency-metadata", "Metadata")):
        if phase not in phases:
            continue
        merged = phases[phase]["merged"]
        for p in ("p50", "p99", "p999"):
            v = {k: merged[k][f"{p}_us"] for k in VARIANTS}
            lines.append(f"| {what} latency {p}, µs | {fmt(v['direct'], 1)} | {fmt(v['sidecar'], 1)} | "
                         f"{fmt(v['haproxy'], 1)} | {v['sidecar'] - v['direct']:+.1f} µs | "
                         f"{v['sidecar'] - v['haproxy']:+.1f} µs |")
    for phase in ("load-1", "load-100"):
        if phase not in phases:
            continue
        runs = phases[phase]["runs"]
        conns = phase.split("-")[1]
        rps = {v: median(runs[v], "requests_per_s") for v in VARIANTS}
        lines.append(f"| {conns} conn. x 4 in flight, {res['settings']['load_frame_bytes'] // 1024} KiB Produce, "
                     f"req/s | {fmt(rps['direct'])} | {fmt(rps['sidecar'])} | {fmt(rps['haproxy'])} | "
                     f"{ratio(rps['sidecar'], rps['direct'])} | {ratio(rps['sidecar'], rps['haproxy'])} |")
    for b, phase, side, ha in cpu_ratios(res):
        if b == broker:
            name = "all phases" if phase == "all" else phase
            lines.append(f"| proxy CPU s per GB, {name} | | {side:.2f} | {ha:.2f} | | {ratio(side, ha)} |")
    idle = {v: kib["VmRSS"] for v, kib in res["idle_rss_kib"][broker].items()}
    lines.append(f"| proxy RSS idle, MiB | | {idle['sidecar'] / 1024:.1f} | {idle['haproxy'] / 1024:.1f} | | "
                 f"{ratio(idle['sidecar'], idle['haproxy'])} |")
    for phase in ("load-1", "load-100"):
        if phase not in phases:
            continue
        runs = phases[phase]["runs"]
        peak = {v: max(r["proxy_hwm_kib"] for r in runs[v]) for v in ("sidecar", "haproxy")}
        lines.append(f"| proxy peak RSS (VmHWM), {phase.split('-')[1]} busy conn., MiB | | "
                     f"{peak['sidecar'] / 1024:.1f} | {peak['haproxy'] / 1024:.1f} | | "
                     f"{ratio(peak['sidecar'], peak['haproxy'])} |")
    lines.append("")
    return lines


def render_targets(res):
    lines = ["### Targets", "", "| target | measured | met |", "|---|---|---|"]
    tp = throughput_ratios(res)
    if tp:
        worst = min(tp, key=lambda t: t[2])
        detail = ", ".join(f"{b} {PHASE_NAMES[p]} {r:.2f}" for b, p, r, _ in tp)
        detail += " (HAProxy/direct: " + ", ".join(f"{h:.2f}" for _, _, _, h in tp) + ")"
        lines.append(f"| librdkafka throughput through the sidecar >= 0.95 x direct | {detail} | "
                     f"{'yes' if worst[2] >= 0.95 else 'no'} (lowest {worst[2]:.2f}) |")
    added = []
    for broker, phases in res["phases"].items():
        if "latency-produce" in phases:
            merged = phases["latency-produce"]["merged"]
            added.append((broker, merged["sidecar"]["p99_us"] - merged["direct"]["p99_us"],
                          merged["haproxy"]["p99_us"] - merged["direct"]["p99_us"]))
    if added:
        detail = ", ".join(f"{b} {a:+.0f} µs (HAProxy {h:+.0f} µs)" for b, a, h in added)
        lines.append(f"| added p99 latency <= 100 µs at 1,000 Produce/s | {detail} | "
                     f"{'yes' if all(a <= 100 for _, a, _ in added) else 'no'} |")
    overall = [(b, side / ha) for b, p, side, ha in cpu_ratios(res) if p == "all" and ha]
    per_phase = [(b, p, side / ha) for b, p, side, ha in cpu_ratios(res) if p != "all" and ha]
    if overall:
        over = [f"{b} {p} {r:.2f}" for b, p, r in per_phase if r > 1.2]
        detail = ", ".join(f"{b} overall {r:.2f}" for b, r in overall)
        if over:
            detail += "; above 1.2: " + ", ".join(over)
        if all(r <= 1.2 for _, r in overall):
            met = "yes" if not over else f"overall yes; not in {len(over)} of {len(per_phase)} phases"
        else:
            met = "no"
        lines.append(f"| proxy CPU per GB <= 1.2 x HAProxy's | {detail} | {met} |")
    if res["idle_rss_kib"]:
        idle = max(v["sidecar"]["VmRSS"] for v in res["idle_rss_kib"].values()) / 1024
        lines.append(f"| RSS <= 20 MiB idle | {idle:.1f} MiB | {'yes' if idle <= 20 else 'no'} |")
    busy = [max(r["proxy_hwm_kib"] for r in phases["load-100"]["runs"]["sidecar"]) / 1024
            for phases in res["phases"].values() if "load-100" in phases]
    if busy:
        lines.append(f"| RSS <= 64 MiB with 100 busy connections | {max(busy):.1f} MiB (VmHWM) | "
                     f"{'yes' if max(busy) <= 64 else 'no'} |")
    measured = memory_ratios(res)
    if measured:
        worst = max(measured, key=lambda c: c[2])
        within = sum(r <= 2 for _, _, r in measured)
        lines.append(f"| peak RSS within 2x of HAProxy's, large frames and slow readers | highest sidecar/HAProxy "
                     f"{worst[2]:.2f} ({worst[0]} conn. x {worst[1]} MiB); {within} of {len(measured)} cells within | "
                     f"{'yes' if within == len(measured) else 'no'} |")
    ok = res["settings"].get("allocations_ok")
    if ok:
        lines.append(f"| no allocation per Produce/Fetch frame beyond its buffer | benches/allocations.rs | {ok} |")
    lines.append("")
    return lines


def memory_ratios(res):
    """(connections, frame MiB, sidecar/HAProxy peak RSS) for every memory cell measured."""
    return [(c["connections"], c["frame_mib"], c["sidecar"]["proxy_hwm_kib"] / c["haproxy"]["proxy_hwm_kib"])
            for c in res.get("memory", {}).get("cells", []) if not c.get("skipped")]


def render_memory(res):
    s = res["memory"]["settings"]
    lines = ["### Memory: large frames, slow readers (broker stand-in)", "",
             f"Each connection sends one Produce request (acks=1) of the frame size, then reads a Fetch answer "
             f"of the frame size {s['read_kib']} KiB a read with {s['pause_ms']} ms pauses for up to "
             f"{s['slow_seconds']:g} s, then at full speed. Frame sizes exclude the length prefix; proxy and "
             f"stand-in run with --max-frame-bytes {s['max_frame_bytes']:,}. A fresh broker and proxy per run; "
             f"peak RSS is VmHWM, reset before the run. Moved: both directions through the proxy; cells above "
             f"{s['max_gib']:g} GiB are skipped.", "",
             "| connections | frame | moved | sidecar peak RSS, MiB | HAProxy peak RSS, MiB | sidecar/HAProxy | "
             "within 2x of HAProxy's |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    mismatched = []
    for c in res["memory"]["cells"]:
        moved = f"{c['moved_gib'] * 1024:,.0f} MiB" if c["moved_gib"] < 1 else f"{c['moved_gib']:.2f} GiB"
        head = f"| {c['connections']} | {c['frame_mib']} MiB | {moved} |"
        if c.get("skipped"):
            lines.append(f"{head} skipped (over {s['max_gib']:g} GiB) | | | |")
            continue
        side, ha = (c[v]["proxy_hwm_kib"] / 1024 for v in ("sidecar", "haproxy"))
        lines.append(f"{head} {side:,.1f} | {ha:,.1f} | {side / ha:.2f} | {'yes' if side <= 2 * ha else 'no'} |")
        mismatched += [f"{v} {c['connections']} x {c['frame_mib']} MiB" for v in ("sidecar", "haproxy")
                       if not c[v]["bytes_match"]]
    lines.append("")
    if mismatched:
        lines += ["Client bytes counted by the proxy differ from the client's in: " + ", ".join(mismatched) + ".", ""]
    else:
        lines += ["Every answer checked by the client (correlation id, size), and the bytes each proxy counted "
                  "between it and the client equal the client's.", ""]
    return lines


def render(res):
    m = res["machine"]
    s = res["settings"]
    lines = [
        f"Machine: {m['nproc']} x {m['cpu']}, {m['mem_gib']} GiB, Linux {m['kernel']}. "
        f"Load average before: {' '.join(map(str, res['load_before']))}, after: "
        f"{' '.join(map(str, res['load_after']))}. Duration {res['duration_s']} s.",
        "",
        f"Versions: {res['versions']}.",
        "",
    ]
    if res["phases"]:
        lines += [
            f"{s['rounds']} rounds per phase; throughput runs of {s['seconds']} s (at most {s['max_mb']} MB "
            f"produced), medians shown; latency at {s['latency_rate']} requests/s, {s['latency_seconds']} s per "
            f"round (Metadata: half that), percentiles over every sample of every round.",
            "",
        ]
    if s["sidecar_env"]:
        lines += [f"Sidecar environment: {' '.join(s['sidecar_env'])}.", ""]
    for broker, phases in res["phases"].items():
        lines.extend(render_broker(res, broker, phases))
    if "memory" in res:
        lines.extend(render_memory(res))
    lines.extend(render_targets(res))
    return "\n".join(lines) + "\n"


def versions(args):
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return "?"

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    commit = out(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = " (with uncommitted changes)" if out(["git", "-C", repo, "status", "--porcelain", "--", "src"]) else ""
    haproxy = out([args.haproxy, "-v"]).splitlines()[0].split(" - ")[0] if out([args.haproxy, "-v"]) else "?"
    probe = "import confluent_kafka as c; v = c.version(); print(v if isinstance(v, str) else v[0], c.libversion()[0])"
    client = out([args.python, "-c", probe])
    python_client, _, librdkafka = client.partition(" ")
    return (f"kafka-sidecar {commit}{dirty}, {haproxy}, Tansu 0.6.0, librdkafka {librdkafka} "
            f"(confluent-kafka {python_client})")


# ----------------------------------------------------------------------------- profile ------


def profile(args):
    """Where the sidecar spends its time under load, against the broker stand-in.

    1. callgrind (user-space instructions; the CPU here has no hardware counters for perf): the
       sidecar under valgrind with 4 connections of 16 KiB Produce requests for 8 s, then 1,000
       small Produce requests at 500/s. Prints the functions with the most instructions and the
       callers of memcpy.
    2. perf stat, software events: syscalls and context switches per request for kafka-sidecar and
       HAProxy under the same loads.
    3. perf record -e cpu-clock: kernel and user shares of the sidecar's CPU time with 100 busy
       connections, and the top symbols.
    """
    out = args.out
    port = free_port()
    broker = Proc("profile-broker", [args.tools, "broker", "--listen", f"127.0.0.1:{port}"], out)
    wait_port(port, broker, "broker stand-in")
    try:
        callgrind(args, out, port)
        if perf_works():
            syscalls(args, out, port)
            cpu_clock(args, out, port)
        else:
            print("perf: not usable here; skipped the syscall counts and the cpu-clock profile")
    finally:
        broker.stop()


def run_json(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"bench: {cmd[1]} failed: {done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def perf_works():
    try:
        done = subprocess.run(["perf", "stat", "-e", "context-switches", "true"], capture_output=True, timeout=30)
        return done.returncode == 0
    except OSError:
        return False


def callgrind(args, out, port):
    data = os.path.join(out, "callgrind.out")
    wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={data}"]
    sidecar = Sidecar(args, f"127.0.0.1:{port}", 1, out, "profile", wrap=wrap)
    address = f"127.0.0.1:{sidecar.port}"
    try:
        load = run_json([args.tools, "load", "--addr", address, "--connections", "4", "--seconds", "8",
                         "--frame-bytes", "16384"])
        lat = run_json([args.tools, "latency", "--addr", address, "--rate", "500", "--seconds", "2",
                        "--warm-up", "0"])
    finally:
        sidecar.proc.send_signal(signal.SIGINT)
        sidecar.proc.wait(120)
    requests = load["requests"] + lat["requests"]
    print(f"## callgrind: kafka-sidecar, {load['requests']:,} Produce requests of 16 KiB on 4 connections "
          f"({load['bytes_sent'] / 1e6:,.0f} MB), then {lat['requests']:,} of 100 B at 500/s\n")
    flat = subprocess.run(["callgrind_annotate", "--inclusive=no", data], capture_output=True, text=True).stdout
    row = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\*\s+|<\s+)?(.*)$")
    rows = []
    total = 0
    for line in flat.splitlines():
        match = row.match(line)
        if match:
            count = int(match.group(1).replace(",", ""))
            if "PROGRAM TOTALS" in line:
                total = count
            else:
                rows.append((count, short_symbol(match.group(3))))
    print(f"Total: {total:,} instructions, {total / requests:,.0f} per request (start-up included).\n")
    print("| instructions (self) | share | function |")
    print("|---:|---:|---|")
    for count, name in rows[:15]:
        print(f"| {count:,} | {100 * count / total:.1f}% | `{name}` |")
    tree = subprocess.run(["callgrind_annotate", "--tree=caller", data], capture_output=True, text=True).stdout
    callers, block = [], []
    for line in tree.splitlines():
        match = row.match(line)
        if not match:
            block = []
            continue
        if (match.group(2) or "").startswith("<"):
            block.append((int(match.group(1).replace(",", "")), short_symbol(match.group(3))))
        elif (match.group(2) or "").startswith("*"):
            if "memcpy" in match.group(3):
                callers = block
                break
            block = []
    print("\nCallers of memcpy:\n")
    print("| instructions | share | caller |")
    print("|---:|---:|---|")
    for count, name in sorted(callers, reverse=True)[:4]:
        print(f"| {count:,} | {100 * count / total:.1f}% | `{name}` |")
    print()


def short_symbol(text):
    text = text.strip()
    text = re.sub(r" \([\d,]+x\)", "", text.split(" [", 1)[0])
    if ":" in text and text.startswith(("???", "./", "/")):
        text = text.split(":", 1)[1]
    return text.replace("{{closure}}", "{closure}")


def syscalls(args, out, port):
    """Syscalls and context switches per request, kafka-sidecar and HAProxy, same loads."""
    # HAProxy's broker advertises HAProxy's port, as in the benchmark.
    haproxy_port, backend_port = free_port(), free_port()
    backend = Proc("profile-broker-haproxy", [args.tools, "broker", "--listen",
                                              f"127.0.0.1:{backend_port}=127.0.0.1:{haproxy_port}"], out)
    events = ["raw_syscalls:sys_enter", "context-switches", "syscalls:sys_enter_futex",
              "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_sendto",
              "syscalls:sys_enter_writev", "syscalls:sys_enter_write", "syscalls:sys_enter_read"]
    loads = [
        ("1 conn., 16 KiB Produce, 4 in flight", ["load", "--connections", "1", "--frame-bytes", "16384"]),
        ("100 conn., 16 KiB Produce, 4 in flight", ["load", "--connections", "100", "--frame-bytes", "16384"]),
        ("1 conn., 1 KiB Produce, 4 in flight", ["load", "--connections", "1", "--frame-bytes", "1024"]),
        ("1,000 Produce/s, one at a time", ["latency"]),
    ]
    sidecar = haproxy = None
    try:
        wait_port(backend_port, backend, "broker stand-in")
        sidecar = Sidecar(args, f"127.0.0.1:{port}", 1, out, "profile-perf")
        haproxy = HAProxy(args, backend_port, out, "profile", haproxy_port)
        print("## perf stat (software events): per request\n")
        names = ["syscalls", "context switches", "futex", "epoll_wait", "recvfrom", "sendto", "writev + write"]
        print("| load | proxy | " + " | ".join(names) + " | CPU µs |")
        print("|---|---|" + "---:|" * (len(names) + 1))
        for what, cli in loads:
            for proxy in (sidecar, haproxy):
                stat = os.path.join(out, "perf-stat.csv")
                cpu0 = cpu_seconds(proxy.pid)
                cmd = ["perf", "stat", "-x,", "-o", stat, "-e", ",".join(events), "-p", str(proxy.pid), "--",
                       args.tools, *cli, "--addr", f"127.0.0.1:{proxy.port}", "--seconds", "3"]
                result = run_json(cmd)
                cpu = cpu_seconds(proxy.pid) - cpu0
                counts = {}
                with open(stat) as f:
                    for line in f:
                        parts = line.strip().split(",")
                        if len(parts) > 2 and not line.startswith("#"):
                            try:
                                counts[parts[2]] = float(parts[0])
                            except ValueError:
                                pass
                n = result["requests"]
                writes = counts.get("syscalls:sys_enter_writev", 0) + counts.get("syscalls:sys_enter_write", 0)
                values = [counts.get(e, 0) / n for e in events[:6]] + [writes / n]
                print(f"| {what} | {proxy.kind} | " + " | ".join(f"{v:.2f}" for v in values)
                      + f" | {cpu * 1e6 / n:.1f} |")
        print()
    finally:
        for p in (sidecar, haproxy):
            if p is not None:
                p.proc.stop()
        backend.stop()


def cpu_clock(args, out, port):
    """perf record -e cpu-clock on the sidecar with 100 busy connections."""
    sidecar = Sidecar(args, f"127.0.0.1:{port}", 1, out, "profile-clock")
    data = os.path.join(out, "perf.data")
    try:
        load = subprocess.Popen([args.tools, "load", "--addr", f"127.0.0.1:{sidecar.port}", "--connections", "100",
                                 "--seconds", "5", "--frame-bytes", "16384"], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(sidecar.pid), "-o", data,
                        "--", "sleep", "3"], capture_output=True, timeout=60)
        load.communicate(timeout=60)
    finally:
        sidecar.proc.stop()
    report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym"],
                            capture_output=True, text=True).stdout
    rows = []
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith("%") and not line.startswith("#"):
            rows.append((float(parts[0].rstrip("%")), parts[1], " ".join(parts[3:])))
    kernel = sum(p for p, dso, _ in rows if dso == "[kernel.kallsyms]")
    print("## perf record -e cpu-clock: kafka-sidecar, 100 connections of 16 KiB Produce\n")
    print(f"Kernel: {kernel:.1f}% of samples, user space: {100 - kernel:.1f}%.\n")
    print("| share | where | symbol |")
    print("|---:|---|---|")
    for pct, dso, sym in rows[:15]:
        print(f"| {pct:.1f}% | {dso} | `{sym[:90]}` |")
    user = [r for r in rows if r[1] != "[kernel.kallsyms]"]
    print("\nTop user-space symbols:\n")
    print("| share | where | symbol |")
    print("|---:|---|---|")
    for pct, dso, sym in user[:10]:
        print(f"| {pct:.1f}% | {dso} | `{sym[:90]}` |")
    print()


def phase_list(text):
    phases = [p for p in text.split(",") if p]
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise argparse.ArgumentTypeError(f"unknown phase {', '.join(unknown) or '(none)'}; of {', '.join(PHASES)}")
    return ",".join(phases)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sidecar", required=True)
    parser.add_argument("--tools", required=True, help="the e2e bench binary")
    parser.add_argument("--tansu", required=True)
    parser.add_argument("--haproxy", default="haproxy")
    parser.add_argument("--time", default="/usr/bin/time")
    parser.add_argument("--python", required=True, help="python with confluent-kafka")
    parser.add_argument("--client", required=True, help="client.py")
    parser.add_argument("--out", required=True)
    parser.add_argument("--phases", default=",".join(PHASES), type=phase_list,
                        help=f"comma-separated, of {', '.join(PHASES)} (default all)")
    parser.add_argument("--brokers", default="standin,tansu", help="for the throughput and steady phases")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-mb", type=int, default=768, help="most MB one produce run sends")
    parser.add_argument("--latency-seconds", type=float, default=3.0)
    parser.add_argument("--latency-rate", type=int, default=1000)
    parser.add_argument("--load-frame-bytes", type=int, default=16 * 1024)
    parser.add_argument("--memory-frame-mib", default="1,10,50,100", help="memory phase: frame sizes, MiB")
    parser.add_argument("--memory-connections", default="1,8,64", help="memory phase: connection counts")
    parser.add_argument("--memory-max-gib", type=float, default=4.0,
                        help="memory phase: skip cells moving more than this through the proxy (both directions)")
    parser.add_argument("--sidecar-env", nargs="*", default=[], help="NAME=VALUE for the sidecar's environment")
    parser.add_argument("--allocations-ok", choices=["yes", "no"], help="outcome of benches/allocations.rs")
    parser.add_argument("--profile", action="store_true", help="profile the sidecar instead (see profile())")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.profile:
        profile(args)
    else:
        Bench(args).run()


if __name__ == "__main__":
    main()
