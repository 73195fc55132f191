"""The engine's operations in a cluster ([cluster], PostgreSQL): queued tasks live in the
database only, so submit, cancel and the end of orphaned tasks work on rows there; a
scanner's lease taken or lost brings its running tasks in or out of this daemon's memory.
Every status change still goes through :meth:`Engine.change_ops` (the transition table)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from nessus_pool.engine.runner import RunControl
from nessus_pool.errors import ConflictError, NessusPoolError, NotFoundError, ValidationError
from nessus_pool.models import SshCredential, Task, TaskStatus
from nessus_pool.store import Op, decode_task
from nessus_pool.store.pg import PgStore
from nessus_pool.store.queries import (
    CANCEL_CHANNEL,
    Q_BY_IDEMPOTENCY_PG,
    Q_HELD_TASKS,
    Q_LOCK_KEY,
    Q_LOCK_TASK,
    Q_NEXT_SEQ,
    Q_NOTIFY,
    Q_REQUEST_CANCEL,
    SUBMIT_CHANNEL,
)
from nessus_pool.targets import total_addresses

if TYPE_CHECKING:
    from nessus_pool.engine.core import Engine

log = logging.getLogger("nessus_pool.engine")


def _store(engine: Engine) -> PgStore:
    store = engine.store
    assert isinstance(store, PgStore)  # config validation: [cluster] needs PostgreSQL
    return store


async def submit(engine: Engine, t: Task, inline: SshCredential | None) -> Task:
    """[cluster] The task is queued in the database only; every daemon owning a
    scanner of its pool is woken (NOTIFY, committed with the row)."""
    if inline is not None:
        raise ValidationError(
            "inline SSH credentials are kept in the memory of one daemon only, and in a "
            "cluster another daemon may run the scan: use a named credential set",
            field="ssh_password",
        )
    store = _store(engine)
    member = engine.cluster
    assert member is not None
    # seq from the database: every daemon's submits in one FIFO order
    t.seq = int((await store._fetch(Q_NEXT_SEQ))[0][0])
    key = t.idempotency_key
    if key is None:
        # the common case: the group commit (a batch shares one transaction and fsync;
        # a fresh random task id cannot conflict), the NOTIFY in the same commit
        await engine.change(t, t.status, "queued", also=[(Q_NOTIFY, (SUBMIT_CHANNEL, t.pool))])
        member.submitted(t.pool)
        engine._notify(t.task_id)
        engine.metrics.submitted(t.pool)
        return t

    async def insert(conn: Any) -> None:
        if key is not None:
            # two daemons given the same key at once: one inserts, the other is told
            await conn.execute(Q_LOCK_KEY, key)
            other = await conn.fetchval(Q_BY_IDEMPOTENCY_PG, key)
            if other is not None:
                raise ConflictError(
                    f"a scan with idempotency_key {key!r} was just submitted through "
                    f"another daemon (task {other}); submit again to get it",
                    field="idempotency_key",
                )
        ops = engine.change_ops(t, t.status, "queued")
        await store.apply(conn, [*ops, (Q_NOTIFY, (SUBMIT_CHANNEL, t.pool))])

    # a transaction of its own, not the group commit: a key taken meanwhile must fail
    # this submit alone, not the batch it would share
    await store.transact(insert)
    member.submitted(t.pool)
    engine._notify(t.task_id)
    engine.metrics.submitted(t.pool)
    return t


async def cancel(engine: Engine, task_id: str) -> Task:
    """[cluster] A task this daemon does not run: a queued one ends here, under the
    row's lock (a claim in flight finishes first); a running one gets the cancel flag
    and a NOTIFY that reaches the daemon that owns its scanner."""
    store = _store(engine)
    now_ms = engine.clock.now_ms()

    async def work(conn: Any) -> tuple[Task, bool]:
        row = await conn.fetchrow(Q_LOCK_TASK, task_id)
        if row is None:
            raise NotFoundError(f"task {task_id!r} not found", field="task_id")
        t = decode_task(row[0])
        if t.status.is_terminal:
            raise ConflictError(f"task {task_id} already ended ({t.status.value})")
        if t.status is TaskStatus.QUEUED:
            ops = engine.change_ops(
                t,
                TaskStatus.CANCELED,
                TaskStatus.CANCELED.value,
                ev_reason="canceled_by_user",
                reason="canceled_by_user",
                finished_at_ms=now_ms,
            )
            await store.apply(conn, ops)
            return t, True
        await conn.execute(Q_REQUEST_CANCEL, task_id)
        await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, task_id)
        return t, False

    done: tuple[Task, bool] = await store.transact(work)
    t, ended = done
    if ended:
        engine.metrics.finished(t.pool, t.status.value, None)
    engine._notify(task_id)
    return t


async def end_queued(engine: Engine, pool: str, reason: str, error: str) -> int:
    """[cluster] Fail every queued task of ``pool`` (claimed like a dispatch, so never
    one another daemon is taking); returns how many."""
    store = _store(engine)
    ended: list[Task] = []

    def fail(tasks: list[Task]) -> list[Op]:
        ops: list[Op] = []
        for t in tasks:
            ops += engine.change_ops(
                t,
                TaskStatus.FAILED,
                TaskStatus.FAILED.value,
                ev_reason=reason,
                ev_detail=error,
                reason=reason,
                error=error,
                finished_at_ms=engine.clock.now_ms(),
            )
            ended.append(t)
        return ops

    while True:
        before = len(ended)
        await store.claim(pool, 500, fail)
        if len(ended) == before:
            break
    for t in ended:
        engine.metrics.finished(t.pool, t.status.value, None)
        engine._notify(t.task_id)
    if ended:
        log.warning(
            "queued tasks of a removed pool failed",
            extra={"event": "cluster_pool_orphans_failed", "pool": pool, "tasks": len(ended)},
        )
    return len(ended)


def cancel_local(engine: Engine, task_id: str) -> None:
    """[cluster] A cancel asked through another daemon, for a task we run."""

    async def cancel() -> None:
        with contextlib.suppress(NessusPoolError):
            await engine.cancel(task_id)

    engine.spawn(cancel(), f"cancel:{task_id}", essential=False)


async def adopt_scanner(engine: Engine, scanner_id: str, *, reconcile: bool = False) -> int:
    """[cluster] We took this scanner's lease: re-attach the scans running on it (by
    id or deterministic name, never a second scan), as a restart does. ``reconcile`` (the
    slow re-check of a scanner we hold): only tasks the database shows in flight there that
    this daemon does not run, claim or recently end (a final row whose commit failed).
    Returns how many were re-attached."""
    sc = engine.scanners.get(scanner_id)
    if sc is None:
        return 0
    pool = engine.pools[sc.spec.pool]
    rows = await engine.store._fetch(Q_HELD_TASKS, (scanner_id,))  # type: ignore[attr-defined]
    adopted = 0
    for blob, cancel_requested in rows:
        t = decode_task(blob)
        if t.scanner_id != scanner_id or t.task_id in engine.tasks or t.pool != pool.name:
            continue
        if reconcile and (t.task_id in engine.claiming or t.task_id in engine.recently_ended):
            continue
        engine.tasks[t.task_id] = t
        sc.slots.adopt(t.task_id, total_addresses(t.targets))
        if cancel_requested:
            engine.controls.setdefault(t.task_id, RunControl()).cancel_requested = True
        engine.start_runner(pool, t, sc)
        adopted += 1
    if adopted or not reconcile:
        log.info(
            "scanner adopted" if not reconcile else "running tasks re-attached",
            extra={
                "event": "cluster_scanner_adopted" if not reconcile else "cluster_reattached",
                "scanner": scanner_id,
                "tasks": adopted,
            },
        )
    pool.wake.set()
    return adopted


def drop_scanner(engine: Engine, scanner_id: str) -> None:
    """[cluster] We lost this scanner's lease: its runners stop at once and write
    nothing (the new owner re-attaches the scans; fencing refuses a late write)."""
    sc = engine.scanners.get(scanner_id)
    for task_id, t in list(engine.tasks.items()):
        if t.scanner_id != scanner_id:
            continue
        runner = engine.runner_tasks.pop(task_id, None)
        if runner is not None:
            runner.cancel(msg="scanner lease lost")
        engine.tasks.pop(task_id, None)
        engine.controls.pop(task_id, None)
        engine.ending.pop(task_id, None)
        if sc is not None:
            sc.slots.release(task_id)
