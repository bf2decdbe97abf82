#!/usr/bin/env python3
"""Creates and deletes topics in a loop and counts how each call ended.

Usage:
  admin_loop.py --bootstrap HOST:PORT (--count N | --seconds S) [--client confluent|kafka-python]
               [--prefix P] [--pause SECONDS]

For i in 0..N (or until S seconds have passed): create topic P-i (1 partition), then delete it. Each call's outcome is
recorded as "ok" or the error's name/code. Prints one JSON object:
  {"create": {"ok": n, "<error>": n, ...}, "delete": {...}, "not_controller": n, "elapsed": s}
where not_controller counts every call that failed with NOT_CONTROLLER (error 41).
Exits 0 whatever the outcomes (the caller asserts on them); non-zero only if the
client cannot be set up.
"""
import argparse
import collections
import json
import sys
import time


def confluent_ops(bootstrap, timeout):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": int(timeout * 1000)})

    def outcome(futures):
        try:
            for f in futures.values():
                f.result(timeout=timeout)
            return "ok", False
        except KafkaException as e:
            err = e.args[0]
            return f"{err.name()}({err.code()})", err.code() == 41
        except Exception as e:  # timeouts and the like
            return type(e).__name__, False

    def create(name):
        return outcome(admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=timeout, request_timeout=timeout))

    def delete(name):
        return outcome(admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout))

    return create, delete


def kafka_python_ops(bootstrap, timeout):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))

    def outcome(call):
        try:
            call()
            return "ok", False
        except Exception as e:
            # kafka-python retries NOT_CONTROLLER once, then raises
            # RuntimeError("Failed to find active controller id!").
            name = type(e).__name__
            return name, "NotController" in name or "active controller" in str(e)

    def create(name):
        return outcome(lambda: admin.create_topics([NewTopic(name, 1, 1)], timeout_ms=int(timeout * 1000)))

    def delete(name):
        return outcome(lambda: admin.delete_topics([name], timeout_ms=int(timeout * 1000)))

    return create, delete


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    goal = ap.add_mutually_exclusive_group(required=True)
    goal.add_argument("--count", type=int, help="number of create/delete pairs")
    goal.add_argument("--seconds", type=float, help="make create/delete pairs until this much time has passed")
    ap.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
    ap.add_argument("--prefix", default="loop")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-call timeout in seconds (default 10)")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds to wait after each call (default 0)")
    args = ap.parse_args()

    ops = confluent_ops if args.client == "confluent" else kafka_python_ops
    try:
        create, delete = ops(args.bootstrap, args.timeout)
    except Exception as e:
        print(f"admin_loop.py: error: cannot set up {args.client}: {e!r}", file=sys.stderr, flush=True)
        sys.exit(1)

    counts = {"create": collections.Counter(), "delete": collections.Counter()}
    not_controller = 0
    started = time.monotonic()

    def more(i):
        if args.count is not None:
            return i < args.count
        return time.monotonic() - started < args.seconds

    i = 0
    while more(i):
        name = f"{args.prefix}-{i}"
        for kind, call in (("create", create), ("delete", delete)):
            result, is_41 = call(name)
            counts[kind][result] += 1
            not_controller += is_41
            time.sleep(args.pause)
        i += 1
    print(
        json.dumps(
            {
                "client": args.client,
                "create": dict(counts["create"]),
                "delete": dict(counts["delete"]),
                "not_controller": not_controller,
                "elapsed": round(time.monotonic() - started, 3),
            },
            sort_keys=True,
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
