//! aiokafka and kafkajs, driven through one command-line shape: `tests/clients/aiokafka_client.py`
//! and `tests/clients/kafkajs_client.js` take the same commands (`produce`, `consume`, `create`,
//! `describe`, `delete`, `admin-loop`) and options, and print one JSON object each.
//!
//! kafkajs comes from `KAFKA_SIDECAR_NODE_MODULES` (the `node_modules` folder `scripts/setup.sh`
//! installs it into) and runs on the machine's `node`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::clients::{CLIENT_TIMEOUT, client_script, python_command};
use crate::run::{expect_success, run_with_timeout};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    Aiokafka,
    Kafkajs,
}

impl Library {
    pub const ALL: [Library; 2] = [Library::Aiokafka, Library::Kafkajs];

    pub fn name(self) -> &'static str {
        match self {
            Library::Aiokafka => "aiokafka",
            Library::Kafkajs => "kafkajs",
        }
    }

    fn command(self) -> Command {
        match self {
            Library::Aiokafka => python_command("aiokafka_client.py", &[]),
            Library::Kafkajs => {
                let mut cmd = Command::new("node");
                cmd.arg(client_script("kafkajs_client.js")).env("NODE_PATH", node_modules());
                cmd
            }
        }
    }

    /// Runs `command` against `bootstrap` with `args`; killed after [`CLIENT_TIMEOUT`].
    pub fn run(self, command: &str, bootstrap: &str, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args([command, "--bootstrap", bootstrap]).args(args);
        run_with_timeout(cmd, CLIENT_TIMEOUT)
    }

    /// Like [`Library::run`]; panics unless the command succeeded, and returns its JSON.
    pub fn run_ok(self, command: &str, bootstrap: &str, args: &[&str]) -> Value {
        let what = format!("{} {command} {}", self.name(), args.join(" "));
        let out = expect_success(&what, &self.run(command, bootstrap, args));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
    }
}

fn node_modules() -> PathBuf {
    let var = "KAFKA_SIDECAR_NODE_MODULES";
    let dir = PathBuf::from(std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: it names the node_modules folder with kafkajs. Run the tests with `scripts/test.sh`.")
    }));
    assert!(dir.join("kafkajs").is_dir(), "{var}={}: no kafkajs in it. Run `scripts/setup.sh`.", dir.display());
    dir
}
