"""Maintenance windows and pause/resume, the engine side.

- Each scanner's :class:`~nessus_pool.windows.Calendar` (its pool's windows and its own) is
  built from the config here, at start and on reload; dispatch asks ``sc.in_window(now)``.
- One supervised loop (``windows``) sleeps on the engine clock until the next window starts
  or ends (never polling): when one ends it wakes the pool's dispatcher and resumes the scans
  the window paused; when one starts, running scans follow its ``on-window``: ``finish``
  (nothing), ``pause`` (paused on the scanner) or ``stop`` (stopped and requeued).
- A pause or resume (a person's or a window's) is a :class:`Switch` handed to the task's
  runner, which makes the scanner call and the status change in its watch loop
  (:func:`switch_step`): the runner stays the one that talks to the scanner about its scan.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from prometheus_client.core import GaugeMetricFamily

from nessus_pool.clock import sleep_or_event
from nessus_pool.config import calendar_of
from nessus_pool.engine.pool import waiting_reason
from nessus_pool.errors import ConflictError, NotFoundError, ScannerError
from nessus_pool.models import Task, TaskStatus
from nessus_pool.nessus import RemotePhase
from nessus_pool.windows import Calendar

if TYPE_CHECKING:
    from nessus_pool.engine.core import Engine
    from nessus_pool.engine.runner import RunControl, TaskRunner
    from nessus_pool.engine.scanner import ScannerHandle

log = logging.getLogger("nessus_pool.engine")

#: the loop re-reads the calendars at least this often (a wall clock stepped by NTP moves
#: window boundaries against the monotonic sleep)
MAX_NAP_S = 300.0
#: how long a person's pause or resume waits for the scanner's answer
SWITCH_TIMEOUT_S = 60.0
#: how long a pause or resume waits for a scan between two phases (pausing, resuming)
SETTLE_LIMIT_S = 30.0

USER = "user"
WINDOW = "window"
_LAUNCHED = (TaskStatus.DISPATCHING, TaskStatus.RUNNING)
_PAUSED = TaskStatus.PAUSED


@dataclass
class Switch:
    """A pause or resume asked of a runner; ``done`` gets None or why it did not happen."""

    action: str  # "pause" | "resume" | "stop" (a window's)
    by: str  # USER | WINDOW
    done: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class WindowKeeper:
    """The engine's windows: calendars, the boundary loop, pause and resume."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.changed = asyncio.Event()
        #: scanner id -> inside a window at the last pass (absent: not looked at yet)
        self.inside: dict[str, bool] = {}
        #: each pool's own windows (shared by its scanners that have none of their own, so
        #: a pool of 500 scanners computes its windows once per boundary, not 500 times)
        self.pool_calendars: dict[str, Calendar] = {}

    def refresh(self) -> None:
        """(Re)build every scanner's calendar from its pool's config (start, reload)."""
        self.pool_calendars = {}
        for pool in self.e.pools.values():
            shared = self.pool_calendars[pool.name] = calendar_of(pool.config.maintenance_windows)
            own = {s.id: s.maintenance_windows for s in pool.config.scanners}
            for sc in pool.scanners.values():
                extra = own.get(sc.scanner_id)
                sc.calendar = (
                    calendar_of(pool.config.maintenance_windows, extra) if extra else shared
                )
        self.changed.set()

    async def run(self) -> None:
        """The boundary loop (supervised, essential): act at every window start and end."""
        while True:
            self.changed.clear()
            now_ms = self.e.clock.now_ms()
            self.apply(now_ms)
            changes = [
                c
                for sc in list(self.e.scanners.values())
                if (c := sc.calendar.next_change_ms(now_ms)) is not None
            ]
            delay_s = MAX_NAP_S
            if changes:
                # one millisecond past the boundary: the window has ended (or begun) then
                delay_s = min(MAX_NAP_S, (min(changes) - now_ms) / 1000 + 0.001)
            await sleep_or_event(self.e.clock, self.changed, max(0.001, delay_s))

    def apply(self, now_ms: int) -> None:
        """Compare each scanner with the last pass: a window that began applies its
        ``on-window`` to the scans running there; one that ended releases the pool."""
        for sid in [s for s in self.inside if s not in self.e.scanners]:
            del self.inside[sid]
        for sc in list(self.e.scanners.values()):
            inside = sc.in_window(now_ms)
            was = self.inside.get(sc.scanner_id)
            self.inside[sc.scanner_id] = inside
            if inside and was is not True:
                span = sc.calendar.current(now_ms)
                action = span.on_window if span is not None else "finish"
                if was is not None:
                    log.info(
                        "maintenance window started",
                        extra={
                            "event": "window_started",
                            "scanner": sc.scanner_id,
                            "on_window": action,
                            "until_ms": span.end_ms if span else None,
                        },
                    )
                # one being launched now is paused or stopped once it runs (the runner
                # carries out either only in its watch loop)
                for t in self._tasks_on(sc):
                    if action == "pause" and t.status in _LAUNCHED:
                        self._ask(t, "pause", WINDOW)
                    elif action == "stop" and (t.status in _LAUNCHED or t.status is _PAUSED):
                        self._stop_for_window(t)
            elif not inside and was is not False:
                if was is not None:
                    log.info(
                        "maintenance window ended",
                        extra={"event": "window_ended", "scanner": sc.scanner_id},
                    )
                for t in self._tasks_on(sc):
                    if t.status is TaskStatus.PAUSED and t.paused_by == WINDOW:
                        self._ask(t, "resume", WINDOW)
                pool = self.e.pools.get(sc.spec.pool)
                if pool is not None:
                    pool.wake.set()

    def _tasks_on(self, sc: ScannerHandle) -> list[Task]:
        tasks = (self.e.tasks.get(tid) for tid in list(sc.slots.active))
        return [t for t in tasks if t is not None and self.e.owns(t)]

    def _stop_for_window(self, t: Task) -> None:
        control = self.e.controls.get(t.task_id)
        if control is None or control.window_stop or control.cancel_requested:
            return
        self._ask(t, "stop", WINDOW)

    def _ask(self, t: Task, action: str, by: str) -> Switch | None:
        """Hand ``action`` to the task's runner (None if it has none: never raises, the
        boundary loop calls it)."""
        control = self.e.controls.get(t.task_id)
        if control is None:
            return None
        old = control.switch
        if old is not None and not old.done.done():
            if old.action == action:  # the same asked twice (concurrent clients): one call
                if by == USER:
                    old.by = USER
                return old
            old.done.set_result(f"replaced by a later {action}")
        sw = Switch(action, by)
        control.switch = sw
        control.wake.set()
        sw.done.add_done_callback(functools.partial(self._switched, task_id=t.task_id))
        return sw

    def _switched(self, fut: asyncio.Future[str | None], task_id: str) -> None:
        self.e.committed(cast("asyncio.Future[None]", fut), task_id)

    def in_window_until_ms(self, sc: ScannerHandle, now_ms: int) -> int | None:
        span = sc.calendar.current(now_ms)
        return None if span is None else span.end_ms

    # --- a person's pause and resume ---------------------------------------------------

    async def pause(self, task_id: str) -> Task:
        """Pause a running scan on its scanner (it keeps its slot). Refused (409, naming
        the status) where Nessus cannot pause: not launched yet, exporting, ended."""
        if self.e.cluster is not None and task_id not in self.e.tasks:
            return await self._remote(task_id, "pause")
        t = await self._live(task_id, "pause")
        if t.status is TaskStatus.PAUSED:
            if t.paused_by != USER:  # a person's pause outlasts the window's
                fut = self.e.change(t, TaskStatus.PAUSED, "paused", ev_reason=USER, paused_by=USER)
                await fut
                self.e.committed(fut, t.task_id)
            return t
        if t.status is not TaskStatus.RUNNING:
            raise ConflictError(cannot("pause", t), status=t.status.value, field="task_id")
        return await self._switch(t, "pause")

    async def resume(self, task_id: str) -> Task:
        """Resume a paused scan. Refused while its scanner is in a maintenance window."""
        if self.e.cluster is not None and task_id not in self.e.tasks:
            return await self._remote(task_id, "resume")
        t = await self._live(task_id, "resume")
        if t.status is TaskStatus.RUNNING:
            return t
        if t.status is not TaskStatus.PAUSED:
            raise ConflictError(cannot("resume", t), status=t.status.value, field="task_id")
        sc = self.e.scanners.get(t.scanner_id or "")
        now_ms = self.e.clock.now_ms()
        until = None if sc is None else self.in_window_until_ms(sc, now_ms)
        if until is not None:
            raise ConflictError(
                f"task {task_id} cannot resume now: scanner {t.scanner_id} is in a "
                f"maintenance window for {max(0, until - now_ms) // 1000} s more",
                status=t.status.value,
                field="task_id",
            )
        return await self._switch(t, "resume")

    async def _remote(self, task_id: str, action: str) -> Task:
        """[cluster] Another daemon runs the scan (or none does right now): its owner is
        asked through the database and does the switch itself; refusals are conflicts."""
        assert self.e.cluster is not None
        t = await self.e.store.get_task(task_id)
        if t is None:
            raise NotFoundError(f"task {task_id!r} not found", field="task_id")
        want = TaskStatus.PAUSED if action == "pause" else TaskStatus.RUNNING
        if t.status is want and (action == "resume" or t.paused_by == USER):
            return t  # so already: asked twice, one scanner call
        if t.status not in (TaskStatus.RUNNING, TaskStatus.PAUSED):
            raise ConflictError(cannot(action, t), status=t.status.value, field="task_id")
        refused = await self.e.cluster.ask_switch(task_id, action, SWITCH_TIMEOUT_S)
        if refused is not None:
            raise ConflictError(refused, status=t.status.value, field="task_id")
        after = await self.e.store.get_task(task_id)
        return after if after is not None else t

    async def _live(self, task_id: str, action: str) -> Task:
        t = self.e.tasks.get(task_id)
        if t is None:
            stored = await self.e.store.get_task(task_id)
            if stored is None:
                raise NotFoundError(f"task {task_id!r} not found", field="task_id")
            raise ConflictError(
                f"task {task_id} cannot {action}: it has ended ({stored.status.value})",
                status=stored.status.value,
                field="task_id",
            )
        ending = self.e.ending.get(task_id)
        if ending is not None:
            raise ConflictError(
                f"task {task_id} cannot {action}: it has ended ({ending.status.value})",
                status=ending.status.value,
                field="task_id",
            )
        control = self.e.controls.get(task_id)
        if control is not None and control.cancel_requested:
            raise ConflictError(
                f"task {task_id} cannot {action}: it is being canceled",
                status=t.status.value,
                field="task_id",
            )
        return t

    async def _switch(self, t: Task, action: str) -> Task:
        sw = self._ask(t, action, USER)
        if sw is None:
            raise ConflictError(
                f"task {t.task_id} cannot {action} now: its runner is not attached yet; "
                "try again in a moment",
                status=t.status.value,
                field="task_id",
            )
        # on the engine clock; a caller that leaves does not withdraw the switch
        sleeper: asyncio.Future[object] = asyncio.ensure_future(
            self.e.clock.sleep(SWITCH_TIMEOUT_S)
        )
        waits = {cast("asyncio.Future[object]", sw.done), sleeper}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
        if not sw.done.done():
            raise ConflictError(
                f"task {t.task_id}: the scanner did not answer the {action} within "
                f"{SWITCH_TIMEOUT_S:g} s; it may still happen",
                status=t.status.value,
                field="task_id",
            )
        refused = sw.done.result()
        if refused is not None:
            raise ConflictError(
                f"task {t.task_id} cannot {action}: {refused}",
                status=t.status.value,
                field="task_id",
            )
        return t


