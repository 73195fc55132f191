"""Two real daemons with [cluster] on one PostgreSQL database, in one process, driving the
simulator on 127.0.0.1 over HTTPS-free HTTP: submits through either front door, the same
answer from both, cancel through the one that does not run the scan, /api/v1/cluster and
``nessus-pool cluster``. And what one daemon on SQLite says about itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nessus_pool.cli import main
from nessus_pool.daemon import Daemon
from nessus_pool.errors import LockedError
from nessus_pool.simulator import SimulatorCluster, SimulatorOptions, start_simulators
from tests.conftest import DaemonFactory, sim_config

KEYS = {"access-key": "sim-access-key", "secret-key": "sim-secret-key"}


@pytest.fixture
async def pg_url(pg_server_url: str) -> AsyncIterator[str]:
    from tests.pgcluster import create_schema, drop_schema, with_search_path

    schema = await create_schema(pg_server_url)
    try:
        yield with_search_path(pg_server_url, schema)
    finally:
        await drop_schema(pg_server_url, schema)


@pytest.fixture
async def sims() -> AsyncIterator[SimulatorCluster]:
    cluster = await start_simulators(2, options=SimulatorOptions(scan_seconds=0.5, seed=5))
    yield cluster
    await cluster.close()


def member(
    tmp_path: Path, name: str, pg_url: str, sims: SimulatorCluster, **cluster: Any
) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / name), "url": pg_url},
        "cluster": {"daemon-id": name, "lease-s": 3.0, **cluster},
        "pools": [
            {
                "name": "lan",
                "poll-interval-s": 0.05,
                "probe-interval-s": 0.5,
                "scanners": [
                    {"id": f"sim-{i}", "url": s.url, "max-concurrent-scans": 1, **KEYS}
                    for i, s in enumerate(sims.scanners, 1)
                ],
            }
        ],
    }


async def call(http: aiohttp.ClientSession, d: Daemon, method: str, path: str, **kw: Any) -> Any:
    async with http.request(method, f"{d.url}{path}", **kw) as r:
        body = await r.json()
        assert r.status < 300, (r.status, body)
        return body


async def wait_for(cond: Any, limit: int = 600) -> None:
    """Poll ``cond()`` (an HTTP read of another process's view: no event to wait on here)
    every 50 ms, at most ``limit`` times."""
    for _ in range(limit):
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_two_daemons_share_a_pool_and_answer_alike(
    pg_url: str,
    start_daemon: DaemonFactory,
    sims: SimulatorCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d1: Daemon = await start_daemon(member(tmp_path, "d1", pg_url, sims), name="d1.toml")
    d2: Daemon = await start_daemon(member(tmp_path, "d2", pg_url, sims), name="d2.toml")
    async with aiohttp.ClientSession() as http:

        async def split() -> bool:
            view = await call(http, d2, "GET", "/api/v1/cluster")
            return {lease["owner"] for lease in view["leases"]} == {"d1", "d2"}

        # d1 took both scanners first; it hands one over once d2 is alive
        await wait_for(split)
        ids = []
        for i in range(6):
            d = (d1, d2)[i % 2]
            body = await call(
                http, d, "POST", "/api/v1/scans", json={"targets": [f"10.9.0.{i + 1}"]}
            )
            ids.append(body["task_id"])

        async def ended() -> bool:
            for tid in ids:
                a = await call(http, d1, "GET", f"/api/v1/scans/{tid}")
                if a["status"] != "completed":
                    return False
            return True

        await wait_for(ended)
        for tid in ids:  # the same answer from both front doors
            a = await call(http, d1, "GET", f"/api/v1/scans/{tid}")
            b = await call(http, d2, "GET", f"/api/v1/scans/{tid}")
            keys = ("status", "scanner", "remote_scan_id", "attempt", "finished_at_ms")
            assert [a[k] for k in keys] == [b[k] for k in keys]
            assert a["results"] == b["results"]
        stats = [s.stats() for s in sims.scanners]
        assert sum(s.created for s in stats) == 6
        assert all(s.duplicates == 0 and s.peak_running <= 1 for s in stats)
        assert all(s.created >= 1 for s in stats)  # both daemons ran scans

        view = await call(http, d1, "GET", "/api/v1/cluster")
        assert view["mode"] == "cluster (PostgreSQL)"
        assert {(d["daemon_id"], d["alive"], d["this"]) for d in view["daemons"]} == {
            ("d1", True, True),
            ("d2", True, False),
        }
        assert sorted(lease["scanner_id"] for lease in view["leases"]) == ["sim-1", "sim-2"]
        assert view["pools_differ"] == {} and not view["config_hashes_differ"]

    rc = await asyncio.to_thread(main, ["cluster", "--url", d2.url])
    out = capsys.readouterr().out
    assert rc == 0
    assert "cluster (PostgreSQL)" in out and "d1" in out and "d2 *" in out and "sim-2" in out


async def test_a_pool_defined_differently_is_reported(
    pg_url: str, start_daemon: DaemonFactory, sims: SimulatorCluster, tmp_path: Path
) -> None:
    d1: Daemon = await start_daemon(member(tmp_path, "d1", pg_url, sims), name="d1.toml")
    other = member(tmp_path, "d2", pg_url, sims)
    other["pools"][0]["max-attempts"] = 7
    await start_daemon(other, name="d2.toml")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{d1.url}/api/v1/cluster") as r,
    ):
        view = await r.json()
    assert set(view["pools_differ"]) == {"lan"}
    assert set(view["pools_differ"]["lan"]) == {"d1", "d2"}
    assert view["config_hashes_differ"] is True


async def test_without_cluster_a_second_daemon_on_the_database_is_still_refused(
    pg_url: str, start_daemon: DaemonFactory, sims: SimulatorCluster, tmp_path: Path
) -> None:
    first = member(tmp_path, "d1", pg_url, sims)
    del first["cluster"]
    await start_daemon(first, name="d1.toml")
    second = member(tmp_path, "d2", pg_url, sims)
    del second["cluster"]
    with pytest.raises(LockedError, match="in use by another nessus-pool daemon"):
        await start_daemon(second, name="d2.toml")


async def test_one_daemon_on_sqlite_says_so(
    start_daemon: DaemonFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    async with aiohttp.ClientSession() as http, http.get(f"{d.url}/api/v1/cluster") as r:
        view = await r.json()
    assert r.status == 200
    assert view["mode"] == "single daemon (SQLite)"
    assert [x["this"] for x in view["daemons"]] == [True] and view["leases"] == []
    rc = await asyncio.to_thread(main, ["cluster", "--url", d.url])
    assert rc == 0 and "single daemon (SQLite)" in capsys.readouterr().out
