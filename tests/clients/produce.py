#!/usr/bin/env python3
"""Produce COUNT messages `msg-<i>` (i = 0..COUNT-1) to a topic and flush.

Usage:
  produce.py --bootstrap HOST:PORT --topic T --count N [--acks 0|1|all]
             [--client confluent|kafka-python] [--timeout SECONDS]
             [--prefix msg-] [--partition P] [--batch-size N]

Prints one JSON object on stdout:
  {"delivered": N, "failed": F, "elapsed": seconds, ...}
Exits non-zero if any message was not delivered or the whole run did not
finish within --timeout seconds (default 30). With --acks 0 the broker sends
no acknowledgement, so "delivered" counts messages the client handed to the
socket; the script then waits --settle seconds (default 2 for acks 0, else 0)
before it exits, so that the broker can work through what is still queued on
the connection: exiting at once can reset the connection (Tansu answers even
acks=0 requests, and unread answers make the kernel send RST on close), and
messages not yet read by the broker are lost. "elapsed" excludes the settle
time.

By default every message goes in its own record batch (--batch-size 1):
Tansu 0.6.0 answers a Fetch whose offset falls inside a batch with nothing
from that batch, so a consumer resuming from a committed offset in the
middle of a batch would miss messages. --batch-size 0 keeps the client's
default batching.
"""
import argparse
import json
import os
import sys
import threading
import time

from report import fail


def produce_confluent(args, deadline):
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "client.id": "kafka-sidecar-tests-producer",
            "acks": args.acks,
            # Idempotence requires acks=all; keep the plain producer for 0/1.
            "enable.idempotence": False,
            "message.timeout.ms": max(1000, int(args.timeout * 1000)),
            "log_level": 3,
            **(
                {"linger.ms": 0, "batch.num.messages": args.batch_size}
                if args.batch_size > 0
                else {"linger.ms": 5}
            ),
        }
    )
    state = {"delivered": 0, "failed": 0, "errors": []}

    def on_delivery(err, _msg):
        if err is None:
            state["delivered"] += 1
        else:
            state["failed"] += 1
            if len(state["errors"]) < 5:
                state["errors"].append(str(err))

    for i in range(args.count):
        kwargs = {"value": f"{args.prefix}{i}".encode(), "on_delivery": on_delivery}
        if args.partition is not None:
            kwargs["partition"] = args.partition
        while True:
            try:
                p.produce(args.topic, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
            if time.monotonic() >= deadline:
                fail("timed out while enqueueing messages", 2)
        p.poll(0)
    remaining = p.flush(max(0.0, deadline - time.monotonic()))
    if remaining:
        state["failed"] += remaining
        state["errors"].append(f"{remaining} message(s) still in flight at timeout")
    state["flushed_at"] = time.monotonic()
    settle_until = state["flushed_at"] + args.settle
    while time.monotonic() < settle_until:
        p.poll(0.1)
    return state


def produce_kafka_python(args, deadline):
    from kafka import KafkaProducer

    acks = "all" if args.acks == "all" else int(args.acks)
    try:
        p = KafkaProducer(
            bootstrap_servers=args.bootstrap.split(","),
            client_id="kafka-sidecar-tests-producer",
            acks=acks,
            # batch_size is in bytes; a record that does not fit starts a new
            # batch, so 1 byte means one record per batch (kafka-python has no
            # message-count limit, any positive --batch-size gives this).
            batch_size=1 if args.batch_size > 0 else 16384,
            linger_ms=0 if args.batch_size > 0 else 5,
            request_timeout_ms=max(1000, int(args.timeout * 1000)),
            max_block_ms=max(1000, int(args.timeout * 1000)),
        )
    except Exception as e:
        fail(f"kafka-python could not connect to {args.bootstrap}: {e!r}")
    futures = []
    state = {"delivered": 0, "failed": 0, "errors": []}
    for i in range(args.count):
        try:
            futures.append(p.send(args.topic, value=f"{args.prefix}{i}".encode(), partition=args.partition))
        except Exception as e:
            # Typically a metadata timeout for an unknown topic: give up on
            # the rest, they would all fail the same way.
            state["failed"] += args.count - i
            state["errors"].append(repr(e))
            break
    try:
        p.flush(timeout=max(0.0, deadline - time.monotonic()))
    except Exception as e:
        state["errors"].append(f"flush: {e!r}")
    for f in futures:
        try:
            f.get(timeout=max(0.0, deadline - time.monotonic()))
            state["delivered"] += 1
        except Exception as e:
            state["failed"] += 1
            if len(state["errors"]) < 5:
                state["errors"].append(repr(e))
    state["flushed_at"] = time.monotonic()
    time.sleep(args.settle)
    p.close(timeout=1)
    return state


def main():
    ap = argparse.ArgumentParser(description="Produce test messages.")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--acks", choices=["0", "1", "all", "-1"], default="all")
    ap.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    ap.add_argument("--prefix", default="msg-", help="value prefix (default msg-)")
    ap.add_argument("--partition", type=int, default=None, help="fixed partition (default: client partitioner)")
    ap.add_argument(
        "--batch-size", type=int, default=1, help="messages per record batch; 0 = client default (default 1)"
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds to wait after the flush before exiting (default 2 for --acks 0, else 0)",
    )
    args = ap.parse_args()
    if args.acks == "-1":
        args.acks = "all"
    if args.settle is None:
        args.settle = 2.0 if args.acks == "0" else 0.0

    # Hard stop: a client stuck in a C call or a blocked socket must not hang
    # the test that runs us.
    watchdog = threading.Timer(args.timeout + args.settle + 5, lambda: fail(f"did not finish within {args.timeout}s", 3))
    watchdog.daemon = True
    watchdog.start()

    start = time.monotonic()
    deadline = start + args.timeout
    runner = produce_confluent if args.client == "confluent" else produce_kafka_python
    state = runner(args, deadline)
    elapsed = state.get("flushed_at", time.monotonic()) - start
    watchdog.cancel()

    print(
        json.dumps(
            {
                "client": args.client,
                "topic": args.topic,
                "acks": args.acks,
                "requested": args.count,
                "delivered": state["delivered"],
                "failed": state["failed"],
                "errors": state["errors"],
                "elapsed": round(elapsed, 3),
            },
            sort_keys=True,
        ),
        flush=True,
    )
    if state["failed"] or state["delivered"] != args.count:
        fail(f"{state['failed']} of {args.count} message(s) not delivered: {state['errors']}")
    if elapsed > args.timeout:
        fail(f"took {elapsed:.1f}s, more than the {args.timeout}s timeout", 3)
    # Skip interpreter teardown of client threads.
    os._exit(0)


if __name__ == "__main__":
    main()
