"""The loop that fires schedules (:class:`Scheduler`); the operations are in
:mod:`nessus_pool.service.schedules`.

Each run is an ordinary task submitted through the :class:`Submitter` (the same checks as
a hand-made scan) with ``schedule_id`` set and an idempotency key made of the schedule and
the slot (``schedule:<name>:<slot_ms>``). The task row is then the durable mark that the
slot fired, written in the task's own transaction: a crash after it and before the run is
recorded repeats the firing at start-up, which finds the task by its key instead of
creating another. The run history (``schedule_runs``) is written after.

The loop sleeps on the injected clock until the next slot of any schedule (at most
``max_sleep_s``, so a wall-clock step or a schedule created by another daemon is seen), or
until woken by a change (API, reload). It is supervised by the engine (``scheduler``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from nessus_pool.clock import sleep_or_event
from nessus_pool.config import Config
from nessus_pool.engine import Engine
from nessus_pool.errors import ConflictError, NessusPoolError, StorageError
from nessus_pool.schedules import ScheduleSpec, Timing, check_schedule, iso
from nessus_pool.service.scoping import Scoping
from nessus_pool.service.submit import SubmitRequest, Submitter
from nessus_pool.store.schedules import ScheduleRun, ScheduleStore

log = logging.getLogger("nessus_pool.schedules")

_spec_dec = msgspec.json.Decoder(ScheduleSpec)
#: a slot this close ahead is due now: timers may wake a little early (asyncio's by up to
#: the clock resolution; float seconds truncated to whole milliseconds)
EARLY_MS = 5
#: schedules that may be created through the API (each round reads them all)
MAX_API_SCHEDULES = 1000


class Entry(msgspec.Struct, kw_only=True):
    spec: ScheduleSpec
    source: str  # "config" | "api"
    created_at_ms: int | None = None
    updated_at_ms: int | None = None


def run_key(name: str, slot_ms: int, kind: str = "slot") -> str:
    """The idempotency key of a schedule's run: one task per slot."""
    return f"schedule:{name}:{slot_ms}" if kind == "slot" else f"schedule:{name}:{kind}:{slot_ms}"


