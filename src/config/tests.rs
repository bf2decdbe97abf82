//! Gathering settings from flags, environment and file, validating them, and printing them back.
//! The environment is a map handed to [`Config::load`], never the test process's own.

use std::collections::HashMap;
use std::path::PathBuf;

use super::*;

fn settings(args: &[&str]) -> Settings {
    Settings::from_args(std::iter::once("kafka-sidecar").chain(args.iter().copied())).unwrap()
}

/// Loads the configuration from `args` and the environment `env`.
fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, OsString> = env.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
    Config::load(settings(args), |name| env.get(name).cloned())
}

/// The settings named by `error`, in order.
fn named(error: &ConfigError) -> Vec<&str> {
    error.problems.iter().map(|(k, _)| k.as_str()).collect()
}

/// The reason given for `setting`.
fn reason<'a>(error: &'a ConfigError, setting: &str) -> &'a str {
    let found = error.problems.iter().find(|(k, _)| k == setting);
    found.map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("{setting} not named in {error}"))
}

/// A file holding `text`, unique to this process and `name`.
fn file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("kafka-sidecar-config-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults_fill_every_setting() {
    let config = Config::from_settings(settings(&["--bootstrap-server", "b-1:9092,b-2:9092"])).unwrap();
    assert_eq!(config.bootstrap_servers, ["b-1:9092", "b-2:9092"]);
    assert_eq!(config.bootstrap_port, 9092);
    assert_eq!(config.advertised, Advertised { host: "127.0.0.1".into(), port_base: 9100 });
    assert_eq!(config.sockets.keepalive.idle, Duration::from_secs(60));
    assert_eq!(config.sockets.user_timeout, Some(Duration::from_secs(30)));
    assert_eq!(config.admin_listen, "0.0.0.0:9080".parse().unwrap());
    assert_eq!(config.worker_threads, 1);
}

#[test]
fn every_problem_is_reported_with_its_setting() {
    let err = Config::from_settings(settings(&[
        "--listen-host",
        "not-an-ip",
        "--keepalive-idle",
        "soon",
        "--worker-threads",
        "0",
        "--log-format",
        "xml",
    ]))
    .unwrap_err();
    assert_eq!(named(&err), ["bootstrap-server", "listen-host", "keepalive-idle", "worker-threads", "log-format"]);
    assert!(err.to_string().contains("--keepalive-idle: \"soon\" is not a duration"));
    assert_eq!(reason(&err, "log-format"), "\"xml\" is not human or json");
}

#[test]
fn type_errors_are_reported_with_the_other_problems() {
    let err = load(&["--bootstrap-port", "99999", "--worker-threads", "0", "--max-inflight=-1"], &[]).unwrap_err();
    assert_eq!(named(&err), ["bootstrap-server", "bootstrap-port", "max-inflight", "worker-threads"]);
    assert!(err.to_string().contains("--bootstrap-port: \"99999\" is not a port (0-65535)"), "{err}");
    assert_eq!(reason(&err, "max-inflight"), "\"-1\" is not a whole number");
}

#[test]
fn environment_type_errors_are_reported_with_flag_problems() {
    let env = [("KAFKA_SIDECAR_BOOTSTRAP_PORT", "abc"), ("KAFKA_SIDECAR_TLS", "yes")];
    let err = load(&["--bootstrap-server", "b:9092", "--worker-threads", "0"], &env).unwrap_err();
    assert_eq!(named(&err), ["tls", "bootstrap-port", "worker-threads"]);
    assert_eq!(reason(&err, "bootstrap-port"), "\"abc\" is not a port (0-65535)");
    assert_eq!(reason(&err, "tls"), "\"yes\" is not true or false");
}

#[test]
fn file_type_errors_are_reported_with_flag_problems() {
    let path = file("types", "bootstrap-port = 99999\nkeepalive-count = \"many\"\nconnect-timeout = 1500\n");
    let err = load(&["--config", path.to_str().unwrap(), "--bootstrap-server", "b:9092", "--log-format", "xml"], &[])
        .unwrap_err();
    assert_eq!(named(&err), ["bootstrap-port", "connect-timeout", "keepalive-count", "log-format"]);
    assert_eq!(reason(&err, "keepalive-count"), "\"many\" is not a whole number");
    assert_eq!(reason(&err, "connect-timeout"), "\"1500\" has no unit: write 1500ms or 1500s");
}

