"""The group-commit writer on its own: ordering, cancellation, and the failure of one batch
(with a scripted commit function, then with a real SQLite file and a real PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nessus_pool.errors import StorageError
from nessus_pool.models import Task, TaskStatus
from nessus_pool.store import Store, make_store
from nessus_pool.store.writer import GroupCommitWriter, Op


class Disk:
    """A commit function that records each batch; ``gate`` holds commits, ``fail`` makes
    the next commit raise."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.entered = asyncio.Event()

    async def commit(self, ops: list[Op]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        self.batches.append([sql for sql, _ in ops])


def op(name: str) -> Op:
    return (name, ())


async def test_commits_keep_the_order_of_enqueue_and_bulk_goes_after() -> None:
    disk = Disk()
    w = GroupCommitWriter(disk.commit, max_batch=3)
    w.start()
    disk.gate.clear()
    first = w.enqueue([op("a0")])
    await disk.entered.wait()  # the writer holds batch 1 while the rest queue up
    futs = [w.enqueue([op(f"b{i}")]) for i in range(4)]
    bulk = w.enqueue([op("bulk")], bulk=True)
    futs.append(w.enqueue([op("c")]))
    disk.gate.set()
    await asyncio.gather(first, *futs, bulk)
    assert disk.batches == [["a0"], ["b0", "b1", "b2"], ["b3", "c", "bulk"]]
    assert (w.commits, w.rows_written, w.last_commit_ok) == (3, 7, True)
    await w.close()


async def test_a_cancelled_caller_still_has_its_rows_committed() -> None:
    disk = Disk()
    w = GroupCommitWriter(disk.commit)
    w.start()
    disk.gate.clear()
    blocker = w.enqueue([op("x")])
    await disk.entered.wait()
    caller = asyncio.create_task(_write(w, "mine"))
    await asyncio.sleep(0)  # the caller queues its row and waits
    other = w.enqueue([op("theirs")])
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    disk.gate.set()
    await asyncio.gather(blocker, other)
    assert disk.batches == [["x"], ["mine", "theirs"]]
    await w.close()


async def _write(w: GroupCommitWriter, name: str) -> None:
    await w.enqueue([op(name)])


async def test_a_failed_batch_fails_its_callers_only_and_the_next_one_commits() -> None:
    disk = Disk()
    w = GroupCommitWriter(disk.commit)
    w.start()
    disk.gate.clear()
    held = w.enqueue([op("held")])
    await disk.entered.wait()
    disk.fail = RuntimeError("disk I/O error")
    # "held" is in the batch being committed: it fails; these two wait for the next one
    later = [w.enqueue([op("l1")]), w.enqueue([op("l2")])]
    disk.gate.set()
    with pytest.raises(StorageError, match="disk I/O error"):
        await held
    await asyncio.gather(*later)
    assert disk.batches == [["l1", "l2"]]
    assert w.last_commit_ok is True and w.commits == 1
    await w.close()


async def test_close_commits_what_is_queued_then_refuses() -> None:
    disk = Disk()
    w = GroupCommitWriter(disk.commit)
    w.start()
    futs = [w.enqueue([op(f"r{i}")]) for i in range(4)]
    await w.close()
    assert all(f.done() and f.exception() is None for f in futs)
    assert [sql for batch in disk.batches for sql in batch] == ["r0", "r1", "r2", "r3"]
    with pytest.raises(StorageError, match="closed"):
        w.enqueue([op("late")])


def _task(task_id: str, seq: int, key: str | None) -> Task:
    return Task(
        task_id=task_id,
        seq=seq,
        pool="lan",
        name=task_id,
        targets=["10.0.0.1"],
        idempotency_key=key,
        created_at_ms=1,
        updated_at_ms=1,
    )


async def test_real_store_a_constraint_failure_rolls_back_its_batch_only(
    tmp_path: Path, store_url: str | None
) -> None:
    store = make_store(url=store_url, sqlite_path=tmp_path / "s.db")
    await store.open()
    try:
        await store.save_task(_task("t1", 1, "k"))
        # same idempotency key, other task id: UNIQUE fails, the whole batch rolls back
        bad = store.enqueue([Store.op_save_task(_task("t2", 2, "k"))])
        with pytest.raises(StorageError):
            await bad
        assert store.last_commit_ok is False
        await store.save_task(_task("t3", 3, None))
        assert store.last_commit_ok is True
        assert await store.get_task("t2") is None
        t3 = await store.get_task("t3")
        assert t3 is not None and t3.status is TaskStatus.QUEUED
    finally:
        await store.close()
