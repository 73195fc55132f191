"""The webhook signature, as Stripe signs its webhooks: ``X-Nessus-Pool-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``. The timestamp is signed
with the body, so a receiver that refuses old timestamps refuses replays. Pure."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Nessus-Pool-Signature"
DELIVERY_HEADER = "X-Nessus-Pool-Delivery"
EVENT_HEADER = "X-Nessus-Pool-Event"
#: a receiver should refuse a signature older than this (README's snippet does)
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp_s>." + body`` under ``secret``."""
    signed = str(timestamp_s).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp_s: int, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body`` sent at ``timestamp_s``."""
    return f"t={timestamp_s},v1={signature(secret, timestamp_s, body)}"


def verify(
    secret: str, header: str, body: bytes, now_s: int, tolerance_s: int = DEFAULT_TOLERANCE_S
) -> bool:
    """What a receiver does: parse ``header``, refuse a timestamp more than
    ``tolerance_s`` away from ``now_s``, compare the ``v1`` signature in constant time."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp_s = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = signature(secret, timestamp_s, body)
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))
