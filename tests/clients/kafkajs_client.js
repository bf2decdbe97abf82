#!/usr/bin/env node
// Everyday work with kafkajs (Node.js), for the client tests.
//
// Usage:
//   node kafkajs_client.js produce  --bootstrap HOST:PORT --topic T --count N [--prefix m-]
//   node kafkajs_client.js consume  --bootstrap HOST:PORT --topic T --group G --count N
//   node kafkajs_client.js create   --bootstrap HOST:PORT --topic T [--partitions P]
//   node kafkajs_client.js describe --bootstrap HOST:PORT --topic T
//   node kafkajs_client.js delete   --bootstrap HOST:PORT --topic T
//   node kafkajs_client.js admin-loop --bootstrap HOST:PORT --count N [--prefix P] [--pause SECONDS]
//   common option: [--timeout SECONDS] (default 60)
//
// produce: sends `<prefix><i>` for i = 0..N-1, one message per request (so one record batch
//   each: Tansu 0.6.0 answers a Fetch that starts inside a batch with nothing from it), acks=-1.
//   Prints {"delivered": N}.
// consume: joins group G, reads exactly N messages, commits the offset after each message it
//   took (later ones fetched in the same batch are left for the next member) and leaves.
//   Prints {"values": [...]} in the order read.
// create / delete: prints {"created": T} / {"deleted": T}.
// describe: prints {"partitions": n, "brokers": ["host:port", ...]} (brokers by node id).
// admin-loop: creates and deletes topics P-0 .. P-(N-1), with kafkajs's default retries; prints {"ok": n, "failed": {"<error type>": n, ...}, "not_controller": n}.
// Exits non-zero with a message on stderr on any other failure or after --timeout.
"use strict";

const { Kafka, logLevel } = require("kafkajs");

function parse(argv) {
  const [command, ...rest] = argv;
  const options = { timeout: 60, prefix: "m-", partitions: 1 };
  for (let i = 0; i < rest.length; i += 2) {
    const name = rest[i].replace(/^--/, "");
    if (rest[i + 1] === undefined) fail(`--${name} needs a value`);
    options[name] = rest[i + 1];
  }
  for (const name of ["timeout", "count", "partitions", "pause"]) {
    if (options[name] !== undefined) options[name] = Number(options[name]);
  }
  if (!options.bootstrap) fail("--bootstrap is required");
  return { command, options };
}

function fail(message) {
  process.stderr.write(`kafkajs_client.js: error: ${message}\n`);
  process.exit(1);
}

function emit(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

// kafkajs's own retry settings (5 retries from 300 ms) unless `retry` is given.
function kafka(options, retry) {
  return new Kafka({
    clientId: "kafka-sidecar-tests",
    brokers: options.bootstrap.split(","),
    logLevel: logLevel.NOTHING,
    connectionTimeout: 5000,
    requestTimeout: 15000,
    ...(retry && { retry }),
  });
}

const PATIENT = { retries: 8, initialRetryTime: 200 };

async function produce(options) {
  const producer = kafka(options, PATIENT).producer({ allowAutoTopicCreation: false });
  await producer.connect();
  for (let i = 0; i < options.count; i++) {
    await producer.send({ topic: options.topic, acks: -1, messages: [{ value: `${options.prefix}${i}` }] });
  }
  await producer.disconnect();
  emit({ delivered: options.count });
}

async function consume(options) {
  const consumer = kafka(options, PATIENT).consumer({ groupId: options.group, sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic: options.topic, fromBeginning: true });
  const values = [];
  let finished;
  const done = new Promise((resolve) => (finished = resolve));
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      if (values.length >= options.count) return;
      values.push(message.value.toString());
      const next = (BigInt(message.offset) + 1n).toString();
      await consumer.commitOffsets([{ topic, partition, offset: next }]);
      if (values.length === options.count) finished();
    },
  });
  await done;
  await consumer.disconnect();
  emit({ values });
}

async function withAdmin(options, work) {
  const admin = kafka(options, PATIENT).admin();
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.disconnect();
  }
}

async function create(options) {
  await withAdmin(options, async (admin) => {
    const topics = [{ topic: options.topic, numPartitions: options.partitions, replicationFactor: 1 }];
    const created = await admin.createTopics({ topics, waitForLeaders: true, timeout: 10000 });
    if (!created) fail(`topic ${options.topic} already exists`);
  });
  emit({ created: options.topic });
}

async function describe(options) {
  const described = await withAdmin(options, async (admin) => {
    const { topics } = await admin.fetchTopicMetadata({ topics: [options.topic] });
    const { brokers } = await admin.describeCluster();
    return { topics, brokers };
  });
  const brokers = described.brokers.sort((a, b) => a.nodeId - b.nodeId).map((b) => `${b.host}:${b.port}`);
  emit({ partitions: described.topics[0].partitions.length, brokers });
}

async function remove(options) {
  await withAdmin(options, (admin) => admin.deleteTopics({ topics: [options.topic], timeout: 10000 }));
  emit({ deleted: options.topic });
}

async function adminLoop(options) {
  const prefix = options.prefix === "m-" ? "loop" : options.prefix;
  const failed = {};
  let ok = 0;
  let notController = 0;
  const record = async (call) => {
    try {
      await call();
      ok++;
    } catch (e) {
      // createTopics and deleteTopics throw an aggregate of the per-topic errors.
      const inner = (e.errors && e.errors[0]) || e.cause || e;
      const type = inner.type || e.type || e.name;
      failed[type] = (failed[type] || 0) + 1;
      if (type === "NOT_CONTROLLER") notController++;
    }
    if (options.pause) await new Promise((resolve) => setTimeout(resolve, options.pause * 1000));
  };
  const admin = kafka(options).admin();
  await admin.connect();
  for (let i = 0; i < options.count; i++) {
    const topic = `${prefix}-${i}`;
    await record(() => admin.createTopics({ topics: [{ topic, numPartitions: 1 }], timeout: 10000 }));
    await record(() => admin.deleteTopics({ topics: [topic], timeout: 10000 }));
  }
  await admin.disconnect();
  emit({ ok, failed, not_controller: notController });
}

const commands = { produce, consume, create, describe, delete: remove, "admin-loop": adminLoop };

async function main() {
  const { command, options } = parse(process.argv.slice(2));
  const run = commands[command];
  if (!run) fail(`unknown command ${command}; one of ${Object.keys(commands).join(", ")}`);
  const watchdog = setTimeout(() => fail(`${command} did not finish within ${options.timeout}s`), options.timeout * 1000);
  await run(options);
  clearTimeout(watchdog);
}

main().catch((e) => fail(`${e.name}: ${e.message}${e.type ? ` (${e.type})` : ""}`));
