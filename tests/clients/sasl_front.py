#!/usr/bin/env python3
"""A SASL-enforcing front end for a Kafka broker: authenticates each client connection the way a
Kafka broker with a SASL listener does, then relays its frames to the broker behind it.

Usage:
  sasl_front.py --listen HOST:PORT --upstream HOST:PORT --mechanism MECH [--mechanism MECH ...]
                [--user NAME:PASSWORD ...] [--session-lifetime-ms MS]
                [--iam-region REGION --iam-credential ACCESS_KEY_ID:SECRET_ACCESS_KEY ...]
                [--iam-max-skew-s SECONDS] [--no-auth] [--normalize-api-versions]
  sasl_front.py --check-iam-token TOKEN --iam-region REGION --iam-credential ID:SECRET
                [--now EPOCH_SECONDS]

With --no-auth it only relays (no SASL). --normalize-api-versions drops the top-level tagged
fields of ApiVersions v3+ responses, which Tansu sends all of and librdkafka 2.0 (Debian's kcat)
cannot parse; without it every byte from the broker is relayed unchanged.

Mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (users from --user; SCRAM credentials are
derived with scramp at start with 4096 iterations, Kafka's minimum; the exchange follows Kafka's
ScramSaslServer, which accepts a client-final nonce that merely ends with the server nonce, as
librdkafka 2.0 sends it) and OAUTHBEARER (AWS MSK IAM tokens,
checked against --iam-credential keys; see "MSK IAM tokens" below).

Protocol, as Kafka's SaslServerAuthenticator and SocketServer behave:
  * Before authentication a client may send ApiVersions (relayed to the broker; again only if the
    broker answered UNSUPPORTED_VERSION), then SaslHandshake (v0 or v1). Any other request closes
    the connection. An unknown mechanism is answered with UNSUPPORTED_SASL_MECHANISM (33) and the
    enabled mechanisms, then the connection is closed.
  * After SaslHandshake v1 the client sends SaslAuthenticate (v0-v2) requests. A failed
    authentication is answered with SASL_AUTHENTICATION_FAILED (58) and a message, then the
    connection is closed. A successful one reports session_lifetime_ms (v1+): --session-lifetime-ms,
    0 when not given.
  * After SaslHandshake v0 (legacy) the client sends raw SASL tokens, each a size-prefixed frame
    without a Kafka header, answered the same way; a failure closes the connection.
  * Once authenticated, every frame is relayed unchanged in both directions (but see
    --normalize-api-versions).
  * Re-authentication (KIP-368): an authenticated client that used SaslHandshake v1 and
    SaslAuthenticate v1+ may send SaslHandshake + SaslAuthenticate again, with the same mechanism
    and principal. Responses to requests sent before it are delivered first. Between that
    SaslHandshake and the end of the exchange, any other request closes the connection.
  * With a session lifetime, a request other than SaslHandshake that arrives after the session
    expired closes the connection (the request is not relayed), as Kafka does.

Stdout gets one JSON object per line, flushed, "event" naming what happened:
  {"event": "ready", "addr": "127.0.0.1:PORT"}
  {"event": "connect", "conn": N, "peer": "..."}
  {"event": "auth", "conn": N, "ok": true|false, "mechanism": ..., "principal": ... | null,
   "reauth": bool, "legacy": bool, "authenticate_version": V | null, "session_lifetime_ms": MS,
   "error": null | "message sent to the client", "detail": null | "why, when not in the message"}
  {"event": "expired", "conn": N, "api_key": K}
  {"event": "close", "conn": N, "reason": "..."}

MSK IAM tokens (OAUTHBEARER). The client's initial response is the RFC 7628 GS2 message
"n,,\\x01auth=Bearer <token>\\x01\\x01". The token is the unpadded base64url encoding of a SigV4
presigned URL, as the aws-msk-iam-sasl-signer libraries build it:
  https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect
      &X-Amz-Algorithm=AWS4-HMAC-SHA256
      &X-Amz-Credential=<access key id>%2F<yyyymmdd>%2F<region>%2Fkafka-cluster%2Faws4_request
      &X-Amz-Date=<yyyymmddThhmmssZ>&X-Amz-Expires=<seconds>
      [&X-Amz-Security-Token=<session token>]
      &X-Amz-SignedHeaders=host&X-Amz-Signature=<hex>[&User-Agent=<client>]
The token is accepted when the URL is https with host kafka.<region>.amazonaws.com and path "/",
Action is kafka-cluster:Connect, the credential scope is <date of X-Amz-Date>/<region>/
kafka-cluster/aws4_request for a known access key id, X-Amz-SignedHeaders is "host", the token
has not expired (X-Amz-Date + X-Amz-Expires, X-Amz-Expires at most 900 s; X-Amz-Date no more than
--iam-max-skew-s in the future) and X-Amz-Signature equals the signature recomputed with that
key's secret:
  canonical request =
      "GET\\n"
      "/\\n"
      <canonical query>\\n         every parameter except X-Amz-Signature and User-Agent (which
                                  the signers append after signing), names and values
                                  percent-encoded (RFC 3986 unreserved characters kept, "%XX"
                                  upper case), sorted, joined as name=value with "&"
      "host:kafka.<region>.amazonaws.com\\n"
      "\\n"
      "host\\n"
      hex(sha256(""))             the empty payload
  string to sign = "AWS4-HMAC-SHA256\\n" <X-Amz-Date> "\\n" <scope> "\\n" hex(sha256(canonical request))
  signing key    = HMAC chain "AWS4" + secret -> yyyymmdd -> region -> "kafka-cluster" -> "aws4_request"
  signature      = hex(HMAC(signing key, string to sign))
The principal is the access key id. A rejected token is answered with error 58 and
"IAM authentication failed: <reason>".
"""
import argparse
import asyncio
import base64
import datetime
import hashlib
import hmac
import itertools
import json
import os
import re
import struct
import sys
import time
import urllib.parse

