"""Test helpers shipped in the package: an in-memory Nessus that records every call, a real
store whose commits can be held, and an engine wired to both on a fake clock.

Modelled on procrastinate's ``InMemoryConnector``: the engine under test is the real one, only
the scanner is replaced, so a whole task lifecycle runs in milliseconds on
:class:`~nessus_pool.clock.FakeClock` time and a test can assert on the exact calls made.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from nessus_pool.clock import FakeClock
from nessus_pool.config import PoolConfig
from nessus_pool.engine.core import Engine
from nessus_pool.engine.scanner import ScannerSpec
from nessus_pool.errors import ExportError, PermanentScannerError, RemoteNotFoundError
from nessus_pool.models import ScanSpec, ScanType, SshCredential, Task
from nessus_pool.nessus import (
    Capability,
    ExportResult,
    HostProgress,
    RemotePhase,
    RemoteScan,
    RemoteScanSummary,
    ScanDetails,
    is_terminal,
)
from nessus_pool.simulator.export import generate_export
from nessus_pool.store import Q_INSERT_EVENT, BaseStore, Op, Store


class Call(msgspec.Struct, frozen=True):
    """One call made on a :class:`FakeNessus`: the method name and its scan id or name."""

    method: str
    arg: int | str | None = None


@dataclass
class FakeScan:
    id: int
    name: str
    targets: list[str]
    credentialed: bool
    uuid: str | None = None
    launched_at_s: float | None = None
    #: set by a test (or a stop): the phase reported from now on, whatever the clock says
    forced: RemotePhase | None = None
    #: paused since (monotonic s), and the time paused before (not counted as running)
    paused_at_s: float | None = None
    paused_total_s: float = 0.0


@dataclass
class _Hold:
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class FakeNessus:
    """An in-memory scanner. A launched scan runs for ``scan_s`` seconds of the clock's
    monotonic time, then reports ``completed``. Tests steer it with :meth:`fail_next`
    (raise on the next calls of a method), :meth:`hold` (park a call until released) and
    :meth:`force` (report a phase, e.g. ``aborted``); :attr:`calls` records every call."""

    def __init__(
        self,
        scanner_id: str,
        clock: FakeClock,
        *,
        scan_s: float = 60.0,
        scan_api: bool = True,
        reachable: bool = True,
    ) -> None:
        self.scanner_id = scanner_id
        self.clock = clock
        self.scan_s = scan_s
        self.scan_api = scan_api
        self.reachable = reachable
        self.calls: list[Call] = []
        #: the deadline_at_s of every export_scan call (one deadline across retries)
        self.export_deadlines_at_s: list[float | None] = []
        self.scans: dict[int, FakeScan] = {}
        self._ids = itertools.count(1)
        self._failures: dict[str, list[BaseException]] = {}
        self._holds: dict[str, _Hold] = {}
        self.closed = False

    # --- steering ----------------------------------------------------------------------

    def fail_next(self, method: str, exc: BaseException, times: int = 1) -> None:
        self._failures.setdefault(method, []).extend([exc] * times)

    def hold(self, method: str) -> _Hold:
        """Park the next call of ``method`` (after it took effect) until ``release`` is set;
        ``entered`` is set when a call is parked."""
        h = self._holds[method] = _Hold()
        return h

    def force(self, scan_id: int, phase: RemotePhase) -> None:
        self.scans[scan_id].forced = phase

    def count(self, method: str) -> int:
        return sum(1 for c in self.calls if c.method == method)

    def by_name(self, name: str) -> list[FakeScan]:
        return [s for s in self.scans.values() if s.name == name]

    # --- helpers -----------------------------------------------------------------------

    async def _enter(self, method: str, arg: int | str | None = None) -> None:
        self.calls.append(Call(method, arg))
        failures = self._failures.get(method)
        if failures:
            raise failures.pop(0)

    async def _leave(self, method: str) -> None:
        h = self._holds.pop(method, None)
        if h is not None:
            h.entered.set()
            await h.release.wait()

    def _scan(self, scan_id: int, endpoint: str) -> FakeScan:
        scan = self.scans.get(scan_id)
        if scan is None:
            raise RemoteNotFoundError(
                f"scan {scan_id} not found",
                scanner_id=self.scanner_id,
                endpoint=endpoint,
                status=404,
            )
        return scan

    def phase(self, scan: FakeScan) -> RemotePhase:
        if scan.forced is not None:
            return scan.forced
        if scan.launched_at_s is None:
            return RemotePhase.EMPTY
        if scan.paused_at_s is not None:
            return RemotePhase.PAUSED
        if self._ran_s(scan) >= self.scan_s:
            return RemotePhase.COMPLETED
        return RemotePhase.RUNNING

    def _ran_s(self, scan: FakeScan) -> float:
        assert scan.launched_at_s is not None
        now_s = scan.paused_at_s if scan.paused_at_s is not None else self.clock.monotonic_s()
        return now_s - scan.launched_at_s - scan.paused_total_s

    def _progress(self, scan: FakeScan) -> int | None:
        if scan.launched_at_s is None:
            return None
        if is_terminal(self.phase(scan)):
            return 100
        return min(99, int(100 * self._ran_s(scan) / self.scan_s))

    # --- the client calls the engine makes ---------------------------------------------

    async def probe(self) -> Capability:
        await self._enter("probe")
        await self._leave("probe")
        if not self.reachable:
            return Capability(
                reachable=False, ready=False, scan_api=False, export_only=False, message="down"
            )
        return Capability(
            reachable=True,
            ready=True,
            scan_api=self.scan_api,
            export_only=not self.scan_api,
            version="10.8.3",
            nessus_type="Nessus (fake)",
            message="ready" if self.scan_api else "export-only licence",
        )

    async def create_scan(self, spec: ScanSpec) -> RemoteScan:
        await self._enter("create_scan", spec.name)
        scan = FakeScan(
            id=next(self._ids),
            name=spec.name,
            targets=list(spec.targets),
            credentialed=spec.credential is not None,
        )
        self.scans[scan.id] = scan
        await self._leave("create_scan")
        return RemoteScan(id=scan.id, uuid=None, name=scan.name)

    async def launch_scan(self, scan_id: int) -> str:
        await self._enter("launch_scan", scan_id)
        scan = self._scan(scan_id, "POST /scans/{id}/launch")
        scan.uuid = f"uuid-{scan_id}-{len(self.calls)}"
        scan.launched_at_s = self.clock.monotonic_s()
        await self._leave("launch_scan")
        return scan.uuid

    async def scan_details(self, scan_id: int) -> ScanDetails:
        await self._enter("scan_details", scan_id)
        scan = self._scan(scan_id, "GET /scans/{id}")
        await self._leave("scan_details")
        phase = self.phase(scan)
        progress = self._progress(scan)
        return ScanDetails(
            id=scan.id,
            name=scan.name,
            uuid=scan.uuid,
            raw_status=phase.value,
            phase=phase,
            progress_pct=progress,
            hosts=[HostProgress(hostname=h, progress_pct=progress) for h in scan.targets],
        )

    async def find_scans_by_name(self, name: str) -> list[RemoteScanSummary]:
        await self._enter("find_scans_by_name", name)
        await self._leave("find_scans_by_name")
        return [
            RemoteScanSummary(
                id=s.id,
                name=s.name,
                uuid=s.uuid,
                raw_status=self.phase(s).value,
                phase=self.phase(s),
            )
            for s in self.by_name(name)
        ]

    async def stop_scan(self, scan_id: int) -> None:
        await self._enter("stop_scan", scan_id)
        scan = self._scan(scan_id, "POST /scans/{id}/stop")
        if not is_terminal(self.phase(scan)):
            scan.forced = RemotePhase.CANCELED
        await self._leave("stop_scan")

    async def pause_scan(self, scan_id: int) -> None:
        await self._enter("pause_scan", scan_id)
        scan = self._scan(scan_id, "POST /scans/{id}/pause")
        if self.phase(scan) is not RemotePhase.RUNNING:
            raise PermanentScannerError(
                f"Can not pause a scan that is {self.phase(scan).value}",
                scanner_id=self.scanner_id,
                endpoint="POST /scans/{id}/pause",
                status=409,
            )
        scan.paused_at_s = self.clock.monotonic_s()
        await self._leave("pause_scan")

    async def resume_scan(self, scan_id: int) -> None:
        await self._enter("resume_scan", scan_id)
        scan = self._scan(scan_id, "POST /scans/{id}/resume")
        if scan.paused_at_s is None or scan.forced is not None:
            raise PermanentScannerError(
                f"Can not resume a scan that is {self.phase(scan).value}",
                scanner_id=self.scanner_id,
                endpoint="POST /scans/{id}/resume",
                status=409,
            )
        scan.paused_total_s += self.clock.monotonic_s() - scan.paused_at_s
        scan.paused_at_s = None
        await self._leave("resume_scan")

    async def delete_scan(self, scan_id: int) -> None:
        await self._enter("delete_scan", scan_id)
        self._scan(scan_id, "DELETE /scans/{id}")
        del self.scans[scan_id]
        await self._leave("delete_scan")

    async def export_scan(
        self,
        scan_id: int,
        dest: Path,
        *,
        deadline_s: float = 600.0,
        deadline_at_s: float | None = None,
        max_bytes: int = 2 * 1024**3,
        poll_interval_s: float = 1.0,
    ) -> ExportResult:
        self.export_deadlines_at_s.append(deadline_at_s)
        await self._enter("export_scan", scan_id)
        scan = self._scan(scan_id, "POST /scans/{id}/export")
        if not is_terminal(self.phase(scan)):
            raise ExportError(
                "scan is still running",
                scanner_id=self.scanner_id,
                endpoint="POST /scans/{id}/export",
                status=409,
            )
        body = generate_export(
            hosts=scan.targets,
            scan_name=scan.name,
            credentialed=scan.credentialed,
            ssh_username="scan" if scan.credentialed else None,
            seed=7,
            items_per_host=3,
        )
        await asyncio.to_thread(_write_file, dest, body)
        await self._leave("export_scan")
        return ExportResult(
            path=str(dest),
            size_bytes=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            file_id=scan_id,
        )

    async def close(self) -> None:
        self.closed = True


def _write_file(dest: Path, body: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(body)


class Held(BaseStore):
    """A real store (SQLite or PostgreSQL, by the backend class it is mixed into) whose
    commits can be held: between :meth:`hold` and :meth:`release` the writer waits before
    each commit, so rows pile up in their queue in the order the engine queued them,
    exactly as behind a slow disk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate: asyncio.Event | None = None
        self._hold_at: set[str] = set()
        #: ``(task_id, event)`` of every event row queued, in queue order
        self.enqueued: list[tuple[str, str]] = []

    def hold(self) -> None:
        """Hold every commit from now until :meth:`release`."""
        if self._gate is None:
            self._gate = asyncio.Event()

    def hold_at(self, event: str) -> None:
        """Hold commits from the moment an event row named ``event`` is queued."""
        self._hold_at.add(event)

    def release(self) -> None:
        self._hold_at.clear()
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def enqueue(self, ops: list[Op], *, bulk: bool = False) -> asyncio.Future[None]:
        for sql, params in ops:
            if sql == Q_INSERT_EVENT:
                self.enqueued.append((str(params[0]), str(params[2])))
                if params[2] in self._hold_at:
                    self.hold()
        return super().enqueue(ops, bulk=bulk)

    async def _commit(self, ops: list[Op]) -> None:
        gate = self._gate
        if gate is not None:
            await gate.wait()
        await super()._commit(ops)


