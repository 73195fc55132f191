"""Event-driven dispatch: a pool's queued tasks onto its free scanners. Woken by events (new
task, freed slot, scanner back, reload), never by a sleep loop."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from nessus_pool.engine.runner import remote_scan_name
from nessus_pool.engine.scanner import ScannerHandle
from nessus_pool.errors import StorageError
from nessus_pool.models import Task, TaskStatus
from nessus_pool.queues import select_scanner
from nessus_pool.store import Op
from nessus_pool.store.queries import Q_NOTIFY, SUBMIT_CHANNEL
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
        if engine.cluster is None:
            dispatch(engine, pool)
        else:
            await claim(engine, pool)


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


async def claim(engine: Engine, pool: PoolState) -> None:
    """[cluster] Claim queued tasks of this pool from the database for the free scanners
    whose leases this daemon holds: ``FOR UPDATE SKIP LOCKED`` in priority, then FIFO
    order, so daemons claiming at once never take the same task. Scanners are chosen and
    their slots reserved synchronously inside the claim's transaction; the dispatching rows
    are fenced by those leases (a lease lost meanwhile: the claim of that scanner is undone,
    its tasks stay queued)."""
    from nessus_pool.store.pg import PgStore  # PostgreSQL only (asyncpg)

    member = engine.cluster
    store = engine.store
    assert member is not None and isinstance(store, PgStore)
    while not engine.stopping:
        now_ms = engine.clock.now_ms()
        available = [
            s
            for s in pool.scanners.values()
            if member.holds(s.scanner_id) and s.available() and not s.in_window(now_ms)
        ]
        if not available:
            return
        limit = min(LOOKAHEAD, max(16, 4 * sum(s.slots.free for s in available)))
        placed: list[tuple[Task, ScannerHandle]] = []

        try:
            refused = await store.claim(
                pool.name, limit, functools.partial(_place, engine, available, placed)
            )
        except StorageError as exc:
            for t, sc in placed:
                sc.slots.release(t.task_id)
                engine.claiming.discard(t.task_id)
            log.warning(
                "claim failed",
                extra={"event": "cluster_claim_failed", "pool": pool.name, "error": str(exc)},
            )
            return  # the heartbeat's re-check wakes us again
        for t, sc in placed:
            engine.claiming.discard(t.task_id)
            if sc.scanner_id in refused or not member.holds(sc.scanner_id):
                sc.slots.release(t.task_id)
                continue
            engine.tasks[t.task_id] = t
            assert t.dispatched_at_ms is not None
            engine.metrics.queue_wait(pool.name, (t.dispatched_at_ms - t.created_at_ms) / 1000)
            engine.start_runner(pool, t, sc, fresh=True)
            engine.committed_now(t.task_id)
        if not placed:
            return


def _place(
    engine: Engine,
    available: list[ScannerHandle],
    placed: list[tuple[Task, ScannerHandle]],
    tasks: list[Task],
) -> list[Op]:
    """The claim's placement (synchronous, inside its transaction): each claimed task onto
    the least loaded free scanner that can take it, its slot reserved; the ops to commit."""
    member = engine.cluster
    assert member is not None
    # the claim's query awaited: a scanner handed over, being taken, or filled meanwhile
    # (re-attached scans) is no longer one to fill
    now_ms = engine.clock.now_ms()
    available[:] = [
        s
        for s in available
        if member.holds(s.scanner_id) and s.available() and not s.in_window(now_ms)
    ]
    ops: list[Op] = []
    for t in tasks:
        if not available:
            break
        sc = _least_loaded(available, t.requested_scanner, t.policy)
        if sc is None:
            continue
        attempt = t.attempt + 1
        ops += engine.change_ops(
            t,
            TaskStatus.DISPATCHING,
            "dispatching",
            ev_detail=f"scanner={sc.scanner_id} daemon={member.daemon_id}",
            scanner_id=sc.scanner_id,
            attempt=attempt,
            remote_scan_name=remote_scan_name(t.task_id, attempt),
            dispatched_at_ms=engine.clock.now_ms(),
        )
        assert t.dispatched_at_ms is not None
        sc.slots.reserve(t.task_id, total_addresses(t.targets), t.dispatched_at_ms)
        engine.claiming.add(t.task_id)
        placed.append((t, sc))
        if not sc.available():
            available.remove(sc)
    if ops and len(placed) < len(tasks):
        # rows this claim locked and left: another daemon's claim skipped them meanwhile
        # (SKIP LOCKED) and may have found nothing; wake the pool's owners once committed.
        # Only after progress (something placed), so this never turns into a loop.
        ops.append((Q_NOTIFY, (SUBMIT_CHANNEL, tasks[0].pool)))
    return ops