API_PRODUCE = 0
API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36

NONE = 0
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_VERSION = 35
SASL_AUTHENTICATION_FAILED = 58

MAX_FRAME = 100 * 1024 * 1024
LINGER_S = 0.5
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
SCRAM_ITERATIONS = 4096
IAM_SERVICE = "kafka-cluster"
IAM_MAX_EXPIRES = 900


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


# ------------------------------------------------------------------------------------ wire ----


class Malformed(Exception):
    pass


class Reader:
    def __init__(self, data, pos=0):
        self.data = data
        self.pos = pos

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise Malformed(f"need {n} bytes at offset {self.pos}, frame has {len(self.data)}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        value, shift = 0, 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise Malformed("varint too long")

    def nullable_string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode("utf-8", "replace")

    def compact_nullable_string(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode("utf-8", "replace")

    def bytes32(self):
        n = self.i32()
        return b"" if n < 0 else self.take(n)

    def compact_bytes(self):
        n = self.uvarint()
        return b"" if n == 0 else self.take(n - 1)

    def tagged_fields(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string16(s):
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def flexible_request(api_key, version):
    """Whether a request uses header v2 (only the APIs this front end reads a body of)."""
    return (api_key == API_PRODUCE and version >= 9) or (api_key == API_SASL_AUTHENTICATE and version >= 2)


def parse_header(payload):
    r = Reader(payload)
    api_key, version, correlation_id = r.i16(), r.i16(), r.i32()
    r.nullable_string()  # client id
    if flexible_request(api_key, version):
        r.tagged_fields()
    return api_key, version, correlation_id, r


def produce_expects_response(version, r):
    try:
        if version >= 9:
            r.compact_nullable_string()
        elif version >= 3:
            r.nullable_string()
        return r.i16() != 0
    except Malformed:
        return True


def strip_api_versions_tags(payload):
    """An ApiVersions v3+ response (header v0) without its top-level tagged fields, which
    librdkafka 2.0 fails to parse ("Read underflow") when a broker sends them all."""
    try:
        r = Reader(payload, 4)
        r.i16()  # error code
        for _ in range(max(r.uvarint() - 1, 0)):
            r.take(6)  # api key, min, max
            r.tagged_fields()
        r.i32()  # throttle time
        return payload[: r.pos] + b"\x00"
    except Malformed:
        return payload


def handshake_response(correlation_id, error, mechanisms):
    body = struct.pack(">ih", correlation_id, error) + struct.pack(">i", len(mechanisms))
    body += b"".join(string16(m) for m in mechanisms)
    return frame(body)


def authenticate_response(correlation_id, version, error, message, auth_bytes, lifetime_ms):
    if version >= 2:
        body = struct.pack(">i", correlation_id) + b"\x00" + struct.pack(">h", error)
        if message is None:
            body += b"\x00"
        else:
            raw = message.encode()
            body += uvarint(len(raw) + 1) + raw
        body += uvarint(len(auth_bytes) + 1) + auth_bytes + struct.pack(">q", lifetime_ms) + b"\x00"
        return frame(body)
    body = struct.pack(">ih", correlation_id, error)
    body += struct.pack(">h", -1) if message is None else string16(message)
    body += struct.pack(">i", len(auth_bytes)) + auth_bytes
    if version >= 1:
        body += struct.pack(">q", lifetime_ms)
    return frame(body)


async def read_frame(reader):
    """The payload of the next size-prefixed frame; None at a clean end of stream."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise Malformed("connection closed inside a frame size") from e
        return None
    size = struct.unpack(">i", head)[0]
    if size < 0 or size > MAX_FRAME:
        raise Malformed(f"frame size {size} out of range (first bytes {head.hex()})")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as e:
        raise Malformed("connection closed inside a frame") from e


# ------------------------------------------------------------------------------ mechanisms ----


class AuthFailed(Exception):
    """Authentication failed; the message is what the client is told, `detail` what is logged."""

    def __init__(self, message, detail=None):
        super().__init__(message)
        self.detail = detail


class Plain:
    name = "PLAIN"

    def __init__(self, users):
        self.users = users
        self.principal = None

    def step(self, token):
        parts = token.split(b"\x00")
        if len(parts) != 3:
            raise AuthFailed("Invalid SASL/PLAIN response: expected 3 tokens, got %d" % len(parts))
        authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
        if not user:
            raise AuthFailed("Authentication failed: username not specified")
        if authzid and authzid != user:
            raise AuthFailed("Authentication failed: Client requested an authorization id that is different from username")
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise AuthFailed("Authentication failed: Invalid username or password")
        self.principal = user
        return True, b""


class Scram:
    """The server side of SCRAM-SHA-256/512 as Kafka's ScramSaslServer runs it (RFC 5802
    without channel binding). Stored credentials (salt, StoredKey, ServerKey) come from scramp.
    Like Kafka, the client-final nonce must end with (not equal) the server-first nonce:
    librdkafka 2.0 sends the client nonce twice there, which Kafka accepts."""

    HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}

    def __init__(self, name, credentials):
        self.name = name
        self.hash = self.HASHES[name]
        self.credentials = credentials  # user -> (salt, stored_key, server_key, iterations)
        self.principal = None
        self.stage = 0

    def failed(self, detail):
        return AuthFailed(
            f"Authentication failed during authentication due to invalid credentials with SASL mechanism {self.name}",
            detail,
        )

    def step(self, token):
        try:
            message = token.decode("utf-8")
        except UnicodeDecodeError:
            raise self.failed("SCRAM message is not UTF-8")
        if self.stage == 0:
            self.stage = 1
            return False, self.client_first(message)
        if self.stage == 1:
            self.stage = 2
            return True, self.client_final(message)
        raise AuthFailed("Unexpected SASL token after the SCRAM exchange finished")

    def client_first(self, message):
        m = re.fullmatch(r"n,(?:a=([^,]*))?,(n=([^,]*),r=([^,]+)(?:,.*)?)", message)
        if not m:
            raise self.failed(f"malformed client-first message {message!r}")
        authzid, self.client_first_bare, saslname, client_nonce = m.groups()
        user = saslname.replace("=2C", ",").replace("=3D", "=")
        if authzid and authzid != user:
            raise self.failed(f"authorization id {authzid!r} differs from user {user!r}")
        self.user = user
        self.credential = self.credentials.get(user)
        if self.credential is None:
            raise self.failed(f"unknown user {user!r}")
        salt, _, _, iterations = self.credential
        self.nonce = client_nonce + base64.b64encode(os.urandom(24)).decode()
        self.server_first = f"r={self.nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        return self.server_first.encode()

    def client_final(self, message):
        m = re.fullmatch(r"(c=[A-Za-z0-9+/=]*,r=([^,]+)(?:,.*)?),p=([A-Za-z0-9+/=]+)", message)
        if not m:
            raise self.failed(f"malformed client-final message {message!r}")
        without_proof, nonce, proof = m.groups()
        if not nonce.endswith(self.nonce):
            raise self.failed("Invalid client nonce in the final client message.")
        _, stored_key, server_key, _ = self.credential
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        client_signature = hmac.new(stored_key, auth_message, self.hash).digest()
        try:
            proof_bytes = base64.b64decode(proof, validate=True)
        except ValueError:
            raise self.failed("client proof is not base64")
        if len(proof_bytes) != len(client_signature):
            raise self.failed("client proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof_bytes, client_signature))
        if not hmac.compare_digest(self.hash(client_key).digest(), stored_key):
            raise self.failed("Invalid client credentials")
        self.principal = self.user
        server_signature = hmac.new(server_key, auth_message, self.hash).digest()
        return f"v={base64.b64encode(server_signature).decode()}".encode()


class OAuthBearer:
    name = "OAUTHBEARER"

    def __init__(self, iam):
        self.iam = iam
        self.principal = None

    def step(self, token):
        if self.iam is None:
            raise AuthFailed("IAM authentication failed: no IAM credentials configured on this listener")
        if token == b"\x01":
            raise AuthFailed("Authentication failed: the client aborted the OAUTHBEARER exchange")
        bearer = parse_oauthbearer(token)
        ok, detail = self.iam.check(bearer, time.time())
        if not ok:
            raise AuthFailed(f"IAM authentication failed: {detail}")
        self.principal = detail
        return True, b""


def parse_oauthbearer(token):
    """The bearer token of an RFC 7628 client initial response."""
    try:
        text = token.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AuthFailed("Invalid OAUTHBEARER initial response: not UTF-8") from e
    parts = text.split("\x01")
    if len(parts) < 4 or not parts[0].startswith(("n,", "y,")) or parts[-1] != "" or parts[-2] != "":
        raise AuthFailed("Invalid OAUTHBEARER initial response: expected n,,\\x01auth=Bearer <token>\\x01\\x01")
    for kv in parts[1:-2]:
        key, _, value = kv.partition("=")
        if key == "auth":
            scheme, _, bearer = value.partition(" ")
            if scheme.lower() != "bearer" or not bearer.strip():
                raise AuthFailed("Invalid OAUTHBEARER initial response: auth is not 'Bearer <token>'")
            return bearer.strip()
    raise AuthFailed("Invalid OAUTHBEARER initial response: no auth=Bearer entry")


# ------------------------------------------------------------------------------- MSK IAM ----


def sigv4_quote(s):
    return urllib.parse.quote(s, safe="-_.~")


def hmac_sha256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class Iam:
    def __init__(self, region, credentials, max_skew_s=300):
        self.region = region
        self.credentials = credentials  # access key id -> secret access key
        self.max_skew_s = max_skew_s
        self.host = f"kafka.{region}.amazonaws.com"

    def check(self, token, now):
        """(True, principal) or (False, reason)."""
        try:
            padded = token + "=" * (-len(token) % 4)
            if not re.fullmatch(r"[A-Za-z0-9_-]+=*", padded):
                return False, "token is not base64url"
            url = base64.urlsafe_b64decode(padded).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False, "token is not base64url of a URL"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or parts.netloc != self.host or parts.path not in ("", "/") or parts.fragment:
            return False, f"token URL {parts.scheme}://{parts.netloc}{parts.path} is not https://{self.host}/"
        try:
            pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return False, "malformed query string"
        params = {}
        for key, value in pairs:
            if key in params:
                return False, f"parameter {key} repeated"
            params[key] = value
        for key in ("Action", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                    "X-Amz-SignedHeaders", "X-Amz-Signature"):
            if key not in params:
                return False, f"missing {key}"
        if params["Action"] != "kafka-cluster:Connect":
            return False, f"Action is {params['Action']!r}, not 'kafka-cluster:Connect'"
        if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            return False, f"unsupported X-Amz-Algorithm {params['X-Amz-Algorithm']!r}"
        if params["X-Amz-SignedHeaders"] != "host":
            return False, f"X-Amz-SignedHeaders is {params['X-Amz-SignedHeaders']!r}, not 'host'"
        amz_date = params["X-Amz-Date"]
        try:
            signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            return False, f"malformed X-Amz-Date {amz_date!r}"
        try:
            expires = int(params["X-Amz-Expires"])
        except ValueError:
            return False, f"malformed X-Amz-Expires {params['X-Amz-Expires']!r}"
        if not 1 <= expires <= IAM_MAX_EXPIRES:
            return False, f"X-Amz-Expires {expires} is not within 1..{IAM_MAX_EXPIRES}"
        scope_parts = params["X-Amz-Credential"].split("/")
        if len(scope_parts) != 5:
            return False, "malformed X-Amz-Credential"
        access_key_id, date, region, service, terminator = scope_parts
        if date != amz_date[:8] or region != self.region or service != IAM_SERVICE or terminator != "aws4_request":
            return False, (
                f"credential scope {'/'.join(scope_parts[1:])} is not "
                f"{amz_date[:8]}/{self.region}/{IAM_SERVICE}/aws4_request"
            )
        secret = self.credentials.get(access_key_id)
        if secret is None:
            return False, f"unknown access key id {access_key_id}"
        signed = signed_at.timestamp()
        if now > signed + expires:
            return False, f"token expired at {amz_date} + {expires}s"
        if signed > now + self.max_skew_s:
            return False, f"X-Amz-Date {amz_date} is in the future"
        expected = sigv4_signature(secret, self.region, self.host, amz_date, params)
        if not hmac.compare_digest(expected, params["X-Amz-Signature"].lower()):
            return False, "signature mismatch"
        return True, access_key_id


def canonical_request(host, params):
    query = "&".join(
        sorted(
            f"{sigv4_quote(k)}={sigv4_quote(v)}"
            for k, v in params.items()
            if k not in ("X-Amz-Signature", "User-Agent")
        )
    )
    return "\n".join(["GET", "/", query, f"host:{host}", "", "host", hashlib.sha256(b"").hexdigest()])


def sigv4_signature(secret, region, host, amz_date, params):
    scope = f"{amz_date[:8]}/{region}/{IAM_SERVICE}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request(host, params).encode()).hexdigest(),
        ]
    )
    key = hmac_sha256(("AWS4" + secret).encode(), amz_date[:8])
    for part in (region, IAM_SERVICE, "aws4_request"):
        key = hmac_sha256(key, part)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------- connections ----


class Closed(Exception):
    """Close the client connection; the message is the logged reason. With `linger`, an error
    response was sent: the client gets a moment to read it and close first."""

    def __init__(self, reason, linger=False):
        super().__init__(reason)
        self.linger = linger


class Config:
    def __init__(self, args):
        self.mechanisms = args.mechanism
        self.users = dict(args.user)
        self.session_lifetime_ms = args.session_lifetime_ms
        self.no_auth = args.no_auth
        self.normalize_api_versions = args.normalize_api_versions
        self.iam = (
            Iam(args.iam_region, dict(args.iam_credential), args.iam_max_skew_s)
            if args.iam_region and args.iam_credential
            else None
        )
        self.scram = {}
        if any(m.startswith("SCRAM-") for m in self.mechanisms):
            from scramp import ScramMechanism

            for mech in self.mechanisms:
                if mech.startswith("SCRAM-"):
                    m = ScramMechanism(mech)
                    self.scram[mech] = {u: m.make_auth_info(p, iteration_count=SCRAM_ITERATIONS) for u, p in self.users.items()}

    def session(self, mechanism):
        if mechanism == "PLAIN":
            return Plain(self.users)
        if mechanism.startswith("SCRAM-"):
            return Scram(mechanism, self.scram[mechanism])
        return OAuthBearer(self.iam)


class Connection:
    def __init__(self, config, upstream, conn_id, reader, writer):
        self.config = config
        self.upstream_addr = upstream
        self.conn = conn_id
        self.reader = reader
        self.writer = writer
        self.up_reader = None
        self.up_writer = None
        # "versions": ApiVersions or SaslHandshake; "handshake": SaslHandshake only;
        # "authenticate": SaslAuthenticate; "legacy": raw tokens; "authenticated": relay.
        self.state = "authenticated" if config.no_auth else "versions"
        self.reauth = False
        self.mechanism = None
        self.session = None
        self.principal = None
        self.handshake_version = None
        self.authenticate_version = None
        self.expires_at = None
        self.pending = []  # (correlation id, api key, version) of relayed requests awaiting a response
        self.drained = asyncio.Event()
        self.drained.set()
        self.api_versions_error = None

    def send(self, data):
        self.writer.write(data)

    async def linger(self):
        """Waits up to LINGER_S for the client to close after an error response."""
        try:
            await self.writer.drain()
            deadline = time.monotonic() + LINGER_S
            while time.monotonic() < deadline:
                if not await asyncio.wait_for(self.reader.read(65536), deadline - time.monotonic()):
                    return
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    async def run(self):
        peer = self.writer.get_extra_info("peername")
        emit("connect", conn=self.conn, peer=f"{peer[0]}:{peer[1]}" if peer else None)
        reason = "client closed the connection"
        pump = None
        try:
            host, port = self.upstream_addr.rsplit(":", 1)
            try:
                self.up_reader, self.up_writer = await asyncio.open_connection(host, int(port))
            except OSError as e:
                raise Closed(f"upstream {self.upstream_addr} unreachable: {e}") from e
            pump = asyncio.ensure_future(self.pump())
            while True:
                payload = await read_frame(self.reader)
                if payload is None:
                    if pump.done():
                        reason = pump.result()
                    break
                await self.handle(payload)
                await self.writer.drain()
                if pump.done():
                    reason = pump.result()
                    break
        except Closed as e:
            reason = str(e)
            if e.linger:
                await self.linger()
        except Malformed as e:
            reason = f"malformed request: {e}"
        except (ConnectionError, OSError) as e:
            reason = f"client connection error: {e}"
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
            try:
                await asyncio.wait_for(self.writer.drain(), 2)
            except Exception:
                pass
            for w in (self.writer, self.up_writer):
                if w is not None:
                    w.close()
            emit("close", conn=self.conn, reason=reason)

    async def pump(self):
        """Broker -> client. Returns why it stopped."""
        try:
            while True:
                payload = await read_frame(self.up_reader)
                if payload is None:
                    self.writer.close()
                    return "broker closed the connection"
                correlation_id = struct.unpack(">i", payload[:4])[0] if len(payload) >= 4 else None
                if self.pending and self.pending[0][0] == correlation_id:
                    _, api_key, version = self.pending.pop(0)
                    if api_key == API_API_VERSIONS and len(payload) >= 6:
                        self.api_versions_error = struct.unpack(">h", payload[4:6])[0]
                        if self.config.normalize_api_versions and version >= 3:
                            payload = strip_api_versions_tags(payload)
                if not self.pending:
                    self.drained.set()
                self.send(frame(payload))
                await self.writer.drain()
        except (Malformed, ConnectionError, OSError) as e:
            self.writer.close()
            return f"broker connection error: {e}"

    def relay(self, api_key, version, correlation_id, reader, payload):
        expects = True
        if api_key == API_PRODUCE:
            expects = produce_expects_response(version, reader)
        if expects:
            self.pending.append((correlation_id, api_key, version))
            self.drained.clear()
        self.up_writer.write(frame(payload))

    async def answer(self, data):
        """Sends a locally built response after the responses to earlier relayed requests."""
        await self.drained.wait()
        self.send(data)

    async def handle(self, payload):
        if self.state == "legacy":
            await self.legacy_token(payload)
            return
        api_key, version, correlation_id, r = parse_header(payload)
        if self.config.no_auth:
            self.relay(api_key, version, correlation_id, r, payload)
        elif api_key == API_SASL_HANDSHAKE:
            await self.handshake(version, correlation_id, r)
        elif api_key == API_SASL_AUTHENTICATE:
            await self.authenticate(version, correlation_id, r)
        elif self.state == "authenticated":
            if self.expires_at is not None and time.monotonic() >= self.expires_at:
                emit("expired", conn=self.conn, api_key=api_key)
                raise Closed(f"session expired; request api_key={api_key} not relayed")
            self.relay(api_key, version, correlation_id, r, payload)
        elif api_key == API_API_VERSIONS and self.state == "versions":
            self.relay(api_key, version, correlation_id, r, payload)
            await self.drained.wait()
            await self.writer.drain()
            if self.api_versions_error != UNSUPPORTED_VERSION:
                self.state = "handshake"
        else:
            during = "re-authentication" if self.reauth else "SASL handshake"
            raise Closed(f"unexpected request api_key={api_key} v{version} during {during}")

    async def handshake(self, version, correlation_id, r):
        mechanism = r.nullable_string() or ""
        enabled = self.config.mechanisms
        if self.state == "authenticated":
            if self.handshake_version < 1 or (self.authenticate_version or 0) < 1 or version < 1:
                await self.answer(handshake_response(correlation_id, ILLEGAL_SASL_STATE, enabled))
                return
            if mechanism != self.mechanism:
                await self.answer(handshake_response(correlation_id, ILLEGAL_SASL_STATE, enabled))
                self.log_auth(False, mechanism, None, f"Cannot change mechanisms during re-authentication from {self.mechanism} to {mechanism}")
                raise Closed("mechanism changed during re-authentication", linger=True)
            self.reauth = True
        elif self.state not in ("versions", "handshake"):
            raise Closed(f"unexpected SaslHandshake in state {self.state}")
        if mechanism not in enabled:
            await self.answer(handshake_response(correlation_id, UNSUPPORTED_SASL_MECHANISM, enabled))
            self.log_auth(False, mechanism, None, f"Unsupported SASL mechanism {mechanism}")
            raise Closed(f"unsupported mechanism {mechanism!r}", linger=True)
        self.mechanism = mechanism
        self.session = self.config.session(mechanism)
        self.handshake_version = version
        await self.answer(handshake_response(correlation_id, NONE, enabled))
        self.state = "authenticate" if version >= 1 else "legacy"

    async def authenticate(self, version, correlation_id, r):
        if self.state == "authenticated":
            await self.answer(
                authenticate_response(
                    correlation_id, version, ILLEGAL_SASL_STATE,
                    "SaslAuthenticate request received after successful authentication", b"", 0,
                )
            )
            return
        if self.state != "authenticate":
            await self.answer(
                authenticate_response(
                    correlation_id, version, ILLEGAL_SASL_STATE,
                    f"Unexpected SaslAuthenticate request in state {self.state}", b"", 0,
                )
            )
            raise Closed("SaslAuthenticate before SaslHandshake", linger=True)
        token = r.compact_bytes() if version >= 2 else r.bytes32()
        if version >= 2:
            r.tagged_fields()
        try:
            done, response = self.session.step(token)
            if done:
                self.check_principal()
        except AuthFailed as e:
            await self.answer(authenticate_response(correlation_id, version, SASL_AUTHENTICATION_FAILED, str(e), b"", 0))
            self.authenticate_version = version
            self.log_auth(False, self.mechanism, self.session.principal, str(e), detail=e.detail)
            raise Closed(f"authentication failed: {e}", linger=True)
        if not done:
            await self.answer(authenticate_response(correlation_id, version, NONE, None, response, 0))
            return
        self.authenticate_version = version
        lifetime = self.start_session()
        await self.answer(authenticate_response(correlation_id, version, NONE, None, response, lifetime))

    async def legacy_token(self, token):
        try:
            done, response = self.session.step(token)
            if done:
                self.check_principal()
        except AuthFailed as e:
            self.log_auth(False, self.mechanism, self.session.principal, str(e), detail=e.detail)
            raise Closed(f"authentication failed: {e}")
        self.send(frame(response))
        if done:
            self.start_session()

    def check_principal(self):
        if self.reauth and self.session.principal != self.principal:
            raise AuthFailed(
                f"Cannot change principals during re-authentication from User:{self.principal}: "
                f"User:{self.session.principal}"
            )

    def start_session(self):
        self.principal = self.session.principal
        lifetime = self.config.session_lifetime_ms
        self.expires_at = time.monotonic() + lifetime / 1000 if lifetime > 0 else None
        self.log_auth(True, self.mechanism, self.principal, None, lifetime)
        self.state = "authenticated"
        self.reauth = False
        return lifetime

    def log_auth(self, ok, mechanism, principal, error, lifetime=0, detail=None):
        emit(
            "auth",
            conn=self.conn,
            ok=ok,
            mechanism=mechanism,
            principal=principal,
            reauth=self.reauth,
            legacy=self.handshake_version == 0,
            authenticate_version=None if self.handshake_version == 0 else self.authenticate_version,
            session_lifetime_ms=lifetime,
            error=error,
            detail=detail,
        )


# ------------------------------------------------------------------------------------ main ----


def credential(text):
    name, sep, secret = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:SECRET, got {text!r}")
    return name, secret


def host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def serve(args):
    config = Config(args)
    counter = itertools.count(1)
    host, port = args.listen

    async def accept(reader, writer):
        await Connection(config, args.upstream, next(counter), reader, writer).run()

    server = await asyncio.start_server(accept, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()
    emit("ready", addr=f"{bound[0]}:{bound[1]}")
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=host_port)
    p.add_argument("--upstream")
    p.add_argument("--mechanism", action="append", default=[], choices=MECHANISMS)
    p.add_argument("--user", action="append", default=[], type=credential, help="NAME:PASSWORD")
    p.add_argument("--session-lifetime-ms", type=int, default=0)
    p.add_argument("--no-auth", action="store_true", help="relay without authentication")
    p.add_argument("--normalize-api-versions", action="store_true",
                   help="drop the top-level tagged fields of ApiVersions v3+ responses")
    p.add_argument("--iam-region")
    p.add_argument("--iam-credential", action="append", default=[], type=credential, help="ACCESS_KEY_ID:SECRET")
    p.add_argument("--iam-max-skew-s", type=int, default=300)
    p.add_argument("--check-iam-token", metavar="TOKEN", help="check one token offline, print JSON and exit")
    p.add_argument("--now", type=float, help="with --check-iam-token: the time to check at (epoch seconds)")
    args = p.parse_args()

    if args.check_iam_token is not None:
        if not args.iam_region or not args.iam_credential:
            p.error("--check-iam-token needs --iam-region and --iam-credential")
        iam = Iam(args.iam_region, dict(args.iam_credential), args.iam_max_skew_s)
        now = time.time() if args.now is None else args.now
        ok, detail = iam.check(args.check_iam_token, now)
        print(json.dumps({"ok": ok, "principal": detail if ok else None, "error": None if ok else detail}), flush=True)
        sys.exit(0 if ok else 1)

    if args.listen is None or args.upstream is None or not (args.mechanism or args.no_auth):
        p.error("--listen, --upstream and at least one --mechanism (or --no-auth) are required")
    if "OAUTHBEARER" in args.mechanism and not (args.iam_region and args.iam_credential):
        p.error("OAUTHBEARER needs --iam-region and --iam-credential")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
