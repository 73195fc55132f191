"""Structured logging: JSON lines on stderr (journald-friendly) or human text, with
redaction of secrets by key name and by registered value."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import msgspec

_STD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}
SECRET_KEYS = (
    "password",
    "secret",
    "token",
    "access_key",
    "accesskey",
    "secretkey",
    "private_key",
    "authorization",
    "cookie",
    "api_key",
)
_secret_values: set[str] = set()


def register_secret(value: str | None) -> None:
    """Values that must never appear in a log line (scanner keys, passwords)."""
    if value and len(value) >= 4:
        _secret_values.add(value)


def redact(text: str) -> str:
    for s in _secret_values:
        if s in text:
            text = text.replace(s, "[REDACTED]")
    return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.__dict__.items():
        if k in _STD or k.startswith("_"):
            continue
        if any(s in k.lower() for s in SECRET_KEYS):
            v = "[REDACTED]"
        out[k] = v
    return out


_encoder = msgspec.json.Encoder(enc_hook=str)


def _json_line(data: dict[str, Any]) -> str:
    try:
        return _encoder.encode(data).decode()
    except (TypeError, ValueError, OverflowError):
        return json.dumps(data, default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
            "message": record.getMessage(),
        }
        data.update(_fields(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return redact(_json_line(data))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if v is not None)
        line = f"{time.strftime('%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
        if extra:
            line += f"  {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    root = logging.getLogger("nessus_pool")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