class HeldStore(Held, Store):
    """A held SQLite store (see :class:`Held`)."""


def held_store(path: Path, store_url: str | None = None) -> Held:
    """A held store: PostgreSQL at ``store_url`` when given, else SQLite under ``path``."""
    if store_url is None:
        return HeldStore(path / "state.db")
    from nessus_pool.store.pg import PgStore  # asyncpg is an optional dependency

    class HeldPgStore(Held, PgStore):
        pass

    return HeldPgStore(store_url)


FAST_POOL = PoolConfig(name="lan", poll_interval_s=1.0, max_attempts=3)


@dataclass
class Rig:
    """An engine on a fake clock and a held-able real store, with one :class:`FakeNessus`
    per scanner (``fakes[scanner_id]``)."""

    engine: Engine
    store: Held
    clock: FakeClock
    fakes: dict[str, FakeNessus]
    path: Path
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def task(self, **kw: Any) -> Task:
        n = next(self._seq)
        now = self.clock.now_ms()
        base: dict[str, Any] = {
            "task_id": f"t{n:04d}",
            "seq": self.engine.next_seq(),
            "pool": "lan",
            "name": f"scan {n}",
            "targets": ["10.0.0.1"],
            "scan_type": ScanType.UNTRUSTED,
            "created_at_ms": now,
            "updated_at_ms": now,
        }
        base.update(kw)
        return Task(**base)

    async def submit(self, inline: SshCredential | None = None, **kw: Any) -> Task:
        return await self.engine.submit(self.task(**kw), inline)

    async def flush(self) -> None:
        """Wait until every row queued so far is committed (an empty write queues behind
        them and commits in order), then let the woken coroutines run."""
        await self.store.write([])
        await settle()

    async def until(
        self, cond: Any, *, step_s: float = 1.0, limit: int = 2000, flush: bool = True
    ) -> None:
        """Run the engine (commit, let it react, move the clock ``step_s``) until ``cond()``
        holds; fail after ``limit`` steps instead of hanging. ``flush=False`` while the
        store is held."""
        for _ in range(limit):
            if cond():
                return
            if flush:
                await self.flush()
            else:
                await settle()
            if cond():
                return
            await self.clock.advance(step_s)
        raise AssertionError(f"condition not met after {limit} steps of {step_s}s")

    async def stored(self, task_id: str) -> Task:
        await self.flush()
        t = await self.store.get_task(task_id)
        assert t is not None, task_id
        return t