def cannot(action: str, t: Task) -> str:
    """Why ``action`` (pause, resume) cannot be done to ``t`` in its status."""
    why = {
        TaskStatus.QUEUED: "it is queued and has not been launched",
        TaskStatus.DISPATCHING: "it is being launched; try again in a moment",
        TaskStatus.EXPORTING: "the scan has ended on the scanner and its results are exported",
        TaskStatus.RUNNING: "it is running, not paused",
        TaskStatus.PAUSED: "it is already paused",
    }.get(t.status, f"it has ended ({t.status.value})")
    return f"task {t.task_id} cannot {action}: {why} (status {t.status.value})"


async def switch_step(r: TaskRunner, scan_id: int) -> None:
    """In the runner's watch loop: carry out the pending pause or resume of its scan on
    the scanner, then record the status. A refusal of the scanner (a scan that ended in the
    meantime, say) leaves the status as it is and is handed back to whoever asked."""
    control = r.control
    sw, control.switch = control.switch, None
    if sw is None or sw.done.done():
        return
    t = r.task
    if sw.action == "stop":
        await _window_stop(r, sw, scan_id)
        return
    pausing = sw.action == "pause"
    want = TaskStatus.PAUSED if pausing else TaskStatus.RUNNING
    if t.status is want or t.status not in (TaskStatus.RUNNING, TaskStatus.PAUSED):
        sw.done.set_result(None if t.status is want else f"it is {t.status.value}")
        return
    client = r.sc.client
    op = client.pause_scan if pausing else client.resume_scan
    try:
        phase = await _settled(r, scan_id)
        # already there (a restart between the call and its row): record it, call nothing
        if phase is not (RemotePhase.PAUSED if pausing else RemotePhase.RUNNING):
            await r._call(lambda: op(scan_id), r.policy, what=f"{sw.action}_scan")
    except ScannerError as exc:
        log.warning(
            "pause or resume refused",
            extra={
                "event": f"task_{sw.action}_refused",
                "task_id": t.task_id,
                "scanner": r.sc.scanner_id,
                "by": sw.by,
                "error": str(exc),
            },
        )
        sw.done.set_result(f"the scanner refused: {exc.message}")
        return
    now_ms = r.e.clock.now_ms()
    if pausing:
        await r.e.change(
            t, TaskStatus.PAUSED, "paused", ev_reason=sw.by, paused_at_ms=now_ms, paused_by=sw.by
        )
    else:
        extra_ms = now_ms - (t.paused_at_ms or now_ms) if t.paused_by == WINDOW else 0
        await r.e.change(
            t,
            TaskStatus.RUNNING,
            "resumed",
            ev_reason=sw.by,
            paused_at_ms=None,
            paused_by=None,
            window_paused_ms=t.window_paused_ms + max(0, extra_ms),
        )
    sw.done.set_result(None)


