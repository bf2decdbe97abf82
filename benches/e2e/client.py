#!/usr/bin/env python3
"""librdkafka (confluent-kafka) load for scripts/bench.sh.

  client.py create  --bootstrap HOST:PORT --topic T [--topic T2 ...]
  client.py produce --bootstrap HOST:PORT --topic T --value-bytes N --seconds S [--max-mb M]
  client.py consume --bootstrap HOST:PORT --topic T --seconds S [--max-messages N]

Each prints one JSON object on stdout. `produce` runs a Producer (acks=1, no idempotence, no
compression, librdkafka's default batching with linger.ms=5) in a tight loop for S seconds (or
until M MB of values were sent) and then flushes; the clock starts after a first message has
been delivered (connections and metadata are set up by then) and stops when every message is
acknowledged. `consume` reads partition 0 from offset 0 with assign() (a group id, which
confluent-kafka requires, but no group membership) for at most S seconds or N messages, or until
nothing came for a second (the end of what a real broker holds); the clock runs from the first
message to the last.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

COMMON = {"log_level": 3, "socket.nagle.disable": True}


def create(args):
    admin = AdminClient({"bootstrap.servers": args.bootstrap, **COMMON})
    futures = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in args.topic])
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
            created.append(topic)
        except KafkaException as e:
            if e.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS
                raise
    return {"created": created}


def produce(args):
    errors = []

    def on_error(err, msg):
        if err is not None:
            errors.append(str(err))

    p = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "1",
            "enable.idempotence": False,
            "compression.type": "none",
            "linger.ms": 5,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 131_072,
            "delivery.report.only.error": True,
            "on_delivery": on_error,
            **COMMON,
        }
    )
    topic, value = args.topic[0], b"x" * args.value_bytes
    p.produce(topic, value, partition=0)
    if p.flush(30) != 0 or errors:
        raise SystemExit(f"client.py: first message not delivered: {errors}")
    produce_one, poll = p.produce, p.poll
    sent = 0
    most = args.max_mb * 1_000_000 // args.value_bytes
    start = time.perf_counter()
    deadline = start + args.seconds
    while time.perf_counter() < deadline and sent < most:
        for _ in range(1000):
            while True:
                try:
                    produce_one(topic, value, partition=0)
                    break
                except BufferError:  # the local queue is full: wait for acknowledgements
                    poll(0.001)
        sent += 1000
        poll(0)
    remaining = p.flush(60)
    elapsed = time.perf_counter() - start
    delivered = sent - remaining - len(errors)
    return {
        "messages": delivered,
        "failed": remaining + len(errors),
        "errors": errors[:3],
        "value_bytes": args.value_bytes,
        "elapsed": round(elapsed, 3),
        "msgs_per_s": round(delivered / elapsed, 1),
        "mb_per_s": round(delivered * args.value_bytes / elapsed / 1e6, 2),
    }


def consume(args):
    c = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "kafka-sidecar-bench",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 100,
            # librdkafka pauses fetching for fetch.queue.backoff.ms (1 s) whenever its queue is
            # full, which Python fills faster than it empties; keep the pauses short.
            "fetch.queue.backoff.ms": 10,
            **COMMON,
        }
    )
    c.assign([TopicPartition(args.topic[0], 0, 0)])
    count = size = 0
    start = last = None
    idle_polls = 0
    give_up = time.perf_counter() + 30
    while True:
        msgs = c.consume(num_messages=10_000, timeout=0.25)
        now = time.perf_counter()
        # Every value of a benchmark topic has the same size; looking at each message would make
        # the Python loop, not librdkafka or the path to the broker, the limit.
        if msgs and (msgs[0].error() is not None or msgs[-1].error() is not None):
            raise SystemExit(f"client.py: consume error: {(msgs[0].error() or msgs[-1].error())}")
        if msgs and start is None:
            start = now
            msgs = msgs[1:]
        if start is None:
            if now > give_up:
                raise SystemExit("client.py: nothing to consume within 30 s")
            continue
        if msgs:
            last, idle_polls = now, 0
            count += len(msgs)
            size += len(msgs) * len(msgs[0].value())
        else:
            # The end of what was produced (a real broker): stop after a second of nothing.
            idle_polls += 1
        if now - start >= args.seconds or count >= args.max_messages or idle_polls >= 4:
            break
    elapsed = (last or now) - start
    c.close()
    return {
        "messages": count,
        "bytes": size,
        "elapsed": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed, 1),
        "mb_per_s": round(size / elapsed / 1e6, 2),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["create", "produce", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-messages", type=int, default=10**9)
    parser.add_argument("--max-mb", type=int, default=10**6, help="produce: stop after this many MB of values")
    args = parser.parse_args()
    result = {"create": create, "produce": produce, "consume": consume}[args.command](args)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
