#!/usr/bin/env python3
"""Topic administration through a Kafka bootstrap address.

Usage:
  admin.py --bootstrap HOST:PORT create TOPIC... [--partitions N] [--replication-factor R]
  admin.py --bootstrap HOST:PORT describe [TOPIC...] [--allow-missing]
  admin.py --bootstrap HOST:PORT delete TOPIC...
  common options: [--client confluent|kafka-python] [--timeout SECONDS]

Prints one JSON object on stdout. `describe` reports, per topic, the number
of partitions and the leader of each partition, plus the brokers (host:port,
ordered by node id) that the client saw in the cluster metadata. Exits
non-zero with a message on stderr on any failure.
"""
import argparse
import json
import sys
import time


def fail(msg):
    print(f"admin.py: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


# ---------------------------------------------------------------- confluent


class ConfluentAdmin:
    def __init__(self, bootstrap, timeout):
        from confluent_kafka.admin import AdminClient

        self.timeout = timeout
        self.client = AdminClient(
            {
                "bootstrap.servers": bootstrap,
                "client.id": "kafka-sidecar-tests-admin",
                "socket.timeout.ms": int(timeout * 1000),
                "log_level": 3,
            }
        )

    def metadata(self):
        """Return (brokers, topics) where brokers is [(id, "host:port")] and
        topics maps name -> {partition: leader} for topics without error."""
        md = self.client.list_topics(timeout=self.timeout)
        brokers = sorted((b.id, f"{b.host}:{b.port}") for b in md.brokers.values())
        topics = {}
        for name, t in md.topics.items():
            if t.error is not None:
                continue
            topics[name] = {p.id: p.leader for p in t.partitions.values()}
        return brokers, topics

    def create(self, topics, partitions, replication_factor):
        from confluent_kafka.admin import NewTopic

        futures = self.client.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor) for t in topics],
            operation_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        for topic, fut in futures.items():
            try:
                fut.result(timeout=self.timeout)
            except Exception as e:  # KafkaException carries the broker error
                fail(f"creating topic {topic!r} failed: {e!r}")

    def delete(self, topics):
        futures = self.client.delete_topics(topics, operation_timeout=self.timeout, request_timeout=self.timeout)
        for topic, fut in futures.items():
            try:
                fut.result(timeout=self.timeout)
            except Exception as e:
                fail(f"deleting topic {topic!r} failed: {e!r}")

    def close(self):
        pass


# ------------------------------------------------------------- kafka-python


class KafkaPythonAdmin:
    def __init__(self, bootstrap, timeout):
        from kafka import KafkaAdminClient

        self.timeout = timeout
        try:
            self.client = KafkaAdminClient(
                bootstrap_servers=bootstrap.split(","),
                client_id="kafka-sidecar-tests-admin",
                request_timeout_ms=int(timeout * 1000),
            )
        except Exception as e:
            fail(f"kafka-python could not connect to {bootstrap}: {e!r}")

    def metadata(self):
        cluster = self.client.describe_cluster()
        brokers = sorted(
            (b.get("broker_id", b.get("node_id")), f"{b['host']}:{b['port']}") for b in cluster["brokers"]
        )
        topics = {}
        for t in self.client.describe_topics():
            if t.get("error_code", 0) != 0:
                continue
            topics[t.get("name", t.get("topic"))] = {p["partition_index"]: p["leader_id"] for p in t["partitions"]}
        return brokers, topics

    def create(self, topics, partitions, replication_factor):
        from kafka.admin import NewTopic

        try:
            self.client.create_topics(
                [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor) for t in topics],
                timeout_ms=int(self.timeout * 1000),
            )
        except Exception as e:
            fail(f"creating topics {topics} failed: {e!r}")

    def delete(self, topics):
        try:
            self.client.delete_topics(topics, timeout_ms=int(self.timeout * 1000))
        except Exception as e:
            fail(f"deleting topics {topics} failed: {e!r}")

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass


# --------------------------------------------------------------------- main


def wait_for(admin, deadline, predicate, what):
    """Poll metadata until predicate(topics) holds; return (brokers, topics)."""
    last_err = None
    while True:
        try:
            brokers, topics = admin.metadata()
            if predicate(topics):
                return brokers, topics
        except Exception as e:
            last_err = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_err!r})" if last_err else ""
            fail(f"timed out waiting for {what}{detail}")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser(description="Kafka topic administration for tests.")
    ap.add_argument("--bootstrap", required=True, help="HOST:PORT[,HOST:PORT...]")
    ap.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
    ap.add_argument("--timeout", type=float, default=30.0, help="overall timeout in seconds (default 30)")
    ap.add_argument("--partitions", type=int, default=1, help="partitions for create (default 1)")
    ap.add_argument("--replication-factor", type=int, default=1, help="replication factor for create (default 1)")
    ap.add_argument("--allow-missing", action="store_true", help="describe: do not fail on unknown topics")
    ap.add_argument("command", choices=["create", "describe", "delete"])
    ap.add_argument("topics", nargs="*", metavar="TOPIC")
    # Options may come before or after the command and topics.
    args = ap.parse_intermixed_args()

    if args.command in ("create", "delete") and not args.topics:
        fail(f"{args.command} needs at least one TOPIC")

    deadline = time.monotonic() + args.timeout
    admin = ConfluentAdmin(args.bootstrap, args.timeout) if args.client == "confluent" else KafkaPythonAdmin(
        args.bootstrap, args.timeout
    )
    try:
        if args.command == "create":
            admin.create(args.topics, args.partitions, args.replication_factor)
            # Creation is acknowledged by the controller; wait until metadata
            # shows every partition with a leader so callers can use it at once.
            wait_for(
                admin,
                deadline,
                lambda ts: all(
                    t in ts and len(ts[t]) == args.partitions and all(l >= 0 for l in ts[t].values())
                    for t in args.topics
                ),
                f"topics {args.topics} to appear in metadata",
            )
            emit({"created": args.topics, "partitions": args.partitions, "client": args.client})
        elif args.command == "delete":
            admin.delete(args.topics)
            wait_for(
                admin,
                deadline,
                lambda ts: not any(t in ts for t in args.topics),
                f"topics {args.topics} to disappear from metadata",
            )
            emit({"deleted": args.topics, "client": args.client})
        else:
            try:
                brokers, topics = admin.metadata()
            except Exception as e:
                fail(f"fetching metadata from {args.bootstrap} failed: {e!r}")
            wanted = args.topics or sorted(topics)
            missing = [t for t in wanted if t not in topics]
            if missing and not args.allow_missing:
                fail(f"unknown topic(s): {missing}")
            emit(
                {
                    "client": args.client,
                    "brokers": [addr for _, addr in brokers],
                    "broker_ids": {str(i): addr for i, addr in brokers},
                    "topics": {t: len(topics[t]) for t in wanted if t in topics},
                    "leaders": {
                        t: {str(p): l for p, l in sorted(topics[t].items())} for t in wanted if t in topics
                    },
                    "missing": missing,
                }
            )
    finally:
        admin.close()


if __name__ == "__main__":
    main()
