//! `kafka-sidecar inject`, run as a user runs it: on the rendered kustomize base (it must give the
//! base back, so the injector cannot drift from `deploy/kubernetes/`), on real-world manifests
//! (`tests/inject/`), in both modes. Every output is validated strictly against the Kubernetes
//! schemas offline, and injecting again changes nothing.

use std::process::Output;
use std::time::Duration;

use kafka_sidecar_test_support as support;
use serde_json::{Value, json};
use support::{expect_success, expect_valid_manifests, kustomize, run_with_input, sidecar_command, temp_path};

const NAME: &str = "kafka-sidecar";
const FIXTURES: [&str; 3] = ["web", "workers", "list"];
const WORKLOADS: [&str; 8] =
    ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob", "Pod"];
/// The annotations the base sets on its pod template, and inject with it.
const ANNOTATIONS: [&str; 6] = [
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "prometheus.io/scrape",
    "prometheus.io/port",
    "prometheus.io/path",
    "prometheus.istio.io/merge-metrics",
];

fn run(args: &[&str], input: &str) -> Output {
    let mut cmd = sidecar_command();
    cmd.arg("inject").args(args);
    run_with_input(cmd, Some(input), Duration::from_secs(60))
}

/// Stdout of a successful run, and its stderr (the warnings).
fn inject(args: &[&str], input: &str) -> (String, String) {
    let output = run(args, input);
    let stdout = expect_success(&format!("kafka-sidecar inject {args:?}"), &output);
    (stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The documents of a YAML stream, read as Kubernetes reads them (0644 is octal).
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple_with_options(yaml, serde_saphyr::options! { legacy_octal_numbers: true })
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn to_yaml(documents: &[Value]) -> String {
    documents.iter().map(|d| serde_saphyr::to_string(d).unwrap()).collect::<Vec<_>>().join("---\n")
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/inject/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every object: the documents, and the items of Lists in their place.
fn objects(documents: &[Value]) -> Vec<Value> {
    let mut objects = Vec::new();
    for document in documents {
        match document["kind"].as_str() {
            Some("List") => objects.extend(document["items"].as_array().unwrap().iter().cloned()),
            _ => objects.push(document.clone()),
        }
    }
    objects
}

/// Validates every object of `yaml` (List items one by one) against each Kubernetes version.
fn validate(what: &str, yaml: &str, versions: &[&str]) {
    let file = temp_path(&format!("{}.yaml", what.replace(['/', ' '], "-")));
    std::fs::write(&file, to_yaml(&objects(&documents(yaml)))).unwrap();
    for version in versions {
        expect_valid_manifests(what, &file, version);
    }
}

/// The pod template of a workload (a Pod itself); `None` for other kinds.
fn pod(object: &Value) -> Option<&Value> {
    match object["kind"].as_str()? {
        "Pod" => Some(object),
        "CronJob" => Some(&object["spec"]["jobTemplate"]["spec"]["template"]),
        kind if WORKLOADS.contains(&kind) => Some(&object["spec"]["template"]),
        _ => None,
    }
}

fn pod_mut(object: &mut Value) -> Option<&mut Value> {
    match object["kind"].as_str()? {
        "Pod" => Some(object),
        "CronJob" => Some(&mut object["spec"]["jobTemplate"]["spec"]["template"]),
        kind if WORKLOADS.contains(&kind) => Some(&mut object["spec"]["template"]),
        _ => None,
    }
}

fn list<'a>(spec: &'a Value, key: &str) -> &'a [Value] {
    spec.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Takes out of a workload what inject adds: the sidecar, its volume, the annotations of the base.
fn strip(object: &mut Value) {
    let Some(pod) = pod_mut(object) else { return };
    let spec = pod["spec"].as_object_mut().unwrap();
    for (key, item) in [("initContainers", NAME), ("containers", NAME), ("volumes", "kafka-sidecar-config")] {
        if let Some(items) = spec.get_mut(key).and_then(Value::as_array_mut) {
            items.retain(|i| i["name"] != item);
            if items.is_empty() {
                spec.remove(key);
            }
        }
    }
    let Some(metadata) = pod.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    if let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
        annotations.retain(|key, _| !ANNOTATIONS.contains(&key.as_str()));
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
    // A template without metadata gets one for the annotations.
    if metadata.is_empty() {
        pod.as_object_mut().unwrap().remove("metadata");
    }
}

/// The sidecar container of a pod template, and whether it is an ordinary container.
fn sidecar(pod: &Value) -> (&Value, bool) {
    let spec = &pod["spec"];
    let init: Vec<&Value> = list(spec, "initContainers").iter().filter(|c| c["name"] == NAME).collect();
    let plain: Vec<&Value> = list(spec, "containers").iter().filter(|c| c["name"] == NAME).collect();
    match (init.as_slice(), plain.as_slice()) {
        ([init], []) => (init, false),
        ([], [plain]) => (plain, true),
        _ => panic!("not exactly one {NAME} container: {pod:#}"),
    }
}

fn config_map_name(documents: &[Value]) -> String {
    let config_map = documents.iter().find(|d| d["kind"] == "ConfigMap").expect("the base has a ConfigMap");
    config_map["metadata"]["name"].as_str().unwrap().to_owned()
}

#[test]
fn injected_into_the_stripped_base_it_gives_the_base_back() {
    let rendered = kustomize("deploy/kubernetes/base");
    let base = documents(&rendered);
    let mut stripped = base.clone();
    stripped.iter_mut().for_each(strip);
    assert_ne!(stripped, base);
    let config_map = config_map_name(&base);

    let (out, warnings) = inject(&["--config-map", &config_map], &to_yaml(&stripped));
    assert_eq!(documents(&out), base, "inject must add exactly what deploy/kubernetes/base has:\n{out}");
    assert_eq!(warnings, "");
    validate("injected base", &out, &["1.30.0"]);

    // The base has its sidecar already: inject leaves it as it is.
    let (again, warnings) = inject(&["--config-map", &config_map], &rendered);
    assert_eq!(documents(&again), base);
    assert_eq!(warnings, "");
}

#[test]
fn classic_injection_gives_the_classic_overlay() {
    let overlay = documents(&kustomize("deploy/kubernetes/overlays/classic-sidecar"));
    let mut stripped = overlay.clone();
    stripped.iter_mut().for_each(strip);
    let config_map = config_map_name(&overlay);

    let (out, _) = inject(&["--classic", "--config-map", &config_map], &to_yaml(&stripped));
    validate("classic injection", &out, &["1.27.0", "1.30.0"]);
    let mut injected = documents(&out);
    let deployment = injected.iter().position(|d| d["kind"] == "Deployment").unwrap();
    let (container, classic) = sidecar(pod(&injected[deployment]).unwrap());
    let (expected, _) = sidecar(pod(&overlay[deployment]).unwrap());
    assert!(classic);
    assert_eq!(container, expected, "the classic container of inject and of overlays/classic-sidecar");
    // The overlay puts the sidecar first, inject last (the application stays kubectl's default);
    // everything else is the same.
    let mut overlay = overlay;
    for documents in [&mut injected, &mut overlay] {
        let containers = pod_mut(&mut documents[deployment]).unwrap()["spec"]["containers"].as_array_mut().unwrap();
        containers.retain(|c| c["name"] != NAME);
    }
    assert_eq!(injected, overlay);
}

/// With --bootstrap-server the settings come as flags: they must give the sidecar the
/// configuration the base's config.toml (and the overlays') gives it.
#[test]
fn flags_configure_the_sidecar_as_the_config_files_do() {
    let check = |args: &[String]| {
        let output = sidecar_command().args(args).arg("--check-config").output().unwrap();
        expect_success(&format!("kafka-sidecar {args:?} --check-config"), &output)
    };
    let injected_args = |flags: &[&str], input: &str| {
        let (out, _) = inject(flags, input);
        let documents = documents(&out);
        let deployment = documents.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let (container, _) = sidecar(pod(deployment).unwrap());
        assert!(container.get("volumeMounts").is_none(), "no config file to mount: {container:#}");
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let file_args = |dir: &str, extra: &[&str]| {
        let mut args =
            vec!["--config".to_owned(), format!("{}/deploy/kubernetes/{dir}/config.toml", env!("CARGO_MANIFEST_DIR"))];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let mut stripped = documents(&kustomize("deploy/kubernetes/base"));
    stripped.iter_mut().for_each(strip);
    let input = to_yaml(&stripped);
    let servers = "kafka-0.kafka.example:9092,kafka-1.kafka.example:9092,kafka-2.kafka.example:9092";

    let native = injected_args(&["--bootstrap-server", servers], &input);
    assert_eq!(check(&native), check(&file_args("base", &[])));

    // The classic overlay's own flags after the file.
    let overlay = documents(&kustomize("deploy/kubernetes/overlays/classic-sidecar"));
    let deployment = overlay.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let overlay_args: Vec<&str> = sidecar(pod(deployment).unwrap()).0["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .skip_while(|a| *a != "/etc/kafka-sidecar/config.toml")
        .skip(1)
        .collect();
    assert!(overlay_args.contains(&"--shutdown-delay"), "{overlay_args:?}");
    let classic = injected_args(&["--classic", "--bootstrap-server", servers], &input);
    assert_eq!(check(&classic), check(&file_args("base", &overlay_args)));

    let msk = "b-1.orders.abc123.c2.kafka.eu-west-1.amazonaws.com:9094,\
               b-2.orders.abc123.c2.kafka.eu-west-1.amazonaws.com:9094,\
               b-3.orders.abc123.c2.kafka.eu-west-1.amazonaws.com:9094";
    let tls = injected_args(&["--bootstrap-server", msk, "--tls"], &input);
    assert_eq!(check(&tls), check(&file_args("overlays/msk", &[])));
}

#[test]
fn fixtures_are_injected_validated_and_stable() {
    for fixture_name in FIXTURES {
        let input = fixture(fixture_name);
        let before = objects(&documents(&input));
        for classic in [false, true] {
            let what = format!("{fixture_name}{}", if classic { " --classic" } else { "" });
            let mut args = vec!["--bootstrap-server", "b-1.example:9092,b-2.example:9092"];
            if classic {
                args.push("--classic");
            }
            let (out, _) = inject(&args, &input);
            let versions: &[&str] = if classic { &["1.27.0", "1.30.0"] } else { &["1.30.0"] };
            validate(&what, &out, versions);
            let (again, _) = inject(&args, &out);
            assert_eq!(again, out, "{what}: injecting twice changes nothing");

            let after = objects(&documents(&out));
            assert_eq!(after.len(), before.len(), "{what}");
            let mut injected = 0;
            for (old, new) in before.iter().zip(&after) {
                let Some(pod_template) = pod(new) else {
                    assert_eq!(old, new, "{what}: passes through unchanged");
                    continue;
                };
                injected += 1;
                let (container, is_classic) = sidecar(pod_template);
                assert_eq!(is_classic, classic, "{what}: {new:#}");
                assert_eq!(container["image"], "kafka-sidecar:0.1.0");
                let spec = &pod_template["spec"];
                let old_spec = &pod(old).unwrap()["spec"];
                if classic {
                    assert_eq!(list(spec, "containers").last(), Some(container), "{what}: appended");
                    assert_eq!(
                        list(spec, "containers")[..list(old_spec, "containers").len()],
                        *list(old_spec, "containers")
                    );
                    assert_eq!(list(spec, "initContainers"), list(old_spec, "initContainers"));
                } else {
                    assert_eq!(list(spec, "initContainers").first(), Some(container), "{what}: first");
                    assert_eq!(list(spec, "initContainers")[1..], *list(old_spec, "initContainers"));
                    assert_eq!(list(spec, "containers"), list(old_spec, "containers"));
                }
                let mut restored = new.clone();
                strip(&mut restored);
                let mut old = old.clone();
                strip(&mut old);
                assert_eq!(restored, old, "{what}: nothing else changed");
            }
            assert!(injected > 0, "{what}");
        }
    }
}

#[test]
fn annotations_are_merged_and_yaml_keeps_its_meaning() {
    let (out, warnings) = inject(&["--bootstrap-server", "b-1.example:9092"], &fixture("web"));
    assert_eq!(warnings, "");
    let web = documents(&out);
    let deployment = &web[2];
    assert_eq!(deployment["metadata"]["name"], "web");
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["traffic.sidecar.istio.io/excludeOutboundPorts"], "5432,9092,9094,9096,9098");
    assert_eq!(annotations["traffic.sidecar.istio.io/excludeInboundPorts"], "9080");
    assert_eq!(annotations["sidecar.istio.io/inject"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9080");
    assert_eq!(annotations["prometheus.istio.io/merge-metrics"], "false");
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 0o400, "0400 is octal to Kubernetes");
    assert_eq!(spec["containers"][0]["env"][1], json!({"name": "VERBOSE", "value": "no"}));
    assert_eq!(web[0]["data"]["FEATURE_CHECKOUT"], "yes");
    assert_eq!(web[0]["data"]["UMASK"], "0022");
    assert!(
        out.contains("FEATURE_CHECKOUT: \"yes\"") && out.contains("value: \"no\""),
        "YAML 1.1 booleans quoted:\n{out}"
    );

    // A pod with Prometheus annotations of its own keeps them, and is told.
    let (out, warnings) = inject(&["--bootstrap-server", "b-1.example:9092"], &fixture("workers"));
    let ledger = &documents(&out)[0];
    let annotations = &ledger["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "8081");
    assert!(annotations.get("prometheus.io/path").is_none());
    assert_eq!(annotations["traffic.sidecar.istio.io/excludeOutboundPorts"], "9092,9094,9096,9098");
    assert!(
        warnings.contains("warning: document 1 (StatefulSet billing/ledger): the pod's Prometheus annotations (prometheus.io/port: \"8081\") are kept"),
        "{warnings}"
    );
    assert!(
        warnings.contains("document 1 (StatefulSet billing/ledger): container ledger has a port named \"metrics\" too"),
        "{warnings}"
    );
    let cron = documents(&out).into_iter().find(|d| d["kind"] == "CronJob").unwrap();
    let (container, _) = sidecar(&cron["spec"]["jobTemplate"]["spec"]["template"]);
    assert_eq!(container["restartPolicy"], "Always");
}

#[test]
fn reads_a_file_argument_or_standard_input() {
    let path = format!("{}/tests/inject/workers.yaml", env!("CARGO_MANIFEST_DIR"));
    let flags = ["--bootstrap-server", "b-1.example:9092"];
    let (from_stdin, _) = inject(&flags, &fixture("workers"));
    let (dash, _) = inject(&[&flags[..], &["-"]].concat(), &fixture("workers"));
    let (positional, _) = inject(&[&flags[..], &[path.as_str()]].concat(), "");
    let (dash_f, _) = inject(&[&flags[..], &["-f", path.as_str()]].concat(), "");
    assert!(from_stdin.contains(NAME));
    assert_eq!(dash, from_stdin);
    assert_eq!(positional, from_stdin);
    assert_eq!(dash_f, from_stdin);

    let missing = run(&["--bootstrap-server", "b-1.example:9092", "-f", "/nonexistent/app.yaml"], "");
    assert_eq!(missing.status.code(), Some(66));
    assert!(stderr(&missing).contains("cannot read /nonexistent/app.yaml"), "{}", stderr(&missing));
}

#[test]
fn documents_that_cannot_be_handled_are_named_and_nothing_is_written() {
    let flags = ["--bootstrap-server", "b-1.example:9092"];
    let refused = |input: &str, args: &[&str], expected: &[&str]| {
        let output = run(args, input);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(65), "{err}");
        assert!(output.stdout.is_empty(), "nothing written: {}", String::from_utf8_lossy(&output.stdout));
        for line in expected {
            assert!(err.contains(line), "{line:?} not in:\n{err}");
        }
    };
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";

    refused(
        &format!("{service}---\nkind: Deployment\nmetadata: {{name: [broken\n"),
        &flags,
        &["document 2: not valid YAML", "at line 7"],
    );
    refused(
        &format!(
            "{service}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: shop}}\nspec: {{replicas: 1}}\n"
        ),
        &flags,
        &["document 2 (Deployment shop/api): a Deployment without a pod template: no spec.template"],
    );
    refused(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec: {schedule: '@daily', jobTemplate: {}}\n",
        &flags,
        &["document 1 (CronJob nightly): a CronJob without a pod template: no spec.jobTemplate.spec"],
    );
    let (injected, _) = inject(&flags, &fixture("web"));
    refused(
        &injected,
        &["--bootstrap-server", "b-1.example:9092", "--image", "registry.example/kafka-sidecar:0.2.0"],
        &[
            "document 3 (Deployment shop/web): it already has a kafka-sidecar container with image \"kafka-sidecar:0.1.0\"",
        ],
    );
    refused(
        &injected,
        &["--classic", "--bootstrap-server", "b-1.example:9092"],
        &["document 3 (Deployment shop/web): it already has kafka-sidecar as a native sidecar"],
    );
    let (list, _) = inject(&flags, &fixture("list"));
    refused(
        &list,
        &["--bootstrap-server", "b-1.example:9092", "--image", "other:1"],
        &["document 1 (List without a name), item 1 (Deployment payments/payments): it already has"],
    );
}

#[test]
fn usage_errors_exit_64_and_the_proxy_flags_still_work() {
    for args in [
        &[][..],
        &["--bootstrap-server", "b-1.example"],
        &["--bootstrap-server", "b-1.example:9092", "--config-map", "kafka-sidecar"],
        &["--config-map", "kafka-sidecar", "--tls"],
        &["--config-map", "Not_A_Name"],
        &["--bootstrap-server", "b-1.example:9092", "--unknown"],
    ] {
        let output = run(args, "");
        assert_eq!(output.status.code(), Some(64), "{args:?}: {}", stderr(&output));
        assert!(output.stdout.is_empty());
    }
    let help = run(&["--help"], "");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--bootstrap-server <HOST:PORT>"));

    let help = sidecar_command().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success() && text.contains("inject") && text.contains("--bootstrap-server"), "{text}");
    let checked =
        sidecar_command().args(["--bootstrap-server", "b-1.example:9092", "--check-config"]).output().unwrap();
    assert!(expect_success("the proxy's flags", &checked).contains("bootstrap-servers = [\"b-1.example:9092\"]"));
}
