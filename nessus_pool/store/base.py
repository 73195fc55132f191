"""What every storage backend shares: the interface the engine and the service use
(:class:`TaskStore`), the row encoding, the named writes and reads, and the group commit.

A backend supplies three things: ``open``/``close``, ``_commit`` (one batch of ops -> one
transaction) and ``_fetch`` (one named read). Ops are ``(sql, params)`` where ``sql`` is one
of the named statements of :mod:`nessus_pool.store.queries` (SQLite text, ``?`` markers); a
backend with another dialect translates each name once (see ``store.pg``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import msgspec

from nessus_pool.errors import StorageError, StorageUnavailableError
from nessus_pool.models import Task, TaskEvent
from nessus_pool.store.outage import Outage
from nessus_pool.store.queries import (
    Q_BY_IDEMPOTENCY,
    Q_COUNT_FINDINGS,
    Q_DELETE_FINDINGS,
    Q_DELETE_HOSTS,
    Q_DELETE_TASK,
    Q_DELETE_TEXTS,
    Q_DLQ_COUNTS,
    Q_EVENTS,
    Q_GET_FINDING_PARTS,
    Q_GET_RESULTS,
    Q_GET_TASK,
    Q_GET_TEXTS,
    Q_HOSTS_NAMED,
    Q_HOSTS_ONLY_IN,
    Q_INSERT_EVENT,
    Q_INSERT_FINDING,
    Q_INSERT_HOST,
    Q_INSERT_TEXT,
    Q_MAX_SEQ,
    Q_PROBE_WRITE,
    Q_SET_SPLIT,
    Q_UNSPLIT_ROWS,
    Q_UNSPLIT_TASK,
    Q_UPSERT_RESULTS,
    Q_UPSERT_TASK,
)
from nessus_pool.store.writer import GroupCommitWriter, Op

log = logging.getLogger("nessus_pool.store")
_task_enc = msgspec.msgpack.Encoder()
_task_dec = msgspec.msgpack.Decoder(Task)

#: (seq, severity, plugin_id, host, data: the whole finding, msgpack)
FindingRow = tuple[int, int, int, str, bytes]
#: (seq, severity, plugin_id, host, text_id, data: the finding's own fields, a msgpack map)
SplitFindingRow = tuple[int, int, int, str, int, bytes]
#: the fields of a finding that repeat across the findings of one plugin: stored once per
#: task and distinct value set in finding_texts (a msgpack map), joined back on read
TEXT_FIELDS = (
    "plugin_name",
    "plugin_family",
    "risk_factor",
    "cvss3_base_score",
    "cvss_base_score",
    "cves",
    "cwes",
    "exploit_available",
    "synopsis",
    "description",
    "solution",
    "see_also",
)
#: findings rows split per commit when an older database is upgraded at open
_SPLIT_CHUNK = 2000
#: findings rows per read when a task's findings are read back
_READ_CHUNK = 2000
_msgpack_enc = msgspec.msgpack.Encoder()


def _map_body(blob: bytes) -> tuple[int, memoryview]:
    """(entries, body) of a msgpack map; the body is a view, not a copy."""
    b0 = blob[0]
    if 0x80 <= b0 <= 0x8F:
        return b0 & 0x0F, memoryview(blob)[1:]
    if b0 == 0xDE:
        return int.from_bytes(blob[1:3], "big"), memoryview(blob)[3:]
    if b0 == 0xDF:
        return int.from_bytes(blob[1:5], "big"), memoryview(blob)[5:]
    raise StorageError("a stored finding is not a msgpack map")


def join_maps(a: bytes, b: bytes) -> bytes:
    """Two msgpack maps with distinct keys as one map (a finding's own fields and its
    texts -> the finding), without decoding either, in one allocation."""
    n, body_a = _map_body(a)
    m, body_b = _map_body(b)
    total = n + m
    head = bytes([0x80 | total]) if total < 16 else b"\xde" + total.to_bytes(2, "big")
    return b"".join((head, body_a, body_b))


def split_finding(blob: bytes) -> tuple[bytes, bytes]:
    """A whole finding (msgpack map) -> (its own fields, its texts), both maps."""
    doc = msgspec.msgpack.decode(blob)
    if not isinstance(doc, dict):
        raise StorageError("a stored finding is not a msgpack map")
    texts = {k: doc.pop(k) for k in TEXT_FIELDS if k in doc}
    return _msgpack_enc.encode(doc), _msgpack_enc.encode(texts)


def text_id_of(texts: bytes) -> int:
    """The id of a text set: 63 bits of its digest, so that the same texts get the same id
    whoever stores them (two daemons, or a split resumed after a crash) with no counter to
    coordinate; a collision within one task's few thousand text sets is out of reach."""
    return int.from_bytes(hashlib.blake2b(texts, digest_size=8).digest(), "big") >> 1


