"""Maintenance windows and pause/resume in the daemon with the simulator on 127.0.0.1: a
window holds a launch and releases it when it ends; on-window pause pauses the scan on the
simulator and resumes it; on-window stop requeues; a person's pause and resume over the admin
API and MCP, with role checks and the refusals where Nessus cannot pause."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import aiohttp

from nessus_pool.daemon import Daemon
from nessus_pool.nessus import RemotePhase
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory, sim_config
from tests.integration.test_mcp_http import ADMIN, READER, Mcp


def rfc3339(offset_s: float) -> str:
    return dt.datetime.fromtimestamp(time.time() + offset_s, dt.UTC).isoformat()


def windowed(tmp_path: Path, window: dict[str, Any], **kw: Any) -> dict[str, Any]:
    cfg = sim_config(tmp_path, scanners=1, cap=1, **kw)
    cfg["pools"][0]["maintenance-windows"] = [window]
    return cfg


async def until_status(d: Daemon, task_id: str, status: str, timeout_s: float = 20) -> None:
    assert d.service is not None and d.engine is not None
    async with asyncio.timeout(timeout_s):
        while (await d.service.get_task(task_id, with_results=False)).status != status:
            await d.engine.wait_change(task_id, 1.0)


async def remote_phase(d: Daemon, task_id: str) -> RemotePhase:
    assert d.service is not None and d.engine is not None
    v = await d.service.get_task(task_id, with_results=False)
    assert v.scanner is not None and v.remote_scan_id is not None
    details = await d.engine.scanners[v.scanner].client.scan_details(v.remote_scan_id)
    return details.phase


async def test_a_window_holds_a_launch_and_releases_it(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    end_s = 2.0
    d: Daemon = await start_daemon(
        windowed(tmp_path, {"start": rfc3339(-60), "end": rfc3339(end_s), "name": "patching"})
    )
    assert d.service is not None and d.engine is not None
    await asyncio.wait_for(d.engine.scanners["sim-1"].probed.wait(), 10)  # reachable now
    held_since = time.time()
    tid = (await d.service.submit(SubmitRequest(targets="10.9.0.1"))).task_id
    v = await d.service.get_task(tid)
    assert v.status == "queued" and v.waiting_reason == "maintenance_window"
    assert v.estimated_wait_s is not None and 0 < v.estimated_wait_s <= end_s + 1
    assert v.eta_basis is not None and "maintenance window" in v.eta_basis
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{d.url}/api/v1/pools/lan") as r:
            pool = await r.json()
        async with http.get(f"{d.url}/metrics") as r:
            metrics = await r.text()
    assert pool["waiting_reason"] == "maintenance_window"
    assert pool["window"]["name"] == "patching" and pool["window"]["on_window"] == "finish"
    assert pool["scanners"][0]["window"]["end_ms"] == pool["window"]["end_ms"]
    assert 'nessus_pool_window_held_tasks{pool="lan",state="queued"} 1.0' in metrics
    await until_status(d, tid, "running")
    assert time.time() - held_since >= end_s - 0.5  # not before the window ended
    v = await d.service.get_task(tid)
    assert v.dispatched_at_ms is not None and v.dispatched_at_ms >= pool["window"]["end_ms"]
    assert (await d.service.wait_for(tid, 20)).status == "completed"


async def test_on_window_pause_pauses_on_the_simulator_and_resumes(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    window = {"start": rfc3339(1.5), "end": rfc3339(4.0), "on-window": "pause"}
    d: Daemon = await start_daemon(windowed(tmp_path, window, scan_seconds=5.0))
    assert d.service is not None
    tid = (await d.service.submit(SubmitRequest(targets="10.9.0.2"))).task_id
    await until_status(d, tid, "running")
    await until_status(d, tid, "paused")
    v = await d.service.get_task(tid)
    assert v.paused_by == "window" and v.paused_for_s is not None
    assert await remote_phase(d, tid) in (RemotePhase.PAUSED, RemotePhase.TRANSITIONING)
    await until_status(d, tid, "running")
    assert await remote_phase(d, tid) in (RemotePhase.RUNNING, RemotePhase.TRANSITIONING)
    done = await d.service.wait_for(tid, 20)
    assert done.status == "completed"
    assert d.engine is not None
    events = [e.status for e in await d.engine.store.events(tid)]
    assert events.count("paused") == 1 and events.count("resumed") == 1


async def test_on_window_stop_requeues_and_runs_after(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    window = {"start": rfc3339(1.5), "end": rfc3339(3.5), "on-window": "stop"}
    d: Daemon = await start_daemon(windowed(tmp_path, window, scan_seconds=6.0))
    assert d.service is not None
    tid = (await d.service.submit(SubmitRequest(targets="10.9.0.3"))).task_id
    await until_status(d, tid, "running")
    first = (await d.service.get_task(tid)).remote_scan_id
    await until_status(d, tid, "queued")
    v = await d.service.get_task(tid)
    assert v.reason == "maintenance_window" and v.waiting_reason == "maintenance_window"
    await until_status(d, tid, "running")
    again = await d.service.get_task(tid)
    assert again.remote_scan_id != first
    assert (await d.service.wait_for(tid, 30)).status == "completed"


async def test_a_person_pauses_and_resumes_over_the_api_and_mcp(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    cfg = sim_config(tmp_path, scanners=1, cap=1, scan_seconds=30)
    cfg["server"].update({"admin-tokens": [ADMIN], "read-tokens": [READER]})
    d: Daemon = await start_daemon(cfg)
    assert d.service is not None
    running = (await d.service.submit(SubmitRequest(targets="10.9.0.4"))).task_id
    queued = (await d.service.submit(SubmitRequest(targets="10.9.0.5"))).task_id
    await until_status(d, running, "running")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    read = {"Authorization": f"Bearer {READER}"}
    api = f"{d.url}/api/v1/scans"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api}/{running}/pause", headers=read) as r:
            assert r.status == 403
        async with http.post(f"{api}/{running}/pause") as r:
            assert r.status == 401
        async with http.post(f"{api}/{queued}/pause", headers=admin) as r:
            body = await r.json()
            assert r.status == 409, body
            assert "queued" in body["error"]["message"] and body["error"]["field"] == "task_id"
        async with http.post(f"{api}/nope!/pause", headers=admin) as r:
            assert r.status == 400 and (await r.json())["error"]["field"] == "task_id"
        async with http.post(f"{api}/{running}/pause", headers=admin) as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["status"] == "paused" and body["paused_by"] == "user"
            assert body["paused_at_ms"] is not None and body["paused_for_s"] >= 0
        assert await remote_phase(d, running) in (RemotePhase.PAUSED, RemotePhase.TRANSITIONING)
        async with http.get(f"{api}/{running}", headers=read) as r:
            assert (await r.json())["status"] == "paused"
        # the paused scan keeps its slot: the queued one does not launch
        assert (await d.service.get_task(queued)).waiting_reason == "capacity_full"

        mcp = Mcp(http, f"{d.url}/mcp")
        call = {"name": "get_scan_status", "arguments": {"task_id": running}}
        _, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": "get_scan_status"}, **read)
        got = body["result"]["structuredContent"]
        assert got["status"] == "paused" and got["paused_by"] == "user", got
        assert got["paused_for_s"] >= 0 and got["paused_at"].endswith("Z")
        assert "resume_scan" in got["next_step"]
        call = {"name": "resume_scan", "arguments": {"task_id": running}}
        _, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": "resume_scan"}, **read)
        assert body["result"]["isError"] is True
        assert "admin token" in body["result"]["content"][0]["text"]
        _, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": "resume_scan"}, **admin)
        assert body["result"]["isError"] is False, body
        assert body["result"]["structuredContent"]["status"] == "running"
        call = {"name": "pause_scan", "arguments": {"task_id": queued}}
        _, _, body = await mcp.modern("tools/call", call, **{"Mcp-Name": "pause_scan"}, **admin)
        assert body["result"]["isError"] is True
        assert "queued" in body["result"]["content"][0]["text"]
        async with http.post(f"{api}/{running}/cancel", headers=admin) as r:
            assert r.status == 200
    assert (await d.service.wait_for(running, 20)).status == "canceled"
