"""The store on both backends (a real SQLite file, a real PostgreSQL schema): recovery
reads, group commit under cancellation, migrations, and what errors show."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from nessus_pool.errors import StorageError
from nessus_pool.models import Task, TaskStatus
from nessus_pool.store import Store, make_store


def _task(seq: int, status: TaskStatus) -> Task:
    return Task(
        task_id=f"t{seq:05d}",
        seq=seq,
        pool="lan",
        name=f"scan {seq}",
        targets=[f"10.0.{seq // 250}.{seq % 250 + 1}"],
        status=status,
        created_at_ms=seq,
        updated_at_ms=seq,
    )


async def test_load_active_reads_unfinished_tasks_in_seq_order_across_chunks(
    tmp_path: Path, store_url: str | None
) -> None:
    statuses = list(TaskStatus)
    rng = random.Random(7)
    tasks = [_task(seq, rng.choice(statuses)) for seq in range(1, 301)]
    written = tasks[:]
    rng.shuffle(written)  # rows land in the table in no particular order
    store = make_store(url=store_url, sqlite_path=tmp_path / "np.db")
    await store.open()
    try:
        for i in range(0, len(written), 50):
            await store.write([Store.op_save_task(t) for t in written[i : i + 50]])
        loaded = await store.load_active(chunk_rows=7)
    finally:
        await store.close()
    unfinished = [t for t in tasks if not t.status.is_terminal]
    assert 0 < len(unfinished) < len(tasks)
    assert [t.task_id for t in loaded] == [t.task_id for t in unfinished]
    assert loaded == unfinished  # every field decoded back
    with pytest.raises(StorageError, match="closed"):
        await store.load_active()


async def test_a_cancelled_writer_still_has_its_rows_committed(
    tmp_path: Path, store_url: str | None
) -> None:
    """Cancelling the caller of ``write`` cancels its wait, never the accepted rows."""
    store = make_store(url=store_url, sqlite_path=tmp_path / "np.db")
    await store.open()
    try:
        waiting = [
            asyncio.ensure_future(store.write([Store.op_save_task(_task(i, TaskStatus.QUEUED))]))
            for i in range(1, 21)
        ]
        await asyncio.sleep(0)  # every write is queued; none is committed yet
        for w in waiting[::2]:
            w.cancel()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert sum(isinstance(o, asyncio.CancelledError) for o in outcomes) == 10
        assert [o for o in outcomes if not isinstance(o, asyncio.CancelledError)] == [None] * 10
        # a later write commits after the earlier batch: by then all 20 rows are stored
        await store.write([Store.op_save_task(_task(99, TaskStatus.QUEUED))])
        loaded = await store.load_active()
    finally:
        await store.close()
    assert [t.seq for t in loaded] == [*range(1, 21), 99]


async def test_unfinished_statuses_come_from_models_and_use_the_partial_index(
    tmp_path: Path,
) -> None:
    import sqlite3

    from nessus_pool.models import UNFINISHED_STATUSES
    from nessus_pool.store.queries import Q_ACTIVE
    from nessus_pool.store.schema import UNFINISHED_SQL

    assert {s.strip("'") for s in UNFINISHED_SQL.split(", ")} == {
        s.value for s in UNFINISHED_STATUSES
    }
    store = Store(tmp_path / "s.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        plan = " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + Q_ACTIVE))
    finally:
        conn.close()
    assert "tasks_active" in plan


async def test_every_read_and_write_agrees_on_both_backends(
    tmp_path: Path, store_url: str | None
) -> None:
    """The named reads give the same answers whatever the backend: results, findings
    replaced then added, events in order, list filters, dead-letter counts, deletes."""
    from nessus_pool.models import TaskEvent
    from nessus_pool.store import TaskFilter

    store = make_store(url=store_url, sqlite_path=tmp_path / "np.db")
    await store.open()
    try:
        a, b = _task(1, TaskStatus.QUEUED), _task(2, TaskStatus.FAILED)
        b.dead_letter, b.finished_at_ms, b.idempotency_key = True, 50, "key-b"
        await store.save_task(a, TaskEvent(task_id=a.task_id, at_ms=1, status="submitted"))
        await store.save_task(b)
        await store.write([Store.op_event(TaskEvent(task_id=a.task_id, at_ms=2, status="x"))])
        await store.save_results(a.task_id, b"{}")
        await store.save_results(a.task_id, b'{"v":2}')  # replaces
        await store.replace_findings(
            a.task_id, [(1, 4, 100, "h1", b"f1"), (2, 0, 101, "h2", b"f2")]
        )
        await store.replace_findings(a.task_id, [(1, 3, 100, "h1", b"g1")])
        await store.add_findings(a.task_id, [(2, 2, 102, "h2", b"g2")])
        assert await store.get_results(a.task_id) == b'{"v":2}'
        assert await store.get_findings_blobs(a.task_id) == [b"g1", b"g2"]
        assert await store.count_findings(a.task_id) == 2
        assert [e.status for e in await store.events(a.task_id)] == ["submitted", "x"]
        assert (await store.get_by_idempotency_key("key-b")) == b
        assert await store.max_seq() == 2
        assert await store.dlq_counts() == {"lan": 1}
        listed = await store.list_tasks(TaskFilter(statuses=["queued", "failed"]), 10)
        assert [t.seq for t in listed] == [2, 1]
        assert await store.list_tasks(TaskFilter(dead_letter=True, finished_before_ms=51), 10) == [
            b
        ]
        assert await store.list_tasks(TaskFilter(before_seq=2, pool="lan"), 10) == [a]
        assert await store.writable() is True
        await store.delete_tasks([a.task_id])
        assert await store.get_task(a.task_id) is None
        assert await store.get_results(a.task_id) is None
        assert await store.events(a.task_id) == []
    finally:
        await store.close()


async def test_a_newer_sqlite_schema_is_refused_and_leaves_no_connection_open(
    tmp_path: Path,
) -> None:
    import sqlite3
    import threading

    conn = sqlite3.connect(tmp_path / "np.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER)")
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    conn.close()
    before = set(threading.enumerate())
    with pytest.raises(StorageError, match="newer than this nessus-pool"):
        await Store(tmp_path / "np.db").open()
    # aiosqlite runs each connection on its own thread: a leaked connection stays alive
    for thread in set(threading.enumerate()) - before:
        await asyncio.to_thread(thread.join, 5.0)
        assert not thread.is_alive(), thread.name
