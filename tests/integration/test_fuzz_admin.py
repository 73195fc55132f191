"""Hostile input against the admin API (hypothesis): malformed JSON, wrong types, huge
values, unknown fields, path tricks, non-JSON content types. Only 2xx/4xx answers, never a
5xx or a crash, and no task is accepted half-way: the task count moves only on a 202.

The request count and the answers by class are printed at the end of the module. CI runs the
quick sizes (~400 requests); ``NESSUS_POOL_FUZZ_FULL=1`` runs more than 10,000."""

from __future__ import annotations

import asyncio
import json
import os
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

#: NESSUS_POOL_FUZZ_FULL=1: more than 10,000 requests per module instead of the CI sizes
FULL = os.environ.get("NESSUS_POOL_FUZZ_FULL") == "1"
#: per-test time limit: the full sizes take minutes
TIMEOUT_S = 3600 if FULL else 120


def examples(quick: int, full: int) -> int:
    return full if FULL else quick


def fuzz_settings(quick: int, full: int) -> settings:
    return settings(
        max_examples=examples(quick, full),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


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
        # a small address limit, so the body cap stays max-body-bytes (it is raised to what
        # the address limit needs: Config.body_limit_bytes)
        cfg["security"] = {"max-addresses-per-task": 16}
        self.daemon = Daemon(parse_config(_toml(cfg)))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        #: answers by class ("2xx", "4xx", "5xx"), plus "requests"
        self.counts: dict[str, int] = {"requests": 0}

    def count(self, status: int) -> None:
        self.counts["requests"] += 1
        key = f"{status // 100}xx"
        self.counts[key] = self.counts.get(key, 0) + 1

    def report(self, config: pytest.Config, name: str) -> None:
        """One line on the terminal, past pytest's capture, with the counts."""
        line = f"{name}: {json.dumps(self.counts, sort_keys=True)}" + (
            " (full)" if FULL else " (quick; NESSUS_POOL_FUZZ_FULL=1 for 10,000+)"
        )
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

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

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.daemon.url + path,
            data=body,
            method=method,
            headers={"Content-Type": content_type} if content_type else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                self.count(r.status)
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            self.count(e.code)
            raw = e.read()
            return e.code, json.loads(raw) if raw.startswith(b"{") else raw


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LiveDaemon]:
    with LiveDaemon(tmp_path_factory.mktemp("fuzz")) as d:
        yield d
        d.report(request.config, "admin API fuzz")
        assert d.counts.get("5xx", 0) == 0, d.counts


def check(live: LiveDaemon, status: int, body: Any, before: int) -> None:
    assert status < 500, body
    if status == 202:
        assert live.tasks() == before + 1
    else:
        assert live.tasks() == before
        if status >= 400:
            assert isinstance(body, dict) and body["error"]["message"], body


@pytest.mark.timeout(TIMEOUT_S)
@fuzz_settings(120, 4000)
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), json_values, max_size=8))
def test_submit_with_arbitrary_fields(live: LiveDaemon, body: dict[str, Any]) -> None:
    before = live.tasks()
    status, resp = live.request("POST", "/api/v1/scans", json.dumps(body).encode())
    check(live, status, resp, before)


@pytest.mark.timeout(TIMEOUT_S)
@fuzz_settings(80, 2500)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_submit_with_arbitrary_bytes(live: LiveDaemon, raw: bytes) -> None:
    before = live.tasks()
    status, resp = live.request("POST", "/api/v1/scans", raw)
    check(live, status, resp, before)


@pytest.mark.timeout(TIMEOUT_S)
@fuzz_settings(80, 2000)
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


@pytest.mark.timeout(TIMEOUT_S)
@fuzz_settings(60, 1500)
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


ADMIN_POSTS = [
    "/api/v1/scans",
    "/api/v1/scans/0123456789abcdef/cancel",
    "/api/v1/scanners/sim-1/drain",
    "/api/v1/dlq/purge",
    "/api/v1/reload",
]


@pytest.mark.timeout(TIMEOUT_S)
@fuzz_settings(40, 1000)
@given(
    st.sampled_from(ADMIN_POSTS),
    st.sampled_from(
        [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "",
        ]
    )
    | st.text(max_size=30).filter(lambda t: "application/json" not in t.lower()),
    st.binary(min_size=1, max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_bodies_that_are_not_declared_json_are_refused(
    live: LiveDaemon, path: str, content_type: str, raw: bytes
) -> None:
    """A cross-site page can send these without a preflight: nothing may act on them."""
    before = live.tasks()
    enabled = [v.enabled for v in live.daemon.service.scanner_views()]  # type: ignore[union-attr]
    try:
        status, body = live.request("POST", path, raw, content_type=content_type)
    except ValueError:  # a header value urllib itself refuses to send
        return
    assert status in (400, 415), (path, content_type, status, body)
    assert live.tasks() == before
    assert [v.enabled for v in live.daemon.service.scanner_views()] == enabled  # type: ignore[union-attr]
