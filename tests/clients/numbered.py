#!/usr/bin/env python3
"""Numbered messages for fault tests: a paced producer that reports every
acknowledgement, and a consumer that reads a partition (confluent-kafka).

Usage:
  numbered.py produce --bootstrap HOST:PORT --topic T --count N [--rate MSGS_PER_S]
                      [--idempotence|--no-idempotence] [--timeout SECONDS]
  numbered.py consume --bootstrap HOST:PORT --topic T (--until-value I | --to-end)
                      [--timeout SECONDS]

Values are `n-<i>` for i = 0..N-1, all sent to partition 0 with acks=all, one
message per record batch (see produce.py for why), at most --rate per second.
Idempotence is off by default: a restarted in-memory Tansu has forgotten every
producer id, answers UNKNOWN_PRODUCER_ID to the old one for good, and
librdkafka's idempotent producer then never delivers again. Without it, at
most one request is in flight (max.in.flight.requests.per.connection=1), so
acknowledgements arrive in send order and a retry cannot reorder messages.
Messages librdkafka refuses before sending them because the broker does not
know the topic (a restarted broker, until the topic is created again) are
sent again, as an application would. Otherwise the producer retries on its
own (librdkafka's defaults: unlimited retries within message.timeout.ms,
which is --timeout) and reconnects quickly (reconnect.backoff.max.ms=1000). While it runs it prints {"acked": n} after
every 50th acknowledgement, so a test can wait for progress; at the end it
prints one JSON object:
  {"acks": [[i, offset], ...] in the order they arrived, "failed": [[i, error], ...],
   "elapsed": seconds}
and exits 0 when every message was acknowledged, 1 otherwise.

`consume` assigns partition 0 from the beginning (no consumer group, so no
group state to lose), lets librdkafka handle every error by itself and reads
until it has seen value n-I (--until-value) or until the end of the partition
(--to-end, checked once nothing arrives for a second). It prints
  {"values": [[i, offset], ...], "errors": n, "elapsed": seconds}
and exits 0, or 1 when the goal was not reached within --timeout.
"""
import argparse
import json
import os
import sys
import threading
import time

from report import emit, fail


def index_of(value):
    text = value.decode(errors="replace") if value is not None else ""
    if not text.startswith("n-"):
        return None
    try:
        return int(text[2:])
    except ValueError:
        return None


def produce(args):
    from confluent_kafka import KafkaError, KafkaException, Producer

    p = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "client.id": "kafka-sidecar-tests-numbered",
            "acks": "all",
            "enable.idempotence": args.idempotence,
            "max.in.flight.requests.per.connection": 5 if args.idempotence else 1,
            "message.timeout.ms": int(args.timeout * 1000),
            "linger.ms": 0,
            "batch.num.messages": 1,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 1000,
            "log_level": 3,
        }
    )
    acks, failed = [], []
    # Messages librdkafka refused before sending them, because the restarted broker did not know
    # the topic yet: never on the wire, so an application sends them again, as here.
    resend = []
    refused_locally = {KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC}

    def on_delivery(err, msg):
        i = index_of(msg.value())
        if err is None:
            acks.append([i, msg.offset()])
            if len(acks) % 50 == 0:
                emit({"acked": len(acks)})
        elif err.code() in refused_locally:
            resend.append(i)
        else:
            failed.append([i, str(err)])

    def send(i):
        given_up_at = time.monotonic() + args.timeout
        while True:
            try:
                p.produce(args.topic, value=f"n-{i}".encode(), partition=0, on_delivery=on_delivery)
                return
            except BufferError:
                p.poll(0.05)
            except KafkaException as e:
                # The same refusal, at once, while librdkafka knows the topic is missing.
                if e.args[0].code() not in refused_locally or time.monotonic() > given_up_at:
                    raise
                p.poll(0.1)

    def send_refused():
        while resend:
            send(resend.pop(0))

    start = time.monotonic()
    interval = 1.0 / args.rate
    for i in range(args.count):
        due = start + i * interval
        while True:
            now = time.monotonic()
            if now >= due:
                break
            p.poll(min(due - now, 0.05))
        send(i)
        p.poll(0)
        send_refused()
    deadline = time.monotonic() + args.timeout
    while (len(p) or resend) and time.monotonic() < deadline:
        send_refused()
        p.flush(1.0)
    left = len(p) + len(resend)
    elapsed = time.monotonic() - start
    emit({"acks": acks, "failed": failed, "in_flight": left, "elapsed": round(elapsed, 3)})
    os._exit(0 if not failed and not left and len(acks) == args.count else 1)


def consume(args):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "kafka-sidecar-tests-numbered",
            "client.id": "kafka-sidecar-tests-numbered",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 1000,
            "log_level": 3,
        }
    )
    c.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
    start = time.monotonic()
    deadline = start + args.timeout
    values, errors = [], 0
    last_message = time.monotonic()
    at_end = False
    while True:
        if args.until_value is not None and any(i == args.until_value for i, _ in values[-50:]):
            break
        if args.to_end and at_end and time.monotonic() - last_message >= 1.0:
            break
        if time.monotonic() >= deadline:
            emit({"values": values, "errors": errors, "elapsed": round(time.monotonic() - start, 3)})
            fail(f"goal not reached within {args.timeout}s after {len(values)} message(s)")
        msg = c.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end = True
            else:
                errors += 1
            continue
        at_end = False
        last_message = time.monotonic()
        values.append([index_of(msg.value()), msg.offset()])
    emit({"values": values, "errors": errors, "elapsed": round(time.monotonic() - start, 3)})
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description="Numbered-message producer and consumer.")
    sub = ap.add_subparsers(dest="mode", required=True)
    pp = sub.add_parser("produce")
    pp.add_argument("--bootstrap", required=True)
    pp.add_argument("--topic", required=True)
    pp.add_argument("--count", type=int, required=True)
    pp.add_argument("--rate", type=float, default=200.0, help="messages per second (default 200)")
    pp.add_argument("--idempotence", action=argparse.BooleanOptionalAction, default=False)
    pp.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    cp = sub.add_parser("consume")
    cp.add_argument("--bootstrap", required=True)
    cp.add_argument("--topic", required=True)
    goal = cp.add_mutually_exclusive_group(required=True)
    goal.add_argument("--until-value", type=int)
    goal.add_argument("--to-end", action="store_true")
    cp.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    args = ap.parse_args()

    # Hard stop: a client stuck in a C call must not hang the test that runs us. A paced
    # producer needs count / rate seconds on top of its timeout.
    pacing = args.count / args.rate if args.mode == "produce" and args.rate > 0 else 0
    watchdog = threading.Timer(pacing + args.timeout * 2 + 15, lambda: fail("hung", 3))
    watchdog.daemon = True
    watchdog.start()
    (produce if args.mode == "produce" else consume)(args)


if __name__ == "__main__":
    main()
