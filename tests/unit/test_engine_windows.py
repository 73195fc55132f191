"""Maintenance windows and pause/resume in the engine, on FakeNessus and the fake clock:
a window holds a launch and its end releases it (no polling: the windows loop sleeps until
the boundary), on-window pause and stop, a person's pause and resume with their refusals,
max-scan-duration while paused, and a paused scan across a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import msgspec
import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.config import MaintenanceWindowConfig, PoolConfig, calendar_of
from nessus_pool.errors import ConflictError, NotFoundError, PermanentScannerError
from nessus_pool.models import Task, TaskStatus
from nessus_pool.testing import FAST_POOL, FakeNessus, engine_rig, settle
from nessus_pool.windows import Calendar

START_MS = FakeClock().now_ms()  # 2026-01-01T00:00:00Z


def status(t: Task) -> TaskStatus:
    """The status now (a call, so mypy does not keep an earlier assert's narrowing)."""
    return t.status


def at(offset_s: float) -> str:
    return dt.datetime.fromtimestamp(START_MS / 1000 + offset_s, dt.UTC).isoformat()


def pool_with(*windows: MaintenanceWindowConfig, **kw: object) -> PoolConfig:
    return msgspec.structs.replace(FAST_POOL, maintenance_windows=list(windows), **kw)


def one_off(start_s: float, end_s: float, on_window: str = "finish") -> MaintenanceWindowConfig:
    return MaintenanceWindowConfig(start=at(start_s), end=at(end_s), on_window=on_window)  # type: ignore[arg-type]


async def test_window_holds_a_launch_and_its_end_releases_it(
    tmp_path: Path, store_url: str | None
) -> None:
    pool = pool_with(one_off(-10, 100))
    async with engine_rig(tmp_path, store_url=store_url, pool=pool) as rig:
        t = await rig.submit()
        await rig.flush()
        assert t.status is TaskStatus.QUEUED
        assert rig.engine.waiting_reason(t) == "maintenance_window"
        assert rig.engine.pool_waiting_reason("lan") == "maintenance_window"
        await rig.clock.advance(99)
        await rig.flush()
        assert t.status is TaskStatus.QUEUED  # still inside
        assert rig.fakes["fake-1"].count("create_scan") == 0
        await rig.clock.advance(1.5)  # the window ends: the windows loop wakes the pool
        await rig.flush()
        await rig.until(lambda: status(t) is TaskStatus.RUNNING, step_s=0.1, limit=20)
        assert t.dispatched_at_ms is not None and t.dispatched_at_ms >= START_MS + 100_000


async def test_a_scanner_window_holds_only_that_scanner(tmp_path: Path) -> None:
    async with engine_rig(tmp_path, scanners=2) as rig:
        # per-scanner windows come from the pool's scanner tables; set fake-1's directly
        rig.engine.scanners["fake-1"].calendar = pool_calendar(one_off(-1, 500))
        t1 = await rig.submit()
        t2 = await rig.submit()
        await rig.until(lambda: t1.status is TaskStatus.RUNNING, step_s=0.5)
        await rig.flush()
        assert t1.scanner_id == "fake-2"
        assert t2.status is TaskStatus.QUEUED
        assert rig.engine.waiting_reason(t2) == "capacity_full"


def pool_calendar(*windows: MaintenanceWindowConfig) -> Calendar:
    return calendar_of(list(windows))


async def test_on_window_pause_pauses_and_resumes_at_the_end(
    tmp_path: Path, store_url: str | None
) -> None:
    pool = pool_with(one_off(30, 330, "pause"), max_scan_duration_s=200.0)
    async with engine_rig(tmp_path, store_url=store_url, pool=pool, scan_s=100) as rig:
        fake = rig.fakes["fake-1"]
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        await rig.until(lambda: t.status is TaskStatus.PAUSED, step_s=1, limit=60)
        assert fake.count("pause_scan") == 1
        assert t.paused_by == "window" and t.paused_at_ms is not None
        assert (await rig.stored(t.task_id)).status is TaskStatus.PAUSED
        # 300 s of window: longer than max-scan-duration (200 s), yet no timeout while paused
        await rig.until(lambda: t.status is TaskStatus.RUNNING, step_s=5, limit=80)
        assert fake.count("resume_scan") == 1
        assert t.window_paused_ms >= 295_000
        await rig.until(lambda: t.status is TaskStatus.COMPLETED, step_s=5)
        events = [e.status for e in await rig.store.events(t.task_id)]
        assert events.count("paused") == 1 and events.count("resumed") == 1


async def test_on_window_stop_requeues_and_runs_again_after(tmp_path: Path) -> None:
    pool = pool_with(one_off(30, 130, "stop"))
    async with engine_rig(tmp_path, pool=pool, scan_s=100) as rig:
        fake = rig.fakes["fake-1"]
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        first_name = t.remote_scan_name
        await rig.until(lambda: t.status is TaskStatus.QUEUED, step_s=1, limit=60)
        assert fake.count("stop_scan") == 1
        assert t.reason == "maintenance_window"
        assert rig.engine.waiting_reason(t) == "maintenance_window"
        await rig.until(lambda: t.status is TaskStatus.RUNNING, step_s=2, limit=100)
        assert t.dispatched_at_ms is not None and t.dispatched_at_ms >= START_MS + 130_000
        assert t.remote_scan_name != first_name
        assert t.attempt - t.attempt_base == 1  # the window's stop used no attempt
        await rig.until(lambda: t.status is TaskStatus.COMPLETED, step_s=5)


async def test_a_person_pauses_and_resumes(tmp_path: Path, store_url: str | None) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scan_s=100) as rig:
        fake = rig.fakes["fake-1"]
        w = rig.engine.windows
        queued = await rig.submit()  # the only slot goes to it first
        other = await rig.submit()
        await rig.until(lambda: queued.status is TaskStatus.RUNNING)
        with pytest.raises(ConflictError, match="queued and has not been launched"):
            await w.pause(other.task_id)
        assert (await w.resume(queued.task_id)) is queued  # running already: nothing to do
        assert fake.count("resume_scan") == 0
        with pytest.raises(NotFoundError):
            await w.pause("nope")
        await w.pause(queued.task_id)
        assert queued.status is TaskStatus.PAUSED and queued.paused_by == "user"
        assert (await rig.stored(queued.task_id)).status is TaskStatus.PAUSED
        assert rig.engine.scanners["fake-1"].slots.active.keys() == {queued.task_id}
        assert (await w.pause(queued.task_id)) is queued  # again: no second call
        assert fake.count("pause_scan") == 1
        await rig.clock.advance(500)  # the paused scan does not progress
        await rig.flush()
        assert queued.status is TaskStatus.PAUSED and other.status is TaskStatus.QUEUED
        await w.resume(queued.task_id)
        assert status(queued) is TaskStatus.RUNNING and queued.paused_at_ms is None
        assert queued.window_paused_ms == 0  # a person's pause is not a window's
        await rig.until(lambda: status(queued) is TaskStatus.COMPLETED, step_s=5)
        with pytest.raises(ConflictError, match=r"ended \(completed\)"):
            await w.pause(queued.task_id)