#: text_id of a stored finding that could not be split: read whole, never tried again
UNSPLITTABLE = -1


#: (seq, name, auth_status, critical, high, medium, low, info, data: the HostResult as JSON)
HostRow = tuple[int, str, str, int, int, int, int, int, bytes]
#: severity columns of host_results, most severe first (a minimum severity keeps the first
#: ``5 - min_severity`` of them)
_HOST_SEVERITY_COLUMNS = ("critical", "high", "medium", "low", "info")
#: names per membership query (SQLite's parameter limit is far above)
_NAMES_PER_QUERY = 500


class HostFilter(msgspec.Struct, kw_only=True, frozen=True):
    """Which of a scan's hosts a page holds."""

    auth_status: str | None = None
    #: hosts with at least one finding of this severity (0..4) or above
    min_severity: int | None = None


def host_page_sql(
    task_id: str, flt: HostFilter, *, after_seq: int, offset: int, limit: int, count: bool
) -> tuple[str, list[Any]]:
    """The page (or, with ``count``, the count) query of a task's hosts in ``seq`` order."""
    where = ["task_id = ?"]
    params: list[Any] = [task_id]
    if flt.auth_status is not None:
        where.append("auth_status = ?")
        params.append(flt.auth_status)
    if flt.min_severity is not None:
        cols = _HOST_SEVERITY_COLUMNS[: 5 - max(0, min(4, flt.min_severity))]
        where.append("(" + " + ".join(cols) + ") > 0")
    if count:
        return "SELECT COUNT(*) FROM host_results WHERE " + " AND ".join(where), params
    where.append("seq > ?")
    params.append(after_seq)
    sql = "SELECT seq, data FROM host_results WHERE " + " AND ".join(where)
    sql += " ORDER BY seq LIMIT ? OFFSET ?"
    params += [limit, offset]
    return sql, params


