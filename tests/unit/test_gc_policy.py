"""The daemon's garbage-collection policy (nessus_pool.gc_policy): full collections run on
the daemon's clock, not whenever CPython's thresholds say."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from nessus_pool.clock import FakeClock
from nessus_pool.gc_policy import full_collections, manual_full_collections


@pytest.fixture
def generations() -> Iterator[list[int]]:
    """The generation of every collection that ends while the test runs."""
    seen: list[int] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            seen.append(int(info["generation"]))

    gc.callbacks.append(on_gc)
    try:
        yield seen
    finally:
        gc.callbacks.remove(on_gc)


def test_automatic_full_collections_stop_and_the_thresholds_come_back() -> None:
    before = gc.get_threshold()
    restore = manual_full_collections()
    try:
        young0, young1, full = gc.get_threshold()
        assert (young0, young1) == before[:2]  # the young generations keep theirs
        assert full >= 1 << 30
    finally:
        restore()
    assert gc.get_threshold() == before


async def test_without_automatic_ones_a_full_collection_runs_once_per_interval(
    generations: list[int],
) -> None:
    clock = FakeClock()
    restore = manual_full_collections()
    task = asyncio.create_task(full_collections(clock, 300.0))
    await asyncio.sleep(0)  # it sleeps from now
    try:
        # allocation alone (many gen-1 collections) no longer starts a full one
        junk: list[list[object]] = []
        for _ in range(200_000):
            junk.append([])
        del junk
        await clock.advance(299.0)
        assert 2 not in generations
        await clock.advance(1.0)
        assert generations.count(2) == 1
        await clock.advance(300.0)
        assert generations.count(2) == 2
    finally:
        task.cancel()
        restore()
        await asyncio.gather(task, return_exceptions=True)


async def test_young_generations_are_collected_on_a_timer_while_old_objects_are_freed() -> None:
    """CPython counts a young collection's trigger as allocations minus deallocations, old
    objects' included: objects made while as many old ones are freed (a daemon's runners
    replacing their sleeping coroutines each poll) never trigger one, and the young
    generations grew to 46,000-102,000 objects, each collection of them a 30-85 ms pause.
    With the daemon's collection task running they hold what 0.1 s allocated."""
    restore = manual_full_collections()
    task = asyncio.create_task(full_collections(FakeClock(), 300.0))
    old: list[list[object]] = [[] for _ in range(60_000)]
    gc.collect()  # now old: freeing them counts against the new ones
    young: list[list[object]] = []
    try:
        for _ in range(12):
            for _ in range(5_000):
                old.pop()
                young.append([])
            await asyncio.sleep(0.03)
        # the next timed collection after the last allocation (bounded: none would fail)
        collected = asyncio.Event()

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "stop" and info["generation"] >= 1:
                collected.set()

        gc.callbacks.append(on_gc)
        try:
            await asyncio.wait_for(collected.wait(), 5.0)
        finally:
            gc.callbacks.remove(on_gc)
        assert len(young) == 60_000
        assert len(gc.get_objects(0)) + len(gc.get_objects(1)) < 20_000
    finally:
        task.cancel()
        restore()
        await asyncio.gather(task, return_exceptions=True)
