"""Status polls of scans launched together are spread over the poll interval (issue #18):
2,000 scans started in one wave must not send 2,000 polls in the same instant."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import msgspec

from nessus_pool.models import TaskStatus
from nessus_pool.nessus import ScanDetails
from nessus_pool.testing import FAST_POOL, engine_rig

POLL_10S = msgspec.structs.replace(FAST_POOL, poll_interval_s=10.0)


async def test_scans_launched_together_are_polled_spread_over_the_interval(
    tmp_path: Path,
) -> None:
    async with engine_rig(tmp_path, scanners=1, cap=8, pool=POLL_10S, scan_s=3600.0) as rig:
        fake = rig.fakes["fake-1"]
        rig.engine.scanners["fake-1"].rng = random.Random(7)
        polls: list[tuple[int, float]] = []
        launched: dict[int, float] = {}
        details = fake.scan_details
        launch = fake.launch_scan

        async def recorded(scan_id: int) -> ScanDetails:
            polls.append((scan_id, rig.clock.monotonic_s()))
            return await details(scan_id)

        async def launch_recorded(scan_id: int) -> str:
            launched[scan_id] = rig.clock.monotonic_s()
            return await launch(scan_id)

        setattr(fake, "scan_details", recorded)  # noqa: B010 (an instance attribute)
        setattr(fake, "launch_scan", launch_recorded)  # noqa: B010
        tasks = [await rig.submit() for _ in range(8)]
        await rig.until(lambda: all(t.status is TaskStatus.RUNNING for t in tasks))
        await rig.until(lambda: len(polls) >= 24, step_s=0.25)

    # each scan's first poll, from its own launch (the launches of the 8 spread over the
    # fake clock's steps: measured from the last one, an early scan's first poll looked
    # under half an interval)
    first = {sid: at - launched[sid] for sid, at in sorted(polls, key=lambda p: -p[1])}
    assert len(first) == 8
    # each scan's first poll comes 0.5-1.5 intervals after its launch, not all at one time
    assert all(5.0 <= s <= 15.25 for s in first.values()), first
    assert len({round(s * 4) for s in first.values()}) >= 6, first
    assert max(first.values()) - min(first.values()) >= 5.0, first
    # after that, each keeps its own phase: one poll per interval
    for sid in first:
        times = [at for s, at in polls if s == sid]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(9.99 <= g <= 10.26 for g in gaps), (sid, gaps)
