"""The engine driven directly: a fake Nessus that records every call, a real SQLite store,
the fake clock. Each lifecycle outcome, end to end, in milliseconds."""

from __future__ import annotations

from pathlib import Path

from nessus_pool.models import TaskStatus
from nessus_pool.testing import engine_rig


async def test_a_scan_runs_to_completed_with_the_calls_in_order(tmp_path: Path) -> None:
    async with engine_rig(tmp_path, scan_s=30.0) as rig:
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
