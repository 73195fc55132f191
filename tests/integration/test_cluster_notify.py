"""Webhook notifications with several daemons on one PostgreSQL (issues #14 and #17): each
outbox row is delivered by one daemon (claims with SKIP LOCKED), and a row whose daemon died
mid-delivery is delivered by another once the claim's lease ends: at least once, with the
same delivery id. Two real delivery workers on one fake clock, a real webhook receiver."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.config import NotificationConfig
from nessus_pool.metrics import Metrics
from nessus_pool.notify.worker import LEASE_MARGIN_S, DeliveryWorker
from nessus_pool.store import outbox as ob
from nessus_pool.store.outbox import OutboxRow
from nessus_pool.store.pg import PgStore
from tests.integration.test_cluster import pg_url  # noqa: F401 (fixture)
from tests.unit.test_notify_outbox import _row
from tests.webhook_receiver import Receiver

SECRET = "cluster-" + "cd" * 16
TIMEOUT_S = 5.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver(SECRET) as r:
        yield r


async def _prepared(row: OutboxRow, target: NotificationConfig) -> bytes | None:
    return b'{"version": 1}'


async def _until(cond: Callable[[], bool], limit_s: float = 20.0) -> None:
    """Until ``cond()`` holds: deliveries are real HTTP on 127.0.0.1 (bounded)."""
    for _ in range(int(limit_s * 100)):
        if cond():
            return
        await asyncio.sleep(0.01)  # a look every 10 ms, failing after limit_s
    raise AssertionError(f"condition not met within {limit_s} s")


class Daemon:
    def __init__(self, url: str, clock: FakeClock, target: NotificationConfig, seed: int) -> None:
        self.store = PgStore(url)  # exclusive=False: a [cluster] daemon's store
        self.worker = DeliveryWorker(
            self.store,
            clock,
            lambda: [target],
            _prepared,
            Metrics(),
            set(),
            exclusive=self.store.exclusive,
            rng=random.Random(seed),
        )
        self.run: asyncio.Task[None] | None = None

    async def start(self) -> Daemon:
        await self.store.open()
        self.run = asyncio.create_task(self.worker.run())
        return self

    async def kill(self) -> None:
        """As kill -9 leaves it: the claims stay in the database until their lease ends."""
        assert self.run is not None
        self.run.cancel()
        await asyncio.gather(self.run, return_exceptions=True)
        await self.store.close()


async def test_each_row_is_delivered_by_one_daemon_and_a_dead_ones_claim_moves_on(
    pg_url: str,  # noqa: F811
    receiver: Receiver,
) -> None:
    clock = FakeClock(start_ms=int(time.time() * 1000))
    target = NotificationConfig(
        name="ops", url=receiver.url, secret=SECRET, events=["completed"], timeout_s=TIMEOUT_S
    )
    a = await Daemon(pg_url, clock, target, 1).start()
    b = await Daemon(pg_url, clock, target, 2).start()
    try:
        assert not a.worker.exclusive and not b.worker.exclusive
        rows = [_row(n, clock.now_ms()) for n in range(1, 41)]
        await a.store.write([ob.op_insert(r) for r in rows])
        a.worker.wake()
        b.worker.wake()
        await _until(lambda: len(receiver.deliveries) >= 40)
        await _until(lambda: a.worker.sleeping_until_ms is not None)
        await _until(lambda: b.worker.sleeping_until_ms is not None)
        ids = [d.delivery_id for d in receiver.deliveries]
        assert sorted(ids) == sorted(r.delivery_id for r in rows)  # each once, none twice
        assert all(d.signature_ok for d in receiver.deliveries)
        assert (await ob.counts(a.store)).get(ob.DELIVERED) == 40

        # a takes the next row and dies while the receiver holds its request
        receiver.hold = True
        late = _row(99, clock.now_ms())
        b_sleep = b.worker.sleeping_until_ms
        await a.store.write([ob.op_insert(late)])
        a.worker.wake()
        await _until(lambda: len(receiver.deliveries) == 41)
        await a.kill()
        receiver.hold = False
        claimed = await ob.get(b.store, late.delivery_id)
        assert claimed is not None and claimed.state == ob.PENDING
        lease_ms = int((TIMEOUT_S + LEASE_MARGIN_S) * 1000)
        b.worker.wake()  # b looks: the row is claimed by a, not due before the lease ends
        await _until(lambda: b.worker.sleeping_until_ms not in (None, b_sleep))
        assert b.worker.sleeping_until_ms is not None
        assert b.worker.sleeping_until_ms >= clock.now_ms() + lease_ms - 1000
        await clock.advance(lease_ms / 1000 - 2)
        assert len(receiver.deliveries) == 41
        done = b.worker.next_outcome()
        await clock.advance(3)
        await asyncio.wait_for(done, 10)
        assert [d.delivery_id for d in receiver.deliveries[-2:]] == [late.delivery_id] * 2
        stored = await ob.get(b.store, late.delivery_id)
        assert stored is not None and stored.state == ob.DELIVERED
    finally:
        if a.run is not None and not a.run.done():
            await a.kill()
        await b.kill()
