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
        # three timestamps formatted once, none again on the next call
        compat.iso.cache_clear()
        assert await _status(http, d, task_id) == first
        assert compat.iso.cache_info().misses == 3
        assert await _status(http, d, task_id) == first
        assert compat.iso.cache_info().misses == 3


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