#[test]
fn file_values_may_be_text_numbers_or_booleans() {
    let path = file(
        "scalars",
        "bootstrap-server = \"a:9092,b:9092\"\nbootstrap-port = \"9093\"\nconnect-attempts = 4\ntls = true\n",
    );
    let config = load(&["--config", path.to_str().unwrap()], &[]).unwrap();
    assert_eq!(config.bootstrap_servers, ["a:9092", "b:9092"]);
    assert_eq!((config.bootstrap_port, config.upstream.connect_attempts), (9093, 4));
    assert!(config.tls.is_some());
}

#[test]
fn a_broken_file_is_one_problem_and_the_flags_are_still_checked() {
    let path = file("syntax", "bootstrap-port = \n");
    let err = load(&["--config", path.to_str().unwrap(), "--bootstrap-server", "b:9092", "--worker-threads", "0"], &[])
        .unwrap_err();
    assert_eq!(named(&err), ["config", "worker-threads"]);
    assert!(reason(&err, "config").starts_with(path.to_str().unwrap()), "{err}");

    let missing = std::env::temp_dir().join("kafka-sidecar-no-such-config.toml");
    let err = load(&["--config", missing.to_str().unwrap(), "--bootstrap-port", "x"], &[]).unwrap_err();
    assert_eq!(named(&err), ["config", "bootstrap-server", "bootstrap-port"]);
    assert!(reason(&err, "config").starts_with("cannot read"), "{err}");
}

#[test]
fn unknown_file_keys_are_refused() {
    assert!(toml::from_str::<Settings>("bootstrap-srevers = []").is_err());

    let path = file("unknown", "bootstrap-servers = [\"b:9092\"]\nbootstrap-srevers = []\nconfig = \"x\"\n");
    let err = load(&["--config", path.to_str().unwrap(), "--worker-threads", "0"], &[]).unwrap_err();
    assert_eq!(named(&err), ["config", "config", "worker-threads"]);
    assert!(err.problems[0].1.contains("unknown key \"bootstrap-srevers\""), "{err}");
    assert!(err.problems[1].1.contains("unknown key \"config\""), "{err}");
}

#[test]
fn a_list_or_table_where_a_value_belongs_names_the_setting() {
    let err = Settings::from_toml("bootstrap-port = [9092]\nlog-level = { a = 1 }\nbootstrap-servers = [[\"b\"]]\n")
        .unwrap_err();
    assert_eq!(named(&err), ["bootstrap-port", "bootstrap-server", "log-level"]);
    assert_eq!(reason(&err, "bootstrap-port"), "the file gives a list, not a value of this setting");
}

#[test]
fn flags_override_the_file() {
    let path =
        file("override", "bootstrap-servers = [\"file:9092\"]\nbootstrap-port = 1234\nkeepalive-idle = \"20s\"\n");
    let config = load(&["--config", path.to_str().unwrap(), "--bootstrap-port", "4321"], &[]).unwrap();
    assert_eq!(config.bootstrap_servers, ["file:9092"]);
    assert_eq!(config.bootstrap_port, 4321);
    assert_eq!(config.sockets.keepalive.idle, Duration::from_secs(20));
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let path = file(
        "precedence",
        "bootstrap-servers = [\"file:9092\"]\nbootstrap-port = 1111\nconnect-timeout = \"1s\"\nlog-level = \"debug\"\n",
    );
    let env = [
        ("KAFKA_SIDECAR_CONFIG", path.to_str().unwrap()),
        ("KAFKA_SIDECAR_BOOTSTRAP_SERVER", "env-1:9092,env-2:9092"),
        ("KAFKA_SIDECAR_BOOTSTRAP_PORT", "2222"),
        ("KAFKA_SIDECAR_CONNECT_TIMEOUT", "2s"),
    ];
    let config = load(&["--bootstrap-port", "3333"], &env).unwrap();
    assert_eq!(config.bootstrap_port, 3333);
    assert_eq!(config.bootstrap_servers, ["env-1:9092", "env-2:9092"]);
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.log_level, "debug");

    let config = load(&["--bootstrap-server", "flag:9092"], &env).unwrap();
    assert_eq!(config.bootstrap_servers, ["flag:9092"]);
}

