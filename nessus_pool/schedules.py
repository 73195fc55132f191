"""Schedules (recurring scans), pure: the definition, its checks, and its time slots.

No I/O and no clock: callers pass the time. A schedule fires at *slots*, instants in UTC
milliseconds: a 5-field cron expression read in an IANA time zone, or a fixed interval
(``every_s``) counted from ``start`` (from the Unix epoch when there is no ``start``, so the
slots stay the same across restarts and reloads).

Cron expressions are evaluated by cronsim, which follows Debian cron on the days a zone
changes its clocks: a local time that does not exist (02:30 on a spring-forward day in
Europe/Berlin) fires once, at the first minute after the gap (03:00); a local time that
happens twice (02:30 on a fall-back day) fires once, at its first occurrence. Expressions
that fire every hour or more often (``*/15 * * * *``) fire in both repeated hours, as their
wall-clock minutes come twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError

from nessus_pool.errors import ValidationError
from nessus_pool.models import ScanType

#: a schedule's name is its id (``Task.schedule_id``, URLs): the config's name pattern
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
Overlap = Literal["skip", "queue"]
#: the longest interval and catch-up window taken (a year): beyond it, use cron
MAX_SECONDS = 366 * 86400
#: a cron expression that names no existing date is refused by cronsim; one whose next slot
#: is further than this away (e.g. ``0 0 29 2 1``: a Monday 29 February) is refused too
_LOOKAHEAD_YEARS = 30


class ScheduleSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A schedule as the API takes it and the store keeps it (snake_case). Config entries
    (``[[schedules]]``, kebab-case) become the same Struct."""

    name: Annotated[str, msgspec.Meta(max_length=64)]
    targets: str | list[str]
    pool: str | None = None
    scan_type: ScanType = ScanType.UNTRUSTED
    #: a configured credential set (schedules never hold secrets themselves)
    credential: str | None = None
    template: str | None = None
    policy: str | None = None
    priority: int = 0
    description: str = ""
    cron: str | None = None
    every_s: int | None = None
    timezone: str = "UTC"
    #: RFC 3339; without an offset, read in ``timezone``
    start: datetime | None = None
    end: datetime | None = None
    enabled: bool = True
    overlap: Overlap = "skip"
    #: after downtime, the last missed slot runs once at start-up if it is this young
    catch_up_s: int = 3600


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"unknown time zone {name[:64]!r}: use an IANA name such as Europe/Berlin or UTC",
            field="timezone",
        ) from None


