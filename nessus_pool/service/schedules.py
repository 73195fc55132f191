"""Schedules: their operations (create, list, get, update, delete, run-now), over the firing
loop of :mod:`nessus_pool.service.scheduler` (``Schedules`` <- ``Scheduler``)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from nessus_pool.config import Config
from nessus_pool.errors import CapacityError, ConflictError, NotFoundError, ValidationError
from nessus_pool.models import ScanType
from nessus_pool.schedules import ScheduleSpec, Timing, check_schedule, iso
from nessus_pool.service.scheduler import Entry, Scheduler, run_key
from nessus_pool.targets import parse_targets

__all__ = ["Entry", "Schedules", "run_key"]

_json_enc = msgspec.json.Encoder()
#: history entries shown by ``get``
RECENT_RUNS = 20
_READ_ONLY = (
    "schedule {name!r} is defined in the config file and is read-only through the API; "
    "change it there and reload"
)


class Schedules(Scheduler):
    """The schedule operations (the firing loop is inherited: :meth:`start`)."""

    async def list(self) -> list[dict[str, Any]]:
        entries = await self.entries()
        last = await self.store.last_slots()
        busy = await self.store.in_flight() if self.engine.cluster is not None else None
        return [
            self._view(e, last.get(n), busy.get(n) if busy is not None else None)
            for n, e in sorted(entries.items())
        ]

    async def get(self, name: str) -> dict[str, Any]:
        e = await self._entry(name)
        view = self._view(e, None, await self._run_in_flight(name))
        view["runs"] = msgspec.to_builtins(await self.store.runs(name, RECENT_RUNS))
        return view

    async def create(self, spec: ScheduleSpec) -> dict[str, Any]:
        spec = await self._checked(spec)
        if any(sc.name == spec.name for sc in self._config().schedules):
            raise ConflictError(_READ_ONLY.format(name=spec.name), field="name")
        stored = await self.store.all()
        if any(s.name == spec.name for s in stored):
            raise ConflictError(
                f"schedule {spec.name!r} already exists; update it or pick another name",
                field="name",
            )
        if len(stored) >= self.max_api_schedules:
            raise CapacityError(
                f"{len(stored)} schedules exist, the most this daemon takes through the API; "
                "delete some, or define schedules in the config file"
            )
        await self.store.save(spec.name, _json_enc.encode(spec), self.engine.clock.now_ms())
        self.wake()
        return await self.get(spec.name)

    async def update(
        self, name: str, fields: dict[str, Any], *, replace: bool = False
    ) -> dict[str, Any]:
        """PATCH (``replace=False``: the fields given change) or PUT (the whole schedule)."""
        e = await self._entry(name)
        if e.source == "config":
            raise ConflictError(_READ_ONLY.format(name=name), field="name")
        if fields.get("name", name) != name:
            raise ValidationError(
                "a schedule cannot be renamed; create a new one and delete this", field="name"
            )
        merged = {} if replace else msgspec.to_builtins(e.spec)
        merged.update(fields)
        merged["name"] = name
        try:
            spec = msgspec.convert(merged, ScheduleSpec)
        except msgspec.ValidationError as exc:
            raise ValidationError(str(exc), field=_field_of(str(exc))) from None
        spec = await self._checked(spec)
        await self.store.save(name, _json_enc.encode(spec), self.engine.clock.now_ms())
        self.wake()
        return await self.get(name)

    async def delete(self, name: str) -> dict[str, Any]:
        e = await self._entry(name)
        if e.source == "config":
            raise ConflictError(_READ_ONLY.format(name=name), field="name")
        await self.store.delete(name)
        self.wake()
        return {"name": name, "deleted": True}

    async def run_now(self, name: str) -> dict[str, Any]:
        """Submit a run now (outside the slots; overlap does not apply to a run asked for
        by hand). Answers the run as recorded; a refused submit is a ``failed`` run and
        raises its error."""
        e = await self._entry(name)
        now = self.engine.clock.now_ms()
        run = await self._submit(name, e.spec, now, "manual", now, None)
        await self._record(name, run)
        if run.outcome == "failed":
            raise ConflictError(f"schedule {name!r} could not run: {run.reason}", field="name")
        return {"schedule": name, "run": msgspec.to_builtins(run)}

    async def check_config(self, config: Config) -> None:
        """Before a reload applies: a config schedule may not take the name of one created
        through the API (raises ConflictError: the reload is refused)."""
        stored = {s.name for s in await self.store.all()}
        for i, sc in enumerate(config.schedules):
            if sc.name in stored:
                raise ConflictError(
                    f"schedule {sc.name!r} (at $.schedules[{i}]) already exists, created "
                    "through the API: delete it there first or rename this one"
                )

    async def _entry(self, name: str) -> Entry:
        e = (await self.entries()).get(name)
        if e is None:
            raise NotFoundError(f"schedule {name[:64]!r} not found", field="name")
        return e

    async def _checked(self, spec: ScheduleSpec) -> ScheduleSpec:
        """The checks of the config file's schedules, against the running pools, credential
        sets and scopes."""
        spec = check_schedule(spec)
        cfg = self._config()
        if spec.credential is not None and spec.credential not in cfg.credentials:
            raise ValidationError(
                f"credential set {spec.credential!r} is not configured (configured: "
                f"{', '.join(sorted(cfg.credentials)) or 'none'})",
                field="credential",
            )
        limit = cfg.security.max_addresses_per_task
        targets = await asyncio.to_thread(parse_targets, spec.targets, max_addresses=limit)
        await self._scoping.pick_pool(spec.pool, targets)
        if spec.scan_type is not ScanType.UNTRUSTED and spec.credential is None:
            raise ValidationError("an authenticated schedule needs credential", field="credential")
        return spec

    def _view(
        self, e: Entry, last_slot: int | None, busy: tuple[str, str] | None
    ) -> dict[str, Any]:
        """``busy``: its run in flight, read from the rows in a cluster (else memory)."""
        now = self.engine.clock.now_ms()
        nxt = Timing(e.spec).next_after(now) if e.spec.enabled else None
        if self.engine.cluster is None:
            busy = self._unfinished_run(e.spec.name)
        view: dict[str, Any] = msgspec.to_builtins(e.spec)
        view.update(
            source=e.source,
            read_only=e.source == "config",
            next_run_at=iso(nxt),
            next_run_at_ms=nxt,
            last_slot_at=iso(last_slot),
            active_task_id=busy[0] if busy else None,
            created_at_ms=e.created_at_ms,
            updated_at_ms=e.updated_at_ms,
        )
        return view


def _field_of(message: str) -> str | None:
    """The field a msgspec message names (``at `$.every_s```), if any."""
    marker = "at `$."
    if marker not in message:
        return None
    return message.split(marker, 1)[1].split("`", 1)[0].split("[", 1)[0] or None
