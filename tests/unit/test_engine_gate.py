"""A scanner's request slots by urgency (issue #18): a launch never queues behind polls or
exports for a slot, exports never hold every slot, and the per-scanner limit holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.engine.gate import CallPriority, RequestGate
from nessus_pool.engine.scanner import ScannerHandle, ScannerSpec
from nessus_pool.models import TaskStatus
from nessus_pool.retry import RetryPolicy
from nessus_pool.testing import FAST_POOL, FakeNessus, engine_rig, settle


async def _hold(gate: RequestGate, prio: CallPriority, order: list[str], name: str,
                release: asyncio.Event) -> None:  # fmt: skip
    async with gate.slot(prio):
        order.append(name)
        await release.wait()


async def test_a_freed_slot_goes_to_the_launch_before_earlier_polls_and_exports() -> None:
    gate = RequestGate(2)
    order: list[str] = []
    release = {n: asyncio.Event() for n in ("p1", "p2", "e1", "p3", "l1")}
    tasks = [
        asyncio.create_task(_hold(gate, CallPriority.POLL, order, n, release[n]))
        for n in ("p1", "p2")
    ]
    await settle()
    # waiting in this order: an export, a poll, then the launch
    tasks.append(asyncio.create_task(_hold(gate, CallPriority.EXPORT, order, "e1", release["e1"])))
    await settle()
    tasks.append(asyncio.create_task(_hold(gate, CallPriority.POLL, order, "p3", release["p3"])))
    await settle()
    tasks.append(asyncio.create_task(_hold(gate, CallPriority.LAUNCH, order, "l1", release["l1"])))
    await settle()
    assert order == ["p1", "p2"] and gate.in_use == 2 and gate.waiting == 3
    release["p1"].set()
    await settle()
    assert order == ["p1", "p2", "l1"]
    release["p2"].set()
    await settle()
    assert order == ["p1", "p2", "l1", "p3"]
    release["l1"].set()
    await settle()
    assert order == ["p1", "p2", "l1", "p3", "e1"]
    assert gate.in_use == 2  # never more than the limit
    for ev in release.values():
        ev.set()
    await asyncio.gather(*tasks)
    assert gate.in_use == 0 and gate.exports_in_use == 0


async def test_exports_never_take_every_slot() -> None:
    gate = RequestGate(4)  # exports: half of the slots
    assert gate.export_limit == 2
    order: list[str] = []
    release = asyncio.Event()
    exports = [
        asyncio.create_task(_hold(gate, CallPriority.EXPORT, order, f"e{i}", release))
        for i in range(4)
    ]
    await settle()
    assert order == ["e0", "e1"] and gate.in_use == 2
    launch = asyncio.create_task(_hold(gate, CallPriority.LAUNCH, order, "l", asyncio.Event()))
    poll = asyncio.create_task(_hold(gate, CallPriority.POLL, order, "p", asyncio.Event()))
    await settle()
    assert order[2:] == ["l", "p"]  # at once, with two exports waiting for their cap
    launch.cancel()
    poll.cancel()
    release.set()
    await asyncio.gather(*exports)
    assert order[4:] == ["e2", "e3"]
    assert gate.in_use == 0 and gate.exports_in_use == 0
    assert RequestGate(1).export_limit == 1  # one slot: the export must be able to run
    assert RequestGate(8, export_limit=8).export_limit == 7


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    gate = RequestGate(1)
    release = asyncio.Event()
    order: list[str] = []
    holder = asyncio.create_task(_hold(gate, CallPriority.POLL, order, "a", release))
    await settle()
    gone = asyncio.create_task(_hold(gate, CallPriority.LAUNCH, order, "gone", asyncio.Event()))
    nxt = asyncio.create_task(_hold(gate, CallPriority.POLL, order, "b", release))
    await settle()
    gone.cancel()
    await settle()
    release.set()
    await asyncio.gather(holder, nxt)
    assert order == ["a", "b"] and gate.in_use == 0
    # handed a slot in the same turn it was cancelled: it passes the slot on
    blocker = asyncio.Event()
    first = asyncio.create_task(_hold(gate, CallPriority.POLL, order, "c", blocker))
    await settle()
    late = asyncio.create_task(_hold(gate, CallPriority.LAUNCH, order, "late", asyncio.Event()))
    last = asyncio.create_task(_hold(gate, CallPriority.POLL, order, "d", asyncio.Event()))
    await settle()
    blocker.set()
    await asyncio.sleep(0)  # "c" leaves and hands its slot to "late"
    late.cancel()
    await settle()
    assert order[-1] == "d" and gate.in_use == 1
    last.cancel()
    await asyncio.gather(first, last, late, return_exceptions=True)
    assert gate.in_use == 0


async def test_a_scanner_call_for_a_launch_runs_before_pending_polls() -> None:
    """Through ScannerHandle.call on a fake scanner: with its request slots full of polls
    and more polls waiting, the create runs next."""
    clock = FakeClock()
    fake = FakeNessus("s1", clock)
    spec = ScannerSpec(scanner_id="s1", pool="lan", url="fake://s1", capacity=4)
    sc = ScannerHandle(spec, fake, clock, http_concurrency=2)
    policy = RetryPolicy()
    started: list[str] = []
    gates = {name: asyncio.Event() for name in ("p0", "p1", "p2", "p3", "p4", "create")}

    def op(name: str) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            started.append(name)
            await gates[name].wait()
            return name

        return run

    calls: list[asyncio.Task[str]] = [
        asyncio.create_task(sc.call(op(f"p{i}"), policy, priority=CallPriority.POLL))
        for i in range(5)
    ]
    await settle()
    calls.append(asyncio.create_task(sc.call(op("create"), policy, idempotent=False)))
    await settle()
    assert started == ["p0", "p1"]
    gates["p0"].set()
    await settle()
    assert started == ["p0", "p1", "create"]
    for ev in gates.values():
        ev.set()
    assert await asyncio.gather(*calls) == ["p0", "p1", "p2", "p3", "p4", "create"]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        RequestGate(0)


async def test_an_export_waiting_for_the_export_cap_keeps_its_whole_deadline(
    tmp_path: Path,
) -> None:
    pool = msgspec.structs.replace(FAST_POOL, export_deadline_s=100.0)
    async with engine_rig(tmp_path, scanners=1, cap=2, pool=pool, scan_s=10.0) as rig:
        fake = rig.fakes["fake-1"]
        rig.engine.scanners["fake-1"].gate = RequestGate(2)  # one export at a time
        held = fake.hold("export_scan")
        tasks = [await rig.submit() for _ in range(2)]
        await rig.until(lambda: held.entered.is_set())
        await rig.clock.advance(150.0)  # past the deadline the second had when it ended
        await rig.flush()
        assert fake.count("export_scan") == 1  # the second waits for the export cap
        released_s = rig.clock.monotonic_s()
        held.release.set()
        await rig.until(lambda: all(t.status.is_terminal for t in tasks))
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 2
    second = fake.export_deadlines_at_s[1]
    assert second is not None and second >= released_s + 100.0
