"""Maintenance-window calendar maths (nessus_pool.windows): instants inside and outside,
current and next windows, ranges crossing midnight, and the two DST days of Europe/Berlin in
2026 (spring forward 2026-03-29 02:00 -> 03:00, fall back 2026-10-25 03:00 -> 02:00)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from nessus_pool.config import parse_config
from nessus_pool.errors import ConfigError
from nessus_pool.windows import Calendar, WindowError, build_window


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def iso(value_ms: int) -> str:
    return dt.datetime.fromtimestamp(value_ms / 1000, dt.UTC).isoformat()


def test_weekday_window_in_berlin_summer_time() -> None:
    cal = Calendar(
        (
            build_window(
                days=["mon", "tue", "wed", "thu", "fri"],
                from_="08:00",
                to="18:00",
                timezone="Europe/Berlin",
            ),
        )
    )
    # Wednesday 2026-07-01: 08:00 CEST is 06:00 UTC
    assert not cal.in_window(ms("2026-07-01T05:59:59Z"))
    assert cal.in_window(ms("2026-07-01T06:00:00Z"))
    assert cal.in_window(ms("2026-07-01T15:59:59Z"))
    assert not cal.in_window(ms("2026-07-01T16:00:00Z"))
    cur = cal.current(ms("2026-07-01T10:00:00Z"))
    assert cur is not None
    assert (iso(cur.start_ms), iso(cur.end_ms)) == (
        "2026-07-01T06:00:00+00:00",
        "2026-07-01T16:00:00+00:00",
    )
    # Friday evening: the next window is Monday morning, not Saturday
    nxt = cal.next(ms("2026-07-03T17:00:00Z"))
    assert nxt is not None and iso(nxt.start_ms) == "2026-07-06T06:00:00+00:00"
    assert not cal.in_window(ms("2026-07-04T10:00:00Z"))  # Saturday


def test_range_crossing_midnight_belongs_to_its_start_day() -> None:
    cal = Calendar((build_window(days=["fri"], from_="22:00", to="06:00", timezone="UTC"),))
    assert cal.in_window(ms("2026-07-03T23:00:00Z"))  # Friday night
    assert cal.in_window(ms("2026-07-04T05:59:00Z"))  # Saturday morning, same window
    assert not cal.in_window(ms("2026-07-04T06:00:00Z"))
    assert not cal.in_window(ms("2026-07-03T05:00:00Z"))  # Friday morning: Thursday's, none
    assert cal.next_change_ms(ms("2026-07-03T23:00:00Z")) == ms("2026-07-04T06:00:00Z")


def test_spring_forward_day_berlin() -> None:
    # 01:00-03:00 local on 2026-03-29 lasts one hour: 01:00 CET (00:00Z) to 03:00 CEST (01:00Z)
    night = Calendar((build_window(from_="01:00", to="03:00", timezone="Europe/Berlin"),))
    cur = night.current(ms("2026-03-29T00:30:00Z"))
    assert cur is not None
    assert (iso(cur.start_ms), iso(cur.end_ms)) == (
        "2026-03-29T00:00:00+00:00",
        "2026-03-29T01:00:00+00:00",
    )
    # a from in the gap (02:30 does not exist that day) moves forward by the gap: 03:30 CEST
    gap = Calendar((build_window(from_="02:30", to="04:00", timezone="Europe/Berlin"),))
    nxt = gap.next(ms("2026-03-28T23:00:00Z"))
    assert nxt is not None
    assert (iso(nxt.start_ms), iso(nxt.end_ms)) == (
        "2026-03-29T01:30:00+00:00",
        "2026-03-29T02:00:00+00:00",
    )
    assert not gap.in_window(ms("2026-03-29T01:15:00Z"))
    # the day before, the same window is 90 minutes of winter time
    before = gap.current(ms("2026-03-28T02:00:00Z"))
    assert before is not None and before.end_ms - before.start_ms == 90 * 60_000


def test_fall_back_day_berlin() -> None:
    # 01:00-03:00 local on 2026-10-25 lasts three hours: 01:00 CEST (23:00Z the day
    # before) to 03:00 CET (02:00Z)
    night = Calendar((build_window(from_="01:00", to="03:00", timezone="Europe/Berlin"),))
    cur = night.current(ms("2026-10-25T01:30:00Z"))
    assert cur is not None
    assert (iso(cur.start_ms), iso(cur.end_ms)) == (
        "2026-10-24T23:00:00+00:00",
        "2026-10-25T02:00:00+00:00",
    )
    # a from in the repeated hour means its first occurrence (02:30 CEST = 00:30Z)
    twice = Calendar((build_window(from_="02:30", to="04:00", timezone="Europe/Berlin"),))
    cur = twice.current(ms("2026-10-25T00:45:00Z"))
    assert cur is not None and iso(cur.start_ms) == "2026-10-25T00:30:00+00:00"
    assert iso(cur.end_ms) == "2026-10-25T03:00:00+00:00"


def test_window_crossing_midnight_on_a_dst_night() -> None:
    # 22:00 Saturday to 06:00 Sunday over the spring-forward night: 7 hours, not 8
    cal = Calendar(
        (build_window(days=["sat"], from_="22:00", to="06:00", timezone="Europe/Berlin"),)
    )
    cur = cal.current(ms("2026-03-29T02:00:00Z"))
    assert cur is not None
    assert cur.end_ms - cur.start_ms == 7 * 3_600_000
    assert iso(cur.end_ms) == "2026-03-29T04:00:00+00:00"


def test_cron_window_with_a_duration() -> None:
    # every Friday 22:00 Berlin time for 8 hours
    cal = Calendar(
        (build_window(cron="0 22 * * fri", duration_s=8 * 3600, timezone="Europe/Berlin"),)
    )
    cur = cal.current(ms("2026-07-04T01:00:00Z"))  # Saturday 03:00 CEST
    assert cur is not None
    assert (iso(cur.start_ms), iso(cur.end_ms)) == (
        "2026-07-03T20:00:00+00:00",
        "2026-07-04T04:00:00+00:00",
    )
    assert not cal.in_window(ms("2026-07-04T04:00:00Z"))
    nxt = cal.next(ms("2026-07-04T04:00:00Z"))
    assert nxt is not None and iso(nxt.start_ms) == "2026-07-10T20:00:00+00:00"


def test_cron_window_on_the_spring_forward_day() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29: cron (Debian's rule, as cronsim) starts
    # it at the end of the gap, 03:00 CEST = 01:00Z; it lasts its duration (1 h)
    cal = Calendar((build_window(cron="30 2 * * *", duration_s=3600, timezone="Europe/Berlin"),))
    nxt = cal.next(ms("2026-03-28T23:00:00Z"))
    assert nxt is not None
    assert (iso(nxt.start_ms), iso(nxt.end_ms)) == (
        "2026-03-29T01:00:00+00:00",
        "2026-03-29T02:00:00+00:00",
    )
    # on the fall-back day the repeated 02:30 starts it once
    starts = []
    at = ms("2026-10-24T22:00:00Z")
    for _ in range(2):
        n = cal.next(at)
        assert n is not None
        starts.append(iso(n.start_ms))
        at = n.end_ms
    assert starts[0] == "2026-10-25T00:30:00+00:00"
    assert starts[1] == "2026-10-26T01:30:00+00:00"


def test_a_busy_cron_window_is_looked_at_a_bounded_way_ahead() -> None:
    # every minute for 30 s: 1,000 occurrences per computation, then computed again
    cal = Calendar((build_window(cron="* * * * *", duration_s=30),))
    t0 = ms("2026-07-01T00:00:10Z")
    assert cal.in_window(t0)
    assert cal.next_change_ms(t0) == ms("2026-07-01T00:00:30Z")
    assert not cal.in_window(ms("2026-07-01T00:00:45Z"))
    far = ms("2026-07-20T05:07:05Z")
    assert cal.in_window(far) and cal.next_change_ms(far) == far + 25_000


def test_one_off_and_overlaps_merge() -> None:
    cal = Calendar(
        (
            build_window(start="2026-12-24T00:00:00Z", end="2026-12-27T00:00:00Z"),
            build_window(
                start="2026-12-26T12:00:00+01:00", end="2026-12-28T00:00:00Z", on_window="stop"
            ),
        )
    )
    assert not cal.in_window(ms("2026-12-23T23:59:59Z"))
    cur = cal.current(ms("2026-12-25T00:00:00Z"))
    assert cur is not None
    # the two count as one: dispatch resumes when the later one ends, and the strictest
    # on-window applies
    assert iso(cur.end_ms) == "2026-12-28T00:00:00+00:00"
    assert cur.on_window == "stop"
    assert cal.free_at_ms(ms("2026-12-25T00:00:00Z")) == ms("2026-12-28T00:00:00Z")
    assert cal.next_change_ms(ms("2026-12-28T00:00:00Z")) is None
    assert cal.free_at_ms(ms("2026-12-29T00:00:00Z")) == ms("2026-12-29T00:00:00Z")


def test_cache_follows_time_backwards_and_forwards() -> None:
    cal = Calendar((build_window(from_="08:00", to="09:00"),))
    assert cal.in_window(ms("2026-07-01T08:30:00Z"))
    assert not cal.in_window(ms("2026-07-01T07:30:00Z"))  # wall clock stepped back
    assert cal.in_window(ms("2026-07-01T08:00:00Z"))
    assert not cal.in_window(ms("2026-07-01T09:00:00Z"))
    assert cal.in_window(ms("2026-07-02T08:59:00Z"))


def test_empty_calendar_is_never_in_a_window() -> None:
    cal = Calendar()
    assert not cal.in_window(0)
    assert cal.next_change_ms(0) is None and cal.next(0) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"from_": "08:00", "to": "08:00"}, "to"),
        ({"from_": "8:00", "to": "09:00"}, "from"),
        ({"from_": "08:00", "to": "24:01"}, "to"),
        ({"from_": "08:00"}, "to"),
        ({"days": ["mon", "funday"], "from_": "08:00", "to": "09:00"}, "days[1]"),
        ({"days": [], "from_": "08:00", "to": "09:00"}, "days"),
        ({"from_": "08:00", "to": "09:00", "timezone": "Europe/Atlantis"}, "timezone"),
        ({"from_": "08:00", "to": "09:00", "timezone": "../../etc/passwd"}, "timezone"),
        ({"start": "2026-12-24T00:00:00Z", "end": "2026-12-24T00:00:00Z"}, "end"),
        ({"start": "2026-12-24T00:00:00Z"}, "end"),
        ({"start": "2026-12-24T00:00:00", "end": "2026-12-25T00:00:00Z"}, "start"),
        ({"start": "2026-12-24T00:00:00Z", "end": "2026-12-25T00:00:00Z", "to": "09:00"}, "start"),
        ({"cron": "0 22 * * fri"}, "duration-s"),
        ({"duration_s": 60.0}, "cron"),
        ({"cron": "0 22 * * fri", "duration_s": 0.0}, "duration-s"),
        ({"cron": "0 22 * * fri", "duration_s": 8 * 86400.0}, "duration-s"),
        ({"cron": "61 22 * * fri", "duration_s": 60.0}, "cron"),
        ({"cron": "0 22 * *", "duration_s": 60.0}, "cron"),
        ({"cron": "0 0 30 2 *", "duration_s": 60.0}, "cron"),
        ({"cron": "0 22 * * fri", "duration_s": 60.0, "from_": "08:00"}, "cron"),
        ({"cron": "0 22 * * fri", "duration_s": 60.0, "timezone": "Nowhere/X"}, "timezone"),
    ],
)
def test_bad_windows_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(WindowError) as info:
        build_window(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_config_paths_of_window_errors() -> None:
    text = """
[[pools]]
name = "lan"
[[pools.scanners]]
id = "s1"
url = "https://10.0.0.5:8834"
access-key = "a"
secret-key = "b"
[[pools.scanners.maintenance-windows]]
days = ["sat", "sunday"]
from = "22:00"
to = "06:00"
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.path == "$.pools[0].scanners[0].maintenance-windows[0].days[1]"
    ok = parse_config(text.replace('"sunday"', '"sun"')).config
    w = ok.pools[0].scanners[0].maintenance_windows[0]
    assert (w.from_, w.to, w.on_window) == ("22:00", "06:00", "finish")


def test_the_example_config_loads_with_its_three_kinds_of_window() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "maintenance-windows.toml"
    cfg = parse_config(example.read_text(encoding="utf-8"), str(example)).config
    windows = [w.window() for w in cfg.pools[0].maintenance_windows]
    assert [(w.cron is not None, w.start_ms is not None, w.on_window) for w in windows] == [
        (False, False, "pause"),
        (True, False, "stop"),
        (False, True, "finish"),
    ]
    # Friday 2026-07-03 23:00 Berlin: inside the weekly change window
    assert Calendar(tuple(windows)).current(ms("2026-07-03T21:00:00Z")) is not None
