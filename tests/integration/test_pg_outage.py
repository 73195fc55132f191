"""PostgreSQL stops under a running daemon and comes back: /readyz says so, a submit
answers 503 (nothing acknowledged that was not stored), and once the server is back the
daemon reconnects and takes submits again without a restart."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.errors import LockedError
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
        assert body["error"]["code"] == "storage_error"

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
