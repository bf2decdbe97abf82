//! One pod template: the sidecar container of `sidecar.yaml` added as the plan asks, its volume,
//! and the annotations merged with those already there.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Plan, Settings};

/// The container's name, by which an injected pod is recognised.
pub const NAME: &str = "kafka-sidecar";

/// The parts of the base that inject copies (`sidecar.yaml`).
const TEMPLATE: &str = include_str!("sidecar.yaml");

/// Ports the sidecar listens on by default (bootstrap listener, metrics and health), which no
/// other container of the pod may use.
const SIDECAR_PORTS: [u64; 2] = [9092, 9080];

/// Annotations whose value is a comma-separated port list, merged with the pod's own.
const PORT_LISTS: [&str; 2] =
    ["traffic.sidecar.istio.io/excludeOutboundPorts", "traffic.sidecar.istio.io/excludeInboundPorts"];

/// `sidecar.yaml`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Template {
    pub container: Map<String, Value>,
    pub volume: Map<String, Value>,
    pub annotations: Map<String, Value>,
    pub settings_args: Vec<String>,
    pub classic_args: Vec<String>,
}

impl Template {
    /// The template compiled into the binary.
    pub fn load() -> Template {
        serde_saphyr::from_str(TEMPLATE).expect("src/inject/sidecar.yaml is valid (tested)")
    }
}

/// What goes into every pod template, built once from the plan.
pub struct Sidecar {
    container: Map<String, Value>,
    classic: bool,
    /// The ConfigMap volume, when the sidecar reads a mounted config.toml.
    volume: Option<Map<String, Value>>,
    /// Annotations set unless the pod has others of the same group, in order.
    annotations: Vec<(String, String)>,
    /// Ports added to each list of [`PORT_LISTS`], in order.
    port_lists: Vec<(&'static str, Vec<String>)>,
}

impl Sidecar {
    pub fn new(plan: &Plan) -> Sidecar {
        let Template { mut container, mut volume, annotations, settings_args, classic_args } = Template::load();
        let mut args = match &plan.settings {
            Settings::ConfigMap(name) => {
                volume["configMap"]["name"] = Value::from(name.as_str());
                strings(&container["args"])
            }
            Settings::Flags { bootstrap_servers, tls } => {
                container.remove("volumeMounts");
                let mut args = vec!["--bootstrap-server".to_owned(), bootstrap_servers.join(",")];
                args.extend(settings_args);
                if *tls {
                    args.push("--tls".to_owned());
                }
                args
            }
        };
        if plan.classic {
            container.remove("restartPolicy");
            args.extend(classic_args);
        }
        container["image"] = Value::from(plan.image.as_str());
        container["args"] = Value::from(args);

        let mut port_lists = Vec::new();
        let mut plain = Vec::new();
        for (key, value) in annotations {
            let value = value.as_str().expect("annotations in sidecar.yaml are strings").to_owned();
            match PORT_LISTS.iter().find(|list| **list == key) {
                Some(list) => port_lists.push((*list, split_ports(&value))),
                None => plain.push((key, value)),
            }
        }
        // The brokers' own ports must bypass Istio too, whatever they are.
        if let Settings::Flags { bootstrap_servers, .. } = &plan.settings {
            let outbound =
                &mut port_lists.iter_mut().find(|(list, _)| *list == PORT_LISTS[0]).expect("in sidecar.yaml").1;
            for server in bootstrap_servers {
                let port = server.rsplit_once(':').map_or("", |(_, port)| port).to_owned();
                if !outbound.contains(&port) {
                    outbound.push(port);
                }
            }
        }
        let volume = matches!(plan.settings, Settings::ConfigMap(_)).then_some(volume);
        Sidecar { container, classic: plan.classic, volume, annotations: plain, port_lists }
    }

    /// Adds the sidecar to a pod template (`metadata` and `spec`, or a Pod), unless it has one
    /// already; merges the annotations either way.
    pub fn inject(&self, pod: &mut Map<String, Value>, warnings: &mut Vec<String>) -> Result<(), String> {
        let spec = pod.get_mut("spec").and_then(Value::as_object_mut).ok_or("the pod template has no spec")?;
        let containers =
            spec.get("containers").and_then(Value::as_array).ok_or("the pod template has no containers")?;
        if containers.is_empty() {
            return Err("the pod template has no containers".to_owned());
        }
        let existing = self.existing(spec)?;
        match existing {
            Some(existing) => self.check_existing(existing, warnings)?,
            None => {
                self.check_ports(spec, warnings);
                if let Some(volume) = &self.volume {
                    add_volume(spec, volume)?;
                }
                let key = if self.classic { "containers" } else { "initContainers" };
                let list = list_mut(spec, key)?;
                let container = Value::Object(self.container.clone());
                if self.classic {
                    list.push(container);
                } else {
                    // First, so that the other init containers can already reach Kafka.
                    list.insert(0, container);
                }
            }
        }
        self.merge_annotations(pod, warnings)
    }

