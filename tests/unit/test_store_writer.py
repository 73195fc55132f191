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


async def test_with_depth_two_the_next_batch_is_handed_over_before_the_first_ends() -> None:
    """SQLite's writer (depth 2): the next batch waits on the backend, not on the event loop
    noticing the end of the one before; callers still hear in commit order."""
    started: list[list[str]] = []
    entered = [asyncio.Event() for _ in range(3)]
    gates = [asyncio.Event() for _ in range(3)]

    async def commit(ops: list[Op]) -> None:
        i = len(started)
        started.append([sql for sql, _ in ops])
        entered[i].set()
        await gates[i].wait()

    w = GroupCommitWriter(commit, depth=2)
    w.start()
    a = w.enqueue([op("a")])
    await asyncio.wait_for(entered[0].wait(), 5)
    b = w.enqueue([op("b")])
    await asyncio.wait_for(entered[1].wait(), 5)  # before: only once "a" was committed
    c1, c2 = w.enqueue([op("c1")]), w.enqueue([op("c2")])
    gates[1].set()  # the second ends first (a backend that kept order would not do this)
    for _ in range(20):  # loop turns in which a wrong answer would show
        await asyncio.sleep(0)
    assert not a.done() and not b.done() and not entered[2].is_set()
    gates[0].set()
    await asyncio.wait_for(asyncio.gather(a, b), 5)
    await asyncio.wait_for(entered[2].wait(), 5)
    gates[2].set()
    await asyncio.wait_for(asyncio.gather(c1, c2), 5)
    assert started == [["a"], ["b"], ["c1", "c2"]]
    assert (w.commits, w.rows_written) == (3, 4)
    await w.close()


async def test_sqlite_store_hands_two_commits_to_its_thread_and_keeps_their_order(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "depth.db")
    await store.open()
    try:
        assert store._writer.depth == 2
        tasks = [
            Task(
                task_id=f"{i:016x}",
                seq=i,
                pool="lan",
                name="t",
                targets=["10.0.0.1"],
                created_at_ms=i,
                updated_at_ms=i,
            )
            for i in range(1, 401)
        ]
        # each task written twice (queued, then running) by concurrent writers: the last
        # write of each must win, so commits must land in the order they were queued
        first = [store.write([Store.op_save_task(t)]) for t in tasks]
        for t in tasks:
            t.status = TaskStatus.RUNNING
        second = [store.write([Store.op_save_task(t)]) for t in tasks]
        await asyncio.gather(*first, *second)
        assert store.commits >= 2
        for t in tasks[::37]:
            got = await store.get_task(t.task_id)
            assert got is not None and got.status is TaskStatus.RUNNING
    finally:
        await store.close()


async def test_with_depth_two_at_most_one_bulk_write_is_in_flight() -> None:
    """A transition handed over behind the commits in flight waits behind one bulk write at
    most (as with one commit at a time); a bulk write still goes as soon as none is in
    flight, however busy the small writes keep the writer."""
    started: list[list[str]] = []
    gates: list[asyncio.Event] = []
    entered = asyncio.Event()

    async def commit(ops: list[Op]) -> None:
        gate = asyncio.Event()
        gates.append(gate)
        started.append([sql for sql, _ in ops])
        entered.set()
        await gate.wait()

    async def handed(n: int) -> None:
        async with asyncio.timeout(5):
            while len(started) < n:
                entered.clear()
                await entered.wait()

    w = GroupCommitWriter(commit, depth=2)
    w.start()
    bulk1 = w.enqueue([op("bulk1")], bulk=True)
    await handed(1)
    bulk2 = w.enqueue([op("bulk2")], bulk=True)
    small = w.enqueue([op("small")])
    await handed(2)
    assert started == [["bulk1"], ["small"]]  # not bulk2: one bulk write in flight at most
    gates[1].set()
    gates[0].set()
    await asyncio.wait_for(asyncio.gather(bulk1, small), 5)
    await handed(3)
    assert started[2] == ["bulk2"]
    # a small write in flight does not hold a bulk one back: it takes the second slot
    small2 = w.enqueue([op("small2")])
    await handed(4)
    bulk3 = w.enqueue([op("bulk3")], bulk=True)
    gates[2].set()
    await asyncio.wait_for(bulk2, 5)
    await handed(5)
    assert started[3:] == [["small2"], ["bulk3"]]
    for g in gates:
        g.set()
    await asyncio.wait_for(asyncio.gather(small2, bulk3), 5)
    await w.close()


async def test_a_batch_the_backend_says_is_committed_is_settled_before_its_commit_returns() -> None:
    """``committed(ops)`` (SQLite's database thread, scheduled on the loop) settles the
    callers at once; callers still hear in commit order: a later batch said committed
    waits for the one before it, and that one's failure fails only its own callers."""
    gates = {name: asyncio.Event() for name in ("a", "b", "c")}
    entered = {name: asyncio.Event() for name in gates}

    async def commit(ops: list[Op]) -> None:
        name = ops[0][0]
        entered[name].set()
        if name != "a":
            w.committed(ops)  # committed; the call itself returns only later
        await gates[name].wait()
        if name == "a":
            raise StorageError("a failed")

    w = GroupCommitWriter(commit, depth=2)
    w.start()
    a = w.enqueue([op("a")])
    await asyncio.wait_for(entered["a"].wait(), 5)
    b = w.enqueue([op("b")])
    await asyncio.wait_for(entered["b"].wait(), 5)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not a.done() and not b.done()  # b is committed, but a is ahead of it
    gates["a"].set()
    await asyncio.wait_for(asyncio.wait([a, b]), 5)
    assert isinstance(a.exception(), StorageError)
    assert b.exception() is None and not gates["b"].is_set()
    c = w.enqueue([op("c")])
    await asyncio.wait_for(c, 5)  # its commit call has not returned
    assert (w.commits, w.rows_written) == (2, 2)
    gates["b"].set()
    gates["c"].set()
    await w.close()


async def test_sqlite_callers_hear_of_a_commit_from_the_database_thread(tmp_path: Path) -> None:
    """The SQLite store's callers are settled by its database thread's word, not by the end
    of the coroutine that handed the batch over (four loop turns later)."""
    returned = asyncio.Event()

    class LateReturn(Store):
        async def _commit(self, ops: list[Op]) -> None:
            await super()._commit(ops)
            await returned.wait()

    store = LateReturn(tmp_path / "late.db")
    await store.open()
    try:
        t = _task("t1", 1, None)
        await asyncio.wait_for(store.save_task(t), 5)
        got = await store.get_task("t1")
        assert got is not None and got.status is TaskStatus.QUEUED
    finally:
        returned.set()
        await store.close()