async def test_a_scanner_refusing_the_pause_is_a_conflict(tmp_path: Path) -> None:
    async with engine_rig(tmp_path, scan_s=100) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        refusal = PermanentScannerError(
            "Can not pause a scan that is processing", endpoint="POST /scans/{id}/pause", status=409
        )
        rig.fakes["fake-1"].fail_next("pause_scan", refusal)
        with pytest.raises(ConflictError, match="scanner refused: Can not pause"):
            await rig.engine.windows.pause(t.task_id)
        assert t.status is TaskStatus.RUNNING


async def test_resume_refused_inside_a_window(tmp_path: Path) -> None:
    async with engine_rig(tmp_path, scan_s=100) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        await rig.engine.windows.pause(t.task_id)
        rig.engine.scanners["fake-1"].calendar = pool_calendar(one_off(-1, 50))
        with pytest.raises(ConflictError, match=r"maintenance window for \d+ s more"):
            await rig.engine.windows.resume(t.task_id)


async def test_a_paused_scan_stays_paused_across_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    fakes: dict[str, FakeNessus] = {}
    async with engine_rig(tmp_path, clock=clock, fakes=fakes, scan_s=100) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        await rig.engine.windows.pause(t.task_id)
        await rig.flush()
        task_id = t.task_id
    async with engine_rig(tmp_path, clock=clock, fakes=fakes, scan_s=100) as rig:
        t = rig.engine.tasks[task_id]
        assert t.status is TaskStatus.PAUSED and t.paused_by == "user"
        assert rig.engine.scanners["fake-1"].slots.active.keys() == {task_id}
        await rig.clock.advance(300)
        await rig.flush()
        assert t.status is TaskStatus.PAUSED  # re-attached, still paused
        await rig.engine.windows.resume(task_id)
        await rig.until(lambda: status(t) is TaskStatus.COMPLETED, step_s=5)


