"""One scanner's HTTP request slots, handed out by urgency.

A scanner takes a bounded number of our calls at once. When they are all in use, the next
free one goes to the most urgent caller waiting: a launch (create, launch, the look-ups
around them, stop/pause/resume) before a status poll, a poll before an export. So a freed
scan slot is refilled without queueing behind a wave of polls and downloads, and exports
(which hold their request slot while the scanner builds the file and while it downloads)
are capped on their own so that they can never take every slot.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class CallPriority(enum.IntEnum):
    """Lower is served first."""

    #: the steps between a freed slot and a running scan, and the user's own requests
    LAUNCH = 0
    #: ``GET /scans/{id}`` while a scan runs
    POLL = 1
    #: asking for, waiting on and downloading an export
    EXPORT = 2


class RequestGate:
    """At most ``limit`` calls in flight; at most ``export_limit`` of them exports. A freed
    slot goes to the waiter with the lowest :class:`CallPriority` (first come, first served
    within one), never to a newcomer ahead of a waiter. Create inside the running loop."""

    def __init__(self, limit: int, *, export_limit: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        #: exports hold their slot for minutes (the scanner builds the file, then it
        #: downloads): half the slots by default, and one is always left to the rest
        wanted = export_limit if export_limit is not None else max(1, limit // 2)
        self.export_limit = max(1, min(wanted, limit - 1))
        self.in_use = 0
        self.exports_in_use = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        #: exports waiting for the export cap (not for a request slot)
        self._export_waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def waiting(self) -> int:
        """Callers waiting for a request slot (not counting exports held by the cap)."""
        return sum(1 for _, _, f in self._waiters if not f.done())

    @asynccontextmanager
    async def slot(self, priority: CallPriority) -> AsyncIterator[None]:
        """Hold one request slot (and, for an export, one of the export slots)."""
        if priority is CallPriority.EXPORT:
            await self._acquire_export()
            try:
                await self._acquire(priority)
                try:
                    yield
                finally:
                    self._release()
            finally:
                self._release_export()
        else:
            await self._acquire(priority)
            try:
                yield
            finally:
                self._release()

    async def _acquire(self, priority: CallPriority) -> None:
        self._prune()
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed to us as we were cancelled: pass it on
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot passes on: in_use is unchanged
                return
        self.in_use -= 1

    def _prune(self) -> None:
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)

    async def _acquire_export(self) -> None:
        if self.exports_in_use < self.export_limit and not self._export_waiters:
            self.exports_in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._export_waiters.append((next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release_export()
            raise

    def _release_export(self) -> None:
        while self._export_waiters:
            _, fut = self._export_waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                return
        self.exports_in_use -= 1
