"""Several engines sharing pools on one real PostgreSQL database ([cluster]), in one test
process on one fake clock, each with its own store, listener and leases; the scanners are
shared in-memory fakes that record every call (scans created, launched, running at once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.config import HousekeepingConfig, PoolConfig
from nessus_pool.engine.cluster import ClusterMember, ClusterSettings
from nessus_pool.engine.core import Engine
from nessus_pool.engine.dispatch import claim
from nessus_pool.engine.housekeeping import housekeeping_turn
from nessus_pool.engine.observe import snapshot
from nessus_pool.engine.scanner import ScannerSpec
from nessus_pool.errors import (
    CapacityError,
    ConflictError,
    LockedError,
    PermanentScannerError,
    StorageError,
    ValidationError,
)
from nessus_pool.models import ScanType, SshCredential, Task, TaskStatus
from nessus_pool.simulator.state import peak_overlap
from nessus_pool.store import op_save_task
from nessus_pool.store.pg import HOUSEKEEPING_LOCK_KEY, PgStore
from nessus_pool.store.queries import Q_HELD_TASKS
from nessus_pool.testing import FakeNessus, settle

POOL = PoolConfig(name="lan", poll_interval_s=1.0, max_attempts=3, probe_interval_s=5.0)
LEASE_S = 15.0
HEARTBEAT_S = 5.0


@pytest.fixture
async def pg_url(pg_server_url: str) -> AsyncIterator[str]:
    from tests.pgcluster import create_schema, drop_schema, with_search_path

    schema = await create_schema(pg_server_url)
    try:
        yield with_search_path(pg_server_url, schema)
    finally:
        await drop_schema(pg_server_url, schema)


@dataclass
class Node:
    engine: Engine
    store: PgStore

    @property
    def member(self) -> ClusterMember:
        assert self.engine.cluster is not None
        return self.engine.cluster


class Cluster:
    """Engines on one database, one clock and one set of fake scanners."""

    def __init__(
        self,
        url: str,
        path: Path,
        *,
        scanners: int = 2,
        cap: int = 2,
        scan_s: float = 10.0,
        pool: PoolConfig = POOL,
    ) -> None:
        self.pool = pool
        self.url = url
        self.path = path
        self.clock = FakeClock()
        self.scanner_ids = [f"fake-{i}" for i in range(1, scanners + 1)]
        self.cap = cap
        self.fakes = {sid: FakeNessus(sid, self.clock, scan_s=scan_s) for sid in self.scanner_ids}
        self.nodes: dict[str, Node] = {}
        self._n = 0

    async def start(self, daemon_id: str, *, zone: list[str] | None = None) -> Node:
        store = PgStore(self.url)
        await store.open()
        engine = Engine(
            store=store,
            clock=self.clock,
            exports_dir=self.path / daemon_id / "exports",
            client_factory=lambda spec: self.fakes[spec.scanner_id],
            credentials=lambda name: None,
        )
        engine.cluster = ClusterMember(
            engine,
            store,
            ClusterSettings(
                daemon_id=daemon_id,
                lease_s=LEASE_S,
                heartbeat_s=HEARTBEAT_S,
                zone=zone,
                host="test-host",
                pid=1,
                version="test",
                pools={"lan": "h1"},
            ),
        )
        specs = [
            ScannerSpec(scanner_id=sid, pool="lan", url=f"fake://{sid}", capacity=self.cap)
            for sid in self.scanner_ids
        ]
        await engine.start([self.pool], specs)
        node = self.nodes[daemon_id] = Node(engine, store)
        return node

    async def stop(self, daemon_id: str, *, crash: bool = False) -> None:
        """Stop a daemon: gracefully (its leases are released) or as kill -9 does (its
        leases stay until they expire)."""
        node = self.nodes.pop(daemon_id)
        if crash:
            node.member.held.clear()  # nothing released: the leases must expire
        await node.engine.stop(grace_s=0.0)
        await node.store.close()

    def task(self, **kw: Any) -> Task:
        self._n += 1
        now = self.clock.now_ms()
        base: dict[str, Any] = {
            "task_id": f"t{self._n:04d}",
            "seq": self._n,
            "pool": "lan",
            "name": f"scan {self._n}",
            "targets": ["10.0.0.1"],
            "scan_type": ScanType.UNTRUSTED,
            "created_at_ms": now,
            "updated_at_ms": now,
        }
        base.update(kw)
        return Task(**base)

    async def flush(self) -> None:
        for node in list(self.nodes.values()):
            await node.store.write([])
        await settle()

    async def until(
        self, cond: Callable[[], Any], *, step_s: float = 1.0, limit: int = 600
    ) -> None:
        """Run every engine (commit, deliver NOTIFYs, move the clock) until ``cond()``
        (or the awaitable it returns) is true; fail after ``limit`` steps."""

        async def holds() -> bool:
            value = cond()
            if asyncio.iscoroutine(value):
                value = await value
            return bool(value)

        for _ in range(limit):
            if await holds():
                return
            await self.flush()
            # a NOTIFY arrives on another connection: a bounded moment for it
            for _ in range(5):
                await asyncio.sleep(0.005)
            if await holds():
                return
            await self.clock.advance(step_s)
        raise AssertionError(f"condition not met after {limit} steps")

    async def all_in(self, tasks: list[Task], status: str = "completed") -> bool:
        st = await self.statuses()
        return all(st.get(t.task_id) == status for t in tasks)

    async def stored(self, task_id: str) -> Task:
        node = next(iter(self.nodes.values()))
        await self.flush()
        t = await node.store.get_task(task_id)
        assert t is not None
        return t

    async def statuses(self) -> dict[str, str]:
        conn = await asyncpg.connect(self.url)
        try:
            return {r[0]: r[1] for r in await conn.fetch("SELECT task_id, status FROM tasks")}
        finally:
            await conn.close()

    async def leases(self) -> dict[str, tuple[str, int]]:
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch("SELECT scanner_id, owner, epoch FROM scanner_leases")
            return {r[0]: (r[1], int(r[2])) for r in rows}
        finally:
            await conn.close()

    def created(self) -> dict[str, int]:
        """Scans created per remote name, across every scanner."""
        out: dict[str, int] = {}
        for fake in self.fakes.values():
            for scan in fake.scans.values():
                out[scan.name] = out.get(scan.name, 0) + 1
        return out

    def peak_running(self, sid: str) -> int:
        fake = self.fakes[sid]
        return peak_overlap(
            [
                (s.launched_at_s, s.launched_at_s + fake.scan_s)
                for s in fake.scans.values()
                if s.launched_at_s is not None
            ]
        )


@asynccontextmanager
async def cluster_of(pg_url: str, path: Path, **kw: Any) -> AsyncIterator[Cluster]:
    c = Cluster(pg_url, path, **kw)
    try:
        yield c
    finally:
        for daemon_id in list(c.nodes):
            await c.stop(daemon_id)


def owners(c: Cluster) -> dict[str, list[str]]:
    """Scanner -> the daemons that believe they hold it (never more than one)."""
    out: dict[str, list[str]] = {}
    for name, node in c.nodes.items():
        for sid in node.member.held:
            out.setdefault(sid, []).append(name)
    return out


async def test_three_daemons_split_the_scanners_and_caps_hold_cluster_wide(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=6, cap=2) as c:
        nodes = [await c.start(name) for name in ("a", "b", "c")]
        # the first daemon up takes every scanner, then hands over the idle ones as the
        # others join, until each holds its share
        await c.until(lambda: all(len(n.member.held) == 2 for n in nodes))
        assert sorted(owners(c)) == c.scanner_ids
        assert all(len(v) == 1 for v in owners(c).values())
        # every daemon takes submits, whoever owns the scanners
        tasks = [await nodes[i % 3].engine.submit(c.task()) for i in range(30)]
        await c.until(lambda: c.all_in(tasks))
        assert all(n == 1 for n in c.created().values()) and len(c.created()) == 30
        for sid in c.scanner_ids:
            assert 1 <= c.peak_running(sid) <= 2, sid
        # no queued task left in any daemon's memory: the queue lives in the database
        assert all(not n.engine.tasks for n in nodes)
        conn = await asyncpg.connect(c.url)
        try:
            details = await conn.fetch(
                "SELECT detail FROM task_events WHERE status = 'dispatching'"
            )
        finally:
            await conn.close()
        # each task claimed once, and the claims spread over the daemons
        assert len(details) == 30
        assert {d[0].split("daemon=")[1] for d in details} == {"a", "b", "c"}
        print("elapsed fake s", c.clock.monotonic_s())


async def test_a_dead_daemons_scan_is_reattached_by_another_without_a_second_scan(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=60.0) as c:
        a = await c.start("a")
        b = await c.start("b")
        assert owners(c) == {"fake-1": ["a"]}
        # submitted through b, which owns no scanner: a is woken by NOTIFY and runs it
        t = await b.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        assert t.task_id in a.engine.tasks and t.task_id not in b.engine.tasks
        await c.stop("a", crash=True)  # kill -9: its lease stays until it expires
        crashed_at_s = c.clock.monotonic_s()
        await c.until(lambda: b.member.holds("fake-1"), step_s=0.5)
        takeover_s = c.clock.monotonic_s() - crashed_at_s
        assert takeover_s <= LEASE_S + 1.0
        assert (await c.leases())["fake-1"] == ("b", 2)
        await c.until(lambda: c.all_in([t]))
        fake = c.fakes["fake-1"]
    # re-attached by its deterministic name: one scan created, launched once
    assert list(c.created().values()) == [1]
    assert fake.count("create_scan") == 1 and fake.count("launch_scan") == 1


async def test_fencing_refuses_the_writes_of_a_paused_owner_that_lost_its_lease(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0) as c:
        a = await c.start("a")
        t = await a.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        await c.until(lambda: a.engine.tasks[t.task_id].status is TaskStatus.RUNNING)

        async def paused() -> None:  # a stopped process: no heartbeat, no renewal
            return None

        a.member.beat = paused  # type: ignore[method-assign]
        b = await c.start("b")
        await c.until(lambda: b.member.holds("fake-1"), step_s=0.5)
        assert (await c.leases())["fake-1"] == ("b", 2)
        assert a.member.holds("fake-1")  # a does not know yet
        stale = a.engine.tasks[t.task_id]
        refused_before = a.store.fenced_refused
        # the stale owner writes a transition: refused by the lease epoch
        await a.engine.finish(stale, TaskStatus.FAILED, "stale_owner", "must not land")
        assert a.store.fenced_refused == refused_before + 1
        stored = await c.stored(t.task_id)
        assert stored.status is TaskStatus.RUNNING
        events = [e.status for e in await b.store.events(t.task_id)]
        assert "failed" not in events
        # the new owner's writes land: a cancel through it ends the task
        await b.engine.cancel(t.task_id)
        await c.until(lambda: c.all_in([t], "canceled"))
    assert c.fakes["fake-1"].count("create_scan") == 1


async def test_claims_from_racing_daemons_never_take_a_task_twice(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=3, cap=10, scan_s=5.0) as c:
        nodes = [await c.start(n, zone=[f"fake-{i}"]) for i, n in enumerate("abc", 1)]
        await c.until(lambda: all(n.member.held for n in nodes))
        # queued while nobody can claim (no scanner probed reachable yet in this round):
        # then every dispatcher wakes at once on the same queue
        for sc in (s for n in nodes for s in n.engine.scanners.values()):
            sc.slots.draining = True
        tasks = [await nodes[0].engine.submit(c.task()) for _ in range(60)]
        for n in nodes:
            for sc in n.engine.scanners.values():
                sc.slots.draining = False
        await asyncio.gather(*(claim(n.engine, n.engine.pools["lan"]) for n in nodes))
        await c.until(lambda: c.all_in(tasks))
        conn = await asyncpg.connect(c.url)
        try:
            per_task = await conn.fetch(
                "SELECT task_id, COUNT(*) FROM task_events WHERE status = 'dispatching'"
                " GROUP BY task_id"
            )
        finally:
            await conn.close()
    assert len(per_task) == 60 and all(r[1] == 1 for r in per_task)
    assert sorted(c.created().values()) == [1] * 60
    assert all(c.peak_running(sid) <= 10 for sid in c.scanner_ids)


async def test_a_cancel_sent_to_a_daemon_that_does_not_own_the_scan_reaches_the_owner(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0) as c:
        a = await c.start("a")
        b = await c.start("b", zone=[])  # owns nothing: a front door only
        running = await b.engine.submit(c.task())
        waiting = await b.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        assert running.task_id in a.engine.tasks and not b.engine.tasks
        # a queued task ends at once, whoever is asked
        ended = await b.engine.cancel(waiting.task_id)
        assert ended.status is TaskStatus.CANCELED
        # a running one: the flag and a NOTIFY reach a, which stops the scan
        asked = await b.engine.cancel(running.task_id)
        assert asked.status is TaskStatus.RUNNING
        await c.until(lambda: c.all_in([running], "canceled"))
        assert c.fakes["fake-1"].count("stop_scan") == 1
        with pytest.raises(ConflictError):
            await b.engine.cancel(running.task_id)
        statuses = await c.statuses()
    assert statuses[waiting.task_id] == "canceled"
    assert c.fakes["fake-1"].count("create_scan") == 1  # the queued one never launched


async def test_a_scanner_never_moves_to_a_daemon_whose_zone_lacks_it(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=2, cap=1, scan_s=60.0) as c:
        await c.start("a", zone=["fake-1"])
        b = await c.start("b", zone=["fake-2"])
        t = await b.engine.submit(c.task(requested_scanner="fake-1"))
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        await c.stop("a", crash=True)
        for _ in range(4):  # well past the lease: nobody else may take fake-1
            await c.clock.advance(LEASE_S)
            await c.flush()
        assert not b.member.holds("fake-1")
        assert (await c.leases())["fake-1"][0] == "a"
        assert (await c.statuses())[t.task_id] == "running"
        # a comes back: it re-attaches its scan (a new epoch), never a second one
        a = await c.start("a", zone=["fake-1"])
        await c.until(lambda: c.all_in([t]))
        assert (await c.leases())["fake-1"] == ("a", 2)
        assert a.member.holds("fake-1")
    assert c.fakes["fake-1"].count("create_scan") == 1


async def test_inline_credentials_are_refused_in_a_cluster(pg_url: str, tmp_path: Path) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1) as c:
        a = await c.start("a")
        with pytest.raises(ValidationError, match="named credential set"):
            await a.engine.submit(
                c.task(scan_type=ScanType.AUTHENTICATED), SshCredential(username="u", password="p")
            )
        assert await c.statuses() == {}


async def test_every_daemon_answers_the_same_queue_position_depth_and_wait(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0) as c:
        a = await c.start("a")
        b = await c.start("b", zone=[])
        first = await b.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        low = [await a.engine.submit(c.task()) for _ in range(3)]
        urgent = await b.engine.submit(c.task(priority=50))
        await c.flush()
        for node in (a, b):
            await node.member.refresh_queues()
        running = await c.stored(first.task_id)  # what a read from either daemon gets
        assert running.status is TaskStatus.RUNNING
        for node in (a, b):
            e = node.engine
            assert e.pools["lan"].queue_depth == 4 and e.pools["lan"].active == 1
            assert [e.queue_position(t) for t in (urgent, *low)] == [1, 2, 3, 4]
            assert e.queue_position(running) is None
            assert e.waiting_reason(urgent) == "capacity_full"
        assert a.engine.estimated_wait_s(low[-1]) == b.engine.estimated_wait_s(low[-1])
        assert a.engine.estimated_wait_s(low[-1])[0] is not None


async def test_a_daemon_id_alive_on_another_host_is_refused(pg_url: str, tmp_path: Path) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1) as c:
        a = await c.start("a")
        twin = ClusterMember(
            a.engine,
            a.store,
            ClusterSettings(daemon_id="a", host="another-host", lease_s=LEASE_S),
        )
        with pytest.raises(LockedError, match="in use by a live daemon on host test-host"):
            await twin.join()
        await c.clock.advance(LEASE_S + 1)
        # a beats on (its loop's beat may still be in flight after the advance: beat once
        # more here, so the row is fresh when the twin looks): still alive, still refused
        await a.member.beat()
        with pytest.raises(LockedError):
            await twin.join()


async def test_a_daemon_cut_off_from_the_database_stops_its_runners_and_rejoins_cleanly(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=120.0) as c:
        a = await c.start("a")
        t = await a.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        real = a.store.transact

        async def cut_off(work: Any) -> Any:
            raise StorageError("database call failed: ConnectionRefusedError")

        monkeypatch.setattr(a.store, "transact", cut_off)
        # its heartbeat fails until the lease may have expired: it gives the scanner up
        await c.until(lambda: not a.member.held, step_s=1.0, limit=30)
        assert t.task_id not in a.engine.tasks and not a.engine.runner_tasks
        assert not a.engine.scanners["fake-1"].slots.active
        monkeypatch.setattr(a.store, "transact", real)
        # back: its own lease again (a new epoch), the scan re-attached, never recreated
        await c.until(lambda: a.member.holds("fake-1"))
        assert (await c.leases())["fake-1"] == ("a", 2)
        await c.until(lambda: c.all_in([t]))
    assert c.fakes["fake-1"].count("create_scan") == 1


async def test_a_dead_letter_retried_through_another_daemon_runs_once_on_the_owner(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=5.0) as c:
        a = await c.start("a")
        b = await c.start("b", zone=[])
        c.fakes["fake-1"].fail_next("create_scan", PermanentScannerError("licence refused"))
        t = await b.engine.submit(c.task())
        await c.until(lambda: c.all_in([t], "failed"))
        dead = await c.stored(t.task_id)
        assert dead.dead_letter
        # the slow re-check (every lease-s) reads the other daemons' dead letters
        await c.until(lambda: b.engine.dlq_counts == {"lan": 1}, limit=int(LEASE_S) + 6)
        await b.engine.revive(dead)  # through the daemon that does not own the scanner
        await c.until(lambda: c.all_in([t]))
        assert t.task_id not in b.engine.tasks and not a.engine.tasks
    assert c.fakes["fake-1"].count("create_scan") == 2  # the refused one, then one run


async def test_housekeeping_runs_on_one_daemon_at_a_time(pg_url: str, tmp_path: Path) -> None:
    cfg = HousekeepingConfig(finished_ttl_s=1.0)
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=5.0) as c:
        a = await c.start("a")
        b = await c.start("b")
        t = await a.engine.submit(c.task())
        await c.until(lambda: c.all_in([t]))
        await c.clock.advance(10.0)
        async with a.store.exclusive_turn(HOUSEKEEPING_LOCK_KEY) as mine:
            assert mine
            assert await housekeeping_turn(b.engine, cfg) is None  # a has the turn
            assert t.task_id in await c.statuses()
        run = await housekeeping_turn(b.engine, cfg)
        assert run is not None and run.tasks_deleted == 1
        assert await c.statuses() == {}


async def test_the_queue_gauges_count_the_database_queue(pg_url: str, tmp_path: Path) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0) as c:
        a = await c.start("a")
        b = await c.start("b", zone=[])
        for _ in range(3):
            await b.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        await c.clock.advance(30.0)
        for node in (a, b):
            await node.member.refresh_queues()
            families = {f.name: f for f in snapshot(node.engine)}
            depth = families["nessus_pool_queue_depth"].samples[0].value
            oldest = families["nessus_pool_oldest_queued_age_seconds"].samples[0].value
            assert (depth, oldest >= 30.0) == (2, True)
            blocked = families["nessus_pool_queue_blocked"].samples
            assert [(x.labels["reason"], x.value) for x in blocked] == [("capacity_full", 2)]
            held = families["nessus_pool_cluster_leases_held"].samples[0].value
            assert held == len(node.member.held) == (1 if node is a else 0)


async def test_a_wait_on_a_task_another_daemon_runs_reads_it_again_within_a_second(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0) as c:
        await c.start("a")
        b = await c.start("b", zone=[])
        t = await b.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        waiter = asyncio.ensure_future(b.engine.wait_change(t.task_id, 600.0))
        await settle()
        assert not waiter.done()
        await c.clock.advance(1.0)
        await settle()
        # before: b waited the whole 600 s for a change only a's memory sees
        assert waiter.done()


async def test_nothing_is_placed_on_a_scanner_being_handed_over(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=2, cap=2, scan_s=600.0) as c:
        a = await c.start("a")
        await c.until(lambda: len(a.member.held) == 2 and a.engine.scanners["fake-2"].available())
        a.member.releasing.add("fake-2")  # the heartbeat decided to hand it over
        tasks = [await a.engine.submit(c.task()) for _ in range(3)]
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 2)
        assert c.fakes["fake-2"].count("create_scan") == 0
        assert (await c.statuses())[tasks[2].task_id] == "queued"


async def test_max_queued_holds_across_daemons(pg_url: str, tmp_path: Path) -> None:
    small = msgspec.structs.replace(POOL, max_queued=3)
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0, pool=small) as c:
        a = await c.start("a")
        b = await c.start("b", zone=[])
        await a.engine.submit(c.task())
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 1)
        for node in (a, b, a):  # three queued, through both daemons
            await node.engine.submit(c.task())
        await c.until(lambda: b.engine.pools["lan"].queue_depth == 3)
        for node in (a, b):
            with pytest.raises(CapacityError, match="already has 3 queued"):
                await node.engine.submit(c.task())


async def test_one_idempotency_key_given_to_two_daemons_at_once_makes_one_task(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=600.0) as c:
        a = await c.start("a")
        b = await c.start("b", zone=[])
        results = await asyncio.gather(
            a.engine.submit(c.task(idempotency_key="k-1")),
            b.engine.submit(c.task(idempotency_key="k-1")),
            return_exceptions=True,
        )
        ok = [r for r in results if isinstance(r, Task)]
        refused = [r for r in results if isinstance(r, ConflictError)]
        assert len(ok) == 1 and len(refused) == 1, results
        assert "idempotency_key" in str(refused[0])
        assert list(await c.statuses()) == [ok[0].task_id]


async def test_rows_a_claim_locked_and_left_wake_the_daemon_that_skipped_them(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=2, cap=1, scan_s=600.0) as c:
        a = await c.start("a", zone=["fake-1"])
        b = await c.start("b", zone=["fake-2"])
        await c.until(
            lambda: all(
                s.available() for s in (a.engine.scanners["fake-1"], b.engine.scanners["fake-2"])
            )
        )
        own = ((a, "fake-1"), (b, "fake-2"))
        for n, sid in own:  # nobody claims while the two tasks are queued
            n.engine.scanners[sid].slots.draining = True
        tasks = [await a.engine.submit(c.task()) for _ in range(2)]
        await c.flush()
        for n, sid in own:
            n.engine.scanners[sid].slots.draining = False
        real_apply = a.store._apply
        skipped: list[int] = []

        async def apply_after_b(conn: Any, ops: list[Any]) -> set[str]:
            if not skipped and any("dispatching" in map(str, op[1]) for op in ops):
                # b claims while a's claim holds both rows: it skips them, places nothing
                before = c.fakes["fake-2"].count("create_scan")
                await claim(b.engine, b.engine.pools["lan"])
                skipped.append(c.fakes["fake-2"].count("create_scan") - before)
            return await real_apply(conn, ops)

        monkeypatch.setattr(a.store, "_apply", apply_after_b)
        await claim(a.engine, a.engine.pools["lan"])
        monkeypatch.setattr(a.store, "_apply", real_apply)
        assert skipped == [0]
        # woken by a's NOTIFY at once, not by the next probe or re-check seconds later
        await c.until(lambda: c.fakes["fake-2"].count("launch_scan") == 1, step_s=0.05, limit=20)
        assert sorted((await c.statuses()).values()) == ["running", "running"]
        assert {t.task_id for t in tasks} == set(await c.statuses())


async def test_queued_tasks_of_a_pool_no_daemon_defines_fail_but_not_while_one_is_away(
    pg_url: str, tmp_path: Path
) -> None:
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1) as c:
        a = await c.start("a")
        gone, away = c.task(pool="gone"), c.task(pool="dmz")
        await a.store.write([op_save_task(gone), op_save_task(away)])
        conn = await asyncpg.connect(c.url)
        try:  # "x" defined dmz and was last seen two hours ago (a long restart)
            await conn.execute(
                "INSERT INTO daemons VALUES ('x', 'h', 1, 'v', 'c', 'p', $2, $1, $1, 'null')",
                c.clock.now_ms() - 7_200_000,
                json.dumps({"dmz": "h"}),
            )
        finally:
            await conn.close()
        await c.until(lambda: c.all_in([gone], "failed"), limit=int(LEASE_S) + 6)
        stored = await c.stored(gone.task_id)
        assert (stored.reason, stored.dead_letter) == ("pool_removed", False)
        assert (await c.statuses())[away.task_id] == "queued"


async def test_a_claim_during_a_takeover_never_fills_slots_the_adopted_scans_hold(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # found by the cluster proof (600 tasks, 8 kill -9): a scanner ran 3 scans with cap 2
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=2, scan_s=600.0) as c:
        a = await c.start("a")
        b = await c.start("b")
        running = [await a.engine.submit(c.task()) for _ in range(2)]
        await c.until(lambda: c.fakes["fake-1"].count("launch_scan") == 2)
        waiting = [await a.engine.submit(c.task()) for _ in range(2)]
        await c.stop("a", crash=True)
        real_fetch = b.store._fetch
        raced: list[bool] = []

        async def fetch(sql: str, params: Any = ()) -> list[Any]:
            if sql == Q_HELD_TASKS and not raced:
                # the lease is b's; before its running scans are read back, b's
                # dispatcher runs (woken by a submit, a probe, a NOTIFY)
                raced.append(True)
                await claim(b.engine, b.engine.pools["lan"])
            return await real_fetch(sql, params)

        monkeypatch.setattr(b.store, "_fetch", fetch)
        await c.until(lambda: b.member.holds("fake-1"), step_s=0.5)
        assert raced == [True]
        await c.until(lambda: len(b.engine.tasks) == 2, limit=50)
        for _ in range(20):  # let anything that would launch, launch
            await c.clock.advance(1.0)
            await c.flush()
        assert len(b.engine.scanners["fake-1"].slots.active) == 2
        assert c.peak_running("fake-1") == 2
        assert c.fakes["fake-1"].count("create_scan") == 2
        statuses = await c.statuses()
        assert [statuses[t.task_id] for t in running] == ["running", "running"]
        assert [statuses[t.task_id] for t in waiting] == ["queued", "queued"]


async def test_a_task_whose_final_row_failed_to_commit_is_reattached_by_its_owner(
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    allow_dead_background_tasks: bool,
) -> None:
    # seen in the cluster proof: 8 tasks stayed 'running' for good after a PostgreSQL
    # restart (their end was decided, its commit failed, the owner kept the lease)
    async with cluster_of(pg_url, tmp_path, scanners=1, cap=1, scan_s=10.0) as c:
        a = await c.start("a")
        t = await a.engine.submit(c.task())
        real_apply = a.store._apply
        failed: list[bool] = []

        async def apply(conn: Any, ops: list[Any]) -> set[str]:
            if not failed and any("completed" in map(str, op[1]) for op in ops):
                failed.append(True)
                raise StorageError("database write failed: connection lost")
            return await real_apply(conn, ops)

        monkeypatch.setattr(a.store, "_apply", apply)
        await c.until(lambda: bool(failed) and t.task_id not in a.engine.tasks)
        assert (await c.statuses())[t.task_id] == "exporting"  # what the database says
        await c.until(lambda: c.all_in([t]), limit=int(4 * LEASE_S))
        assert a.member.holds("fake-1")
    assert c.fakes["fake-1"].count("create_scan") == 1
