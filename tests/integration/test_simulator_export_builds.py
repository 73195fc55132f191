"""The simulator builds exports one at a time, on one thread for all its scanners: builds
running in parallel threads each made every turn of its event loop wait for the GIL, and
every scanner's create and launch waited in those turns (bench/scale.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import aiohttp
import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.simulator import SimulatorOptions, start_simulators, views
from tests.integration.test_simulator import KEYS, call, create, export


async def test_exports_are_built_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    real = views.export_bytes
    running = 0
    most = 0
    lock = threading.Lock()

    def slow_build(*args: Any) -> bytes:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return real(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(views, "export_bytes", slow_build)
    async with (
        await start_simulators(
            3, options=SimulatorOptions(seed=7, scan_seconds=20), clock=clock
        ) as cluster,
        aiohttp.ClientSession(headers=KEYS) as http,
    ):
        scans = []
        for sim in cluster.scanners:
            scan_id = await create(http, sim)
            assert (await call(http, sim, "POST", f"/scans/{scan_id}/launch"))[0] == 200
            scans.append((sim, scan_id))
        await clock.advance(60)
        payloads = await asyncio.gather(*(export(http, sim, sid) for sim, sid in scans))
    assert all(p.startswith(b"<?xml") for p in payloads)
    assert most == 1