    /// The pod's kafka-sidecar container, and whether it is an ordinary container.
    fn existing<'a>(&self, spec: &'a Map<String, Value>) -> Result<Option<(&'a Value, bool)>, String> {
        let named = |list: &str| {
            spec.get(list)
                .and_then(Value::as_array)
                .and_then(|containers| containers.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(NAME)))
        };
        match (named("initContainers"), named("containers")) {
            (Some(_), Some(_)) => Err(format!("both an init container and a container are named {NAME}")),
            (Some(init), None) if init.get("restartPolicy").and_then(Value::as_str) != Some("Always") => Err(format!(
                "it has an init container named {NAME} that is not a sidecar (no restartPolicy: Always); \
                 rename or remove it"
            )),
            (Some(init), None) => Ok(Some((init, false))),
            (None, Some(container)) => Ok(Some((container, true))),
            (None, None) => Ok(None),
        }
    }

    /// A pod injected before keeps its sidecar, if it is the same kind of container with the same
    /// image.
    fn check_existing(&self, (existing, classic): (&Value, bool), warnings: &mut Vec<String>) -> Result<(), String> {
        let image = existing.get("image").and_then(Value::as_str).unwrap_or_default();
        let wanted = self.container["image"].as_str().unwrap_or_default();
        if image != wanted {
            return Err(format!(
                "it already has a {NAME} container with image {image:?}, not {wanted:?}: \
                 remove it to inject again, or pass --image {image}"
            ));
        }
        if classic != self.classic {
            let (has, asked) = if classic {
                ("an ordinary container", "a native sidecar")
            } else {
                ("a native sidecar", "an ordinary container (--classic)")
            };
            return Err(format!("it already has {NAME} as {has}, not as {asked}: remove it to inject again"));
        }
        if existing.as_object() != Some(&self.container) {
            warnings.push(format!(
                "it already has a {NAME} container, which differs from the one inject adds: kept as it is"
            ));
        }
        Ok(())
    }

    /// Warns of other containers that declare a port the sidecar listens on by default, or a port
    /// named as the sidecar's ("metrics", which the PodMonitor selects).
    fn check_ports(&self, spec: &Map<String, Value>, warnings: &mut Vec<String>) {
        let port_names = strings_at(&self.container["ports"], "name");
        for list in ["initContainers", "containers"] {
            for container in spec.get(list).and_then(Value::as_array).into_iter().flatten() {
                let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
                for port in container.get("ports").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(number) = port.get("containerPort").and_then(Value::as_u64)
                        && SIDECAR_PORTS.contains(&number)
                    {
                        warnings.push(format!(
                            "container {name} uses port {number}, on which {NAME} listens by default \
                             (9092: bootstrap, 9080: metrics); give one of them another port"
                        ));
                    }
                    if let Some(port_name) = port.get("name").and_then(Value::as_str)
                        && port_names.iter().any(|own| own == port_name)
                    {
                        warnings.push(format!(
                            "container {name} has a port named {port_name:?} too: a PodMonitor or Service \
                             that selects {port_name:?} by name may pick either"
                        ));
                    }
                }
            }
        }
    }

    /// Merges the Istio port lists; adds the Prometheus annotations unless the pod has others.
    fn merge_annotations(&self, pod: &mut Map<String, Value>, warnings: &mut Vec<String>) -> Result<(), String> {
        let annotations = map_mut(map_mut(pod, "metadata")?, "annotations")?;
        for (key, value) in annotations.iter() {
            if !value.is_string()
                && (PORT_LISTS.contains(&key.as_str()) || self.annotations.iter().any(|(k, _)| k == key))
            {
                return Err(format!("annotation {key} is not a string: quote it"));
            }
        }

        for (key, ports) in &self.port_lists {
            match annotations.get_mut(*key) {
                Some(Value::String(existing)) => {
                    let mut merged = split_ports(existing);
                    let before = merged.len();
                    merged.extend(ports.iter().filter(|port| !split_ports(existing).contains(port)).cloned());
                    if merged.len() != before {
                        *existing = merged.join(",");
                    }
                }
                _ => {
                    annotations.insert((*key).to_owned(), Value::from(ports.join(",")));
                }
            }
        }

        let differing: Vec<String> = self
            .annotations
            .iter()
            .filter_map(|(key, value)| {
                let existing = annotations.get(key)?.as_str()?;
                (existing != value).then(|| format!("{key}: {existing:?}"))
            })
            .collect();
        if differing.is_empty() {
            for (key, value) in &self.annotations {
                annotations.entry(key.clone()).or_insert_with(|| Value::from(value.as_str()));
            }
        } else {
            warnings.push(format!(
                "the pod's Prometheus annotations ({}) are kept, so Prometheus does not scrape {NAME} \
                 through them; scrape its port \"metrics\" with a PodMonitor (deploy/kubernetes/base/podmonitor.yaml)",
                differing.join(", ")
            ));
        }
        Ok(())
    }
}

/// Adds the sidecar's volume, unless the pod has the same one already.
fn add_volume(spec: &mut Map<String, Value>, volume: &Map<String, Value>) -> Result<(), String> {
    let volumes = list_mut(spec, "volumes")?;
    let name = &volume["name"];
    match volumes.iter().find(|v| v.get("name") == Some(name)) {
        Some(existing) if existing.as_object() == Some(volume) => Ok(()),
        Some(_) => Err(format!("it already has another volume named {name}")),
        None => {
            volumes.push(Value::Object(volume.clone()));
            Ok(())
        }
    }
}

/// The mapping `key` of a pod template, made empty if absent or null.
fn map_mut<'a>(parent: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>, String> {
    let map = parent.entry(key).or_insert(Value::Null);
    if map.is_null() {
        *map = Value::Object(Map::new());
    }
    map.as_object_mut().ok_or_else(|| format!("the pod template's {key} is not a mapping"))
}

/// The list `key` of a pod spec, made empty if absent or null.
fn list_mut<'a>(spec: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Vec<Value>, String> {
    let list = spec.entry(key).or_insert(Value::Null);
    if list.is_null() {
        *list = Value::Array(Vec::new());
    }
    list.as_array_mut().ok_or_else(|| format!("the pod template's {key} is not a list"))
}

/// `"5432, 9092"` → `["5432", "9092"]`.
fn split_ports(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|port| !port.is_empty()).map(str::to_owned).collect()
}

/// The strings of a YAML list.
fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// The string `key` of each mapping of a YAML list.
fn strings_at(value: &Value, key: &str) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|item| item.get(key)?.as_str()).map(str::to_owned).collect()
}
