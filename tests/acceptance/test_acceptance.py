"""Acceptance: the installed `nessus-pool` command as subprocesses, with real signals.

SIGKILL during a submit load, restart: every acknowledged task completes exactly once.
SIGHUP with a broken file keeps serving; SIGHUP adding a scanner gives it work.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.models import TERMINAL_STATUSES, status_values
from nessus_pool.simulator.ports import free_port_range as free_port
from tests.conftest import write_config

pytestmark = pytest.mark.acceptance

EXE = shutil.which("nessus-pool") or str(Path(sys.executable).parent / "nessus-pool")
KEYS = {"access-key": "sim-access-key", "secret-key": "sim-secret-key"}
TERMINAL = set(status_values(TERMINAL_STATUSES))


async def spawn(*args: str, ready: str) -> asyncio.subprocess.Process:
    """Start a command and wait for a line on stdout/stderr containing ``ready``."""
    proc = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen: list[str] = []

    async def scan(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            seen.append(line.decode(errors="replace"))
            if ready in seen[-1]:
                return
        raise AssertionError(f"{args[0]} exited before ready: {''.join(seen)[-2000:]}")

    assert proc.stdout is not None and proc.stderr is not None
    waits = [asyncio.ensure_future(scan(proc.stdout)), asyncio.ensure_future(scan(proc.stderr))]
    try:
        done, _ = await asyncio.wait(waits, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise AssertionError(f"{args[0]} not ready in 30 s: {''.join(seen)[-2000:]}")
        for d in done:
            d.result()
    finally:
        for w in waits:
            w.cancel()
    _drains.update(
        {asyncio.ensure_future(_drain(proc.stdout)), asyncio.ensure_future(_drain(proc.stderr))}
    )
    return proc


_drains: set[asyncio.Future[None]] = set()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    if proc.returncode is None:
        proc.send_signal(sig)
    return await asyncio.wait_for(proc.wait(), 30)


@pytest.fixture
async def simulators() -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    port = free_port(3)
    proc = await spawn(
        "simulate",
        "--port",
        str(port),
        "--scanners",
        "3",
        "--scan-seconds",
        "1",
        "--seed",
        "5",
        "--plain-http",
        ready=f":{port + 2}",
    )
    yield port, proc
    await stop(proc)


def config(tmp_path: Path, sim_port: int, listen_port: int, scanners: int = 2) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{listen_port}"},
        "storage": {"path": str(tmp_path / "data")},
        "logging": {"format": "json"},
        "pools": [
            {
                "name": "lan",
                "poll-interval-s": 0.1,
                "max-queued": 5000,
                "scanners": [
                    {
                        "id": f"s{i}",
                        "url": f"http://127.0.0.1:{sim_port + i}",
                        "max-concurrent-scans": 3,
                        **KEYS,
                    }
                    for i in range(scanners)
                ],
            }
        ],
    }


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        return await r.json()


async def wait_terminal(
    http: aiohttp.ClientSession, base: str, ids: list[str], deadline_s: float = 90
) -> dict[str, str]:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    status: dict[str, str] = {}
    pending = list(ids)
    while pending and loop.time() < end:
        views = await asyncio.gather(*(get_json(http, f"{base}/api/v1/scans/{t}") for t in pending))
        for t, v in zip(pending, views, strict=True):
            status[t] = v["status"]
        pending = [t for t in pending if status[t] not in TERMINAL]
        if pending:
            await asyncio.sleep(0.25)  # polling another process: nothing to wait on
    return status


async def test_sigkill_under_load_then_restart_loses_and_duplicates_nothing(
    tmp_path: Path, simulators: tuple[int, asyncio.subprocess.Process]
) -> None:
    sim_port, _ = simulators
    port = free_port()
    cfg = write_config(tmp_path / "np.toml", config(tmp_path, sim_port, port))
    base = f"http://127.0.0.1:{port}"
    daemon = await spawn("serve", "--config", str(cfg), ready="daemon_ready")
    acked: list[str] = []
    enough = asyncio.Event()
    async with aiohttp.ClientSession() as http:

        async def submitter(k: int) -> None:
            for i in range(1000):
                try:
                    async with http.post(
                        f"{base}/api/v1/scans", json={"targets": f"10.{k}.{i // 250}.{i % 250 + 1}"}
                    ) as r:
                        if r.status == 202:
                            acked.append((await r.json())["task_id"])
                            if len(acked) >= 60:
                                enough.set()
                except (aiohttp.ClientError, json.JSONDecodeError):
                    return

        load = [asyncio.ensure_future(submitter(k)) for k in range(8)]
        await enough.wait()
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait()
        await asyncio.gather(*load)
        daemon = await spawn("serve", "--config", str(cfg), ready="daemon_ready")
        try:
            # Tasks persisted but never acknowledged (the kill cut the response) must run
            # too: wait for every stored task, not only the acknowledged ones.
            everything = await get_json(http, f"{base}/api/v1/scans?limit=500")
            all_ids = {t["task_id"] for t in everything["tasks"]}
            status = await wait_terminal(http, base, sorted(all_ids))
            stats = [
                await get_json(http, f"http://127.0.0.1:{sim_port + i}/_sim/stats")
                for i in range(2)
            ]
        finally:
            assert await stop(daemon) == 0
    assert len(acked) >= 60
    assert set(acked) <= all_ids
    assert set(status.values()) == {"completed"}, status
    assert sum(s["duplicates"] for s in stats) == 0
    assert sum(s["created"] for s in stats) == len(all_ids)


async def test_sighup_broken_file_keeps_serving_and_new_scanner_gets_work(
    tmp_path: Path, simulators: tuple[int, asyncio.subprocess.Process]
) -> None:
    sim_port, _ = simulators
    port = free_port()
    cfg = write_config(tmp_path / "np.toml", config(tmp_path, sim_port, port, scanners=1))
    base = f"http://127.0.0.1:{port}"
    daemon = await spawn("serve", "--config", str(cfg), ready="daemon_ready")
    try:
        async with aiohttp.ClientSession() as http:
            cfg.write_text("[[pools]]\nname = 'lan'\nmax-queued = 0\n")
            daemon.send_signal(signal.SIGHUP)
            # the reload is refused; the old config keeps serving
            for _ in range(200):
                metrics = await (await http.get(f"{base}/metrics")).text()
                if 'nessus_pool_config_reloads_total{result="refused"} 1.0' in metrics:
                    break
                await asyncio.sleep(0.05)
            assert 'nessus_pool_config_reloads_total{result="refused"} 1.0' in metrics
            scanners = await get_json(http, f"{base}/api/v1/scanners")
            assert [s["id"] for s in scanners["scanners"]] == ["s0"]

            write_config(cfg, config(tmp_path, sim_port, port, scanners=3))
            daemon.send_signal(signal.SIGHUP)
            for _ in range(200):
                scanners = await get_json(http, f"{base}/api/v1/scanners")
                # listed, and probed reachable, so the next scans can go to them
                if len(scanners["scanners"]) == 3 and all(
                    sc["reachable"] for sc in scanners["scanners"]
                ):
                    break
                await asyncio.sleep(0.05)
            assert sorted(s["id"] for s in scanners["scanners"]) == ["s0", "s1", "s2"]
            ids = []
            for i in range(12):
                async with http.post(
                    f"{base}/api/v1/scans", json={"targets": f"10.50.0.{i + 1}"}
                ) as r:
                    assert r.status == 202
                    ids.append((await r.json())["task_id"])
            status = await wait_terminal(http, base, ids)
            assert set(status.values()) == {"completed"}
            s2 = await get_json(http, f"http://127.0.0.1:{sim_port + 2}/_sim/stats")
            assert s2["launched"] >= 1
    finally:
        assert await stop(daemon) == 0
