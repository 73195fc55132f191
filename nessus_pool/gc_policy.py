"""The daemon's garbage-collection policy: full collections on a timer, not on allocation.

CPython runs a full (generation 2) collection after every 10 collections of generation 1,
once a quarter of the long-lived heap is new. It walks every tracked object that lived
through two younger collections and is not frozen: in a daemon running 2,000 scans (500
scanners x 4 slots) that was ~370,000 objects (runner coroutines, futures, timers,
per-scanner metrics), and each walk stopped the event loop for 200-300 ms, 7 times in 90 s,
with every launch in flight waiting behind it: most of the freed slot -> launch p99
(bench/README.md, "Scale, round three"). Each found only 0-300 objects of cyclic garbage:
almost everything the daemon drops is freed by reference counting.

So, while a daemon runs, generation 2 is collected only by :func:`full_collections`, every
:data:`FULL_COLLECTION_INTERVAL_S` of the daemon's clock (the young generations stay
automatic: 1-15 ms each). The cyclic garbage of a few minutes waits for it; the loop stalls
a few times an hour instead of every ~13 s.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable

from nessus_pool.clock import Clock

log = logging.getLogger("nessus_pool.daemon")

#: seconds between two full collections while automatic ones are off
FULL_COLLECTION_INTERVAL_S = 300.0
#: generation-1 collections before CPython would run a full one on its own: never, in practice
_NEVER = 1 << 30


#: the interpreter's thread switch interval while a daemon runs (CPython's default: 5 ms)
SWITCH_INTERVAL_S = 0.0005


def daemon_runtime() -> Callable[[], None]:
    """The process settings of a running daemon (or simulator): :func:`manual_full_collections`
    and a short thread switch interval. Returns the function that restores both.

    A thread running Python (an export parsed, a simulated export built) keeps the GIL
    until the event loop's thread has waited :data:`SWITCH_INTERVAL_S` for it, at every
    turn of the loop: with CPython's 5 ms, one such thread made each loop turn wait p50 5.2
    ms (p99 10.6), with 0.5 ms p50 0.7 (p99 2.4); six threads 44.6 ms (p99 197) against 5.8
    (p99 38.5) (bench/gil_convoy.py). The launches of a wave of freed slots wait in those
    turns while the wave's exports are parsed (bench/README.md, "Scale, round four")."""
    restore_gc = manual_full_collections()
    before_s = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    def restore() -> None:
        sys.setswitchinterval(before_s)
        restore_gc()

    return restore


def manual_full_collections() -> Callable[[], None]:
    """Stop CPython's automatic full collections (the young generations keep theirs) and
    return the function that restores the thresholds found."""
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], _NEVER)

    def restore() -> None:
        gc.set_threshold(*before)

    return restore


#: seconds (real time) between two collections of the young generations
YOUNG_COLLECTION_INTERVAL_S = 0.1


async def young_collections(interval_s: float = YOUNG_COLLECTION_INTERVAL_S) -> None:
    """Collect the young generations every ``interval_s`` of real time, forever.

    CPython 3.11 counts a young collection's trigger as allocations minus deallocations,
    and the deallocation of an old object counts too: a daemon whose 2,000 runners
    replace their sleeping coroutines, tasks and futures every poll (allocated young,
    alive for 10 s, freed old) keeps that count near zero while the young generations
    fill. bench/scale.py's daemon had 46,000-102,000 live objects in them at its slow
    generation-1 collections (coroutines, contexts, futures, tasks; 0 of them garbage),
    which took up to 69-85 ms of CPU each with the loop stopped. On a timer they hold what
    one interval allocated."""
    while True:
        await asyncio.sleep(interval_s)
        gc.collect(1)


async def full_collections(clock: Clock, interval_s: float = FULL_COLLECTION_INTERVAL_S) -> None:
    """Run a full collection every ``interval_s`` of ``clock``, and :func:`young_collections`
    beside it, forever (a background task: cancel it to stop)."""
    async with asyncio.TaskGroup() as group:
        group.create_task(young_collections(), name="gc:young")
        await _full_collections(clock, interval_s)


async def _full_collections(clock: Clock, interval_s: float) -> None:
    while True:
        await clock.sleep(interval_s)
        started_s = time.perf_counter()  # the pause itself, not the clock's time
        found = gc.collect()
        log.debug(
            "full garbage collection",
            extra={
                "event": "gc_full_collection",
                "objects": found,
                "pause_ms": round((time.perf_counter() - started_s) * 1000, 1),
            },
        )
