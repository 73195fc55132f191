"""Acceptance: the installed `nessus-pool` with schedules in its config file and three
simulated scanners. A schedule every 2 s produces runs that complete (tasks carrying
schedule_id); one every second with scans longer than that records overlap skips; the CLI
shows both; after kill -9 and a restart, no slot has two tasks."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.simulator.ports import free_port_range as free_port
from tests.acceptance.test_acceptance import (
    EXE,
    config,
    get_json,
    simulators,  # noqa: F401 (a fixture)
    spawn,
    stop,
)
from tests.conftest import write_config

pytestmark = pytest.mark.acceptance


async def cli(*args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        EXE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out) if "--json" in args else out.decode()


async def until(cond: Any, what: str, deadline_s: float = 60) -> Any:
    """Poll another process (nothing to wait on) until ``cond()`` answers truthy."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        got = await cond()
        if got:
            return got
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {deadline_s} s: {what}")


async def test_schedules_fire_complete_skip_and_survive_kill_9(
    tmp_path: Path,
    simulators: tuple[int, asyncio.subprocess.Process],  # noqa: F811
) -> None:
    sim_port, _ = simulators
    port = free_port(1)
    base = f"http://127.0.0.1:{port}"
    data = config(tmp_path, sim_port, port)
    data["schedules"] = [
        {"name": "every-2s", "targets": "10.7.0.1", "pool": "lan", "every-s": 2},
        {"name": "tight", "targets": "10.7.0.2", "pool": "lan", "every-s": 1},
    ]
    cfg = write_config(tmp_path / "np.toml", data)
    proc = await spawn("serve", "--config", str(cfg), ready="daemon_ready")
    async with aiohttp.ClientSession() as http:

        async def completed_runs() -> list[dict[str, Any]]:
            doc = await get_json(http, f"{base}/api/v1/schedules/every-2s")
            done = []
            for r in doc["runs"]:
                if r["outcome"] == "fired":
                    view = await get_json(http, f"{base}/api/v1/scans/{r['task_id']}")
                    if view["status"] == "completed":
                        assert view["schedule_id"] == "every-2s"
                        done.append(view)
            return done if len(done) >= 2 else []

        await until(completed_runs, "two completed runs of every-2s")

        async def skipped() -> list[dict[str, Any]]:
            doc = await get_json(http, f"{base}/api/v1/schedules/tight")
            return [r for r in doc["runs"] if r["outcome"] == "skipped"]

        skips = await until(skipped, "an overlap skip of tight")
        assert "(overlap = skip)" in skips[0]["reason"]
        shown = await cli("schedules", "show", "tight", "--url", base, "--json")
        assert any(r["outcome"] == "skipped" for r in shown["runs"])
        table = await cli("schedules", "list", "--url", base)
        assert "every-2s" in table and "every 2 s" in table

        assert await stop(proc, signal.SIGKILL) == -signal.SIGKILL
        proc = await spawn("serve", "--config", str(cfg), ready="daemon_ready")

        async def after_restart() -> bool:
            doc = await get_json(http, f"{base}/api/v1/schedules/every-2s")
            return len([r for r in doc["runs"] if r["outcome"] == "fired"]) >= 4

        await until(after_restart, "every-2s fires again after the restart")
        await stop(proc)
    # offline now: every task of a schedule is one slot's, never two per slot
    proc = await spawn("serve", "--config", str(cfg), ready="daemon_ready")
    async with aiohttp.ClientSession() as http:
        page = await get_json(http, f"{base}/api/v1/scans?page_size=500")
        doc = await get_json(http, f"{base}/api/v1/schedules/every-2s")
    await stop(proc)
    tasks = [t for t in page["tasks"] if t.get("schedule_id") == "every-2s"]
    names = [t["name"] for t in tasks]
    assert len(names) == len(set(names)), names  # a task's name carries its slot
    fired = {r["task_id"] for r in doc["runs"] if r["outcome"] == "fired"}
    assert fired <= {t["task_id"] for t in tasks}
