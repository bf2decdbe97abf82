#!/usr/bin/env python3
"""Large messages (confluent-kafka): produce COUNT values of SIZE bytes each
to partition 0 of a topic, or consume them back, reporting a sha256 per value.

Usage:
  large.py produce --bootstrap HOST:PORT --topic T --count N --size BYTES [--timeout SECONDS]
  large.py consume --bootstrap HOST:PORT --topic T --count N [--size BYTES] [--timeout SECONDS]

Value i is SIZE pseudo-random bytes seeded with i (random.Random(i)), so
every value differs from the others throughout. The producer sends the
values one at a time (acks=all), each once the previous one is acknowledged,
and prints
  {"values": [{"sha256": hex, "size": n, "offset": o}, ...]}
in the order the values were produced. The consumer assigns partition 0
from the beginning (no consumer group) and prints the same for the first N
messages it reads, in offset order. Both exit 0 on success, 1 on a delivery
or consume error, 3 when --timeout (default 60 s) passes first.

librdkafka's limits are raised for large messages: message.max.bytes on the
producer (the largest request it sends), fetch.max.bytes and
max.partition.fetch.bytes on the consumer (how much one Fetch may return)
and receive.message.max.bytes on both (the largest response frame it
accepts).
"""
import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time

from report import emit, fail

# Headroom over the value size for the request and response framing.
FRAMING = 1 << 20


def value(i, size):
    return random.Random(i).randbytes(size)


def describe(data, offset):
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "offset": offset}


def common(args, max_bytes):
    return {
        "bootstrap.servers": args.bootstrap,
        "client.id": "kafka-sidecar-tests-large",
        "receive.message.max.bytes": max_bytes + FRAMING,
        "socket.timeout.ms": int(args.timeout * 1000),
        "log_level": 3,
    }


def produce(args):
    from confluent_kafka import Producer

    deadline = time.monotonic() + args.timeout
    max_bytes = args.size + FRAMING
    p = Producer(
        {
            **common(args, max_bytes),
            "acks": "all",
            "enable.idempotence": False,
            "message.max.bytes": max_bytes,
            "message.timeout.ms": int(args.timeout * 1000),
            "compression.type": "none",
            "linger.ms": 0,
            "batch.num.messages": 1,
        }
    )
    values, errors = [], []
    for i in range(args.count):
        data = value(i, args.size)

        def on_delivery(err, msg, i=i, data=data):
            if err is None:
                values.append(describe(data, msg.offset()))
            else:
                errors.append(f"value {i}: {err}")

        while True:
            try:
                p.produce(args.topic, value=data, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        # One value at a time: the acknowledgements come back in the order of the values.
        if p.flush(max(0.0, deadline - time.monotonic())):
            errors.append(f"value {i} not acknowledged within {args.timeout}s")
        if errors:
            emit({"values": values})
            fail("; ".join(errors))
    emit({"values": values})
    os._exit(0)


def consume(args):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    max_bytes = args.count * (args.size + FRAMING)
    c = Consumer(
        {
            **common(args, max_bytes),
            "group.id": "kafka-sidecar-tests-large",
            "enable.auto.commit": False,
            "fetch.max.bytes": max_bytes,
            "max.partition.fetch.bytes": max_bytes,
        }
    )
    c.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
    deadline = time.monotonic() + args.timeout
    values = []
    while len(values) < args.count:
        if time.monotonic() >= deadline:
            emit({"values": values})
            fail(f"read {len(values)} of {args.count} value(s) within {args.timeout}s", 3)
        msg = c.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            fail(f"consume error: {msg.error()}")
        values.append(describe(msg.value(), msg.offset()))
    emit({"values": values})
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description="Large-message producer and consumer.")
    sub = ap.add_subparsers(dest="mode", required=True)
    for mode in ("produce", "consume"):
        sp = sub.add_parser(mode)
        sp.add_argument("--bootstrap", required=True)
        sp.add_argument("--topic", required=True)
        sp.add_argument("--count", type=int, required=True)
        sp.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
        if mode == "produce":
            sp.add_argument("--size", type=int, required=True, help="bytes per value")
        else:
            sp.add_argument("--size", type=int, default=10 << 20, help="largest value expected (default 10 MiB)")
    args = ap.parse_args()

    # Hard stop: a client stuck in a C call must not hang the test that runs us.
    watchdog = threading.Timer(args.timeout + 10, lambda: fail("hung", 3))
    watchdog.daemon = True
    watchdog.start()
    (produce if args.mode == "produce" else consume)(args)


if __name__ == "__main__":
    main()
