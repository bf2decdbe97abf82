#!/usr/bin/env python3
"""Connects a Kafka client with TLS / SASL settings and fetches cluster metadata.

Usage:
  probe.py --bootstrap HOST:PORT [--client confluent|kafka-python]
           [--protocol PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL]
           [--ca PEM] [--cert PEM --key PEM] [--no-hostname-check]
           [--mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512|OAUTHBEARER --username U --password P]
           [--iam-region R --iam-access-key-id ID --iam-secret-access-key S [--iam-session-token T]
            [--iam-timestamp EPOCH]]
           [--oauth-token TOKEN] [--timeout SECONDS] [--hold SECONDS] [--interval SECONDS]

OAUTHBEARER tokens come from --oauth-token as given, or are presigned with
tests/clients/iam_token.py from the --iam-* settings (each time the client asks for one).

Fetches metadata once, or repeatedly for --hold seconds (every --interval) on the same client, so
that long-lived connections see session expiry and re-authentication. Prints one JSON object:
  {"ok": bool, "client": ..., "brokers": ["host:port", ...], "metadata_calls": N,
   "error": null | "why it failed", "errors": ["client error callbacks and warning/error logs"]}
and exits 0 when ok, 2 when not.
"""
import argparse
import json
import logging
import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))

ERRORS = []


def emit_and_exit(ok, args, brokers=None, calls=0, error=None):
    sys.stdout.write(
        json.dumps(
            {
                "ok": ok,
                "client": args.client,
                "brokers": brokers or [],
                "metadata_calls": calls,
                "error": error,
                "errors": ERRORS,
            },
            sort_keys=True,
        )
        + "\n"
    )
    sys.stdout.flush()
    # A client thread may still be retrying: leave without waiting for it.
    os._exit(0 if ok else 2)


def token_source(args):
    """A function returning (token, expiry epoch seconds), or None without OAUTHBEARER settings."""
    if args.oauth_token:
        return lambda: (args.oauth_token, time.time() + 900)
    if args.iam_region:
        from iam_token import presign

        def make():
            token = presign(
                args.iam_region,
                args.iam_access_key_id,
                args.iam_secret_access_key,
                args.iam_session_token,
                args.iam_timestamp,
            )
            return token, time.time() + 900

        return make
    return None


class ListHandler(logging.Handler):
    def emit(self, record):
        ERRORS.append(f"{record.name}: {record.getMessage()}")


def credentials(args, tls_names, sasl_names):
    """The TLS files and SASL settings of `args` under a client's own option names: (CA,
    certificate, key) and (mechanism, username, password)."""
    (ca, cert, key), (mechanism, username, password) = tls_names, sasl_names
    conf = {}
    if args.ca:
        conf[ca] = args.ca
    if args.cert:
        conf[cert] = args.cert
        conf[key] = args.key
    if args.mechanism:
        conf[mechanism] = args.mechanism
    if args.username is not None:
        conf[username] = args.username
        conf[password] = args.password or ""
    return conf


def is_auth_error(text):
    return any(
        needle in text
        for needle in ("SASL", "Authentication", "authentication", "SSL", "certificate", "handshake", "mechanism")
    )


# ---------------------------------------------------------------- confluent


def confluent(args):
    from confluent_kafka.admin import AdminClient

    def on_error(err):
        ERRORS.append(f"error_cb: {err.str()} ({err.name()})")

    logger = logging.getLogger("librdkafka")
    logger.addHandler(ListHandler(level=logging.WARNING))
    logger.setLevel(logging.WARNING)
    conf = {
        "bootstrap.servers": args.bootstrap,
        "client.id": "kafka-sidecar-tests-probe",
        "security.protocol": args.protocol,
        "socket.timeout.ms": int(args.timeout * 1000),
        "error_cb": on_error,
        "logger": logger,
        "log_level": 4,
    }
    conf.update(
        credentials(
            args,
            ["ssl.ca.location", "ssl.certificate.location", "ssl.key.location"],
            ["sasl.mechanism", "sasl.username", "sasl.password"],
        )
    )
    if args.no_hostname_check:
        conf["ssl.endpoint.identification.algorithm"] = "none"
    elif args.protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = "https"
    tokens = token_source(args)
    if tokens is not None:
        conf["oauth_cb"] = lambda _config: tokens()
    admin = AdminClient(conf)
    admin.poll(0)  # serves oauth_cb

    deadline = time.time() + args.timeout
    hold_until = time.time() + args.hold
    calls, brokers, last_error = 0, [], None
    while True:
        try:
            md = admin.list_topics(timeout=0.5 if calls == 0 else args.timeout)
            calls += 1
            brokers = sorted(f"{b.host}:{b.port}" for b in md.brokers.values())
            last_error = None
            if time.time() >= hold_until:
                emit_and_exit(True, args, brokers, calls)
            time.sleep(args.interval)
        except Exception as e:
            last_error = f"{e}"
            if calls > 0:
                # A connection that worked broke while held: that is a failure, not a retry.
                emit_and_exit(False, args, brokers, calls, f"metadata failed after {calls} calls: {e}")
            if time.time() >= deadline or any(is_auth_error(x) for x in ERRORS):
                emit_and_exit(False, args, brokers, calls, last_error)
        admin.poll(0)