#[test]
fn every_setting_reads_the_variable_named_after_its_flag() {
    let args: Vec<clap::Arg> = Settings::cli().get_arguments().cloned().collect();
    let mut checked = 0;
    for arg in args.iter().filter(|arg| arg.get_action().takes_values()) {
        let long = arg.get_long().unwrap();
        let variable = format!("KAFKA_SIDECAR_{}", long.to_uppercase().replace('-', "_"));
        let env = |name: &str| (name == variable).then(|| OsString::from("from-the-environment"));
        let settings = sources::gather(Settings::default(), &env, &mut Problems::default());
        let table = toml::Table::try_from(&settings).unwrap();
        assert_eq!(table.len(), 1, "{variable} sets only --{long}: {table:?}");
        assert!(table.values().next().unwrap().to_string().contains("from-the-environment"), "{variable}: {table:?}");
        let help = arg.get_help().unwrap().to_string();
        assert!(help.ends_with(&format!("[env: {variable}]")), "--{long}: {help}");
        checked += 1;
    }
    assert_eq!(checked, args.len() - 1, "every flag but --check-config is a setting");
    assert!(!Settings::cli().render_long_help().to_string().contains("KAFKA_SIDECAR_CHECK_CONFIG"));
}

#[test]
fn the_old_plural_bootstrap_variable_still_works_and_the_singular_wins() {
    let plural = ("KAFKA_SIDECAR_BOOTSTRAP_SERVERS", "old:9092");
    assert_eq!(load(&[], &[plural]).unwrap().bootstrap_servers, ["old:9092"]);
    let both = [plural, ("KAFKA_SIDECAR_BOOTSTRAP_SERVER", "new:9092")];
    assert_eq!(load(&[], &both).unwrap().bootstrap_servers, ["new:9092"]);
}

#[test]
fn clap_refuses_only_unknown_flags() {
    let unknown = Settings::from_args(["kafka-sidecar", "--unknown-flag"]).unwrap_err();
    assert!(unknown.use_stderr());
    let help = Settings::from_args(["kafka-sidecar", "--help"]).unwrap_err();
    assert!(!help.use_stderr(), "--help is not a failure");
    assert!(help.to_string().contains("[env: KAFKA_SIDECAR_CONNECT_TIMEOUT]"), "{help}");
    // Values of any type reach validation as text.
    let s = settings(&["--bootstrap-port", "99999", "--tls", "maybe", "--max-frame-bytes", "lots"]);
    assert_eq!(s.bootstrap_port.as_deref(), Some("99999"));
}

#[test]
fn durations_need_a_unit() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("7"), Err("\"7\" has no unit: write 7ms or 7s".into()));
    assert!(parse_duration("2 fortnights").is_err());
    assert!(parse_duration("").is_err());

    let err = load(&["--bootstrap-server", "b:9092", "--connect-timeout", "1500"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration:\n  --connect-timeout: \"1500\" has no unit: write 1500ms or 1500s"
    );
    let config = load(&["--bootstrap-server", "b:9092", "--client-idle-timeout", "0", "--user-timeout", "0"], &[]);
    let config = config.unwrap();
    assert_eq!((config.client_idle_timeout, config.sockets.user_timeout), (None, None));
}

#[test]
fn check_config_output_names_settings_by_flag_and_masks_the_password() {
    let env = [("KAFKA_SIDECAR_SASL_PASSWORD", "s3cret-value")];
    let args = ["--bootstrap-server", "b:9092", "--sasl-mechanism", "PLAIN", "--sasl-username", "app"];
    let text = load(&args, &env).unwrap().effective_toml();
    for line in [
        "bootstrap-servers = [\"b:9092\"]",
        "bootstrap-port = 9092",
        "connect-timeout = \"5s\"",
        "keepalive-idle = \"1m\"",
        "client-idle-timeout = \"0s\"",
        "tls = false",
        "sasl-mechanism = \"PLAIN\"",
        "sasl-username = \"app\"",
        "sasl-password = \"***\"",
        "log-format = \"human\"",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn check_config_output_reads_back_as_the_same_configuration() {
    let args = [
        "--bootstrap-server",
        "a:9092,b:9093",
        "--connect-timeout",
        "1500ms",
        "--metadata-refresh",
        "1h 30m",
        "--tls-ca-file",
        "/etc/ca \"quoted\".pem",
        "--max-inflight",
        "7",
        "--log-format",
        "json",
    ];
    let text = load(&args, &[]).unwrap().effective_toml();
    assert!(text.contains("connect-timeout = \"1s 500ms\"\n"), "{text}");
    let again = Config::from_settings(Settings::from_toml(&text).unwrap()).unwrap();
    assert_eq!(again.effective_toml(), text);
}
