#!/usr/bin/env python3
"""Everyday work with aiokafka (asyncio), for the client tests.

Usage:
  aiokafka_client.py produce    --bootstrap HOST:PORT --topic T --count N [--prefix m-]
  aiokafka_client.py consume    --bootstrap HOST:PORT --topic T --group G --count N [--assign]
  aiokafka_client.py create     --bootstrap HOST:PORT --topic T [--partitions P]
  aiokafka_client.py describe   --bootstrap HOST:PORT --topic T
  aiokafka_client.py delete     --bootstrap HOST:PORT --topic T
  aiokafka_client.py admin-loop --bootstrap HOST:PORT --count N [--prefix P] [--pause SECONDS]
  common option: [--timeout SECONDS] (default 60)

produce: sends `<prefix><i>` for i = 0..N-1 and waits for each acknowledgement
  (acks=all), so each message is a record batch of its own (Tansu 0.6.0 answers a
  Fetch that starts inside a batch with nothing from it). Prints {"delivered": N}.
consume: joins group G, reads exactly N messages, commits the offset after each
  message it took (later ones fetched with it are left for the next member) and
  leaves. Prints {"values": [...]} in the order read. With --assign it takes every
  partition itself instead of joining (no JoinGroup/SyncGroup) and starts from the
  offsets group G committed (OffsetFetch), committing nothing.
create / delete: prints {"created": T} / {"deleted": T}.
describe: prints {"partitions": n, "brokers": ["host:port", ...]} (by node id).
admin-loop: creates and deletes topics P-0 .. P-(N-1), pausing after each call
  (default 0); prints
  {"ok": n, "failed": {"<error>": n, ...}, "not_controller": n}.
Exits non-zero with a message on stderr on any other failure or after --timeout.
"""
import argparse
import asyncio
import json
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


async def produce(args):
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for i in range(args.count):
            await producer.send_and_wait(args.topic, f"{args.prefix}{i}".encode())
    finally:
        await producer.stop()
    emit({"delivered": args.count})


async def consume(args):
    consumer = AIOKafkaConsumer(
        *([] if args.assign else [args.topic]),
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
    )
    await consumer.start()
    if args.assign:
        await consumer.topics()  # a full metadata refresh, so the topic's partitions are known
        partitions = consumer.partitions_for_topic(args.topic) or set()
        consumer.assign([TopicPartition(args.topic, p) for p in sorted(partitions)])
    values = []
    try:
        async for message in consumer:
            values.append(message.value.decode())
            if not args.assign:
                partition = TopicPartition(message.topic, message.partition)
                await consumer.commit({partition: OffsetAndMetadata(message.offset + 1, "")})
            if len(values) == args.count:
                break
    finally:
        await consumer.stop()
    emit({"values": values})


async def with_admin(args, work):
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        return await work(admin)
    finally:
        await admin.close()


class TopicError(Exception):
    def __init__(self, topic, code):
        super().__init__(f"{topic}: error {code}")
        self.code = code


def raise_topic_errors(response):
    """aiokafka's admin returns the broker's response; errors are in it, not raised."""
    for entry in getattr(response, "topic_errors", None) or getattr(response, "topic_error_codes", []):
        topic, code = entry[0], entry[1]
        if code != 0:
            raise TopicError(topic, code)


async def create(args):
    async def work(admin):
        topic = NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)
        raise_topic_errors(await admin.create_topics([topic], timeout_ms=10000))

    await with_admin(args, work)
    emit({"created": args.topic})


async def describe(args):
    async def work(admin):
        topics = await admin.describe_topics([args.topic])
        cluster = await admin.describe_cluster()
        return topics, cluster

    topics, cluster = await with_admin(args, work)
    (topic,) = topics
    if topic["error_code"] != 0:
        raise TopicError(args.topic, topic["error_code"])
    brokers = sorted(cluster["brokers"], key=lambda b: b["node_id"])
    emit({"partitions": len(topic["partitions"]), "brokers": [f"{b['host']}:{b['port']}" for b in brokers]})


async def delete(args):
    await with_admin(args, lambda admin: admin.delete_topics([args.topic], timeout_ms=10000))
    emit({"deleted": args.topic})


async def admin_loop(args):
    ok, failed, not_controller = 0, {}, 0

    async def loop(admin):
        nonlocal ok, not_controller
        for i in range(args.count):
            topic = f"{args.prefix}-{i}"
            calls = (
                lambda: admin.create_topics([NewTopic(topic, 1, 1)], timeout_ms=10000),
                lambda: admin.delete_topics([topic], timeout_ms=10000),
            )
            for call in calls:
                try:
                    raise_topic_errors(await call())
                    ok += 1
                except TopicError as e:
                    failed[f"error {e.code}"] = failed.get(f"error {e.code}", 0) + 1
                    not_controller += e.code == 41
                except Exception as e:
                    failed[type(e).__name__] = failed.get(type(e).__name__, 0) + 1
                    not_controller += "NotController" in type(e).__name__
                if args.pause:
                    await asyncio.sleep(args.pause)

    await with_admin(args, loop)
    emit({"ok": ok, "failed": failed, "not_controller": not_controller})


COMMANDS = {
    "produce": produce,
    "consume": consume,
    "create": create,
    "describe": describe,
    "delete": delete,
    "admin-loop": admin_loop,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=COMMANDS)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic")
    ap.add_argument("--group")
    ap.add_argument("--count", type=int)
    ap.add_argument("--prefix")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--assign", action="store_true")
    ap.add_argument("--pause", type=float, default=0.0, help="admin-loop: seconds after each call")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    args = ap.parse_args()
    if args.prefix is None:
        args.prefix = "loop" if args.command == "admin-loop" else "m-"
    try:
        asyncio.run(asyncio.wait_for(COMMANDS[args.command](args), args.timeout))
    except asyncio.TimeoutError:
        print(f"aiokafka_client.py: error: {args.command} did not finish within {args.timeout}s", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        print(f"aiokafka_client.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
