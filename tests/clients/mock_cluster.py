#!/usr/bin/env python3
"""Run librdkafka's built-in mock Kafka cluster for multi-broker tests.

The mock cluster lives inside a confluent-kafka Producer created with
`test.mock.num.brokers`. Its brokers listen on real loopback ports, which
are read back from the cluster metadata of that same producer.

Usage: mock_cluster.py [--brokers N] [--topic NAME]... [--timeout SECONDS]

Prints, flushed, on stdout:
  BOOTSTRAP=host:port,host:port,...      (all brokers, ordered by node id)
  BROKER=<node id> host:port             (one line per broker)
  LEADER=<topic> <partition> <node id>   (one line per partition of --topic)
  {"brokers": [...], "topics": {...}, ...}  (the same as one JSON line)
  READY
then runs until stdin reaches EOF or the process gets SIGTERM/SIGINT.

Notes on the mock (librdkafka 2.16):
  * CreateTopics through an AdminClient does not complete (the mock reports
    no controller). Topics are auto-created on first use (Metadata/Produce)
    with 4 partitions whose leaders are spread over the brokers. --topic
    creates a topic that way up front and reports its partition leaders.
  * ApiVersions v3 is answered with UNSUPPORTED_VERSION and clients retry
    with v0; librdkafka clients (confluent-kafka, kcat) handle that,
    kafka-python 3.0.12 fails to decode that response and cannot connect.
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

from confluent_kafka import KafkaException, Producer

from report import fail


def main():
    ap = argparse.ArgumentParser(description="Run a librdkafka mock cluster.")
    ap.add_argument("--brokers", type=int, default=3, help="number of mock brokers (default 3)")
    ap.add_argument("--topic", action="append", default=[], help="auto-create this topic up front (repeatable)")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for metadata (default 15)")
    args = ap.parse_args()

    producer = Producer(
        {
            "test.mock.num.brokers": args.brokers,
            # Replaced by the mock brokers' addresses.
            "bootstrap.servers": "",
            # Drop librdkafka's notice "Mock cluster enabled ...".
            "log_level": 3,
        }
    )
    deadline = time.monotonic() + args.timeout

    try:
        md = producer.list_topics(timeout=args.timeout)
    except KafkaException as e:
        fail(f"could not read mock cluster metadata: {e!r}")
    brokers = sorted(md.brokers.values(), key=lambda b: b.id)
    if len(brokers) != args.brokers:
        fail(f"expected {args.brokers} mock brokers, metadata shows {len(brokers)}")

    topics = {}
    for name in args.topic:
        while True:
            try:
                tmd = producer.list_topics(topic=name, timeout=max(0.1, deadline - time.monotonic()))
                t = tmd.topics.get(name)
                if t is not None and t.error is None and t.partitions and all(
                    p.leader >= 0 for p in t.partitions.values()
                ):
                    topics[name] = {str(p.id): p.leader for p in sorted(t.partitions.values(), key=lambda p: p.id)}
                    break
            except KafkaException as e:
                print(f"mock_cluster.py: metadata for {name!r}: {e!r}", file=sys.stderr, flush=True)
            if time.monotonic() >= deadline:
                fail(f"topic {name!r} did not appear in the mock cluster")
            time.sleep(0.1)

    bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
    print(f"BOOTSTRAP={bootstrap}", flush=True)
    # Line-oriented copies of the JSON below, easy to read without a parser.
    for b in brokers:
        print(f"BROKER={b.id} {b.host}:{b.port}")
    for name, leaders in topics.items():
        for partition, leader in leaders.items():
            print(f"LEADER={name} {partition} {leader}")
    print(
        json.dumps(
            {
                "bootstrap": bootstrap,
                "cluster_id": md.cluster_id,
                "brokers": [{"id": b.id, "host": b.host, "port": b.port} for b in brokers],
                # topic -> {partition: leader node id}
                "topics": topics,
            },
            sort_keys=True,
        ),
        flush=True,
    )
    print("READY", flush=True)

    done = threading.Event()

    def on_signal(_signum, _frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read1(4096):
                pass
        except (OSError, ValueError):
            pass
        done.set()

    if sys.stdin is not None:
        threading.Thread(target=watch_stdin, daemon=True).start()

    # The mock brokers run on librdkafka's own threads; keep the producer,
    # and with it the cluster, alive.
    while not done.wait(0.5):
        producer.poll(0)

    # Skip the producer's teardown; the cluster goes away with the process.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
