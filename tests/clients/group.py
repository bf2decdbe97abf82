#!/usr/bin/env python3
"""Consume COUNT messages as a member of a consumer group, commit, close.

Usage:
  group.py --bootstrap HOST:PORT --topic T --group G --count N [--timeout SECONDS]

Joins group G (auto.offset.reset=earliest, session.timeout.ms=6000), reads
exactly N messages, commits the offset after the last one synchronously and
leaves the group. A second run with the same group resumes from the
committed offset. Prints one JSON object on stdout:
  {"values": [...], "partitions": {...}, "elapsed": seconds}
Exits non-zero if N messages were not read within --timeout (default 60).
"""
import argparse
import json
import os
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from report import fail


def main():
    ap = argparse.ArgumentParser(description="Consumer-group test client.")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    args = ap.parse_args()

    watchdog = threading.Timer(args.timeout + 15, lambda: fail(f"hung for more than {args.timeout + 15}s", 3))
    watchdog.daemon = True
    watchdog.start()

    c = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "client.id": "kafka-sidecar-tests-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": max(100, args.session_timeout_ms // 6),
            "log_level": 3,
        }
    )
    start = time.monotonic()
    deadline = start + args.timeout
    c.subscribe([args.topic])

    values = []
    # partition -> next offset to commit
    positions = {}
    while len(values) < args.count:
        if time.monotonic() >= deadline:
            c.close()
            fail(f"read {len(values)} of {args.count} message(s) within {args.timeout}s: {values}")
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            if msg.error().retriable() or not msg.error().fatal():
                print(f"group.py: warning: {msg.error()}", file=sys.stderr, flush=True)
                continue
            c.close()
            fail(f"consumer error: {msg.error()}")
        values.append(msg.value().decode(errors="replace") if msg.value() is not None else None)
        positions[msg.partition()] = msg.offset() + 1

    offsets = [TopicPartition(args.topic, p, o) for p, o in sorted(positions.items())]
    committed = None
    while committed is None:
        try:
            committed = c.commit(offsets=offsets, asynchronous=False)
        except Exception as e:
            if time.monotonic() >= deadline:
                c.close()
                fail(f"commit failed: {e}")
            print(f"group.py: warning: commit failed, retrying: {e}", file=sys.stderr, flush=True)
            time.sleep(0.5)
    for tp in committed or []:
        if tp.error is not None:
            c.close()
            fail(f"commit of {tp.topic}[{tp.partition}] failed: {tp.error}")
    c.close()
    elapsed = time.monotonic() - start
    watchdog.cancel()

    print(
        json.dumps(
            {
                "topic": args.topic,
                "group": args.group,
                "values": values,
                "committed": {str(p): o for p, o in sorted(positions.items())},
                "elapsed": round(elapsed, 3),
            },
            sort_keys=True,
        ),
        flush=True,
    )
    os._exit(0)


if __name__ == "__main__":
    main()