@asynccontextmanager
async def engine_rig(
    path: Path,
    *,
    scanners: int = 1,
    cap: int = 1,
    pool: PoolConfig = FAST_POOL,
    scan_s: float = 60.0,
    clock: FakeClock | None = None,
    fakes: dict[str, FakeNessus] | None = None,
    delete_remote_scans: bool = False,
    scanner_ids: list[str] | None = None,
    simulated: bool = False,
    store_url: str | None = None,
) -> AsyncIterator[Rig]:
    """A started :class:`Engine` on a real SQLite file under ``path`` (or a PostgreSQL
    database at ``store_url``) with ``scanners`` fake scanners (``fake-1``... or
    ``scanner_ids``) of ``cap`` slots in pool ``lan``.
    Pass the ``clock`` and ``fakes`` of an earlier rig on the same ``path`` (and
    ``store_url``) to simulate a restart (with new ``fakes`` and ``simulated=True``: the
    embedded simulator, which loses its scans with the process)."""
    clock = clock or FakeClock()
    fakes = fakes if fakes is not None else {}
    specs = []
    for sid in scanner_ids or [f"fake-{i}" for i in range(1, scanners + 1)]:
        fakes.setdefault(sid, FakeNessus(sid, clock, scan_s=scan_s))
        specs.append(
            ScannerSpec(
                scanner_id=sid,
                pool=pool.name,
                url=f"fake://{sid}",
                capacity=cap,
                simulated=simulated,
            )
        )
    store = held_store(path, store_url)
    await store.open()
    engine = Engine(
        store=store,
        clock=clock,
        exports_dir=path / "exports",
        client_factory=lambda spec: fakes[spec.scanner_id],
        credentials=lambda name: None,
    )
    engine.delete_remote_scans = delete_remote_scans
    rig = Rig(engine=engine, store=store, clock=clock, fakes=fakes, path=path)
    try:
        await engine.start([pool], specs)
        yield rig
    finally:
        store.release()
        # no grace on the fake clock (nothing would move it): leaving is a crash
        await engine.stop(grace_s=0.0)
        await store.close()


async def settle(rounds: int = 20) -> None:
    """Let every ready callback run (a bounded number of loop turns; no sleep)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
