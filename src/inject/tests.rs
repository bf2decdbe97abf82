use serde_json::Value;

use super::pod::Template;
use super::*;

fn plan() -> Plan {
    Plan {
        image: DEFAULT_IMAGE.to_owned(),
        classic: false,
        settings: Settings::Flags { bootstrap_servers: vec!["b-1.example:9092".to_owned()], tls: false },
    }
}

fn run(input: &str) -> Injected {
    inject(input.as_bytes(), &plan()).unwrap_or_else(|errors| panic!("{errors:#?}"))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple_with_options(yaml, serde_saphyr::options! { legacy_octal_numbers: true }).unwrap()
}

const DEPLOYMENT: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations:
        traffic.sidecar.istio.io/excludeOutboundPorts: '5432, 9092'
    spec:
      containers:
        - name: web
          image: web:1
";

#[test]
fn the_template_is_valid_and_carries_the_default_image() {
    let template = Template::load();
    assert_eq!(template.container["image"], DEFAULT_IMAGE);
    assert_eq!(template.container["name"], pod::NAME);
    assert_eq!(template.volume["name"], template.container["volumeMounts"][0]["name"]);
}

#[test]
fn port_lists_are_merged_without_duplicates_and_bootstrap_ports_join_them() {
    let mut plan = plan();
    plan.settings = Settings::Flags {
        bootstrap_servers: vec!["b-1.example:19092".to_owned(), "b-2.example:9092".to_owned()],
        tls: true,
    };
    let injected = inject(DEPLOYMENT.as_bytes(), &plan).unwrap();
    let doc = &documents(&injected.yaml)[0];
    let annotations = &doc["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["traffic.sidecar.istio.io/excludeOutboundPorts"], "5432,9092,9094,9096,9098,19092");
    assert_eq!(annotations["traffic.sidecar.istio.io/excludeInboundPorts"], "9080");
    assert_eq!(annotations["prometheus.io/port"], "9080");
    let sidecar = &doc["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(
        sidecar["args"],
        serde_json::json!([
            "--bootstrap-server",
            "b-1.example:19092,b-2.example:9092",
            "--log-format",
            "json",
            "--tls"
        ])
    );
    assert!(sidecar.get("volumeMounts").is_none());
    assert!(doc["spec"]["template"]["spec"].get("volumes").is_none());
}

#[test]
fn kubernetes_scalars_keep_their_meaning() {
    // Kubernetes reads 0644 as octal (420) and yes as true; quoted, both are strings.
    let input = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: 'yes', b: '0644', c: 'on', d: '1_000'}\n\
                 ---\nkind: Thing\nmode: 0644\nflag: yes\nplain: 12:30\n";
    let out = run(input).yaml;
    let docs = documents(&out);
    assert_eq!(docs[0]["data"], serde_json::json!({"a": "yes", "b": "0644", "c": "on", "d": "1_000"}));
    assert_eq!(docs[1]["mode"], 420);
    assert_eq!(docs[1]["flag"], true);
    assert!(out.contains("a: \"yes\"") && out.contains("c: \"on\""), "{out}");
    assert_eq!(run(&out).yaml, out, "written back the same");
}

#[test]
fn prometheus_annotations_of_the_pod_win_with_a_warning() {
    let input = DEPLOYMENT.replace("'5432, 9092'", "'5432'\n        prometheus.io/port: '8080'");
    let injected = run(&input);
    let doc = &documents(&injected.yaml)[0];
    let annotations = &doc["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "8080");
    assert!(annotations.get("prometheus.io/scrape").is_none());
    assert!(annotations.get("prometheus.istio.io/merge-metrics").is_none());
    assert_eq!(injected.warnings.len(), 1, "{:?}", injected.warnings);
    assert!(injected.warnings[0].starts_with("document 1 (Deployment web): the pod's Prometheus annotations"));
}

#[test]
fn errors_name_the_document() {
    let input = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\n---\n\
         apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: shop}}\nspec: {{}}\n---\n{DEPLOYMENT}"
    );
    let errors = inject(input.as_bytes(), &plan()).unwrap_err();
    assert_eq!(errors, ["document 2 (StatefulSet shop/db): a StatefulSet without a pod template: no spec.template"]);

    let list = "apiVersion: v1\nkind: List\nitems:\n- kind: Pod\n  metadata: {name: p}\n  spec: {containers: []}\n";
    let errors = inject(list.as_bytes(), &plan()).unwrap_err();
    assert_eq!(errors, ["document 1 (List without a name), item 1 (Pod p): the pod template has no containers"]);

    let errors = inject(b"kind: Service\n---\nkind: [oops\n", &plan()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("document 2: not valid YAML: ") && errors[0].contains("line 3"), "{errors:?}");
}

#[test]
fn another_image_or_kind_of_sidecar_is_refused() {
    let once = run(DEPLOYMENT).yaml;
    let mut other = plan();
    other.image = "registry.example/kafka-sidecar:0.2.0".to_owned();
    let errors = inject(once.as_bytes(), &other).unwrap_err();
    assert!(errors[0].contains("already has a kafka-sidecar container with image \"kafka-sidecar:"), "{errors:?}");
    let mut classic = plan();
    classic.classic = true;
    let errors = inject(once.as_bytes(), &classic).unwrap_err();
    assert!(errors[0].contains("already has kafka-sidecar as a native sidecar"), "{errors:?}");
}

#[test]
fn flag_values_are_checked() {
    assert!(parse_server("b-1.example:9092").is_ok());
    assert!(parse_server("[::1]:9092").is_ok());
    for bad in ["b-1.example", ":9092", "b-1.example:0", "b-1.example:99999", "a b:9092"] {
        assert!(parse_server(bad).is_err(), "{bad}");
    }
    assert!(parse_config_map("kafka-sidecar-5f8h7k2m9t").is_ok());
    for bad in ["", "Kafka", "-a", "a..b", "a_b"] {
        assert!(parse_config_map(bad).is_err(), "{bad}");
    }
}