def redact_url(url: str) -> str:
    """``url`` without a password, for logs and errors."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def task_row(t: Task) -> tuple[Any, ...]:
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
        t.scanner_id,
    )


def decode_task(blob: bytes) -> Task:
    return _task_dec.decode(blob)


def op_save_task(task: Task) -> Op:
    return (Q_UPSERT_TASK, task_row(task))


def op_event(ev: TaskEvent) -> Op:
    return (Q_INSERT_EVENT, (ev.task_id, ev.at_ms, ev.status, ev.reason, ev.detail))


class TaskFilter(msgspec.Struct, kw_only=True, frozen=True):
    statuses: list[str] | None = None
    pool: str | None = None
    dead_letter: bool | None = None
    created_from_ms: int | None = None
    created_to_ms: int | None = None
    #: list tasks with seq below this (newest first pagination)
    before_seq: int | None = None
    finished_before_ms: int | None = None


def list_tasks_sql(flt: TaskFilter, limit: int) -> tuple[str, list[Any]]:
    """The list query for ``flt`` with ``?`` markers, newest first."""
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
    return sql, params


class TaskStore(Protocol):
    """The storage interface of the engine and the service; SQLite (``Store``) and
    PostgreSQL (``PgStore``) implement it."""

    @property
    def commits(self) -> int: ...
    @property
    def rows_written(self) -> int: ...
    @property
    def outage(self) -> Outage: ...
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def enqueue(self, ops: list[Op], *, bulk: bool = False) -> asyncio.Future[None]: ...
    async def write(self, ops: list[Op], *, bulk: bool = False) -> None: ...
    async def save_task(self, task: Task, event: TaskEvent | None = None) -> None: ...
    async def save_results(self, task_id: str, data: bytes) -> None: ...
    async def replace_findings(self, task_id: str, rows: Iterable[FindingRow]) -> None: ...
    async def add_findings(self, task_id: str, rows: Iterable[FindingRow]) -> None: ...
    async def delete_tasks(self, task_ids: Iterable[str]) -> None: ...
    async def add_host_results(self, task_id: str, rows: Iterable[HostRow]) -> None: ...
    async def add_split_findings(
        self, task_id: str, rows: Iterable[SplitFindingRow], texts: Iterable[tuple[int, bytes]]
    ) -> None: ...
    async def clear_results(self, task_id: str) -> None: ...
    async def host_page(
        self, task_id: str, flt: HostFilter, *, after_seq: int = -1, offset: int = 0, limit: int
    ) -> list[tuple[int, bytes]]: ...
    async def count_hosts(self, task_id: str, flt: HostFilter) -> int: ...
    async def hosts_only_in(self, task_id: str, other_task_id: str, limit: int) -> list[str]: ...
    async def hosts_among(self, task_id: str, names: Iterable[str]) -> set[str]: ...
    async def get_task(self, task_id: str) -> Task | None: ...
    async def get_by_idempotency_key(self, key: str) -> Task | None: ...
    async def load_active(self, *, chunk_rows: int = 5000) -> list[Task]: ...
    async def max_seq(self) -> int: ...
    async def events(self, task_id: str) -> list[TaskEvent]: ...
    async def get_results(self, task_id: str) -> bytes | None: ...
    async def get_findings_blobs(self, task_id: str) -> list[bytes]: ...
    async def count_findings(self, task_id: str) -> int: ...
    async def list_tasks(self, flt: TaskFilter, limit: int) -> list[Task]: ...
    async def dlq_counts(self) -> dict[str, int]: ...
    async def writable(self) -> bool: ...


def _consume(fut: asyncio.Future[None]) -> None:
    """A probe's outcome is read from the outage, not from its future."""
    if not fut.cancelled():
        fut.exception()


