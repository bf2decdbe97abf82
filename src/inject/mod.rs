//! `kafka-sidecar inject`: adds the sidecar to Kubernetes manifests, as `istioctl kube-inject` and
//! `linkerd inject` do, for `kafka-sidecar inject … | kubectl apply -f -`.
//!
//! Owns: the subcommand's flags; reading YAML documents (several separated by `---`, or a
//! `kind: List`); finding the pod template of each workload (Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, ReplicationController, Job, CronJob, Pod); adding to it the container, volume and
//! annotations of `sidecar.yaml` (`pod`), the same as `deploy/kubernetes/base`; writing every
//! document back, in order. Scalars are read as Kubernetes reads them (`0644` is octal, `yes` is
//! true) and written so that Kubernetes reads them back the same (`"yes"` stays quoted).
//!
//! Never: talks to a cluster, runs or configures the proxy, or changes a document it does not
//! inject into (other kinds pass through with the same values and field order; comments are not
//! kept). It writes nothing unless every document could be handled. It uses none of the proxy's
//! modules.

mod pod;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use serde_json::{Map, Value};

use pod::Sidecar;

/// The image injected unless `--image` names another: the base's.
pub const DEFAULT_IMAGE: &str = concat!("kafka-sidecar:", env!("CARGO_PKG_VERSION"));

/// Exit status when a document cannot be handled (EX_DATAERR).
const EXIT_DATA: u8 = 65;
/// Exit status when the input cannot be read (EX_NOINPUT).
const EXIT_NO_INPUT: u8 = 66;
/// Exit status when the output cannot be written (EX_IOERR).
const EXIT_IO: u8 = 74;

/// The flags of `kafka-sidecar inject`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "inject",
    about = "Add the kafka-sidecar container to Kubernetes manifests and print them",
    long_about = "Add the kafka-sidecar container to Kubernetes manifests and print them.\n\n\
        Reads YAML (documents separated by ---, or a List) and writes it to stdout with the \
        sidecar added to every Deployment, StatefulSet, DaemonSet, ReplicaSet, \
        ReplicationController, Job, CronJob and Pod, as deploy/kubernetes/base does: a native \
        sidecar (Kubernetes 1.29+) or, with --classic, an ordinary container, plus the Istio \
        bypass and Prometheus annotations. Other documents pass through unchanged; comments are \
        not kept. A pod that already has a kafka-sidecar container keeps it.\n\n\
        Example: kafka-sidecar inject --bootstrap-server b-1.example:9092 -f app.yaml | kubectl apply -f -",
    group(ArgGroup::new("cluster").required(true).args(["bootstrap_servers", "config_map"]))
)]
pub struct Args {
    /// Manifests to read: a file, or - for standard input [default: -]
    #[arg(value_name = "FILE", conflicts_with = "filename")]
    pub file: Option<PathBuf>,

    /// The same as FILE, spelled as kubectl does.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub filename: Option<PathBuf>,

    /// The Kafka cluster's bootstrap servers, passed to the sidecar (and their ports excluded from
    /// Istio); repeat the flag or separate with commas.
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT", value_delimiter = ',', value_parser = parse_server)]
    pub bootstrap_servers: Vec<String>,

    /// Instead of --bootstrap-server: the ConfigMap holding the sidecar's config.toml, mounted as
    /// deploy/kubernetes/base mounts it (`kubectl kustomize` names it kafka-sidecar-<hash>).
    #[arg(long, value_name = "NAME", value_parser = parse_config_map)]
    pub config_map: Option<String>,

    /// With --bootstrap-server: connect to the brokers with TLS.
    #[arg(long, conflicts_with = "config_map")]
    pub tls: bool,

    /// The sidecar's image.
    #[arg(long, default_value = DEFAULT_IMAGE, value_parser = parse_image)]
    pub image: String,

