"""The features of issue #17 on several daemons sharing one PostgreSQL (issue #14): pause
and resume asked of a daemon that does not run the scan, maintenance windows on claims and
takeovers. Engines in one process on one fake clock (the rig of ``test_cluster``)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from nessus_pool.errors import ConflictError, NotFoundError
from nessus_pool.models import TaskStatus
from nessus_pool.service.reads import Reads
from tests.integration.test_cluster import cluster_of, pg_url  # noqa: F401 (fixture)


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
        reads_a, reads_b = Reads(a.engine), Reads(b.engine)
        # findings and per-host rows are in the database: the same from either daemon
        assert (await reads_b.task(t.task_id)).status is TaskStatus.COMPLETED
        from_b = await reads_b.findings(t.task_id)
        assert from_b and from_b == await reads_a.findings(t.task_id)
        # the raw export is a file on the daemon that exported it (here a shares our disk)
        path = await reads_a.export_path(t.task_id)
        assert Path(path).is_file()
        # as if b ran on another host: the file is not there; a clear 404 names daemon a
        shutil.rmtree(tmp_path / "a")
        with pytest.raises(NotFoundError, match=r"daemon a\b") as err:
            await reads_b.export_path(t.task_id)
        assert err.value.fields["field"] == "task_id"
