"""The real daemon in-process on port 0, a real SQLite file, simulators on port 0, the real
client: scans flow end to end, caps hold, nothing is duplicated or lost across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.simulator import SimulatorCluster, SimulatorOptions, start_simulators
from tests.conftest import DaemonFactory, sim_config, write_config

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
    cluster = await start_simulators(3, options=SimulatorOptions(scan_seconds=0.3, seed=3))
    yield cluster
    await cluster.close()


def storage(tmp_path: Path, store_url: str | None) -> dict[str, Any]:
    """The storage section for a backend: SQLite under tmp_path, or PostgreSQL too."""
    section: dict[str, Any] = {"path": str(tmp_path / "data")}
    if store_url is not None:
        section["url"] = store_url
    return section


def two_pools(
    tmp_path: Path,
    cluster: SimulatorCluster,
    caps: tuple[int, int, int] = (2, 1, 3),
    poll_s: float = 0.05,
    store_url: str | None = None,
) -> dict[str, Any]:
    s = cluster.scanners
    return {
        "server": {"listen": "127.0.0.1:0"},
        "storage": storage(tmp_path, store_url),
        "pools": [
            {
                "name": "a",
                "poll-interval-s": poll_s,
                "scanners": [
                    {"id": "a1", "url": s[0].url, "max-concurrent-scans": caps[0], **KEYS},
                    {"id": "a2", "url": s[1].url, "max-concurrent-scans": caps[1], **KEYS},
                ],
            },
            {
                "name": "b",
                "poll-interval-s": poll_s,
                "scanners": [
                    {"id": "b1", "url": s[2].url, "max-concurrent-scans": caps[2], **KEYS}
                ],
            },
        ],
    }


async def submit(
    http: aiohttp.ClientSession, d: Daemon, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{d.url}/api/v1/scans", json=body) as r:
        return r.status, await r.json()


async def wait_all(d: Daemon, task_ids: list[str], timeout_s: float = 60.0) -> list[str]:
    assert d.service is not None
    views = await asyncio.gather(*(d.service.wait_for(t, timeout_s) for t in task_ids))
    return [v.status for v in views]


async def test_fifty_scans_two_pools_caps_held_no_duplicates(
    tmp_path: Path, store_url: str | None, sims: SimulatorCluster, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(two_pools(tmp_path, sims, store_url=store_url))
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(
                submit(
                    http,
                    d,
                    {
                        "targets": f"10.1.{i // 200}.{i % 200 + 1}",
                        "name": f"s{i}",
                        "pool": "a" if i % 2 else "b",
                    },
                )
                for i in range(50)
            )
        )
    assert {status for status, _ in results} == {202}
    ids = [body["task_id"] for _, body in results]
    statuses = await wait_all(d, ids)
    assert statuses == ["completed"] * 50
    stats = [s.stats() for s in sims.scanners]
    for st, cap in zip(stats, (2, 1, 3), strict=True):
        assert 1 <= st.peak_running <= cap
        assert st.duplicates == 0
    assert stats[0].created + stats[1].created == 25
    assert stats[2].created == 25
    assert sum(st.launched for st in stats) == 50


async def test_idempotency_key_returns_first_task_and_conflicts_on_change(
    tmp_path: Path, store_url: str | None, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, storage=storage(tmp_path, store_url)))
    body = {"targets": ["10.0.0.1"], "name": "idem", "idempotency_key": "k-1"}
    async with aiohttp.ClientSession() as http:
        s1, first = await submit(http, d, body)
        s2, again = await submit(http, d, body)
        s3, changed = await submit(http, d, {**body, "targets": ["10.0.0.2"]})
    assert (s1, s2, s3) == (202, 200, 409)
    assert again["task_id"] == first["task_id"] and again["duplicate"] is True
    assert changed["error"]["code"] == "conflict"


async def test_concurrent_same_key_makes_one_task(
    tmp_path: Path, store_url: str | None, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path, storage=storage(tmp_path, store_url)))
    body = {"targets": "10.0.0.1", "idempotency_key": "same"}
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(submit(http, d, body) for _ in range(20)))
    assert len({b["task_id"] for _, b in results}) == 1
    assert sorted(s for s, _ in results) == [200] * 19 + [202]


async def test_bad_requests_get_specific_errors(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(sim_config(tmp_path))
    async with aiohttp.ClientSession() as http:
        cases: list[tuple[Any, int, str | None]] = [
            ({"targets": "10.0.0.1", "bogus": 1}, 400, None),
            ({"targets": "good.example, host!"}, 400, "targets[1]"),
            ({"targets": "10.0.0.1", "pool": "nope"}, 400, "pool"),
            ({"targets": "10.0.0.1", "scan_type": "authenticated"}, 400, "credential"),
            ({"targets": "10.0.0.1", "priority": "high"}, 400, "priority"),
            ({"targets": "10.0.0.0/8"}, 400, "targets"),
        ]
        for body, status, field in cases:
            s, data = await submit(http, d, body)
            assert s == status, (body, data)
            assert data["error"]["message"]
            if field is not None:
                assert data["error"]["field"] == field, data
        async with http.post(
            f"{d.url}/api/v1/scans",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        ) as r:
            assert r.status == 400
        async with http.get(f"{d.url}/api/v1/scans/..%2F..%2Fetc") as r:
            assert r.status in (400, 404)
            assert "error" in await r.json()
        async with http.get(f"{d.url}/api/v1/scans/deadbeefdeadbeef") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
    assert d.engine is not None and d.engine.tasks == {}


async def test_cancel_queued_and_running(
    tmp_path: Path, store_url: str | None, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(
        sim_config(
            tmp_path, scanners=1, cap=1, scan_seconds=30, storage=storage(tmp_path, store_url)
        )
    )
    assert d.service is not None and d.engine is not None
    async with aiohttp.ClientSession() as http:
        _, running = await submit(http, d, {"targets": "10.0.0.1"})
        _, queued = await submit(http, d, {"targets": "10.0.0.2"})
        assert queued["queue_position"] in (1, 2)
        # wait until the first is running on the scanner
        view = await d.service.get_task(running["task_id"])
        while view.status != "running":
            await d.engine.wait_change(running["task_id"], 5)
            view = await d.service.get_task(running["task_id"])
        async with http.post(f"{d.url}/api/v1/scans/{queued['task_id']}/cancel") as r:
            assert r.status == 200
        async with http.post(f"{d.url}/api/v1/scans/{running['task_id']}/cancel") as r:
            assert r.status == 200
        async with http.post(f"{d.url}/api/v1/scans/{queued['task_id']}/cancel") as r:
            assert r.status == 409
    done = await d.service.wait_for(running["task_id"], 30)
    assert done.status == "canceled" and done.reason == "canceled_by_user"
    q = await d.service.get_task(queued["task_id"])
    assert q.status == "canceled"
    assert d.sim_cluster is not None
    assert d.sim_cluster.scanners[0].stats().created == 1


async def test_restart_reattaches_running_scans_exactly_once(
    tmp_path: Path, store_url: str | None
) -> None:
    sims = await start_simulators(3, options=SimulatorOptions(scan_seconds=1.5, seed=4))
    try:
        await _restart_scenario(tmp_path, sims, store_url=store_url)
    finally:
        await sims.close()


async def _restart_scenario(
    tmp_path: Path,
    sims: SimulatorCluster,
    *,
    caps: tuple[int, int, int] = (2, 2, 2),
    subnet: str = "10.2.0",
    with_scan_ids: int = 1,
    store_url: str | None = None,
) -> int:
    """Submit 10 scans, stop once ``with_scan_ids`` have a remote scan id (state is whatever
    was persisted), start again on the same storage: all 10 complete, each created exactly
    once. Returns how many unfinished runs the second start re-attached."""
    from nessus_pool.config import load_config

    path = write_config(
        tmp_path / "np.toml", two_pools(tmp_path, sims, caps=caps, store_url=store_url)
    )
    d1 = Daemon(load_config(path), config_path=str(path))
    await d1.start()
    assert d1.service is not None and d1.engine is not None
    ids = [
        (await d1.service.submit(_req(f"{subnet}.{i + 1}", "a" if i % 2 else "b"))).task_id
        for i in range(10)
    ]
    while sum(1 for t in d1.engine.tasks.values() if t.remote_scan_id) < with_scan_ids:
        await d1.engine.wait_change(ids[0], 0.05)
    await d1.stop()
    d2 = Daemon(load_config(path), config_path=str(path))
    await d2.start()
    assert d2.engine is not None
    adopted = sum(1 for t in d2.engine.tasks.values() if t.status.is_active)
    try:
        statuses = await wait_all(d2, ids)
    finally:
        await d2.stop()
    assert statuses == ["completed"] * 10
    stats = [s.stats() for s in sims.scanners]
    assert sum(st.created for st in stats) == 10
    assert all(st.duplicates == 0 for st in stats)
    return adopted


class CountingGate(asyncio.Semaphore):
    """A semaphore that records how many hold it at once."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.holding = self.most = self.entries = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.holding += 1
        self.entries += 1
        self.most = max(self.most, self.holding)
        return True

    def release(self) -> None:
        self.holding -= 1
        super().release()


