"""Issue 13 #2: secrets are redacted from logs by value only while they matter, without
rewriting ordinary text or breaking the JSON of a line, at a cost that does not grow with
the number of secrets."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest

from nessus_pool import logs
from nessus_pool.daemon import Daemon
from nessus_pool.errors import CapacityError, ValidationError
from nessus_pool.logs import JsonFormatter, TextFormatter, redact, secrets_registered
from nessus_pool.models import ScanType
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory, sim_config


def _line(message: str, **fields: Any) -> dict[str, Any]:
    rec = logging.LogRecord("nessus_pool.engine", logging.INFO, __file__, 1, message, None, None)
    rec.event = "task_running"
    for k, v in fields.items():
        setattr(rec, k, v)
    parsed: dict[str, Any] = json.loads(JsonFormatter().format(rec))
    return parsed


def _inline(password: str, **kw: Any) -> SubmitRequest:
    return SubmitRequest(
        targets="10.5.0.9",
        scan_type=ScanType.AUTHENTICATED,
        ssh_username="audit",
        ssh_password=password,
        **kw,
    )


async def test_refused_requests_register_nothing_and_ended_tasks_release_theirs(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    data = sim_config(tmp_path, scan_seconds=0.2)
    data["pools"][0]["max-queued"] = 1
    d: Daemon = await start_daemon(data)
    svc = d.service
    assert svc is not None
    for sc in ("sim-1", "sim-2"):
        svc.set_scanner_enabled(sc, False)
    before = secrets_registered()
    refused = "refused-" + secrets.token_hex(8)
    with pytest.raises(ValidationError):  # 400: bad priority, checked after the credentials
        await svc.submit(_inline(refused, priority=1000))
    accepted = "accepted-" + secrets.token_hex(8)
    sub = await svc.submit(_inline(accepted))
    with pytest.raises(CapacityError):  # 429: the queue (max-queued = 1) is full
        await svc.submit(_inline(refused))
    assert secrets_registered() == before + 1
    assert redact(f"x {refused} y") == f"x {refused} y"
    assert redact(f"x {accepted} y") == "x [REDACTED] y"
    svc.set_scanner_enabled("sim-1", True)
    view = await svc.wait_for(sub.task_id, 30)
    assert view.status in ("completed", "failed")
    assert secrets_registered() == before
    assert redact(f"x {accepted} y") == f"x {accepted} y"


async def test_short_and_common_passwords_are_not_redaction_strings(
    tmp_path: Path,
    start_daemon: DaemonFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    svc = d.service
    assert svc is not None
    for sc in ("sim-1", "sim-2"):
        svc.set_scanner_enabled(sc, False)
    caplog.set_level(logging.WARNING, logger="nessus_pool.logs")
    monkeypatch.setattr(logs, "_warned", set())  # warnings are once per value per process
    before = secrets_registered()
    await svc.submit(_inline("task_"))
    await svc.submit(_inline("password"))
    assert secrets_registered() == before
    line = _line("task_running", task_id="task_abc")
    assert line["task_id"] == "task_abc" and "[REDACTED]" not in json.dumps(line)
    warned = [r for r in caplog.records if getattr(r, "event", None) == "secret_not_redactable"]
    assert len(warned) == 2
    assert all(
        "task_" not in r.getMessage() and "password" not in str(r.__dict__.get("source"))
        for r in warned
    )


def test_secret_that_looks_like_json_syntax_cannot_break_a_line() -> None:
    nasty = '","level":"x' + secrets.token_hex(4)
    logs.hold_task_secrets("t-json", [nasty])
    try:
        line = _line(f"error text {nasty} here", error={"detail": [nasty]}, count=3)
        assert line["message"] == "error text [REDACTED] here"
        assert line["error"] == {"detail": ["[REDACTED]"]} and line["count"] == 3
        rec = logging.LogRecord("nessus_pool", logging.INFO, __file__, 1, nasty, None, None)
        assert nasty not in TextFormatter().format(rec)
    finally:
        logs.release_task_secrets("t-json")
    assert _line(f"after {nasty}")["message"] == f"after {nasty}"


class _CountingDict(dict[str, Any]):
    def __init__(self, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.lookups = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.lookups += 1
        return super().get(key, default)


def _lookups(count: int, text: str) -> tuple[int, str]:
    """(dict lookups, redacted text) for ``text`` with ``count`` secrets registered."""
    index = logs._SecretIndex()
    for i in range(count):  # one shared prefix: the worst case for a prefix index
        index.add(f"secret-{i:08d}-{i * 7919:x}")
    counting = _CountingDict(index._by_prefix)
    index._by_prefix = counting
    out = index.redact(text)
    return counting.lookups, out


def test_redaction_cost_does_not_grow_with_the_number_of_secrets() -> None:
    text = "a log line about scanner lan-1 and task_123 " * 8 + f"secret-00000009-{9 * 7919:x} end"
    small, out_small = _lookups(10, text)
    large, out_large = _lookups(165_000, text)
    assert out_small == out_large and out_large.endswith(" [REDACTED] end")
    # one lookup per position of the line, for 10 secrets as for 165,000
    assert small == large <= len(text)
