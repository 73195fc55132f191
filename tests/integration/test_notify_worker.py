"""The delivery worker on the injected clock: a failed attempt is retried when the fake
clock reaches its backoff, not before and without any real sleep; the attempt after the
last is ``failed``; a new row wakes the worker at once."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.config import NotificationConfig
from nessus_pool.metrics import Metrics
from nessus_pool.notify.worker import DeliveryWorker, backoff_s
from nessus_pool.store import Store
from nessus_pool.store import outbox as ob
from nessus_pool.store.outbox import OutboxRow
from tests.unit.test_notify_outbox import _row
from tests.webhook_receiver import Receiver

SECRET = "worker-" + "ab" * 16


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver(SECRET) as r:
        yield r


async def _sleeping_until(worker: DeliveryWorker, clock: FakeClock, at_ms: int) -> None:
    """Until the worker sleeps on the clock waiting for ``at_ms`` (bounded; woken by each
    time it goes to sleep, never by time passing)."""
    async with asyncio.timeout(10):
        while True:
            idle = worker.next_idle()
            if worker.sleeping_until_ms == at_ms and clock.sleepers:
                idle.cancel()
                return
            await idle
            for _ in range(5):  # its clock sleep registers in its next step
                await asyncio.sleep(0)


async def _prepared(row: OutboxRow, target: NotificationConfig) -> bytes | None:
    return b'{"version": 1}'


async def test_retries_follow_the_injected_clock(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock(start_ms=int(time.time() * 1000))
    store = Store(tmp_path / "np.db")
    await store.open()
    target = NotificationConfig(
        name="ops",
        url=receiver.url,
        secret=SECRET,
        events=["completed"],
        max_attempts=3,
        retry_base_delay_s=60.0,
    )
    worker = DeliveryWorker(
        store, clock, lambda: [target], _prepared, Metrics(), set(), rng=random.Random(4)
    )
    receiver.script = [500, 500]
    row = _row(1, clock.now_ms())
    await store.write([ob.op_insert(row)])
    first = worker.next_outcome()
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(first, 10)
        stored = await ob.get(store, row.delivery_id)
        assert stored is not None and (stored.state, stored.attempts) == (ob.PENDING, 1)
        wait_s = (stored.next_attempt_at_ms - clock.now_ms()) / 1000
        assert wait_s == pytest.approx(backoff_s(1, 60.0, 3600.0, random.Random(4)), abs=0.01)
        assert 30.0 <= wait_s <= 60.0
        await _sleeping_until(worker, clock, stored.next_attempt_at_ms)
        await clock.advance(wait_s - 1)  # not yet due: nothing is sent
        assert len(receiver.deliveries) == 1
        second = worker.next_outcome()
        await clock.advance(1.001)  # (1 ms more: the fake clock's ms come from float seconds)
        await asyncio.wait_for(second, 10)
        assert len(receiver.deliveries) == 2
        stored = await ob.get(store, row.delivery_id)
        assert stored is not None and stored.attempts == 2
        third = worker.next_outcome()
        await _sleeping_until(worker, clock, stored.next_attempt_at_ms)
        await clock.advance((stored.next_attempt_at_ms - clock.now_ms()) / 1000 + 0.001)
        await asyncio.wait_for(third, 10)
        stored = await ob.get(store, row.delivery_id)
        assert stored is not None and (stored.state, stored.attempts) == (ob.DELIVERED, 3)
        assert all(d.signature_ok for d in receiver.deliveries)
        assert {d.delivery_id for d in receiver.deliveries} == {row.delivery_id}
        # a new row and a poke: sent at once, the clock standing still
        other = _row(2, clock.now_ms())
        await store.write([ob.op_insert(other)])
        worker.queued.add("t2")
        nxt = worker.next_outcome()
        worker.poke("t2")
        await asyncio.wait_for(nxt, 10)
        assert (await ob.get(store, other.delivery_id)).state == ob.DELIVERED  # type: ignore[union-attr]
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await store.close()
