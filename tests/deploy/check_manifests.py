#!/usr/bin/env python3
"""Policy checks on rendered kafka-sidecar manifests (the output of `kubectl kustomize`).

Usage: check_manifests.py RENDERED.yaml CONFIG_OUT.toml

Asserts what every overlay must keep: the sidecar's security settings, probes, resources, the
Istio bypass and Prometheus annotations, a PodMonitor on a named port that exists, and a
ConfigMap holding the sidecar's config.toml (written to CONFIG_OUT.toml so the caller can
validate it with the sidecar itself). Prints one line per failed rule and exits 1 if any failed.
"""
import sys

import yaml

MSK_PORTS = {"9092", "9094", "9096", "9098"}
failures = []


def check(ok, rule):
    if not ok:
        failures.append(rule)


def main():
    rendered, config_out = sys.argv[1], sys.argv[2]
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)

    deployments = by_kind.get("Deployment", [])
    check(len(deployments) == 1, "exactly one Deployment")
    if not deployments:
        return
    pod = deployments[0]["spec"]["template"]
    annotations = pod["metadata"].get("annotations", {})
    spec = pod["spec"]

    excluded = set(annotations.get("traffic.sidecar.istio.io/excludeOutboundPorts", "").split(","))
    check(MSK_PORTS <= excluded, f"Istio excludeOutboundPorts covers {sorted(MSK_PORTS)} (has {sorted(excluded)})")
    inbound = set(annotations.get("traffic.sidecar.istio.io/excludeInboundPorts", "").split(","))
    check("9080" in inbound, "Istio excludeInboundPorts lets Prometheus reach 9080")
    check(annotations.get("prometheus.io/scrape") == "true", "prometheus.io/scrape is \"true\"")
    check(annotations.get("prometheus.io/port") == "9080", "prometheus.io/port is 9080")
    check(annotations.get("prometheus.io/path") == "/metrics", "prometheus.io/path is /metrics")
    check(annotations.get("prometheus.istio.io/merge-metrics") == "false", "Istio metrics merging is off")

    init = [c for c in spec.get("initContainers", []) if c["name"] == "kafka-sidecar"]
    regular = [c for c in spec.get("containers", []) if c["name"] == "kafka-sidecar"]
    check(len(init) + len(regular) == 1, "one kafka-sidecar container")
    if init:
        check(init[0].get("restartPolicy") == "Always", "native sidecar: restartPolicy Always")
        check("startupProbe" in init[0], "native sidecar: a startup probe gates the application")
    sidecar = (init + regular)[0]

    security = sidecar.get("securityContext", {})
    pod_security = spec.get("securityContext", {})
    check(security.get("runAsNonRoot") is True, "runAsNonRoot")
    check(security.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(security.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    check(security.get("capabilities", {}).get("drop") == ["ALL"], "all capabilities dropped")
    seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
    check(seccomp.get("type") == "RuntimeDefault", "seccomp RuntimeDefault")

    named_ports = {p.get("name"): p["containerPort"] for p in sidecar.get("ports", [])}
    check(named_ports.get("metrics") == 9080, "named port metrics = 9080")
    check(sidecar.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "liveness /healthz")
    check(sidecar.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readiness /readyz")
    resources = sidecar.get("resources", {})
    check("memory" in resources.get("requests", {}), "memory request")
    check("cpu" in resources.get("requests", {}), "cpu request")
    check("memory" in resources.get("limits", {}), "memory limit")

    grace = spec.get("terminationGracePeriodSeconds", 30)
    args = sidecar.get("args", [])
    check("--config" in args, "sidecar reads its config file")

    monitors = by_kind.get("PodMonitor", [])
    check(len(monitors) == 1, "one PodMonitor")
    for monitor in monitors:
        ports = [e.get("port") for e in monitor["spec"]["podMetricsEndpoints"]]
        check(all(p in named_ports for p in ports), f"PodMonitor ports {ports} exist on the sidecar")

    config_maps = [c for c in by_kind.get("ConfigMap", []) if "config.toml" in c.get("data", {})]
    check(len(config_maps) == 1, "a ConfigMap with config.toml")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in sidecar.get("volumeMounts", []):
        cm = volumes.get(mount["name"], {}).get("configMap", {}).get("name")
        check(cm is None or any(c["metadata"]["name"] == cm for c in config_maps), f"mounted ConfigMap {cm} exists")
    if config_maps:
        toml = config_maps[0]["data"]["config.toml"]
        with open(config_out, "w") as f:
            f.write(toml)
        drain = next((line for line in toml.splitlines() if line.startswith("drain-timeout")), None)
        check(drain is not None, "drain-timeout is set")
        if drain:
            seconds = int(drain.split("=")[1].strip().strip('"').rstrip("s"))
            check(seconds < grace, f"drain-timeout {seconds}s fits terminationGracePeriodSeconds {grace}s")


if __name__ == "__main__":
    main()
    for failure in failures:
        print(f"policy: missing: {failure}")
    sys.exit(1 if failures else 0)