    /// An ordinary container instead of a native sidecar, for clusters older than Kubernetes 1.29;
    /// it then keeps serving for 10 s after SIGTERM while the application shuts down.
    #[arg(long)]
    pub classic: bool,
}

/// Where the sidecar gets its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settings {
    /// Flags: the bootstrap servers, and whether to use TLS.
    Flags { bootstrap_servers: Vec<String>, tls: bool },
    /// The `config.toml` of this ConfigMap, mounted as the base does.
    ConfigMap(String),
}

/// What to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub image: String,
    /// An ordinary container rather than a native sidecar.
    pub classic: bool,
    pub settings: Settings,
}

impl Args {
    /// What these flags ask to inject.
    pub fn plan(&self) -> Plan {
        let settings = match &self.config_map {
            Some(name) => Settings::ConfigMap(name.clone()),
            None => Settings::Flags { bootstrap_servers: self.bootstrap_servers.clone(), tls: self.tls },
        };
        Plan { image: self.image.clone(), classic: self.classic, settings }
    }

    /// The input file; `None` for standard input.
    fn input(&self) -> Option<&PathBuf> {
        self.file.as_ref().or(self.filename.as_ref()).filter(|path| path.as_os_str() != "-")
    }
}

/// The documents, injected, and what the user should know about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Every document, in order, separated by `---`.
    pub yaml: String,
    /// One line per finding that did not stop the injection, each naming its document.
    pub warnings: Vec<String>,
}

/// Runs `kafka-sidecar inject`: reads the input, writes the injected documents to stdout, and
/// every warning or error to stderr.
pub fn main(args: &Args) -> ExitCode {
    let mut input = Vec::new();
    let read = match args.input() {
        Some(path) => std::fs::read(path).map(|bytes| input = bytes),
        None => std::io::stdin().read_to_end(&mut input).map(drop),
    };
    if let Err(error) = read {
        let source = args.input().map_or("standard input".to_owned(), |path| path.display().to_string());
        eprintln!("kafka-sidecar inject: cannot read {source}: {error}");
        return ExitCode::from(EXIT_NO_INPUT);
    }
    match inject(&input, &args.plan()) {
        Ok(injected) => {
            for warning in &injected.warnings {
                eprintln!("kafka-sidecar inject: warning: {warning}");
            }
            match std::io::stdout().lock().write_all(injected.yaml.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                // A reader that stopped early (`| head`) is no failure of ours.
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("kafka-sidecar inject: cannot write the output: {error}");
                    ExitCode::from(EXIT_IO)
                }
            }
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("kafka-sidecar inject: {error}");
            }
            eprintln!("kafka-sidecar inject: nothing written: {} error(s)", errors.len());
            ExitCode::from(EXIT_DATA)
        }
    }
}

/// Injects the sidecar into every workload of `input` (YAML documents). On failure, every problem
/// found, each naming its document: its number (1 for the first non-empty one), kind and name.
pub fn inject(input: &[u8], plan: &Plan) -> Result<Injected, Vec<String>> {
    let sidecar = Sidecar::new(plan);
    let mut report = Report::default();
    let mut yaml = String::new();
    let options = serde_saphyr::options! {
        // Kubernetes reads YAML 1.1 scalars: a leading 0 makes an octal number (`defaultMode: 0644`).
        legacy_octal_numbers: true,
        // The defaults are sized for configuration files; manifests can be larger (`kubectl get
        // -A -o yaml`, big CRDs). The limits only stop runaway input.
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_events: 100_000_000,
            max_nodes: 50_000_000,
            max_depth: 256,
        },
    };
    let mut reader = input;
    let mut number = 0;
    for document in serde_saphyr::read_with_options::<_, Value>(&mut reader, options) {
        number += 1;
        let mut document = match document {
            Ok(document) => document,
            Err(error) => {
                report.errors.push(format!("document {number}: not valid YAML: {error}"));
                continue;
            }
        };
        let label = format!("document {number} ({})", describe(&document));
        inject_object(&mut document, &sidecar, &label, &mut report);
        match serde_saphyr::to_string(&document) {
            Ok(text) => {
                if !yaml.is_empty() {
                    yaml.push_str("---\n");
                }
                yaml.push_str(&text);
                if !text.ends_with('\n') {
                    yaml.push('\n');
                }
            }
            Err(error) => report.errors.push(format!("{label}: cannot be written back as YAML: {error}")),
        }
    }
    if report.errors.is_empty() { Ok(Injected { yaml, warnings: report.warnings }) } else { Err(report.errors) }
}

