"""The schedules' tables: schedules created through the API, and every schedule's run history
(a slot fired with its task, skipped and why, or run by hand).

A slot's run is recorded once: ``(schedule, kind, slot_ms)`` is unique and a second record
of the same slot is dropped (``ON CONFLICT DO NOTHING``), so two daemons, or a restart that
repeats a firing, never record a slot twice. On PostgreSQL the firing itself runs under an
advisory lock (:meth:`ScheduleStore.firing_lock`): one daemon fires at a time, and the next
sees the first one's task (by its idempotency key) before it would create its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from nessus_pool.errors import StorageError
from nessus_pool.store.base import BaseStore, TaskStore
from nessus_pool.store.schema import UNFINISHED_SQL
from nessus_pool.store.writer import Op

#: ``pg_advisory_lock`` key of the schedule firing round ("np-sched" as an integer)
FIRING_LOCK_KEY = 0x6E702D7363686564
#: runs kept per schedule (older ones are deleted as new ones are recorded)
KEEP_RUNS = 1000

Q_SCHEDULE_UPSERT = (
    "INSERT INTO schedules (name, created_at_ms, updated_at_ms, data) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET updated_at_ms = excluded.updated_at_ms,"
    " data = excluded.data"
)
Q_SCHEDULE_DELETE = "DELETE FROM schedules WHERE name = ?"
Q_SCHEDULE_RUNS_DELETE = "DELETE FROM schedule_runs WHERE schedule = ?"
Q_SCHEDULES = "SELECT name, created_at_ms, updated_at_ms, data FROM schedules ORDER BY name"
Q_SCHEDULE_GET = "SELECT name, created_at_ms, updated_at_ms, data FROM schedules WHERE name = ?"
Q_RUN_INSERT = (
    "INSERT INTO schedule_runs (schedule, slot_ms, kind, outcome, reason, task_id, at_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (schedule, kind, slot_ms) DO NOTHING"
)
Q_RUN_TRIM = (
    "DELETE FROM schedule_runs WHERE schedule = ? AND id < (SELECT MIN(id) FROM"
    " (SELECT id FROM schedule_runs WHERE schedule = ? ORDER BY id DESC LIMIT ?) AS keep)"
)
Q_RUNS_RECENT = (
    "SELECT slot_ms, kind, outcome, reason, task_id, at_ms FROM schedule_runs"
    " WHERE schedule = ? ORDER BY id DESC LIMIT ?"
)
Q_RUN_OF_SLOT = (
    "SELECT outcome, task_id FROM schedule_runs WHERE schedule = ? AND kind = ? AND slot_ms = ?"
)
#: the fired runs whose task is still queued or in flight (oldest first)
Q_RUNS_IN_FLIGHT = (
    "SELECT r.schedule, t.task_id, t.status FROM schedule_runs r JOIN tasks t"
    f" ON t.task_id = r.task_id WHERE r.outcome = 'fired' AND t.status IN ({UNFINISHED_SQL})"
)
#: the last slot each schedule reached (fired or skipped; runs by hand are not slots)
Q_LAST_SLOTS = (
    "SELECT schedule, MAX(slot_ms) FROM schedule_runs WHERE kind <> 'manual' GROUP BY schedule"
)


class StoredSchedule(msgspec.Struct, kw_only=True):
    name: str
    created_at_ms: int
    updated_at_ms: int
    #: the ScheduleSpec as JSON (decoded by the service, which owns its type)
    data: bytes


class ScheduleRun(msgspec.Struct, kw_only=True):
    """One entry of a schedule's history. ``kind``: ``slot`` (its time came), ``catch_up``
    (a slot missed while the daemon was down, run at start-up) or ``manual`` (run-now).
    ``outcome``: ``fired`` (``task_id`` is its task), ``skipped`` or ``failed`` (``reason``
    says why)."""

    slot_ms: int
    kind: str
    outcome: str
    reason: str | None = None
    task_id: str | None = None
    at_ms: int


class ScheduleStore:
    """The schedule queries over a task store (the same database and group commit)."""

    def __init__(self, store: TaskStore) -> None:
        assert isinstance(store, BaseStore), "schedules need a BaseStore backend"
        self._store = store
        self.keep_runs = KEEP_RUNS

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return await self._store._fetch(sql, params)

    async def all(self) -> list[StoredSchedule]:
        return [_schedule(r) for r in await self._rows(Q_SCHEDULES)]

    async def get(self, name: str) -> StoredSchedule | None:
        rows = await self._rows(Q_SCHEDULE_GET, (name,))
        return _schedule(rows[0]) if rows else None

    async def save(self, name: str, data: bytes, now_ms: int) -> None:
        await self._store.write([(Q_SCHEDULE_UPSERT, (name, now_ms, now_ms, data))])

    async def delete(self, name: str) -> None:
        await self._store.write([(Q_SCHEDULE_DELETE, (name,)), (Q_SCHEDULE_RUNS_DELETE, (name,))])

    async def record(self, schedule: str, run: ScheduleRun) -> None:
        """Record a run (once per slot and kind) and drop runs beyond the newest
        ``keep_runs`` of the schedule."""
        ops: list[Op] = [
            (
                Q_RUN_INSERT,
                (
                    schedule,
                    run.slot_ms,
                    run.kind,
                    run.outcome,
                    run.reason,
                    run.task_id,
                    run.at_ms,
                ),
            ),
            (Q_RUN_TRIM, (schedule, schedule, self.keep_runs)),
        ]
        await self._store.write(ops)

    async def runs(self, schedule: str, limit: int = 20) -> list[ScheduleRun]:
        rows = await self._rows(Q_RUNS_RECENT, (schedule, limit))
        return [
            ScheduleRun(
                slot_ms=int(r[0]),
                kind=r[1],
                outcome=r[2],
                reason=r[3],
                task_id=r[4],
                at_ms=int(r[5]),
            )
            for r in rows
        ]

    async def in_flight(self, schedule: str | None = None) -> dict[str, tuple[str, str]]:
        """Schedule -> ``(task_id, status)`` of its latest run (a slot's or one by hand)
        still queued or in flight; of one schedule, or of all (from the rows, for several
        daemons: another's queue and runs are not in this one's memory)."""
        if schedule is None:
            rows = await self._rows(Q_RUNS_IN_FLIGHT + " ORDER BY r.id")
        else:
            rows = await self._rows(
                Q_RUNS_IN_FLIGHT + " AND r.schedule = ? ORDER BY r.id", (schedule,)
            )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def run_of_slot(self, schedule: str, kind: str, slot_ms: int) -> tuple[str, str | None]:
        """``(outcome, task_id)`` of a recorded slot, or ``("", None)``."""
        rows = await self._rows(Q_RUN_OF_SLOT, (schedule, kind, slot_ms))
        return (rows[0][0], rows[0][1]) if rows else ("", None)

    async def last_slots(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in await self._rows(Q_LAST_SLOTS)}

    @contextlib.asynccontextmanager
    async def firing_lock(self) -> AsyncIterator[None]:
        """Held while one round of slots fires. PostgreSQL: a session advisory lock, so
        daemons sharing the database fire one at a time. SQLite: one daemon per file
        already (the storage lock), nothing to take."""
        session_lock = getattr(self._store, "session_lock", None)
        if session_lock is None:
            yield
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(session_lock(FIRING_LOCK_KEY, wait=True))
            except (OSError, StorageError, TimeoutError) as exc:
                raise StorageError(f"cannot take the schedule firing lock: {exc}") from exc
            except Exception as exc:  # asyncpg's errors (an optional dependency)
                raise StorageError(
                    f"cannot take the schedule firing lock: {type(exc).__name__}: {exc}"
                ) from exc
            yield


def _schedule(r: Any) -> StoredSchedule:
    return StoredSchedule(
        name=r[0], created_at_ms=int(r[1]), updated_at_ms=int(r[2]), data=bytes(r[3])
    )
