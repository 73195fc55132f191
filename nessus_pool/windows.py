"""Maintenance windows as calendar maths: is an instant inside a window, and when does the
current window end or the next one start. Pure (no I/O, no clock: every call takes the
instant), so tests pass any instant, DST days included.

A recurring window is given in local time of an IANA zone: days of the week (the day the
window *starts*), a ``from`` and a ``to`` time; ``to`` earlier than ``from`` crosses midnight,
``to = "24:00"`` ends at the next midnight. Or by a 5-field ``cron`` expression (when each
occurrence starts, evaluated by cronsim in the zone, with Debian cron's DST rules: a start in
a spring-forward gap runs at the end of the gap) and a ``duration-s``.

Local times are turned into instants with :mod:`zoneinfo`, as :class:`datetime.datetime`
does with ``fold=0``: a from/to that does not exist on a spring-forward day (02:30 in
Europe/Berlin on 2026-03-29) is moved forward by the gap (03:30 summer time), and one that
happens twice on a fall-back day means its first occurrence. A one-off window is two
instants. Overlapping or touching windows count as one: dispatch resumes when the last of
them ends.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

OnWindow = Literal["finish", "pause", "stop"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: what a window does to a scan already running when it starts, mildest first
ON_WINDOW: tuple[OnWindow, ...] = ("finish", "pause", "stop")

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_DAY_MS = 86_400_000
#: how far ahead the next window is looked for (a recurring window starts within a week)
_HORIZON_DAYS = 8
#: occurrences of one cron window looked at per computation (every minute: about 16 hours)
_CRON_MAX = 1000
#: the longest cron window (a window that long is better written as one-off windows)
MAX_CRON_DURATION_S = 7 * 86400


class WindowError(ValueError):
    """A window definition that cannot work; ``field`` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Span:
    """One occurrence of a window: ``[start_ms, end_ms)``, and what it does to running scans
    (the strictest of the windows merged into it)."""

    start_ms: int
    end_ms: int
    on_window: OnWindow = "finish"
    name: str | None = None


@dataclass(frozen=True)
class Window:
    """One configured window: recurring (``days``, ``from_min``, ``to_min``, ``zone``) or one-off
    (``start_ms``, ``end_ms``)."""

    on_window: OnWindow = "finish"
    name: str | None = None
    days: frozenset[int] = frozenset()
    from_min: int = 0
    to_min: int = 0
    zone: ZoneInfo | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    cron: str | None = None
    duration_ms: int = 0

    def spans(self, lo_ms: int, hi_ms: int) -> list[Span]:
        """Occurrences that overlap ``[lo_ms, hi_ms)`` (a cron window's first
        :data:`_CRON_MAX` only)."""
        if self.cron is not None:
            return self._cron_spans(lo_ms, hi_ms)
        if self.start_ms is not None and self.end_ms is not None:
            if self.start_ms < hi_ms and self.end_ms > lo_ms:
                return [Span(self.start_ms, self.end_ms, self.on_window, self.name)]
            return []
        assert self.zone is not None
        out = []
        day = dt.datetime.fromtimestamp(lo_ms / 1000, self.zone).date() - dt.timedelta(days=1)
        last = dt.datetime.fromtimestamp(hi_ms / 1000, self.zone).date()
        while day <= last:
            if day.weekday() in self.days:
                start = _instant_ms(day, self.from_min, self.zone)
                end_day = day + dt.timedelta(days=1) if self.to_min <= self.from_min else day
                end = _instant_ms(end_day, self.to_min, self.zone)
                if start < hi_ms and end > lo_ms and end > start:
                    out.append(Span(start, end, self.on_window, self.name))
            day += dt.timedelta(days=1)
        return out

    def _cron_spans(self, lo_ms: int, hi_ms: int) -> list[Span]:
        assert self.cron is not None and self.zone is not None
        # an occurrence that started up to one duration before lo still overlaps it
        since = dt.datetime.fromtimestamp((lo_ms - self.duration_ms) / 1000 - 1, self.zone)
        out: list[Span] = []
        for start in _occurrences(self.cron, since):
            start_ms = int(start.timestamp() * 1000)
            if start_ms >= hi_ms or len(out) >= _CRON_MAX:
                break
            if start_ms + self.duration_ms > lo_ms:
                out.append(Span(start_ms, start_ms + self.duration_ms, self.on_window, self.name))
        return out


