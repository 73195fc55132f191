"""Why a queued scan waits (issue #11 item 5): a pure function of pool state, shown per task
and per pool, counted in a metric; a pool that can never launch refuses the submit."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from nessus_pool.engine.observe import snapshot
from nessus_pool.errors import ConflictError
from nessus_pool.models import TaskStatus
from nessus_pool.testing import FAST_POOL, engine_rig

PROBE_5S = msgspec.structs.replace(FAST_POOL, probe_interval_s=5.0)


def _blocked_metric(rig_engine: object) -> dict[tuple[str, ...], float]:
    fams = {f.name: f for f in snapshot(rig_engine)}  # type: ignore[arg-type]
    return {tuple(s.labels.values()): s.value for s in fams["nessus_pool_queue_blocked"].samples}


async def test_full_pool_then_drained_then_down_each_say_why(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(
        tmp_path, store_url=store_url, scanners=2, cap=1, pool=PROBE_5S, scan_s=600.0
    ) as rig:
        running = [await rig.submit() for _ in range(2)]
        await rig.until(lambda: all(t.status is TaskStatus.RUNNING for t in running))
        waiting = await rig.submit()
        await rig.flush()
        assert rig.engine.waiting_reason(waiting) == "capacity_full"
        assert rig.engine.pool_waiting_reason("lan") == "capacity_full"
        assert _blocked_metric(rig.engine) == {("lan", "capacity_full"): 1}
        assert rig.engine.waiting_reason(running[0]) is None  # not queued
        for sid in rig.engine.scanners:
            rig.engine.set_scanner_enabled(sid, False)
        assert rig.engine.waiting_reason(waiting) == "scanners_draining"
        for sid, fake in rig.fakes.items():
            rig.engine.set_scanner_enabled(sid, True)
            fake.reachable = False
        handles = list(rig.engine.scanners.values())
        await rig.until(lambda: not any(sc.slots.reachable for sc in handles), step_s=5.0)
        assert rig.engine.waiting_reason(waiting) == "scanners_unreachable"
        assert _blocked_metric(rig.engine) == {("lan", "scanners_unreachable"): 1}


async def test_export_only_pool_refuses_submits_and_names_the_scanners(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scanners=2, cap=1, pool=PROBE_5S) as rig:
        rig.engine.set_scanner_enabled("fake-1", False)
        rig.engine.set_scanner_enabled("fake-2", False)
        queued = await rig.submit()  # accepted: nothing known against the scanners yet
        for fake in rig.fakes.values():
            fake.scan_api = False
        handles = list(rig.engine.scanners.values())
        await rig.until(lambda: not any(sc.slots.scan_api for sc in handles), step_s=5.0)
        for sid in rig.engine.scanners:
            rig.engine.set_scanner_enabled(sid, True)
        with pytest.raises(ConflictError) as err:
            await rig.submit()
        msg = str(err.value)
        assert "fake-1" in msg and "fake-2" in msg and "export-only" in msg
        # the one queued before it was known waits, and says why
        assert rig.engine.waiting_reason(queued) == "export_only"
        assert rig.engine.pool_waiting_reason("lan") == "export_only"
        assert _blocked_metric(rig.engine) == {("lan", "export_only"): 1}
        # one scanner licensed again: submits are accepted and the queued scan runs
        rig.fakes["fake-2"].scan_api = True
        await rig.until(lambda: rig.engine.scanners["fake-2"].slots.scan_api, step_s=5.0)
        later = await rig.submit()
        await rig.until(lambda: not rig.engine.tasks, step_s=5.0)
        assert (await rig.stored(queued.task_id)).status is TaskStatus.COMPLETED
        assert (await rig.stored(later.task_id)).status is TaskStatus.COMPLETED


async def test_a_scan_pinned_to_an_export_only_scanner_is_refused(
    tmp_path: Path, store_url: str | None
) -> None:
    async with engine_rig(tmp_path, store_url=store_url, scanners=2, cap=1, pool=PROBE_5S) as rig:
        rig.fakes["fake-1"].scan_api = False
        sc = rig.engine.scanners["fake-1"]
        await rig.until(lambda: not sc.slots.scan_api, step_s=5.0)
        with pytest.raises(ConflictError, match="fake-1"):
            await rig.submit(requested_scanner="fake-1")
        t = await rig.submit(requested_scanner="fake-2")
        await rig.until(lambda: t.task_id not in rig.engine.tasks)
        assert (await rig.stored(t.task_id)).status is TaskStatus.COMPLETED
