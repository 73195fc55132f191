"""The reconnect backoff on its own (plain numbers), and the group-commit writer through an
outage on a fake clock: the batch that met it is committed again on the backoff, its callers
waiting, and a close during the outage fails them instead of hanging."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.config import HousekeepingConfig
from nessus_pool.engine.housekeeping import housekeeping_loop
from nessus_pool.errors import StorageError, StorageUnavailableError
from nessus_pool.models import Task
from nessus_pool.store import TaskFilter
from nessus_pool.store.outage import Outage, backoff_s
from nessus_pool.store.writer import GroupCommitWriter, Op
from nessus_pool.testing import engine_rig


def test_backoff_doubles_from_half_a_second_to_a_cap() -> None:
    assert [backoff_s(n) for n in range(8)] == [0.0, 0.5, 1, 2, 4, 8, 10, 10]
    assert backoff_s(3, max_s=1.5) == 1.5


def test_outage_book_keeping_and_retry_after() -> None:
    clock = FakeClock()
    o = Outage(clock)
    o.check()  # up: nothing raised
    o.ok()
    confirmed = o.last_ok_ms
    assert o.failed(ConnectionRefusedError("refused")) == 0.5
    assert o.failed(ConnectionRefusedError("refused")) == 1.0
    assert o.down and o.since_ms == confirmed and o.last_ok_ms == confirmed
    assert o.retry_after_s() == 1  # whole seconds, at least 1
    with pytest.raises(StorageUnavailableError) as caught:
        o.check()
    assert caught.value.retry_after_s == 1
    # the driver's words (host, port) go to the log, not to API callers
    assert o.last_error == "ConnectionRefusedError: refused"
    assert str(caught.value) == "the database is unavailable; retry after 1 s"
    assert "nothing was stored" in str(o.error(write=True))
    for _ in range(4):
        o.failed(OSError("down"))
    assert o.retry_after_s() == 10
    o.ok()
    assert not o.down and o.failures == 0


class FlakyServer:
    """A commit function whose server is down until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False
        self.tries = 0
        self.batches: list[list[str]] = []

    async def commit(self, ops: list[Op]) -> None:
        self.tries += 1
        if not self.up:
            raise ConnectionRefusedError("connection refused")
        self.batches.append([sql for sql, _ in ops])


async def _advance_until(
    clock: FakeClock, done: Callable[[], bool], *, step_s: float = 0.1
) -> None:
    """Move the fake clock in small steps (a bounded number) until ``done()``."""
    for _ in range(200):
        if done():
            return
        await clock.advance(step_s)
    raise AssertionError("never happened")


async def _turns_until(done: Callable[[], bool]) -> None:
    """Let the loop run (no time passes) until ``done()``: the writer hands a batch to the
    backend a few loop turns after it is queued (the pipelined group commit)."""
    for _ in range(50):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def unreachable(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionRefusedError)


async def test_a_batch_that_meets_an_outage_is_committed_once_the_server_is_back() -> None:
    clock = FakeClock()
    server = FlakyServer()
    w = GroupCommitWriter(server.commit, unavailable=unreachable, outage=Outage(clock))
    w.start()
    fut = w.enqueue([("a", ())])
    await _turns_until(lambda: w.outage.down)
    assert not fut.done() and server.tries == 1
    later = w.enqueue([("b", ())])  # queued behind the stuck batch, in order
    await _advance_until(clock, lambda: server.tries == 3)
    assert clock.monotonic_s() >= 1.5  # 0.5 s, then 1 s of backoff
    assert w.outage.failures == 3 and not fut.done()
    server.up = True
    await _advance_until(clock, fut.done)
    await asyncio.wait_for(asyncio.gather(fut, later), 5)
    assert server.batches == [["a"], ["b"]]
    assert not w.outage.down and w.outage.last_ok_ms == clock.now_ms()
    await w.close()


async def test_other_errors_fail_the_batch_at_once() -> None:
    async def refuse(ops: list[Op]) -> None:
        raise ValueError("constraint")

    w = GroupCommitWriter(refuse, unavailable=unreachable, outage=Outage(FakeClock()))
    w.start()
    with pytest.raises(StorageError, match="constraint"):
        await asyncio.wait_for(w.enqueue([("a", ())]), 5)
    assert not w.outage.down
    await w.close()


async def test_close_during_an_outage_fails_the_waiting_callers() -> None:
    server = FlakyServer()
    w = GroupCommitWriter(server.commit, unavailable=unreachable, outage=Outage(FakeClock()))
    w.start()
    fut = w.enqueue([("a", ())])
    await _turns_until(lambda: w.outage.down)
    await asyncio.wait_for(w.close(), 5)  # no clock advance needed: close wakes the wait
    with pytest.raises(StorageUnavailableError):
        fut.result()


async def test_housekeeping_skips_a_round_while_the_database_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the essential housekeeping loop died on the outage's error and took the
    daemon down with it."""
    async with engine_rig(tmp_path) as rig:
        rounds: list[str] = []
        real = rig.store.list_tasks

        async def list_tasks(flt: TaskFilter, limit: int) -> list[Task]:
            if not rounds:
                rounds.append("refused")
                raise StorageUnavailableError("the database is unavailable", retry_after_s=2)
            rounds.append("ran")
            return await real(flt, limit)

        monkeypatch.setattr(rig.store, "list_tasks", list_tasks)
        cfg = HousekeepingConfig(interval_s=60.0)
        rig.engine.spawn(housekeeping_loop(rig.engine, lambda: cfg), "housekeeping")
        await _advance_until(rig.clock, lambda: len(rounds) >= 3, step_s=30.0)
        assert rounds[0] == "refused" and "ran" in rounds
        assert rig.engine.death is None
