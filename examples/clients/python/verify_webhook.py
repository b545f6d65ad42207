"""Verifies a Quayside completion webhook (docs/protocol.md, "Completion webhooks").

Use verify(secret, signature_header, raw_body) in your receiver, on the raw request body (before
any JSON parsing). Standard library only. As a script: SECRET and SIGNATURE in the environment,
the raw body on stdin; exits 0 when the webhook is authentic and fresh, 1 otherwise.
"""

import hashlib
import hmac
import os
import sys
import time

TOLERANCE_S = 300  # refuse signatures older (or newer) than five minutes: no replays


def verify(secret: bytes, header: str, body: bytes, now: float | None = None) -> bool:
    """True when `header` (Quayside-Signature: t=<unix>,v1=<hex>) signs `body` with `secret`."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > TOLERANCE_S:
        return False
    expected = hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


if __name__ == "__main__":
    ok = verify(os.environb[b"SECRET"], os.environ["SIGNATURE"], sys.stdin.buffer.read())
    print("valid" if ok else "invalid")
    sys.exit(0 if ok else 1)
