"""The engine driven directly: a fake Nessus that records every call, a real SQLite store,
the fake clock. Each lifecycle outcome, end to end, in milliseconds."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from nessus_pool.config import PoolConfig
from nessus_pool.engine.outcome import Finished, Requeued, Stop, outcome_of
from nessus_pool.engine.state import ALLOWED, TransitionError, check_transition, transition
from nessus_pool.errors import (
    RemoteNotFoundError,
    ScanApiUnavailableError,
    StorageError,
    TransientScannerError,
    UnsafeXmlError,
)
from nessus_pool.models import TERMINAL_STATUSES, UNFINISHED_STATUSES, Task, TaskStatus
from nessus_pool.nessus import RemotePhase
from nessus_pool.store import Q_INSERT_EVENT, Q_UPSERT_TASK
from nessus_pool.testing import FakeScan, engine_rig


async def test_a_scan_runs_to_completed_with_the_calls_in_order(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scan_s=30.0) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert stored.status is TaskStatus.COMPLETED
        assert stored.reason == "completed"
        assert stored.export_sha256 is not None
        fake = rig.fakes["fake-1"]
        methods = [c.method for c in fake.calls if c.method != "probe"]
        assert methods[:2] == ["create_scan", "launch_scan"]
        assert methods[-1] == "export_scan"
        events = [e.status for e in await rig.store.events(t.task_id)]
        assert events == [
            "queued",
            "dispatching",
            "created",
            "running",
            "exporting",
            "exported",
            "completed",
        ]
        assert not rig.engine.scanners["fake-1"].slots.active


async def test_watchers_hear_of_every_step_a_scan_takes(
    tmp_path: Path, store_url: str | None
) -> None:
    """MCP subscriptions and long polls wake on the engine's change hook: each committed
    step must call it, or a watcher sees "dispatching" and then, long after, "completed"
    (the launch and the export were silent). Each hook call here reads the task as it
    stands then; the export checkpoint shows as its sha256."""
    async with engine_rig(tmp_path, store_url=store_url, scan_s=30.0) as rig:
        heard: list[str] = []

        def hook(task_id: str) -> None:
            t = rig.engine.tasks.get(task_id)
            if t is not None:
                step = t.status.value + ("+sha256" if t.export_sha256 else "")
                if not heard or heard[-1] != step:
                    heard.append(step)

        rig.engine.on_change.append(hook)
        t = await rig.submit()
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        assert heard[:2] == ["dispatching", "running"]
        assert heard[-2:] == ["exporting", "exporting+sha256"]
        assert (await rig.stored(t.task_id)).status is TaskStatus.COMPLETED


def _pool(**kw: object) -> PoolConfig:
    base: dict[str, object] = {"name": "lan", "poll_interval_s": 1.0, "max_attempts": 3}
    base.update(kw)
    return PoolConfig(**base)  # type: ignore[arg-type]


async def test_max_scan_duration_is_ours_even_if_the_wall_clock_steps_back(
    tmp_path: Path,
    store_url: str | None,
) -> None:
    async with engine_rig(
        tmp_path, store_url=store_url, pool=_pool(max_scan_duration_s=10.0), scan_s=100.0
    ) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        rig.clock.step_wall(-3600.0)  # NTP correction: wall time jumps an hour back
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.reason) == (TaskStatus.TIMED_OUT, "max_scan_duration")
        assert rig.fakes["fake-1"].count("stop_scan") == 1
        assert stored.export_sha256 is not None  # partial results kept


async def test_scanner_lost_dead_letters_after_the_pool_limit(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(
        tmp_path, store_url=store_url, pool=_pool(scanner_lost_after_s=30.0)
    ) as rig:
        fake = rig.fakes["fake-1"]
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        fake.fail_next("scan_details", TransientScannerError("connection refused"), 10_000)
        started_s = rig.clock.monotonic_s()
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.reason, stored.dead_letter) == (
            TaskStatus.FAILED,
            "scanner_lost",
            True,
        )
        assert 30.0 <= rig.clock.monotonic_s() - started_s < 120.0


async def test_stopped_on_the_scanner_by_someone_else(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url) as rig:
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        assert t.remote_scan_id is not None
        rig.fakes["fake-1"].force(t.remote_scan_id, RemotePhase.CANCELED)
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.reason) == (TaskStatus.CANCELED, "stopped_on_scanner")
        assert rig.fakes["fake-1"].count("stop_scan") == 0


async def test_scan_aborted_is_retried_with_a_new_scan_name(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scan_s=5.0) as rig:
        fake = rig.fakes["fake-1"]
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        assert t.remote_scan_id is not None
        fake.force(t.remote_scan_id, RemotePhase.ABORTED)
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.attempt) == (TaskStatus.COMPLETED, 2)
        names = [c.arg for c in fake.calls if c.method == "create_scan"]
        assert names == [f"nessus-pool-{t.task_id}-a1", f"nessus-pool-{t.task_id}-a2"]
        events = await rig.store.events(t.task_id)
        assert [e.reason for e in events if e.status == "requeued"] == ["scan_aborted"]


async def test_scanner_export_only_requeues_without_using_an_attempt(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url) as rig:
        fake = rig.fakes["fake-1"]
        fake.fail_next("create_scan", ScanApiUnavailableError("licence: export only"))
        fake.scan_api = False  # what the next probes will say too
        t = await rig.submit()
        await rig.until(lambda: fake.count("create_scan") == 1 and t.status is TaskStatus.QUEUED)
        slots = rig.engine.scanners["fake-1"].slots
        assert slots.scan_api is False and "export" in slots.message
        assert t.attempt == 0 and t.reason == "scanner_export_only"
        assert t.task_id in rig.engine.pools["lan"].queue
        await rig.clock.advance(120.0)  # no scanner can take it: it waits, no new create
        assert fake.count("create_scan") == 1


async def test_duplicate_remote_scans_after_a_crash_launch_only_the_oldest(
    tmp_path: Path, store_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with engine_rig(tmp_path, store_url=store_url) as rig:
        fake = rig.fakes["fake-1"]
        created = fake.hold("create_scan")  # created on the scanner; we die before "created"
        t = await rig.submit()
        await rig.until(created.entered.is_set)
        clock, fakes = rig.clock, rig.fakes
    (first,) = fake.scans.values()
    # a second create of the same name that also reached the scanner (a retried request)
    fake.scans[99] = FakeScan(id=99, name=first.name, targets=first.targets, credentialed=False)
    caplog.set_level(logging.WARNING, "nessus_pool.engine")
    async with engine_rig(tmp_path, store_url=store_url, clock=clock, fakes=fakes) as rig:
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.remote_scan_id) == (TaskStatus.COMPLETED, first.id)
        assert [c.arg for c in fake.calls if c.method == "launch_scan"] == [first.id]
        assert fake.count("create_scan") == 1
    dup = [r for r in caplog.records if getattr(r, "event", "") == "remote_scan_duplicates"]
    assert [getattr(r, "count", None) for r in dup] == [2]


def test_transition_table_refuses_leaving_a_final_state() -> None:
    for final in TERMINAL_STATUSES:
        for to in TaskStatus:
            allowed = final is TaskStatus.FAILED and to is TaskStatus.QUEUED
            if allowed:
                check_transition("t", final, to, dead_letter=True)
                with pytest.raises(TransitionError):
                    check_transition("t", final, to, dead_letter=False)
            else:
                with pytest.raises(TransitionError):
                    check_transition("t", final, to, dead_letter=True)
    # every unfinished status may end, and only an active one may be exported
    for status in UNFINISHED_STATUSES:
        check_transition("t", status, TaskStatus.CANCELED)
        assert (TaskStatus.EXPORTING in ALLOWED[status]) == (
            status in {TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.EXPORTING}
        )


async def test_a_cancel_does_not_wait_out_a_retry_backoff(
    tmp_path: Path, store_url: str | None
) -> None:
    slow = _pool(retry_base_delay_s=60.0, retry_max_delay_s=60.0)
    async with engine_rig(tmp_path, store_url=store_url, pool=slow) as rig:
        fake = rig.fakes["fake-1"]
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        # Random(2) makes the first backoff 57 s: a cancel must not wait for it
        rig.engine.scanners["fake-1"].rng = random.Random(2)
        fake.fail_next("scan_details", TransientScannerError("connection reset"), 2)
        await rig.until(lambda: fake.count("scan_details") >= 2, step_s=0.5)
        assert rig.clock.sleepers  # the runner is in its backoff
        await rig.engine.cancel(t.task_id)
        asked_s = rig.clock.monotonic_s()
        await rig.until(lambda: t.task_id not in rig.engine.tasks, step_s=0.5)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.reason) == (TaskStatus.CANCELED, "canceled_by_user")
        assert rig.clock.monotonic_s() - asked_s < 5.0
        assert fake.count("stop_scan") == 1


def test_outcome_table_maps_each_error_to_one_outcome() -> None:
    assert outcome_of(ScanApiUnavailableError("export only")) == Requeued(
        "scanner_export_only", use_attempt=False
    )
    refused = outcome_of(RemoteNotFoundError("gone", status=404))
    assert isinstance(refused, Finished)
    assert (refused.status, refused.reason, refused.dead_letter) == (
        TaskStatus.FAILED,
        "scanner_refused",
        True,
    )
    flaky = outcome_of(TransientScannerError("reset"))
    assert isinstance(flaky, Requeued) and flaky.reason == "scanner_error: scanner_unavailable"
    assert outcome_of(UnsafeXmlError("entity")) == Finished(
        TaskStatus.FAILED, "results_unreadable", "entity", dead_letter=True
    )
    storage = outcome_of(StorageError("disk full"))
    assert isinstance(storage, Finished) and storage.reason == "storage_error"
    bug = outcome_of(RecursionError("deep"))
    assert bug == Requeued("internal_error", error="RecursionError: deep")
    stop = Finished(TaskStatus.CANCELED, "canceled_by_user")
    assert outcome_of(Stop(stop)) is stop


def test_transition_applies_the_step_and_returns_its_rows_or_refuses_untouched() -> None:
    t = Task(
        task_id="t1",
        seq=1,
        pool="lan",
        name="n",
        targets=["10.0.0.1"],
        status=TaskStatus.RUNNING,
        created_at_ms=1,
        updated_at_ms=1,
    )
    ops = transition(t, TaskStatus.EXPORTING, "exporting", 5, reason="completed")
    assert (t.status, t.updated_at_ms, t.reason) == (TaskStatus.EXPORTING, 5, "completed")
    (task_sql, task_row), (event_sql, event_row) = ops
    assert task_sql == Q_UPSERT_TASK and task_row[3] == "exporting"
    assert event_sql == Q_INSERT_EVENT and tuple(event_row) == ("t1", 5, "exporting", None, None)
    done = transition(t, TaskStatus.COMPLETED, "completed", 6)
    assert len(done) == 2 and t.status is TaskStatus.COMPLETED
    with pytest.raises(TransitionError):
        transition(t, TaskStatus.RUNNING, "running", 7, progress_pct=3)
    assert (t.status, t.updated_at_ms, t.progress_pct) == (TaskStatus.COMPLETED, 6, None)


async def test_repeated_cancels_of_a_running_scan_write_one_row(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url) as rig:
        fake = rig.fakes["fake-1"]
        stop = fake.hold("stop_scan")  # keep it running while the cancels arrive
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.RUNNING)
        for _ in range(200):
            await rig.engine.cancel(t.task_id)
        await rig.until(stop.entered.is_set)
        stop.release.set()
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        events = [e.status for e in await rig.store.events(t.task_id)]
        assert events.count("cancel_requested") == 1
        assert events[-1] == "canceled" and fake.count("stop_scan") == 1


async def test_a_full_disk_during_export_waits_for_space_within_one_deadline(
    tmp_path: Path,
) -> None:
    """ENOSPC while writing the export is a StorageError: the finished scan is exported again
    once space returns (it was failed at once); every try shares the first try's deadline."""
    pool = _pool(export_deadline_s=120.0)
    async with engine_rig(tmp_path, pool=pool, scan_s=5.0) as rig:
        fake = rig.fakes["fake-1"]
        fake.fail_next("export_scan", StorageError("cannot write the export: disk full"), 3)
        t = await rig.submit()
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.reason) == (TaskStatus.COMPLETED, "completed")
        assert fake.count("export_scan") == 4
        deadlines = set(fake.export_deadlines_at_s)
        assert len(deadlines) == 1 and None not in deadlines


async def test_a_disk_that_stays_full_dead_letters_at_the_export_deadline(
    tmp_path: Path,
) -> None:
    pool = _pool(export_deadline_s=60.0)
    async with engine_rig(tmp_path, pool=pool, scan_s=5.0) as rig:
        fake = rig.fakes["fake-1"]
        fake.fail_next("export_scan", StorageError("cannot write the export: disk full"), 10_000)
        t = await rig.submit()
        await rig.until(lambda: t.status is TaskStatus.EXPORTING)
        started_s = rig.clock.monotonic_s()
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        stored = await rig.stored(t.task_id)
        assert (stored.status, stored.reason) == (TaskStatus.FAILED, "export_storage_failed")
        assert stored.dead_letter
        assert 60.0 <= rig.clock.monotonic_s() - started_s <= 60.0 + 5.0
