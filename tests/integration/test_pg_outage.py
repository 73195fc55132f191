"""PostgreSQL stops under a running daemon and comes back: /readyz says so; writes (submit,
cancel, dead-letter retry and purge, over HTTP and MCP) answer 503 with Retry-After at once
(nothing acknowledged that was not stored); reads served from memory say they are stale; a
scan running on its scanner meanwhile is still polled and ends once the database is back,
with its attempt and its one remote scan; the daemon reconnects without a restart."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.errors import LockedError
from nessus_pool.service import SubmitRequest
from nessus_pool.store.pg import PgStore
from tests.conftest import DaemonFactory, sim_config
from tests.pgcluster import SCRIPT, binaries_present


class Cluster:
    """A PostgreSQL of this test's own (the session one must not stop under others)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="np-pg-outage-")
        self.url = ""

    def start(self) -> None:
        out = subprocess.run([str(SCRIPT), "start", self.dir], check=True, capture_output=True)
        self.url = out.stdout.decode().strip()

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", self.dir], check=True, capture_output=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not binaries_present():
        pytest.skip("no PostgreSQL binaries")  # (the store tests fail under CI instead)
    c = Cluster()
    c.start()
    try:
        yield c
    finally:
        c.stop()
        subprocess.run(["rm", "-rf", c.dir], check=False)


async def _until_ready(d: Daemon, want: bool, steps: int = 150) -> None:
    """Poll readiness (an outside server has no event to wait on), bounded at 15 s."""
    for _ in range(steps):
        if (await d.readiness())["ready"] is want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"ready never became {want}")


