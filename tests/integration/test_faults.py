"""Scanner faults: each ends in a defined state with a reason, nothing is stuck, nothing is
duplicated. The simulator injects the faults; the real daemon and client handle them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nessus_pool.daemon import Daemon
from nessus_pool.service import SubmitRequest
from nessus_pool.simulator import Faults, SimulatorCluster, SimulatorOptions, start_simulators
from tests.conftest import DaemonFactory

KEYS = {"access-key": "sim-access-key", "secret-key": "sim-secret-key"}
FAST = {
    "poll-interval-s": 0.05,
    "retry-base-delay-s": 0.01,
    "retry-max-delay-s": 0.05,
    "export-deadline-s": 2,
    "breaker-failures": 3,
    "breaker-reset-s": 0.3,
    "probe-interval-s": 0.2,
    "max-attempts": 3,
}


@pytest.fixture
async def sims() -> AsyncIterator[SimulatorCluster]:
    cluster = await start_simulators(3, options=SimulatorOptions(scan_seconds=0.4, seed=11))
    yield cluster
    await cluster.close()


def pool_of(tmp_path: Path, sims: SimulatorCluster, **extra: Any) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "data")},
        "pools": [
            {
                "name": "lan",
                **FAST,
                **extra,
                "scanners": [
                    {"id": f"s{i}", "url": s.url, "max-concurrent-scans": 2, "timeout-s": 2, **KEYS}
                    for i, s in enumerate(sims.scanners)
                ],
            }
        ],
    }


async def submit_many(d: Daemon, n: int, prefix: str = "10.60") -> list[str]:
    assert d.service is not None
    return [
        (
            await d.service.submit(SubmitRequest(targets=f"{prefix}.{i // 200}.{i % 200 + 1}"))
        ).task_id
        for i in range(n)
    ]


async def finish_all(d: Daemon, ids: list[str], timeout_s: float = 60) -> list[Any]:
    assert d.service is not None
    return list(await asyncio.gather(*(d.service.wait_for(t, timeout_s) for t in ids)))


def no_duplicates(sims: SimulatorCluster) -> None:
    assert all(s.stats().duplicates == 0 for s in sims.scanners)


async def test_scanner_down_and_back_up_mid_run(
    tmp_path: Path, sims: SimulatorCluster, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(pool_of(tmp_path, sims))
    assert d.engine is not None
    ids = await submit_many(d, 30)
    down = sims.scanners[0]
    while not d.engine.scanners["s0"].slots.active:
        await d.engine.wait_change(ids[0], 0.02)
    await down.go_down()
    # new work goes to the other two while s0 is down
    more = await submit_many(d, 10, prefix="10.61")
    views = await finish_all(d, more)
    assert {v.scanner for v in views} <= {"s1", "s2"}
    await down.come_up()
    views = await finish_all(d, ids)
    assert [v.status for v in views] == ["completed"] * 30
    assert sum(s.stats().launched for s in sims.scanners) >= 40
    no_duplicates(sims)


#: how a task may fail when its scanner keeps erroring: out of attempts, or the scanner
#: unreachable past the pool's limits; never a wrong or unexplained state
FAULT_REASONS = {"attempts_exhausted", "export_failed", "scanner_lost"}


async def test_flaky_scanner_errors_are_retried_without_duplicates(
    tmp_path: Path,
    sims: SimulatorCluster,
    start_daemon: DaemonFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "nessus_pool.engine")
    for s in sims.scanners:
        s.set_faults(Faults(error_rate=0.25, drop_rate=0.05))
    d: Daemon = await start_daemon(pool_of(tmp_path, sims, **{"max-attempts": 6}))
    ids = await submit_many(d, 20)
    views = await finish_all(d, ids)
    # every task ends in a defined state, none stuck; how many complete depends on the
    # random faults, so what is asserted is what each outcome must look like
    assert {v.status for v in views} <= {"completed", "failed"}
    for v in views:
        if v.status == "failed":
            assert v.dead_letter and v.reason in FAULT_REASONS, (v.reason, v.error)
    assert d.engine is not None
    for tid in ids:
        stored = await d.engine.store.get_task(tid)
        assert stored is not None
        if stored.status.value == "completed":
            assert stored.export_sha256 is not None
    retried = [r for r in caplog.records if getattr(r, "event", "") == "scanner_call_retry"]
    assert retried  # the faults were hit and retried, not skipped
    no_duplicates(sims)


async def test_export_that_keeps_failing_is_dead_lettered(
    tmp_path: Path, sims: SimulatorCluster, start_daemon: DaemonFactory
) -> None:
    for s in sims.scanners:
        s.set_faults(Faults(export_error_rate=1.0))
    d: Daemon = await start_daemon(pool_of(tmp_path, sims))
    views = await finish_all(d, await submit_many(d, 3))
    assert {(v.status, v.reason, v.dead_letter) for v in views} == {
        ("failed", "export_failed", True)
    }


async def test_scan_that_disappears_is_requeued_and_completes(
    tmp_path: Path, sims: SimulatorCluster, start_daemon: DaemonFactory
) -> None:
    d: Daemon = await start_daemon(pool_of(tmp_path, sims))
    assert d.engine is not None and d.service is not None
    [tid] = await submit_many(d, 1)
    t = d.engine.tasks[tid]
    while t.remote_scan_id is None or t.status.value != "running":
        await d.engine.wait_change(tid, 0.05)
    sim = next(s for i, s in enumerate(sims.scanners) if t.scanner_id == f"s{i}")
    sim.scans.pop(t.remote_scan_id)  # someone deleted it on the scanner
    view = await d.service.wait_for(tid, 30)
    assert view.status == "completed" and view.attempt == 2
    events = [e.reason for e in await d.engine.store.events(tid)]
    assert "remote_scan_disappeared" in events


async def test_all_scanners_down_tasks_wait_without_using_attempts(
    tmp_path: Path, sims: SimulatorCluster, start_daemon: DaemonFactory
) -> None:
    for s in sims.scanners:
        await s.go_down()
    d: Daemon = await start_daemon(pool_of(tmp_path, sims))
    assert d.engine is not None
    ids = await submit_many(d, 6)
    handles = list(d.engine.scanners.values())
    for _ in range(3):  # three probe rounds of every scanner pass while everything is down
        for sc in handles:
            sc.probed.clear()
        await asyncio.wait_for(asyncio.gather(*(sc.probed.wait() for sc in handles)), 30)
    assert all(not sc.slots.reachable for sc in handles)
    assert all(d.engine.tasks[t].status.value == "queued" for t in ids)
    assert all(d.engine.tasks[t].attempt == 0 for t in ids)
    assert sum(s.stats().created for s in sims.scanners) == 0
    for s in sims.scanners:
        await s.come_up()
    views = await finish_all(d, ids)
    assert [v.status for v in views] == ["completed"] * 6
    assert all(v.attempt == 1 for v in views)