async def test_restart_reattaches_through_a_bounded_recovery_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart the first call of every probe and re-attached run waits for a gate
    two wide: it is passed once per probe and run, never by more than two at once, and every
    run still completes exactly once."""
    import nessus_pool.engine.core as core

    gates: list[CountingGate] = []

    def counting_gate() -> CountingGate:
        gates.append(CountingGate(2))
        return gates[-1]

    monkeypatch.setattr(core, "recovery_gate", counting_gate)
    sims = await start_simulators(3, options=SimulatorOptions(scan_seconds=1.5, seed=6))
    try:
        adopted = await _restart_scenario(
            tmp_path, sims, caps=(3, 3, 4), subnet="10.3.0", with_scan_ids=6
        )
    finally:
        await sims.close()
    gate = gates[-1]
    assert adopted >= 6
    assert gate.entries == 3 + adopted  # three first probes, one first call per run
    # bounded (how many overlap below the bound depends on timing: not asserted)
    assert 1 <= gate.most <= 2


def _req(targets: str, pool: str) -> Any:
    from nessus_pool.service import SubmitRequest

    return SubmitRequest(targets=targets, pool=pool)


async def test_reload_adds_scanner_and_refuses_broken_file(
    tmp_path: Path, sims: SimulatorCluster, start_daemon: DaemonFactory
) -> None:
    data = two_pools(tmp_path, sims)
    only_a1 = {
        **data,
        "pools": [
            {**data["pools"][0], "scanners": data["pools"][0]["scanners"][:1]},
            data["pools"][1],
        ],
    }
    d: Daemon = await start_daemon(only_a1)
    assert d.engine is not None and d.config_path is not None
    assert set(d.engine.pools["a"].scanners) == {"a1"}
    write_config(Path(d.config_path), data)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{d.url}/api/v1/reload") as r:
            outcome = await r.json()
            assert r.status == 200, outcome
        assert outcome["applied"] is True
        assert outcome["changes"]["scanners_added"] == ["a2"]
        results = await asyncio.gather(
            *(submit(http, d, {"targets": f"10.3.0.{i + 1}", "pool": "a"}) for i in range(9))
        )
        await wait_all(d, [b["task_id"] for _, b in results])
        assert sims.scanners[1].stats().launched >= 1
        Path(d.config_path).write_text("[[pools]]\nname = 'a'\nbogus = 1\n")
        async with http.post(f"{d.url}/api/v1/reload") as r:
            refused = (await r.json())["error"]
            assert r.status == 400
        assert refused["code"] == "reload_refused" and "bogus" in refused["message"]
        async with http.get(f"{d.url}/api/v1/pools") as r:
            pools = (await r.json())["pools"]
        assert {p["name"] for p in pools} == {"a", "b"}
        assert {s["id"] for p in pools for s in p["scanners"]} == {"a1", "a2", "b1"}


async def test_second_engine_on_same_storage_is_refused(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    from nessus_pool.config import parse_config
    from nessus_pool.errors import LockedError

    data = sim_config(tmp_path)
    await start_daemon(data)
    other = Daemon(parse_config(__import__("tomli_w").dumps(data)))
    with pytest.raises(LockedError, match="in use by nessus-pool"):
        await other.start()


async def test_second_daemon_on_same_postgresql_database_is_refused(
    tmp_path: Path, pg_url: str, start_daemon: DaemonFactory
) -> None:
    """Until daemons coordinate through leases, one daemon per database (as one per SQLite
    directory): a second one, with its own storage directory, is refused at start."""
    from nessus_pool.config import parse_config
    from nessus_pool.errors import LockedError

    store_url = pg_url
    first = await start_daemon(sim_config(tmp_path, storage=storage(tmp_path, store_url)))
    data = sim_config(tmp_path, storage={"path": str(tmp_path / "other"), "url": store_url})
    other = Daemon(parse_config(__import__("tomli_w").dumps(data)))
    with pytest.raises(LockedError, match="in use by another nessus-pool daemon"):
        await other.start()
    assert (await first.readiness())["ready"] is True


async def test_scanner_removed_then_listed_again_before_it_drained_stays(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    cluster = await start_simulators(3, options=SimulatorOptions(scan_seconds=1.0, seed=8))
    try:
        data = two_pools(tmp_path, cluster)
        d: Daemon = await start_daemon(data)
        assert d.engine is not None and d.service is not None and d.config_path is not None
        from nessus_pool.service import SubmitRequest

        pinned = await d.service.submit(SubmitRequest(targets="10.4.0.1", pool="a", scanner="a2"))
        while d.engine.tasks[pinned.task_id].status.value != "running":
            await d.engine.wait_change(pinned.task_id, 1)
        without_a2 = {
            **data,
            "pools": [
                {**data["pools"][0], "scanners": data["pools"][0]["scanners"][:1]},
                data["pools"][1],
            ],
        }
        write_config(Path(d.config_path), without_a2)
        assert (await d.service.reload()).applied
        assert d.engine.scanners["a2"].slots.removed  # draining its running scan
        write_config(Path(d.config_path), data)
        assert (await d.service.reload()).applied
        assert (await d.service.wait_for(pinned.task_id, 30)).status == "completed"
        again = await d.service.submit(SubmitRequest(targets="10.4.0.2", pool="a", scanner="a2"))
        assert (await d.service.wait_for(again.task_id, 30)).status == "completed"
        assert "a2" in d.engine.scanners and not d.engine.scanners["a2"].slots.removed
    finally:
        await cluster.close()


async def test_the_database_password_is_redacted_from_logs(
    tmp_path: Path, pg_url: str, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nessus_pool.logs import redact

    secret = "pg-pass-Zq81xTT7-unique"
    monkeypatch.setenv("NP_TEST_PG_PW", secret)
    assert secret in redact(f"driver said {secret}")  # not registered before the start
    storage = {"path": str(tmp_path / "data"), "url": pg_url, "password": {"env": "NP_TEST_PG_PW"}}
    d = await start_daemon(sim_config(tmp_path, storage=storage))
    assert (await d.readiness())["ready"] is True
    assert secret not in redact(f"driver said {secret}")
