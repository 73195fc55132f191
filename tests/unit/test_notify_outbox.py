"""The outbox in the store, on SQLite and PostgreSQL: rows written with a final transition
in one commit, claims with leases (disjoint across concurrent claimers on PostgreSQL),
retry of failed rows, counts, pruning; and the engine hook that adds the rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nessus_pool.clock import FakeClock
from nessus_pool.config import NotificationConfig
from nessus_pool.models import ScanType, Task, TaskStatus
from nessus_pool.notify.outbox import OutboxWriter, delivery_id
from nessus_pool.notify.payload import decode
from nessus_pool.store import Q_INSERT_EVENT, Q_UPSERT_TASK, BaseStore, Op, make_store
from nessus_pool.store import outbox as ob
from nessus_pool.store.outbox import OutboxRow

SECRET = "s" * 32


def _task(n: int, status: TaskStatus = TaskStatus.COMPLETED, **kw: object) -> Task:
    fields: dict[str, object] = {"finished_at_ms": 1000 + n, **kw}
    return Task(
        task_id=f"t{n:04d}",
        seq=n,
        pool="lan",
        name=f"scan {n}",
        targets=["10.0.0.1"],
        status=status,
        created_at_ms=n,
        updated_at_ms=n,
        **fields,  # type: ignore[arg-type]
    )


def _target(name: str = "ops", **kw: object) -> NotificationConfig:
    base: dict[str, object] = {
        "name": name,
        "url": "https://hooks.example/x",
        "secret": SECRET,
        "events": ["completed", "failed", "dead_lettered", "authentication_failed", "findings"],
    }
    base.update(kw)
    return NotificationConfig(**base)  # type: ignore[arg-type]


async def _open(tmp_path: Path, store_url: str | None) -> BaseStore:
    store = make_store(url=store_url, sqlite_path=tmp_path / "np.db")
    await store.open()
    return store


def test_the_hook_writes_one_row_per_subscribed_event_and_pool() -> None:
    clock = FakeClock()
    targets = [_target(), _target("dmz-only", pools=["dmz"]), _target("fail", events=["failed"])]
    w = OutboxWriter(lambda: targets, clock)
    done = _task(1, authentication_status="success")
    events = sorted((op[1][1], op[1][2]) for op in w.rows_for(done))
    assert events == [("ops", "completed"), ("ops", "findings")]
    dead = _task(2, TaskStatus.FAILED, dead_letter=True)
    assert sorted((op[1][1], op[1][2]) for op in w.rows_for(dead)) == [
        ("fail", "failed"),
        ("ops", "dead_lettered"),
        ("ops", "failed"),
    ]
    auth = _task(
        3,
        TaskStatus.FAILED,
        scan_type=ScanType.AUTHENTICATED,
        authentication_status="failed",
        reason="authentication_failed",
    )
    assert ("ops", "authentication_failed") in {(op[1][1], op[1][2]) for op in w.rows_for(auth)}
    assert w.rows_for(_task(4, TaskStatus.CANCELED)) == []
    assert w.queued == {"t0001", "t0002", "t0003"}
    # the id is stable for one end of one task, target and event
    assert delivery_id("t1", 5, "ops", "completed") == delivery_id("t1", 5, "ops", "completed")
    assert delivery_id("t1", 5, "ops", "completed") != delivery_id("t1", 6, "ops", "completed")


def test_a_broken_hook_never_breaks_the_final_transition() -> None:
    def boom() -> list[NotificationConfig]:
        raise RuntimeError("bug")

    assert OutboxWriter(boom, FakeClock()).rows_for(_task(1)) == []


async def test_final_row_and_outbox_rows_commit_together(
    tmp_path: Path, store_url: str | None
) -> None:
    from nessus_pool.engine import Engine

    store = await _open(tmp_path, store_url)
    try:
        clock = FakeClock()
        engine = Engine(
            store=store,
            clock=clock,
            exports_dir=tmp_path / "exports",
            client_factory=lambda spec: None,  # type: ignore[arg-type,return-value]
            credentials=lambda name: None,
        )
        writer = OutboxWriter(lambda: [_target()], clock)
        engine.final_ops = writer.rows_for
        t = _task(7, TaskStatus.EXPORTING, finished_at_ms=None)
        await store.save_task(t)
        batches: list[list[str]] = []
        commit = store._commit

        async def recording(ops: list[Op]) -> None:
            batches.append([sql for sql, _ in ops])
            await commit(ops)

        store._commit = recording  # type: ignore[method-assign]
        fut = engine.finish_nowait(t, TaskStatus.COMPLETED, "done")
        await fut
        # one transaction holds the final task row, its event and the outbox row
        assert batches == [[Q_UPSERT_TASK, Q_INSERT_EVENT, ob.Q_OUTBOX_INSERT]]
        stored = await store.get_task(t.task_id)
        assert stored is not None and stored.status is TaskStatus.COMPLETED
        rows = await ob.by_state(store, ob.PENDING, 10)
        assert [(r.task_id, r.event) for r in rows] == [(t.task_id, "completed")]
        doc = decode(rows[0].payload)
        assert doc["version"] == 1 and doc["task"]["status"] == "completed"
        assert doc["delivery_id"] == rows[0].delivery_id
        # a non-final change writes no outbox row
        t2 = _task(8, TaskStatus.QUEUED, finished_at_ms=None)
        await store.save_task(t2)
        await engine.change(t2, TaskStatus.DISPATCHING, "dispatching")
        assert len(await ob.by_state(store, ob.PENDING, 10)) == 1
    finally:
        await store.close()


def _row(n: int, at_ms: int) -> OutboxRow:
    return OutboxRow(
        delivery_id=f"dlv-{n:024x}",
        target="ops",
        event="completed",
        task_id=f"t{n}",
        payload=b"{}",
        prepared=False,
        attempts=0,
        next_attempt_at_ms=at_ms,
        state=ob.PENDING,
        last_error=None,
        created_at_ms=at_ms,
        updated_at_ms=at_ms,
    )


async def test_claims_leases_retry_counts_and_prune(tmp_path: Path, store_url: str | None) -> None:
    store = await _open(tmp_path, store_url)
    try:
        await store.write([ob.op_insert(_row(n, 1000 + n)) for n in range(5)])
        await store.write([ob.op_insert(_row(0, 1))])  # the same id again: kept once
        assert (await ob.counts(store))[ob.PENDING] == 5
        assert await ob.next_due_ms(store) == 1000
        first = await ob.claim_due(store, now_ms=1002, lease_ms=60_000, limit=10)
        assert [r.task_id for r in first] == ["t0", "t1", "t2"]
        # claimed rows are not claimed again while the lease lasts
        assert [r.task_id for r in await ob.claim_due(store, 1004, 60_000, 10)] == ["t3", "t4"]
        assert await ob.claim_due(store, 1005, 60_000, 10) == []
        assert await ob.next_due_ms(store) == 61_002  # the end of the first lease
        # a previous process's leases are dropped by the next (only) daemon
        await ob.release_claims(store)
        assert len(await ob.claim_due(store, 1006, 60_000, 10)) == 5
        # outcomes
        done, bad = first[0], first[1]
        done.state, done.updated_at_ms = ob.DELIVERED, 2000
        bad.state, bad.attempts, bad.last_error, bad.updated_at_ms = ob.FAILED, 3, "HTTP 500", 2000
        await store.write([ob.op_update(done), ob.op_update(bad)])
        failed = await ob.by_state(store, ob.FAILED, 10)
        assert [(r.task_id, r.attempts, r.last_error) for r in failed] == [("t1", 3, "HTTP 500")]
        await ob.retry(store, bad.delivery_id, now_ms=3000)
        again = await ob.get(store, bad.delivery_id)
        assert again is not None and (again.state, again.attempts) == (ob.PENDING, 0)
        assert again.next_attempt_at_ms == 3000
        await ob.retry(store, done.delivery_id, now_ms=3000)  # not failed: unchanged
        assert (await ob.get(store, done.delivery_id)).state == ob.DELIVERED  # type: ignore[union-attr]
        await ob.prune(store, before_ms=2001)
        assert await ob.get(store, done.delivery_id) is None
        assert (await ob.counts(store))[ob.PENDING] == 4
    finally:
        await store.close()


async def test_concurrent_claims_never_share_a_row(tmp_path: Path, store_url: str | None) -> None:
    stores = [await _open(tmp_path, store_url)]
    if store_url is not None:  # PostgreSQL: a second daemon's store on the same database
        stores.append(await _open(tmp_path, store_url))
    try:
        await stores[0].write([ob.op_insert(_row(n, 10)) for n in range(60)])
        claims = await asyncio.gather(
            *(ob.claim_due(stores[i % len(stores)], 100, 60_000, 7) for i in range(12))
        )
        ids = [r.delivery_id for c in claims for r in c]
        assert len(ids) == 60 and len(set(ids)) == 60
    finally:
        for s in stores:
            await s.close()
