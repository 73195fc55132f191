"""The schedules' tables on both backends: API schedules, run history recorded once per
slot, trimmed to the newest runs, the last slot per schedule, and the firing lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nessus_pool.store import make_store
from nessus_pool.store.schedules import ScheduleRun, ScheduleStore


def run(
    slot_ms: int, kind: str = "slot", outcome: str = "fired", task: str | None = None
) -> ScheduleRun:
    return ScheduleRun(slot_ms=slot_ms, kind=kind, outcome=outcome, task_id=task, at_ms=slot_ms + 5)


async def test_schedules_and_runs_round_trip(tmp_path: Path, store_url: str | None) -> None:
    store = make_store(url=store_url, sqlite_path=tmp_path / "s.db")
    await store.open()
    try:
        ss = ScheduleStore(store)
        await ss.save("b", b'{"x":1}', 1000)
        await ss.save("a", b'{"x":2}', 1001)
        await ss.save("b", b'{"x":3}', 2000)  # an update keeps created_at_ms
        got = await ss.all()
        assert [(s.name, s.created_at_ms, s.updated_at_ms, s.data) for s in got] == [
            ("a", 1001, 1001, b'{"x":2}'),
            ("b", 1000, 2000, b'{"x":3}'),
        ]
        assert await ss.get("zz") is None
        await ss.record("b", run(10, task="t1"))
        # the same slot again (a restart, another daemon): dropped, the first one stays
        await ss.record("b", run(10, outcome="skipped"))
        await ss.record("b", run(20, outcome="skipped"))
        await ss.record("b", run(99, kind="manual", task="t9"))
        await ss.record("a", run(5))
        assert await ss.run_of_slot("b", "slot", 10) == ("fired", "t1")
        assert await ss.run_of_slot("b", "slot", 11) == ("", None)
        # run-now is not a slot: the last slot of b is 20
        assert await ss.last_slots() == {"a": 5, "b": 20}
        assert [(r.slot_ms, r.kind, r.outcome) for r in await ss.runs("b")] == [
            (99, "manual", "fired"),
            (20, "slot", "skipped"),
            (10, "slot", "fired"),
        ]
        await ss.delete("b")
        assert [s.name for s in await ss.all()] == ["a"]
        assert await ss.runs("b") == []
        assert len(await ss.runs("a")) == 1
    finally:
        await store.close()


async def test_history_is_trimmed_to_the_newest_runs(tmp_path: Path, store_url: str | None) -> None:
    store = make_store(url=store_url, sqlite_path=tmp_path / "s.db")
    await store.open()
    try:
        ss = ScheduleStore(store)
        ss.keep_runs = 3
        for slot in range(1, 8):
            await ss.record("s", run(slot))
        await ss.record("other", run(1))
        assert [r.slot_ms for r in await ss.runs("s")] == [7, 6, 5]
        assert [r.slot_ms for r in await ss.runs("other")] == [1]
    finally:
        await store.close()


async def test_firing_lock_lets_one_round_at_a_time(tmp_path: Path, store_url: str | None) -> None:
    """Two stores on one database (two daemons on PostgreSQL): the second round waits until
    the first one leaves. SQLite has one daemon per file and takes nothing."""
    stores = [make_store(url=store_url, sqlite_path=tmp_path / "s.db") for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        a, b = (ScheduleStore(s) for s in stores)
        order: list[str] = []
        inside = asyncio.Event()
        leave = asyncio.Event()

        async def first() -> None:
            async with a.firing_lock():
                order.append("a in")
                inside.set()
                await leave.wait()
                order.append("a out")

        async def second() -> None:
            await inside.wait()
            async with b.firing_lock():
                order.append("b in")

        tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
        await inside.wait()
        if store_url is not None:
            # until PostgreSQL shows b waiting for the lock a holds (bounded)
            waiting = 0
            for _ in range(500):
                rows = await stores[0]._fetch(
                    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                waiting = int(rows[0][0])
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert waiting == 1 and order == ["a in"]
        leave.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        if store_url is None:
            assert order[0] == "a in" and set(order) == {"a in", "a out", "b in"}
        else:
            assert order == ["a in", "a out", "b in"]
    finally:
        for s in stores:
            await s.close()
