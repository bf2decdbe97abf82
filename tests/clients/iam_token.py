#!/usr/bin/env python3
"""Reference AWS MSK IAM token presigner (SASL/OAUTHBEARER), standard library only.

Usage:
  iam_token.py --region REGION --access-key-id ID --secret-access-key SECRET
               [--session-token TOKEN] [--timestamp EPOCH_SECONDS] [--expires SECONDS]
               [--user-agent UA | --no-user-agent] [--url]

Prints the token: the unpadded base64url encoding of a SigV4 presigned URL (service
"kafka-cluster", empty payload), laid out as aws-msk-iam-sasl-signer-python 1.0.2 lays it out:
  https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=...
      &X-Amz-Credential=...&X-Amz-Date=...&X-Amz-Expires=...&X-Amz-SignedHeaders=host
      [&X-Amz-Security-Token=...]&X-Amz-Signature=...&User-Agent=...
The User-Agent parameter is appended after signing and is not signed. With the same
credentials, time and user agent the output is byte for byte that library's token.
--url prints the decoded URL instead. Also importable: presign(...).
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import time
import urllib.parse

SERVICE = "kafka-cluster"
DEFAULT_USER_AGENT = "kafka-sidecar-tests/iam_token.py"


def _quote(s):
    return urllib.parse.quote(str(s), safe="-_.~")


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def presign_url(region, access_key_id, secret_access_key, session_token=None, timestamp=None, expires=900,
                user_agent=DEFAULT_USER_AGENT):
    """The presigned URL the token encodes."""
    when = datetime.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, datetime.timezone.utc)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    host = f"kafka.{region}.amazonaws.com"
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    params = [
        ("Action", "kafka-cluster:Connect"),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{access_key_id}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if session_token:
        params.append(("X-Amz-Security-Token", session_token))
    encoded = [f"{_quote(k)}={_quote(v)}" for k, v in params]
    canonical = "\n".join(
        ["GET", "/", "&".join(sorted(encoded)), f"host:{host}", "", "host", hashlib.sha256(b"").hexdigest()]
    )
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret_access_key).encode(), date)
    for part in (region, SERVICE, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    url = f"https://{host}/?" + "&".join(encoded) + f"&X-Amz-Signature={signature}"
    if user_agent:
        url += f"&User-Agent={_quote(user_agent)}"
    return url


def presign(region, access_key_id, secret_access_key, session_token=None, timestamp=None, expires=900,
            user_agent=DEFAULT_USER_AGENT):
    """The OAUTHBEARER token: unpadded base64url of the presigned URL."""
    url = presign_url(region, access_key_id, secret_access_key, session_token, timestamp, expires, user_agent)
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--region", required=True)
    p.add_argument("--access-key-id", required=True)
    p.add_argument("--secret-access-key", required=True)
    p.add_argument("--session-token")
    p.add_argument("--timestamp", type=float, help="signing time, epoch seconds (default: now)")
    p.add_argument("--expires", type=int, default=900)
    p.add_argument("--user-agent", default=DEFAULT_USER_AGENT)
    p.add_argument("--no-user-agent", action="store_true")
    p.add_argument("--url", action="store_true", help="print the presigned URL instead of the token")
    args = p.parse_args()
    fn = presign_url if args.url else presign
    print(
        fn(
            args.region,
            args.access_key_id,
            args.secret_access_key,
            args.session_token,
            args.timestamp,
            args.expires,
            None if args.no_user_agent else args.user_agent,
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