def aware(dt: datetime, zone: ZoneInfo) -> datetime:
    """``dt`` with an offset: a naive one is read in ``zone``."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=zone)


def check_schedule(spec: ScheduleSpec) -> ScheduleSpec:
    """Every check that needs no config: raises :class:`ValidationError` naming the field
    (snake_case), else returns the spec with ``start``/``end`` made zone-aware."""
    if not _NAME.match(spec.name):
        raise ValidationError(
            "name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="name",
        )
    if (spec.cron is None) == (spec.every_s is None):
        raise ValidationError("give exactly one of cron and every_s", field="cron")
    zone = _zone(spec.timezone)
    if spec.cron is not None:
        check_cron(spec.cron, zone)
    if spec.every_s is not None and not 1 <= spec.every_s <= MAX_SECONDS:
        raise ValidationError(f"every_s must be 1..{MAX_SECONDS} seconds", field="every_s")
    if not 0 <= spec.catch_up_s <= MAX_SECONDS:
        raise ValidationError(f"catch_up_s must be 0..{MAX_SECONDS} seconds", field="catch_up_s")
    if not -100 <= spec.priority <= 100:
        raise ValidationError("priority must be between -100 and 100", field="priority")
    if len(spec.description) > 2000:
        raise ValidationError("description is longer than 2000 characters", field="description")
    start = None if spec.start is None else aware(spec.start, zone)
    end = None if spec.end is None else aware(spec.end, zone)
    if start is not None and end is not None and end <= start:
        raise ValidationError("end must be after start", field="end")
    if spec.scan_type.is_authenticated and spec.credential is None:
        raise ValidationError(
            "an authenticated schedule needs credential (a credential set configured on the "
            "server; schedules never hold passwords)",
            field="credential",
        )
    if not spec.scan_type.is_authenticated and spec.credential is not None:
        raise ValidationError(
            "credential was given for an untrusted scan; use scan_type 'authenticated'",
            field="scan_type",
        )
    for field in ("pool", "credential", "template", "policy"):
        value = getattr(spec, field)
        if value is not None and not 1 <= len(value) <= 200:
            raise ValidationError(f"{field} must be 1..200 characters", field=field)
    return msgspec.structs.replace(spec, start=start, end=end)


def check_cron(expr: str, zone: ZoneInfo | None = None) -> None:
    """A 5-field cron expression that fires at least once: raises ValidationError."""
    if len(expr) > 200 or len(expr.split()) != 5:
        raise ValidationError(
            "cron must have 5 fields: minute hour day-of-month month day-of-week "
            "(e.g. '0 2 * * 1' for Mondays at 02:00)",
            field="cron",
        )
    try:
        it = CronSim(expr, datetime(2000, 1, 1, tzinfo=zone or UTC))
        first = next(it)
    except (CronSimError, StopIteration, ValueError) as exc:
        raise ValidationError(f"cron {expr!r} is not valid: {exc}", field="cron") from None
    if first.year > 2000 + _LOOKAHEAD_YEARS:
        raise ValidationError(f"cron {expr!r} never fires", field="cron")


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    """UTC RFC 3339 with milliseconds, or None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class Timing:
    """The slots of one (checked) schedule, in UTC milliseconds."""

    def __init__(self, spec: ScheduleSpec) -> None:
        self.zone = _zone(spec.timezone)
        self.cron = spec.cron
        self.every_ms = None if spec.every_s is None else spec.every_s * 1000
        self.start_ms = None if spec.start is None else to_ms(aware(spec.start, self.zone))
        self.end_ms = None if spec.end is None else to_ms(aware(spec.end, self.zone))

    def _in_range(self, slot: int) -> bool:
        return (self.start_ms is None or slot >= self.start_ms) and (
            self.end_ms is None or slot < self.end_ms
        )

    def next_after(self, after_ms: int) -> int | None:
        """The first slot strictly after ``after_ms``, or None when there is none left
        (past ``end``)."""
        if self.start_ms is not None and after_ms < self.start_ms:
            # the start itself may be a slot (intervals count from it)
            after_ms = self.start_ms - 1
        if self.every_ms is not None:
            anchor = self.start_ms or 0
            slot = anchor + ((after_ms - anchor) // self.every_ms + 1) * self.every_ms
        else:
            # a start inside a repeated (fall-back) hour can make cronsim answer the first
            # occurrence, which is already past: skip it
            slot = next((s for s in self._cron(after_ms, reverse=False) if s > after_ms), 0)
            if not slot:
                return None
        return slot if self._in_range(slot) else None

    def latest_at_or_before(self, at_ms: int) -> int | None:
        """The last slot at or before ``at_ms`` (not before ``start``), or None."""
        if self.end_ms is not None and at_ms >= self.end_ms:
            at_ms = self.end_ms - 1
        if self.every_ms is not None:
            anchor = self.start_ms or 0
            if at_ms < anchor:
                return None
            slot = anchor + ((at_ms - anchor) // self.every_ms) * self.every_ms
        else:
            slot = next((s for s in self._cron(at_ms + 1000, reverse=True) if s <= at_ms), 0)
            if not slot:
                return None
        return slot if self._in_range(slot) else None

    def _cron(self, from_ms: int, *, reverse: bool) -> Iterator[int]:
        assert self.cron is not None
        dt = datetime.fromtimestamp(from_ms / 1000, self.zone)
        try:
            for n, slot in enumerate(CronSim(self.cron, dt, reverse=reverse)):
                if n > 4:  # a few slots on the wrong side of a repeated hour, no more
                    return
                yield to_ms(slot)
        except StopIteration:
            return