async def test_postgresql_down_then_back(
    tmp_path: Path, cluster: Cluster, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(
        sim_config(
            tmp_path,
            scanners=1,
            scan_seconds=0.2,
            storage={"path": str(tmp_path / "data"), "url": cluster.url},
        )
    )
    assert d.service is not None
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{d.url}/api/v1/scans", json={"targets": "10.0.0.1"}) as r:
            assert r.status == 202
            first = (await r.json())["task_id"]
        assert (await d.service.wait_for(first, 30.0)).status == "completed"

        cluster.stop()
        await _until_ready(d, False)
        async with http.get(f"{d.url}/readyz") as r:
            assert r.status == 503
        async with http.post(f"{d.url}/api/v1/scans", json={"targets": "10.0.0.2"}) as r:
            assert r.status == 503
            body = await r.json()
        assert body["error"]["code"] == "storage_unavailable"

        cluster.start()
        await _until_ready(d, True)
        async with http.post(f"{d.url}/api/v1/scans", json={"targets": "10.0.0.3"}) as r:
            assert r.status == 202
            third = (await r.json())["task_id"]
        assert (await d.service.wait_for(third, 30.0)).status == "completed"
        # the first task, stored before the outage, is still there
        assert (await d.service.get_task(first)).status == "completed"
    # the daemon took its database back after the restart (its lock session was lost):
    # another daemon is still refused
    other = PgStore(cluster.url, exclusive=True)
    with pytest.raises(LockedError):
        await other.open()


async def _until_status(d: Daemon, task_id: str, status: str) -> None:
    assert d.service is not None and d.engine is not None
    for _ in range(100):
        if (await d.service.get_task(task_id)).status == status:
            return
        await d.engine.wait_change(task_id, 0.3)
    raise AssertionError(f"{task_id} never became {status}")


def _retry_after(headers: Any) -> int:
    value = int(headers["Retry-After"])
    assert 1 <= value <= 10, value  # the reconnect backoff is capped at 10 s
    return value


async def test_outage_refuses_writes_with_retry_after_and_keeps_running_scans(
    tmp_path: Path, cluster: Cluster, start_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.integration.test_mcp_http import Mcp

    caplog.set_level(logging.INFO, logger="nessus_pool")

    d: Daemon = await start_daemon(
        sim_config(
            tmp_path,
            scanners=1,
            scan_seconds=2.5,
            storage={"path": str(tmp_path / "data"), "url": cluster.url},
        )
    )
    assert d.service is not None and d.engine is not None and d.sim_cluster is not None
    sim = d.sim_cluster.scanners[0]
    api = f"{d.url}/api/v1"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api}/scans", json={"targets": "10.0.0.1"}) as r:
            assert r.status == 202
            running = (await r.json())["task_id"]
        await _until_status(d, running, "running")

        cluster.stop()
        await _until_ready(d, False)
        async with http.get(f"{d.url}/readyz") as r:
            assert r.status == 503 and (await r.json())["database_writable"] is False

        # writes: 503 at once, Retry-After from the reconnect backoff, the error names storage
        writes = [
            (f"{api}/scans", {"targets": "10.0.0.2"}),
            (f"{api}/scans/{running}/cancel", None),
            (f"{api}/dlq/{running}/retry", None),
            (f"{api}/dlq/purge", {"pool": "lan", "confirm": True}),
        ]
        for url, body in writes:
            async with http.post(url, json=body) as r:
                assert r.status == 503, (url, r.status, await r.text())
                after = _retry_after(r.headers)
                err = (await r.json())["error"]
            assert err["code"] == "storage_unavailable" and err["retry_after_s"] == after
            assert "database is unavailable" in err["message"], err
        # a read that needs the database: 503 with Retry-After too, never a 500
        async with http.get(f"{api}/scans") as r:
            assert r.status == 503
            _retry_after(r.headers)
        # a read served from memory says so, and since when
        async with http.get(f"{api}/scans/{running}") as r:
            assert r.status == 200
            view = await r.json()
        assert view["stale"] is True and view["status"] == "running"
        assert view["as_of_ms"] <= d.clock.now_ms()

        mcp = Mcp(http, f"{d.url}/mcp")
        call = {"name": "run_untrusted_scan", "arguments": {"targets": "10.0.0.3"}}
        status, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": str(call["name"])})
        result = body["result"]
        assert status == 200 and result["isError"] is True, body
        out = result["structuredContent"]
        assert out["code"] == "storage_unavailable" and out["status_code"] == 503
        assert f"retry after {out['retry_after_s']} s" in out["error"]
        call = {"name": "get_scan_status", "arguments": {"task_id": running}}
        status, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": str(call["name"])})
        out = body["result"]["structuredContent"]
        assert out["stale"] is True and out["as_of"].endswith("Z"), out

        # the scan ends on its scanner while the database is still away; the daemon keeps
        # polling it (its progress moves in memory), and its end waits for the database
        while sim.stats().running:
            await d.engine.wait_change(running, 0.5)
        assert d.engine.tasks[running].progress_pct == 100
        cluster.start()
        await _until_ready(d, True)
        done = await d.service.wait_for(running, 30.0)
        assert (done.status, done.attempt, done.dead_letter) == ("completed", 1, False)
        assert sim.stats().created == 1  # no second scan for it

        async with http.post(f"{api}/scans", json={"targets": "10.0.0.4"}) as r:
            assert r.status == 202 and "Retry-After" not in r.headers
            after_outage = (await r.json())["task_id"]
        assert (await d.service.wait_for(after_outage, 30.0)).status == "completed"
        async with http.get(f"{api}/scans/{after_outage}") as r:
            assert "stale" not in await r.json()
    # one line when the outage starts (the driver's words, for the operator), one at the end
    events = [getattr(r, "event", "") for r in caplog.records]
    assert events.count("storage_unavailable") == 1 and events.count("storage_reconnected") == 1
    # the refused submits left nothing behind: two tasks stored, both completed
    page = await d.service.list_tasks()
    assert sorted(t.status for t in page.tasks) == ["completed", "completed"]


async def test_outage_never_answers_500_on_any_route_or_tool(
    tmp_path: Path, cluster: Cluster, start_daemon: DaemonFactory
) -> None:
    """Every GET route of the admin API and every MCP tool (with valid arguments, about a
    finished task) during the outage: an answer from memory, or 503 with Retry-After (an
    isError result with retry_after_s over MCP); never a 500 or an internal error."""
    from tests.integration.test_mcp_http import Mcp

    d: Daemon = await start_daemon(
        sim_config(
            tmp_path,
            scanners=1,
            scan_seconds=0.2,
            storage={"path": str(tmp_path / "data"), "url": cluster.url},
        )
    )
    assert d.service is not None
    api = f"{d.url}/api/v1"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api}/scans", json={"targets": "10.0.0.1"}) as r:
            tid = (await r.json())["task_id"]
        assert (await d.service.wait_for(tid, 30.0)).status == "completed"
        cluster.stop()
        await _until_ready(d, False)
        gets = [
            "/scans", f"/scans/{tid}", f"/scans/{tid}/results", f"/scans/{tid}/export",
            f"/scans/{tid}/compare", "/pools", "/pools/lan", "/scanners", "/scanners/sim-1",
            "/policies", "/dlq", f"/dlq/{tid}", "/openapi.json",
        ]  # fmt: skip
        for path in gets:
            async with http.get(api + path) as r:
                assert r.status in (200, 404, 503), (path, r.status, await r.text())
                if r.status == 503:
                    _retry_after(r.headers)
                    assert (await r.json())["error"]["code"] == "storage_unavailable", path
        async with http.get(f"{d.url}/metrics") as r:
            assert r.status == 200
        mcp = Mcp(http, f"{d.url}/mcp")
        status, _, body = await mcp.modern("tools/list")
        tools = [t["name"] for t in body["result"]["tools"]]
        args: dict[str, dict[str, Any]] = {
            "run_untrusted_scan": {"targets": "10.0.0.9"},
            "run_authenticated_scan": {"targets": "10.0.0.9", "ssh_username": "u",
                                       "ssh_password": "p"},
            "get_scan_status": {"task_id": tid}, "cancel_scan": {"task_id": tid},
            "wait_for_scan": {"task_id": tid, "timeout_s": 0},
            "get_scan_results": {"task_id": tid}, "compare_scans": {"task_id": tid},
        }  # fmt: skip
        for name in tools:
            call = {"name": name, "arguments": args.get(name, {})}
            status, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": name})
            assert status == 200 and "result" in body, (name, body)
            out = body["result"]["structuredContent"]
            if body["result"]["isError"]:
                assert out.get("status_code") in (400, 403, 409, 503), (name, out)
                if out.get("status_code") == 503:
                    assert out["code"] == "storage_unavailable" and out["retry_after_s"] >= 1
        # resources read the database too: a JSON-RPC error of its own (HTTP 503 on the
        # stateless wire), never "internal error"
        reads: list[tuple[str, dict[str, Any]]] = [("resources/list", {})] + [
            ("resources/read", {"uri": f"nessus-pool://scans/{tid}/{kind}"})
            for kind in ("report", "findings")
        ]
        unavailable = 0
        for method, params in reads:
            extra = {"Mcp-Name": params["uri"]} if params else {}
            status, _, body = await mcp.modern(method, params, **extra)
            if "error" in body:
                assert (status, body["error"]["code"]) == (503, -32050), (method, body)
                assert body["error"]["data"]["retry_after_s"] >= 1
                unavailable += 1
            else:
                assert status == 200, (method, body)
        assert unavailable >= 1
        cluster.start()
        await _until_ready(d, True)