# ------------------------------------------------------------- kafka-python


def kafka_python(args):
    from kafka import KafkaAdminClient

    try:
        from kafka.net.sasl.oauth import AbstractTokenProvider
    except ImportError:  # kafka-python 2.x
        from kafka.sasl.oauth import AbstractTokenProvider

    handler = ListHandler(level=logging.WARNING)
    logging.getLogger("kafka").addHandler(handler)
    logging.getLogger("kafka").setLevel(logging.WARNING)

    conf = {
        "bootstrap_servers": args.bootstrap,
        "client_id": "kafka-sidecar-tests-probe",
        "security_protocol": args.protocol,
        "request_timeout_ms": int(args.timeout * 1000),
        "bootstrap_timeout_ms": int(args.timeout * 1000),
    }
    conf.update(
        credentials(
            args,
            ["ssl_cafile", "ssl_certfile", "ssl_keyfile"],
            ["sasl_mechanism", "sasl_plain_username", "sasl_plain_password"],
        )
    )
    if args.protocol in ("SSL", "SASL_SSL"):
        conf["ssl_check_hostname"] = not args.no_hostname_check
    tokens = token_source(args)
    if tokens is not None:

        class Provider(AbstractTokenProvider):
            def token(self):
                return tokens()[0]

        conf["sasl_oauth_token_provider"] = Provider()
    # kafka-python retries a failed bootstrap until its timeout; stop at the first
    # authentication or TLS error instead (it is logged, then retried).
    result = {}

    def run():
        try:
            admin = KafkaAdminClient(**conf)
        except Exception as e:
            result["error"] = f"{type(e).__name__}: {e}"
            return
        hold_until = time.time() + args.hold
        calls, brokers = 0, []
        while True:
            try:
                admin.list_topics()
                calls += 1
                brokers = sorted(f"{b.host}:{b.port}" for b in admin._client.cluster.brokers())
            except Exception as e:
                result.update(brokers=brokers, calls=calls, error=f"{type(e).__name__}: {e}")
                return
            if time.time() >= hold_until:
                result.update(brokers=brokers, calls=calls, ok=True)
                return
            time.sleep(args.interval)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.time() + args.timeout + args.hold + 5
    while worker.is_alive() and time.time() < deadline:
        worker.join(0.05)
        if "calls" not in result and any(("Error 58" in x or "SSL" in x or "certificate" in x) for x in ERRORS):
            break
    if result.get("ok"):
        emit_and_exit(True, args, result["brokers"], result["calls"])
    error = result.get("error") or next((x for x in ERRORS if "Error 58" in x or "SSL" in x), None) or "timed out"
    emit_and_exit(False, args, result.get("brokers"), result.get("calls", 0), error)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
    p.add_argument("--protocol", default="PLAINTEXT", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--no-hostname-check", action="store_true")
    p.add_argument("--mechanism")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--iam-region")
    p.add_argument("--iam-access-key-id")
    p.add_argument("--iam-secret-access-key")
    p.add_argument("--iam-session-token")
    p.add_argument("--iam-timestamp", type=float)
    p.add_argument("--oauth-token")
    p.add_argument("--timeout", type=float, default=15)
    p.add_argument("--hold", type=float, default=0)
    p.add_argument("--interval", type=float, default=0.5)
    args = p.parse_args()
    if args.client == "confluent":
        confluent(args)
    else:
        kafka_python(args)


if __name__ == "__main__":
    main()