def _occurrences(expr: str, since: dt.datetime) -> list[dt.datetime] | CronSim:
    try:
        return CronSim(expr, since)
    except CronSimError:  # checked at load: only an expression that never fires
        return []


def _instant_ms(day: dt.date, minute: int, zone: ZoneInfo) -> int:
    if minute >= 24 * 60:  # "24:00": the next midnight
        day, minute = day + dt.timedelta(days=1), minute - 24 * 60
    local = dt.datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone)
    return int(local.timestamp() * 1000)


def _minutes(value: str, key: str, *, allow_24: bool = False) -> int:
    if allow_24 and value == "24:00":
        return 24 * 60
    m = _HHMM.match(value)
    if m is None:
        last = "24:00" if allow_24 else "23:59"
        raise WindowError(key, f"{value!r} is not a time of day as HH:MM (00:00 to {last})")
    return int(m.group(1)) * 60 + int(m.group(2))


def _rfc3339_ms(value: str, key: str) -> int:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in value.upper():
        raise WindowError(
            key, f"{value!r} is not an RFC 3339 date and time with a zone (2026-12-24T00:00:00Z)"
        )
    return int(parsed.timestamp() * 1000)


def zone(name: str, key: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(
            key, f"unknown time zone {name!r} (an IANA name: Europe/Berlin)"
        ) from None


def build_window(
    *,
    days: list[str] | None = None,
    from_: str | None = None,
    to: str | None = None,
    timezone: str = "UTC",
    start: str | None = None,
    end: str | None = None,
    cron: str | None = None,
    duration_s: float | None = None,
    on_window: OnWindow = "finish",
    name: str | None = None,
) -> Window:
    """A :class:`Window` from its config fields, or :class:`WindowError` naming the field:
    either ``start`` and ``end`` (one-off) or ``from`` and ``to`` (recurring, every day
    unless ``days`` names some)."""
    one_off = start is not None or end is not None
    recurring = from_ is not None or to is not None or days is not None
    if cron is not None or duration_s is not None:
        if one_off or recurring:
            raise WindowError(
                "cron", "a window is one-off (start, end), recurring (from, to) or cron-based"
            )
        return _cron_window(cron, duration_s, timezone, on_window, name)
    if one_off and recurring:
        raise WindowError("start", "a window is one-off (start, end) or recurring (from, to)")
    if one_off:
        if start is None or end is None:
            raise WindowError("end" if end is None else "start", "a one-off window needs both")
        start_ms, end_ms = _rfc3339_ms(start, "start"), _rfc3339_ms(end, "end")
        if end_ms <= start_ms:
            raise WindowError("end", f"end {end} is not after start {start}")
        return Window(on_window=on_window, name=name, start_ms=start_ms, end_ms=end_ms)
    if from_ is None or to is None:
        raise WindowError(
            "to" if from_ is not None else "from",
            "set from and to (a recurring window), or start and end (a one-off window)",
        )
    from_min = _minutes(from_, "from")
    to_min = _minutes(to, "to", allow_24=True)
    if from_min == to_min:
        raise WindowError("to", f"from and to are both {from_}: the window would be empty")
    day_set = set(range(7))
    if days is not None:
        if not days:
            raise WindowError("days", "list at least one day (or leave days out: every day)")
        day_set = set()
        for k, d in enumerate(days):
            if d.lower() not in DAYS:
                raise WindowError(f"days[{k}]", f"{d!r} is not a day ({', '.join(DAYS)})")
            day_set.add(DAYS.index(d.lower()))
    return Window(
        on_window=on_window,
        name=name,
        days=frozenset(day_set),
        from_min=from_min,
        to_min=to_min,
        zone=zone(timezone),
    )


def _cron_window(
    cron: str | None,
    duration_s: float | None,
    timezone: str,
    on_window: OnWindow,
    name: str | None,
) -> Window:
    if cron is None:
        raise WindowError("cron", "duration-s goes with cron (when each window starts)")
    if duration_s is None:
        raise WindowError("duration-s", "a cron window needs duration-s (how long it lasts)")
    if not 0 < duration_s <= MAX_CRON_DURATION_S:
        raise WindowError("duration-s", f"must be more than 0 and at most {MAX_CRON_DURATION_S}")
    if len(cron.split()) != 5:
        raise WindowError("cron", f"{cron!r} is not a 5-field cron expression (0 22 * * fri)")
    tz = zone(timezone)
    try:
        first = next(iter(CronSim(cron, dt.datetime(2026, 1, 1, tzinfo=tz))), None)
    except CronSimError as exc:
        raise WindowError("cron", f"{cron!r} is not a valid cron expression: {exc}") from None
    if first is None:
        raise WindowError("cron", f"{cron!r} never fires")
    return Window(
        on_window=on_window, name=name, zone=tz, cron=cron, duration_ms=int(duration_s * 1000)
    )


def _strictest(a: OnWindow, b: OnWindow) -> OnWindow:
    return a if ON_WINDOW.index(a) >= ON_WINDOW.index(b) else b


@dataclass
class Calendar:
    """The windows of one scanner (its pool's and its own). Answers are cached until the
    next boundary, so dispatch can ask for every scanner on every pass."""

    windows: tuple[Window, ...] = ()
    #: (valid from, valid until, the current span or None, the next span or None)
    _cache: tuple[int, int, Span | None, Span | None] | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return bool(self.windows)

    def _merged(self, now_ms: int) -> tuple[list[Span], int]:
        """The windows around ``now_ms``, overlapping ones merged, and the instant up to
        which the list is complete (a busy cron window is looked at only so far ahead)."""
        hi = now_ms + _HORIZON_DAYS * _DAY_MS
        spans = []
        for w in self.windows:
            # a recurring occurrence lasts under two days; cron ones are cut at now
            found = w.spans(now_ms if w.cron else now_ms - 2 * _DAY_MS, hi)
            if w.cron and len(found) >= _CRON_MAX:
                hi = min(hi, found[-1].start_ms)
            spans += found
        spans = sorted((s for s in spans if s.start_ms < hi), key=lambda s: s.start_ms)
        merged: list[Span] = []
        for s in spans:
            if merged and s.start_ms <= merged[-1].end_ms:
                last = merged[-1]
                merged[-1] = Span(
                    last.start_ms,
                    max(last.end_ms, s.end_ms),
                    _strictest(last.on_window, s.on_window),
                    last.name or s.name,
                )
            else:
                merged.append(s)
        return merged, hi

    def _state(self, now_ms: int) -> tuple[Span | None, Span | None]:
        c = self._cache
        if c is not None and c[0] <= now_ms < c[1]:
            return c[2], c[3]
        current = nxt = None
        spans, complete_until = self._merged(now_ms)
        for s in spans:
            if s.start_ms <= now_ms < s.end_ms:
                current = s
            elif s.start_ms > now_ms:
                nxt = s
                break
        # valid from now on (a wall clock stepped back recomputes), until the next boundary
        valid_from = current.start_ms if current is not None else now_ms
        if current is not None:
            valid_until = current.end_ms
        elif nxt is not None:
            valid_until = nxt.start_ms
        else:
            valid_until = min(now_ms + _DAY_MS, complete_until)
        self._cache = (valid_from, valid_until, current, nxt)
        return current, nxt

    def current(self, now_ms: int) -> Span | None:
        """The (merged) window ``now_ms`` is inside, or None."""
        return self._state(now_ms)[0] if self.windows else None

    def next(self, now_ms: int) -> Span | None:
        """The next window starting after ``now_ms`` (within about a week), or None."""
        return self._state(now_ms)[1] if self.windows else None

    def in_window(self, now_ms: int) -> bool:
        return self.current(now_ms) is not None

    def next_change_ms(self, now_ms: int) -> int | None:
        """When the answer of :meth:`in_window` next changes (a window ends or starts)."""
        if not self.windows:
            return None
        current, nxt = self._state(now_ms)
        if current is not None:
            return current.end_ms
        return nxt.start_ms if nxt is not None else None

    def free_at_ms(self, now_ms: int) -> int:
        """When a scan may next launch: ``now_ms``, or the end of the current window."""
        current = self.current(now_ms)
        return now_ms if current is None else current.end_ms
