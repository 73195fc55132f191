"""The schedule firing loop on the fake clock, a real store (SQLite and PostgreSQL) and fake
scanners: runs are ordinary tasks with schedule_id; overlap skips are recorded; a missed slot
runs once at start-up when young enough, never a burst; a crash between the task's commit and
the run's record never fires the slot twice; DST days fire once."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.config import Config, ScheduleConfig
from nessus_pool.errors import (
    CapacityError,
    ConflictError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from nessus_pool.models import Task
from nessus_pool.schedules import ScheduleSpec, to_ms
from nessus_pool.service import Service
from nessus_pool.store import TaskFilter
from nessus_pool.store.schedules import ScheduleRun
from nessus_pool.testing import FAST_POOL, FakeNessus, Rig, engine_rig


@asynccontextmanager
async def rig_with_schedules(
    tmp_path: Path,
    store_url: str | None,
    schedules: list[ScheduleConfig],
    *,
    clock: FakeClock | None = None,
    fakes: dict[str, FakeNessus] | None = None,
    scan_s: float = 30.0,
) -> AsyncIterator[tuple[Rig, Service]]:
    cfg = Config(pools=[FAST_POOL], schedules=schedules)
    async with engine_rig(
        tmp_path, store_url=store_url, clock=clock, fakes=fakes, scan_s=scan_s
    ) as rig:
        svc = Service(rig.engine, lambda: cfg)
        svc.schedules.max_sleep_s = 3600.0
        svc.schedules.start()
        await rig.flush()
        yield rig, svc


def every(name: str = "s", every_s: int = 60, **kw: Any) -> ScheduleConfig:
    return ScheduleConfig(name=name, targets="10.0.0.1", pool="lan", every_s=every_s, **kw)


async def runs_of(rig: Rig, schedule: str) -> list[Task]:
    await rig.flush()
    tasks = await rig.store.list_tasks(TaskFilter(), 1000)
    return sorted((t for t in tasks if t.schedule_id == schedule), key=lambda t: t.seq)


async def history(svc: Service, name: str) -> list[ScheduleRun]:
    return list(reversed(await svc.schedules.store.runs(name, 100)))


async def until_runs(rig: Rig, svc: Service, name: str, n: int) -> list[ScheduleRun]:
    """The history once it has ``n`` runs: a firing is reads and commits on the database
    threads, more loop turns than a flush gives (bounded: fails instead of hanging)."""
    for _ in range(500):
        runs = await history(svc, name)
        if len(runs) >= n:
            return runs
        await rig.flush()
    raise AssertionError(f"{name}: {len(runs)} runs, expected {n}")


async def advance(rig: Rig, seconds: float, step_s: float = 1.0) -> None:
    for _ in range(int(seconds / step_s)):
        await rig.flush()
        await rig.clock.advance(step_s)
    for _ in range(4):  # a firing is a few commits in a row: the task's, then its record
        await rig.flush()


async def test_runs_are_tasks_and_overlap_skips_are_recorded(
    tmp_path: Path, store_url: str | None
) -> None:
    # scans take 100 s, the schedule fires every 60 s: every other slot is skipped
    async with rig_with_schedules(tmp_path, store_url, [every()], scan_s=100.0) as (rig, svc):
        assert await runs_of(rig, "s") == []  # a new schedule never fires a past slot
        await advance(rig, 60 * 6)
        runs = await until_runs(rig, svc, "s", 4)
        tasks = await runs_of(rig, "s")
        outcomes = [r.outcome for r in runs]
        # slots on the minute (counted from the epoch); the fake clock moves on while a
        # woken round reads the store, so a late round may fire the latest slot only
        assert [r.slot_ms % 60_000 for r in runs] == [0] * len(runs) and len(runs) >= 4
        assert outcomes[0] == "fired" and "skipped" in outcomes
        fired = [r.task_id for r in runs if r.outcome == "fired"]
        # (a round may be between a task's commit and its record as we read)
        assert fired == [t.task_id for t in tasks][: len(fired)]
        # a skip names the run in the way, and that run was the last one fired
        last_fired = None
        for r in runs:
            if r.outcome == "fired":
                last_fired = r.task_id
            else:
                assert r.reason is not None
                assert r.reason.startswith(f"the previous run {last_fired} is still ")
                assert r.reason.endswith("(overlap = skip)")
        # never two runs at once
        for a, b in itertools.pairwise(tasks):
            assert a.finished_at_ms is not None and a.finished_at_ms <= b.created_at_ms
        view = (await svc.schedules.list())[0]
        assert view["source"] == "config" and view["read_only"] is True
        now = rig.clock.now_ms()
        assert view["next_run_at_ms"] % 60_000 == 0 and 0 < view["next_run_at_ms"] - now <= 60_000


async def test_overlap_queue_fires_every_slot(tmp_path: Path, store_url: str | None) -> None:
    sched = every(overlap="queue")
    async with rig_with_schedules(tmp_path, store_url, [sched], scan_s=90.0) as (rig, svc):
        await advance(rig, 60 * 3)
        assert [r.outcome for r in await until_runs(rig, svc, "s", 3)] == ["fired"] * 3
        assert len(await runs_of(rig, "s")) == 3


async def test_a_crash_between_the_task_and_its_record_fires_once(
    tmp_path: Path, store_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot's task commits, then the daemon dies before the run is recorded (the
    record write fails: injected). At the restart the slot is due again; the scheduler
    finds its task by the idempotency key and records it: one task for the slot."""
    from nessus_pool.store.schedules import ScheduleStore

    clock = FakeClock()
    fakes: dict[str, FakeNessus] = {}
    # overlap = queue: only the key, not an overlap skip, can keep the slot to one task
    spec = ScheduleSpec(
        name="api-one", targets="10.0.0.1", pool="lan", every_s=600, overlap="queue"
    )
    real_record = ScheduleStore.record
    crashed: list[str] = []

    async def dying_record(self: ScheduleStore, schedule: str, run: ScheduleRun) -> None:
        crashed.append(run.task_id or "")
        raise StorageError("injected: the process dies before the run is recorded")

    async with rig_with_schedules(tmp_path, store_url, [], clock=clock, fakes=fakes) as (
        rig,
        svc,
    ):
        await svc.schedules.create(spec)
        monkeypatch.setattr(ScheduleStore, "record", dying_record)
        await advance(rig, 600)
        for _ in range(500):
            if crashed:
                break
            await rig.flush()
        assert len(crashed) == 1
        first = await runs_of(rig, "api-one")
        assert [t.task_id for t in first] == crashed
        assert await svc.schedules.store.runs("api-one") == []
    monkeypatch.setattr(ScheduleStore, "record", real_record)
    async with rig_with_schedules(tmp_path, store_url, [], clock=clock, fakes=fakes) as (
        rig,
        svc,
    ):
        await until_runs(rig, svc, "api-one", 1)
        tasks = await runs_of(rig, "api-one")
        assert [t.task_id for t in tasks] == crashed  # not a second task
        (run,) = await history(svc, "api-one")
        assert (run.outcome, run.task_id, run.reason) == (
            "fired",
            crashed[0],
            "recorded after a restart",
        )


