"""What the test clients print: one JSON object a line on stdout, and on failure a line naming
the script on stderr and an immediate exit (no client library cleanup that could hang)."""

import json
import os
import sys


def fail(msg, code=1):
    print(f"{os.path.basename(sys.argv[0])}: error: {msg}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)
