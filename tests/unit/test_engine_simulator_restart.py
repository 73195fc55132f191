"""A restart with the embedded simulator: its scans die with the process, so a re-attached
task finds its scan gone. That must not use an attempt (else three restarts dead-letter
every scan in flight), while a real scanner's vanished scan still does."""

from __future__ import annotations

from pathlib import Path

from nessus_pool.clock import FakeClock
from nessus_pool.models import TaskStatus
from nessus_pool.testing import engine_rig


async def _crash_while(
    tmp_path: Path, clock: FakeClock, task_id: str, status: TaskStatus, *, simulated: bool
) -> None:
    """Start on the same storage with a new, empty scanner (what the embedded simulator
    is after a restart); stop again once the task is back in ``status``."""
    async with engine_rig(tmp_path, clock=clock, fakes={}, simulated=simulated) as rig:
        fake = rig.fakes["fake-1"]
        # launched on the new scanner: the re-attach found its scan gone and requeued it
        await rig.until(
            lambda: fake.count("launch_scan") == 1 and rig.engine.tasks[task_id].status is status
        )


async def test_restarts_with_the_embedded_simulator_rerun_scans_without_using_attempts(
    tmp_path: Path,
) -> None:
    async with engine_rig(tmp_path, scan_s=30.0, simulated=True) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        clock = rig.clock
    # FAST_POOL allows 3 attempts: before the fix the third restart dead-lettered it
    for _ in range(3):
        await _crash_while(tmp_path, clock, t.task_id, TaskStatus.RUNNING, simulated=True)
    async with engine_rig(tmp_path, clock=clock, fakes={}, scan_s=30.0, simulated=True) as rig:
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        events = await rig.store.events(t.task_id)
    assert (stored.status, stored.attempt) == (TaskStatus.COMPLETED, 1)
    requeued = [e for e in events if e.status == "requeued"]
    assert [e.reason for e in requeued] == ["simulator_restarted"] * 4
    assert all(e.detail and "no attempt used" in e.detail for e in requeued)


async def test_a_scan_exporting_when_the_embedded_simulator_died_runs_again(
    tmp_path: Path,
) -> None:
    async with engine_rig(tmp_path, scan_s=5.0, simulated=True) as rig:
        export = rig.fakes["fake-1"].hold("export_scan")  # never released: crash mid-export
        t = await rig.submit()
        await rig.until(export.entered.is_set)
        clock = rig.clock
    async with engine_rig(tmp_path, clock=clock, fakes={}, scan_s=5.0, simulated=True) as rig:
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        events = await rig.store.events(t.task_id)
    # before the fix: the 404 on the export was "scanner_refused", a dead letter
    assert (stored.status, stored.attempt) == (TaskStatus.COMPLETED, 1)
    assert [e.reason for e in events if e.status == "requeued"] == ["simulator_restarted"]


async def test_a_real_scanners_vanished_scan_still_uses_an_attempt(tmp_path: Path) -> None:
    async with engine_rig(tmp_path, scan_s=30.0) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        clock = rig.clock
    for _ in range(2):
        await _crash_while(tmp_path, clock, t.task_id, TaskStatus.RUNNING, simulated=False)
    async with engine_rig(tmp_path, clock=clock, fakes={}) as rig:
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
    assert stored.status is TaskStatus.FAILED
    assert (stored.reason, stored.dead_letter) == ("attempts_exhausted", True)
