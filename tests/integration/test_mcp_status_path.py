"""Issue 18: get_scan_status answers from the loop: no thread hop for the export's size
(a stat of a file in our own storage), and the timestamps and trace id of a task formatted
once, not on every call."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from nessus_pool.api.mcp import compat
from nessus_pool.daemon import Daemon
from nessus_pool.service import SubmitRequest
from nessus_pool.simulator import Faults
from tests.conftest import DaemonFactory, sim_config
from tests.integration.test_mcp_http import META, MODERN

T = TypeVar("T")


async def _status(http: aiohttp.ClientSession, d: Daemon, task_id: str) -> dict[str, Any]:
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "get_scan_status",
    }
    body = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "get_scan_status", "arguments": {"task_id": task_id}, "_meta": META},
    }
    async with http.post(f"{d.url}/mcp", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        doc = await r.json()
    out: dict[str, Any] = doc["result"]["structuredContent"]
    return out


async def _status_while_the_database_is_away(
    http: aiohttp.ClientSession, d: Daemon, task_id: str
) -> dict[str, Any]:
    assert d.engine is not None
    outage = d.engine.store.outage
    outage.failed(ConnectionError("test: database away"))
    try:
        return await _status(http, d, task_id)
    finally:
        outage.ok()


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The status of each view a status reply is built from, in order (a kept reply adds
    nothing)."""
    built: list[str] = []
    real = compat.status_result

    def counted(v: Any, **kw: Any) -> dict[str, Any]:
        built.append(v.status)
        return real(v, **kw)

    monkeypatch.setattr(compat, "status_result", counted)
    return built


async def _completed(http: aiohttp.ClientSession, d: Daemon, target: str) -> str:
    """The id of a scan of ``target`` submitted through the API and waited on to completion."""
    assert d.service is not None
    async with http.post(f"{d.url}/api/v1/scans", json={"targets": target}) as r:
        task_id: str = (await r.json())["task_id"]
    assert (await d.service.wait_for(task_id, 30)).status == "completed"
    return task_id


async def test_status_of_a_completed_scan_makes_no_thread_hop(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2))
    assert d.service is not None
    async with aiohttp.ClientSession() as http:
        task_id = await _completed(http, d, "10.9.1.1")
        hops: list[Any] = []
        real = asyncio.to_thread

        async def counted(fn: Callable[..., T], /, *args: Any, **kw: Any) -> T:
            hops.append(fn)
            return await real(fn, *args, **kw)

        monkeypatch.setattr(asyncio, "to_thread", counted)
        first = await _status(http, d, task_id)
        assert hops == []  # before: os.path.getsize went through a thread on every call
        size = os.path.getsize(await d.service.export_path(task_id))
        assert first["results_summary"]["file_size_kb"] == round(size / 1024, 1)


async def test_status_of_a_running_scan_formats_its_timestamps_once(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    # a running task's status is built again at each change of the task (its name, here:
    # a field no poll touches): the timestamps, which do not change, are formatted once
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, scan_seconds=600))
    assert d.service is not None and d.engine is not None
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{d.url}/api/v1/scans", json={"targets": "10.9.1.3"}) as r:
            task_id: str = (await r.json())["task_id"]
        while (await d.service.get_task(task_id)).status != "running":
            await d.engine.wait_change(task_id, 5)
        first = await _status(http, d, task_id)
        assert first["detailed_status"] == "running" and first["started_at"] is not None
        t = d.engine.tasks[task_id]
        compat.iso.cache_clear()
        t.name = "renamed-1"
        assert (await _status(http, d, task_id))["name"] == "renamed-1"
        formatted = compat.iso.cache_info().misses
        assert formatted >= 2  # created_at and started_at
        t.name = "renamed-2"
        assert (await _status(http, d, task_id))["name"] == "renamed-2"
        assert compat.iso.cache_info().misses == formatted


