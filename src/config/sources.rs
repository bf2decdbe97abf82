//! Where settings come from besides the flags: `KAFKA_SIDECAR_*` environment variables, each named
//! after its flag, and the TOML file named by `--config`. All three become tables of text keyed
//! like the file, laid over one another (flags over environment over file) and read back as
//! [`Settings`], so no source can refuse a value before validation sees every problem.

use std::ffi::OsString;

use clap::{Arg, ArgAction, CommandFactory};
use toml::{Table, Value};

use super::{Problems, Settings};

/// Prefix of every setting's environment variable.
const PREFIX: &str = "KAFKA_SIDECAR_";

/// Old variable names still read when the current one is unset: (old name, flag).
const OLD_VARIABLES: &[(&str, &str)] = &[("KAFKA_SIDECAR_BOOTSTRAP_SERVERS", "bootstrap-server")];

/// The environment variable of a setting: `--connect-timeout` is `KAFKA_SIDECAR_CONNECT_TIMEOUT`.
/// `None` for flags that set nothing (`--check-config`, `--help`).
pub(super) fn variable(arg: &Arg) -> Option<String> {
    let long = arg.get_long()?;
    arg.get_action().takes_values().then(|| format!("{PREFIX}{}", long.to_ascii_uppercase().replace('-', "_")))
}

/// Everything the flags, the environment (read through `env`) and the file named by `--config`
/// give, each setting from the first of them that has it. Problems go to `problems`.
pub(super) fn gather(flags: Settings, env: &dyn Fn(&str) -> Option<OsString>, problems: &mut Problems) -> Settings {
    let mut given = environment(env, problems);
    given.extend(Table::try_from(&flags).expect("settings of text are a TOML table"));
    let mut merged = match given.get("config") {
        Some(Value::String(path)) => file(path, problems),
        _ => Table::new(),
    };
    merged.extend(given);
    Settings { check_config: flags.check_config, ..settings(merged, problems) }
}

/// A table of text (as built here) read as settings.
pub(super) fn settings(table: Table, problems: &mut Problems) -> Settings {
    table.try_into().unwrap_or_else(|e| {
        problems.push("config", format!("{e}"));
        Settings::default()
    })
}

/// The settings given as environment variables.
fn environment(env: &dyn Fn(&str) -> Option<OsString>, problems: &mut Problems) -> Table {
    let mut table = Table::new();
    for arg in Settings::command().get_arguments() {
        let (Some(variable), Some(long)) = (variable(arg), arg.get_long()) else {
            continue;
        };
        let old = OLD_VARIABLES.iter().filter(|(_, flag)| *flag == long).map(|(old, _)| *old);
        let found = std::iter::once(variable.as_str()).chain(old).find_map(|name| Some((name, env(name)?)));
        let Some((name, value)) = found else {
            continue;
        };
        match value.into_string() {
            Ok(text) if is_list(arg) => table.insert(key(arg), Value::Array(vec![Value::String(text)])),
            Ok(text) => table.insert(key(arg), Value::String(text)),
            Err(_) => {
                problems.push(long, format!("{name} is not valid UTF-8"));
                continue;
            }
        };
    }
    table
}

/// The settings of the file at `path`; an unreadable file is one problem.
fn file(path: &str, problems: &mut Problems) -> Table {
    match std::fs::read_to_string(path) {
        Ok(text) => file_text(&text, path, problems),
        Err(e) => {
            problems.push("config", format!("cannot read {path}: {e}"));
            Table::new()
        }
    }
}

/// The settings in a file's text, every value turned to text as a flag would give it; `origin`
/// names the file in problems. Keys are the long flag names (`bootstrap-servers` or
/// `bootstrap-server` for the list); any other key is a problem.
pub(super) fn file_text(text: &str, origin: &str, problems: &mut Problems) -> Table {
    let parsed: Table = match text.parse() {
        Ok(table) => table,
        Err(e) => {
            problems.push("config", format!("{origin}: {e}"));
            return Table::new();
        }
    };
    let command = Settings::command();
    let mut table = Table::new();
    for (name, value) in parsed {
        let arg = command.get_arguments().find(|arg| {
            arg.get_id() != "config" && variable(arg).is_some() && (key(arg) == name || arg.get_long() == Some(&name))
        });
        let Some(arg) = arg else {
            problems.push("config", format!("{origin}: unknown key {name:?} (keys are the long flag names)"));
            continue;
        };
        let (key, long) = (key(arg), arg.get_long().unwrap_or_default());
        if table.contains_key(&key) {
            problems.push("config", format!("{origin}: {name:?} sets {key:?} again"));
            continue;
        }
        let value = match (value, is_list(arg)) {
            (Value::Array(items), true) => {
                let texts: Option<Vec<Value>> =
                    items.into_iter().map(|item| text_of(item).map(Value::String)).collect();
                texts.map(Value::Array).ok_or("a list or table inside the list")
            }
            (value, true) => text_of(value).map(|text| Value::Array(vec![Value::String(text)])).ok_or("a table"),
            (value, false) => {
                let kind = value.type_str();
                text_of(value).map(Value::String).ok_or(if kind == "array" { "a list" } else { "a table" })
            }
        };
        match value {
            Ok(value) => {
                table.insert(key, value);
            }
            Err(kind) => problems.push(long, format!("{origin} gives {kind}, not a value of this setting")),
        }
    }
    table
}

/// A value as text, the way a flag gives it; `None` for a list or table.
fn text_of(value: Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text),
        Value::Integer(number) => Some(number.to_string()),
        Value::Float(number) => Some(number.to_string()),
        Value::Boolean(flag) => Some(flag.to_string()),
        Value::Datetime(when) => Some(when.to_string()),
        Value::Array(_) | Value::Table(_) => None,
    }
}

/// The key of a setting in a table: its field name in kebab case, as serde names it.
fn key(arg: &Arg) -> String {
    arg.get_id().as_str().replace('_', "-")
}

/// Whether a setting takes a list (each flag, variable or file entry adds to it).
fn is_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}
