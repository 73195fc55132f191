"""Housekeeping deletes only what it should: old finished tasks, their findings and export
files, old dead letters; never queued or running tasks; never a scan it did not create."""

from __future__ import annotations

from pathlib import Path

from nessus_pool.config import HousekeepingConfig
from nessus_pool.daemon import Daemon
from nessus_pool.engine.housekeeping import housekeeping_once
from nessus_pool.service import SubmitRequest
from tests.conftest import DaemonFactory, sim_config

DAY_MS = 86_400_000


async def test_retention_and_remote_deletion(tmp_path: Path, start_daemon: DaemonFactory) -> None:
    d: Daemon = await start_daemon(
        sim_config(
            tmp_path,
            scanners=1,
            cap=2,
            scan_seconds=0.2,
            housekeeping={"delete-remote-scans": True},
        )
    )
    assert d.service is not None and d.engine is not None and d.sim_cluster is not None
    sim = d.sim_cluster.scanners[0]
    foreign = sim.add_foreign_scan("someone-elses-scan")
    done = [await d.service.submit(SubmitRequest(targets=f"10.7.0.{i}")) for i in (1, 2)]
    for r in done:
        assert (await d.service.wait_for(r.task_id, 30)).status == "completed"
    names = {s.name for s in sim.stats().scans}
    assert "someone-elses-scan" in names
    assert not any(n.startswith("nessus-pool-") for n in names)  # ours, deleted after export
    exports = [
        Path(t.export_path)
        for t in [await d.engine.store.get_task(r.task_id) for r in done]
        if t and t.export_path
    ]
    assert len(exports) == 2 and all(p.exists() for p in exports)
    assert await d.engine.store.count_findings(done[0].task_id) > 0

    d.service.set_scanner_enabled("sim-1", False)  # drain: the next task stays queued
    queued = await d.service.submit(SubmitRequest(targets="10.7.0.9"))
    cfg = HousekeepingConfig(finished_ttl_s=30 * 86400, dead_letter_ttl_s=90 * 86400)
    now = d.engine.clock.now_ms()
    nothing = await housekeeping_once(d.engine, cfg, now_ms=now + 29 * DAY_MS)
    assert nothing.tasks_deleted == 0
    run = await housekeeping_once(d.engine, cfg, now_ms=now + 31 * DAY_MS)
    assert run.tasks_deleted == 2 and run.export_files_deleted == 2
    assert not any(p.exists() for p in exports)
    assert await d.engine.store.count_findings(done[0].task_id) == 0
    assert await d.engine.store.get_task(done[0].task_id) is None
    assert (await d.service.get_task(queued.task_id)).status == "queued"
    assert foreign in {s.id for s in sim.stats().scans}
