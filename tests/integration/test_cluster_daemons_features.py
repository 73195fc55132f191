"""Two real daemons with [cluster] on one PostgreSQL, the simulator on 127.0.0.1: pause and
resume through the admin API and MCP of the daemon that does not run the scan reach the one
that does (issue #17 on issue #14); results and the export from either front door."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.api.mcp.handlers import TOOLS
from nessus_pool.api.mcp.tools import Toolbox, ToolContext
from nessus_pool.daemon import Daemon
from nessus_pool.simulator import SimulatorCluster, SimulatorOptions, start_simulators
from tests.conftest import DaemonFactory
from tests.integration.test_cluster_daemons import call, member, pg_url, wait_for  # noqa: F401


@pytest.fixture
async def sims() -> AsyncIterator[SimulatorCluster]:
    cluster = await start_simulators(1, options=SimulatorOptions(scan_seconds=3600.0, seed=7))
    yield cluster
    await cluster.close()


async def status(http: aiohttp.ClientSession, d: Daemon, task_id: str) -> str:
    body: dict[str, Any] = await call(http, d, "GET", f"/api/v1/scans/{task_id}")
    return str(body["status"])


async def test_pause_and_resume_through_the_daemon_that_does_not_run_the_scan(
    pg_url: str,  # noqa: F811
    start_daemon: DaemonFactory,
    sims: SimulatorCluster,
    tmp_path: Path,
) -> None:
    d1: Daemon = await start_daemon(member(tmp_path, "d1", pg_url, sims), name="d1.toml")
    d2: Daemon = await start_daemon(member(tmp_path, "d2", pg_url, sims, zone=[]), name="d2.toml")
    async with aiohttp.ClientSession() as http:
        body = await call(http, d2, "POST", "/api/v1/scans", json={"targets": ["10.9.0.1"]})
        tid = body["task_id"]

        async def running() -> bool:
            return await status(http, d1, tid) == "running"

        await wait_for(running)
        paused = await call(http, d2, "POST", f"/api/v1/scans/{tid}/pause")
        assert paused["status"] == "paused" and paused["paused_by"] == "user"
        assert await status(http, d1, tid) == "paused"
        sim = sims.scanners[0]
        assert [s.status for s in sim.stats().scans] in (["pausing"], ["paused"])
        # MCP on d2 (its toolbox, as an admin token calls it): resume_scan reaches d1 too
        assert d2.service is not None
        tools = Toolbox(d2.service, TOOLS)
        out = await tools.call("resume_scan", {"task_id": tid}, ToolContext(role="admin"))
        assert not out["isError"], out
        assert await status(http, d1, tid) == "running"
        assert [s.status for s in sim.stats().scans] in (["resuming"], ["running"])
        assert sim.stats().created == 1
        # an unknown task is a 404; a resume of a running scan answers it as it is
        resumed = await call(http, d2, "POST", f"/api/v1/scans/{tid}/resume")
        assert resumed["status"] == "running"
        async with http.post(f"{d2.url}/api/v1/scans/ffffffffffffffff/pause") as r:
            assert r.status == 404
