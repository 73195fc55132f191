"""Every (state change, concurrent cancel) pair, with commits held so the cancel lands
while the change's rows wait for the disk, exactly as behind a slow fsync. The real
engine and a real SQLite store; only the scanner is fake."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from nessus_pool.errors import ConflictError, PermanentScannerError, ScanApiUnavailableError
from nessus_pool.models import Task, TaskStatus
from nessus_pool.nessus import RemotePhase
from nessus_pool.testing import FakeNessus, Rig, engine_rig, settle


async def _cancel_while_held(rig: Rig, t: Task, event: str) -> None:
    """With commits held from the moment ``event`` is queued for ``t``: cancel ``t``, let
    the cancel queue whatever it queues, then release and let it all commit."""
    await rig.until(lambda: (t.task_id, event) in rig.store.enqueued, flush=False)
    cancel = asyncio.create_task(rig.engine.cancel(t.task_id))
    await settle()
    rig.store.release()
    with contextlib.suppress(ConflictError):
        await cancel
    await rig.flush()


async def _dispatcher_still_works(rig: Rig) -> None:
    pool = rig.engine.pools["lan"]
    for sc in pool.scanners.values():
        sc.slots.draining = False
    pool.wake.set()
    nxt = await rig.submit()
    await rig.until(lambda: nxt.task_id not in rig.engine.tasks)
    assert pool.dispatcher is not None and not pool.dispatcher.done()
    assert (await rig.stored(nxt.task_id)).status is TaskStatus.COMPLETED


async def _consistent(rig: Rig, t: Task, status: TaskStatus) -> None:
    """Memory, the queue and the disk agree, and a restart would not bring it back."""
    stored = await rig.stored(t.task_id)
    assert stored.status is status
    assert t.status is status
    assert t.task_id not in rig.engine.tasks
    assert t.task_id not in rig.engine.pools["lan"].queue
    assert t.task_id not in [a.task_id for a in await rig.store.load_active()]


@pytest.mark.parametrize("cause", ["scan_aborted", "scanner_export_only"])
async def test_cancel_during_requeue(
    tmp_path: Path, store_url: str | None, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with engine_rig(tmp_path, store_url=store_url) as rig:
        fake = rig.fakes["fake-1"]
        t = await rig.submit()
        if cause == "scan_aborted":
            await rig.until(lambda: t.status is TaskStatus.RUNNING)
        # nothing may be dispatched again while the cancel is on its way
        rig.engine.scanners["fake-1"].slots.draining = True
        rig.store.hold_at("requeued")
        if cause == "scan_aborted":
            assert t.remote_scan_id is not None
            fake.force(t.remote_scan_id, RemotePhase.ABORTED)
        else:
            fake.fail_next("create_scan", ScanApiUnavailableError("export-only licence"))
            rig.engine.scanners["fake-1"].slots.draining = False
            rig.engine.pools["lan"].wake.set()
            await rig.until(lambda: fake.count("create_scan") == 1, flush=False)
            rig.engine.scanners["fake-1"].slots.draining = True
        await _cancel_while_held(rig, t, "requeued")
        await _consistent(rig, t, TaskStatus.CANCELED)
        if cause == "scanner_export_only":
            rig.engine.scanners["fake-1"].slots.scan_api = True
        await _dispatcher_still_works(rig)
    assert not [r for r in caplog.records if getattr(r, "event", "") == "background_task_died"]


async def test_cancel_during_revive(tmp_path: Path, store_url: str | None) -> None:
    async with engine_rig(tmp_path, store_url=store_url) as rig:
        fake = rig.fakes["fake-1"]
        fake.fail_next("create_scan", PermanentScannerError("no such template"))
        t = await rig.submit()
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        dead = await rig.stored(t.task_id)
        assert dead.dead_letter and dead.reason == "scanner_refused"
        rig.engine.scanners["fake-1"].slots.draining = True
        rig.store.hold_at("requeued")
        revive = asyncio.create_task(rig.engine.revive(dead))
        await _cancel_while_held(rig, dead, "requeued")
        await revive
        await _consistent(rig, dead, TaskStatus.CANCELED)
        await _dispatcher_still_works(rig)


@pytest.mark.parametrize(
    ("final", "status"),
    [
        ("completed", TaskStatus.COMPLETED),
        ("failed", TaskStatus.FAILED),
        ("canceled", TaskStatus.CANCELED),
    ],
)
async def test_cancel_during_finish(
    tmp_path: Path, store_url: str | None, final: str, status: TaskStatus
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scan_s=5.0) as rig:
        fake = rig.fakes["fake-1"]
        if final == "failed":
            fake.fail_next("create_scan", PermanentScannerError("no such template"))
        rig.store.hold_at(final)
        t = await rig.submit()
        if final == "canceled":  # a second cancel while the first one's row is held
            await rig.flush()
            rig.engine.scanners["fake-1"].slots.draining = True
            rig.store.hold_at("canceled")
            first = asyncio.create_task(rig.engine.cancel(t.task_id))
            await _cancel_while_held(rig, t, "canceled")
            await first
        else:
            await _cancel_while_held(rig, t, final)
        await _consistent(rig, t, status)
        events = [e.status for e in await rig.store.events(t.task_id)]
        assert events[-1] == final and events.count(final) == 1
        await _dispatcher_still_works(rig)


async def test_crash_after_remote_delete_keeps_the_finished_scan(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(
        tmp_path, store_url=store_url, scan_s=5.0, delete_remote_scans=True
    ) as rig:
        fake = rig.fakes["fake-1"]
        deleted = fake.hold("delete_scan")  # the scan is gone; we die before our final row
        t = await rig.submit()
        await rig.until(deleted.entered.is_set)
        assert not fake.scans
        exports = fake.count("export_scan")
        clock, fakes = rig.clock, rig.fakes
    async with engine_rig(
        tmp_path, store_url=store_url, clock=clock, fakes=fakes, delete_remote_scans=True
    ) as rig:
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.dead_letter) == (TaskStatus.COMPLETED, False)
        assert fake.count("export_scan") == exports  # not downloaded again
        assert stored.export_path is not None and Path(stored.export_path).exists()
        assert await rig.store.count_findings(t.task_id) > 0


async def test_unexpected_runner_error_frees_the_slot_and_requeues(
    tmp_path: Path, store_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "nessus_pool.engine")
    async with engine_rig(tmp_path, store_url=store_url, scan_s=5.0) as rig:
        fake = rig.fakes["fake-1"]
        fake.fail_next("scan_details", RecursionError("maximum recursion depth exceeded"))
        t = await rig.submit()
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert stored.status is TaskStatus.COMPLETED
        assert stored.attempt == 2
        events = await rig.store.events(t.task_id)
        assert [e.reason for e in events if e.status == "requeued"] == ["internal_error"]
        assert rig.engine.internal_errors == {"lan": 1}
        assert not rig.engine.scanners["fake-1"].slots.active


async def test_crash_after_checkpoint_then_scanner_removed_still_completes(
    tmp_path: Path,
    store_url: str | None,
) -> None:
    """The results were stored before the crash; the scanner is gone after the restart:
    the task ends as it would have (was: dead-lettered as scanner_removed)."""
    async with engine_rig(
        tmp_path, store_url=store_url, scan_s=5.0, delete_remote_scans=True
    ) as rig:
        deleted = rig.fakes["fake-1"].hold("delete_scan")
        t = await rig.submit()
        await rig.until(deleted.entered.is_set)
        clock = rig.clock
    fakes = {"fake-2": FakeNessus("fake-2", clock)}
    async with engine_rig(
        tmp_path, store_url=store_url, clock=clock, fakes=fakes, scanner_ids=["fake-2"]
    ) as rig:
        assert "fake-1" not in rig.engine.scanners
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.reason, stored.dead_letter) == (
            TaskStatus.COMPLETED,
            "completed",
            False,
        )
        assert await rig.store.count_findings(t.task_id) > 0
