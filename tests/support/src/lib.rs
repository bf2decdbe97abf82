//! The integration tests' harness: free ports, a Tansu broker, the sidecar binary, librdkafka's
//! mock cluster, the client programs under `tests/clients/`, and secured brokers. It starts
//! processes and waits for them; it never asserts on what the sidecar does (the tests do).
//!
//! Every test binary uses it as `use kafka_sidecar_test_support as support;`. External tools come
//! from `scripts/setup.sh`, which `scripts/test.sh` runs and whose results it exports:
//! - `KAFKA_SIDECAR_TANSU`: path of the Tansu 0.6.0 broker binary,
//! - `KAFKA_SIDECAR_PYTHON`: the venv's python with confluent-kafka, kafka-python and aiokafka,
//! - `kcat` on `PATH` (or `KAFKA_SIDECAR_KCAT`),
//! - `go` on `PATH` (or `KAFKA_SIDECAR_GO`) with Debian's sarama and kafka-go (see [`go`]).
//!
//! Every child process is a [`ChildProcess`]: its output goes to a log file, it is killed and
//! reaped when its handle is dropped, and a test that panics prints the tail of its log. Logs and
//! every other temporary file go to one directory per test process,
//! `$TMPDIR/kafka-sidecar-tests/<pid>-…/`, removed when the process exits, whether its tests
//! passed or failed. Directories of test processes that were killed are removed by the next one.
//! `KAFKA_SIDECAR_KEEP_TEST_FILES=1` keeps them all.
//!
//! Layout:
//! - [`files`]: the test directory, temporary paths, log tails.
//! - [`ports`]: free ports and port blocks, waiting for a listener, retrying a start whose port
//!   was taken.
//! - [`child`]: [`ChildProcess`], the one guard for a started process.
//! - [`run`]: commands run to completion with a time limit.
//! - [`http`]: GET on the admin listener (`/metrics`, `/readyz`) and the Prometheus text.
//! - [`tansu`]: [`Tansu`], the broker.
//! - [`sidecar`]: [`Sidecar`] and its [`SidecarBuilder`] (listen address, flags, environment,
//!   another build of the binary).
//! - [`clients`]: kcat and the Python client scripts; [`libraries`] (aiokafka, kafkajs), [`go`]
//!   (sarama, kafka-go), [`background`] (a script watched line by line).
//! - [`mock_cluster`]: librdkafka's mock cluster. [`scripted`]: a scripted fake broker.
//!   [`raw`]: a blocking client that sends exactly the bytes a test wants.
//! - [`manifests`]: kustomize and Kubernetes schema checks.
//! - [`numbered`], [`process`]: accounting for numbered messages; figures read from `/proc`.
//! - [`security`]: brokers that demand TLS and SASL, and clients to probe them.

pub mod background;
pub mod child;
pub mod clients;
pub mod files;
pub mod go;
pub mod http;
pub mod libraries;
pub mod manifests;
pub mod mock_cluster;
pub mod numbered;
pub mod ports;
pub mod process;
pub mod raw;
pub mod run;
pub mod scripted;
pub mod security;
pub mod sidecar;
pub mod tansu;

pub use child::{ChildProcess, Pipes};
pub use clients::{
    CLIENT_TIMEOUT, client_script, create_topics, kcat, kcat_with_input, kcat_with_timeout, python, python_bin,
    python_file, python_ok, python_with_timeout,
};
pub use files::{repo_root, temp_path, test_dir};
pub use http::http_get;
pub use manifests::{expect_valid_manifests, kustomize, venv_tool};
pub use mock_cluster::MockCluster;
pub use ports::{free_port, free_port_base, wait_for_port};
pub use run::{expect_success, run_with_input, run_with_timeout};
pub use sidecar::{BROKER_PORT_SPAN, Sidecar, SidecarBuilder, sidecar_bin, sidecar_command, static_sidecar_binary};
pub use tansu::{TANSU_NODE_ID, Tansu, api_versions_answered};
