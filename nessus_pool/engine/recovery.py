"""Start-up recovery: every unfinished task from the store back into memory. Queued tasks
return to their queues; tasks that held a slot are re-adopted by a runner that looks their
scan up by id or name (never creating it twice); tasks whose pool or scanner is gone end."""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

from nessus_pool.engine.runner import exported, exported_outcome
from nessus_pool.models import Task, TaskStatus
from nessus_pool.targets import total_addresses

if TYPE_CHECKING:
    from nessus_pool.engine.core import Engine

log = logging.getLogger("nessus_pool.engine")


async def recover(engine: Engine) -> None:
    # 100,000 queued tasks are 100,000+ new tracked objects: without this the collector
    # walks the growing heap again and again while they load and are queued (most of a
    # start-up); the daemon freezes them out of its way once it is up
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        await _recover_tasks(engine)
    finally:
        if gc_was_enabled:
            gc.enable()


async def _recover_tasks(engine: Engine) -> None:
    tasks = await engine.store.load_active()
    requeued = adopted = failed = 0
    queued: dict[str, list[Task]] = {name: [] for name in engine.pools}
    queued_status = TaskStatus.QUEUED
    for t in tasks:
        pool = engine.pools.get(t.pool)
        if pool is None:
            await _finish_unstarted(
                engine, t, "pool_removed", f"pool {t.pool!r} is no longer configured"
            )
            failed += 1
            continue
        if t.status is queued_status:
            engine.tasks[t.task_id] = t
            queued[t.pool].append(t)
            continue
        sc = engine.scanners.get(t.scanner_id or "")
        if sc is None or sc.spec.pool != t.pool:
            if exported(t, engine.export_path(t)):
                # its results were stored before the restart: it ends as it would have
                timed_out = t.reason == "max_scan_duration"
                outcome = exported_outcome(
                    t,
                    TaskStatus.TIMED_OUT if timed_out else TaskStatus.COMPLETED,
                    "max_scan_duration" if timed_out else "completed",
                )
                engine.tasks[t.task_id] = t
                await engine.finish(t, outcome.status, outcome.reason, outcome.error)
            elif t.remote_scan_id is None:
                await engine.requeue(t, "scanner_removed", use_attempt=False)
                requeued += 1
            else:
                await _finish_unstarted(
                    engine,
                    t,
                    "scanner_removed",
                    f"scanner {t.scanner_id!r} was removed while its scan was running",
                    dead_letter=True,
                )
                failed += 1
            continue
        engine.tasks[t.task_id] = t
        sc.slots.adopt(t.task_id, total_addresses(t.targets))
        engine.start_runner(pool, t, sc)
        adopted += 1
    for name, waiting in queued.items():
        engine.pools[name].queue.extend(waiting)
    log.info(
        "recovered",
        extra={
            "event": "engine_recovered",
            "queued": sum(len(p.queue) for p in engine.pools.values()),
            "adopted": adopted,
            "requeued": requeued,
            "failed": failed,
        },
    )


async def _finish_unstarted(
    engine: Engine, t: Task, reason: str, error: str, *, dead_letter: bool = False
) -> None:
    engine.tasks[t.task_id] = t
    await engine.finish(t, TaskStatus.FAILED, reason, error, dead_letter=dead_letter)
