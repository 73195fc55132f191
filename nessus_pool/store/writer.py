"""The group-commit writer: callers queue rows and wait for the commit that holds them.

A burst of writes costs one transaction (one fsync) per batch instead of one per caller. The
order of :meth:`GroupCommitWriter.enqueue` calls is the order of commits. A caller that is
cancelled cancels only its own wait: its rows stay queued and are committed with their batch.
A batch that fails fails every caller in it, and the next batch is tried on its own, except
when the backend says the server is unreachable (``unavailable``): then the same batch is
committed again on the reconnect backoff of :class:`~nessus_pool.store.outage.Outage`, its
callers still waiting, until it goes through or the writer is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nessus_pool.clock import sleep_or_event
from nessus_pool.errors import StorageError
from nessus_pool.store.outage import Outage
from nessus_pool.store.queries import (
    Q_INSERT_EVENT,
    Q_INSERT_FINDING,
    Q_INSERT_HOST,
    Q_INSERT_TEXT,
    Q_UPSERT_TASK,
)

Op = tuple[str, Sequence[Any]]


class _InFlight:
    """A batch handed to the backend."""

    __slots__ = ("bulk", "callers", "committed", "done", "ops")

    def __init__(
        self,
        callers: list[tuple[list[Op], asyncio.Future[None]]],
        ops: list[Op],
        done: asyncio.Future[None],
        bulk: bool,
    ) -> None:
        self.callers = callers
        #: the ops handed to ``commit`` (the backend names the batch by this very list)
        self.ops = ops
        #: the ``commit`` call's task
        self.done = done
        #: it holds a bulk write
        self.bulk = bulk
        #: the backend said it is committed (:meth:`GroupCommitWriter.committed`) before
        #: its ``commit`` call returned
        self.committed = False

    @property
    def settled(self) -> bool:
        return self.committed or self.done.done()


_COMMUTING = frozenset({Q_UPSERT_TASK, Q_INSERT_EVENT})
_MULTI_ROW = frozenset(
    {Q_UPSERT_TASK, Q_INSERT_EVENT, Q_INSERT_FINDING, Q_INSERT_HOST, Q_INSERT_TEXT}
)
_CHUNK_ROWS = 200
_VALUES = re.compile(r"VALUES \((\?(?:, \?)*)\)")


@functools.lru_cache(maxsize=1024)
def _multi_row_sql(sql: str, rows: int) -> str:
    m = _VALUES.search(sql)
    assert m is not None, sql
    group = f"({m.group(1)})"
    return sql[: m.start()] + "VALUES " + ", ".join([group] * rows) + sql[m.end() :]


def group_ops(ops: list[Op]) -> list[tuple[str, list[Sequence[Any]]]]:
    """The statements of a batch, in commit order, with consecutive statements of the same
    SQL merged (one ``executemany`` each)."""
    groups: list[tuple[str, list[Sequence[Any]]]] = []
    if all(sql in _COMMUTING for sql, _ in ops):
        # task rows and event rows never depend on each other: one executemany each, order
        # kept within each (the common case: a burst of submits or transitions)
        by_sql: dict[str, list[Sequence[Any]]] = {}
        for sql, params in ops:
            by_sql.setdefault(sql, []).append(params)
        groups = list(by_sql.items())
    else:
        for sql, params in ops:
            if groups and groups[-1][0] == sql:
                groups[-1][1].append(params)
            else:
                groups.append((sql, [params]))
    return groups


def commit_batch(conn: sqlite3.Connection, ops: list[Op]) -> None:
    """Runs on the database thread: one ``BEGIN IMMEDIATE`` ... ``COMMIT``; consecutive
    statements with the same SQL go through one ``executemany``."""
    groups = group_ops(ops)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in groups:
            if len(rows) == 1:
                conn.execute(sql, rows[0])
            elif sql in _MULTI_ROW:
                # one multi-row INSERT per chunk: executemany steps (and hands the GIL back
                # and forth with a busy event loop) once per row
                for i in range(0, len(rows), _CHUNK_ROWS):
                    chunk = rows[i : i + _CHUNK_ROWS]
                    conn.execute(_multi_row_sql(sql, len(chunk)), [v for row in chunk for v in row])
            else:
                conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class GroupCommitWriter:
    """Owns the write queue and the one task that commits it through ``commit`` (a batch of
    ops -> one transaction). :meth:`start` inside the running loop, :meth:`close` to drain."""

    def __init__(
        self,
        commit: Callable[[list[Op]], Awaitable[None]],
        *,
        max_batch: int = 512,
        name: str = "store:writer",
        depth: int = 1,
        unavailable: Callable[[BaseException], bool] | None = None,
        outage: Outage | None = None,
    ) -> None:
        self._commit = commit
        #: the backend's test for "the server is unreachable" (retry); None: never retry
        self._unavailable = unavailable
        self.outage = outage or Outage()
        self._stop: asyncio.Event | None = None
        self.max_batch = max_batch
        #: commits handed to ``commit`` at once. Above 1 only for a backend that runs them
        #: one after another in the order handed over (SQLite's one connection thread): the
        #: next batch then waits on that thread, not for the event loop to notice the end of
        #: the previous one (a loop turn of 1-3 ms under load, 20-30% of submit throughput)
        self.depth = depth
        self.name = name
        self._pending: list[tuple[list[Op], asyncio.Future[None]]] = []
        #: large writes (findings) wait here, so task transitions never queue behind them
        self._bulk: list[tuple[list[Op], asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: batches handed to the backend, in commit order
        self._inflight: deque[_InFlight] = deque()
        self._closing = False
        #: counters for benchmarks and metrics
        self.commits = 0
        self.rows_written = 0
        self.last_commit_ok = False

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name=self.name)

    @property
    def busy(self) -> bool:
        """Writes are queued and not yet committed."""
        return bool(self._pending or self._bulk)

    def enqueue(self, ops: list[Op], *, bulk: bool = False) -> asyncio.Future[None]:
        """Queue ``ops`` now (synchronously, so commits keep the order of the calls) and
        return the future of the commit that holds them. Cancelling the future does not
        withdraw the ops: they are committed with their batch. ``bulk`` writes go one per
        commit, after the small ones waiting at that moment."""
        if self._wake is None or self._closing:
            raise StorageError("store is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._bulk if bulk else self._pending).append((ops, fut))
        self._wake.set()
        return fut

    async def close(self) -> None:
        """Commit everything queued, then stop."""
        self._closing = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            if self._stop is not None:
                self._stop.set()  # a batch waiting to reconnect fails now
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def committed(self, ops: list[Op]) -> None:
        """Called on the event loop by a backend the moment the batch ``ops`` (the very list
        handed to ``commit``) is committed, before its ``commit`` call returns: its callers
        hear of it in this loop turn. (SQLite's database thread schedules this; through the
        ``commit`` call's own end it took four more turns: its future, its task, the wake-up
        and this loop's task, 1-3 ms each when the loop is busy, tens of ms in a burst.)"""
        for b in self._inflight:
            if b.ops is ops:
                b.committed = True
                break
        self._settle_ready()

    def _settle_ready(self) -> None:
        """Settle the batches at the head that are done, in commit order; wake the loop to
        hand over the next."""
        inflight = self._inflight
        settled = False
        while inflight and inflight[0].settled:
            self._settle(inflight.popleft())
            settled = True
        if settled and self._wake is not None:
            self._wake.set()

    def _start(self) -> None:
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        bulk = False
        if len(batch) < self.max_batch and self._bulk and self._bulk_ok():
            batch.append(self._bulk.pop(0))
            bulk = True
        ops = [op for ops, _ in batch for op in ops]
        done = asyncio.ensure_future(self._commit_retrying(ops))
        self._inflight.append(_InFlight(batch, ops, done, bulk))
        done.add_done_callback(self._on_done)

    def _on_done(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved here: a batch settled early has no other reader
        self._settle_ready()
        if self._wake is not None:
            self._wake.set()

    def _bulk_ok(self) -> bool:
        """At most one bulk write in flight: a transition handed over behind the commits in
        flight waits behind one bulk write at most, as with one commit at a time."""
        return not any(b.bulk for b in self._inflight)

    def _settle(self, b: _InFlight) -> None:
        batch = b.callers
        rows = len(b.ops)
        done = b.done
        if b.committed:
            exc: BaseException | None = None
        elif done.cancelled():
            exc = StorageError("store is closed")
        else:
            exc = done.exception()
        if exc is not None:
            err = (
                exc
                if isinstance(exc, StorageError)
                else StorageError(f"database write failed: {exc}")
            )
            self.last_commit_ok = False
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
        else:
            self.outage.ok()  # logs the reconnect, when there was an outage
            self.commits += 1
            self.rows_written += rows
            self.last_commit_ok = True
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _loop(self) -> None:
        assert self._wake is not None
        inflight = self._inflight
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                # callers hear of their commits in commit order, whatever finished first
                self._settle_ready()
                while len(inflight) < self.depth and (
                    self._pending or (self._bulk and self._bulk_ok())
                ):
                    self._start()
                if self._closing and not inflight and not self._pending and not self._bulk:
                    return
        finally:
            for b in inflight:
                b.done.cancel()

    async def _commit_retrying(self, ops: list[Op]) -> None:
        """Commit ``ops``; while the server is unreachable, again after each backoff delay
        (the reconnect), until it goes through or :meth:`close` is called."""
        while True:
            try:
                await self._commit(ops)
                return
            except Exception as exc:
                if self._closing or self._unavailable is None or not self._unavailable(exc):
                    raise
                delay_s = self.outage.failed(exc)  # logs the outage's start, once
            assert self._stop is not None
            if await sleep_or_event(self.outage.clock, self._stop, delay_s):
                raise self.outage.error()