class BaseStore:
    """Group commit, named writes and named reads over a backend's ``_commit`` and
    ``_fetch``. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        *,
        max_batch: int = 512,
        unavailable: Callable[[BaseException], bool] | None = None,
    ) -> None:
        # through a lambda so that a subclass's _commit (tests hold commits) is used;
        # ``unavailable``: the backend's test for "server unreachable" (commit again later)
        self._writer = GroupCommitWriter(
            lambda ops: self._commit(ops), max_batch=max_batch, unavailable=unavailable
        )

    op_save_task = staticmethod(op_save_task)
    op_event = staticmethod(op_event)

    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def rows_written(self) -> int:
        return self._writer.rows_written

    @property
    def last_commit_ok(self) -> bool:
        return self._writer.last_commit_ok

    @property
    def outage(self) -> Outage:
        """Whether the database is reachable, and the reconnect schedule while it is not."""
        return self._writer.outage

    def read_unreachable(self, exc: BaseException) -> StorageUnavailableError:
        """A read found the server unreachable: the outage starts (if the writer had not
        noticed it yet, a probe write retried on the backoff is its reconnect) and the
        reader is told when to come back."""
        if not self.outage.down:
            self.outage.failed(exc)  # logs the outage's start
            self.enqueue([(Q_PROBE_WRITE, ())]).add_done_callback(_consume)
        return self.outage.error()

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _commit(self, ops: list[Op]) -> None:
        raise NotImplementedError

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def load_active(self, *, chunk_rows: int = 5000) -> list[Task]:
        """Every queued or in-flight task, in ``seq`` order."""
        raise NotImplementedError

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

    async def save_task(self, task: Task, event: TaskEvent | None = None) -> None:
        ops = [op_save_task(task)]
        if event is not None:
            ops.append(op_event(event))
        await self.write(ops)

    async def save_results(self, task_id: str, data: bytes) -> None:
        await self.write([(Q_UPSERT_RESULTS, (task_id, data))])

    async def replace_findings(self, task_id: str, rows: Iterable[FindingRow]) -> None:
        """Store findings ``(seq, severity, plugin_id, host, data)`` for a task, replacing any."""
        ops: list[Op] = [(Q_DELETE_FINDINGS, (task_id,))]
        ops += [(Q_INSERT_FINDING, (task_id, *row[:4], None, row[4])) for row in rows]
        await self.write(ops, bulk=True)

    async def add_findings(self, task_id: str, rows: Iterable[FindingRow]) -> None:
        """Store whole findings (text_id NULL; split by :meth:`split_old_findings`)."""
        await self.write(
            [(Q_INSERT_FINDING, (task_id, *row[:4], None, row[4])) for row in rows], bulk=True
        )

    async def add_split_findings(
        self, task_id: str, rows: Iterable[SplitFindingRow], texts: Iterable[tuple[int, bytes]]
    ) -> None:
        """Store findings whose texts are rows of ``finding_texts`` (``texts``: the text
        sets first seen in this batch, ``(text_id, msgpack map)``), in one bulk commit."""
        ops: list[Op] = [(Q_INSERT_TEXT, (task_id, *t)) for t in texts]
        ops += [(Q_INSERT_FINDING, (task_id, *row)) for row in rows]
        await self.write(ops, bulk=True)

    async def add_host_results(self, task_id: str, rows: Iterable[HostRow]) -> None:
        """Store per-host results (one bulk commit)."""
        await self.write([(Q_INSERT_HOST, (task_id, *row)) for row in rows], bulk=True)

    async def clear_results(self, task_id: str) -> None:
        """Delete a task's findings and per-host results (before they are written again)."""
        await self.write(
            [
                (Q_DELETE_FINDINGS, (task_id,)),
                (Q_DELETE_TEXTS, (task_id,)),
                (Q_DELETE_HOSTS, (task_id,)),
            ]
        )

    async def delete_tasks(self, task_ids: Iterable[str]) -> None:
        ops: list[Op] = [(q, (tid,)) for tid in task_ids for q in Q_DELETE_TASK]
        if ops:
            await self.write(ops)

    # --- reads -------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        rows = await self._fetch(Q_GET_TASK, (task_id,))
        return decode_task(rows[0][0]) if rows else None

    async def get_by_idempotency_key(self, key: str) -> Task | None:
        rows = await self._fetch(Q_BY_IDEMPOTENCY, (key,))
        return decode_task(rows[0][0]) if rows else None

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
        """Every finding of the task, whole (msgpack), in export order: each one's own
        fields joined with its text set, stored once per task."""
        texts = {int(r[0]): bytes(r[1]) for r in await self._fetch(Q_GET_TEXTS, (task_id,))}
        out: list[bytes] = []
        after = -1
        # in chunks: the rows' own parts are garbage once joined, never all held at once
        while rows := await self._fetch(Q_GET_FINDING_PARTS, (task_id, after, _READ_CHUNK)):
            for seq, text_id, data in rows:
                after = int(seq)
                if text_id is None or text_id == UNSPLITTABLE:  # stored whole
                    out.append(bytes(data))
                    continue
                text = texts.get(int(text_id))
                if text is None:
                    raise StorageError(f"finding texts {text_id} of task {task_id} are missing")
                out.append(join_maps(bytes(data), text))
            if len(rows) < _READ_CHUNK:
                break
        return out

    async def split_old_findings(self) -> int:
        """Split findings stored whole (by the schema before finding_texts, or by
        :meth:`add_findings`) into their own fields and a text set stored once per task;
        a chunk per commit, resumable. Returns the rows split. Called once the store is
        open (the migration itself cannot decode msgpack)."""
        split = 0
        while rows := await self._fetch(Q_UNSPLIT_TASK):
            task_id = str(rows[0][0])
            seen: set[int] = set()
            while chunk := await self._fetch(Q_UNSPLIT_ROWS, (task_id, _SPLIT_CHUNK)):
                ops: list[Op] = []
                updates: list[Op] = []
                for seq, data in chunk:
                    blob = bytes(data)
                    try:
                        own, texts = split_finding(blob)
                    except (msgspec.DecodeError, StorageError):
                        updates.append((Q_SET_SPLIT, (UNSPLITTABLE, blob, task_id, int(seq))))
                        continue
                    text_id = text_id_of(texts)
                    if text_id not in seen:
                        seen.add(text_id)
                        ops.append((Q_INSERT_TEXT, (task_id, text_id, texts)))
                    updates.append((Q_SET_SPLIT, (text_id, own, task_id, int(seq))))
                await self.write(ops + updates, bulk=True)
                split += len(chunk)
        if split:
            log.info(
                "findings split into their own fields and shared texts",
                extra={"event": "store_findings_split", "rows": split},
            )
        return split

    async def host_page(
        self, task_id: str, flt: HostFilter, *, after_seq: int = -1, offset: int = 0, limit: int
    ) -> list[tuple[int, bytes]]:
        """``(seq, HostResult JSON)`` of up to ``limit`` hosts after ``after_seq`` and
        ``offset`` more, in export order."""
        sql, params = host_page_sql(
            task_id, flt, after_seq=after_seq, offset=offset, limit=limit, count=False
        )
        return [(int(r[0]), bytes(r[1])) for r in await self._fetch(sql, params)]

    async def count_hosts(self, task_id: str, flt: HostFilter) -> int:
        sql, params = host_page_sql(task_id, flt, after_seq=-1, offset=0, limit=0, count=True)
        rows = await self._fetch(sql, params)
        return int(rows[0][0])

    async def hosts_only_in(self, task_id: str, other_task_id: str, limit: int) -> list[str]:
        """Up to ``limit`` names (sorted) of hosts ``task_id`` listed and ``other_task_id``
        did not."""
        rows = await self._fetch(Q_HOSTS_ONLY_IN, (task_id, other_task_id, limit))
        return [str(r[0]) for r in rows]

    async def hosts_among(self, task_id: str, names: Iterable[str]) -> set[str]:
        """Which of ``names`` the task's export listed as hosts (queried in chunks)."""
        wanted = list(dict.fromkeys(names))
        out: set[str] = set()
        for i in range(0, len(wanted), _NAMES_PER_QUERY):
            chunk = wanted[i : i + _NAMES_PER_QUERY]
            sql = Q_HOSTS_NAMED.format(marks=", ".join("?" * len(chunk)))
            out.update(str(r[0]) for r in await self._fetch(sql, (task_id, *chunk)))
        return out

    async def count_findings(self, task_id: str) -> int:
        rows = await self._fetch(Q_COUNT_FINDINGS, (task_id,))
        return int(rows[0][0])

    async def list_tasks(self, flt: TaskFilter, limit: int) -> list[Task]:
        """Newest first. Filters that SQL can index are applied here; callers post-filter."""
        sql, params = list_tasks_sql(flt, limit)
        return [decode_task(r[0]) for r in await self._fetch(sql, params)]

    async def dlq_counts(self) -> dict[str, int]:
        rows = await self._fetch(Q_DLQ_COUNTS)
        return {r[0]: int(r[1]) for r in rows}

    async def writable(self) -> bool:
        """Readiness. While writes flow, the last commit's outcome answers at once (a probe
        write would queue behind a burst and make a busy daemon look unready); with nothing
        committed yet, or after a failure, a real write transaction round-trips."""
        if self.outage.down:
            return False  # the writer is reconnecting on its backoff: no probe of our own
        if self.last_commit_ok and self._writer.busy:
            return True
        # a probe that meets an outage stays queued as the reconnect's write: stop waiting
        # for it when the outage is noticed
        probe = self.enqueue([(Q_PROBE_WRITE, ())])
        probe.add_done_callback(_consume)
        down = asyncio.ensure_future(self.outage.wait_down())
        try:
            await asyncio.wait({probe, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            down.cancel()
        if not probe.done():
            return False
        return probe.exception() is None