class Scheduler:
    """The firing loop (:meth:`start`) and what it shares with the operations."""

    def __init__(
        self,
        engine: Engine,
        config: Callable[[], Config],
        submitter: Submitter,
        scoping: Scoping,
    ) -> None:
        self.engine = engine
        self._config = config
        self._submitter = submitter
        self._scoping = scoping
        self.store = ScheduleStore(engine.store)
        #: the longest sleep of the loop (a wall-clock step is noticed within it)
        self.max_sleep_s = 60.0
        self.max_api_schedules = MAX_API_SCHEDULES
        self._wake: asyncio.Event | None = None
        #: per config schedule: (the spec last seen, since when it is handled in this process)
        self._seen: dict[str, tuple[ScheduleSpec, int]] = {}
        self._first_round = True
        self._next_ms: int | None = None

    def start(self) -> asyncio.Task[None]:
        """Spawn the supervised firing loop (``scheduler``)."""
        self._wake = asyncio.Event()
        return self.engine.spawn(self.run(), "scheduler")

    def wake(self) -> None:
        """Recompute now (a schedule or the config changed)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            try:
                await self.fire_due()
            except StorageError as exc:
                # the database is away: try again after a while, never die of it
                log.error(
                    "schedules not fired: %s",
                    exc,
                    extra={"event": "schedule_round_failed", "error": str(exc)},
                )
                self._next_ms = None
            now = self.engine.clock.now_ms()
            delay_s = self.max_sleep_s
            if self._next_ms is not None:
                delay_s = min(delay_s, max(0.0, (self._next_ms - now) / 1000))
            await sleep_or_event(self.engine.clock, self._wake, delay_s)

    async def entries(self) -> dict[str, Entry]:
        """Every schedule by name: the config's and the API's (a config one wins a name
        that both define; the API one is shadowed until renamed or removed there)."""
        out: dict[str, Entry] = {}
        for stored in await self.store.all():
            try:
                spec = _spec_dec.decode(stored.data)
            except msgspec.ValidationError as exc:  # written by a newer version
                log.error(
                    "stored schedule %s unreadable: %s",
                    stored.name,
                    exc,
                    extra={"event": "schedule_unreadable", "schedule": stored.name},
                )
                continue
            out[stored.name] = Entry(
                spec=spec,
                source="api",
                created_at_ms=stored.created_at_ms,
                updated_at_ms=stored.updated_at_ms,
            )
        for sc in self._config().schedules:
            out[sc.name] = Entry(spec=check_schedule(sc.spec()), source="config")
        return out

    def _handled_since(self, name: str, e: Entry, now_ms: int, last_ms: int | None) -> int:
        """Slots at or before this instant are not to be fired (again). The history's last
        slot when there is one; else an API schedule's last change, or when this process
        first saw a config schedule. A config schedule changed by a reload starts afresh
        (a new cron never fires a slot that passed before the change)."""
        if e.source == "api":
            assert e.updated_at_ms is not None
            return max(last_ms if last_ms is not None else -1, e.updated_at_ms)
        seen = self._seen.get(name)
        if seen is None:
            self._seen[name] = (e.spec, now_ms if last_ms is None else -1)
        elif seen[0] != e.spec:
            self._seen[name] = (e.spec, now_ms)
        return max(last_ms if last_ms is not None else -1, self._seen[name][1])

    async def fire_due(self) -> None:
        """One round: fire every schedule whose slot has come (at most one run each), then
        note when the next slot is."""
        now = self.engine.clock.now_ms()
        startup, self._first_round = self._first_round, False
        entries = await self.entries()
        last = await self.store.last_slots()
        due: list[tuple[str, Entry, int]] = []
        next_ms: int | None = None
        for name, e in entries.items():
            if not e.spec.enabled:
                continue
            timing = Timing(e.spec)
            handled = self._handled_since(name, e, now, last.get(name))
            slot = timing.latest_at_or_before(now + EARLY_MS)
            if slot is not None and slot > handled:
                due.append((name, e, slot))
            nxt = timing.next_after(now + EARLY_MS)
            if nxt is not None and (next_ms is None or nxt < next_ms):
                next_ms = nxt
        self._next_ms = next_ms
        if not due:
            return
        async with self.store.firing_lock():
            for name, e, slot in due:
                await self._fire_slot(name, e, slot, now, startup=startup)

    async def _fire_slot(self, name: str, e: Entry, slot: int, now: int, *, startup: bool) -> None:
        outcome, _ = await self.store.run_of_slot(name, "slot", slot)
        if outcome:  # another daemon, or this one before a restart, got here first
            return
        existing = await self.engine.store.get_by_idempotency_key(run_key(name, slot))
        if existing is not None:
            # the slot's task was committed and its run not recorded (a crash in between)
            await self._record(
                name,
                ScheduleRun(
                    slot_ms=slot,
                    kind="slot",
                    outcome="fired",
                    reason="recorded after a restart",
                    task_id=existing.task_id,
                    at_ms=now,
                ),
            )
            return
        note = None
        if startup:
            late_s = (now - slot) / 1000
            if late_s > e.spec.catch_up_s:
                await self._record(
                    name,
                    ScheduleRun(
                        slot_ms=slot,
                        kind="slot",
                        outcome="skipped",
                        reason=(
                            f"missed while the daemon was down ({late_s:.0f} s ago, more "
                            f"than catch-up-s = {e.spec.catch_up_s})"
                        ),
                        at_ms=now,
                    ),
                )
                return
            if late_s >= 1:
                note = f"caught up at start-up, {late_s:.0f} s late"
        if e.spec.overlap == "skip":
            busy = await self._run_in_flight(name)
            if busy is not None:
                await self._record(
                    name,
                    ScheduleRun(
                        slot_ms=slot,
                        kind="slot",
                        outcome="skipped",
                        reason=(f"the previous run {busy[0]} is still {busy[1]} (overlap = skip)"),
                        at_ms=now,
                    ),
                )
                return
        await self._record(name, await self._submit(name, e.spec, slot, "slot", now, note))

    async def _run_in_flight(self, name: str) -> tuple[str, str] | None:
        """The schedule's run still queued or running, if any. [cluster] queued tasks live
        in the database and running ones on their scanner's owner: read from the rows
        (under the firing lock, so another daemon's firing is committed)."""
        if self.engine.cluster is None:
            return self._unfinished_run(name)
        return (await self.store.in_flight(name)).get(name)

    def _unfinished_run(self, name: str) -> tuple[str, str] | None:
        for t in self.engine.tasks.values():
            if t.schedule_id == name and not t.status.is_terminal:
                return t.task_id, t.status.value
        return None

    async def _submit(
        self, name: str, spec: ScheduleSpec, slot: int, kind: str, now: int, note: str | None
    ) -> ScheduleRun:
        key = run_key(name, slot, kind)
        req = SubmitRequest(
            targets=spec.targets,
            name=f"{name} {iso(slot)}",
            description=spec.description,
            pool=spec.pool,
            scan_type=spec.scan_type,
            credential=spec.credential,
            template=spec.template,
            policy=spec.policy,
            priority=spec.priority,
            idempotency_key=key,
        )
        try:
            result = await self._submitter.submit(req, schedule_id=name)
            task_id = result.task_id
        except ConflictError as exc:
            # the schedule changed between a crash and this restart: the slot's task exists
            # with the old request; it is this slot's run all the same
            existing = await self.engine.store.get_by_idempotency_key(key)
            if existing is None:
                return self._failed(name, slot, kind, now, exc)
            task_id = existing.task_id
        except NessusPoolError as exc:
            if isinstance(exc, StorageError):
                raise
            return self._failed(name, slot, kind, now, exc)
        log.info(
            "schedule %s fired",
            name,
            extra={"event": "schedule_fired", "schedule": name, "task_id": task_id,
                   "slot": iso(slot), "kind": kind},
        )  # fmt: skip
        return ScheduleRun(
            slot_ms=slot, kind=kind, outcome="fired", reason=note, task_id=task_id, at_ms=now
        )

    def _failed(
        self, name: str, slot: int, kind: str, now: int, exc: NessusPoolError
    ) -> ScheduleRun:
        log.warning(
            "schedule %s could not submit its run: %s",
            name,
            exc,
            extra={"event": "schedule_failed", "schedule": name, "slot": iso(slot),
                   "error": str(exc)},
        )  # fmt: skip
        return ScheduleRun(
            slot_ms=slot, kind=kind, outcome="failed", reason=str(exc)[:500], at_ms=now
        )

    async def _record(self, name: str, run: ScheduleRun) -> None:
        if run.outcome == "skipped":
            log.info(
                "schedule %s skipped a run: %s",
                name,
                run.reason,
                extra={"event": "schedule_skipped", "schedule": name,
                       "slot": iso(run.slot_ms), "reason": run.reason},
            )  # fmt: skip
        await self.store.record(name, run)
