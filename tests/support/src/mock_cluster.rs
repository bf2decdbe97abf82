//! librdkafka's mock cluster (several brokers on loopback), run by `tests/clients/mock_cluster.py`.

use std::io::{BufRead, BufReader};
use std::thread;
use std::time::Duration;

use crate::child::{ChildProcess, Pipes, START_TIMEOUT};
use crate::clients::python_command;

/// librdkafka's mock cluster; stopped when dropped.
///
/// Mock quirks: CreateTopics is not supported; topics are auto-created on first use with 4
/// partitions whose leaders are spread at random (see [`MockCluster::leaders`]). kafka-python
/// cannot talk to it directly.
pub struct MockCluster {
    // Closing its stdin stops the script; held open for the cluster's lifetime.
    process: ChildProcess,
    bootstrap: String,
    brokers: Vec<(i32, String)>,
    leaders: Vec<(String, i32, i32)>,
}

impl MockCluster {
    /// Starts a mock cluster with `brokers` brokers and the given topics created up front.
    pub fn start(brokers: u32, topics: &[&str]) -> MockCluster {
        let brokers_arg = brokers.to_string();
        let mut args = vec!["--brokers", brokers_arg.as_str()];
        for topic in topics {
            args.extend_from_slice(&["--topic", topic]);
        }
        let cmd = python_command("mock_cluster.py", &args);
        let mut process = ChildProcess::spawn_with("mock-cluster", cmd, Pipes { stdin: true, stdout: true });
        let stdout = process.take_stdout().expect("stdout pipe");

        // Read the announcement on a thread so that a stuck script cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let ready = line == "READY";
                lines.push(line);
                if ready {
                    break;
                }
            }
            let _ = tx.send(lines);
        });
        let lines = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        if lines.last().map(String::as_str) != Some("READY") {
            process.kill();
            panic!("mock_cluster.py did not become ready; stdout: {lines:?}\nstderr:\n{}", process.logs());
        }
        let mut cluster = MockCluster { process, bootstrap: String::new(), brokers: Vec::new(), leaders: Vec::new() };
        for line in &lines {
            if let Some(v) = line.strip_prefix("BOOTSTRAP=") {
                cluster.bootstrap = v.to_string();
            } else if let Some(v) = line.strip_prefix("BROKER=") {
                let (id, addr) = v.split_once(' ').expect("BROKER line");
                cluster.brokers.push((id.parse().expect("broker id"), addr.to_string()));
            } else if let Some(v) = line.strip_prefix("LEADER=") {
                let parts: Vec<&str> = v.split(' ').collect();
                cluster.leaders.push((
                    parts[0].to_string(),
                    parts[1].parse().expect("partition"),
                    parts[2].parse().expect("leader"),
                ));
            }
        }
        cluster
    }

    /// All brokers, `host:port,host:port,...`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// The first broker's `host:port`.
    pub fn first_broker(&self) -> String {
        self.brokers[0].1.clone()
    }

    /// (node id, `host:port`) of each broker, by node id.
    pub fn brokers(&self) -> &[(i32, String)] {
        &self.brokers
    }

    /// (topic, partition, leader node id) for the topics created at start.
    pub fn leaders(&self) -> &[(String, i32, i32)] {
        &self.leaders
    }

    pub fn logs(&self) -> String {
        self.process.logs()
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        // The script stops once its stdin closes; the process's own drop kills it if it has not.
        self.process.close_stdin();
        self.process.wait_exit(Duration::from_secs(3));
    }
}