async def test_status_of_a_finished_scan_is_kept_until_the_task_changes(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, scan_seconds=0.2))
    assert d.service is not None and d.engine is not None and d.sim_cluster is not None
    sim = d.sim_cluster.scanners[0]
    sim.set_faults(Faults(abort_rate=1.0))  # attempts run out: failed, dead-lettered
    task_id = (await d.service.submit(SubmitRequest(targets="10.8.0.1"))).task_id
    assert (await d.service.wait_for(task_id, 60)).dead_letter
    built = _count_builds(monkeypatch)
    async with aiohttp.ClientSession() as http:
        first = await _status(http, d, task_id)
        assert (first["detailed_status"], first["dead_letter"]) == ("failed", True)
        assert await _status(http, d, task_id) == first
        kept = len(built)
        assert 1 <= kept <= 2  # the service's cache filled, then the reply kept
        for _ in range(3):
            assert await _status(http, d, task_id) == first
        assert len(built) == kept  # answered from the kept reply, not built again

        # the database away: the reply is built again and says it is stale
        stale = await _status_while_the_database_is_away(http, d, task_id)
        assert stale["stale"] is True and stale["detailed_status"] == "failed"
        assert "stale" not in await _status(http, d, task_id)

        # the task changes (a dead letter retried): the kept reply goes with it
        sim.set_faults(Faults())
        async with http.post(f"{d.url}/api/v1/dlq/{task_id}/retry") as r:
            assert r.status == 200, await r.text()
        again = await _status(http, d, task_id)
        assert again["detailed_status"] in ("queued", "dispatching", "running"), again
        assert again["dead_letter"] is False
        assert (await d.service.wait_for(task_id, 60)).status == "completed"
        done = await _status(http, d, task_id)
        assert done["detailed_status"] == "completed" and "results_summary" in done
        assert await _status(http, d, task_id) == done


async def test_status_gives_the_export_size_recorded_at_download_without_a_stat(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, scan_seconds=0.2))
    assert d.service is not None
    async with aiohttp.ClientSession() as http:
        task_id = await _completed(http, d, "10.9.1.2")
        path = Path(await d.service.export_path(task_id))
        size = path.stat().st_size
        stats: list[str] = []
        real = os.path.getsize

        def counted(p: Any) -> int:
            stats.append(str(p))
            return real(p)

        monkeypatch.setattr(os.path, "getsize", counted)
        first = await _status(http, d, task_id)
        assert first["results_summary"]["file_size_kb"] == round(size / 1024, 1)
        assert stats == []
        # the file kept on another daemon's disk (a cluster): the same answer
        path.rename(path.with_suffix(".moved"))
        assert await _status(http, d, task_id) == first


async def test_status_of_a_running_scan_is_kept_while_the_task_is_unchanged(
    tmp_path: Path, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running task's reply is kept while a copy of the task compares equal: any change
    of its fields, heard of by the change hook or not, builds the reply again; so does the
    database going away (the reply says it is stale). The scan lasts a day: its progress
    stays 0 after the first poll, so no poll changes the task during the test."""
    d: Daemon = await start_daemon(sim_config(tmp_path, scanners=1, scan_seconds=86400))
    assert d.service is not None and d.engine is not None
    built = _count_builds(monkeypatch)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{d.url}/api/v1/scans", json={"targets": "10.9.1.4"}) as r:
            task_id: str = (await r.json())["task_id"]
        while (v := await d.service.get_task(task_id)).status != "running" or (
            v.progress_pct is None
        ):
            await d.engine.wait_change(task_id, 5)
        first = await _status(http, d, task_id)
        assert first["detailed_status"] == "running"
        for _ in range(3):
            assert await _status(http, d, task_id) == first
        assert built == ["running"]  # built once, then kept

        # a field changed in memory without the change hook (no poll would: see above):
        # the copy differs, the reply is built again
        t = d.engine.tasks[task_id]
        t.name = "renamed"
        moved = await _status(http, d, task_id)
        assert moved == {**first, "name": "renamed"}
        assert await _status(http, d, task_id) == moved
        assert built == ["running", "running"]

        stale = await _status_while_the_database_is_away(http, d, task_id)
        assert stale["stale"] is True and stale["name"] == "renamed"
        assert "stale" not in await _status(http, d, task_id)

        # cancelled: the next reply is built from the new state
        async with http.post(f"{d.url}/api/v1/scans/{task_id}/cancel") as r:
            assert r.status in (200, 202), await r.text()
        await d.service.wait_for(task_id, 30)
        done = await _status(http, d, task_id)
        assert done["detailed_status"] == "canceled"
