"""The SQLite backend: one file in WAL mode, group-committed writes, a separate reader.

One writer connection (WAL, ``synchronous=FULL``) commits batches so that a burst of submits
costs one fsync per batch, and each caller's ``await`` returns only after the commit that
holds its rows. A second connection serves reads, so reads never see uncommitted rows and
never wait behind a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from nessus_pool.errors import StorageError
from nessus_pool.models import Task
from nessus_pool.store.base import BaseStore, decode_task
from nessus_pool.store.queries import Q_ACTIVE
from nessus_pool.store.schema import MIGRATIONS, SCHEMA_VERSION
from nessus_pool.store.writer import Op, commit_batch

log = logging.getLogger("nessus_pool.store")


def _by_seq(t: Task) -> int:
    return t.seq


class Store(BaseStore):
    """The SQLite backend: one WAL file, a writer connection and a reader connection."""

    def __init__(self, path: Path, *, max_batch: int = 512) -> None:
        super().__init__(max_batch=max_batch)
        self._writer.depth = 2  # one connection thread: commits run in the order handed over
        self.path = path
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None

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
        except BaseException:
            await self.close()
            raise
        self._writer.start()
        await self.split_old_findings()

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
        for version in sorted(v for v in MIGRATIONS if v > current):
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

    async def _commit(self, ops: list[Op]) -> None:
        assert self._w is not None
        # The whole batch runs as one function on the database thread: one thread hop per
        # commit instead of one per statement. Under load every hop waits a full turn of a
        # busy event loop, which made 4+ hops per commit the submit bottleneck.
        # (aiosqlite's ``_execute`` is how its own methods run on that thread.) Once it is
        # committed, the thread tells the writer directly: its callers hear of it in the
        # next loop turn, not four turns later when this coroutine has returned.
        loop = asyncio.get_running_loop()
        committed = self._writer.committed

        def commit(conn: sqlite3.Connection) -> None:
            commit_batch(conn, ops)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(committed, ops)

        await self._w._execute(commit, self._w._conn)  # type: ignore[no-untyped-call]

    # --- reads -------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._r is None:
            raise StorageError("store is closed")
        try:
            return list(await self._r.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc

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
                    out.extend([decode_task(row[0]) for row in rows])
            finally:
                await run(cur.close)
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc
        out.sort(key=_by_seq)
        return out