async def _window_stop(r: TaskRunner, sw: Switch, scan_id: int) -> None:
    """A window's ``stop``: stop the scan on the scanner; the runner then requeues it when
    the scanner reports it stopped. A scan that ended meanwhile (the scanner refuses to stop
    it) just ends as it would have."""
    try:
        await _settled(r, scan_id)
        await r._call(lambda: r.sc.client.stop_scan(scan_id), r.policy, what="stop_scan")
    except ScannerError as exc:
        log.warning(
            "window stop refused",
            extra={
                "event": "task_window_stop_refused",
                "task_id": r.task.task_id,
                "scanner": r.sc.scanner_id,
                "error": str(exc),
            },
        )
        sw.done.set_result(f"the scanner refused: {exc.message}")
        return
    r.control.window_stop = True
    sw.done.set_result(None)


def stopped_for_window(r: TaskRunner, phase: RemotePhase) -> bool:
    """The scan ended stopped because of a window: its stop was sent, or (after a restart
    between the stop and the requeue) it was stopped while its scanner is inside a window
    whose on-window is ``stop``."""
    if r.control.window_stop:
        r.control.window_stop = False
        return True
    if phase is not RemotePhase.CANCELED:
        return False
    span = r.sc.calendar.current(r.e.clock.now_ms())
    return span is not None and span.on_window == "stop"


