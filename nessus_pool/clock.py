"""Time, injected: everything that reads time or sleeps takes a :class:`Clock`.

Tests use :class:`FakeClock` to move time forward without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the epoch (for timestamps)."""

    def monotonic_s(self) -> float:
        """Monotonic seconds (for durations and deadlines)."""

    async def sleep(self, delay_s: float) -> None:
        """Sleep for ``delay_s`` seconds of this clock's time."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_s(self) -> float:
        return time.monotonic()

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(max(0.0, delay_s))


class FakeClock:
    """A clock that only moves when told to. ``sleep`` waits until :meth:`advance` passes
    its deadline; ``advance`` wakes sleepers in deadline order, letting each run."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:
        self._now_s = start_ms / 1000.0
        self._mono_s = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now_ms(self) -> int:
        return int(self._now_s * 1000)

    def monotonic_s(self) -> float:
        return self._mono_s

    async def sleep(self, delay_s: float) -> None:
        if delay_s <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono_s + delay_s, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def step_wall(self, delta_s: float) -> None:
        """Step wall-clock time only (an NTP correction); monotonic time does not move."""
        self._now_s += delta_s

    async def advance(self, delta_s: float) -> None:
        """Move time forward by ``delta_s``, waking each sleeper whose deadline passes and
        giving the loop a few turns after each so woken code runs before time moves on."""
        target = self._mono_s + delta_s
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            step = max(0.0, deadline - self._mono_s)
            self._mono_s += step
            self._now_s += step
            if not fut.done():
                fut.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
        step = target - self._mono_s
        self._mono_s = target
        self._now_s += step
        for _ in range(5):
            await asyncio.sleep(0)


async def sleep_or_event(clock: Clock, event: asyncio.Event, delay_s: float) -> bool:
    """Sleep ``delay_s`` on ``clock`` or until ``event`` is set, whichever comes first.
    Returns True if the event woke us. Does not clear the event."""
    if event.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(delay_s))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
    return event.is_set()
