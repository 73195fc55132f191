"""Event-driven dispatch: a pool's queued tasks onto its free scanners. Woken by events (new
task, freed slot, scanner back, reload), never by a sleep loop."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from nessus_pool.engine.runner import remote_scan_name
from nessus_pool.engine.scanner import ScannerHandle
from nessus_pool.models import TaskStatus
from nessus_pool.queues import select_scanner
from nessus_pool.targets import total_addresses

if TYPE_CHECKING:
    from nessus_pool.engine.core import Engine
    from nessus_pool.engine.pool import PoolState

log = logging.getLogger("nessus_pool.engine")

#: queued tasks looked at per placement (a task pinned to a busy scanner is skipped over)
LOOKAHEAD = 256


async def dispatch_loop(engine: Engine, pool: PoolState) -> None:
    while True:
        await pool.wake.wait()
        pool.wake.clear()
        dispatch(engine, pool)


def dispatch(engine: Engine, pool: PoolState) -> None:
    """Place queued tasks on free scanners. Synchronous: no await between choosing a
    scanner and reserving its slot, so the cap cannot be raced."""
    if not pool.queue:
        return
    # once per pass (500 scanners: this scan was the dispatcher's main cost when it ran
    # again after every placement); a scanner leaves the list when it fills up
    now_ms = engine.clock.now_ms()
    available = [s for s in pool.scanners.values() if s.available() and not s.in_window(now_ms)]
    while pool.queue and available:
        placed = False
        for i, task_id in enumerate(pool.queue):
            if i >= LOOKAHEAD:
                break
            t = engine.tasks.get(task_id)
            if t is None or t.status is not TaskStatus.QUEUED:
                # a bug (the queue and the task table disagree): drop it, keep dispatching
                log.error(
                    "stale queue entry dropped",
                    extra={"event": "queue_entry_stale", "task_id": task_id, "pool": pool.name},
                )
                pool.queue.remove(task_id)
                placed = True
                break
            sc = _least_loaded(available, t.requested_scanner, t.policy)
            if sc is None:
                continue
            pool.queue.remove(task_id)
            attempt = t.attempt + 1
            written = engine.change(
                t,
                TaskStatus.DISPATCHING,
                "dispatching",
                ev_detail=f"scanner={sc.scanner_id}",
                scanner_id=sc.scanner_id,
                attempt=attempt,
                remote_scan_name=remote_scan_name(t.task_id, attempt),
                dispatched_at_ms=engine.clock.now_ms(),
            )
            written.add_done_callback(functools.partial(engine.committed, task_id=t.task_id))
            assert t.dispatched_at_ms is not None
            sc.slots.reserve(t.task_id, total_addresses(t.targets), t.dispatched_at_ms)
            engine.metrics.queue_wait(pool.name, (t.dispatched_at_ms - t.created_at_ms) / 1000)
            engine.start_runner(pool, t, sc, fresh=True, written=written)
            if not sc.available():
                available.remove(sc)
            placed = True
            break
        if not placed:
            return


def _least_loaded(
    available: list[ScannerHandle], requested: str | None, policy: str | None
) -> ScannerHandle | None:
    chosen = select_scanner([s.slots for s in available], requested, policy)
    return next(s for s in available if s.slots is chosen) if chosen is not None else None