async def test_a_stop_during_the_outage_is_bounded_and_the_next_start_loses_nothing(
    tmp_path: Path, cluster: Cluster, start_daemon: DaemonFactory
) -> None:
    """SIGTERM while the database is away: the writer gives up its reconnect at once (the
    stop does not hang on it), and the next daemon, once the database is back, finishes the
    task that was running."""
    data = sim_config(
        tmp_path,
        scanners=1,
        scan_seconds=1.0,
        server={"listen": "127.0.0.1:0", "shutdown-grace-s": 1},
        storage={"path": str(tmp_path / "data"), "url": cluster.url},
    )
    d: Daemon = await start_daemon(data)
    assert d.service is not None
    running = (await d.service.submit(SubmitRequest(targets="10.0.0.1"))).task_id
    await _until_status(d, running, "running")
    cluster.stop()
    await _until_ready(d, False)
    assert d.store is not None
    outage = d.store.outage
    for _ in range(300):  # bounded (30 s): until a fresh 8 s backoff has just begun
        if outage.failures >= 5:
            break
        await asyncio.sleep(0.1)
    assert outage.retry_after_s() >= 7
    t0 = asyncio.get_running_loop().time()
    await asyncio.wait_for(d.stop(), 15)
    # the reconnect's wait is cut short: not the 8 s of the backoff
    assert asyncio.get_running_loop().time() - t0 < 4.0
    cluster.start()
    again: Daemon = await start_daemon(data, name="again.toml")
    assert again.service is not None
    done = await again.service.wait_for(running, 30.0)
    assert done.status == "completed" and not done.dead_letter
