"""Acceptance (#17): the installed `nessus-pool` command. A one-off maintenance window a few
seconds long holds a launch and releases it when it ends; a window added by SIGHUP holds the
next scan; `nessus-pool scan pause|resume` pause and resume a running scan."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.simulator.ports import free_port_range as free_port
from tests.acceptance.test_acceptance import EXE, get_json, spawn, stop
from tests.conftest import write_config

pytestmark = pytest.mark.acceptance


def rfc3339(offset_s: float) -> str:
    return dt.datetime.fromtimestamp(time.time() + offset_s, dt.UTC).isoformat()


def config(tmp_path: Path, port: int, windows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{port}"},
        "storage": {"path": str(tmp_path / "data")},
        "logging": {"format": "json"},
        "simulator": {"scanners": 1, "scan-seconds": 4, "pool": "lan", "seed": 3},
        "pools": [{"name": "lan", "poll-interval-s": 0.1, "maintenance-windows": windows}],
    }


async def until(http: aiohttp.ClientSession, url: str, key: str, want: str, limit_s: float) -> Any:
    end = time.monotonic() + limit_s
    while True:
        view = await get_json(http, url)
        if view.get(key) == want or time.monotonic() > end:
            return view
        await asyncio.sleep(0.1)  # polling another process: nothing to wait on


async def cli(base: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NESSUS_POOL_URL": base},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_short_window_holds_a_launch_then_sighup_and_cli_pause(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    window_s = 4.0
    cfg_path = write_config(
        tmp_path / "np.toml",
        config(tmp_path, port, [{"start": rfc3339(-1), "end": rfc3339(window_s)}]),
    )
    daemon = await spawn("serve", "--config", str(cfg_path), ready="daemon_ready")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/v1/scans", json={"targets": "10.60.0.1"}) as r:
                assert r.status == 202
                task_id = (await r.json())["task_id"]
            url = f"{base}/api/v1/scans/{task_id}"
            held = await until(http, url, "waiting_reason", "maintenance_window", 10)
            assert held["status"] == "queued", held
            pool = await get_json(http, f"{base}/api/v1/pools/lan")
            assert pool["window"] is not None and pool["waiting_reason"] == "maintenance_window"
            running = await until(http, url, "status", "running", window_s + 15)
            assert running["status"] == "running", running
            assert running["dispatched_at_ms"] >= pool["window"]["end_ms"]
            done = await until(http, url, "status", "completed", 30)
            assert done["status"] == "completed", done

            # a person pauses and resumes with the CLI
            async with http.post(f"{base}/api/v1/scans", json={"targets": "10.60.0.2"}) as r:
                second = (await r.json())["task_id"]
            await until(http, f"{base}/api/v1/scans/{second}", "status", "running", 15)
            rc, out, err = await cli(base, "scan", "pause", second)
            assert rc == 0, err
            assert "paused" in out and "by user" in out
            rc, out, err = await cli(base, "scan", "pause", "no-such-task")
            assert rc != 0 and "not found" in err
            rc, out, err = await cli(base, "scan", "resume", second, "--json")
            assert rc == 0, err
            assert '"status": "running"' in out or '"status":"running"' in out

            # a window added by SIGHUP holds the next scan
            write_config(
                cfg_path,
                config(tmp_path, port, [{"start": rfc3339(-1), "end": rfc3339(3600)}]),
            )
            daemon.send_signal(signal.SIGHUP)
            for _ in range(100):
                pool = await get_json(http, f"{base}/api/v1/pools/lan")
                if pool["window"] is not None:
                    break
                await asyncio.sleep(0.05)
            assert pool["window"] is not None
            async with http.post(f"{base}/api/v1/scans", json={"targets": "10.60.0.3"}) as r:
                third = (await r.json())["task_id"]
            view = await until(
                http, f"{base}/api/v1/scans/{third}", "waiting_reason", "maintenance_window", 10
            )
            assert view["status"] == "queued" and view["estimated_wait_s"] > 3000
            metrics = await (await http.get(f"{base}/metrics")).text()
            assert 'nessus_pool_window_held_tasks{pool="lan",state="queued"} 1.0' in metrics
    finally:
        assert await stop(daemon) == 0