async def test_a_window_pause_ended_during_downtime_resumes_at_start(tmp_path: Path) -> None:
    clock = FakeClock()
    fakes: dict[str, FakeNessus] = {}
    pool = pool_with(one_off(20, 60, "pause"))
    async with engine_rig(tmp_path, clock=clock, fakes=fakes, pool=pool, scan_s=100) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.PAUSED, step_s=1, limit=60)
        task_id = t.task_id
    await clock.advance(100)  # down while the window ends
    async with engine_rig(tmp_path, clock=clock, fakes=fakes, pool=pool, scan_s=100) as rig:
        t = rig.engine.tasks[task_id]
        await rig.until(lambda: t.status is TaskStatus.RUNNING, step_s=0.5, limit=20)
        assert fakes["fake-1"].count("resume_scan") == 1


async def test_concurrent_pauses_share_one_scanner_call(tmp_path: Path) -> None:
    async with engine_rig(tmp_path, scan_s=100) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        results = await asyncio.gather(*(rig.engine.windows.pause(t.task_id) for _ in range(10)))
        assert all(r is t for r in results)
        assert status(t) is TaskStatus.PAUSED
        assert rig.fakes["fake-1"].count("pause_scan") == 1


async def test_a_paused_scan_can_be_canceled(tmp_path: Path, store_url: str | None) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scan_s=100) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        await rig.engine.windows.pause(t.task_id)
        await rig.engine.cancel(t.task_id)
        with pytest.raises(ConflictError, match=r"being canceled|ended \(canceled\)"):
            await rig.engine.windows.resume(t.task_id)
        await rig.until(lambda: status(t) is TaskStatus.CANCELED)
        assert rig.fakes["fake-1"].count("stop_scan") == 1
        assert not rig.engine.scanners["fake-1"].slots.active


async def test_a_scan_launched_as_a_pause_window_starts_is_paused_once_running(
    tmp_path: Path,
) -> None:
    async with engine_rig(tmp_path, scan_s=100) as rig:
        fake = rig.fakes["fake-1"]
        hold = fake.hold("launch_scan")
        t = await rig.submit()
        await rig.until(lambda: hold.entered.is_set(), flush=False)
        assert t.status is TaskStatus.DISPATCHING
        rig.engine.scanners["fake-1"].calendar = pool_calendar(one_off(-1, 300, "pause"))
        rig.engine.windows.changed.set()
        await settle()
        hold.release.set()
        await rig.until(lambda: status(t) is TaskStatus.PAUSED, step_s=0.5, limit=40)
        assert t.paused_by == "window" and fake.count("pause_scan") == 1


async def test_a_window_stop_the_scanner_refuses_lets_the_scan_end_normally(
    tmp_path: Path,
) -> None:
    # the window starts as the scan ends: Nessus refuses to stop a finished scan (409)
    pool = pool_with(one_off(30, 130, "stop"))
    async with engine_rig(tmp_path, pool=pool, scan_s=100) as rig:
        fake = rig.fakes["fake-1"]
        refusal = PermanentScannerError(
            "Can not stop a scan that is completed", endpoint="POST /scans/{id}/stop", status=409
        )
        fake.fail_next("stop_scan", refusal)
        t = await rig.submit()
        await rig.until(lambda: status(t) is TaskStatus.COMPLETED, step_s=2)
        assert fake.count("stop_scan") == 1
        assert not t.dead_letter and t.reason == "completed"