/// Errors and warnings, each prefixed with the document it concerns.
#[derive(Default)]
struct Report {
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// Injects into one object, or into the items of a List; anything else is left alone.
fn inject_object(object: &mut Value, sidecar: &Sidecar, label: &str, report: &mut Report) {
    let Some(map) = object.as_object_mut() else { return };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if kind == "List" {
        let Some(items) = map.get_mut("items").and_then(Value::as_array_mut) else { return };
        for (index, item) in items.iter_mut().enumerate() {
            let label = format!("{label}, item {} ({})", index + 1, describe(item));
            inject_object(item, sidecar, &label, report);
        }
        return;
    }
    let template = match pod_template(&kind, map) {
        None => return,
        Some(Ok(template)) => template,
        Some(Err(error)) => return report.errors.push(format!("{label}: {error}")),
    };
    let mut warnings = Vec::new();
    match sidecar.inject(template, &mut warnings) {
        Ok(()) => report.warnings.extend(warnings.into_iter().map(|warning| format!("{label}: {warning}"))),
        Err(error) => report.errors.push(format!("{label}: {error}")),
    }
}

/// The pod template of a workload (for a Pod, the Pod itself): `None` for any other kind.
fn pod_template<'a>(
    kind: &str,
    object: &'a mut Map<String, Value>,
) -> Option<Result<&'a mut Map<String, Value>, String>> {
    let path: &[&str] = match kind {
        "Pod" => return Some(Ok(object)),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            &["spec", "template"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    };
    let mut at = object;
    for (depth, key) in path.iter().enumerate() {
        at = match at.get_mut(*key).and_then(Value::as_object_mut) {
            Some(next) => next,
            None => return Some(Err(format!("a {kind} without a pod template: no {}", path[..=depth].join(".")))),
        };
    }
    Some(Ok(at))
}

/// `Deployment shop/orders`: an object's kind, namespace and name, as far as it has them.
fn describe(object: &Value) -> String {
    let text = |value: Option<&Value>| value.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let kind = text(object.get("kind")).unwrap_or_else(|| "no kind".to_owned());
    let metadata = object.get("metadata");
    let name = text(metadata.and_then(|m| m.get("name")))
        .or_else(|| text(metadata.and_then(|m| m.get("generateName"))).map(|prefix| format!("{prefix}*")));
    match (name, text(metadata.and_then(|m| m.get("namespace")))) {
        (Some(name), Some(namespace)) => format!("{kind} {namespace}/{name}"),
        (Some(name), None) => format!("{kind} {name}"),
        (None, _) => format!("{kind} without a name"),
    }
}

/// A `host:port` of `--bootstrap-server`.
fn parse_server(value: &str) -> Result<String, String> {
    let value = value.trim();
    let valid = value.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|port| port != 0)
    });
    if valid { Ok(value.to_owned()) } else { Err("expected host:port, e.g. b-1.example:9092".to_owned()) }
}

/// A ConfigMap name: a DNS subdomain (RFC 1123), as Kubernetes requires.
fn parse_config_map(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected a ConfigMap name: lower-case letters, digits, '-' and '.'".to_owned())
    }
}

/// An image reference: not empty, no spaces.
fn parse_image(value: &str) -> Result<String, String> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        Err("expected an image reference, e.g. registry.example/kafka-sidecar:0.1.0".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

#[cfg(test)]
mod tests;
