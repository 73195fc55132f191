"""Engine supervision and graceful stop, driven directly on the fake clock and a real
SQLite store, plus the daemon's side of both (readiness, exit code)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec
import pytest

from nessus_pool.config import HousekeepingConfig, PoolConfig
from nessus_pool.engine.housekeeping import housekeeping_once
from nessus_pool.models import TaskStatus
from nessus_pool.testing import FAST_POOL, engine_rig, settle
from tests.conftest import DaemonFactory, sim_config


async def test_stop_lets_an_ingest_in_flight_finish_within_the_grace(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scan_s=5.0) as rig:
        fake = rig.fakes["fake-1"]
        export = fake.hold("export_scan")
        t = await rig.submit()
        await rig.until(export.entered.is_set)
        stopper = asyncio.create_task(rig.engine.stop(grace_s=30.0))
        await settle()
        pool = rig.engine.pools["lan"]
        assert pool.dispatcher is not None and pool.dispatcher.done()  # no more dispatching
        assert not stopper.done()  # the export in flight holds the stop
        export.release.set()
        await rig.flush()
        await rig.until(stopper.done, step_s=0.5, limit=40)
        stored = await rig.stored(t.task_id)
        assert stored.status is TaskStatus.COMPLETED
        assert await rig.store.count_findings(t.task_id) > 0


async def test_stop_cancels_after_the_grace_and_a_restart_redoes_the_export(
    tmp_path: Path,
    store_url: str | None,
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scan_s=5.0) as rig:
        fake = rig.fakes["fake-1"]
        export = fake.hold("export_scan")  # never released: a hung download
        t = await rig.submit()
        await rig.until(export.entered.is_set)
        stopper = asyncio.create_task(rig.engine.stop(grace_s=10.0))
        await settle()
        await rig.clock.advance(9.0)
        assert not stopper.done()
        await rig.until(stopper.done, step_s=1.0, limit=5)
        stored = await rig.stored(t.task_id)
        # no "exported" checkpoint: the half-done export does not count as results
        assert stored.status is TaskStatus.EXPORTING and stored.export_sha256 is None
        exports = fake.count("export_scan")
        clock, fakes = rig.clock, rig.fakes
    async with engine_rig(tmp_path, store_url=store_url, clock=clock, fakes=fakes) as rig:
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert stored.status is TaskStatus.COMPLETED
        assert fake.count("export_scan") == exports + 1


async def test_an_essential_loop_that_dies_marks_the_engine_dead(
    tmp_path: Path,
    store_url: str | None,
    allow_dead_background_tasks: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "nessus_pool.engine")
    async with engine_rig(tmp_path, store_url=store_url) as rig:
        seen: list[str] = []
        rig.engine.on_death.append(seen.append)

        async def housekeeping() -> None:
            raise RuntimeError("disk on fire")

        async def runner_like() -> None:
            raise RuntimeError("only this task")

        rig.engine.spawn(runner_like(), "task:x", essential=False)
        await settle()
        assert rig.engine.death is None and seen == []
        rig.engine.spawn(housekeeping(), "housekeeping")
        await settle()
        assert rig.engine.death is not None and "housekeeping" in rig.engine.death
        assert seen == [rig.engine.death]
    events = [getattr(r, "event", "") for r in caplog.records]
    assert events.count("engine_essential_task_died") == 1


async def test_daemon_not_ready_and_stops_with_exit_code_1_when_a_loop_dies(
    tmp_path: Path, start_daemon: DaemonFactory, allow_dead_background_tasks: bool
) -> None:
    d = await start_daemon(sim_config(tmp_path))
    assert (await d.readiness())["ready"] is True

    async def boom() -> None:
        raise RuntimeError("dispatcher bug")

    assert d.engine is not None
    d.engine.spawn(boom(), "dispatch:lan")
    await settle()
    ready = await d.readiness()
    assert ready["ready"] is False and "dispatcher bug" in ready["engine_failure"]
    serve = asyncio.create_task(d.serve_forever())
    await asyncio.wait_for(serve, 30)
    assert d.exit_code == 1


async def test_a_probe_that_gets_a_hostile_reply_keeps_probing(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, pool=_fast_probe()) as rig:
        fake = rig.fakes["fake-1"]
        fake.fail_next("probe", RecursionError("maximum recursion depth exceeded"))
        slots = rig.engine.scanners["fake-1"].slots
        before = fake.count("probe")
        await rig.until(lambda: fake.count("probe") >= before + 2, step_s=5.0)
        assert rig.engine.death is None
        assert slots.reachable  # the next probe put it back


def _fast_probe() -> PoolConfig:
    return msgspec.structs.replace(FAST_POOL, probe_interval_s=5.0)


async def test_housekeeping_survives_an_export_it_cannot_delete(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scan_s=5.0) as rig:
        done = [await rig.submit() for _ in range(2)]
        await rig.until(lambda: not rig.engine.tasks)
        stuck = Path(str((await rig.stored(done[0].task_id)).export_path))
        stuck.unlink()
        stuck.mkdir()  # unlink() on it now raises IsADirectoryError
        run = await housekeeping_once(
            rig.engine, HousekeepingConfig(finished_ttl_s=1.0), rig.clock.now_ms() + 10_000
        )
        assert run.tasks_deleted == 2
        other = Path(str(done[1].export_path))
        assert not other.exists()
