"""Issue 18: a JSON log line costs less (one per task event, so one per submit at least)
and says the same: the caller's frame is not looked up, the timestamp's date and time are
formatted once per second, field names are checked for secrets once."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from nessus_pool import logs
from nessus_pool.logs import JsonFormatter, setup_logging


@pytest.fixture
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Everything setup_logging changes put back afterwards."""
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))
    root = logging.getLogger("nessus_pool")
    handlers, level, propagate = list(root.handlers), root.level, root.propagate
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = propagate


@pytest.mark.usefixtures("restored_logging")
def test_records_skip_the_caller_lookup_and_lines_stay_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)  # here: pytest swaps stderr after fixtures run
    setup_logging("json", "info")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    log = logging.getLogger("nessus_pool.engine")
    logging.getLogger("nessus_pool").addHandler(keep)
    log.info(
        "task %s",
        "queued",
        extra={"event": "task_queued", "task_id": "0123456789abcdef", "scanner": None},
    )
    # before: the stack was walked for every record (file, line, function), never printed
    assert (seen[0].pathname, seen[0].lineno) == ("(unknown file)", 0)
    line = json.loads(out.getvalue())
    assert {k: v for k, v in line.items() if k != "ts"} == {
        "level": "info",
        "logger": "nessus_pool.engine",
        "event": "task_queued",
        "message": "task queued",
        "task_id": "0123456789abcdef",
        "scanner": None,
    }


def _record(created_s: float, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("nessus_pool.api", logging.INFO, __file__, 1, "hello", None, None)
    rec.created, rec.msecs = created_s, (created_s % 1) * 1000
    for k, v in fields.items():
        setattr(rec, k, v)
    return rec


def test_the_timestamp_is_formatted_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = time.strftime

    def counted(fmt: str, t: time.struct_time) -> str:
        calls.append(time.mktime(t))
        return real(fmt, t)

    monkeypatch.setattr(time, "strftime", counted)
    fmt = JsonFormatter()
    base = 1_764_536_084.0  # 2025-11-30T20:54:44Z
    stamps = [json.loads(fmt.format(_record(base + i / 100)))["ts"] for i in range(100)]
    stamps.append(json.loads(fmt.format(_record(base + 1.25)))["ts"])
    assert stamps[0] == "2025-11-30T20:54:44.000Z"
    assert stamps[50] == "2025-11-30T20:54:44.500Z"
    assert stamps[-1] == "2025-11-30T20:54:45.250Z"
    assert len(calls) == 2  # before: once per line (101)


def test_fields_keep_their_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-value-" + "x" * 12
    logs.register_secret(secret, source="test")
    line = json.loads(
        JsonFormatter().format(
            _record(
                1_764_536_084.5,
                event="probe",
                api_password="plain",
                detail=f"key {secret} leaked",
                nested={"k": [secret], secret: 1},
                count=3,
            )
        )
    )
    assert line["api_password"] == "[REDACTED]"
    assert line["detail"] == "key [REDACTED] leaked"
    assert line["nested"] == {"k": ["[REDACTED]"], "[REDACTED]": 1}
    assert line["count"] == 3