async def _settled(r: TaskRunner, scan_id: int) -> RemotePhase:
    """The scan's phase, once it is not between two phases (waiting a bounded time): Nessus
    refuses to resume a scan that is still ``pausing`` (or to pause one still ``resuming``)."""
    deadline_s = r.e.clock.monotonic_s() + SETTLE_LIMIT_S
    while True:
        d = await r._call(lambda: r.sc.client.scan_details(scan_id), r.policy, what="scan_details")
        if d.phase is not RemotePhase.TRANSITIONING or r.e.clock.monotonic_s() >= deadline_s:
            return d.phase
        await r.e.clock.sleep(min(1.0, r.pool.config.poll_interval_s))


def held_gauge(engine: Engine) -> GaugeMetricFamily:
    """``nessus_pool_window_held_tasks{pool, state}``: scans a maintenance window holds now,
    queued ones it keeps from launching (``queued``) and running ones it paused (``paused``)."""
    gauge = GaugeMetricFamily(
        "nessus_pool_window_held_tasks",
        "Scans held by a maintenance window: queued (not launched) or paused",
        labels=["pool", "state"],
    )
    paused: dict[str, int] = {}
    for t in engine.tasks.values():
        if t.status is TaskStatus.PAUSED and t.paused_by == WINDOW:
            paused[t.pool] = paused.get(t.pool, 0) + 1
    for name, pool in engine.pools.items():
        queued = len(pool.queue) if waiting_reason(pool) == "maintenance_window" else 0
        gauge.add_metric([name, "queued"], queued)
        gauge.add_metric([name, "paused"], paused.get(name, 0))
    return gauge


def drop_switch(control: RunControl) -> None:
    """The runner is done: a pause or resume still pending will not happen."""
    sw, control.switch = control.switch, None
    if sw is not None and not sw.done.done():
        sw.done.set_result("the scan is no longer running on the scanner")


def window_paused_s(t: Task, now_ms: int) -> float:
    """Seconds the task has spent paused by windows (max-scan-duration leaves them out: a
    window is no fault of the scan; a person's pause counts, so a forgotten one cannot hold
    a slot for ever)."""
    ms = t.window_paused_ms
    if t.status is TaskStatus.PAUSED and t.paused_by == WINDOW and t.paused_at_ms is not None:
        ms += max(0, now_ms - t.paused_at_ms)
    return ms / 1000
