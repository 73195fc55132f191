"""Supervision of the engine's background tasks, as procrastinate's worker does it.

Every background task is named and tracked. An *essential* one (a pool's dispatcher, a
scanner's probe loop, housekeeping) that raises ends the engine's health: :attr:`death`
says why, ``on_death`` hooks run once (the daemon stops and exits non-zero, so systemd
restarts it), and readiness fails. Task runners are not essential: they map their own
errors to outcomes. A stop cancels everything except work inside :meth:`critical`, which
gets a grace period first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from nessus_pool.clock import Clock, sleep_or_event

log = logging.getLogger("nessus_pool.engine")


async def _after(gate: asyncio.Event, coro: Coroutine[Any, Any, None]) -> None:
    try:
        await gate.wait()
    except BaseException:
        coro.close()  # cancelled before it began: never started, nothing to undo
        raise
    await coro


class Supervisor:
    def __init__(self, clock: Clock, *, shutdown_grace_s: float = 20.0) -> None:
        self.clock = clock
        self.shutdown_grace_s = shutdown_grace_s
        self.tasks: set[asyncio.Task[None]] = set()
        #: background loops the engine cannot work without
        self._essential: set[asyncio.Task[None]] = set()
        #: tasks in a critical section (export, ingest, final write): a stop waits for them
        self._critical: set[asyncio.Task[Any]] = set()
        self.stopping = False
        #: why the engine is broken (an essential task died), or None
        self.death: str | None = None
        #: called once with :attr:`death` when the first essential task dies
        self.on_death: list[Callable[[str], None]] = []
        #: while set (a held start), new tasks wait for it
        self.gate: asyncio.Event | None = None

    def spawn(self, coro: object, name: str, *, essential: bool = True) -> asyncio.Task[None]:
        if self.gate is not None:
            coro = _after(self.gate, coro)  # type: ignore[arg-type]
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.add(task)
        if essential:
            self._essential.add(task)
        task.add_done_callback(self._reap)
        return task

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Mark the current task as finishing work a stop should let complete."""
        task = asyncio.current_task()
        assert task is not None
        self._critical.add(task)
        try:
            yield
        finally:
            self._critical.discard(task)

    async def stop(self, grace_s: float | None = None) -> None:
        """Cancel every task except those in a critical section, which get ``grace_s``
        (default :attr:`shutdown_grace_s`) of the clock to finish before they are
        cancelled too; return once all have ended."""
        self.stopping = True
        grace_s = self.shutdown_grace_s if grace_s is None else grace_s
        busy = {t for t in self._critical if not t.done()}
        for t in list(self.tasks):
            if t not in busy:
                t.cancel(msg="engine stopping")
        if busy:
            log.info(
                "waiting for results in flight",
                extra={"event": "engine_draining", "tasks": len(busy), "grace_s": grace_s},
            )
            drained = asyncio.Event()
            waiter = asyncio.ensure_future(asyncio.wait(busy))
            waiter.add_done_callback(lambda _: drained.set())
            await sleep_or_event(self.clock, drained, grace_s)
            waiter.cancel()
            left = [t for t in busy if not t.done()]
            if left:
                log.warning(
                    "grace period over, cancelling",
                    extra={"event": "engine_grace_expired", "tasks": len(left)},
                )
            for t in left:
                t.cancel(msg=f"engine stopping: {grace_s:g}s grace period over")
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        essential = task in self._essential
        self._essential.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error(
            "background task died",
            exc_info=exc,
            extra={
                "event": "background_task_died",
                "task": task.get_name(),
                "essential": essential,
                "error": type(exc).__name__,
            },
        )
        if essential and not self.stopping and self.death is None:
            self.death = f"{task.get_name()}: {type(exc).__name__}: {exc}"[:500]
            log.critical(
                "essential background task died, the daemon must stop",
                extra={
                    "event": "engine_essential_task_died",
                    "task": task.get_name(),
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                },
            )
            for hook in self.on_death:
                hook(self.death)
