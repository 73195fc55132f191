"""Hostile input against the admin API (hypothesis): malformed JSON, wrong types, huge
values, unknown fields, path tricks. Only 2xx/4xx answers, never a 5xx or a crash, and no
task is accepted half-way: the task count moves only on a 202."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nessus_pool.config import parse_config
from nessus_pool.daemon import Daemon
from tests.conftest import sim_config

FIELDS = [
    "targets",
    "name",
    "description",
    "pool",
    "scanner",
    "scan_type",
    "credential",
    "ssh_username",
    "ssh_password",
    "elevate_privileges_with",
    "escalation_account",
    "escalation_password",
    "template",
    "priority",
    "idempotency_key",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


class LiveDaemon:
    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        cfg = sim_config(tmp, scan_seconds=30)
        cfg["server"]["max-body-bytes"] = 64 * 1024
        self.daemon = Daemon(parse_config(_toml(cfg)))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LiveDaemon:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.daemon.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.daemon.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def tasks(self) -> int:
        assert self.daemon.engine is not None
        return len(self.daemon.engine.tasks)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.daemon.url + path,
            data=body,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw.startswith(b"{") else raw


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    with LiveDaemon(tmp_path_factory.mktemp("fuzz")) as d:
        yield d


def check(live: LiveDaemon, status: int, body: Any, before: int) -> None:
    assert status < 500, body
    if status == 202:
        assert live.tasks() == before + 1
    else:
        assert live.tasks() == before
        if status >= 400:
            assert isinstance(body, dict) and body["error"]["message"], body


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), json_values, max_size=8))
def test_submit_with_arbitrary_fields(live: LiveDaemon, body: dict[str, Any]) -> None:
    before = live.tasks()
    status, resp = live.request("POST", "/api/v1/scans", json.dumps(body).encode())
    check(live, status, resp, before)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_submit_with_arbitrary_bytes(live: LiveDaemon, raw: bytes) -> None:
    before = live.tasks()
    status, resp = live.request("POST", "/api/v1/scans", raw)
    check(live, status, resp, before)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.text(
        alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1, max_size=80
    ),
    st.sampled_from(["", "/results", "/export", "/compare", "/cancel"]),
)
def test_task_ids_that_would_escape_are_refused(
    live: LiveDaemon, task_id: str, suffix: str
) -> None:
    path = "/api/v1/scans/" + urllib.parse.quote(task_id, safe="") + suffix
    status, _ = live.request("POST" if suffix == "/cancel" else "GET", path)
    assert status in (400, 404, 405, 409), (task_id, status)


def test_body_over_limit_is_413(live: LiveDaemon) -> None:
    before = live.tasks()
    big = json.dumps({"targets": "10.0.0.1", "description": "x" * 100_000}).encode()
    status, body = live.request("POST", "/api/v1/scans", big)
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert live.tasks() == before


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "status",
                "pool",
                "target",
                "limit",
                "cursor",
                "min_severity",
                "page",
                "page_size",
                "host",
                "port",
                "created_from_ms",
            ]
        ),
        st.text(max_size=30),
        max_size=5,
    )
)
def test_query_strings(live: LiveDaemon, params: dict[str, str]) -> None:
    qs = urllib.parse.urlencode(params)
    status, _ = live.request("GET", f"/api/v1/scans?{qs}")
    assert status in (200, 400), (params, status)