async def test_a_missed_slot_runs_once_at_start_up_if_young(
    tmp_path: Path, store_url: str | None
) -> None:
    clock = FakeClock()
    fakes: dict[str, FakeNessus] = {}
    sched = every(every_s=3600, catch_up_s=900)
    async with rig_with_schedules(tmp_path, store_url, [sched], clock=clock, fakes=fakes) as (
        rig,
        svc,
    ):
        await advance(rig, 3600, step_s=60)
        assert [r.outcome for r in await until_runs(rig, svc, "s", 1)] == ["fired"]
        # the run ends before the daemon stops (else the catch-up is an overlap skip)
        await rig.until(lambda: svc.schedules._unfinished_run("s") is None, step_s=5.0)
    # down for 5 hours and 10 minutes: five slots missed, the last one 10 minutes ago
    await clock.advance(5 * 3600 + 600)
    async with rig_with_schedules(tmp_path, store_url, [sched], clock=clock, fakes=fakes) as (
        rig,
        svc,
    ):
        runs = await until_runs(rig, svc, "s", 2)
        assert [r.outcome for r in runs] == ["fired", "fired"], runs  # one catch-up, no burst
        # 600 s of downtime after the slot, plus the time the first run took to end
        m = re.fullmatch(r"caught up at start-up, (\d+) s late", runs[1].reason or "")
        assert m is not None and 600 <= int(m.group(1)) <= 900, runs[1].reason
        assert len(await runs_of(rig, "s")) == 2
        await rig.until(lambda: svc.schedules._unfinished_run("s") is None, step_s=5.0)
    # down again, the last missed slot 20 minutes old: older than catch-up-s
    await clock.advance(3 * 3600 + 1200)
    async with rig_with_schedules(tmp_path, store_url, [sched], clock=clock, fakes=fakes) as (
        rig,
        svc,
    ):
        runs = await until_runs(rig, svc, "s", 3)
        assert [r.outcome for r in runs] == ["fired", "fired", "skipped"]
        assert runs[2].reason is not None and "more than catch-up-s = 900" in runs[2].reason
        assert len(await runs_of(rig, "s")) == 2


