"""Fuzz every admin route (path parameters, query parameters, JSON bodies) with hypothesis
against a real daemon: malformed input is a 4xx with the error shape, never a 5xx.

Hypothesis drives the examples from a worker thread; each request runs on the test's event
loop (where the daemon lives) through the real aiohttp client.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from pathlib import Path

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nessus_pool.api.query import COMPARE, LIST_DLQ, LIST_SCANNERS, LIST_SCANS, RESULTS
from nessus_pool.daemon import Daemon
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory, sim_config

EXAMPLES = 400
KNOWN_NAMES = sorted({*LIST_SCANS, *LIST_DLQ, *LIST_SCANNERS, *COMPARE, *RESULTS})
NASTY_VALUES = [
    "",
    "0",
    "-1",
    "99999999999999999999999",
    "9223372036854775808",
    "²",
    "١٢",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "true",
    "maybe",
    "high",
    "10.0.0.0/8",
    "10.0.0.0/99",
    ",,,",
    "custom",
    "a" * 5000,
    "\x00",
    "'; drop table tasks; --",
]
BODY_KEYS = [
    "targets",
    "task_ids",
    "pool",
    "older_than_s",
    "confirm",
    "priority",
    "scan_type",
    "credential",
    "idempotency_key",
    "name",
    "x",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(NASTY_VALUES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
query_values = st.sampled_from(NASTY_VALUES) | st.text(max_size=20)
query_names = st.sampled_from(KNOWN_NAMES) | st.text(min_size=1, max_size=12)


def routes(d: Daemon) -> list[tuple[str, str]]:
    assert d.app is not None
    return sorted(
        {
            (r.method, r.resource.canonical)
            for r in d.app.router.routes()
            if r.resource is not None and r.method in ("GET", "POST")
        }
    )


async def test_no_admin_route_answers_5xx(tmp_path: Path, start_daemon: DaemonFactory) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, scan_seconds=0.1))
    assert d.service is not None
    done = (await d.service.submit(SubmitRequest(targets="10.6.0.1"))).task_id
    assert (await d.service.wait_for(done, 60)).status == "completed"
    ids = [done, "0123456789abcdef", "sim-1", "lan"]
    loop = asyncio.get_running_loop()
    seen: dict[int, int] = {}
    table = routes(d)
    assert len(table) >= 20, table

    async with aiohttp.ClientSession() as http:

        async def send(method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
            async with http.request(method, url, data=body) as r:
                return r.status, await r.read()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            route=st.sampled_from(table),
            path_values=st.lists(st.sampled_from(ids) | st.text(min_size=1, max_size=70)),
            query=st.lists(st.tuples(query_names, query_values), max_size=4),
            body=st.none()
            | st.dictionaries(st.sampled_from(BODY_KEYS), json_values, max_size=4).map(
                lambda b: json.dumps(b).encode()
            )
            | st.binary(max_size=40),
        )
        def check(
            route: tuple[str, str],
            path_values: list[str],
            query: list[tuple[str, str]],
            body: bytes | None,
        ) -> None:
            method, template = route
            values = iter(path_values)
            path = re.sub(
                r"\{[^}]+\}",
                lambda _: urllib.parse.quote(next(values, "x"), safe=""),
                template,
            )
            url = d.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
            future = asyncio.run_coroutine_threadsafe(
                send(method, url, body if method == "POST" else None), loop
            )
            status, raw = future.result(timeout=30)
            seen[status] = seen.get(status, 0) + 1
            assert status < 500 or (path == "/readyz" and status == 503), (method, url, raw)
            if len(url) > 8000:
                # aiohttp's HTTP parser refuses a request line past 8190 bytes itself, with a
                # plain-text 400, before any handler or middleware runs
                assert 400 <= status < 500, (url[:200], status)
            elif status >= 400 and path.startswith("/api/"):
                err = json.loads(raw)["error"]
                assert err["code"] and err["message"], raw

        await asyncio.to_thread(check)
    print(f"fuzzed {sum(seen.values())} requests over {len(table)} routes: {sorted(seen.items())}")
    assert any(400 <= s < 500 for s in seen) and 200 in seen
