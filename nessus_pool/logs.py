"""Structured logging: JSON lines on stderr (journald-friendly) or human text, with
redaction of secrets by key name and by registered value."""

from __future__ import annotations

import json
import logging
import re
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


#: loggers of the libraries we serve HTTP with; their lines go through our handler
LIBRARY_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web")
_HEADER_SECRET = re.compile(
    r"(?im)\b((?:proxy-)?authorization|cookie|set-cookie|x-api-key|x-apikeys)(\s*:\s*)[^\n]*"
)


class LibraryRecordFilter(logging.Filter):
    """For records from library loggers: a structured ``event``, header values that carry
    credentials cut out of the message and the exception (aiohttp quotes the raw request
    line of a malformed request, Authorization header included), the exception reduced to
    one line, and at most ``burst`` lines per ``interval_s`` (malformed requests are cheap to
    send; the folded count rides on the next line let through)."""

    def __init__(self, burst: int = 10, interval_s: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self._window_start_s = 0.0
        self._in_window = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._window_start_s >= self.interval_s:
            self._window_start_s, self._in_window = now, 0
        self._in_window += 1
        if self._in_window > self.burst:
            self._suppressed += 1
            return False
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f": {type(exc).__name__}: {exc}"
        record.msg, record.args = _HEADER_SECRET.sub(r"\1\2[REDACTED]", text), None
        record.exc_info, record.exc_text = None, None
        if not getattr(record, "event", None):
            record.event = "http_" + record.name.rsplit(".", 1)[-1]
        if self._suppressed:
            record.suppressed = self._suppressed
            self._suppressed = 0
        return True


def route_library_logs(names: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Send the library loggers through the handler setup_logging installed (JSON,
    redaction), each with a LibraryRecordFilter, instead of Python's bare last-resort
    handler."""
    handlers = logging.getLogger("nessus_pool").handlers
    for name in names:
        lib = logging.getLogger(name)
        for h in list(lib.handlers):
            lib.removeHandler(h)
        for f in list(lib.filters):
            lib.removeFilter(f)
        lib.addFilter(LibraryRecordFilter())
        for h in handlers:
            lib.addHandler(h)
        lib.setLevel(logging.WARNING)
        lib.propagate = False
