"""SQLite persistence: schema migrations, named queries, group-committed writes.

All SQL of nessus-pool lives in this package: the schema (``schema``), the statements
(``queries``), and the group-commit writer (``writer``) that owns every write. One writer
connection (WAL, ``synchronous=FULL``) commits batches so that a burst of submits costs one
fsync per batch, and each caller's ``await`` returns only after the commit that holds its
rows. A second connection serves reads, so reads never see uncommitted rows and never wait
behind a batch.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from nessus_pool.errors import StorageError
from nessus_pool.models import Task, TaskEvent
from nessus_pool.store.queries import (
    Q_ACTIVE,
    Q_BY_IDEMPOTENCY,
    Q_COUNT_FINDINGS,
    Q_DELETE_FINDINGS,
    Q_DELETE_TASK,
    Q_DLQ_COUNTS,
    Q_EVENTS,
    Q_GET_FINDINGS,
    Q_GET_RESULTS,
    Q_GET_TASK,
    Q_INSERT_EVENT,
    Q_INSERT_FINDING,
    Q_MAX_SEQ,
    Q_PROBE_WRITE,
    Q_UPSERT_RESULTS,
    Q_UPSERT_TASK,
)
from nessus_pool.store.schema import MIGRATIONS, SCHEMA_VERSION
from nessus_pool.store.writer import GroupCommitWriter, Op, commit_batch

__all__ = [
    "MIGRATIONS",
    "Q_INSERT_EVENT",
    "Q_UPSERT_TASK",
    "SCHEMA_VERSION",
    "GroupCommitWriter",
    "Op",
    "Store",
    "TaskFilter",
    "decode_task",
]

log = logging.getLogger("nessus_pool.store")

_task_enc = msgspec.msgpack.Encoder()
_task_dec = msgspec.msgpack.Decoder(Task)


def _task_row(t: Task) -> tuple[Any, ...]:
    return (
        t.task_id,
        t.seq,
        t.pool,
        t.status.value,
        t.priority,
        t.idempotency_key,
        t.created_at_ms,
        t.finished_at_ms,
        int(t.dead_letter),
        _task_enc.encode(t),
    )


def _by_seq(t: Task) -> int:
    return t.seq


def decode_task(blob: bytes) -> Task:
    return _task_dec.decode(blob)


class TaskFilter(msgspec.Struct, kw_only=True, frozen=True):
    statuses: list[str] | None = None
    pool: str | None = None
    dead_letter: bool | None = None
    created_from_ms: int | None = None
    created_to_ms: int | None = None
    #: list tasks with seq below this (newest first pagination)
    before_seq: int | None = None
    finished_before_ms: int | None = None


class Store:
    """Open with :meth:`open`, close with :meth:`close`. Writes go through :meth:`write`."""

    def __init__(self, path: Path, *, max_batch: int = 512) -> None:
        self.path = path
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        # through a lambda so that a subclass's _commit (tests hold commits) is used
        self._writer = GroupCommitWriter(lambda ops: self._commit(ops), max_batch=max_batch)

    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def rows_written(self) -> int:
        return self._writer.rows_written

    @property
    def last_commit_ok(self) -> bool:
        return self._writer.last_commit_ok

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._w = await aiosqlite.connect(self.path, isolation_level=None)
            await self._w.execute("PRAGMA journal_mode=WAL")
            await self._w.execute("PRAGMA synchronous=FULL")
            await self._w.execute("PRAGMA busy_timeout=5000")
            await self._w.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
            self._r = await aiosqlite.connect(self.path, isolation_level=None)
            await self._r.execute("PRAGMA busy_timeout=5000")
            await self._r.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            await self.close()
            raise StorageError(f"cannot open database {self.path}: {exc}") from exc
        self._writer.start()

    async def close(self) -> None:
        await self._writer.close()
        for conn in (self._r, self._w):
            if conn is not None:
                await conn.close()
        self._r = self._w = None

    async def _migrate(self) -> None:
        assert self._w is not None
        await self._w.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
        rows = list(await self._w.execute_fetchall("SELECT MAX(version) FROM schema_version"))
        current = rows[0][0] or 0
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"database schema version {current} is newer than this nessus-pool "
                f"({SCHEMA_VERSION}); upgrade nessus-pool"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[version]
            await self._w.execute("BEGIN IMMEDIATE")
            try:
                for stmt in (s.strip() for s in script.split(";")):
                    if stmt:
                        await self._w.execute(stmt)
                await self._w.execute("INSERT INTO schema_version VALUES (?)", (version,))
                await self._w.execute("COMMIT")
            except BaseException:
                await self._w.execute("ROLLBACK")
                raise
            log.info("schema migrated", extra={"event": "store_migrated", "version": version})

    # --- writing -----------------------------------------------------------------------

    def enqueue(self, ops: list[Op], *, bulk: bool = False) -> asyncio.Future[None]:
        """Queue ``ops`` now (commits keep the order of the calls) and return the future of
        the commit that holds them; see :class:`GroupCommitWriter`."""
        return self._writer.enqueue(ops, bulk=bulk)

    async def write(self, ops: list[Op], *, bulk: bool = False) -> None:
        """Queue ``ops`` and return once they are committed (group commit). ``bulk`` writes
        go one per commit, after the small ones waiting at that moment."""
        # No shield: a cancelled caller cancels only its own future; its ops stay queued and
        # are committed with the batch (the writer skips futures already done). A shield
        # cost three extra callbacks per write.
        await self.enqueue(ops, bulk=bulk)

    async def _commit(self, ops: list[Op]) -> None:
        assert self._w is not None
        # The whole batch runs as one function on the database thread: one thread hop per
        # commit instead of one per statement. Under load every hop waits a full turn of a
        # busy event loop, which made 4+ hops per commit the submit bottleneck.
        # (aiosqlite's ``_execute`` is how its own methods run on that thread.)
        await self._w._execute(commit_batch, self._w._conn, ops)  # type: ignore[no-untyped-call]

    # --- named writes ------------------------------------------------------------------

    @staticmethod
    def op_save_task(task: Task) -> Op:
        return (Q_UPSERT_TASK, _task_row(task))

    @staticmethod
    def op_event(ev: TaskEvent) -> Op:
        return (Q_INSERT_EVENT, (ev.task_id, ev.at_ms, ev.status, ev.reason, ev.detail))

    async def save_task(self, task: Task, event: TaskEvent | None = None) -> None:
        ops = [self.op_save_task(task)]
        if event is not None:
            ops.append(self.op_event(event))
        await self.write(ops)

    async def save_results(self, task_id: str, data: bytes) -> None:
        await self.write([(Q_UPSERT_RESULTS, (task_id, data))])

    async def replace_findings(
        self, task_id: str, rows: Iterable[tuple[int, int, int, str, bytes]]
    ) -> None:
        """Store findings ``(seq, severity, plugin_id, host, data)`` for a task, replacing any."""
        ops: list[Op] = [(Q_DELETE_FINDINGS, (task_id,))]
        ops += [(Q_INSERT_FINDING, (task_id, *row)) for row in rows]
        await self.write(ops, bulk=True)

    async def add_findings(
        self, task_id: str, rows: Iterable[tuple[int, int, int, str, bytes]]
    ) -> None:
        await self.write([(Q_INSERT_FINDING, (task_id, *row)) for row in rows], bulk=True)

    async def delete_tasks(self, task_ids: Iterable[str]) -> None:
        ops: list[Op] = [(q, (tid,)) for tid in task_ids for q in Q_DELETE_TASK]
        if ops:
            await self.write(ops)

    # --- reads -------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._r is None:
            raise StorageError("store is closed")
        try:
            return list(await self._r.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc

    async def get_task(self, task_id: str) -> Task | None:
        rows = await self._fetch(Q_GET_TASK, (task_id,))
        return decode_task(rows[0][0]) if rows else None

    async def get_by_idempotency_key(self, key: str) -> Task | None:
        rows = await self._fetch(Q_BY_IDEMPOTENCY, (key,))
        return decode_task(rows[0][0]) if rows else None

    async def load_active(self, *, chunk_rows: int = 5000) -> list[Task]:
        """Every queued or in-flight task, in ``seq`` order. Read in chunks: the database
        thread steps the next chunk (without the GIL) while this one is decoded."""
        r = self._r
        if r is None:
            raise StorageError("store is closed")
        # aiosqlite's own (untyped) way onto its thread, as in _commit
        run: Callable[..., Awaitable[Any]] = r._execute
        out: list[Task] = []
        try:
            cur: sqlite3.Cursor = await run(r._conn.execute, Q_ACTIVE)
            try:
                nxt = asyncio.ensure_future(run(cur.fetchmany, chunk_rows))
                while rows := await nxt:
                    nxt = asyncio.ensure_future(run(cur.fetchmany, chunk_rows))
                    out.extend([_task_dec.decode(row[0]) for row in rows])
            finally:
                await run(cur.close)
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc
        out.sort(key=_by_seq)
        return out

    async def max_seq(self) -> int:
        rows = await self._fetch(Q_MAX_SEQ)
        return int(rows[0][0])

    async def events(self, task_id: str) -> list[TaskEvent]:
        return [
            TaskEvent(task_id=r[0], at_ms=r[1], status=r[2], reason=r[3], detail=r[4])
            for r in await self._fetch(Q_EVENTS, (task_id,))
        ]

    async def get_results(self, task_id: str) -> bytes | None:
        rows = await self._fetch(Q_GET_RESULTS, (task_id,))
        return bytes(rows[0][0]) if rows else None

    async def get_findings_blobs(self, task_id: str) -> list[bytes]:
        return [bytes(r[0]) for r in await self._fetch(Q_GET_FINDINGS, (task_id,))]

    async def count_findings(self, task_id: str) -> int:
        rows = await self._fetch(Q_COUNT_FINDINGS, (task_id,))
        return int(rows[0][0])

    async def list_tasks(self, flt: TaskFilter, limit: int) -> list[Task]:
        """Newest first. Filters that SQL can index are applied here; callers post-filter."""
        where: list[str] = []
        params: list[Any] = []
        if flt.statuses:
            where.append(f"status IN ({','.join('?' * len(flt.statuses))})")
            params += flt.statuses
        if flt.pool is not None:
            where.append("pool = ?")
            params.append(flt.pool)
        if flt.dead_letter is not None:
            where.append("dead_letter = ?")
            params.append(int(flt.dead_letter))
        if flt.created_from_ms is not None:
            where.append("created_at_ms >= ?")
            params.append(flt.created_from_ms)
        if flt.created_to_ms is not None:
            where.append("created_at_ms < ?")
            params.append(flt.created_to_ms)
        if flt.before_seq is not None:
            where.append("seq < ?")
            params.append(flt.before_seq)
        if flt.finished_before_ms is not None:
            where.append("finished_at_ms IS NOT NULL AND finished_at_ms < ?")
            params.append(flt.finished_before_ms)
        sql = "SELECT data FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [decode_task(r[0]) for r in await self._fetch(sql, params)]

    async def dlq_counts(self) -> dict[str, int]:
        rows = await self._fetch(Q_DLQ_COUNTS)
        return {r[0]: int(r[1]) for r in rows}

    async def writable(self) -> bool:
        """Readiness. While writes flow, the last commit's outcome answers at once (a probe
        write would queue behind a burst and make a busy daemon look unready); with nothing
        committed yet, or after a failure, a real write transaction round-trips."""
        if self.last_commit_ok and self._writer.busy:
            return True
        try:
            await self.write([(Q_PROBE_WRITE, ())])
        except StorageError:
            return False
        return True