async def test_a_restart_between_a_window_stop_and_its_requeue_requeues(tmp_path: Path) -> None:
    clock = FakeClock()
    fakes: dict[str, FakeNessus] = {}
    pool = pool_with(one_off(30, 600, "stop"))
    async with engine_rig(tmp_path, clock=clock, fakes=fakes, pool=pool, scan_s=100) as rig:
        held = fakes["fake-1"].hold("stop_scan")  # parked after the scan was stopped
        t = await rig.submit()
        await rig.until(lambda: held.entered.is_set(), step_s=1, limit=60)
        task_id = t.task_id
        assert t.status is TaskStatus.RUNNING
    async with engine_rig(tmp_path, clock=clock, fakes=fakes, pool=pool, scan_s=100) as rig:
        t = rig.engine.tasks[task_id]
        await rig.until(lambda: status(t) is TaskStatus.QUEUED, step_s=0.5, limit=40)
        assert t.reason == "maintenance_window"
        assert rig.engine.waiting_reason(t) == "maintenance_window"


async def test_a_pause_of_a_scan_already_paused_on_the_scanner_records_it(tmp_path: Path) -> None:
    # a restart between the pause call and its "paused" row: the scan is paused on the
    # scanner while the task says running; the window's pause records it without a call
    pool = pool_with(one_off(30, 300, "pause"))
    async with engine_rig(tmp_path, pool=pool, scan_s=100) as rig:
        fake = rig.fakes["fake-1"]
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        assert t.remote_scan_id is not None
        fake.scans[t.remote_scan_id].paused_at_s = rig.clock.monotonic_s()
        await rig.until(lambda: status(t) is TaskStatus.PAUSED, step_s=1, limit=60)
        assert fake.count("pause_scan") == 0 and t.paused_by == "window"
        await rig.until(lambda: status(t) is TaskStatus.RUNNING, step_s=5, limit=80)
        assert fake.count("resume_scan") == 1


async def test_a_pause_the_scanner_does_not_answer_times_out_on_the_engine_clock(
    tmp_path: Path,
) -> None:
    async with engine_rig(tmp_path, scan_s=1000) as rig:
        fake = rig.fakes["fake-1"]
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        hold = fake.hold("pause_scan")
        pausing = asyncio.ensure_future(rig.engine.windows.pause(t.task_id))
        await rig.until(lambda: hold.entered.is_set(), flush=False, step_s=0.5)
        await rig.clock.advance(61)
        with pytest.raises(ConflictError, match="did not answer the pause within 60 s"):
            await pausing
        hold.release.set()  # the scanner answers late: the pause still happens
        await rig.until(lambda: status(t) is TaskStatus.PAUSED, step_s=0.5, limit=10)


async def test_a_berlin_night_window_on_the_spring_forward_day_holds_one_hour(
    tmp_path: Path,
) -> None:
    # 01:00-03:00 Berlin on 2026-03-29 is 00:00Z-01:00Z (the clocks skip 02:00-03:00)
    start_ms = int(dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC).timestamp() * 1000)
    night = MaintenanceWindowConfig(from_="01:00", to="03:00", timezone="Europe/Berlin")
    clock = FakeClock(start_ms=start_ms)
    async with engine_rig(tmp_path, clock=clock, pool=pool_with(night)) as rig:
        t = await rig.submit()
        await rig.flush()
        assert rig.engine.waiting_reason(t) == "maintenance_window"
        await rig.until(lambda: status(t) is TaskStatus.RUNNING, step_s=60, limit=40)
        assert t.dispatched_at_ms is not None
        held_min = (t.dispatched_at_ms - start_ms) / 60_000
        assert 30 <= held_min < 31, held_min  # not 90 minutes


async def test_a_berlin_night_window_on_the_fall_back_day_holds_three_hours(
    tmp_path: Path,
) -> None:
    # 01:00-03:00 Berlin on 2026-10-25 is 23:00Z (the day before) to 02:00Z
    start_ms = int(dt.datetime(2026, 10, 24, 23, 30, tzinfo=dt.UTC).timestamp() * 1000)
    night = MaintenanceWindowConfig(from_="01:00", to="03:00", timezone="Europe/Berlin")
    clock = FakeClock(start_ms=start_ms)
    async with engine_rig(tmp_path, clock=clock, pool=pool_with(night)) as rig:
        t = await rig.submit()
        await rig.until(lambda: status(t) is TaskStatus.RUNNING, step_s=60, limit=200)
        assert t.dispatched_at_ms is not None
        held_min = (t.dispatched_at_ms - start_ms) / 60_000
        assert 150 <= held_min < 151, held_min  # 2.5 h of the 3 h window were left
