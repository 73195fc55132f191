"""Schedule slots: cron in a time zone across DST changes, month ends, leap days and
intervals; the checks of a schedule's fields. Pure: times are passed in."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

import msgspec
import pytest

from nessus_pool.errors import ValidationError
from nessus_pool.schedules import ScheduleSpec, Timing, check_schedule, to_ms

BERLIN = ZoneInfo("Europe/Berlin")


def ms(y: int, mo: int, d: int, h: int, mi: int, tz: tzinfo = BERLIN) -> int:
    return to_ms(datetime(y, mo, d, h, mi, tzinfo=tz))


def utc(slot: int) -> str:
    return datetime.fromtimestamp(slot / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def slots(t: Timing, from_ms: int, n: int) -> list[str]:
    out, at = [], from_ms
    for _ in range(n):
        nxt = t.next_after(at)
        assert nxt is not None
        out.append(utc(nxt))
        at = nxt
    return out


def spec(**kw: object) -> ScheduleSpec:
    base: dict[str, object] = {"name": "s", "targets": "10.0.0.1"}
    base.update(kw)
    return check_schedule(msgspec.convert(base, ScheduleSpec))


def test_spring_forward_0230_fires_once_at_0300_local() -> None:
    """Europe/Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist.
    The schedule fires once that day, at 03:00 CEST (01:00 UTC), and at 02:30 again after."""
    t = Timing(spec(cron="30 2 * * *", timezone="Europe/Berlin"))
    assert slots(t, ms(2026, 3, 28, 12, 0), 3) == [
        "2026-03-29 01:00",  # 03:00 CEST
        "2026-03-30 00:30",  # 02:30 CEST
        "2026-03-31 00:30",
    ]
    # and the day before, in winter time, 02:30 CET is 01:30 UTC
    assert slots(t, ms(2026, 3, 27, 12, 0), 1) == ["2026-03-28 01:30"]


def test_fall_back_0230_fires_once_at_its_first_occurrence() -> None:
    """Europe/Berlin 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens
    twice. The schedule fires once, at the first (02:30 CEST = 00:30 UTC)."""
    t = Timing(spec(cron="30 2 * * *", timezone="Europe/Berlin"))
    assert slots(t, ms(2026, 10, 24, 12, 0), 3) == [
        "2026-10-25 00:30",
        "2026-10-26 01:30",  # 02:30 CET
        "2026-10-27 01:30",
    ]
    # after the first 02:30 and during the second, nothing more fires that day
    second_0230 = to_ms(datetime(2026, 10, 25, 1, 30, tzinfo=UTC))
    assert t.next_after(second_0230 - 60_000) == ms(2026, 10, 26, 2, 30)


def test_latest_slot_on_dst_days() -> None:
    t = Timing(spec(cron="30 2 * * *", timezone="Europe/Berlin"))
    assert utc(t.latest_at_or_before(ms(2026, 3, 29, 12, 0)) or 0) == "2026-03-29 01:00"
    assert utc(t.latest_at_or_before(ms(2026, 10, 25, 12, 0)) or 0) == "2026-10-25 00:30"
    # exactly at a slot: that slot
    assert t.latest_at_or_before(ms(2026, 10, 26, 2, 30)) == ms(2026, 10, 26, 2, 30)


def test_month_ends_skip_short_months() -> None:
    t = Timing(spec(cron="0 6 31 * *", timezone="UTC"))
    assert slots(t, ms(2026, 1, 1, 0, 0, tz=UTC), 4) == [
        "2026-01-31 06:00",
        "2026-03-31 06:00",
        "2026-05-31 06:00",
        "2026-07-31 06:00",
    ]


def test_leap_day_fires_only_in_leap_years() -> None:
    t = Timing(spec(cron="0 0 29 2 *", timezone="UTC"))
    assert slots(t, ms(2026, 1, 1, 0, 0, tz=UTC), 2) == ["2028-02-29 00:00", "2032-02-29 00:00"]
    assert t.latest_at_or_before(ms(2031, 1, 1, 0, 0, tz=UTC)) == ms(2028, 2, 29, 0, 0, tz=UTC)


def test_interval_slots_count_from_start_or_the_epoch() -> None:
    t = Timing(spec(every_s=3600))
    assert slots(t, ms(2026, 1, 1, 0, 30, tz=UTC), 2) == ["2026-01-01 01:00", "2026-01-01 02:00"]
    start = datetime(2026, 1, 1, 0, 20, tzinfo=UTC)
    t = Timing(spec(every_s=3600, start=start))
    # before the start: the start itself is the first slot
    assert t.next_after(ms(2025, 12, 1, 0, 0, tz=UTC)) == to_ms(start)
    assert slots(t, to_ms(start), 2) == ["2026-01-01 01:20", "2026-01-01 02:20"]
    assert t.latest_at_or_before(to_ms(start) - 1) is None
    assert t.latest_at_or_before(to_ms(start) + 3_599_999) == to_ms(start)


def test_end_bounds_the_slots() -> None:
    end = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    t = Timing(spec(every_s=3600, end=end))
    assert t.next_after(ms(2026, 1, 1, 1, 30, tz=UTC)) == ms(2026, 1, 1, 2, 0, tz=UTC)
    assert t.next_after(ms(2026, 1, 1, 2, 0, tz=UTC)) is None  # 03:00 is the end: excluded
    assert t.latest_at_or_before(ms(2027, 1, 1, 0, 0, tz=UTC)) == ms(2026, 1, 1, 2, 0, tz=UTC)


def test_naive_start_is_read_in_the_schedule_zone() -> None:
    s = spec(every_s=60, timezone="Europe/Berlin", start=datetime(2026, 7, 1, 12, 0))
    assert s.start is not None and to_ms(s.start) == ms(2026, 7, 1, 10, 0, tz=UTC)


@pytest.mark.parametrize(
    ("fields", "field", "needle"),
    [
        ({"cron": "0 2 * *"}, "cron", "5 fields"),
        ({"cron": "61 * * * *"}, "cron", "not valid"),
        ({"cron": "0 0 30 2 *"}, "cron", "not valid"),
        ({"cron": "0 2 * * 1", "every_s": 60}, "cron", "exactly one"),
        ({}, "cron", "exactly one"),
        ({"every_s": 0}, "every_s", "1.."),
        ({"every_s": 60, "timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"every_s": 60, "priority": 101}, "priority", "-100"),
        ({"every_s": 60, "catch_up_s": -1}, "catch_up_s", "0.."),
        ({"every_s": 60, "name": "-bad"}, "name", "letters"),
        ({"every_s": 60, "scan_type": "authenticated"}, "credential", "credential set"),
        ({"every_s": 60, "credential": "ops"}, "scan_type", "untrusted"),
        (
            {
                "every_s": 60,
                "start": datetime(2026, 2, 1, tzinfo=UTC),
                "end": datetime(2026, 1, 1, tzinfo=UTC),
            },
            "end",
            "after start",
        ),
    ],
)
def test_each_bad_field_is_named(fields: dict[str, object], field: str, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec(**fields)
    assert err.value.field == field
    assert needle in err.value.message