@pytest.mark.parametrize(
    ("start", "expected_utc"),
    [
        # spring forward: 02:30 does not exist on the 29th; once at 03:00 CEST
        ((2026, 3, 28, 12), ["2026-03-29 01:00", "2026-03-30 00:30"]),
        # fall back: 02:30 happens twice on the 25th; once, at the first
        ((2026, 10, 24, 12), ["2026-10-25 00:30", "2026-10-26 01:30"]),
    ],
)
async def test_dst_days_fire_once(
    tmp_path: Path, store_url: str | None, start: tuple[int, ...], expected_utc: list[str]
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    y, mo, d, h = start
    clock = FakeClock(to_ms(datetime(y, mo, d, h, tzinfo=berlin)))
    sched = ScheduleConfig(
        name="nightly", targets="10.0.0.1", cron="30 2 * * *", timezone="Europe/Berlin"
    )
    async with rig_with_schedules(tmp_path, store_url, [sched], clock=clock) as (rig, svc):
        await advance(rig, 2 * 86400, step_s=600)
        runs = await history(svc, "nightly")
        got = [
            datetime.fromtimestamp(r.slot_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M") for r in runs
        ]
        assert got == expected_utc
        assert [r.outcome for r in runs] == ["fired", "fired"]
        tasks = await runs_of(rig, "nightly")
        assert [t.task_id for t in tasks] == [r.task_id for r in runs]


async def test_api_operations_check_and_protect(tmp_path: Path, store_url: str | None) -> None:
    async with rig_with_schedules(tmp_path, store_url, [every("from-file")]) as (rig, svc):
        ops = svc.schedules
        view = await ops.create(
            msgspec.convert(
                {"name": "weekly", "targets": ["10.0.0.2"], "cron": "0 2 * * 1"}, ScheduleSpec
            )
        )
        assert view["source"] == "api" and view["runs"] == []
        assert view["next_run_at"] == "2026-01-05T02:00:00.000+00:00"  # the first Monday
        with pytest.raises(ConflictError):
            await ops.create(ScheduleSpec(name="weekly", targets="10.0.0.3", every_s=60))
        with pytest.raises(ConflictError) as conflict:
            await ops.create(ScheduleSpec(name="from-file", targets="10.0.0.3", every_s=60))
        assert "config file" in conflict.value.message
        for call in (ops.delete("from-file"), ops.update("from-file", {"every_s": 5})):
            with pytest.raises(ConflictError) as ro:
                await call
            assert "read-only" in ro.value.message
        with pytest.raises(ValidationError) as bad:
            await ops.create(ScheduleSpec(name="x", targets="10.0.0.3", every_s=60, pool="nope"))
        assert bad.value.field == "pool"
        with pytest.raises(ValidationError) as bad:
            await ops.update("weekly", {"every_s": "soon"})
        assert bad.value.field == "every_s"
        with pytest.raises(ValidationError) as bad:
            await ops.update("weekly", {"every_s": 60})  # both cron and every_s now
        assert bad.value.field == "cron"
        changed = await ops.update("weekly", {"cron": "0 3 * * 1"})
        assert changed["next_run_at"] == "2026-01-05T03:00:00.000+00:00"
        replaced = await ops.update(
            "weekly", {"targets": "10.0.0.9", "every_s": 3600}, replace=True
        )
        assert (replaced["cron"], replaced["every_s"], replaced["targets"]) == (
            None,
            3600,
            "10.0.0.9",
        )
        now = await ops.run_now("weekly")
        assert now["run"]["kind"] == "manual" and now["run"]["outcome"] == "fired"
        task = await rig.stored(now["run"]["task_id"])
        assert task.schedule_id == "weekly"
        assert svc.view(task).schedule_id == "weekly"
        assert [v["name"] for v in await ops.list()] == ["from-file", "weekly"]
        await ops.delete("weekly")
        with pytest.raises(NotFoundError):
            await ops.get("weekly")
        ops.max_api_schedules = 1
        await ops.create(ScheduleSpec(name="one", targets="10.0.0.3", every_s=60))
        with pytest.raises(CapacityError):
            await ops.create(ScheduleSpec(name="two", targets="10.0.0.3", every_s=60))
