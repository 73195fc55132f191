"""The features of issue #17 on several daemons sharing one PostgreSQL (issue #14): pause
and resume asked of a daemon that does not run the scan, maintenance windows on claims and
takeovers. Engines in one process on one fake clock (the rig of ``test_cluster``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import shutil
from pathlib import Path

import msgspec
import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.config import Config, MaintenanceWindowConfig, PoolConfig, ScheduleConfig
from nessus_pool.errors import ConflictError, NotFoundError
from nessus_pool.models import TaskStatus
from nessus_pool.schedules import ScheduleSpec
from nessus_pool.service import Service
from nessus_pool.service.reads import Reads
from nessus_pool.store import TaskFilter
from tests.integration.test_cluster import POOL, cluster_of, pg_url  # noqa: F401 (fixture)

START_MS = FakeClock().now_ms()


async def test_pause_and_resume_sent_to_a_daemon_that_does_not_run_the_scan_reach_the_owner(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0) as c:
        a = await c.start("a")
        b = await c.start("b", zone=[])  # owns nothing: a front door only
        t = await b.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        await c.until(lambda: c.all_in([t], "running"))
        assert t.task_id in a.engine.tasks and not b.engine.tasks
        fake = c.fakes["fake-1"]

        asked = asyncio.ensure_future(b.engine.windows.pause(t.task_id))
        await c.until(lambda: asked.done(), step_s=0.5)
        assert asked.result().status is TaskStatus.PAUSED
        # the owner paused it itself: its own memory, the scanner and the row agree
        assert a.engine.tasks[t.task_id].status is TaskStatus.PAUSED
        assert a.engine.tasks[t.task_id].paused_by == "user"
        assert fake.count("pause_scan") == 1
        assert (await c.statuses())[t.task_id] == "paused"
        # asked again: nothing more is sent to the scanner
        again = asyncio.ensure_future(b.engine.windows.pause(t.task_id))
        await c.until(lambda: again.done(), step_s=0.5)
        assert again.result().status is TaskStatus.PAUSED and fake.count("pause_scan") == 1

        resumed = asyncio.ensure_future(b.engine.windows.resume(t.task_id))
        await c.until(lambda: resumed.done(), step_s=0.5)
        assert resumed.result().status is TaskStatus.RUNNING
        assert a.engine.tasks[t.task_id].status is TaskStatus.RUNNING
        assert fake.count("resume_scan") == 1
        assert (await c.statuses())[t.task_id] == "running"

        # the owner's refusal comes back as a conflict naming why (resume of a running scan
        # is a no-op; a pause of a scan being canceled is refused)
        await b.engine.cancel(t.task_id)
        await c.until(lambda: c.all_in([t], "canceled"))
        with pytest.raises(ConflictError, match="ended"):
            await b.engine.windows.pause(t.task_id)
        with pytest.raises(NotFoundError):
            await b.engine.windows.pause("t9999")


async def test_a_pause_no_daemon_answers_is_a_clear_conflict_not_a_hang(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0) as c:
        await c.start("a")
        b = await c.start("b", zone=[])
        t = await b.engine.submit(c.task())
        await c.until(lambda: c.all_in([t], "running"))
        await c.stop("a", crash=True)  # its lease stays: nobody runs the scan for lease-s
        asked = asyncio.ensure_future(b.engine.windows.pause(t.task_id))
        await c.until(lambda: asked.done(), step_s=5.0, limit=30)
        with pytest.raises(ConflictError, match="no daemon answered"):
            asked.result()
        assert (await c.statuses())[t.task_id] == "running"


async def test_results_read_from_any_daemon_and_the_export_names_the_daemon_that_has_it(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=30.0) as c:
        a = await c.start("a")
        b = await c.start("b", zone=[])
        t = await b.engine.submit(c.task())
        await c.until(lambda: c.all_in([t]))
        t2 = await a.engine.submit(c.task())
        await c.until(lambda: c.all_in([t2]))
        reads_a, reads_b = Reads(a.engine), Reads(b.engine)
        # findings and per-host rows are in the database: the same from either daemon
        assert (await reads_b.task(t.task_id)).status is TaskStatus.COMPLETED
        from_b = await reads_b.findings(t.task_id)
        assert from_b and from_b == await reads_a.findings(t.task_id)
        # the raw export is a file on the daemon that exported it (here a shares our disk)
        path = await reads_a.export_download(t.task_id)
        assert Path(path).is_file()
        # as if b ran on another host: the file is not there; a clear 404 names daemon a
        shutil.rmtree(tmp_path / "a")
        with pytest.raises(NotFoundError, match=r"daemon a\b") as err:
            await reads_b.export_download(t.task_id)
        assert err.value.fields["field"] == "task_id"
        # per-host pages and the comparison with the previous run: rows, not the file
        hosts = await reads_b.hosts(t2.task_id)
        assert hosts["hosts"] and hosts == await reads_a.hosts(t2.task_id)
        diff = await reads_b.compare(t2.task_id)
        assert diff["base_task_id"] == t.task_id
        assert diff == await reads_a.compare(t2.task_id)


def _window(start_s: float, end_s: float, on_window: str = "finish") -> PoolConfig:
    def at(offset_s: float) -> str:
        return dt.datetime.fromtimestamp(START_MS / 1000 + offset_s, dt.UTC).isoformat()

    w = MaintenanceWindowConfig(start=at(start_s), end=at(end_s), on_window=on_window)  # type: ignore[arg-type]
    return msgspec.structs.replace(POOL, maintenance_windows=[w])


async def test_claims_of_every_daemon_skip_a_scanner_inside_a_maintenance_window(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    pool = _window(0.0, 100.0)
    async with cluster_of(pg_url, tmp_path, scanners=2, cap=2, scan_s=30.0, pool=pool) as c:
        nodes = [await c.start("a"), await c.start("b")]
        await c.until(lambda: all(len(n.member.held) == 1 for n in nodes))
        tasks = [await nodes[i % 2].engine.submit(c.task()) for i in range(4)]
        await c.until(lambda: c.clock.now_ms() >= START_MS + 95_000, step_s=5.0)
        assert sum(f.count("launch_scan") for f in c.fakes.values()) == 0
        assert set((await c.statuses()).values()) == {"queued"}
        # the window ends: both owners' dispatchers are woken and claim
        await c.until(lambda: c.all_in(tasks))
        first = min(s.launched_at_s or 1e9 for f in c.fakes.values() for s in f.scans.values())
        assert first >= 100.0
        assert all(n == 1 for n in c.created().values()) and len(c.created()) == 4


async def test_a_scan_a_window_paused_is_taken_over_paused_and_resumed_when_it_ends(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    pool = _window(60.0, 300.0, "pause")
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=200.0, pool=pool) as c:
        await c.start("a")
        b = await c.start("b")
        t = await b.engine.submit(c.task())
        await c.until(lambda: c.all_in([t], "running"))
        await c.until(lambda: c.all_in([t], "paused"))
        fake = c.fakes["fake-1"]
        assert fake.count("pause_scan") == 1
        await c.stop("a", crash=True)
        await c.until(lambda: b.member.holds("fake-1"), step_s=1.0)
        # re-attached as it is: paused by the window, no call to the scanner to change it
        adopted = b.engine.tasks[t.task_id]
        assert adopted.status is TaskStatus.PAUSED and adopted.paused_by == "window"
        assert c.clock.now_ms() < START_MS + 300_000
        # still inside the window: a person's resume is refused, naming the window
        with pytest.raises(ConflictError, match="maintenance window"):
            await b.engine.windows.resume(t.task_id)
        await c.until(lambda: c.all_in([t], "running"), step_s=5.0)
        assert c.clock.now_ms() >= START_MS + 300_000
        assert fake.count("resume_scan") == 1 and fake.count("pause_scan") == 1
        await c.until(lambda: c.all_in([t]), step_s=5.0)
    assert list(c.created().values()) == [1]
    assert fake.count("launch_scan") == 1


async def test_two_daemons_schedulers_fire_each_slot_once_and_skip_while_a_run_is_on_another(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    # scans take 100 s, the schedule fires every 60 s: every other slot is skipped, and the
    # run in the way may be queued in the database or running on the other daemon
    sched = ScheduleConfig(name="s", targets="10.0.0.1", pool="lan", every_s=60)
    cfg = Config(pools=[POOL], schedules=[sched])
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=2, scan_s=100.0) as c:
        nodes = [await c.start("a"), await c.start("b", zone=[])]
        services = [Service(n.engine, lambda: cfg) for n in nodes]
        for svc in services:
            svc.schedules.max_sleep_s = 3600.0
            svc.schedules.start()
        await c.until(lambda: c.clock.now_ms() >= START_MS + 60_000 * 8, step_s=1.0, limit=1000)
        await c.flush()
        runs = list(reversed(await services[1].schedules.store.runs("s", 100)))
        tasks = sorted(
            (t for t in await nodes[0].store.list_tasks(TaskFilter(), 100) if t.schedule_id),
            key=lambda t: t.seq,
        )
    slots = [r.slot_ms for r in runs]
    assert len(slots) == len(set(slots)) >= 7  # every slot once, by one daemon or the other
    fired = [r.task_id for r in runs if r.outcome == "fired"]
    assert fired == [t.task_id for t in tasks][: len(fired)] and len(tasks) == len(fired)
    assert "skipped" in [r.outcome for r in runs]
    # never two runs at once, whichever daemon fired them
    for prev, nxt in itertools.pairwise(tasks):
        assert prev.finished_at_ms is not None and prev.finished_at_ms <= nxt.created_at_ms


async def test_a_schedule_created_through_one_daemon_is_seen_and_run_by_the_other(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = Config(pools=[POOL])
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=30.0) as c:
        nodes = [await c.start("a"), await c.start("b", zone=[])]
        a, b = (Service(n.engine, lambda: cfg) for n in nodes)
        await a.schedules.create(ScheduleSpec(name="api", targets="10.0.0.3", every_s=600))
        assert [s["name"] for s in await b.schedules.list()] == ["api"]
        ran = await b.schedules.run_now("api")
        task_id = ran["run"]["task_id"]

        async def completed() -> bool:
            return (await c.statuses()).get(task_id) == "completed"

        await c.until(completed)
        assert (await c.stored(task_id)).schedule_id == "api"
        runs = await a.schedules.store.runs("api")
        assert [(r.kind, r.task_id) for r in runs] == [("manual", task_id)]
        await b.schedules.delete("api")
        assert await a.schedules.list() == []


async def test_every_daemon_shows_a_schedules_run_in_flight(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = Config(pools=[POOL])
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=100.0) as c:
        nodes = [await c.start("a"), await c.start("b", zone=[])]
        a, b = (Service(n.engine, lambda: cfg) for n in nodes)
        await b.schedules.create(ScheduleSpec(name="api", targets="10.0.0.3", every_s=600))
        task_id = (await b.schedules.run_now("api"))["run"]["task_id"]
        # queued in the database, then running on a: every daemon names it
        assert (await b.schedules.get("api"))["active_task_id"] == task_id
        await c.until(lambda: task_id in nodes[0].engine.tasks)
        for svc in (a, b):
            assert (await svc.schedules.get("api"))["active_task_id"] == task_id
            assert [s["active_task_id"] for s in await svc.schedules.list()] == [task_id]

        async def completed() -> bool:
            return (await c.statuses()).get(task_id) == "completed"

        await c.until(completed)
        assert (await b.schedules.get("api"))["active_task_id"] is None
